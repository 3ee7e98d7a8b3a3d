// The owner's store through the TypeScript API: versions, deletes, and bad input.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NativeStore } from '../ts/binding.js';
import { RemoteStore, Store } from '../ts/index.js';
import { NO_HANDLE, type ReadBatch } from '../ts/store.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { tempCluster, xorshift } from './helpers.js';

describe('Store', () => {
  let cluster: ReturnType<typeof tempCluster>;
  let store: Store;

  beforeEach(() => {
    cluster = tempCluster();
    store = Store.create({ dir: cluster.dir, name: 'own', secret: cluster.secret });
  });
  afterEach(() => {
    store.close();
    cluster.cleanup();
  });

  it('keeps the two newest versions and answers getBefore by timestamp', () => {
    store.set([
      { id: 'a', value: Buffer.from('1'), version: 1n },
      { id: 'a', value: Buffer.from('2'), version: 2n },
      { id: new Uint8Array([0, 255]), value: Buffer.alloc(5000, 9), version: 3n },
    ]);
    expect(store.versions('a')).toEqual([2n, 1n]);
    expect(store.get(['a', 'missing'])).toEqual([{ status: 'value', version: 2n, value: Buffer.from('2') }, { status: 'absent' }]);
    expect(
      store.getBefore([
        { id: 'a', before: 2n },
        { id: 'a', before: 1n },
      ]),
    ).toEqual([{ status: 'value', version: 1n, value: Buffer.from('1') }, { status: 'lagging' }]);
    expect(store.get([new Uint8Array([0, 255])])[0]).toMatchObject({ status: 'value', version: 3n });
    store.delete([{ id: 'a', version: 4n }]);
    expect(store.get(['a'])).toEqual([{ status: 'deleted', version: 4n }]);
    expect(store.purgeDeleted(5n)).toBe(1);
    expect(store.stats().objects).toBe(1);
  });

  it('rejects bad input with a clear error and leaves the store intact', () => {
    store.set([{ id: 'keep', value: Buffer.from('v'), version: 5n }]);
    const bad: [() => unknown, RegExp][] = [
      [() => store.set([{ id: 'x', value: Buffer.alloc((1 << 20) + 1), version: 6n }]), /exceeds the maximum of 1048576 bytes/],
      [() => store.set([{ id: 'x'.repeat(89), value: Buffer.from('v'), version: 6n }]), /object id must be 1 to 88 bytes, got 89/],
      [() => store.set([{ id: 'keep', value: Buffer.from('old'), version: 4n }]), /timestamp 4 for object 'keep' is not after its current version 5/],
      [() => store.set([{ id: 'x', value: 'text' as unknown as Uint8Array, version: 6n }]), /value must be a Uint8Array, got string/],
      [() => store.set([{ id: 42 as unknown as string, value: Buffer.from('v'), version: 6n }]), /object id must be a string or Uint8Array, got number/],
      [() => store.set([{ id: 'x', value: Buffer.from('v'), version: -1n }]), /version must be a non-negative 64-bit integer/],
      [() => store.get('keep' as unknown as string[]), /get\(ids\) must be an array/],
      [() => Store.create({ dir: cluster.dir, name: 'own', secret: cluster.secret }), /store 'own' is owned by a live process/],
      [() => Store.create({ dir: cluster.dir, name: 'x/../y', secret: cluster.secret }), /invalid store name/],
      [() => Store.create({ dir: cluster.dir, name: 'weak', secret: Buffer.from('short') }), /at least 16 bytes/],
    ];
    for (const [call, message] of bad) {
      expect(call).toThrow(message);
      expect(store.get(['keep', 'x'])).toEqual([{ status: 'value', version: 5n, value: Buffer.from('v') }, { status: 'absent' }]);
    }
  });

  it('reports wrong types and unknown regions from the raw binding as errors', () => {
    const raw = NativeStore.create({ dir: cluster.dir, name: 'raw', secret: cluster.secret });
    expect(() => raw.setMany([Buffer.from('a')], [], new BigUint64Array(1))).toThrow(/1 ids but 0 entries/);
    expect(() => raw.setMany(['a' as unknown as Uint8Array], [Buffer.from('v')], new BigUint64Array([1n]))).toThrow();
    expect(() => raw.readRegion(7, 0, 8)).toThrow(/region 7 does not exist in store 'raw'/);
    expect(() => raw.readRegion(0, -1, 8)).toThrow(/offset must be a non-negative integer/);
    raw.close();
    expect(() => raw.getMany([Buffer.from('a')])).toThrow(/store 'raw' is closed/);
  });

  it('serves readers in this process too, and readSync refuses unresolved ids', async () => {
    store.set([{ id: 'k', value: Buffer.from('v'), version: 1n }]);
    const remote = await RemoteStore.connect({ dir: cluster.dir, store: 'own', secret: cluster.secret });
    expect(() => remote.readSync(['k'])).toThrow(/not resolved yet/);
    await remote.resolve(['k']);
    expect(remote.readSync(['k'])).toEqual([{ status: 'value', version: 1n, value: Buffer.from('v') }]);
    await expect(RemoteStore.connect({ dir: cluster.dir, store: 'nobody', secret: cluster.secret })).rejects.toThrow(/unreachable/);
  });

  /** Every result of a batch, as the per-object API reports them. */
  const results = (b: ReadBatch) => Array.from({ length: b.count }, (_, i) => b.result(i));

  it('reads through handles into one reused buffer, exactly as read and readBefore do', async () => {
    const big = Buffer.alloc(66_000, 7); // more than the batch's first buffer (64 KiB): it grows
    store.set([
      { id: 'a', value: Buffer.from('one'), version: 10n },
      { id: 'a', value: Buffer.from('two'), version: 20n },
      { id: 'big', value: big, version: 3n },
      { id: 'd', value: Buffer.from('was'), version: 5n },
    ]);
    store.delete([{ id: 'd', version: 7n }]);
    const remote = await RemoteStore.connect({ dir: cluster.dir, store: 'own', secret: cluster.secret });
    const ids = ['a', 'big', 'd', 'missing'];
    const hs = await remote.handles(ids);
    expect(hs[3]).toBe(NO_HANDLE);
    for (let round = 0; round < 2; round++) {
      const batch = remote.readMany(hs);
      expect(results(batch)).toEqual([
        { status: 'value', version: 20n, value: Buffer.from('two') },
        { status: 'value', version: 3n, value: big },
        { status: 'deleted', version: 7n },
        { status: 'absent' },
      ]);
      expect(results(batch)).toEqual(await remote.read(ids));
      expect([batch.status(0), batch.version(0), batch.length(0)]).toEqual(['value', 20n, 3]);
      expect(batch.value(2)).toBeNull();
    }
    const bounds = [20n, 3n, 7n, 1n];
    const before = results(remote.readMany(hs, BigUint64Array.from(bounds)));
    expect(before).toEqual([
      { status: 'value', version: 10n, value: Buffer.from('one') },
      { status: 'absent' },
      { status: 'value', version: 5n, value: Buffer.from('was') },
      { status: 'absent' },
    ]);
    expect(before).toEqual(await remote.readBefore(ids.map((id, i) => ({ id, before: bounds[i] ?? 0n }))));
    expect(results(remote.readMany(hs.subarray(0, 1), BigUint64Array.of(10n)))).toEqual([{ status: 'lagging' }]);

    expect(() => remote.readMany(Uint32Array.of(12345))).toThrow(/unknown handle 12345: this reader has issued 3 handles/);
    expect(() => remote.readMany([0] as unknown as Uint32Array)).toThrow(/must be a Uint32Array/);
    expect(() => remote.readMany(hs, new BigUint64Array(1))).toThrow(/4 ids but 1 entries/);
    expect(() => remote.readMany(hs).status(4)).toThrow(/no object 4 in a batch of 4/);
  });

  it('never answers a handle from a slot reused by another object', async () => {
    store.set([{ id: 'old', value: Buffer.from('old value'), version: 1n }]);
    const remote = await RemoteStore.connect({ dir: cluster.dir, store: 'own', secret: cluster.secret });
    const [h] = await remote.handles(['old']);
    expect(results(remote.readMany(Uint32Array.of(h ?? NO_HANDLE)))[0]).toMatchObject({ version: 1n });
    store.delete([{ id: 'old', version: 2n }]);
    expect(store.purgeDeleted(3n)).toBe(1);
    // The freed slot goes to the next object of its size class.
    store.set([{ id: 'new', value: Buffer.from('new value'), version: 4n }]);
    const hs = Uint32Array.of(h ?? NO_HANDLE, ...(await remote.handles(['new'])));
    expect(results(remote.readMany(hs))).toEqual([{ status: 'absent' }, { status: 'value', version: 4n, value: Buffer.from('new value') }]);
    store.set([{ id: 'old', value: Buffer.from('back'), version: 5n }]);
    expect(results(remote.readMany(hs))[0]).toEqual({ status: 'value', version: 5n, value: Buffer.from('back') });
  });

  it('refuses batch reads over the network on the calling thread', async () => {
    store.set([{ id: 'k', value: Buffer.from('v'), version: 1n }]);
    const address = store.serve({ transport: 'tcp', listen: '127.0.0.1:0' });
    const remote = await RemoteStore.connect({ transport: 'tcp', address, secret: cluster.secret });
    const hs = await remote.handles(['k']);
    expect(() => remote.readMany(hs)).toThrow(/readInto needs the shm transport \(this peer reads over tcp\)/);
    expect(await remote.read(['k'])).toEqual([{ status: 'value', version: 1n, value: Buffer.from('v') }]);
  });
});

describe("the primary's flat reads and writes (NativePrimaryStore)", () => {
  let cluster: ReturnType<typeof tempCluster>;
  let store: Store;

  beforeEach(() => {
    cluster = tempCluster();
    store = Store.create({ dir: cluster.dir, name: 'flat', secret: cluster.secret });
  });
  afterEach(() => {
    store.close();
    cluster.cleanup();
  });

  it('answers as the checked read does, through growth, deletes, purges and oversized batches', () => {
    const seed = (Date.now() ^ 0x5eed) >>> 0;
    console.log(`flat store seed ${seed}`);
    const rand = xorshift(seed);
    const primary = new NativePrimaryStore(store);
    const ids = Array.from({ length: 90 }, (_, k) => `obj:${k}`);
    let ts = 0n;
    for (let round = 0; round < 40; round++) {
      // Some batches write one object twice, some values outgrow their slot or the scratch.
      const writes: [string, bigint, Uint8Array | null][] = [];
      for (let k = 0; k < 1 + Math.floor(rand() * 80); k++) {
        const id = ids[Math.floor(rand() * ids.length)] as string;
        const r = rand();
        const len = r < 0.05 ? 70_000 + Math.floor(rand() * 1000) : Math.floor(rand() * (r < 0.5 ? 60 : 3000));
        writes.push([id, ++ts, r > 0.85 ? null : Buffer.alloc(len, Number(ts % 251n))]);
      }
      primary.write(writes);
      if (round % 9 === 8) store.purgeDeleted(ts + 1n);
      const asked = [...ids, 'never-written'];
      // Values as hex: a deep comparison of 70 KB buffers takes seconds.
      const want = store
        .get(asked)
        .map((r) => (r.status === 'value' ? [r.version, r.value.toString('hex')] : [r.status === 'deleted' ? r.version : 0n, undefined]));
      expect(primary.get(asked).map((v) => [v.version, v.value && Buffer.from(v.value).toString('hex')])).toEqual(want);
    }
  });

  it('refuses a write whose value ends lie, or whose version is not newer, and changes nothing', () => {
    const primary = new NativePrimaryStore(store);
    primary.write([['x', 5n, Buffer.from('five')]]);
    expect(() => primary.write([['x', 5n, Buffer.from('again')]])).toThrow(/x.*5/);
    expect(() => store.writeFlat(['x', 'y'], Buffer.from('abc'), Uint32Array.from([2, 9]), BigUint64Array.from([6n, 6n]), Buffer.from([0, 0]))).toThrow(
      'writeFlat: entry 1 ends at 9, before 2 or past the 3 value bytes',
    );
    expect(() => store.writeFlat(['x', 'y'], Buffer.from('abc'), Uint32Array.from([2]), BigUint64Array.from([6n, 6n]), Buffer.from([0, 0]))).toThrow(
      'writeFlat: 2 ids need ends, timestamps and deleted of 2 (got 1, 2 and 2)',
    );
    expect(primary.get(['x', 'y'])).toEqual([
      { version: 5n, value: Buffer.from('five') },
      { version: 0n, value: undefined },
    ]);
  });
});
