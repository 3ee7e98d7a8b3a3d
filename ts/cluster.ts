// The embedded cluster on one host: this process runs admission, the sequencer and the
// primary; each pre-executor is a child process attached over the node's socket.
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { App } from './app/app.js';
import { nativeFunctions } from './app/natives.js';
import { loadAppModule } from './app/module.js';
import { versionsForLog, writeAppHeader, type AppVersion } from './app/versions.js';
import { createRegistry, NodeMetrics, serveMetrics, type MetricsServer } from './metrics.js';
import { Autoscaler, type AutoscaleOptions, type ScaleDecision } from './pipeline/autoscaler.js';
import {
  Checkpointer,
  chooseCheckpoint,
  CHECKPOINTS_DIR,
  DEFAULT_CHECKPOINT_EVERY,
  type CheckpointStats,
  type RestoredCheckpoint,
} from './pipeline/checkpoints.js';
import { EmbeddedNode, type NodeOptions } from './pipeline/node.js';
import type { Applied } from './pipeline/primary.js';
import { DEFAULT_POLICY, type Policy } from './pipeline/scheduler.js';
import { Agreement, type AgreementStats } from './pipeline/agreement.js';
import type { SharedCheckpointInfo } from './pipeline/messages.js';
import { JetStreamSequencer } from './pipeline/jetstream-sequencer.js';
import { openSequencer, type OpenedSequencer, type SequencerChoice } from './pipeline/open-sequencer.js';
import { EmbeddedSequencer } from './pipeline/sequencer.js';
import { serveNode, type ClientLimits, type NodeServer, type ServeStats } from './pipeline/server.js';
import type { PushOptions, StateUpdate } from './pipeline/state-update.js';
import { NativePrimaryStore } from './pipeline/store-adapter.js';
import { RoleProcess } from './process.js';
import { loadOrCreateSecret } from './secret.js';
import { Store } from './store.js';
import { nodeStatus, type NodeStatus } from './pipeline/status.js';
import { MergeThreads } from './pipeline/merge-threads.js';
import type { DelegationOptions } from './pipeline/delegation.js';
import { formatHostPort, parseHostPort, type HostPort, type Transport } from './transport.js';

export interface ClusterOptions {
  /** Cluster directory: the log, the primary's regions, the socket and the secret live here. */
  dir: string;
  /**
   * The application: a built-in name (`bank`, `kv`), a path to a module, or an installed
   * package, whose default export is a `defineApp` result (docs/apps.md).
   */
  app: string;
  /**
   * The log was written by other code than `app`: activate `app` from the next position of the
   * log (an upgrade transaction) instead of refusing to start.
   */
  upgrade?: boolean;
  preExecutors: number;
  /** Deadline for a pre-execution result, from delivery (default 50 ms). */
  deadlineMs?: number;
  /** How admission picks a pre-executor (default `load+affinity+hot`). */
  policy?: Policy;
  /** How pre-executors' copies follow the primary (default `broadcast`). */
  stateUpdate?: StateUpdate;
  /** `push` only: when an object is pushed. */
  push?: PushOptions;
  /** Pre-executors read their own results not yet applied (default true). */
  speculation?: boolean;
  /** A transaction admitted while no other is in flight is executed by the primary (default true; `NodeOptions`). */
  localWhenAlone?: boolean;
  /** Grow and shrink the pool from measured load, starting from `preExecutors`; off if undefined. */
  autoscale?: AutoscaleOptions;
  /** Called after each autoscaling step, with the new pool size. */
  onScale?: (decision: Exclude<ScaleDecision, 'hold'>, pool: number) => void;
  onApplied?: NodeOptions['onApplied'];
  /** Time the primary spent merging each batch, e.g. to measure its CPU per transaction. */
  onMerged?: NodeOptions['onMerged'];
  /**
   * How pulling pre-executors read the primary's store (default `shm`: this host only). With
   * `tcp` or `verbs` the store is also served on the `listen` host (127.0.0.1 without one),
   * on a free port the node tells each pre-executor.
   */
  transport?: Transport;
  /** `host:port`: also accept clients and pre-executors over TCP there (else the Unix socket only). */
  listen?: string;
  /** Serve Prometheus metrics of the node on this port of 127.0.0.1 (0: any free one); none if undefined. */
  metricsPort?: number;
  /** Per-client limits on requests in flight and unread replies (defaults: `CLIENT_LIMITS`). */
  clientLimits?: Partial<ClientLimits>;
  log?: (m: string) => void;
  /**
   * A command pre-executor processes run under, e.g. `['taskset', '-c', '1']` to pin them
   * (benchmarks); it must exec the rest of its arguments in place.
   */
  preExecutorPrefix?: readonly string[];
  /**
   * Admission processes to start (default 0): each serves clients at `DIR/admission-NAME.sock`
   * (`admissionSockets`), checks what they submit and forwards it to the node, which then
   * spends nothing on clients' framing, checks or replies (docs/pipeline.md).
   */
  admissions?: number;
  /** As `preExecutorPrefix`, for the admission processes. */
  admissionPrefix?: readonly string[];
  /**
   * Applied transactions between checkpoints of the primary's store (default 50,000; 0: none).
   * A start installs the newest valid one and replays only the log after it (docs/checkpoints.md).
   */
  checkpointEvery?: number;
  /**
   * The log this node follows (default: the embedded one). With `jetstream`, every node on the
   * same stream applies the same sequence: replicated primaries (docs/deployment.md).
   */
  sequencer?: SequencerChoice;
  /** This node's name among replicated primaries (default: host name and directory). */
  nodeName?: string;
  /**
   * Threads the primary's merge uses, its own included (default 1: the sequential merge); more
   * execute transactions without a table on worker threads ahead of the in-order merge
   * (docs/primary.md).
   */
  mergeThreads?: number;
  /**
   * Delegation when overwhelmed (docs/primary.md): past `backlog` transactions ordered and not
   * yet applied, a hot subset of the state is leased to the least-loaded pre-executor. Off when absent.
   */
  delegation?: DelegationOptions;
}

export const NODE_SOCKET = 'node.sock';

/** The Unix socket an admission process named `name` serves clients on, in the cluster directory. */
export function admissionSocket(name: string): string {
  return `admission-${name}.sock`;
}

/** How a started node reached the state its sequencer held at start. */
export interface StartedFrom {
  /** The checkpoint installed, or null: the whole log was replayed. */
  checkpoint: RestoredCheckpoint | null;
  /** Transactions replayed from the log after it. */
  replayed: bigint;
  /** The last timestamp the sequencer held at start, now applied. */
  upTo: bigint;
}

export class EmbeddedCluster {
  private closed = false;
  private nextName: number;
  private scaling: Promise<void> | null = null;
  private scaleTimer: NodeJS.Timeout | null = null;
  /** Waiters for a pre-executor's handshake, by name. */
  private readonly joining = new Map<string, () => void>();
  private metrics: MetricsServer | null = null;
  /** The admission processes, by name. */
  readonly admissions = new Map<string, RoleProcess>();

  private constructor(
    readonly node: EmbeddedNode,
    readonly store: NativePrimaryStore,
    private readonly sequencer: OpenedSequencer,
    private readonly server: NodeServer,
    readonly children: Map<string, RoleProcess>,
    private readonly opts: ClusterOptions,
  ) {
    this.nextName = children.size + 1;
  }

  /** The app version running now. */
  get app(): App {
    return this.node.app;
  }

  /**
   * Activates another version of the app (a built-in name, a path or a package) at the next
   * position of the log: every pre-executor loads it first, then an upgrade transaction is
   * sequenced, and transactions after it run with the new code everywhere (docs/apps.md).
   */
  async upgrade(spec: string): Promise<{ ts: bigint; version: AppVersion }> {
    if (this.sequencer instanceof JetStreamSequencer) {
      throw new Error('app upgrades are not supported on replicated primaries yet: every node would have to load the new code first (docs/deployment.md)');
    }
    const loaded = await loadAppModule(spec);
    const ts = await this.node.upgrade(loaded);
    return { ts, version: this.node.versions.at(ts + 1n) };
  }

  startedAt = performance.now();
  /** The primary's merge threads, when it has more than its own. */
  mergeThreads: MergeThreads | null = null;
  private ready: { ready: boolean; reason: string | null } = { ready: false, reason: 'replaying the log' };

  /** Serving (`GET /ready`, `remora status`): caught up with the log, not failed, not stopping. */
  readiness(): { ready: boolean; reason: string | null } {
    return this.closed ? { ready: false, reason: 'stopping' } : this.ready;
  }

  ordered(): bigint {
    return this.sequencer.lastTs;
  }

  status(): NodeStatus {
    return nodeStatus(this.node, this);
  }

  private trackReadiness(): void {
    const failed = (e: unknown) => {
      this.ready = { ready: false, reason: `failed: ${e instanceof Error ? e.message : String(e)}` };
    };
    this.replayed().then(() => {
      if (!this.ready.reason?.startsWith('failed')) this.ready = { ready: true, reason: null };
    }, failed);
    this.node.failed.catch(failed);
  }

  /**
   * Resolves once everything the sequencer held when the node started is applied (its state
   * is then complete), with how the node got there.
   */
  async replayed(): Promise<StartedFrom> {
    const upTo = await this.sequencer.caughtUp();
    await this.node.whenApplied(upTo);
    const from = this.restored?.ts ?? 0n;
    return { checkpoint: this.restored, replayed: upTo > from ? upTo - from : 0n, upTo };
  }

  /**
   * Replicated primaries: resolves once everything the stream holds now is applied here, with
   * the last timestamp (so nodes stopped after it hold the same state). The embedded log: now.
   */
  async settled(): Promise<bigint> {
    const upTo = this.sequencer instanceof JetStreamSequencer ? await this.sequencer.caughtUpNow() : this.sequencer.lastTs;
    await this.node.whenApplied(upTo);
    return upTo;
  }

  /** Replicated primaries only: how this node's applied windows compared with its peers'. */
  agreementStats: AgreementStats | null = null;

  /** The checkpoint this node started from, or null (the whole log was replayed). */
  restored: RestoredCheckpoint | null = null;
  private checkpointer: Checkpointer | null = null;

  /** Checkpoints this node took, or null when they are off. */
  get checkpoints(): CheckpointStats | null {
    return this.checkpointer?.stats ?? null;
  }

  /** The node's TCP endpoint (`host:port`), or null when `listen` was not given. */
  get address(): string | null {
    return this.server.tcpAddress;
  }

  /** What the listeners did with clients: requests read, pauses, clients cut off. */
  get serving(): ServeStats {
    return this.server.stats;
  }

  /** Where the primary's store is served for `tcp` or `verbs` pulls, else null. */
  get storeAddress(): string | null {
    return this.storeServed;
  }

  private storeServed: string | null = null;

  /** The port serving `GET /metrics`, or null when `metricsPort` was not given. */
  get metricsPort(): number | null {
    return this.metrics?.port ?? null;
  }

  /**
   * Starts the node (installing the newest valid checkpoint into a fresh primary store and
   * replaying the log after it, so a restart after a crash applies every sequenced transaction
   * exactly once) and the pre-executor processes.
   */
  static async start(opts: ClusterOptions): Promise<EmbeddedCluster> {
    const startedAt = performance.now();
    const loaded = await loadAppModule(opts.app);
    const tcp = listenOption(opts.listen);
    const transport = opts.transport ?? 'shm';
    const secret = loadOrCreateSecret(opts.dir);
    const logDir = join(opts.dir, 'log');
    const { versions, pendingUpgrade } = await versionsForLog(logDir, loaded, { upgrade: opts.upgrade ?? false });
    const checkpointDir = join(opts.dir, CHECKPOINTS_DIR);
    const say = opts.log ?? ((m: string) => process.stderr.write(`node: ${m}\n`));
    const restored = chooseCheckpoint(checkpointDir, versions, say);
    const nodeName = opts.nodeName ?? `${hostname()}:${resolve(opts.dir)}`;
    const sequencer = await openSequencer(opts.sequencer ?? { kind: 'embedded' }, logDir, restored, { name: nodeName, log: say });
    const replicated = sequencer instanceof JetStreamSequencer ? sequencer : null;
    if (replicated && pendingUpgrade) {
      await sequencer.close();
      throw new Error('app upgrades are not supported on replicated primaries yet: every node would have to load the new code first (docs/deployment.md)');
    }
    if (restored && sequencer instanceof EmbeddedSequencer && restored.ts > sequencer.lastTs) {
      await sequencer.close();
      throw new Error(
        `checkpoint ${restored.path} is at ts ${restored.ts}, after the log's last ts ${sequencer.lastTs}: the log lost entries the checkpoint holds; move ${checkpointDir} away to start from the log alone`,
      );
    }
    writeAppHeader(logDir, versions);
    const store = new NativePrimaryStore(Store.create({ dir: opts.dir, name: 'primary', secret }));
    // Until the cluster exists, a failure (no RDMA device, the port taken) releases by hand.
    const release = async (e: unknown): Promise<never> => {
      store.store.close();
      await sequencer.close();
      throw e;
    };
    let storeAddress: string | null = null;
    try {
      // Checked whole when chosen: a failure here means the file changed since, and the
      // sequencer already resumes from it, so the start fails rather than fall back.
      if (restored) store.store.restore(restored.path);
      if (transport !== 'shm') {
        storeAddress = store.store.serve({ transport, listen: formatHostPort({ host: tcp?.host ?? '127.0.0.1', port: 0 }) });
      }
    } catch (e) {
      return release(e);
    }
    const registry = opts.metricsPort === undefined ? null : createRegistry();
    const metrics = registry && new NodeMetrics(registry);
    const every = opts.checkpointEvery ?? DEFAULT_CHECKPOINT_EVERY;
    // The newest checkpoint, shared in a region of the store for members to copy one-sidedly.
    let shared: SharedCheckpointInfo | null = null;
    const share = (path: string, ts: bigint): void => {
      try {
        const at = store.store.shareCheckpoint(path, shared?.region);
        shared = { ts, store: store.store.name, transport, address: storeAddress, ...at };
      } catch (e) {
        say(`sharing checkpoint ${path} failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    };
    if (restored) share(restored.path, restored.ts);
    const checkpointer = new Checkpointer({
      dir: checkpointDir,
      store: store.store,
      every,
      onTaken: share,
      resumePoint: (ts) => sequencer.resumePoint(ts),
      versions: () => node.versions,
      ...(opts.log && { log: opts.log }),
    });
    // Each call is one delivered batch, applied whole: its end is a point to resume after.
    const onCheckpoint = (batch: readonly Applied[]): void => {
      const end = batch.at(-1);
      if (end) checkpointer.applied(end.ts, batch.length);
    };
    // Replicated primaries compare what they applied, window by window, over the engine.
    const agreement =
      replicated &&
      new Agreement(nodeName, replicated.channel('agreement'), {
        onDisagree: (mine, theirs) =>
          say(`DIVERGED from ${theirs.node} on timestamps up to ${mine.end}: ${mine.digest.slice(0, 12)} here, ${theirs.digest.slice(0, 12)} there`),
      });
    const afterApply = agreement ? both(onCheckpoint, (b: readonly Applied[]) => agreement.record(b)) : onCheckpoint;
    const [hooks, onApplied] = [metrics?.hooks, opts.onApplied ? both(afterApply, opts.onApplied) : afterApply];
    const threads = (opts.mergeThreads ?? 1) > 1 ? new MergeThreads(opts.mergeThreads ?? 1, nativeFunctions, say) : undefined;
    const node: EmbeddedNode = new EmbeddedNode(versions, nativeFunctions, sequencer, store, {
      ...(threads && { mergeThreads: threads }),
      ...(opts.delegation && { delegation: opts.delegation }),
      deadlineMs: opts.deadlineMs ?? 50,
      policy: opts.policy ?? DEFAULT_POLICY,
      stateUpdate: opts.stateUpdate ?? 'broadcast',
      ...(opts.push && { push: opts.push }),
      speculation: opts.speculation ?? true,
      ...(opts.localWhenAlone !== undefined && { localWhenAlone: opts.localWhenAlone }),
      ...hooks,
      onApplied: both(hooks?.onApplied, onApplied),
      ...(opts.onMerged && { onMerged: both(hooks?.onMerged, opts.onMerged) }),
      onUpgrade: () => writeAppHeader(logDir, node.versions),
      ...(opts.log && { log: opts.log }),
    });
    // A crash between an upgrade's append and its header leaves the log ahead of the header:
    // the replay then finds the version it activates here.
    node.primary.stage(loaded);
    metrics?.attach(node, () => sequencer.lastTs);
    let cluster: EmbeddedCluster | null = null;
    const server = await serveNode(node, {
      path: join(opts.dir, NODE_SOCKET),
      ...(tcp && { tcp }),
      secret,
      store: store.store.name,
      storeTransport: { transport, address: storeAddress },
      sharedCheckpoint: () => shared,
      ...(opts.clientLimits && { clientLimits: opts.clientLimits }),
      ...(opts.log ? { log: opts.log } : {}),
      onPool: (event, name) => {
        if (event === 'join') cluster?.joined(name);
      },
      status: () => nodeStatus(node, cluster ?? { ordered: () => sequencer.lastTs, readiness: () => ({ ready: false, reason: 'starting' }), startedAt }),
    }).catch(async (e: unknown) => {
      await threads?.close();
      return release(e);
    });
    node.start(restored?.ts ?? 0n);
    cluster = new EmbeddedCluster(node, store, sequencer, server, new Map(), opts);
    cluster.mergeThreads = threads ?? null;
    cluster.startedAt = startedAt;
    cluster.trackReadiness();
    cluster.restored = restored;
    cluster.checkpointer = checkpointer;
    cluster.agreementStats = agreement ? agreement.stats : null;
    if (metrics) metrics.agreement = cluster.agreementStats;
    cluster.storeServed = storeAddress;
    try {
      const c = cluster;
      if (registry && opts.metricsPort !== undefined)
        cluster.metrics = await serveMetrics(registry, { port: opts.metricsPort, readiness: () => c.readiness() });
      if (pendingUpgrade) await node.upgrade(loaded);
      for (let i = 0; i < opts.preExecutors; i++) await cluster.addPreExecutor();
      for (let i = 0; i < (opts.admissions ?? 0); i++) await cluster.addAdmission();
    } catch (e) {
      await cluster.close();
      throw e;
    }
    if (opts.autoscale) cluster.autoscale(new Autoscaler(opts.autoscale));
    return cluster;
  }

  /** Pre-executor processes running (retiring ones included until they are gone). */
  get poolSize(): number {
    return this.children.size;
  }

  /** Starts one more pre-executor process; resolves once the node has attached it. */
  async addPreExecutor(): Promise<string> {
    const name = `pre-${this.nextName++}`;
    const attached = new Promise<void>((resolve) => this.joining.set(name, resolve));
    const args = ['--dir', this.opts.dir, '--app', this.node.versions.active.spec, '--name', name];
    const prefix = this.opts.preExecutorPrefix;
    const child = await RoleProcess.start('pre-executor', args, prefix ? { prefix } : {});
    this.children.set(name, child);
    // The child is ready once connected; its link is attached once the node saw the handshake.
    await Promise.race([attached, child.exited.then((e) => Promise.reject(new Error(`pre-executor ${name} exited before joining (${JSON.stringify(e)})`)))]);
    return name;
  }

  /** Starts one more admission process; resolves once it joined the node and serves clients. */
  async addAdmission(): Promise<string> {
    const name = `adm-${this.admissions.size + 1}`;
    const args = ['--join', this.opts.dir, '--app', this.node.versions.active.spec, '--name', name];
    const prefix = this.opts.admissionPrefix;
    // Ready only once the node welcomed it and its socket listens.
    this.admissions.set(name, await RoleProcess.start('admission', args, prefix ? { prefix } : {}));
    return name;
  }

  /** Where clients of the admission processes connect (full paths), in the order they started. */
  get admissionSockets(): string[] {
    return [...this.admissions.keys()].map((name) => join(this.opts.dir, admissionSocket(name)));
  }

  /**
   * Retires a pre-executor (the newest if none is named): the node stops handing it work,
   * waits for what it owes, then the process is stopped. No transaction waits for a deadline.
   */
  async retirePreExecutor(name?: string): Promise<string | null> {
    const victim = name ?? [...this.children.keys()].filter((n) => this.node.members.includes(n)).at(-1);
    const child = victim === undefined ? undefined : this.children.get(victim);
    if (victim === undefined || !child) return null;
    await this.node.retire(victim);
    this.children.delete(victim);
    await child.stop(2000);
    return victim;
  }

  private joined(name: string): void {
    this.joining.get(name)?.();
    this.joining.delete(name);
  }

  /** Samples load every interval and lets `scaler` grow or shrink the pool, one step at a time. */
  private autoscale(scaler: Autoscaler): void {
    let last = { ...this.node.stats };
    this.scaleTimer = setInterval(() => {
      const now = { ...this.node.stats };
      const members = this.node.members;
      const outstanding = this.node.poolStats().reduce((n, p) => n + (p.retiring ? 0 : p.outstanding), 0);
      const decision = scaler.decide({
        pool: members.length,
        outstanding,
        applied: now.applied - last.applied,
        executedAlone: now.executed - last.executed,
        reexecuted: now.reexecuted - last.reexecuted,
      });
      last = now;
      if (decision === 'hold' || this.scaling || this.closed) return;
      const step = decision === 'up' ? this.addPreExecutor() : this.retirePreExecutor();
      this.scaling = step
        .then(
          () => this.opts.onScale?.(decision, this.node.members.length),
          (e: unknown) => (this.opts.log ?? console.error)(`autoscale ${decision} failed: ${e instanceof Error ? e.message : String(e)}`),
        )
        .finally(() => (this.scaling = null));
    }, scaler.intervalMs);
    this.scaleTimer.unref();
  }

  /** Stops the admission processes and pre-executors, then the node; the log stays on disk for the next start. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.scaleTimer) clearInterval(this.scaleTimer);
    await this.scaling;
    await this.metrics?.close();
    // Admission first: nothing more comes in while the pre-executors stop.
    await Promise.all([...this.admissions.values()].map((c) => c.stop(2000)));
    await Promise.all([...this.children.values()].map((c) => c.stop(2000)));
    await this.server.close();
    await this.sequencer.close();
    // The native export holds the store open until it ends: wait, so the next start can own it.
    await this.checkpointer?.close();
    await this.mergeThreads?.close();
    this.store.store.close();
  }
}

function listenOption(raw: string | undefined): HostPort | undefined {
  if (raw === undefined) return undefined;
  const hp = parseHostPort(raw);
  if (!hp) throw new Error(`listen must be host:port, got '${raw}'`);
  return hp;
}

/** Calls `a` (if any), then `b`. */
function both<A extends unknown[]>(a: ((...args: A) => void) | undefined, b: (...args: A) => void): (...args: A) => void {
  return a
    ? (...args) => {
        a(...args);
        b(...args);
      }
    : b;
}
