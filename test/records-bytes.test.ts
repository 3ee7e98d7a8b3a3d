// The byte paths that replaced per-transaction allocations: digests written and read in bulk,
// effects built in one buffer, and received byte strings copied out of their frame. Each is
// held to the plain construction it replaced.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AdoptedTx, effectsOf, type Applied } from '../ts/pipeline/applied.js';
import { decodeEffects, digestIs, encodeResults, encodeWrites, frameResults, RecordError, resultTable, writeDigest } from '../ts/pipeline/records.js';
import { encodeTable, receiveTable } from '../ts/pipeline/table-bytes.js';
import type { LookupTable } from '../ts/app/exec.js';
import { ownBytes } from '../ts/wire.js';

const hex = () => randomBytes(32).toString('hex');

function table(writes: [string, Uint8Array | null][]): LookupTable {
  return { reads: [['a', 1n]], dynamic: [], speculative: [], writes, auth: [], precompiles: [], outcome: { status: 'ok', result: null } };
}

describe('frameResults', () => {
  it('gives every record its digest and table', () => {
    for (const n of [0, 1, 63, 64, 65, 300]) {
      const records = Array.from({ length: n }, (_, i) => [hex(), randomBytes(i % 7)] as [string, Buffer]);
      const { bytes, starts } = frameResults(encodeResults(records));
      expect(starts.map((at) => bytes.toString('hex', at, at + 32))).toEqual(records.map(([d]) => d));
      expect(starts.map((at) => resultTable(bytes, at).toString('hex'))).toEqual(records.map(([, t]) => t.toString('hex')));
    }
  });

  it('refuses a record whose length runs past the batch, or that is cut short', () => {
    const b = encodeResults([[hex(), randomBytes(10)]]);
    expect(() => frameResults(b.subarray(0, 20))).toThrow('results: record 0 truncated');
    b.writeUInt32LE(11, 32);
    expect(() => frameResults(b)).toThrow(RecordError);
  });
});

describe('digestIs', () => {
  it('is Buffer.toString(hex) equality, compared in place', () => {
    for (let i = 0; i < 200; i++) {
      const b = randomBytes(40);
      const d = b.toString('hex', 5, 37);
      expect(digestIs(b, 5, d)).toBe(true);
      // One digit off, anywhere: not the digest.
      const k = i % 64;
      const other = d.slice(0, k) + (d[k] === '0' ? '1' : '0') + d.slice(k + 1);
      expect(digestIs(b, 5, other)).toBe(false);
      expect(digestIs(b, 4, d)).toBe(b.toString('hex', 4, 36) === d);
    }
    // Past the end, or not 64 digits: never equal.
    expect(digestIs(Buffer.alloc(31), 0, '00'.repeat(32))).toBe(false);
    expect(digestIs(Buffer.alloc(32), 0, '00'.repeat(31))).toBe(false);
  });
});

describe('writeDigest', () => {
  it('writes what Buffer.from(hex) holds, in either case of hex digits', () => {
    for (let i = 0; i < 200; i++) {
      const d = hex();
      for (const s of [d, d.toUpperCase()]) {
        const out = Buffer.alloc(40);
        writeDigest(out, 3, s);
        expect(out.subarray(3, 35)).toEqual(Buffer.from(d, 'hex'));
      }
    }
  });

  it('refuses anything but 64 hex digits', () => {
    const d = hex();
    for (const bad of [d.slice(1), `${d}0`, `g${d.slice(1)}`, `${d.slice(0, 63)} `, `${d.slice(0, 62)}é0`]) {
      expect(() => writeDigest(Buffer.alloc(32), 0, bad)).toThrow(RecordError);
    }
  });
});

describe('effectsOf', () => {
  it('is effect head plus writes for each transaction that wrote or was pre-executed, adopted or not', () => {
    const batch: Applied[] = [];
    const expected: [bigint, [string, Uint8Array | null][], string][] = [];
    for (let k = 0; k < 40; k++) {
      const writes: [string, Uint8Array | null][] = Array.from({ length: k % 3 }, (_, i) => [`acct:${k}:${i}`, i === 1 ? null : randomBytes(k % 5)]);
      // Past 2^32 too: the timestamp is written as two 32-bit halves.
      const ts = (BigInt(k + 1) << 33n) + BigInt(k);
      const digest = hex();
      if (k % 4 === 0) {
        // Executed here, alone: its writes are encoded.
        batch.push({
          ts,
          digest,
          outcome: { status: 'ok', result: null },
          decision: 'executed',
          preExecutor: null,
          writes,
          writeCount: writes.length,
          conflicts: [],
        } as Applied);
        if (writes.length > 0) expected.push([ts, writes, digest]);
      } else {
        batch.push(new AdoptedTx(ts, digest, 'p1', receiveTable(encodeTable(table(writes)))));
        expected.push([ts, writes, digest]);
      }
    }
    const effects = effectsOf(batch);
    expect(effects).not.toBeNull();
    const decoded = decodeEffects(effects as Buffer).map(([ts, writes, digest]) => [
      ts,
      writes.map(([id, v]) => [id, v === null ? null : Buffer.from(v).toString('hex')]),
      digest,
    ]);
    expect(decoded).toEqual(
      expected.map(([ts, writes, digest]) => [ts, writes.map(([id, v]) => [id, v === null ? null : Buffer.from(v).toString('hex')]), digest]),
    );
    // Adopted: the writes section is the table's own bytes, the same as encoding them.
    const adopted = batch[1] as AdoptedTx;
    const section = Buffer.alloc(adopted.writesLength);
    adopted.copyWrites(section, 0);
    expect(section).toEqual(encodeWrites(adopted.writes));
  });

  it('is null when nothing wrote and nothing was pre-executed', () => {
    const a = {
      ts: 1n,
      digest: hex(),
      outcome: { status: 'ok', result: null },
      decision: 'executed',
      preExecutor: null,
      writes: [],
      writeCount: 0,
      conflicts: [],
    } as Applied;
    expect(effectsOf([a])).toBeNull();
  });
});

describe('ownBytes', () => {
  it('copies every byte string out of the buffer it was read from and leaves the rest as it was', () => {
    const frame = randomBytes(4096);
    const view = (at: number, n: number) => frame.subarray(at, at + n);
    const msg = {
      t: 'submit',
      id: 7,
      tx: view(10, 175),
      nested: [view(300, 32), { deep: view(400, 3), n: 1n }],
      m: new Map([['k', view(500, 8)]]),
      none: null,
    };
    // Byte strings as hex, maps as entries: what the message says, whatever holds its bytes.
    const show = (v: unknown): unknown =>
      v instanceof Uint8Array
        ? Buffer.from(v).toString('hex')
        : v instanceof Map
          ? [...v].map(show)
          : Array.isArray(v)
            ? v.map(show)
            : typeof v === 'object' && v !== null
              ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, show(x)]))
              : v;
    const before = show(msg);
    const owned = ownBytes(msg) as typeof msg;
    const bins = [owned.tx, owned.nested[0] as Buffer, (owned.nested[1] as { deep: Buffer }).deep, owned.m.get('k') as Buffer];
    for (const b of bins) {
      expect(Buffer.isBuffer(b)).toBe(true);
      expect(b.buffer).not.toBe(frame.buffer);
    }
    expect(show(owned)).toEqual(before);
    frame.fill(0);
    expect(show(owned)).toEqual(before);
  });
});
