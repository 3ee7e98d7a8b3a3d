// Conflict feedback from the primary: which objects keep invalidating pre-executed results,
// and which pre-executors' results keep being re-executed. Decay is counted in applied
// transactions, never in wall-clock time, so the same sequence always gives the same answer.
import type { Applied } from './primary.js';

export interface FeedbackOptions {
  /** A decayed conflict count at or above this makes an object hot (default 4). */
  hotThreshold?: number;
  /** Every this many applied transactions, all conflict counts halve (default 1024). */
  halveEvery?: number;
}

/** Counts below this after halving are forgotten, so the map holds only recent conflicts. */
const FORGET_BELOW = 0.5;

export class ConflictFeedback {
  readonly hotThreshold: number;
  readonly halveEvery: number;
  private readonly counts = new Map<string, number>();
  private readonly missesBy = new Map<string, number>();
  private sinceHalving = 0;

  constructor(opts: FeedbackOptions = {}) {
    this.hotThreshold = opts.hotThreshold ?? 4;
    this.halveEvery = opts.halveEvery ?? 1024;
    if (!(this.hotThreshold > 0)) throw new RangeError(`hotThreshold must be positive, got ${this.hotThreshold}`);
    if (!Number.isSafeInteger(this.halveEvery) || this.halveEvery < 1) {
      throw new RangeError(`halveEvery must be a positive integer, got ${this.halveEvery}`);
    }
  }

  /** Feeds applied transactions, in timestamp order. */
  record(batch: readonly Applied[]): void {
    for (const a of batch) {
      if (a.decision === 'reexecuted') {
        for (const id of a.conflicts) this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
        if (a.preExecutor !== null) this.missesBy.set(a.preExecutor, (this.missesBy.get(a.preExecutor) ?? 0) + 1);
      }
      if (++this.sinceHalving >= this.halveEvery) {
        this.sinceHalving = 0;
        this.halve();
      }
    }
  }

  /** The decayed conflict count of `id` (0 when none recently). */
  count(id: string): number {
    return this.counts.get(id) ?? 0;
  }

  /** Objects whose decayed conflict count is at least the threshold. */
  hot(): Set<string> {
    const hot = new Set<string>();
    for (const [id, c] of this.counts) if (c >= this.hotThreshold) hot.add(id);
    return hot;
  }

  /** Re-executed results per pre-executor since the start (not decayed). */
  misses(): Map<string, number> {
    return new Map(this.missesBy);
  }

  private halve(): void {
    for (const [id, c] of this.counts) {
      const h = c / 2;
      if (h < FORGET_BELOW) this.counts.delete(id);
      else this.counts.set(id, h);
    }
  }
}
