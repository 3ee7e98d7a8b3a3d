// The incremental state digest of a partition replica (Eve's idea): a running SHA-256 over the
// applied prefix, so replicas compare one hash per point of the sequence instead of states.
import { hash } from 'node:crypto';

export const DIGEST_ZERO = '0'.repeat(64);
const HEX_DIGEST = /^[0-9a-fA-F]{64}$/;

/** Length words are u64; a delete's value length is 2^64-1 (so a delete and an empty value differ). */
function putLength(b: Buffer, at: number, n: number | null): void {
  b.writeUInt32LE(n === null ? 0xffff_ffff : n, at);
  b.writeUInt32LE(n === null ? 0xffff_ffff : 0, at + 4);
}

/**
 * The digest after applying transaction `ts` with `writes` (the partition's own writes, in the
 * order given: a replica sorts them) to a prefix whose digest is `prev`: SHA-256 of prev's 32
 * bytes, ts (u64), then per write the id's length, the id (UTF-8), the value's length and the
 * value. Hashed as one buffer in one call, a fraction of a streaming hash's cost per piece.
 */
export function nextDigest(prev: string, ts: bigint, writes: readonly (readonly [id: string, value: Uint8Array | null])[]): string {
  // A digest a peer shipped is taken as Buffer.from takes hex, whatever it holds.
  const odd = HEX_DIGEST.test(prev) ? null : Buffer.from(prev, 'hex');
  const prevBytes = odd === null ? 32 : odd.length;
  let size = prevBytes + 8;
  for (const [id, value] of writes) size += 16 + Buffer.byteLength(id, 'utf8') + (value === null ? 0 : value.length);
  const input = Buffer.allocUnsafe(size);
  if (odd === null) input.write(prev, 0, 'hex');
  else odd.copy(input, 0);
  input.writeBigUInt64LE(ts, prevBytes);
  let at = prevBytes + 8;
  for (const [id, value] of writes) {
    const idBytes = input.write(id, at + 8, 'utf8');
    putLength(input, at, idBytes);
    at += 8 + idBytes;
    putLength(input, at, value === null ? null : value.length);
    at += 8;
    if (value !== null) {
      input.set(value, at);
      at += value.length;
    }
  }
  // Hex straight from the hash: asking it for a buffer costs more than both conversions.
  return hash('sha256', input, 'hex');
}
