// Two Node processes: the owner writes, this process reads one-sidedly through shared memory.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteStore } from '../ts/index.js';
import { OwnerProcess, tempCluster } from './helpers.js';

describe('one-sided reads across processes', () => {
  let cluster: ReturnType<typeof tempCluster>;
  let owner: OwnerProcess;

  beforeEach(async () => {
    cluster = tempCluster();
    owner = await OwnerProcess.start(cluster.dir, 'owner', cluster.secret);
  });
  afterEach(async () => {
    expect(await owner.stop()).toBe(0);
    cluster.cleanup();
  });

  it('sees each write the owner makes, with Heron version rules', async () => {
    const remote = await RemoteStore.connect({ dir: cluster.dir, store: 'owner', secret: cluster.secret });
    expect(await remote.read(['acct'])).toEqual([{ status: 'absent' }]);
    expect(await owner.send('set acct hundred 10')).toBe('ok');
    expect(await remote.read(['acct'])).toEqual([{ status: 'value', version: 10n, value: Buffer.from('hundred') }]);
    expect(await owner.send('set acct ninety 20')).toBe('ok');
    // After one resolve, reads stay on this thread and never ask the owner again.
    const lookups = remote.stats().lookups;
    expect(remote.readSync(['acct'])).toEqual([{ status: 'value', version: 20n, value: Buffer.from('ninety') }]);
    expect(await remote.readBefore([{ id: 'acct', before: 20n }])).toEqual([{ status: 'value', version: 10n, value: Buffer.from('hundred') }]);
    expect(await owner.send('set acct eighty 30')).toBe('ok');
    expect(await remote.readBefore([{ id: 'acct', before: 20n }])).toEqual([{ status: 'lagging' }]);
    expect(await owner.send('delete acct 40')).toBe('ok');
    expect(remote.readSync(['acct'])).toEqual([{ status: 'deleted', version: 40n }]);
    expect(remote.stats().lookups).toBe(lookups);
  });

  it('reads through handles what the per-object reads see, across moves', async () => {
    const remote = await RemoteStore.connect({ dir: cluster.dir, store: 'owner', secret: cluster.secret });
    expect(await owner.send('set acct hundred 10')).toBe('ok');
    const hs = await remote.handles(['acct', 'nobody']);
    expect(hs[1]).toBe(0xffffffff);
    const one = () => {
      const b = remote.readMany(hs);
      return [0, 1].map((i) => b.result(i));
    };
    expect(one()).toEqual([{ status: 'value', version: 10n, value: Buffer.from('hundred') }, { status: 'absent' }]);
    expect(await owner.send('set acct ninety 20')).toBe('ok');
    const lookups = remote.stats().lookups;
    expect(one()[0]).toEqual({ status: 'value', version: 20n, value: Buffer.from('ninety') });
    // A value too large for its slot moves the object; the handle follows the forward.
    const big = 'x'.repeat(3000);
    expect(await owner.send(`set acct ${big} 30`)).toBe('ok');
    expect(one()[0]).toEqual({ status: 'value', version: 30n, value: Buffer.from(big) });
    expect(remote.readMany(hs, BigUint64Array.of(30n, 1n)).result(0)).toEqual({
      status: 'value',
      version: 20n,
      value: Buffer.from('ninety'),
    });
    expect(remote.stats().lookups).toBe(lookups);
    expect(await remote.read(['acct'])).toEqual([one()[0]]);
  });

  it('rejects a peer without the cluster secret', async () => {
    await expect(RemoteStore.connect({ dir: cluster.dir, store: 'owner', secret: Buffer.alloc(32, 7) })).rejects.toThrow(/does not hold the cluster secret/);
    expect(await owner.send('set still-serving yes 1')).toBe('ok');
  });

  it('never accepts a torn value while the owner rewrites objects flat out', async () => {
    const seed = BigInt(Date.now());
    console.log(`stress seed ${seed}`);
    const remote = await RemoteStore.connect({ dir: cluster.dir, store: 'owner', secret: cluster.secret });
    // The owner populates 48 objects, then rewrites them for up to 60 s; we read meanwhile.
    const writing = owner.send(`stress 48 ${seed} 60000`);
    await expect.poll(async () => (await remote.read(['stress/00047']))[0]?.status, { timeout: 10_000 }).toBe('value');
    const report = await remote.stressRead(48, seed ^ 1n, 1_000_000);
    const stats = remote.stats();
    console.log(JSON.stringify({ report: { ...report, violations: report.violations.length }, stats }));
    expect(report.violations).toEqual([]);
    expect(report.reads).toBe(1_000_000);
    expect(report.verified).toBeGreaterThan(500_000);
    // The writer was still rewriting when we finished (it runs for up to 60 s): the reads
    // raced it. afterEach ends the owner process, and the writer with it.
    expect(await Promise.race([writing, Promise.resolve('still writing')])).toBe('still writing');
  });
});
