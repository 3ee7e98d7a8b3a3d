// The embedded node: admission, sequencer and primary in one process, pre-executors attached
// through links (child processes in a cluster, in-process objects in unit tests).
import type { App } from '../app/app.js';
import type { LookupTable, Natives, Outcome } from '../app/exec.js';
import { admitTx } from '../app/admit.js';
import type { LoadedApp } from '../app/module.js';
import { decodeTx, type DecodedTx } from '../app/tx.js';
import { AppVersions, upgradeBody, type AppVersion } from '../app/versions.js';
import { encode } from '../app/codec.js';
import { stages } from '../stages.js';
import type { Decision } from './merge.js';
import { ConflictFeedback, type FeedbackOptions } from './feedback.js';
import type { OptimisticCheck } from './messages.js';
import type { Effect, Feedback } from './preexecutor.js';
import { Primary, writesBytes, type Applied, type PrimaryOptions, type PrimaryStats, type PrimaryStore } from './primary.js';
import { effectHead, encodeEffects } from './records.js';
import { encodeTable, receiveTable, TableError, type ReceivedTable } from './table-bytes.js';
import { DEFAULT_POLICY, Scheduler, type Policy, type SchedulerOptions } from './scheduler.js';
import type { Sequencer } from './sequencer.js';
import { MissPush, type PushedObject, type PushOptions, type StateUpdate } from './state-update.js';

/** How the node reaches one pre-executor. */
export interface PreExecutorLink {
  readonly name: string;
  /** Digest of the app version it executes with (undefined: whatever is active, in-process). */
  app?: string;
  send(txs: readonly DecodedTx[]): void;
  /** Asks it to load an app version ahead of its upgrade; resolves with the digest it loaded. */
  load?(v: { spec: string; digest: string }): Promise<string>;
  /** Tells it `digest` is now active: what it is handed from here on runs with that version. */
  upgrade?(digest: string): void;
  /** The primary's applied writes as effects.v1 bytes: one buffer per batch, shared by every member. */
  sendEffects(effects: Buffer): void;
  sendObjects(objects: readonly PushedObject[]): void;
  sendFeedback(feedback: Feedback): void;
}

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

export interface NodeOptions {
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
  /** Which pre-executor admission hands a transaction (default `DEFAULT_POLICY`). */
  policy?: Policy;
  /** Tuning of the policy: affinity slack and capacity, `hotToPrimary`. */
  scheduling?: Omit<SchedulerOptions, 'policy'>;
  /** When an object counts as hot, and how fast conflict counts decay. */
  feedback?: FeedbackOptions;
  /** How pre-executors' copies follow the primary (default `broadcast`). */
  stateUpdate?: StateUpdate;
  /** `push` only: when an object is pushed. */
  push?: PushOptions;
  /** Applied transactions between feedback messages to the pre-executors (default 1024). */
  feedbackEvery?: number;
  /**
   * Whether pre-executors let later transactions read their own results not yet applied
   * (speculation.ts; default true). Told to pre-executors when they attach.
   */
  speculation?: boolean;
}

interface PoolEntry {
  link: PreExecutorLink;
  executed: number;
  queued: DecodedTx[];
  /**
   * Digests handed to it whose results are still useful (not returned, not yet applied): what
   * a retirement waits for. The scheduler's load counts results not returned, applied or not,
   * so a member that stops answering keeps looking busy and stops being chosen.
   */
  owed: Set<string>;
  /** Set while retiring: called once nothing is owed. */
  drained: (() => void)[] | null;
}

interface OptimisticWait {
  first: OptimisticReply | null;
  listeners: ((o: OptimisticReply) => void)[];
}

export class EmbeddedNode {
  readonly primary: Primary;
  readonly scheduler: Scheduler;
  /** Conflicts per object and misses per pre-executor, fed by every applied batch. */
  readonly feedback: ConflictFeedback;
  readonly stateUpdate: StateUpdate;
  readonly speculation: boolean;
  /** `push` only: misses per pre-executor and object, and what each follows. */
  readonly push: MissPush | null;
  readonly optimisticStats: OptimisticStats = { sent: 0, confirmed: 0, wrong: 0 };
  /** Results dropped because their sender did not owe them (late, or not handed the transaction). */
  unowedResults = 0;
  private readonly pool = new Map<string, PoolEntry>();
  /** Digest → the pre-executor that owes its result. */
  private readonly owedBy = new Map<string, string>();
  /** Digest → the app version the pre-executor owing it runs (when it told us). */
  private readonly handedApp = new Map<string, string>();
  private readonly optimistic = new Map<string, OptimisticWait>();
  private sinceFeedback = 0;
  private readonly waiters = new Map<string, ((a: Applied, optimistic: OptimisticCheck) => void)[]>();
  /** Outcomes of recent transactions, for answering duplicates: only what a reply needs, so no table or buffer stays alive with them. */
  private readonly recent = new Map<string, { ts: bigint; outcome: Outcome; decision: Decision }>();
  // Set by `failed`'s executor, which runs as the fields are initialised (declared first).
  private fatal!: (e: unknown) => void;
  private appliedWaiters: { ts: bigint; resolve: () => void }[] = [];
  private appliedTs = 0n;
  private flushScheduled = false;
  private started = false;

  constructor(
    app: App | AppVersions,
    natives: Natives,
    private readonly sequencer: Sequencer,
    store: PrimaryStore,
    private readonly opts: NodeOptions,
  ) {
    this.scheduler = new Scheduler({ ...opts.scheduling, policy: opts.policy ?? DEFAULT_POLICY });
    this.feedback = new ConflictFeedback(opts.feedback);
    this.stateUpdate = opts.stateUpdate ?? 'broadcast';
    this.speculation = opts.speculation ?? true;
    this.push = this.stateUpdate === 'push' ? new MissPush(opts.push) : null;
    this.primary = new Primary(app, store, natives, {
      deadlineMs: opts.deadlineMs,
      onApplied: (batch) => this.applied(batch),
      onUpgrade: (v, ts) => this.upgraded(v, ts),
      ...(opts.onMerged ? { onMerged: opts.onMerged } : {}),
      ...(opts.onWaited ? { onWaited: opts.onWaited } : {}),
      ...(opts.log ? { log: opts.log } : {}),
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
    await Promise.all(
      [...this.pool.values()].map(async ({ link }) => {
        if (!link.load) return;
        const got = await link.load({ spec: v.spec, digest: v.digest }).catch((e: unknown) => `failed: ${e instanceof Error ? e.message : String(e)}`);
        if (got !== v.digest) {
          this.opts.log?.(`pre-executor ${link.name} could not load app ${v.digest.slice(0, 12)} (${got}); detaching it`);
          this.removePreExecutor(link.name);
        }
      }),
    );
    const tx = decodeTx({ body: upgradeBody(v, this.versions.active.after), auth: [] });
    const accepted = await this.sequencer.submit(tx);
    await this.whenApplied(accepted.ts);
    return accepted.ts;
  }

  /** Members hear of the new version after everything handed to them under the old one. */
  private upgraded(v: AppVersion, ts: bigint): void {
    this.flush();
    for (const p of this.pool.values()) {
      if (p.link.app === undefined) continue;
      p.link.app = v.digest;
      p.link.upgrade?.(v.digest);
    }
    this.opts.onUpgrade?.(v, ts);
  }

  /** Starts applying the sequence after `afterTs` (0: from the beginning, replaying the log). */
  start(afterTs = 0n): void {
    if (this.started) throw new Error('node already started');
    this.started = true;
    this.appliedTs = afterTs;
    this.sequencer.subscribe(afterTs, (batch) => this.primary.deliver(batch), (e) => this.fatal(e));
    // Reported through the log line above; `failed` is for whoever runs the node's process.
    this.failed.catch(() => undefined);
  }

  get lastApplied(): bigint {
    return this.appliedTs;
  }

  /**
   * Rejects if the node stops applying the sequence (a command broke determinism, the store
   * failed): it cannot go on without diverging from its log, so its process should end.
   */
  readonly failed: Promise<never> = new Promise<never>((_, reject) => {
    this.fatal = (e) => {
      (this.opts.log ?? ((m: string) => console.error(m)))(`node: stopped applying the sequence: ${e instanceof Error ? e.message : String(e)}`);
      reject(e);
    };
  });

  /** Resolves once every transaction up to `ts` is applied. */
  whenApplied(ts: bigint): Promise<void> {
    if (this.appliedTs >= ts) return Promise.resolve();
    return new Promise((resolve) => this.appliedWaiters.push({ ts, resolve }));
  }

  addPreExecutor(link: PreExecutorLink): void {
    if (this.pool.has(link.name)) throw new Error(`pre-executor ${link.name} is already attached`);
    this.pool.set(link.name, { link, executed: 0, queued: [], owed: new Set(), drained: null });
    this.scheduler.add(link.name);
    this.push?.add(link.name);
  }

  /** Detaches a pre-executor (left or crashed): its outstanding work falls to the deadline. */
  removePreExecutor(name: string): void {
    const p = this.pool.get(name);
    if (!p) return;
    this.pool.delete(name);
    this.scheduler.remove(name);
    this.push?.remove(name);
    for (const digest of p.owed) this.owedBy.delete(digest);
    for (const d of p.drained ?? []) d();
  }

  /**
   * Retires a pre-executor gracefully: it is handed nothing more, and the promise resolves once
   * every result it owes has come back (or its transaction was applied without it). The caller
   * then closes it; nothing it was handed waits for the deadline.
   */
  retire(name: string): Promise<void> {
    const p = this.pool.get(name);
    if (!p) return Promise.resolve();
    this.scheduler.remove(name);
    // Queued but not yet sent: the primary must not wait for those.
    for (const tx of p.queued) this.settle(tx.digest, name, false);
    p.queued = [];
    return new Promise((resolve) => {
      if (p.owed.size === 0) return resolve();
      (p.drained ??= []).push(resolve);
    });
  }

  /** Names of the pre-executors being handed work (retiring ones excluded). */
  get members(): string[] {
    return [...this.pool.keys()].filter((n) => this.scheduler.has(n));
  }

  /**
   * A pre-executor's result for `digest`. Taken only from the member the transaction was handed
   * to, while it still owes it: a table is trusted (adopted as it is), so no other member, and
   * no late copy, may put one in front of the primary. Anything else is counted and dropped.
   */
  result(from: string, digest: string, table: LookupTable | Uint8Array): void {
    stages.time('tables', () => this.intake(from, digest, table));
  }

  private intake(from: string, digest: string, table: LookupTable | Uint8Array): void {
    const p = this.pool.get(from);
    if (!p || this.owedBy.get(digest) !== from) {
      this.unowedResults++;
      return;
    }
    this.scheduler.completed(from);
    p.executed++;
    const app = this.handedApp.get(digest);
    this.settle(digest, from, true);
    let received: ReceivedTable;
    try {
      received = receiveTable(table instanceof Uint8Array ? Buffer.from(table.buffer, table.byteOffset, table.byteLength) : encodeTable(table));
    } catch (e) {
      if (!(e instanceof TableError)) throw e;
      // The transaction is executed by the primary, as if no result had come.
      this.primary.malformed(digest, from, e);
      return;
    }
    const wait = this.optimistic.get(digest);
    if (wait && wait.first === null) {
      wait.first = { outcome: received.rest.outcome, from };
      this.optimisticStats.sent++;
      for (const l of wait.listeners) l(wait.first);
    }
    this.primary.offer(digest, received, from, app);
  }

  /** Work per pre-executor: results returned and results still owed. */
  poolStats(): { name: string; executed: number; outstanding: number; retiring: boolean }[] {
    return [...this.pool.values()].map((p) => ({
      name: p.link.name,
      executed: p.executed,
      outstanding: p.owed.size,
      retiring: !this.scheduler.has(p.link.name),
    }));
  }

  get stats(): PrimaryStats {
    return this.primary.stats;
  }

  /**
   * Admits a transaction: checks it, hands it to a pre-executor and to the sequencer, and
   * resolves with the primary's final outcome. Bad input throws a `TxError` and changes nothing.
   */
  submit(raw: unknown, onOptimistic?: (o: OptimisticReply) => void): Promise<Reply> {
    const onReplied = this.opts.onReplied;
    if (!onReplied) return this.admit(raw, onOptimistic);
    const t0 = performance.now();
    return this.admit(raw, onOptimistic).then((reply) => {
      onReplied(performance.now() - t0, reply);
      return reply;
    });
  }

  /** Not async itself: one promise per transaction fewer, which the node feels at 10⁴ a second. */
  private admit(raw: unknown, onOptimistic?: (o: OptimisticReply) => void): Promise<Reply> {
    const prev = stages.enter('admission');
    let tx: DecodedTx;
    try {
      tx = admitTx(this.app, raw);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    } finally {
      stages.leave(prev);
    }
    return this.admitted(tx, onOptimistic);
  }

  /** Registers the reply's waiter, and hands `tx` to a pre-executor if the scheduler picks one. */
  private handOver(tx: DecodedTx, onOptimistic?: (o: OptimisticReply) => void): Promise<{ a: Applied; optimistic: OptimisticCheck }> {
    const applied = new Promise<{ a: Applied; optimistic: OptimisticCheck }>((resolve) => {
      const list = this.waiters.get(tx.digest) ?? [];
      list.push((a, optimistic) => resolve({ a, optimistic }));
      this.waiters.set(tx.digest, list);
    });
    if (onOptimistic) {
      const wait = this.optimistic.get(tx.digest) ?? { first: null, listeners: [] };
      wait.listeners.push(onOptimistic);
      this.optimistic.set(tx.digest, wait);
      // A resubmission after the result came: this caller gets the same optimistic reply.
      if (wait.first !== null) onOptimistic(wait.first);
    }
    // The primary waits for a result only if some pre-executor was handed the transaction.
    if (this.dispatch(tx)) this.primary.expect(tx.digest);
    return applied;
  }

  private async admitted(tx: DecodedTx, onOptimistic?: (o: OptimisticReply) => void): Promise<Reply> {
    const prev = stages.enter('admission');
    let applied: Promise<{ a: Applied; optimistic: OptimisticCheck }>;
    try {
      applied = this.handOver(tx, onOptimistic);
    } finally {
      stages.leave(prev);
    }
    let accepted;
    try {
      const s0 = this.opts.onSequenced ? performance.now() : 0;
      accepted = await this.sequencer.submit(tx);
      this.opts.onSequenced?.(performance.now() - s0);
    } catch (e) {
      this.dropWaiters(tx.digest);
      this.primary.forget(tx.digest);
      this.optimistic.delete(tx.digest);
      throw e;
    }
    if (accepted.duplicate) {
      const first = this.recent.get(tx.digest);
      if (accepted.ts <= this.appliedTs) {
        this.dropWaiters(tx.digest);
        this.primary.forget(tx.digest);
        this.optimistic.delete(tx.digest);
        this.settle(tx.digest, this.owedBy.get(tx.digest), false);
        return {
          ts: accepted.ts,
          duplicate: true,
          outcome: first?.ts === accepted.ts ? first.outcome : null,
          decision: first?.ts === accepted.ts ? first.decision : null,
          ...(onOptimistic && { optimistic: 'none' as const }),
        };
      }
    }
    const { a, optimistic } = await applied;
    const reply: Reply = { ts: a.ts, duplicate: accepted.duplicate, outcome: a.outcome, decision: a.decision };
    if (onOptimistic) reply.optimistic = optimistic;
    return reply;
  }

  private dropWaiters(digest: string): void {
    this.waiters.delete(digest);
  }

  /** The scheduler picks the pre-executor; sent in one message per pre-executor per tick. */
  private dispatch(tx: DecodedTx): boolean {
    // A resubmission while a pre-executor still owes the result: that result will do.
    if (this.owedBy.has(tx.digest)) return true;
    const name = this.scheduler.choose(tx.objects);
    const best = name === null ? undefined : this.pool.get(name);
    if (!best || name === null) return false;
    best.queued.push(tx);
    best.owed.add(tx.digest);
    this.owedBy.set(tx.digest, name);
    if (best.link.app !== undefined) this.handedApp.set(tx.digest, best.link.app);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    return true;
  }

  private flush(): void {
    stages.time('dispatch', () => this.flushNow());
  }

  private flushNow(): void {
    this.flushScheduled = false;
    for (const p of this.pool.values()) {
      if (p.queued.length === 0) continue;
      const txs = p.queued;
      p.queued = [];
      p.link.send(txs);
    }
  }

  /** `digest`'s result is no longer owed by `name` (returned, or its transaction applied). */
  private settle(digest: string, name: string | undefined, returned: boolean): void {
    if (name === undefined || this.owedBy.get(digest) !== name) return;
    this.owedBy.delete(digest);
    this.handedApp.delete(digest);
    const p = this.pool.get(name);
    if (!p) return;
    p.owed.delete(digest);
    if (!returned && !this.scheduler.has(name)) this.primary.forget(digest);
    if (p.drained && p.owed.size === 0) for (const d of p.drained.splice(0)) d();
  }

  /** Whether the optimistic reply sent for `a` (if any) was the final outcome. */
  private checkOptimistic(a: Applied): OptimisticCheck {
    const wait = this.optimistic.get(a.digest);
    if (!wait) return 'none';
    this.optimistic.delete(a.digest);
    if (wait.first === null) return 'none';
    const same = encode(wait.first.outcome).equals(encode(a.outcome));
    this.optimisticStats[same ? 'confirmed' : 'wrong']++;
    return same ? 'confirmed' : 'wrong';
  }

  private applied(batch: readonly Applied[]): void {
    const remember = this.opts.rememberOutcomes ?? 100_000;
    for (const a of batch) {
      this.appliedTs = a.ts;
      this.recent.set(a.digest, { ts: a.ts, outcome: a.outcome, decision: a.decision });
      this.settle(a.digest, this.owedBy.get(a.digest), false);
      const optimistic = this.checkOptimistic(a);
      const list = this.waiters.get(a.digest);
      if (list) {
        this.waiters.delete(a.digest);
        for (const w of list) w(a, optimistic);
      }
    }
    // Maps iterate in insertion order, so the first keys are the oldest outcomes.
    for (const k of this.recent.keys()) {
      if (this.recent.size <= remember) break;
      this.recent.delete(k);
    }
    if (this.appliedWaiters.length > 0) {
      const due = this.appliedWaiters.filter((w) => w.ts <= this.appliedTs);
      this.appliedWaiters = this.appliedWaiters.filter((w) => w.ts > this.appliedTs);
      for (const w of due) w.resolve();
    }
    stages.time('state-update', () => this.updatePreExecutors(batch));
    this.feedback.record(batch);
    if (this.scheduler.policy === 'load+affinity+hot') this.scheduler.setHot(this.feedback.hot());
    this.sinceFeedback += batch.length;
    if (this.sinceFeedback >= (this.opts.feedbackEvery ?? 1024)) {
      this.sinceFeedback = 0;
      this.sendFeedback();
    }
    this.opts.onApplied?.(batch);
  }

  /**
   * Brings pre-executors' copies forward as the state-update strategy says. `broadcast`: one
   * effects buffer per batch for every member, holding every transaction that wrote something
   * and every one a member executed (so it drops the guesses an abort left).
   */
  private updatePreExecutors(batch: readonly Applied[]): void {
    if (this.stateUpdate === 'pull' || this.pool.size === 0) return;
    if (!this.push) {
      const parts: Buffer[] = [];
      for (const a of batch) {
        if (a.writeCount === 0 && a.preExecutor === null) continue;
        parts.push(effectHead(a.ts, a.digest), writesBytes(a));
      }
      if (parts.length === 0) return;
      const effects = Buffer.concat(parts);
      // After this turn of the event loop: the batch's replies leave first, members hear next.
      setImmediate(() => stages.time('state-update', () => {
        for (const p of this.pool.values()) p.link.sendEffects(effects);
      }));
      return;
    }
    // Effects first: the pushed versions read from the store below are at least as new.
    const effects: Effect[] = batch.filter((a) => a.writeCount > 0).map((a) => [a.ts, a.writes, a.digest]);
    for (const p of this.pool.values()) {
      const mine = this.push.filter(p.link.name, effects);
      if (mine.length > 0) p.link.sendEffects(encodeEffects(mine));
    }
    for (const [name, ids] of this.push.record(batch)) {
      const values = this.primary.current(ids);
      this.pool.get(name)?.link.sendObjects(ids.map((id, i) => [id, values[i]?.version ?? 0n, values[i]?.value ?? null]));
    }
  }

  private sendFeedback(): void {
    const hot = [...this.feedback.hot()];
    const misses = this.feedback.misses();
    for (const p of this.pool.values()) {
      const name = p.link.name;
      p.link.sendFeedback({ misses: misses.get(name) ?? 0, pushes: this.push?.pushes(name) ?? 0, hot });
    }
  }
}
