// Integers and byte runs read and written at offsets the caller has already checked against
// the buffer's length. Buffer's own methods (`readUInt32LE`, `copy`, `compare`, …) validate
// every argument through wrapped validator functions, three to five calls each; the node's
// paths make a dozen such calls per transaction, where the bounds are known already.
import { Buffer } from 'node:buffer';

/** The u16 little-endian at `at`. */
export const u16le = (b: Uint8Array, at: number): number => (b[at] as number) | ((b[at + 1] as number) << 8);

/** The u32 little-endian at `at`. */
export const u32le = (b: Uint8Array, at: number): number =>
  ((b[at] as number) | ((b[at + 1] as number) << 8) | ((b[at + 2] as number) << 16)) + (b[at + 3] as number) * 0x100_0000;

/** The u32 big-endian at `at`. */
export const u32be = (b: Uint8Array, at: number): number =>
  (b[at] as number) * 0x100_0000 + (((b[at + 1] as number) << 16) | ((b[at + 2] as number) << 8) | (b[at + 3] as number));

/** Writes `n` (a u16) little-endian at `at`. */
export function putU16le(b: Uint8Array, at: number, n: number): void {
  b[at] = n & 0xff;
  b[at + 1] = (n >>> 8) & 0xff;
}

/** Writes `n` (a u32) little-endian at `at`. */
export function putU32le(b: Uint8Array, at: number, n: number): void {
  b[at] = n & 0xff;
  b[at + 1] = (n >>> 8) & 0xff;
  b[at + 2] = (n >>> 16) & 0xff;
  b[at + 3] = n >>> 24;
}

const EXACT = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * Writes `n` (a u64) little-endian at `at`: as two u32 halves of a number while that is exact,
 * as timestamps (one per transaction) always are; `writeBigUInt64LE` makes three bigints a call.
 */
export function putU64le(b: Buffer, at: number, n: bigint): void {
  if (n > EXACT || n < 0n) {
    b.writeBigUInt64LE(n, at);
    return;
  }
  const v = Number(n);
  putU32le(b, at, v >>> 0);
  putU32le(b, at + 4, Math.floor(v / 0x1_0000_0000));
}

/** Writes `n` (a u32) big-endian at `at`. */
export function putU32be(b: Uint8Array, at: number, n: number): void {
  b[at] = n >>> 24;
  b[at + 1] = (n >>> 16) & 0xff;
  b[at + 2] = (n >>> 8) & 0xff;
  b[at + 3] = n & 0xff;
}

/** Whether `b` holds the bytes of `lit` at `at` (compared one by one: `compare` validates its arguments and calls into C++ for a dozen bytes). */
export function holds(b: Uint8Array, at: number, lit: Uint8Array): boolean {
  if (at + lit.length > b.length) return false;
  for (let i = 0; i < lit.length; i++) if (b[at + i] !== lit[i]) return false;
  return true;
}

/** Below this many bytes a loop copies faster than making a view to hand `set`. */
const LOOP_BELOW = 64;

/** Copies `src[start..end)` to `dst` at `at`. */
export function copyBytes(src: Uint8Array, start: number, end: number, dst: Uint8Array, at: number): void {
  if (end - start < LOOP_BELOW) for (let i = start; i < end; i++) dst[at + i - start] = src[i] as number;
  else dst.set(src.subarray(start, end), at);
}

/** `parts` back to back in one new buffer: `Buffer.concat` without its checks and calls per part. */
export function joinBytes(parts: readonly Uint8Array[], total?: number): Buffer {
  let size = total ?? 0;
  if (total === undefined) for (const p of parts) size += p.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
