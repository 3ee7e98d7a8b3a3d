// Who waits for which applied transaction: submitters by digest, callers of `whenApplied` by
// timestamp, and the recent outcomes a duplicate submission is answered with.
import type { Outcome } from '../app/exec.js';
import type { Decision } from './merge.js';
import type { OptimisticCheck } from './messages.js';
import type { Applied } from './primary.js';

export interface AppliedReply {
  a: Applied;
  optimistic: OptimisticCheck;
}

/** What a reply to a duplicate needs of the first submission: no table or buffer stays alive with it. */
export interface RememberedOutcome {
  ts: bigint;
  outcome: Outcome;
  decision: Decision;
}

export class ReplyWaiters {
  private readonly waiters = new Map<string, ((r: AppliedReply) => void)[]>();
  private readonly recent = new Map<string, RememberedOutcome>();
  private appliedWaiters: { ts: bigint; resolve: () => void }[] = [];
  private appliedTs = 0n;

  /** `remember`: outcomes kept for answering duplicates. */
  constructor(private readonly remember: number) {}

  /** Applying starts after `ts` (what the log already held when the node restarted). */
  startAfter(ts: bigint): void {
    this.appliedTs = ts;
  }

  get lastApplied(): bigint {
    return this.appliedTs;
  }

  /** Resolves when `digest` is applied. */
  wait(digest: string): Promise<AppliedReply> {
    return new Promise((resolve) => {
      const list = this.waiters.get(digest) ?? [];
      list.push(resolve);
      this.waiters.set(digest, list);
    });
  }

  /** No reply will come for `digest` from applying it (refused, or a duplicate already applied). */
  drop(digest: string): void {
    this.waiters.delete(digest);
  }

  /** The first submission's outcome, if it was applied at `ts` and is still remembered. */
  remembered(digest: string, ts: bigint): RememberedOutcome | null {
    const first = this.recent.get(digest);
    return first?.ts === ts ? first : null;
  }

  /** Resolves once every transaction up to `ts` is applied. */
  whenApplied(ts: bigint): Promise<void> {
    if (this.appliedTs >= ts) return Promise.resolve();
    return new Promise((resolve) => this.appliedWaiters.push({ ts, resolve }));
  }

  /** Answers everyone waiting on `batch`; `check` settles each transaction's optimistic reply. */
  applied(batch: readonly Applied[], check: (a: Applied) => OptimisticCheck): void {
    for (const a of batch) {
      this.appliedTs = a.ts;
      this.recent.set(a.digest, { ts: a.ts, outcome: a.outcome, decision: a.decision });
      const optimistic = check(a);
      const list = this.waiters.get(a.digest);
      if (list) {
        this.waiters.delete(a.digest);
        for (const w of list) w({ a, optimistic });
      }
    }
    // Maps iterate in insertion order, so the first keys are the oldest outcomes.
    for (const k of this.recent.keys()) {
      if (this.recent.size <= this.remember) break;
      this.recent.delete(k);
    }
    if (this.appliedWaiters.length > 0) {
      const due = this.appliedWaiters.filter((w) => w.ts <= this.appliedTs);
      this.appliedWaiters = this.appliedWaiters.filter((w) => w.ts > this.appliedTs);
      for (const w of due) w.resolve();
    }
  }
}
