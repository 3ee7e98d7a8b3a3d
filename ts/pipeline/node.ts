// The embedded node: admission, sequencer and primary in one process, pre-executors attached
// through links (child processes in a cluster, in-process objects in unit tests).
import type { App } from '../app/app.js';
import type { LookupTable, Natives, Outcome } from '../app/exec.js';
import { admitEach, admitTx } from '../app/admit.js';
import type { LoadedApp } from '../app/module.js';
import { decodeTx, type DecodedTx } from '../app/tx.js';
import { AppVersions, upgradeBody, type AppVersion } from '../app/versions.js';
import { asError } from '../errors.js';
import { stages } from '../stages.js';
import { Delegator, type DelegationOptions } from './delegation.js';
import type { Decision } from './merge.js';
import type { MergeThreads } from './merge-threads.js';
import type { ConflictFeedback } from './feedback.js';
import type { OptimisticCheck } from './messages.js';
import { OptimisticReplies, type OptimisticReply, type OptimisticStats } from './optimistic.js';
import { PreExecutionPool, type MemberStats, type PoolOptions, type PreExecutorLink } from './pool.js';
import { Primary, type Applied, type PrimaryOptions, type PrimaryStats, type PrimaryStore } from './primary.js';
import type { ReceivedTable } from './table-bytes.js';
import type { Scheduler } from './scheduler.js';
import { EmbeddedSequencer, type Sequencer, type SequencingTicket } from './sequencer.js';
import type { MissPush, StateUpdate } from './state-update.js';
import { ReplyWaiters, type AppliedListener } from './replies.js';
import { Flights, type Flight } from './in-flight.js';

export type { MemberStats, PreExecutorLink } from './pool.js';
export type { OptimisticReply, OptimisticStats } from './optimistic.js';

/** The final answer to a client. */
export interface Reply {
  ts: bigint;
  /** Submitted before: `ts` and `outcome` are the first submission's. */
  duplicate: boolean;
  /** Null only for a duplicate applied too long ago to remember its outcome. */
  outcome: Outcome | null;
  decision: Decision | null;
  /** Only when an optimistic reply was asked for: whether the one sent (if any) held. */
  optimistic?: OptimisticCheck;
}

/** The pool's options (`PoolOptions`: policy, scheduling, feedback, state update, push, speculation) and the node's own. */
export interface NodeOptions extends PoolOptions {
  deadlineMs: number;
  /** Outcomes remembered for answering duplicates (default 100,000). */
  rememberOutcomes?: number;
  /** Called after each applied batch, e.g. for metrics. */
  onApplied?: (batch: readonly Applied[]) => void;
  /** Passed to the primary: time spent merging each batch, e.g. for metrics. */
  onMerged?: PrimaryOptions['onMerged'];
  /** Passed to the primary: time each batch waited for pre-execution results. */
  onWaited?: PrimaryOptions['onWaited'];
  /** Called when the sequencer accepted a transaction, with the time it took (ms). */
  onSequenced?: (ms: number) => void;
  /** Called when `submit` resolves, with the time from the call to the final reply (ms). */
  onReplied?: (ms: number, reply: Reply) => void;
  /** Where the node reports what it does to members (default: nowhere). */
  log?: (msg: string) => void;
  /** Called once an upgrade transaction activated a new app version. */
  onUpgrade?: (version: AppVersion, ts: bigint) => void;
  /**
   * The primary's merge threads (docs/primary.md): transactions without a table are executed on
   * them ahead of the in-order merge. Owned by the caller, who closes them after the node.
   */
  mergeThreads?: MergeThreads;
  /**
   * Delegation when overwhelmed (docs/primary.md): past `backlog` transactions ordered and not
   * yet applied, a hot subset of the state is leased to the least-loaded pre-executor. Absent: off.
   */
  delegation?: DelegationOptions;
  /**
   * Default true: a transaction admitted while no other is in flight (admitted, not yet
   * answered) is not handed to a pre-executor; the primary executes it while the log syncs it
   * (`Primary.executeAhead`) and merges that when it is ordered. An idle node has the time, and
   * a lone client's reply then waits for the log alone, not also for a pre-executor's round
   * trip or for its own execution after the sync. Submissions asking for an optimistic reply
   * are always handed out (the reply comes from a pre-executor).
   */
  localWhenAlone?: boolean;
}

export class EmbeddedNode {
  readonly primary: Primary;
  /** The pre-executors: scheduling, what each owes, tables in, state updates and feedback out. */
  readonly pool: PreExecutionPool;
  /** Leases of hot objects to a free pre-executor; null when delegation is off. */
  readonly delegation: Delegator | null;
  private readonly optimistic = new OptimisticReplies();
  private readonly replies: ReplyWaiters;
  // Set by `failed`'s executor, which runs as the fields are initialised (declared first).
  private fatal!: (e: unknown) => void;
  private started = false;
  /** Submissions admitted and not yet answered: one alone is executed by the primary (`localWhenAlone`). */
  private inFlight = 0;
  private readonly localWhenAlone: boolean;
  private readonly flights: Flights;

  constructor(
    app: App | AppVersions,
    natives: Natives,
    private readonly sequencer: Sequencer,
    store: PrimaryStore,
    private readonly opts: NodeOptions,
  ) {
    // One entry per transaction in flight for the replies, the pool and the primary together.
    const flights = new Flights();
    this.flights = flights;
    this.replies = new ReplyWaiters(opts.rememberOutcomes ?? 100_000, flights);
    this.localWhenAlone = opts.localWhenAlone ?? true;
    this.pool = new PreExecutionPool(
      {
        offer: (digest, table, from, app, flight) => this.offer(digest, table, from, app, flight),
        malformed: (digest, from, e) => this.primary.malformed(digest, from, e),
        forget: (digest) => this.primary.forget(digest),
        orphaned: (digests) => {
          // No result will come: the primary executes these as soon as it reaches them.
          for (const d of digests) this.primary.forget(d);
          this.delegation?.check();
        },
        current: (ids) => this.primary.current(ids),
        ...(opts.log && { log: opts.log }),
      },
      // The node's options are the pool's plus its own; the pool reads only its part.
      opts,
      flights,
    );
    this.primary = new Primary(app, store, natives, {
      deadlineMs: opts.deadlineMs,
      flights,
      onApplied: (batch) => this.applied(batch),
      onUpgrade: (v, ts) => this.upgraded(v, ts),
      ...(opts.onMerged ? { onMerged: opts.onMerged } : {}),
      ...(opts.onWaited ? { onWaited: opts.onWaited } : {}),
      ...(opts.log ? { log: opts.log } : {}),
      ...(opts.mergeThreads && { threads: opts.mergeThreads }),
    });
    this.delegation = opts.delegation ? this.delegator(opts.delegation) : null;
  }

  private delegator(opts: DelegationOptions): Delegator {
    return new Delegator(opts, {
      hot: () => {
        const f = this.pool.feedback;
        return [...f.hot()].sort((a, b) => f.count(b) - f.count(a));
      },
      members: () => this.pool.active.map((name) => ({ name, load: this.pool.scheduler.outstanding(name) })),
      current: (ids) => this.primary.current(ids),
      hand: (member, objects, txs, until) => {
        // Expected first: a member that fails as it is sent is removed at once, and what it
        // owed must then be forgotten, not waited for.
        for (const tx of txs) this.primary.expectUntil(tx.digest, until);
        if (!this.pool.delegate(member, objects, txs)) for (const tx of txs) this.primary.forget(tx.digest);
      },
      now: () => performance.now(),
      leased: (lease) => (this.pool.lease = lease),
    });
  }

  /** The app version admission checks against and new members must run. */
  get app(): App {
    return this.primary.versions.active.app;
  }

  get versions(): AppVersions {
    return this.primary.versions;
  }

  /**
   * Why a member that loaded app `digest` may not join (null if it may): every member must run
   * the active version, or transactions would be pre-executed by other code than the primary's.
   */
  refuseMember(name: string, app: string, digest: string): string | null {
    const active = this.versions.active;
    if (digest === active.digest) return null;
    return `pre-executor ${name} loaded app ${app} with digest ${digest.slice(0, 12)}, but the node runs ${active.app.name} ${active.digest.slice(0, 12)} (${active.spec}): start it with the same --app`;
  }

  /**
   * Activates app version `v` at the next position of the log: every member loads it first (a
   * member that cannot, or loads other code, is detached), then an upgrade transaction is
   * sequenced; transactions after it run with `v` everywhere. Resolves with its timestamp.
   */
  async upgrade(v: LoadedApp): Promise<bigint> {
    this.primary.stage(v);
    await this.pool.load({ spec: v.spec, digest: v.digest });
    const tx = decodeTx({ body: upgradeBody(v, this.versions.active.after), auth: [] });
    const accepted = await this.sequencer.submit(tx);
    await this.whenApplied(accepted.ts);
    return accepted.ts;
  }

  /** Members hear of the new version after everything handed to them under the old one. */
  private upgraded(v: AppVersion, ts: bigint): void {
    this.pool.upgraded(v.digest);
    this.opts.onUpgrade?.(v, ts);
  }

  /** Starts applying the sequence after `afterTs` (0: from the beginning, replaying the log). */
  start(afterTs = 0n): void {
    if (this.started) throw new Error('node already started');
    this.started = true;
    this.replies.startAfter(afterTs);
    this.sequencer.subscribe(
      afterTs,
      (batch) => {
        this.delegation?.batch(batch);
        return this.primary.deliver(batch);
      },
      (e) => this.fatal(e),
    );
    // Reported through the log line above; `failed` is for whoever runs the node's process.
    this.failed.catch(() => undefined);
  }

  get lastApplied(): bigint {
    return this.replies.lastApplied;
  }

  get optimisticStats(): OptimisticStats {
    return this.optimistic.stats;
  }

  /**
   * Rejects if the node stops applying the sequence (a command broke determinism, the store
   * failed): it cannot go on without diverging from its log, so its process should end.
   */
  readonly failed: Promise<never> = new Promise<never>((_, reject) => {
    this.fatal = (e) => {
      (this.opts.log ?? ((m: string) => console.error(m)))(`node: stopped applying the sequence: ${e instanceof Error ? e.message : String(e)}`);
      reject(asError(e));
    };
  });

  /** Resolves once every transaction up to `ts` is applied. */
  whenApplied(ts: bigint): Promise<void> {
    return this.replies.whenApplied(ts);
  }

  get scheduler(): Scheduler {
    return this.pool.scheduler;
  }

  /** Conflicts per object and misses per pre-executor, fed by every applied batch. */
  get feedback(): ConflictFeedback {
    return this.pool.feedback;
  }

  get stateUpdate(): StateUpdate {
    return this.pool.stateUpdate;
  }

  get speculation(): boolean {
    return this.pool.speculation;
  }

  /** `push` only: misses per pre-executor and object, and what each follows. */
  get push(): MissPush | null {
    return this.pool.push;
  }

  /** Results dropped because their sender did not owe them (late, or not handed the transaction). */
  get unowedResults(): number {
    return this.pool.unowedResults;
  }

  addPreExecutor(link: PreExecutorLink): void {
    this.pool.add(link);
  }

  /** Detaches a pre-executor (left or crashed): the primary executes what it owed without waiting. */
  removePreExecutor(name: string): void {
    this.pool.remove(name);
  }

  /**
   * Retires a pre-executor gracefully: it is handed nothing more, and the promise resolves once
   * every result it owes has come back (or its transaction was applied without it). The caller
   * then closes it; nothing it was handed waits for the deadline.
   */
  retire(name: string): Promise<void> {
    return this.pool.retire(name);
  }

  /**
   * The admission processes attached (admission-link.ts), by name: what each forwarded, and
   * of that what is not answered yet. Their links keep these up to date.
   */
  readonly admissions = new Map<string, { forwarded: number; waiting: number }>();

  /** Names of the pre-executors being handed work (retiring ones excluded). */
  get members(): string[] {
    return this.pool.active;
  }

  /** A pre-executor's result for `digest` (see `PreExecutionPool.result`). */
  result(from: string, digest: string, table: LookupTable | Uint8Array): void {
    this.pool.result(from, digest, table);
  }

  /** A checked table from the pool: the first one answers optimistic waiters, then the primary keeps it. */
  private offer(digest: string, received: ReceivedTable, from: string, app: string | undefined, flight: Flight): void {
    this.optimistic.offer(digest, received.rest.outcome, from);
    this.primary.offer(digest, received, from, app, flight);
  }

  /**
   * Digests the node holds anything for (a waiting submitter, a result owed or kept): none
   * once every transaction submitted is answered and nothing more is owed.
   */
  get heldDigests(): number {
    return this.flights.size;
  }

  /** Work per pre-executor: results returned and results still owed. */
  poolStats(): MemberStats[] {
    return this.pool.stats();
  }

  get stats(): PrimaryStats {
    return this.primary.stats;
  }

  /** Appends (so syncs) the embedded log has made since it opened; null with another sequencer. */
  get logAppends(): number | null {
    return this.sequencer instanceof EmbeddedSequencer ? this.sequencer.appends : null;
  }

  /**
   * Admits a transaction: checks it, hands it to a pre-executor and to the sequencer, and
   * resolves with the primary's final outcome. Bad input throws a `TxError` and changes nothing.
   */
  submit(raw: unknown, onOptimistic?: (o: OptimisticReply) => void): Promise<Reply> {
    return new Promise((resolve, reject) => this.submitWith(raw, (e, reply) => (e === null ? resolve(reply as Reply) : reject(e)), onOptimistic));
  }

  /**
   * As `submit`, calling `done` once with the reply or the error instead of settling a promise:
   * the client listener submits thousands a second, and each promise, with its reactions and
   * jobs, is work for the collector. `done` is never called before `submitWith` returns.
   */
  submitWith(raw: unknown, done: SubmitDone, onOptimistic?: (o: OptimisticReply) => void): void {
    const prev = stages.enter('admission');
    try {
      let tx: DecodedTx;
      try {
        tx = admitTx(this.app, raw);
      } catch (e) {
        const error = e instanceof Error ? e : new Error(String(e));
        queueMicrotask(() => done(error, null));
        return;
      }
      this.admitted(tx, done, onOptimistic);
    } finally {
      stages.leave(prev);
    }
  }

  /**
   * As `submitWith` for `tx.v1` transactions read together (`done[i]` answers `txs[i]`), in
   * this order: one native check and one stage for the batch. The views in `txs` may be of a
   * read buffer; they are copied before this returns.
   */
  submitBatch(txs: readonly Uint8Array[], done: readonly SubmitDone[]): void {
    const prev = stages.enter('admission');
    const batched = txs.length > 1;
    try {
      admitEach(this.app, txs, done, (tx, d) => this.admitted(tx, d, undefined, batched));
    } finally {
      // Whatever was held goes out, even if the loop stopped short.
      if (batched && this.sequencer instanceof EmbeddedSequencer) this.sequencer.appendHeld();
      stages.leave(prev);
    }
  }

  /**
   * Transactions an admission process checked and forwarded together (admission-link.ts):
   * handed on as `submitBatch` hands what it admitted, without checking them again.
   */
  submitForwarded(txs: readonly DecodedTx[], done: readonly SubmitDone[]): void {
    const prev = stages.enter('admission');
    const batched = txs.length > 1;
    try {
      for (let i = 0; i < txs.length; i++) {
        const tx = txs[i];
        const d = done[i];
        if (tx !== undefined && d !== undefined) this.admitted(tx, d, undefined, batched);
      }
    } finally {
      if (batched && this.sequencer instanceof EmbeddedSequencer) this.sequencer.appendHeld();
      stages.leave(prev);
    }
  }

  /**
   * Hands an admitted transaction to a pre-executor and to the sequencer; `done` hears the
   * reply. `batched`: one of several admitted together, so never the node's alone, and its
   * append waits for the batch's last.
   */
  private admitted(tx: DecodedTx, done: SubmitDone, onOptimistic: ((o: OptimisticReply) => void) | undefined, batched = false): void {
    const s = new Submission(this.submissions, tx, done, onOptimistic !== undefined, this.opts.onReplied ? performance.now() : 0);
    this.inFlight++;
    let alone = false;
    try {
      // One lookup for the transaction's stay: each part is handed its entry.
      const f = this.flights.open(tx.digest);
      s.flight = f;
      this.replies.listenOn(f, s);
      if (onOptimistic) this.optimistic.listen(tx.digest, onOptimistic);
      alone = !batched && this.localWhenAlone && this.inFlight === 1 && !onOptimistic;
      // The primary waits for a result only if some pre-executor was handed the transaction.
      if (!alone && this.pool.dispatch(tx, f)) this.primary.expectOn(f);
    } catch (e) {
      // Not sequenced: nothing will apply it, and the submitter hears why.
      s.failed(e);
      return;
    }
    s.sequencedAt = this.opts.onSequenced ? performance.now() : 0;
    if (this.sequencer instanceof EmbeddedSequencer) this.sequencer.enqueue(s, batched);
    else
      this.sequencer.submit(tx).then(
        (a) => s.accepted(a.ts, a.duplicate),
        (e: unknown) => s.failed(e),
      );
    // After the append started: the transaction executes while the log syncs it.
    if (alone) stages.time('merge', () => this.primary.executeAhead(tx));
  }

  /** What a submission asks of the node as its answers come in; made once, not per transaction. */
  private readonly submissions: SubmissionHost = {
    sequenced: (s, ts, duplicate) => {
      this.opts.onSequenced?.(performance.now() - s.sequencedAt);
      if (!(duplicate && ts <= this.replies.lastApplied)) return null;
      // Applied before: answered with what the first submission got, if still remembered.
      const digest = s.tx.digest;
      const first = this.replies.remembered(digest, ts);
      this.replies.drop(digest);
      this.primary.forget(digest);
      this.optimistic.drop(digest);
      this.pool.done(digest);
      return {
        ts,
        duplicate: true,
        outcome: first?.outcome ?? null,
        decision: first?.decision ?? null,
        ...(s.optimistic && { optimistic: 'none' as const }),
      };
    },
    unsequenced: (s) => {
      this.replies.drop(s.tx.digest);
      this.primary.forget(s.tx.digest);
      this.optimistic.drop(s.tx.digest);
    },
    settled: (s) => {
      this.inFlight--;
      // Answered together on the next microtask: never from inside the log's or the primary's
      // loops, where a client's next messages (read as soon as it is answered) would run.
      this.answered.push(s);
      if (this.answered.length === 1) queueMicrotask(this.answerAll);
    },
  };

  private answered: Submission[] = [];

  private readonly answerAll = (): void => {
    const list = this.answered;
    this.answered = [];
    const onReplied = this.opts.onReplied;
    // One stage for the batch: each answer's own entry (the listener's reply) is then free.
    const prev = stages.enter('replies');
    try {
      for (const s of list) {
        try {
          s.answer(onReplied);
        } catch (e) {
          // One submitter's failure must not keep the others from their answers.
          (this.opts.log ?? ((m: string) => console.error(m)))(`node: answering a submission failed: ${asError(e).message}`);
        }
      }
    } finally {
      stages.leave(prev);
    }
  };

  private applied(batch: readonly Applied[]): void {
    this.replies.applied(batch, (a) => this.optimistic.settle(a.digest, a.outcome));
    this.delegation?.applied(batch);
    this.pool.applied(batch);
    this.opts.onApplied?.(batch);
  }
}

/** How `submitWith` answers: the reply, or the error (a `TxError` for bad input). */
export type SubmitDone = (error: Error | null, reply: Reply | null) => void;

interface SubmissionHost {
  /** The log took `s`: the reply if it is a duplicate applied before, else null (wait for it to apply). */
  sequenced(s: Submission, ts: bigint, duplicate: boolean): Reply | null;
  /** The log refused `s`: nothing will apply it. */
  unsequenced(s: Submission): void;
  /** `s` has its answer: the host calls `s.answer` soon, outside whatever loop settled it. */
  settled(s: Submission): void;
}

/**
 * One admitted transaction on its way to its reply: the log's answer and the primary's come to
 * this object (in either order, though the embedded log always answers first), so a submission
 * costs one object rather than a chain of promises.
 */
class Submission implements SequencingTicket, AppliedListener {
  sequencedAt = 0;
  /** Its entry in the node's flights, carried with it through the log (`Sequenced.flight`). */
  flight: Flight | undefined = undefined;
  /** The log's answer (null until it came), kept as fields: no object per transaction. */
  private acceptedTs: bigint | null = null;
  private acceptedDuplicate = false;
  private appliedAs: Applied | null = null;
  private appliedOptimistic: OptimisticCheck = 'none';
  private settled = false;
  /** The answer, once settled: an error or a reply. */
  private error: Error | null = null;
  private reply: Reply | null = null;

  constructor(
    private readonly host: SubmissionHost,
    readonly tx: DecodedTx,
    private readonly done: SubmitDone,
    readonly optimistic: boolean,
    readonly submittedAt: number,
  ) {}

  accepted(ts: bigint, isDuplicate: boolean): void {
    if (this.settled || this.acceptedTs !== null) return;
    this.acceptedTs = ts;
    this.acceptedDuplicate = isDuplicate;
    let duplicate: Reply | null;
    try {
      duplicate = this.host.sequenced(this, ts, isDuplicate);
    } catch (e) {
      this.settle(asError(e), null);
      return;
    }
    if (duplicate !== null) this.settle(null, duplicate);
    else if (this.appliedAs !== null) this.settleApplied(this.appliedAs);
  }

  failed(e: unknown): void {
    if (this.settled || this.acceptedTs !== null) return;
    this.host.unsequenced(this);
    this.settle(asError(e), null);
  }

  onApplied(a: Applied, optimistic: OptimisticCheck): void {
    this.appliedAs = a;
    this.appliedOptimistic = optimistic;
    if (this.acceptedTs !== null && !this.settled) this.settleApplied(a);
  }

  private settleApplied(a: Applied): void {
    const reply: Reply = { ts: a.ts, duplicate: this.acceptedDuplicate, outcome: a.outcome, decision: a.decision };
    if (this.optimistic) reply.optimistic = this.appliedOptimistic;
    this.settle(null, reply);
  }

  private settle(error: Error | null, reply: Reply | null): void {
    this.settled = true;
    this.error = error;
    this.reply = reply;
    this.host.settled(this);
  }

  /** Tells the submitter (and `onReplied`, for a reply); called once, by the host. */
  answer(onReplied: NodeOptions['onReplied']): void {
    const reply = this.reply;
    if (reply !== null && onReplied) {
      try {
        onReplied(performance.now() - this.submittedAt, reply);
      } catch (e) {
        this.done(asError(e), null);
        return;
      }
    }
    this.done(this.error, reply);
  }
}
