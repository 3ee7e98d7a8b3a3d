// The embedded node: admission, sequencer and primary in one process, pre-executors attached
// through links (child processes in a cluster, in-process objects in unit tests).
import type { App } from '../app/app.js';
import type { LookupTable, Natives, Outcome } from '../app/exec.js';
import { decodeTx, TxError, type DecodedTx } from '../app/tx.js';
import type { Decision } from './merge.js';
import { ConflictFeedback, type FeedbackOptions } from './feedback.js';
import type { Effect } from './preexecutor.js';
import { Primary, type Applied, type PrimaryOptions, type PrimaryStats, type PrimaryStore } from './primary.js';
import { Scheduler, type Policy, type SchedulerOptions } from './scheduler.js';
import type { Sequencer } from './sequencer.js';

/** How the node reaches one pre-executor. */
export interface PreExecutorLink {
  readonly name: string;
  send(txs: readonly DecodedTx[]): void;
  sendEffects(effects: readonly Effect[]): void;
}

/** The final answer to a client. */
export interface Reply {
  ts: bigint;
  /** Submitted before: `ts` and `outcome` are the first submission's. */
  duplicate: boolean;
  /** Null only for a duplicate applied too long ago to remember its outcome. */
  outcome: Outcome | null;
  decision: Decision | null;
}

export interface NodeOptions {
  deadlineMs: number;
  /** Outcomes remembered for answering duplicates (default 100,000). */
  rememberOutcomes?: number;
  /** Called after each applied batch, e.g. for metrics. */
  onApplied?: (batch: readonly Applied[]) => void;
  /** Passed to the primary: time spent merging each batch, e.g. for metrics. */
  onMerged?: PrimaryOptions['onMerged'];
  /** Called when `submit` resolves, with the time from the call to the final reply (ms). */
  onReplied?: (ms: number, reply: Reply) => void;
  /**
   * Which pre-executor admission hands a transaction (default `load`, the behaviour before
   * policies existed; the default will be the one the scheduling benchmark picks).
   */
  policy?: Policy;
  /** Tuning of the policy: affinity slack and capacity, `hotToPrimary`. */
  scheduling?: Omit<SchedulerOptions, 'policy'>;
  /** When an object counts as hot, and how fast conflict counts decay. */
  feedback?: FeedbackOptions;
}

interface PoolEntry {
  link: PreExecutorLink;
  executed: number;
  queued: DecodedTx[];
}

export class EmbeddedNode {
  readonly primary: Primary;
  readonly scheduler: Scheduler;
  /** Conflicts per object and misses per pre-executor, fed by every applied batch. */
  readonly feedback: ConflictFeedback;
  private readonly pool = new Map<string, PoolEntry>();
  private readonly waiters = new Map<string, ((a: Applied) => void)[]>();
  private readonly recent = new Map<string, Applied>();
  private appliedTs = 0n;
  private flushScheduled = false;
  private started = false;

  constructor(
    readonly app: App,
    natives: Natives,
    private readonly sequencer: Sequencer,
    store: PrimaryStore,
    private readonly opts: NodeOptions,
  ) {
    this.scheduler = new Scheduler({ ...opts.scheduling, policy: opts.policy ?? 'load' });
    this.feedback = new ConflictFeedback(opts.feedback);
    this.primary = new Primary(app, store, natives, {
      deadlineMs: opts.deadlineMs,
      onApplied: (batch) => this.applied(batch),
      ...(opts.onMerged ? { onMerged: opts.onMerged } : {}),
    });
  }

  /** Starts applying the sequence after `afterTs` (0: from the beginning, replaying the log). */
  start(afterTs = 0n): void {
    if (this.started) throw new Error('node already started');
    this.started = true;
    this.appliedTs = afterTs;
    this.sequencer.subscribe(afterTs, (batch) => this.primary.deliver(batch));
  }

  get lastApplied(): bigint {
    return this.appliedTs;
  }

  addPreExecutor(link: PreExecutorLink): void {
    if (this.pool.has(link.name)) throw new Error(`pre-executor ${link.name} is already attached`);
    this.pool.set(link.name, { link, executed: 0, queued: [] });
    this.scheduler.add(link.name);
  }

  /** Detaches a pre-executor (left or crashed): its outstanding work falls to the deadline. */
  removePreExecutor(name: string): void {
    this.pool.delete(name);
    this.scheduler.remove(name);
  }

  /** A pre-executor's result for `digest`. */
  result(from: string, digest: string, table: LookupTable): void {
    const p = this.pool.get(from);
    if (p) {
      this.scheduler.completed(from);
      p.executed++;
    }
    this.primary.offer(digest, table, from);
  }

  /** Work per pre-executor: results returned and results still owed. */
  poolStats(): { name: string; executed: number; outstanding: number }[] {
    return [...this.pool.values()].map((p) => ({
      name: p.link.name,
      executed: p.executed,
      outstanding: this.scheduler.outstanding(p.link.name),
    }));
  }

  get stats(): PrimaryStats {
    return this.primary.stats;
  }

  /**
   * Admits a transaction: checks it, hands it to a pre-executor and to the sequencer, and
   * resolves with the primary's final outcome. Bad input throws a `TxError` and changes nothing.
   */
  async submit(raw: unknown): Promise<Reply> {
    const onReplied = this.opts.onReplied;
    if (!onReplied) return this.admit(raw);
    const t0 = performance.now();
    const reply = await this.admit(raw);
    onReplied(performance.now() - t0, reply);
    return reply;
  }

  private async admit(raw: unknown): Promise<Reply> {
    const tx = decodeTx(raw);
    if (!Object.hasOwn(this.app.commands, tx.command)) {
      throw new TxError(`unknown command ${JSON.stringify(tx.command)} for app ${this.app.name}`);
    }
    const applied = new Promise<Applied>((resolve) => {
      const list = this.waiters.get(tx.digest) ?? [];
      list.push(resolve);
      this.waiters.set(tx.digest, list);
    });
    // The primary waits for a result only if some pre-executor was handed the transaction.
    if (this.dispatch(tx)) this.primary.expect(tx.digest);
    let accepted;
    try {
      accepted = await this.sequencer.submit(tx);
    } catch (e) {
      this.dropWaiters(tx.digest);
      this.primary.forget(tx.digest);
      throw e;
    }
    if (accepted.duplicate) {
      const first = this.recent.get(tx.digest);
      if (accepted.ts <= this.appliedTs) {
        this.dropWaiters(tx.digest);
        this.primary.forget(tx.digest);
        return {
          ts: accepted.ts,
          duplicate: true,
          outcome: first?.ts === accepted.ts ? first.outcome : null,
          decision: first?.ts === accepted.ts ? first.decision : null,
        };
      }
    }
    const a = await applied;
    return { ts: a.ts, duplicate: accepted.duplicate, outcome: a.outcome, decision: a.decision };
  }

  private dropWaiters(digest: string): void {
    this.waiters.delete(digest);
  }

  /** The scheduler picks the pre-executor; sent in one message per pre-executor per tick. */
  private dispatch(tx: DecodedTx): boolean {
    const name = this.scheduler.choose(tx.objects);
    const best = name === null ? undefined : this.pool.get(name);
    if (!best) return false;
    best.queued.push(tx);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    return true;
  }

  private flush(): void {
    this.flushScheduled = false;
    for (const p of this.pool.values()) {
      if (p.queued.length === 0) continue;
      const txs = p.queued;
      p.queued = [];
      p.link.send(txs);
    }
  }

  private applied(batch: readonly Applied[]): void {
    const remember = this.opts.rememberOutcomes ?? 100_000;
    for (const a of batch) {
      this.appliedTs = a.ts;
      this.recent.set(a.digest, a);
      const list = this.waiters.get(a.digest);
      if (list) {
        this.waiters.delete(a.digest);
        for (const w of list) w(a);
      }
    }
    // Maps iterate in insertion order, so the first keys are the oldest outcomes.
    for (const k of this.recent.keys()) {
      if (this.recent.size <= remember) break;
      this.recent.delete(k);
    }
    const effects: Effect[] = batch.filter((a) => a.writes.length > 0).map((a) => [a.ts, a.writes]);
    if (effects.length > 0) for (const p of this.pool.values()) p.link.sendEffects(effects);
    this.feedback.record(batch);
    if (this.scheduler.policy === 'load+affinity+hot') this.scheduler.setHot(this.feedback.hot());
    this.opts.onApplied?.(batch);
  }
}
