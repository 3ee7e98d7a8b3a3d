// What a replica takes from the ordered stream's ring is input: the packed batches the native
// reader hands over (ring-batch.ts) and the admitted transactions in them (ring-tx.ts) decode to
// exactly what the launcher pushed, and malformed bytes are refused with a reason, never a crash.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { encode } from '../ts/app/codec.js';
import { decodeTx, encodeTxBytes, TxError, TX_TAG } from '../ts/app/tx.js';
import { kvApp } from '../ts/apps/kv.js';
import { NativeRingReader, NativeStore } from '../ts/binding.js';
import { decodeRingRecord, RING_STORE } from '../ts/heron/messages.js';
import { unpackRingBatch } from '../ts/heron/ring-batch.js';
import { decodeAdmittedTx } from '../ts/heron/ring-tx.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-ring-input-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function txError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof TxError) return e.message;
    throw e;
  }
  throw new Error('expected a TxError');
}

const bytesOf = (body: Uint8Array): Buffer => encodeTxBytes({ body, auth: [] });

describe('admitted transactions from the ring', () => {
  it('decode to what admission decoded, digest included', () => {
    const tx = makeTx(kvApp, 'copy', { from: 'a', to: 'b' });
    const bytes = encodeTxBytes(tx);
    const admitted = decodeAdmittedTx(bytes);
    const full = decodeTx(bytes);
    expect({ command: admitted.command, args: admitted.args, objects: admitted.objects }).toEqual({
      command: full.command,
      args: full.args,
      objects: full.objects,
    });
    expect(Buffer.from(admitted.body).equals(Buffer.from(full.body))).toBe(true);
    expect(admitted.bytes.equals(bytes)).toBe(true);
    expect(admitted.digest).toBe(full.digest);
  });

  it('take a body as it decodes, canonical or not: every destination reads the same bytes', () => {
    // Map keys out of order: admission refuses this body, a replica need not.
    const unsorted = Buffer.concat([
      Buffer.from([0x94]),
      encode(TX_TAG),
      encode('put'),
      Buffer.from([0x82, 0xa5]),
      Buffer.from('value'),
      Buffer.from([0x01, 0xa3]),
      Buffer.from('key'),
      Buffer.from([0xa1, 0x61]),
      encode(['kv/a']),
    ]);
    expect(() => decodeTx(bytesOf(unsorted))).toThrow(/canonical form/);
    const tx = decodeAdmittedTx(bytesOf(unsorted));
    expect([tx.command, tx.args, tx.objects]).toEqual(['put', { value: 1, key: 'a' }, ['kv/a']]);
  });

  it('refuse malformed bytes with a reason', () => {
    const good = encodeTxBytes(makeTx(kvApp, 'put', { key: 'a', value: 1 }));
    expect(txError(() => decodeAdmittedTx(good.subarray(0, good.length - 1)))).toBe('transaction bytes are truncated');
    expect(txError(() => decodeAdmittedTx(Buffer.concat([good, Buffer.from([0])])))).toBe('transaction bytes hold 1 bytes after the transaction');
    expect(txError(() => decodeAdmittedTx(Buffer.from([9, 0, 0, 0, 0, 0])))).toBe('transaction bytes have layout 9, expected 1');
    expect(txError(() => decodeAdmittedTx(bytesOf(Buffer.from([0x92]))))).toMatch(/^transaction body is not valid msgpack: /);
    expect(txError(() => decodeAdmittedTx(bytesOf(encode(['remora.tx.v0', 'put', {}, []]))))).toBe(
      'transaction body must be ["remora.tx.v1", command, args, objects]',
    );
    expect(txError(() => decodeAdmittedTx(bytesOf(encode([TX_TAG, '', {}, []]))))).toBe(
      'transaction command must be a non-empty string of at most 64 characters',
    );
    expect(txError(() => decodeAdmittedTx(bytesOf(encode([TX_TAG, 'put', {}, 'kv/a']))))).toBe('transaction objects must be an array of at most 256 ids');
    expect(txError(() => decodeAdmittedTx(bytesOf(encode([TX_TAG, 'put', {}, [7]]))))).toBe('object id must be a non-empty string');
  });

  it('name the record whose transaction does not decode', () => {
    expect(() => decodeRingRecord(41n, [0], Buffer.from([1, 1, 0, 0, 0, 0x92, 0]))).toThrow(
      /^ring record 41 does not decode: transaction body is not valid msgpack: /,
    );
  });
});

/** A packed record as the native reader lays it out (heron_ring.rs `pack`). */
function packed(ts: bigint, dest: number[], payload: Uint8Array): Buffer {
  const b = Buffer.alloc(16 + 2 * dest.length + payload.length);
  b.writeBigUInt64LE(ts, 0);
  b.writeUInt32LE(payload.length, 8);
  b.writeUInt16LE(dest.length, 12);
  dest.forEach((h, i) => b.writeUInt16LE(h, 16 + 2 * i));
  b.set(payload, 16 + 2 * dest.length);
  return b;
}

describe('packed ring batches', () => {
  it('carry what the launcher pushed, record by record, through the native reader', () => {
    const secret = Buffer.alloc(32, 7);
    const store = NativeStore.create({ dir: work, name: RING_STORE, secret });
    try {
      const ring = store.heronRing({ partitions: 2, replicas: 1, capacity: 1 << 16 });
      const reader = NativeRingReader.attach({ dir: work, store: RING_STORE, region: ring.region, consumer: 1 });
      expect(reader.poll(16).length).toBe(0);
      const sent = [
        { ts: 5n, dest: [0, 1], payload: Buffer.from('both partitions') },
        { ts: 6n, dest: [0], payload: Buffer.from('partition 0 only') },
        { ts: 9n, dest: [1], payload: Buffer.alloc(3000, 0xab) },
        { ts: 2n ** 64n - 1n, dest: [1], payload: Buffer.alloc(0) },
      ];
      ring.push(sent, 100);
      // Consumer 1 reads partition 1: the records addressed to it, in order.
      const got = unpackRingBatch(reader.waitSync(16, 0, 1000));
      expect(got.map((r) => ({ ts: r.ts, dest: r.dest, payload: Buffer.from(r.payload) }))).toEqual(sent.filter((r) => r.dest.includes(1)));
      expect(reader.poll(16).length).toBe(0);
    } finally {
      store.close();
    }
  });

  it('split back into records, payloads as views', () => {
    const one = packed(3n, [1, 0], Buffer.from('abc'));
    const two = packed(4n, [0], Buffer.alloc(0));
    const got = unpackRingBatch(Buffer.concat([one, two]));
    expect(got.map((r) => [r.ts, r.dest, Buffer.from(r.payload).toString()])).toEqual([
      [3n, [1, 0], 'abc'],
      [4n, [0], ''],
    ]);
    expect(unpackRingBatch(Buffer.alloc(0))).toEqual([]);
  });

  it('refuse truncated or lying batches with a reason', () => {
    const rec = packed(3n, [1], Buffer.from('abcdef'));
    expect(() => unpackRingBatch(rec.subarray(0, 10))).toThrow('ring batch: a record header at byte 0 is truncated (10 of 16 bytes)');
    expect(() => unpackRingBatch(rec.subarray(0, rec.length - 1))).toThrow(
      "ring batch: the record at byte 0 (1 destinations, 6 payload bytes) runs past the batch's 23 bytes",
    );
    const lying = Buffer.from(rec);
    lying.writeUInt32LE(0xffff_ffff, 8);
    expect(() => unpackRingBatch(Buffer.concat([packed(1n, [0], Buffer.alloc(0)), lying]))).toThrow(
      "ring batch: the record at byte 18 (1 destinations, 4294967295 payload bytes) runs past the batch's 42 bytes",
    );
    const reserved = Buffer.from(rec);
    reserved[15] = 1;
    expect(() => unpackRingBatch(reserved)).toThrow('ring batch: the record at byte 0 has a nonzero reserved field');
  });
});
