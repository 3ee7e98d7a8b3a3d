// The incremental state digest of a partition replica (Eve's idea): a running SHA-256 over the
// applied prefix, so replicas compare one hash per point of the sequence instead of states.
import { createHash } from 'node:crypto';

export const DIGEST_ZERO = '0'.repeat(64);

/**
 * The digest after applying transaction `ts` with `writes` (the partition's own writes, in the
 * order given: a replica sorts them) to a prefix whose digest is `prev`.
 */
export function nextDigest(prev: string, ts: bigint, writes: readonly (readonly [id: string, value: Uint8Array | null])[]): string {
  const h = createHash('sha256').update(Buffer.from(prev, 'hex'));
  const word = Buffer.alloc(8);
  word.writeBigUInt64LE(ts);
  h.update(word);
  for (const [id, value] of writes) {
    const idBytes = Buffer.from(id, 'utf8');
    word.writeBigUInt64LE(BigInt(idBytes.length));
    h.update(word).update(idBytes);
    // A delete and an empty value differ: length 2^64-1 marks the delete.
    word.writeBigUInt64LE(value === null ? 0xffff_ffff_ffff_ffffn : BigInt(value.length));
    h.update(word);
    if (value !== null) h.update(value);
  }
  return h.digest('hex');
}
