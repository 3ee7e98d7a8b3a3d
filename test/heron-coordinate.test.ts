// The coordinator binding's fast path: `coordinateSync` announces and waits on the calling
// thread within a budget, writing its result as numbers; a wait past the budget is finished on
// the pool by `finish`; the timeout error and argument errors are exact. Two replicas of one
// partition live in this process, each with its own store.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { NativeCoordinator } from '../ts/binding.js';
import { Store } from '../ts/store.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-coordinate-'));
const secret = new Uint8Array(32).fill(9);
const stores = ['c0', 'c1'].map((name) => Store.create({ dir: work, name, secret }));
afterAll(() => {
  for (const s of stores) s.close();
  rmSync(work, { recursive: true, force: true });
});

const [a, b] = stores.map((s, replica) =>
  s.heronCoordinator({ dir: work, secret, partitions: 1, replicas: 2, partition: 0, replica, peers: ['c0', 'c1'], region: 0 }),
) as [NativeCoordinator, NativeCoordinator];
const ONLY = Uint32Array.from([0]);
// [status, majority µs, waited µs, failed writes, sleeps, bitmap of partition 0]
const out = new Float64Array(6);

describe('NativeCoordinator.coordinateSync', () => {
  it('returns at once when the peer already announced, with the bitmap as a number', async () => {
    await Promise.all([a.connect(10_000), b.connect(10_000)]);
    expect(b.announce(1n, 2, [0])).toBe(0);
    expect(a.coordinateSync(1n, 2, ONLY, 2, 30_000, 30, 5000, out)).toBe(1);
    expect(out[0]).toBe(1);
    expect(out[3]).toBe(0);
    expect(out[5]).toBe(0b11);
    expect(out[2]).toBeGreaterThanOrEqual(out[1] ?? -1);
  });

  it('comes back pending after its budget; finish ends the same wait once the peer announces', async () => {
    const t0 = process.hrtime.bigint();
    expect(a.coordinateSync(2n, 4, ONLY, 0, 30_000, 0, 1000, out)).toBe(0);
    expect(out[0]).toBe(0);
    expect(Number(process.hrtime.bigint() - t0) / 1000).toBeGreaterThanOrEqual(1000);
    const done = a.finish();
    b.announce(2n, 4, [0]);
    const r = await done;
    expect(r[0]).toBe(1);
    expect(r[5]).toBe(0b11);
    // Timed from the synchronous call, which slept through its budget.
    expect(r[2]).toBeGreaterThanOrEqual(1000);
    expect(r[4]).toBeGreaterThanOrEqual(1);
    await expect(a.finish()).rejects.toThrow('finish: no coordination is pending');
  });

  it('throws the timeout error without a majority, and refuses bad arguments', () => {
    // A budget past the timeout: the whole wait runs here.
    expect(() => a.coordinateSync(3n, 2, ONLY, 0, 50, 0, 200_000, out)).toThrow(
      /^no majority for phase 2 of transaction 3 within .*: partition 0 has 1 of the 2 replicas needed$/,
    );
    expect(() => a.coordinateSync(3n, 2, ONLY, 0, 50, 0, 5000, new Float64Array(5))).toThrow('coordinateSync: out holds 5 numbers, 6 needed for 1 partitions');
    expect(() => a.coordinateSync(0n, 2, ONLY, 0, 50, 0, 5000, out)).toThrow('coordinateSync: ts must be a positive 64-bit integer');
    expect(() => a.coordinateSync(3n, 2, ONLY, 0, 50, -1, 5000, out)).toThrow('spinMicros must be 0 to 3600000000 µs, got -1');
    expect(() => a.coordinateSync(3n, 2, Uint32Array.from([1]), 0, 50, 0, 5000, out)).toThrow(
      'bad coordination request: partition 1 out of range: the cluster has 1',
    );
  });
});
