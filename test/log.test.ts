// The sequencer log through the TypeScript API: timestamps, dedup, replay, bad input, locking.
import { appendFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SequencerLog } from '../ts/log.js';
import { tempCluster } from './helpers.js';

const digest = (n: number): Buffer => Buffer.alloc(32, n);
const tx = (n: number, bytes: string | Buffer = `tx ${n}`) => ({ digest: digest(n), bytes: Buffer.from(bytes) });

describe('SequencerLog', () => {
  let tmp: ReturnType<typeof tempCluster>;
  let log: SequencerLog;

  beforeEach(() => {
    tmp = tempCluster();
    log = SequencerLog.open(tmp.dir);
  });
  afterEach(() => {
    log.close();
    tmp.cleanup();
  });

  it('numbers transactions 1..n across appends and across close and reopen', async () => {
    expect(log.lastTs()).toBe(0n);
    expect(await log.append([tx(1), tx(2)])).toEqual([
      { ts: 1n, duplicate: false },
      { ts: 2n, duplicate: false },
    ]);
    expect(await log.append([tx(3)])).toEqual([{ ts: 3n, duplicate: false }]);
    expect(log.lastTs()).toBe(3n);

    log.close();
    log.close(); // idempotent
    log = SequencerLog.open(tmp.dir);
    expect(log.lastTs()).toBe(3n);
    expect(log.recovery()).toEqual({ segments: 1, records: 2, transactions: 3n, bytesTruncated: 0 });
    expect(await log.append([tx(4), tx(5)])).toEqual([
      { ts: 4n, duplicate: false },
      { ts: 5n, duplicate: false },
    ]);
    expect((await log.readBatch(0n, 10)).map((e) => e.ts)).toEqual([1n, 2n, 3n, 4n, 5n]);
  });

  it('reports a duplicate digest with its first timestamp and does not write it again', async () => {
    await log.append([tx(1), tx(2)]);
    expect(await log.append([tx(3), tx(2, 'resent'), tx(3, 'again in the batch')])).toEqual([
      { ts: 3n, duplicate: false },
      { ts: 2n, duplicate: true },
      { ts: 3n, duplicate: true },
    ]);
    expect(log.lastTs()).toBe(3n);
    const entries = await log.readBatch(1n, 10);
    expect(entries.map((e) => e.bytes.toString())).toEqual(['tx 1', 'tx 2', 'tx 3']);
  });

  it('reads back exactly the bytes appended, from any timestamp, up to max', async () => {
    const big = Buffer.alloc(100_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    await log.append([tx(1, Buffer.alloc(0)), tx(2, big), tx(3, Buffer.from([0, 255, 0]))]);
    const all = await log.readBatch(1n, 100);
    const sent = [Buffer.alloc(0), big, Buffer.from([0, 255, 0])];
    expect(all.map((e) => e.ts)).toEqual([1n, 2n, 3n]);
    expect(all.map((e) => e.digest)).toEqual([digest(1), digest(2), digest(3)]);
    expect(all.map((e) => e.bytes.length)).toEqual(sent.map((b) => b.length));
    // Buffer.equals rather than toEqual: a deep compare of 100 kB element by element is slow.
    expect(Buffer.concat(all.map((e) => e.bytes)).equals(Buffer.concat(sent))).toBe(true);
    expect((await log.readBatch(2, 1)).map((e) => e.ts)).toEqual([2n]);
    expect(await log.readBatch(4n, 10)).toEqual([]);
    expect(await log.readBatch(1n, 0)).toEqual([]);
  });

  it('writes zeros ahead of its records by default, which a reopen reads as free space', async () => {
    await log.append([tx(1), tx(2)]);
    const segment = join(tmp.dir, 'seg-00000000000000000001.log');
    expect(statSync(segment).size).toBeGreaterThan(4 << 20);
    log.close();
    log = SequencerLog.open(tmp.dir);
    expect(log.recovery()).toEqual({ segments: 1, records: 1, transactions: 2n, bytesTruncated: 0 });
    expect(await log.append([tx(3)])).toEqual([{ ts: 3n, duplicate: false }]);
    expect((await log.readBatch(1n, 10)).map((e) => e.bytes.toString())).toEqual(['tx 1', 'tx 2', 'tx 3']);
    log.close();
    log = SequencerLog.open(tmp.dir, { preallocate: 0 });
    expect(log.recovery().bytesTruncated).toBe(0);
    expect(log.lastTs()).toBe(3n);
  });

  it('cuts a torn tail on reopen and reports it in recovery', async () => {
    // Without zeros ahead, the file ends where the record does.
    log.close();
    log = SequencerLog.open(tmp.dir, { preallocate: 0 });
    await log.append([tx(1)]);
    log.close();
    const segment = join(tmp.dir, 'seg-00000000000000000001.log');
    const before = statSync(segment).size;
    appendFileSync(segment, Buffer.from([9, 0, 0, 0, 1, 2, 3])); // a record header cut short
    log = SequencerLog.open(tmp.dir);
    const { tornTail, ...counts } = log.recovery();
    expect(counts).toEqual({ segments: 1, records: 1, transactions: 1n, bytesTruncated: 7 });
    expect(tornTail).toMatchObject({ file: segment, offset: before, fileRemoved: false });
    expect(statSync(segment).size).toBe(before);
    expect(await log.append([tx(2)])).toEqual([{ ts: 2n, duplicate: false }]);
  });

  it('rejects a wrong-length digest with a clear error and appends nothing', async () => {
    await log.append([tx(1)]);
    const bad = { digest: Buffer.alloc(31), bytes: Buffer.from('short digest') };
    await expect(log.append([tx(2), bad])).rejects.toThrow(/transaction 1 has a 31-byte digest; digests are 32 bytes/);
    await expect(log.append([])).rejects.toThrow(/empty batch/);
    await expect(log.readBatch(-1n, 1)).rejects.toThrow(/fromTs must be a non-negative 64-bit integer/);
    await expect(log.readBatch(1n, -1)).rejects.toThrow(/max must be a non-negative integer/);
    expect(log.lastTs()).toBe(1n);
    expect(await log.append([tx(2)])).toEqual([{ ts: 2n, duplicate: false }]);
  });

  it('gives the crate\'s locked error to a second open, and "log is closed" after close', async () => {
    expect(() => SequencerLog.open(tmp.dir)).toThrow(/is locked by another open Log/);
    expect(() => SequencerLog.open(tmp.dir, { segmentSize: 0 })).toThrow(/segment_size must be positive/);
    expect(() => SequencerLog.open(tmp.dir, { preallocate: 2 ** 31 })).toThrow(/preallocate must be at most 1 GiB/);
    expect(() => SequencerLog.open(tmp.dir, { preallocate: -1 })).toThrow(/preallocate must be a non-negative integer/);
    log.close();
    expect(() => log.lastTs()).toThrow(/log is closed/);
    expect(() => log.recovery()).toThrow(/log is closed/);
    await expect(log.append([tx(1)])).rejects.toThrow(/log is closed/);
    await expect(log.readBatch(1n, 1)).rejects.toThrow(/log is closed/);
    // The lock went with the closed log.
    log = SequencerLog.open(tmp.dir, { segmentSize: 1 << 20, maxTxSize: 1024, dedupWindow: 10 });
    await expect(log.append([tx(1, Buffer.alloc(1025))])).rejects.toThrow(/over the 1024-byte limit/);
    expect(log.lastTs()).toBe(0n);
  });
});
