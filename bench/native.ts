// The addon's benchmark entry points, for bench/ only. They exist in builds with the `bench`
// cargo feature (the default); in others each call throws, naming the feature.
import { benchEntry, type AdoptBenchResult, type Latency, type TransportLatency } from '../ts/binding.js';

export type { AdoptBenchResult, Latency, TransportLatency };

/**
 * Native adoption throughput: a store in `dir` filled with `objects` objects, then `rounds`
 * (default 3) rounds of `txs` transactions adopted in batches of 1024.
 */
export function benchAdopt(objects: number, txs: number, dir: string, rounds?: number, regionBytes?: number): Promise<AdoptBenchResult> {
  return benchEntry('benchAdopt')(objects, txs, dir, rounds, regionBytes);
}

/** A local memcpy of `size` bytes, timed one by one like a one-sided read. */
export function benchMemcpy(size: number, iterations: number): Promise<Latency> {
  return benchEntry('benchMemcpy')(size, iterations);
}

/** What timing an empty operation costs on this machine. */
export function benchTimer(iterations: number): Latency {
  return benchEntry('benchTimer')(iterations);
}

/** Raw and validated reads of objects of each size over `transport`, within this process. */
export function benchTransport(transport: string, sizes: number[], iterations: number): Promise<TransportLatency[]> {
  return benchEntry('benchTransport')(transport, sizes, iterations);
}
