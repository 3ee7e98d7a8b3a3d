// Prometheus metrics (prom-client): a registry per process, the node's and a pre-executor's
// metrics fed from the pipeline's callbacks, and a small HTTP endpoint serving them.
// The pipeline itself knows nothing of Prometheus: it calls hooks, and this module listens.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AgreementStats } from './pipeline/agreement.js';
import { LEASE_ENDS, type DelegationStats, type LeaseEnd } from './pipeline/delegation.js';
import type { NodeOptions, OptimisticStats } from './pipeline/node.js';
import type { Applied, PrimaryStats } from './pipeline/primary.js';
import { stages } from './stages.js';

export { Registry } from 'prom-client';

/**
 * A fresh registry holding the default process metrics (CPU, memory, event loop, GC). Not the
 * global one, so several (a node and in-process pre-executors, tests) can live in one process.
 */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

/** 0.1 ms … 5 s: from a lone transaction on an idle node to one stuck behind deadlines. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** 10 µs … 1 s: the CPU time of one batch. */
const BATCH_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

/** What the node metrics read when scraped (an `EmbeddedNode` is one). */
export interface NodeSource {
  readonly stats: PrimaryStats;
  poolStats(): readonly { name: string; executed: number; outstanding: number }[];
  readonly feedback: { misses(): ReadonlyMap<string, number>; hot(): ReadonlySet<string> };
  /** Null unless the state update is `push`. */
  readonly push: { pushes(name: string): number } | null;
  readonly optimisticStats: OptimisticStats;
  /** Last timestamp the primary applied (absent in sources that do not track it). */
  readonly lastApplied?: bigint;
  /** Delegation when overwhelmed; null or absent when off. */
  readonly delegation?: { readonly stats: DelegationStats } | null;
}

export interface NodeMetricsOptions {
  /** Applied transactions the adoption ratio is computed over (default 1000). */
  adoptionWindow?: number;
}

/** The hooks of `EmbeddedNode` the metrics are fed from. */
export type NodeMetricsHooks = Required<Pick<NodeOptions, 'onApplied' | 'onMerged' | 'onReplied' | 'onSequenced' | 'onWaited'>>;

/**
 * The node's metrics. Counters and histograms are fed by `hooks` (pass them to the
 * `EmbeddedNode` constructor); gauges and the counters mirrored from `PrimaryStats` are read
 * from the `attach`ed node only when scraped.
 */
export class NodeMetrics {
  readonly hooks: NodeMetricsHooks;
  private source: NodeSource | null = null;
  private sequencerTs: (() => bigint) | null = null;
  /** Replicated primaries: how this node's windows compared with its peers' (set by the cluster). */
  agreement: AgreementStats | null = null;
  /** Decisions of the last `window.length` applied transactions: 1 adopted, 0 not. */
  private readonly window: Uint8Array;
  private windowNext = 0;
  private windowFilled = 0;
  private windowAdopted = 0;

  constructor(registry: Registry, opts: NodeMetricsOptions = {}) {
    const size = opts.adoptionWindow ?? 1000;
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`adoptionWindow must be a positive integer, got ${size}`);
    this.window = new Uint8Array(size);
    const registers = [registry];
    const applied = new Counter({
      name: 'remora_transactions_applied_total',
      help: 'Transactions applied by the primary, by merge decision.',
      labelNames: ['decision'] as const,
      registers,
    });
    for (const decision of ['adopted', 'reexecuted', 'executed']) applied.labels(decision).inc(0);
    const aborted = new Counter({
      name: 'remora_transactions_aborted_total',
      help: 'Applied transactions whose outcome is an abort.',
      registers,
    });
    stages.watchGc();
    const stageSeen = new Map<string, number>();
    new Counter({
      name: 'remora_node_stage_seconds_total',
      help: "Time the node's process spent in each stage of the pipeline (stages.ts): divide by remora_transactions_applied_total for the cost per transaction; process_cpu_seconds_total minus the sum is `other`.",
      labelNames: ['stage'] as const,
      registers,
      collect() {
        for (const [stage, now] of Object.entries(stages.totals().stages)) {
          this.labels(stage).inc(Math.max(0, now - (stageSeen.get(stage) ?? 0)));
          stageSeen.set(stage, now);
        }
      },
    });
    const submitLatency = new Histogram({
      name: 'remora_submit_latency_seconds',
      help: 'Time from submit to the final reply (resolved submits only).',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    const mergeBatch = new Histogram({
      name: 'remora_merge_batch_seconds',
      help: 'Time the primary spends merging and storing one delivered batch (waiting for results excluded).',
      buckets: BATCH_BUCKETS,
      registers,
    });
    const sequenceLatency = new Histogram({
      name: 'remora_sequence_latency_seconds',
      help: 'Time from admission handing a transaction to the sequencer until it has its timestamp (the log append, fsync included).',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    const waitBatch = new Histogram({
      name: 'remora_merge_wait_seconds',
      help: 'Time a delivered batch waited for its pre-execution results (bounded by the deadline).',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    const pool = () => this.source?.poolStats() ?? [];
    const adoption = () => (this.windowFilled === 0 ? NaN : this.windowAdopted / this.windowFilled);
    const sequencerTs = () => this.sequencerTs?.();
    new Gauge({
      name: 'remora_adoption_ratio',
      help: `Share of the last ${size} applied transactions whose pre-executed result was adopted (NaN before any).`,
      registers,
      collect() {
        this.set(adoption());
      },
    });
    new Gauge({
      name: 'remora_preexecutor_pool_size',
      help: 'Pre-executors attached to the node.',
      registers,
      collect() {
        this.set(pool().length);
      },
    });
    new Gauge({
      name: 'remora_preexecutor_outstanding',
      help: 'Transactions handed to a pre-executor whose results have not come back.',
      labelNames: ['preexecutor'] as const,
      registers,
      collect() {
        // Detached pre-executors disappear rather than report a stale value.
        this.reset();
        for (const p of pool()) this.labels(p.name).set(p.outstanding);
      },
    });
    new Counter({
      name: 'remora_preexecutor_executed_total',
      help: 'Results a pre-executor returned to the node.',
      labelNames: ['preexecutor'] as const,
      registers,
      collect: perMember(() => pool().map((p) => [p.name, p.executed])),
    });
    new Counter({
      name: 'remora_preexecutor_misses_total',
      help: "A pre-executor's results the primary had to re-execute (an input was stale).",
      labelNames: ['preexecutor'] as const,
      registers,
      collect: perMember(() => {
        const misses = this.source?.feedback.misses();
        return misses ? pool().map((p) => [p.name, misses.get(p.name) ?? 0]) : [];
      }),
    });
    new Counter({
      name: 'remora_preexecutor_pushed_objects_total',
      help: 'Objects the primary pushed to a pre-executor after repeated misses (state update push).',
      labelNames: ['preexecutor'] as const,
      registers,
      collect: perMember(() => {
        const push = this.source?.push;
        return push ? pool().map((p) => [p.name, push.pushes(p.name)]) : [];
      }),
    });
    const source = () => this.source;
    new Gauge({
      name: 'remora_hot_objects',
      help: 'Objects whose decayed conflict count currently makes them hot.',
      registers,
      collect() {
        const s = source();
        if (s) this.set(s.feedback.hot().size);
      },
    });
    const agreement = () => this.agreement;
    const seenAgreement = { agreed: 0, disagreed: 0 };
    new Counter({
      name: 'remora_agreement_windows_total',
      help: "Replicated primaries: peers' window digests compared with this node's (agreed, disagreed: the application is not deterministic, or a node is damaged).",
      labelNames: ['result'] as const,
      registers,
      collect() {
        const now = agreement();
        if (!now) return;
        for (const result of ['agreed', 'disagreed'] as const) {
          this.labels(result).inc(now[result] - seenAgreement[result]);
          seenAgreement[result] = now[result];
        }
      },
    });
    const seenOptimistic: OptimisticStats = { sent: 0, confirmed: 0, wrong: 0 };
    new Counter({
      name: 'remora_optimistic_replies_total',
      help: 'Optimistic replies sent to clients (sent), and how final outcomes judged them (confirmed, wrong).',
      labelNames: ['verdict'] as const,
      registers,
      collect() {
        const now = source()?.optimisticStats;
        if (!now) return;
        for (const verdict of ['sent', 'confirmed', 'wrong'] as const) {
          this.labels(verdict).inc(now[verdict] - seenOptimistic[verdict]);
          seenOptimistic[verdict] = now[verdict];
        }
      },
    });
    new Counter({
      name: 'remora_native_signature_verifies_total',
      help: 'Signatures the primary verified itself (native calls).',
      registers,
      collect: mirror(() => this.source?.stats.nativeVerifies),
    });
    new Counter({
      name: 'remora_signatures_from_tables_total',
      help: "Signature checks the primary took from pre-executors' lookup tables instead of verifying.",
      registers,
      collect: mirror(() => this.source?.stats.authFromTables),
    });
    new Counter({
      name: 'remora_tables_malformed_total',
      help: "Pre-executors' tables that were malformed: dropped, and the transaction executed by the primary.",
      registers,
      collect: mirror(() => this.source?.stats.malformedTables),
    });
    new Gauge({
      name: 'remora_applied_ts',
      help: 'Last timestamp the primary applied: remora_sequencer_last_ts minus this is the lag (ordered, not yet applied).',
      registers,
      collect() {
        const ts = source()?.lastApplied;
        if (ts !== undefined) this.set(Number(ts));
      },
    });
    new Counter({
      name: 'remora_merge_speculated_total',
      help: 'Transactions without a table that the merge threads executed ahead of the in-order merge (mergeThreads > 1).',
      registers,
      collect: mirror(() => this.source?.stats.speculated),
    });
    new Counter({
      name: 'remora_merge_speculations_kept_total',
      help: 'Of those, the ones whose table the in-order merge kept (the rest were executed again: an earlier transaction of the batch changed what they read).',
      registers,
      collect: mirror(() => this.source?.stats.speculationsKept),
    });
    new Counter({
      name: 'remora_primary_executed_ahead_total',
      help: 'Transactions admitted while nothing else was in flight that the primary executed while the log synced them, ahead of their turn.',
      registers,
      collect: mirror(() => this.source?.stats.executedAhead),
    });
    new Counter({
      name: 'remora_primary_executions_ahead_kept_total',
      help: 'Of those, the ones whose execution the in-order merge kept (the rest were executed again: what they read changed before their turn).',
      registers,
      collect: mirror(() => this.source?.stats.executionsAheadKept),
    });
    const seenEnds: Record<LeaseEnd, number> = { load: 0, expired: 0, member: 0 };
    new Counter({
      name: 'remora_delegation_leases_total',
      help: 'Leases of hot objects to a free pre-executor that ended, by why: load (the backlog fell), expired, member (it left).',
      labelNames: ['end'] as const,
      registers,
      collect() {
        const ended = source()?.delegation?.stats.ended;
        if (!ended) return;
        for (const end of LEASE_ENDS) {
          this.labels(end).inc(ended[end] - seenEnds[end]);
          seenEnds[end] = ended[end];
        }
      },
    });
    new Counter({
      name: 'remora_delegated_transactions_total',
      help: 'Transactions handed to the pre-executor holding a lease, in sequence order (delegation on).',
      registers,
      collect: mirror(() => this.source?.delegation?.stats.delegated),
    });
    new Counter({
      name: 'remora_delegated_adopted_total',
      help: "Of those, the ones whose delegate's table the primary adopted (the rest were executed or re-executed by the primary).",
      registers,
      collect: mirror(() => this.source?.delegation?.stats.adopted),
    });
    new Gauge({
      name: 'remora_sequencer_last_ts',
      help: 'Newest timestamp the sequencer assigned.',
      registers,
      collect() {
        const ts = sequencerTs();
        if (ts !== undefined) this.set(Number(ts));
      },
    });

    this.hooks = {
      onApplied: (batch: readonly Applied[]) => {
        let adopted = 0;
        let reexecuted = 0;
        let abortedCount = 0;
        const w = this.window;
        for (const a of batch) {
          const isAdopted = a.decision === 'adopted' ? 1 : 0;
          if (isAdopted) adopted++;
          else if (a.decision === 'reexecuted') reexecuted++;
          if (a.outcome.status === 'aborted') abortedCount++;
          this.windowAdopted += isAdopted - (w[this.windowNext] ?? 0);
          w[this.windowNext] = isAdopted;
          this.windowNext = (this.windowNext + 1) % w.length;
        }
        this.windowFilled = Math.min(w.length, this.windowFilled + batch.length);
        const executed = batch.length - adopted - reexecuted;
        if (adopted > 0) applied.labels('adopted').inc(adopted);
        if (reexecuted > 0) applied.labels('reexecuted').inc(reexecuted);
        if (executed > 0) applied.labels('executed').inc(executed);
        if (abortedCount > 0) aborted.inc(abortedCount);
      },
      onMerged: (ms: number) => mergeBatch.observe(ms / 1000),
      onSequenced: (ms: number) => sequenceLatency.observe(ms / 1000),
      onWaited: (ms: number) => waitBatch.observe(ms / 1000),
      onReplied: (ms: number) => submitLatency.observe(ms / 1000),
    };
  }

  /** The node (and optionally the sequencer's newest timestamp) scrapes read from. */
  attach(source: NodeSource, sequencerTs?: () => bigint): void {
    this.source = source;
    this.sequencerTs = sequencerTs ?? null;
  }
}

/** A labelled counter's `collect` following monotonic numbers per pre-executor kept elsewhere. */
function perMember(read: () => readonly (readonly [string, number])[]): (this: Counter<'preexecutor'>) => void {
  const seen = new Map<string, number>();
  return function (this: Counter<'preexecutor'>) {
    for (const [name, now] of read()) {
      const before = seen.get(name) ?? 0;
      // A name attached again starts from zero: count all of its new events.
      seen.set(name, now);
      this.labels(name).inc(now >= before ? now - before : now);
    }
  };
}

/** A counter's `collect` that follows a monotonic number kept elsewhere. */
function mirror(read: () => number | undefined): (this: Counter) => void {
  let seen = 0;
  return function (this: Counter) {
    const now = read();
    if (now === undefined || now <= seen) return;
    this.inc(now - seen);
    seen = now;
  };
}

/** What the pre-executor metrics read when scraped (a `PreExecutor` is one). */
export interface PreExecutorSource {
  readonly appliedTs: bigint;
}

/** A pre-executor process's metrics; `onBatch` goes to `runPreExecutor`. */
export class PreExecutorMetrics {
  readonly onBatch: (txs: number, ms: number) => void;
  private source: PreExecutorSource | null = null;

  constructor(registry: Registry) {
    const registers = [registry];
    const transactions = new Counter({
      name: 'remora_preexec_transactions_total',
      help: 'Transactions this pre-executor executed.',
      registers,
    });
    const batchSeconds = new Histogram({
      name: 'remora_preexec_batch_seconds',
      help: 'Time to execute one batch handed over by the node (signature checks included).',
      buckets: BATCH_BUCKETS,
      registers,
    });
    const appliedTs = () => this.source?.appliedTs;
    new Gauge({
      name: 'remora_preexec_applied_ts',
      help: "Newest timestamp of the primary's effects this pre-executor's state holds.",
      registers,
      collect() {
        const ts = appliedTs();
        if (ts !== undefined) this.set(Number(ts));
      },
    });
    this.onBatch = (txs, ms) => {
      transactions.inc(txs);
      batchSeconds.observe(ms / 1000);
    };
  }

  attach(source: PreExecutorSource): void {
    this.source = source;
  }
}

/** What an admission process's metrics read when scraped (admission.ts). */
export interface AdmissionSource {
  /** Requests read from clients, pauses, clients cut off (`ServeStats`). */
  readonly serving: { readonly requests: number; readonly paused: number; readonly cutOff: number };
  /** Forwarded to the node, refused here, answered by the node, waiting for it (`AdmissionFront`). */
  readonly front: { readonly forwarded: number; readonly refused: number; readonly answered: number; readonly inFlight: number };
}

/** An admission process's metrics, read from `source` when scraped. */
export function admissionMetrics(registry: Registry, source: AdmissionSource): void {
  const registers = [registry];
  const counter = (name: string, help: string, read: () => number) => new Counter({ name, help, registers, collect: mirror(read) });
  counter('remora_admission_requests_total', 'Submissions read from clients.', () => source.serving.requests);
  counter('remora_admission_forwarded_total', 'Transactions that passed the checks and went to the node.', () => source.front.forwarded);
  counter(
    'remora_admission_refused_total',
    "Submissions refused here (malformed, unknown command, declared objects not the app's).",
    () => source.front.refused,
  );
  counter('remora_admission_answered_total', 'Forwarded transactions the node answered.', () => source.front.answered);
  counter('remora_admission_client_pauses_total', 'Times a client was not read: too many requests in flight or replies unread.', () => source.serving.paused);
  counter('remora_admission_clients_cut_off_total', 'Clients disconnected for leaving too many replies unread.', () => source.serving.cutOff);
  new Gauge({
    name: 'remora_admission_in_flight',
    help: 'Forwarded transactions waiting for the node to answer.',
    registers,
    collect() {
      this.set(source.front.inFlight);
    },
  });
}

export interface MetricsServer {
  /** The port bound (the one asked for, or the one the system chose for 0). */
  readonly port: number;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/** Whether the process serves: `GET /ready` answers 200, or 503 with the reason. */
export type Readiness = () => { ready: boolean; reason: string | null };

/**
 * Serves `registry` at `GET /metrics` over HTTP, and readiness at `GET /ready` when given (for
 * a load balancer or an orchestrator's probe); every other request gets a 404.
 */
export async function serveMetrics(registry: Registry, opts: { port: number; host?: string; readiness?: Readiness }): Promise<MetricsServer> {
  const server = createServer((req, res) => void respond(registry, req, res, opts.readiness));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('metrics server has no TCP address');
  let closing: Promise<void> | null = null;
  return {
    port: address.port,
    close: () =>
      (closing ??= new Promise<void>((resolve, reject) => {
        server.close((e) => (e ? reject(e) : resolve()));
        server.closeAllConnections();
      })),
  };
}

async function respond(registry: Registry, req: IncomingMessage, res: ServerResponse, readiness?: Readiness): Promise<void> {
  const path = (req.url ?? '').split('?', 1)[0];
  const text = { 'Content-Type': 'text/plain; charset=utf-8' };
  if (req.method === 'GET' && path === '/ready' && readiness) {
    const r = readiness();
    res.writeHead(r.ready ? 200 : 503, text).end(r.ready ? 'ready\n' : `not ready: ${r.reason ?? 'unknown'}\n`);
    return;
  }
  if (req.method !== 'GET' || path !== '/metrics') {
    res.writeHead(404, text).end(`not found; metrics are at GET /metrics${readiness ? ', readiness at GET /ready' : ''}\n`);
    return;
  }
  try {
    const body = await registry.metrics();
    res.writeHead(200, { 'Content-Type': registry.contentType }).end(body);
  } catch (e) {
    res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${e instanceof Error ? e.message : String(e)}\n`);
  }
}
