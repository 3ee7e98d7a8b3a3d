// How pre-executors' copies of the state follow the primary. The primary's applied writes are
// the only source of truth; a copy only ever holds versions the primary really wrote.
//
// - `broadcast`: every applied write goes to every pre-executor (the baseline; the copy is as
//   fresh as the network allows, at the cost of sending everything everywhere).
// - `push` (the slides' scheme): the primary counts, per pre-executor and object, the results
//   it had to re-execute because that object was stale; when the count reaches `threshold`, it
//   pushes the object's current version and from then on forwards that object's writes to that
//   pre-executor. Each pre-executor ends up following the objects it actually uses.
// - `pull`: before executing, a pre-executor reads the current versions of the transactions'
//   declared objects from the primary's store with one-sided reads and refreshes what changed.
import type { Applied } from './primary.js';
import type { Effect } from './preexecutor.js';

export type StateUpdate = 'broadcast' | 'push' | 'pull';
export const STATE_UPDATES: readonly StateUpdate[] = ['broadcast', 'push', 'pull'];

/** An object as the primary has it: version 0 never written, value null deleted. */
export type PushedObject = [id: string, version: bigint, value: Uint8Array | null];

export interface PushOptions {
  /** Misses on one object by one pre-executor before it is pushed (default 2). */
  threshold?: number;
  /** Objects one pre-executor may follow; past it, misses no longer cause pushes (default 100,000). */
  maxFollowed?: number;
}

/** Objects with misses below the threshold that one pre-executor's counts may hold. */
const MAX_COUNTED = 100_000;

interface Member {
  misses: Map<string, number>;
  followed: Set<string>;
  pushes: number;
}

/** The primary's side of `push`: per-pre-executor miss counts and the objects each follows. */
export class MissPush {
  readonly threshold: number;
  readonly maxFollowed: number;
  private readonly members = new Map<string, Member>();

  constructor(opts: PushOptions = {}) {
    this.threshold = opts.threshold ?? 2;
    this.maxFollowed = opts.maxFollowed ?? 100_000;
    if (!Number.isSafeInteger(this.threshold) || this.threshold < 1) {
      throw new RangeError(`push threshold must be a positive integer, got ${this.threshold}`);
    }
    if (!Number.isSafeInteger(this.maxFollowed) || this.maxFollowed < 0) {
      throw new RangeError(`maxFollowed must be a non-negative integer, got ${this.maxFollowed}`);
    }
  }

  add(name: string): void {
    this.members.set(name, { misses: new Map(), followed: new Set(), pushes: 0 });
  }

  remove(name: string): void {
    this.members.delete(name);
  }

  /**
   * Counts the misses of an applied batch; returns, per pre-executor, the objects whose miss
   * count just reached the threshold. The caller pushes their current versions.
   */
  record(batch: readonly Applied[]): Map<string, string[]> {
    const due = new Map<string, string[]>();
    for (const a of batch) {
      if (a.decision !== 'reexecuted' || a.preExecutor === null) continue;
      const m = this.members.get(a.preExecutor);
      if (!m) continue;
      for (const id of a.conflicts) {
        if (m.followed.has(id) || m.followed.size >= this.maxFollowed) continue;
        const n = (m.misses.get(id) ?? 0) + 1;
        if (n < this.threshold) {
          // Objects missed once and never again must not accumulate forever.
          if (m.misses.size >= MAX_COUNTED) m.misses.clear();
          m.misses.set(id, n);
          continue;
        }
        m.misses.delete(id);
        m.followed.add(id);
        m.pushes++;
        const list = due.get(a.preExecutor) ?? [];
        list.push(id);
        due.set(a.preExecutor, list);
      }
    }
    return due;
  }

  /** The part of `effects` that `name` follows (empty effects left out). */
  filter(name: string, effects: readonly Effect[]): Effect[] {
    const followed = this.members.get(name)?.followed;
    if (!followed || followed.size === 0) return [];
    const out: Effect[] = [];
    for (const [ts, writes, digest] of effects) {
      const mine = writes.filter(([id]) => followed.has(id));
      if (mine.length > 0) out.push([ts, mine, digest]);
    }
    return out;
  }

  /** Objects pushed to `name` so far. */
  pushes(name: string): number {
    return this.members.get(name)?.pushes ?? 0;
  }

  followed(name: string): number {
    return this.members.get(name)?.followed.size ?? 0;
  }

  /** Misses of `name` on `id` not yet pushed. */
  misses(name: string, id: string): number {
    return this.members.get(name)?.misses.get(id) ?? 0;
  }
}
