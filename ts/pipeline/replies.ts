// Who waits for which applied transaction: submitters by digest, callers of `whenApplied` by
// timestamp, and the recent outcomes a duplicate submission is answered with.
import type { Outcome } from '../app/exec.js';
import type { Decision } from './merge.js';
import type { OptimisticCheck } from './messages.js';
import type { Applied } from './primary.js';
import { Flights, type Flight } from './in-flight.js';

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

/**
 * Who waits for a digest to be applied: an object, so a submission needs no closure for it,
 * told the applied record and how its optimistic reply fared, apart (no object per transaction).
 */
export interface AppliedListener {
  onApplied(a: Applied, optimistic: OptimisticCheck): void;
}

export class ReplyWaiters {
  /**
   * The outcomes of the last `remember` timestamps applied, at `ts % remember`: a duplicate is
   * asked for by the timestamp the log gave its first submission, so no per-digest map is
   * needed. The timestamp and the digest are kept as numbers in typed arrays, not as the
   * transaction's bigint and string: anything kept this long outlives two scavenges and is
   * copied into the old generation, two objects per transaction for the full collections to
   * trace (docs/pipeline.md). An adopted transaction's common outcome is a shared object, so
   * most slots of `recentOutcome` keep nothing alive either.
   */
  private readonly recentTs: Float64Array;
  /** The digest's first 32 bits: the log names the first submission's timestamp, this checks it. */
  private readonly recentDigest: Uint32Array;
  private readonly recentOutcome: (Outcome | undefined)[];
  private readonly recentDecision: (Decision | undefined)[];
  private appliedWaiters: { ts: bigint; resolve: () => void }[] = [];
  private appliedTs = 0n;

  /**
   * `remember`: outcomes kept for answering duplicates. `flights`: where who waits for a
   * digest is kept (a flight's `listener`; a second submitter of the same digest is chained to
   * the first), shared with the node's other parts.
   */
  constructor(
    private readonly remember: number,
    private readonly flights = new Flights(),
  ) {
    if (!Number.isSafeInteger(remember) || remember < 0) throw new RangeError(`outcomes remembered must be a non-negative integer, got ${remember}`);
    // -1: no timestamp is negative.
    this.recentTs = new Float64Array(remember).fill(-1);
    this.recentDigest = new Uint32Array(remember);
    this.recentOutcome = new Array<Outcome | undefined>(remember).fill(undefined);
    this.recentDecision = new Array<Decision | undefined>(remember).fill(undefined);
  }

  /** Applying starts after `ts` (what the log already held when the node restarted). */
  startAfter(ts: bigint): void {
    this.appliedTs = ts;
  }

  get lastApplied(): bigint {
    return this.appliedTs;
  }

  /** Resolves when `digest` is applied. */
  wait(digest: string): Promise<AppliedReply> {
    return new Promise((resolve) => this.listen(digest, { onApplied: (a, optimistic) => resolve({ a, optimistic }) }));
  }

  /** Tells `listener` when `digest` is applied (unless dropped first). */
  listen(digest: string, listener: AppliedListener): void {
    this.listenOn(this.flights.open(digest), listener);
  }

  /** As `listen`, on the digest's flight (live, from the registry this was made with). */
  listenOn(f: Flight, listener: AppliedListener): void {
    const first = f.listener;
    f.listener =
      first === null
        ? listener
        : {
            onApplied: (a, optimistic) => {
              first.onApplied(a, optimistic);
              listener.onApplied(a, optimistic);
            },
          };
  }

  /** No reply will come for `digest` from applying it (refused, or a duplicate already applied). */
  drop(digest: string): void {
    const f = this.flights.get(digest);
    if (f === undefined) return;
    f.listener = null;
    this.flights.release(f);
  }

  /** The first submission's outcome, if it was applied at `ts` and is still remembered. */
  remembered(digest: string, ts: bigint): RememberedOutcome | null {
    if (this.remember === 0) return null;
    const slot = this.slot(ts);
    const outcome = this.recentOutcome[slot];
    const decision = this.recentDecision[slot];
    if (this.recentTs[slot] !== Number(ts) || this.recentDigest[slot] !== fingerprint(digest) || outcome === undefined || decision === undefined) return null;
    return { ts, outcome, decision };
  }

  private slot(ts: bigint): number {
    // Timestamps stay far below 2^53 (one per transaction), where the conversion is exact.
    return Number(ts) % this.remember;
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
      if (this.remember > 0) {
        const slot = this.slot(a.ts);
        this.recentTs[slot] = Number(a.ts);
        this.recentDigest[slot] = fingerprint(a.digest);
        this.recentOutcome[slot] = a.outcome;
        this.recentDecision[slot] = a.decision;
      }
      const optimistic = check(a);
      const f = a.flight?.live === true ? a.flight : this.flights.get(a.digest);
      const w = f?.listener ?? null;
      if (f !== undefined && w !== null) {
        f.listener = null;
        this.flights.release(f);
        w.onApplied(a, optimistic);
      }
    }
    if (this.appliedWaiters.length > 0) {
      const due = this.appliedWaiters.filter((w) => w.ts <= this.appliedTs);
      this.appliedWaiters = this.appliedWaiters.filter((w) => w.ts > this.appliedTs);
      for (const w of due) w.resolve();
    }
  }
}

const HEX = new Uint8Array(128);
for (let i = 0; i < 16; i++) HEX['0123456789abcdef'.charCodeAt(i)] = i;

/** A digest's first 8 hex digits as a number, read in place (a slice and `parseInt` allocate). */
function fingerprint(digest: string): number {
  let h = 0;
  for (let i = 0; i < 8; i++) h = (h << 4) | ((HEX[digest.charCodeAt(i)] ?? 0) & 15);
  return h >>> 0;
}
