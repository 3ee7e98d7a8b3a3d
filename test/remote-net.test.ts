// One-sided reads over the network transports: the owner, in another process, serves its store
// over TCP on loopback; this process reads it as it would over shared memory.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteStore, type RemoteOptions } from '../ts/index.js';
import { OwnerProcess, tempCluster } from './helpers.js';

describe('RemoteStore over tcp', () => {
  let cluster: ReturnType<typeof tempCluster>;
  let owner: OwnerProcess;
  let address: string;

  beforeEach(async () => {
    cluster = tempCluster();
    owner = await OwnerProcess.start(cluster.dir, 'owner', cluster.secret);
    const served = await owner.send('serve tcp 127.0.0.1:0');
    const m = /^ok (127\.0\.0\.1:\d+)$/.exec(served);
    if (!m?.[1]) throw new Error(`owner did not serve: ${served}`);
    address = m[1];
  });
  afterEach(async () => {
    expect(await owner.stop()).toBe(0);
    cluster.cleanup();
  });

  it('reads what the owner wrote: values, versions and deletes', async () => {
    const remote = await RemoteStore.connect({ transport: 'tcp', address, secret: cluster.secret });
    expect(remote.transport).toBe('tcp');
    expect(await remote.read(['acct'])).toEqual([{ status: 'absent' }]);
    expect(await owner.send('set acct hundred 10')).toBe('ok');
    expect(await remote.read(['acct'])).toEqual([{ status: 'value', version: 10n, value: Buffer.from('hundred') }]);
    expect(await owner.send('set acct ninety 20')).toBe('ok');
    expect(await owner.send(`set big ${'b'.repeat(5000)} 21`)).toBe('ok');
    expect(await remote.read(['acct', 'big'])).toEqual([
      { status: 'value', version: 20n, value: Buffer.from('ninety') },
      { status: 'value', version: 21n, value: Buffer.from('b'.repeat(5000)) },
    ]);
    expect(await remote.readBefore([{ id: 'acct', before: 20n }])).toEqual([{ status: 'value', version: 10n, value: Buffer.from('hundred') }]);
    expect(await owner.send('set acct eighty 30')).toBe('ok');
    expect(await remote.readBefore([{ id: 'acct', before: 20n }])).toEqual([{ status: 'lagging' }]);
    expect(await owner.send('delete acct 40')).toBe('ok');
    expect(await remote.read(['acct'])).toEqual([{ status: 'deleted', version: 40n }]);
    // Reads over the network never run on the JS thread.
    expect(() => remote.readSync(['acct'])).toThrow(/readSync needs the shm transport \(this peer reads over tcp\): use read\(\)/);
    expect(remote.stats().reads).toBeGreaterThan(0);
  });

  it('rejects bad input with clear errors and keeps serving', async () => {
    await expect(RemoteStore.connect({ transport: 'tcp', address, secret: Buffer.alloc(32, 7) })).rejects.toThrow(/does not hold the cluster secret/);
    const untyped = { transport: 'udp', address, secret: cluster.secret } as unknown as RemoteOptions;
    await expect(RemoteStore.connect(untyped)).rejects.toThrow("unknown transport 'udp': expected shm, tcp or verbs");
    await expect(RemoteStore.connect({ transport: 'tcp', address: 'nowhere', secret: cluster.secret })).rejects.toThrow(
      /connect: bad address 'nowhere' \(expected host:port\)/,
    );
    const withDir = { transport: 'tcp', dir: cluster.dir, secret: cluster.secret } as unknown as RemoteOptions;
    await expect(RemoteStore.connect(withDir)).rejects.toThrow("connect: the tcp transport needs 'address'");
    expect(await owner.send('serve shm 127.0.0.1:0')).toMatch(/^error serve: shm needs no server/);
    expect(await owner.send('serve carrier-pigeon 127.0.0.1:0')).toBe("error unknown transport 'carrier-pigeon': expected shm, tcp or verbs");
    expect(await owner.send('set still-serving yes 1')).toBe('ok');
    const remote = await RemoteStore.connect({ transport: 'tcp', address, secret: cluster.secret });
    expect(await remote.read(['still-serving'])).toEqual([{ status: 'value', version: 1n, value: Buffer.from('yes') }]);
  });

  it("gives the verbs transport's own error when this host has no RDMA device", async (ctx) => {
    const served = await owner.send('serve verbs 127.0.0.1:0');
    if (served.startsWith('ok ')) {
      ctx.skip(); // this host has an RDMA device: the error cannot be shown here
      return;
    }
    expect(served).toMatch(/^error verbs transport: no RDMA device available/);
    await expect(RemoteStore.connect({ transport: 'verbs', address, secret: cluster.secret })).rejects.toThrow(/^verbs transport: no RDMA device available/);
  });
});
