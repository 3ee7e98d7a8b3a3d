// Partitions of objects and destination sets of transactions: pure functions of the ids and the
// partition count, so the sequencer side and every replica compute the same ones.
import type { App } from './app.js';

/**
 * FNV-1a (32-bit) over the id's UTF-8 bytes, finished with murmur3's mixer, modulo
 * `partitions`. The mixer matters: FNV's low bit is only the parity of the bytes' low bits,
 * so without it `mod 2` puts `k1` and `c1` together, always.
 */
export function hashPartition(id: string, partitions: number): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(id, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return (h >>> 0) % partitions;
}

/** The application's partitioner, checked: a result out of range is a bug worth naming. */
export function partitionerOf(app: App, partitions: number): (id: string) => number {
  if (!Number.isInteger(partitions) || partitions < 1) throw new RangeError(`partitions must be a positive integer, got ${partitions}`);
  const pick = app.partition?.bind(app) ?? hashPartition;
  return (id) => {
    const h = pick(id, partitions);
    if (!Number.isInteger(h) || h < 0 || h >= partitions) {
      throw new RangeError(`app ${app.name} put ${JSON.stringify(id)} in partition ${h}, not in 0..${partitions - 1}`);
    }
    return h;
  };
}

/**
 * A transaction's destination set: the partitions of its declared objects, ascending. One that
 * declares none goes to partition 0, so it is still ordered and answered (usually an abort).
 */
export function destinations(objects: readonly string[], partitionOf: (id: string) => number): number[] {
  const dest = [...new Set(objects.map(partitionOf))].sort((a, b) => a - b);
  return dest.length > 0 ? dest : [0];
}
