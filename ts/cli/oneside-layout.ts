// What the one-sided demo, its writer roles and `remora bench oneside` share: the objects the
// writers keep rewriting, and how read latencies are summarised and printed. In ts/, not bench/,
// so the demo runs from an installed package.

export const SIZES = [64, 1024, 4096] as const;
/** Distinct objects per size: one JS batch of 64 reads each of them once. */
export const OBJECTS_PER_SIZE = 64;
export const STRESS_OBJECTS = 48;

/** Store names inside the bench's private cluster directory. */
export const BENCH_STORE = 'bench';
export const STRESS_STORE = 'stress';

export function sizeLabel(bytes: number): string {
  return bytes >= 1024 && bytes % 1024 === 0 ? `${bytes / 1024}KB` : `${bytes}B`;
}

/** The objects the bench writer keeps rewriting: `bench/<size>/<n>`. */
export function benchLayout(): { id: string; size: number }[] {
  return SIZES.flatMap((size) => Array.from({ length: OBJECTS_PER_SIZE }, (_, i) => ({ id: `bench/${sizeLabel(size)}/${i}`, size })));
}

/** The ids the native stress writer uses (remora-core `stress::object_id`). */
export function stressIds(objects: number): string[] {
  return Array.from({ length: objects }, (_, i) => `stress/${String(i).padStart(5, '0')}`);
}

export interface Summary {
  count: number;
  p50: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

/** Nearest-rank quantiles, the same rule the native loops use. */
export function summarise(samples: ArrayLike<number>): Summary {
  const sorted = Float64Array.from(samples).sort();
  const n = sorted.length;
  const at = (q: number) => sorted[Math.round((n - 1) * q)] ?? 0;
  let sum = 0;
  for (const s of sorted) sum += s;
  return { count: n, p50: at(0.5), p99: at(0.99), mean: n ? sum / n : 0, min: at(0), max: at(1) };
}

export function formatNs(ns: number): string {
  if (ns < 1_000) return `${ns.toFixed(0)} ns`;
  if (ns < 1_000_000) return `${(ns / 1_000).toFixed(2)} µs`;
  return `${(ns / 1_000_000).toFixed(2)} ms`;
}

export function formatCount(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** A field of a child's `result`, undefined when absent. */
export function resultField(result: unknown, key: string): unknown {
  return typeof result === 'object' && result !== null ? (result as Record<string, unknown>)[key] : undefined;
}

/** A number field of a child's `result`, or an error naming what was missing. */
export function resultNumber(result: unknown, key: string): number {
  const v = resultField(result, key);
  if (typeof v !== 'number') throw new Error(`child result has no number '${key}': ${JSON.stringify(result)}`);
  return v;
}
