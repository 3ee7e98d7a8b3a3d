// Optimistic replies: the first pre-executor's outcome goes to the clients that asked for it
// before the primary's final one, and the final one then says whether it held.
import type { Outcome } from '../app/exec.js';
import { encode } from '../app/codec.js';
import type { OptimisticCheck } from './messages.js';
import { ChurnMap } from './churn-map.js';

/** A pre-executor's outcome, sent before the final one: it may still turn out wrong. */
export interface OptimisticReply {
  outcome: Outcome;
  /** The pre-executor that computed it. */
  from: string;
}

export interface OptimisticStats {
  /** Optimistic replies sent. */
  sent: number;
  /** Final outcomes equal to the optimistic one. */
  confirmed: number;
  /** Final outcomes that differ: the client was told. */
  wrong: number;
}

interface Wait {
  first: OptimisticReply | null;
  listeners: ((o: OptimisticReply) => void)[];
}

/** Transactions some client asked an optimistic reply for, by digest, until applied. */
export class OptimisticReplies {
  readonly stats: OptimisticStats = { sent: 0, confirmed: 0, wrong: 0 };
  private readonly waits = new ChurnMap<Wait>();

  /** `listener` hears the first result for `digest`, at once if it already came (a resubmission). */
  listen(digest: string, listener: (o: OptimisticReply) => void): void {
    const wait = this.waits.get(digest) ?? { first: null, listeners: [] };
    wait.listeners.push(listener);
    this.waits.set(digest, wait);
    if (wait.first !== null) listener(wait.first);
  }

  /** A pre-executor's result for `digest`: only the first one is sent, and only if asked for. */
  offer(digest: string, outcome: Outcome, from: string): void {
    const wait = this.waits.get(digest);
    if (!wait || wait.first !== null) return;
    wait.first = { outcome, from };
    this.stats.sent++;
    for (const l of wait.listeners) l(wait.first);
  }

  /** Whether the reply sent for `digest` (if any) was the final `outcome`; forgets `digest`. */
  settle(digest: string, outcome: Outcome): OptimisticCheck {
    const wait = this.waits.get(digest);
    if (!wait) return 'none';
    this.waits.delete(digest);
    if (wait.first === null) return 'none';
    const same = encode(wait.first.outcome).equals(encode(outcome));
    this.stats[same ? 'confirmed' : 'wrong']++;
    return same ? 'confirmed' : 'wrong';
  }

  /** `digest` will not be applied as submitted (refused by the sequencer, or a duplicate). */
  drop(digest: string): void {
    this.waits.delete(digest);
  }
}
