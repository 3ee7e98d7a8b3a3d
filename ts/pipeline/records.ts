// Batches of records between the node and its pre-executors (docs/binary-layouts.md): results
// (digest, table) one way, effects (ts, digest, writes) the other. Each batch is one buffer,
// built once; the node never decodes what it only forwards.
import { Buffer } from 'node:buffer';
import type { Write } from '../app/state.js';
import { splitTxBytes } from '../app/tx.js';
import type { Effect } from './preexecutor.js';
import { u32le } from '../bytes.js';

export class RecordError extends Error {
  override name = 'RecordError';
}

const DIGEST = 32;
export const DIGEST_BYTES = DIGEST;
const NONE = 0xffffffff;

/** results.v1: digest (32), table length (u32), table; repeated. */
export function encodeResults(results: readonly (readonly [digest: string, table: Uint8Array])[]): Buffer {
  let size = 0;
  for (const [, t] of results) size += DIGEST + 4 + t.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const [digest, t] of results) {
    if (out.write(digest, at, 'hex') !== DIGEST) throw new RecordError(`digest ${digest.slice(0, 16)}… is not 32 bytes of hex`);
    out.writeUInt32LE(t.length, at + DIGEST);
    out.set(t, at + DIGEST + 4);
    at += DIGEST + 4 + t.length;
  }
  return out;
}

/**
 * A results.v1 batch whose framing was checked: where each record starts (its digest). The
 * node matches most records to what it sent by comparing digests in place (`digestIs`), so no
 * record's digest need become a string.
 */
export interface ResultBatch {
  bytes: Buffer;
  starts: number[];
}

/** Checks results.v1's framing; `RecordError` if it lies. */
export function frameResults(b: Buffer): ResultBatch {
  const starts: number[] = [];
  let at = 0;
  while (at < b.length) {
    if (at + DIGEST + 4 > b.length) throw new RecordError(`results: record ${starts.length} truncated`);
    const len = u32le(b, at + DIGEST);
    const end = at + DIGEST + 4 + len;
    if (end > b.length) throw new RecordError(`results: record ${starts.length} says ${len} bytes, ${b.length - at - DIGEST - 4} left`);
    starts.push(at);
    at = end;
  }
  return { bytes: b, starts };
}

/** The table of the record starting at `at` of a framed batch (a view). */
export function resultTable(b: Buffer, at: number): Buffer {
  return b.subarray(at + DIGEST + 4, at + DIGEST + 4 + u32le(b, at + DIGEST));
}

const HEX_DIGIT = Buffer.from('0123456789abcdef', 'latin1');

/** Whether the 32 bytes at `at` of `b` are the digest written as `hex` (lowercase): compared in place. */
export function digestIs(b: Buffer, at: number, hex: string): boolean {
  if (hex.length !== 2 * DIGEST || at + DIGEST > b.length) return false;
  for (let i = 0; i < DIGEST; i++) {
    const v = b[at + i] as number;
    if (hex.charCodeAt(2 * i) !== HEX_DIGIT[v >> 4] || hex.charCodeAt(2 * i + 1) !== HEX_DIGIT[v & 15]) return false;
  }
  return true;
}

const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) {
  HEX_VALUE['0123456789abcdef'.charCodeAt(i)] = i;
  HEX_VALUE['0123456789ABCDEF'.charCodeAt(i)] = i;
}

/**
 * Writes the 64 hex digits of `digest` as 32 bytes at `at`: `Buffer.write(hex, 'hex')` first
 * copies the string out of the JavaScript heap, an allocation per transaction. Throws a
 * `RecordError` if `digest` is not 64 hex digits (nothing reliable was written then).
 */
export function writeDigest(out: Buffer, at: number, digest: string): void {
  if (digest.length !== 2 * DIGEST) throw new RecordError(`digest ${digest.slice(0, 16)}… is not 32 bytes of hex`);
  let bad = 0;
  for (let i = 0; i < DIGEST; i++) {
    const hi = HEX_VALUE[digest.charCodeAt(2 * i)] ?? -1;
    const lo = HEX_VALUE[digest.charCodeAt(2 * i + 1)] ?? -1;
    bad |= hi | lo;
    out[at + i] = (hi << 4) | lo;
  }
  if (bad < 0) throw new RecordError(`digest ${digest.slice(0, 16)}… is not 32 bytes of hex`);
}

/** Encodes writes as a table's writes section (nWrites u16 first, as effects carry them). */
export function encodeWrites(writes: readonly Write[]): Buffer {
  const ids = writes.map(([id]) => Buffer.from(id, 'utf8'));
  let size = 2;
  writes.forEach(([, v], i) => (size += 5 + (ids[i]?.length ?? 0) + (v?.length ?? 0)));
  const out = Buffer.allocUnsafe(size);
  out.writeUInt16LE(writes.length, 0);
  let at = 2;
  writes.forEach(([, v], i) => {
    const id = ids[i] ?? Buffer.alloc(0);
    out[at] = id.length;
    out.set(id, at + 1);
    at += 1 + id.length;
    out.writeUInt32LE(v === null ? NONE : v.length, at);
    at += 4;
    if (v !== null) {
      out.set(v, at);
      at += v.length;
    }
  });
  return out;
}

/** One effects.v1 record's head: ts and digest; the writes (with their count) follow. */
export function effectHead(ts: bigint, digest: string): Buffer {
  const out = Buffer.allocUnsafe(8 + DIGEST);
  out.writeBigUInt64LE(ts, 0);
  writeDigest(out, 8, digest);
  return out;
}

/** Encodes effects as effects.v1. */
export function encodeEffects(effects: readonly Effect[]): Buffer {
  return Buffer.concat(effects.flatMap(([ts, writes, digest]) => [effectHead(ts, digest), encodeWrites(writes)]));
}

/** Decodes effects.v1; `RecordError` if anything is out of bounds. */
export function decodeEffects(b: Buffer): Effect[] {
  const out: Effect[] = [];
  let at = 0;
  const need = (n: number) => {
    if (at + n > b.length) throw new RecordError(`effects: record ${out.length} truncated`);
  };
  while (at < b.length) {
    need(8 + DIGEST + 2);
    const ts = b.readBigUInt64LE(at);
    const digest = b.toString('hex', at + 8, at + 8 + DIGEST);
    const n = b.readUInt16LE(at + 8 + DIGEST);
    at += 8 + DIGEST + 2;
    const writes: Write[] = [];
    for (let i = 0; i < n; i++) {
      need(1);
      const len = b[at] ?? 0;
      need(1 + len + 4);
      const id = b.toString('utf8', at + 1, at + 1 + len);
      at += 1 + len;
      const vlen = b.readUInt32LE(at);
      at += 4;
      if (vlen === NONE) writes.push([id, null]);
      else {
        need(vlen);
        writes.push([id, b.subarray(at, at + vlen)]);
        at += vlen;
      }
    }
    out.push([ts, writes, digest]);
  }
  return out;
}

/** Splits a batch of concatenated `tx.v1` transactions into each one's bytes. */
export function splitTxs(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < b.length;) {
    const { end } = splitTxBytes(b, at);
    out.push(b.subarray(at, end));
    at = end;
  }
  return out;
}
