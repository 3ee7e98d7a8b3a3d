// Appends in flight together: the log writes them in call order whatever order the pool
// threads run them in, and the embedded sequencer's overlapping chunks keep submit order,
// timestamps and exactly-once delivery.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeTx, type DecodedTx } from '../ts/app/tx.js';
import { SequencerLog } from '../ts/log.js';
import { EmbeddedSequencer, readSequence, type Sequenced } from '../ts/pipeline/sequencer.js';
import { kvWorkload } from '../ts/workload.js';
import { tempCluster } from './helpers.js';

/** A flat batch of the digests `ids` (digest i is 32 bytes of i's low and high byte). */
function flat(ids: readonly number[]): { digests: Buffer; bytes: Buffer; ends: Uint32Array } {
  const digests = Buffer.alloc(32 * ids.length);
  ids.forEach((id, i) => {
    digests.fill(id & 0xff, 32 * i, 32 * i + 16);
    digests.fill(id >> 8, 32 * i + 16, 32 * i + 32);
  });
  const parts = ids.map((id) => Buffer.from(`tx ${id}`));
  const ends = new Uint32Array(ids.length);
  parts.reduce((end, p, i) => (ends[i] = end + p.length), 0);
  return { digests, bytes: Buffer.concat(parts), ends };
}

describe('appends in flight together', () => {
  let tmp: ReturnType<typeof tempCluster>;
  beforeEach(() => {
    tmp = tempCluster();
  });
  afterEach(() => tmp.cleanup());

  it('are written in call order, duplicates across them included', async () => {
    const log = SequencerLog.open(tmp.dir);
    try {
      // 40 calls (10 times the pool's threads) of 1 to 40 transactions; every third call
      // resends a digest of the call before it.
      const calls: number[][] = [];
      let next = 0;
      for (let c = 0; c < 40; c++) {
        const ids = Array.from({ length: 1 + ((c * 7) % 40) }, () => next++);
        if (c % 3 === 2) ids.push(calls[c - 1]?.[0] ?? 0);
        calls.push(ids);
      }
      const results = await Promise.all(
        calls.map((ids) => {
          const b = flat(ids);
          return log.appendFlat(b.digests, b.bytes, b.ends);
        }),
      );
      // What appending the calls one after the other gives.
      const first = new Map<number, bigint>();
      let ts = 0n;
      calls.forEach((ids, c) => {
        const want = ids.map((id) => {
          const seen = first.get(id);
          if (seen !== undefined) return { ts: seen, duplicate: 1 };
          first.set(id, ++ts);
          return { ts, duplicate: 0 };
        });
        const got = ids.map((_, i) => ({ ts: results[c]?.ts[i], duplicate: results[c]?.duplicate[i] }));
        expect(got, `call ${c}`).toEqual(want);
      });
      expect(log.lastTs()).toBe(ts);
      const entries = await log.readBatch(1n, 10_000);
      expect(entries.map((e) => e.bytes.toString())).toEqual([...first.keys()].map((id) => `tx ${id}`));
    } finally {
      log.close();
    }
  });

  it('takes digests as hex digits, either case, and rejects a batch with a bad digit whole', async () => {
    const log = SequencerLog.open(tmp.dir);
    try {
      const b = flat([0x1a2b, 0x00ff]);
      const hex = b.digests.toString('hex');
      expect(await log.appendFlat(hex.slice(0, 64), b.bytes, b.ends.subarray(0, 1))).toEqual({ ts: new BigUint64Array([1n]), duplicate: new Uint8Array([0]) });
      // The same digest in upper case, then in bytes: duplicates of the first.
      expect((await log.appendFlat(hex.slice(0, 64).toUpperCase(), b.bytes, b.ends.subarray(0, 1))).duplicate).toEqual(new Uint8Array([1]));
      expect((await log.appendFlat(b.digests.subarray(0, 32), b.bytes, b.ends.subarray(0, 1))).duplicate).toEqual(new Uint8Array([1]));
      await expect(log.appendFlat(`${hex.slice(0, 64)}${hex.slice(64, 127)}g`, b.bytes, b.ends)).rejects.toThrow('appendFlat: digest 1 is not 64 hex digits');
      await expect(log.appendFlat(hex.slice(0, 126), b.bytes, b.ends)).rejects.toThrow(
        'appendFlat: 126 hex digits of digests for 2 transactions; digests are 64 hex digits each',
      );
      expect(log.lastTs()).toBe(1n);
    } finally {
      log.close();
    }
  });

  it('closing with appends queued writes a prefix of them and rejects the rest as closed', async () => {
    const log = SequencerLog.open(tmp.dir);
    const calls = Array.from({ length: 24 }, (_, c) => Array.from({ length: 50 }, (_, i) => 50 * c + i));
    const settled = Promise.allSettled(
      calls.map((ids) => {
        const b = flat(ids);
        return log.appendFlat(b.digests, b.bytes, b.ends);
      }),
    );
    log.close();
    const outcomes = await settled;
    const written = outcomes.findIndex((o) => o.status === 'rejected');
    const prefix = written === -1 ? outcomes.length : written;
    for (const o of outcomes.slice(prefix)) {
      expect(o.status).toBe('rejected');
      if (o.status === 'rejected') expect(String(o.reason)).toMatch(/log is closed/);
    }
    const reopened = SequencerLog.open(tmp.dir);
    try {
      expect(reopened.lastTs()).toBe(BigInt(50 * prefix));
      const entries = await reopened.readBatch(1n, 10_000);
      expect(entries.map((e) => e.bytes.toString())).toEqual(calls.slice(0, prefix).flatMap((ids) => ids.map((id) => `tx ${id}`)));
    } finally {
      reopened.close();
    }
  });
});

describe('EmbeddedSequencer under load', () => {
  let tmp: ReturnType<typeof tempCluster>;
  beforeEach(() => {
    tmp = tempCluster();
  });
  afterEach(() => tmp.cleanup());

  it('keeps submit order, timestamps and exactly-once delivery across overlapping appends', async () => {
    const gen = kvWorkload({ keys: 1 << 16, hotKeys: 0, conflictRate: 0, dynamicRate: 0, seed: 7 });
    const txs: DecodedTx[] = Array.from({ length: 30_000 }, () => decodeTx(gen.next().value));
    const seq = new EmbeddedSequencer(tmp.dir);
    const delivered: Sequenced[] = [];
    let expected = Infinity;
    let allDelivered = (): void => undefined;
    const done = new Promise<void>((resolve) => (allDelivered = resolve));
    seq.subscribe(0n, (batch) => {
      delivered.push(...batch);
      if (delivered.length >= expected) allDelivered();
    });
    // Submitted all at once, with resubmissions of earlier transactions near the end. The
    // workload repeats itself too: expected is what one submit after another would give.
    const submitted = [...txs, txs[5], txs[20_000]].filter((t) => t !== undefined);
    const first = new Map<string, bigint>();
    const order: DecodedTx[] = [];
    const want = submitted.map((t) => {
      const seen = first.get(t.digest);
      if (seen !== undefined) return { ts: seen, duplicate: true };
      order.push(t);
      first.set(t.digest, BigInt(order.length));
      return { ts: BigInt(order.length), duplicate: false };
    });
    expect(want.at(-1)?.duplicate).toBe(true);
    const accepted = await Promise.all(submitted.map((t) => seq.submit(t)));
    expect(accepted).toEqual(want);
    expect(seq.appends, 'the batch went out in overlapping chunks').toBeGreaterThan(2);
    expected = order.length;
    if (delivered.length >= expected) allDelivered();
    await done;
    await seq.close();
    expect(delivered.map((s) => s.ts)).toEqual(order.map((_, i) => BigInt(i + 1)));
    expect(delivered.map((s) => s.tx.digest)).toEqual(order.map((t) => t.digest));
    expect((await readSequence(tmp.dir)).map((s) => s.tx.digest)).toEqual(order.map((t) => t.digest));
  });
});
