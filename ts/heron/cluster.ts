// The embedded Heron cluster on one host: this process runs the sequencer (one durable log: the
// total order of the atomic multicast) and hands each partition's replicas exactly the
// transactions addressed to it; every replica of every partition is a child process.
import { join } from 'node:path';
import { admitTx } from '../app/admit.js';
import { NativeStore } from '../binding.js';
import type { App } from '../app/app.js';
import type { LookupTable, Outcome } from '../app/exec.js';
import { TxError, type DecodedTx, type Transaction } from '../app/tx.js';
import { AppLoadError, loadAppModule } from '../app/module.js';
import { destinations, partitionerOf } from '../app/partition.js';
import type { Decision } from '../pipeline/merge.js';
import { attachMember, PreExecutionPool, type MemberStats } from '../pipeline/pool.js';
import type { Applied } from '../pipeline/primary.js';
import { PRE_EXECUTOR_ROLE } from '../pipeline/server.js';
import { decodeTable, type ReceivedTable } from '../pipeline/table-bytes.js';
import { openSequencer, type OpenedSequencer, type SequencerChoice } from '../pipeline/open-sequencer.js';
import { EmbeddedSequencer, type Sequenced } from '../pipeline/sequencer.js';
import { RoleProcess } from '../process.js';
import { loadOrCreateSecret } from '../secret.js';
import { isTransport, type HostPort, type Transport } from '../transport.js';
import { listen, type Conn, type Server } from '../wire.js';
import { checkClusterSize } from './config.js';
import {
  decodeRingRecord,
  defaultRingSpinMicros,
  encodeRingPayload,
  HERON_SOCKET,
  monotonicMicros,
  REPLICA_ROLE,
  RING_BYTES,
  RING_REGION,
  RING_STORE,
  ringRecordBytes,
  type Delivered,
  type FromReplica,
  type Received,
  type Ordering,
  type Timing,
  type ToReplica,
} from './messages.js';
import { HeronClients } from './serve.js';
import { guarded, parseFromReplica, parseOutcomeBytes, ProtocolError, replicaOfRole } from './parse.js';
import type { ReplicaSummary } from './replica.js';
import type { DroppedConsumer, NativeRingProducer, RingRecordIn } from '../binding.js';

export interface HeronOptions {
  /** Cluster directory: the log, every replica's store, the socket and the secret live here. */
  dir: string;
  /** The application: a built-in name (`bank`, `kv`), a module path or a package (docs/apps.md). */
  app: string;
  partitions: number;
  /** Replicas per partition (2f+1 tolerates f crashes). */
  replicas: number;
  /** Grace wait after a coordination majority, in ms (default 2). */
  graceMs?: number;
  /** Landing slot per peer for state transfer, in bytes (default 1 MiB; any size transfers, in chunks of half of it). */
  transferBytes?: number;
  /** Remote objects each replica keeps by version, reused while current (default 4096; 0 turns caching and prefetching off). */
  remoteCacheEntries?: number;
  /**
   * Pre-execute every submission before ordering it and multicast its lookup table with it;
   * each destination adopts or re-executes it by the pipeline's merge rule (default off). On
   * its own it means a pool of `DEFAULT_PRE_EXECUTORS` pre-executor processes.
   */
  preExecution?: boolean;
  /**
   * Pre-executor processes in the launcher's pool (0 to 16; default 0, or
   * `DEFAULT_PRE_EXECUTORS` with `preExecution`). Any number turns pre-execution on.
   */
  preExecutors?: number;
  /**
   * How long a submission waits for its table before it is ordered without one (ms, default
   * 100): a slow or dead pre-executor delays its transactions by this much at most.
   */
  preExecutionWaitMs?: number;
  /**
   * When transactions reach the replicas: `synced` (default) after the log's fsync; `memory`
   * as soon as they are ordered, the log written and synced in the background, replies not
   * waiting for it (docs/heron.md: what each survives).
   */
  ordering?: Ordering;
  /** Bytes of records the ordered stream's ring holds (default 16 MiB). */
  ringBytes?: number;
  /**
   * Replies and first outcomes the launcher keeps (default 100,000): a duplicate of an older
   * transaction is refused as no longer kept, and a replica answering one is not compared.
   */
  recentReplies?: number;
  /**
   * How long a replica's ring reader spins after a record before sleeping (µs; default 50 when
   * the host has a core for every process of the cluster, else 0: see `defaultRingSpinMicros`).
   */
  ringSpinMicros?: number;
  /**
   * Order on a JetStream stream instead of the launcher's embedded log (`synced` ordering
   * only): the order then survives the loss of the launcher's host (docs/deployment.md).
   */
  sequencer?: SequencerChoice;
  /**
   * Also accept clients over TCP here (port 0: any free one); they are always accepted on the
   * launcher's socket in `dir`. Either way with the client credential (docs/heron.md).
   */
  listen?: HostPort;
  /**
   * Restart a replica whose process exits unexpectedly (default off): it starts empty, catches
   * up by state transfer and serves again (docs/heron.md, "Rejoin"). At most
   * `RESTARTS_PER_MINUTE` per replica, then the launcher gives up on it and says so.
   */
  restartReplicas?: boolean;
  /**
   * How replicas reach each other's memory and the ring (default `shm`, one host through
   * `dir`). With `tcp` (or `verbs`) every replica serves its store on 127.0.0.1 at a port of its
   * own and the launcher serves the ring's store; coordination, state transfer, remote reads
   * and the ring go over it (docs/heron.md, "Transports").
   */
  transport?: Transport;
  /** Where divergences and replica failures are reported (default console.error). */
  log?: (msg: string) => void;
}

/** What a submission came back with, and from where. */
export interface HeronReply {
  ts: bigint;
  outcome: Outcome;
  dest: number[];
  /** The replica whose reply came first. */
  from: { partition: number; replica: number };
  timing: Timing;
  /**
   * When the launcher put it into the ring and when the first reply arrived (a duplicate: the first's; µs of the host's
   * monotonic clock, like `timing.arrived`/`timing.sent`).
   */
  orderedAt: number;
  repliedAt: number;
  /** How the first replica merged it. */
  decision: Decision;
  /** The same transaction was submitted before: this is the first submission's reply. */
  duplicate?: true;
}

/** A lagger caught up by state transfer (Heron, Algorithm 3), as its `transferred` message says. */
export type StateTransfer = Omit<Extract<FromReplica, { t: 'transferred' }>, 't'>;

/** A restarted replica caught up and serving again. */
export interface Rejoin {
  partition: number;
  replica: number;
  /** The peer whose state it started from. */
  from: number;
  /** It needed the state as of `needed` at least (the last transaction its partition was sent before the restart) and resumed after `ts`. */
  needed: bigint;
  ts: bigint;
  objects: number;
  bytes: number;
  /** From the restart to the installed state. */
  micros: number;
}

/** Restarts of one replica within a minute, before the launcher gives up on it. */
export const RESTARTS_PER_MINUTE = 3;
/** How long after an unexpected exit a replica is restarted. */
const RESTART_DELAY_MS = 100;
/** How long a restarted replica may take to start and catch up. */
const REJOIN_TIMEOUT_MS = 60_000;

/** Replicas of one partition disagreeing on the digest after the same prefix. */
export interface Divergence {
  partition: number;
  applied: number;
  digests: Record<string, string>;
}

interface Waiter {
  resolve: (r: HeronReply) => void;
  dest: number[];
  /** When it went into the ring (0: not yet). */
  orderedAt: number;
}

/** Pool size that `preExecution: true` stands for. */
export const DEFAULT_PRE_EXECUTORS = 2;
const MAX_PRE_EXECUTORS = 16;
const DEFAULT_PRE_EXECUTION_WAIT_MS = 100;

/** The pre-executor processes `opts` asks for. */
export function preExecutorsOf(opts: Pick<HeronOptions, 'preExecution' | 'preExecutors'>): number {
  return opts.preExecutors ?? (opts.preExecution === true ? DEFAULT_PRE_EXECUTORS : 0);
}

/** A submission waiting for its table; released in admission order, each at most the wait. */
interface Admitting {
  ready: boolean;
  go: () => void;
}

/** Replies kept to answer duplicates by default; an older duplicate waits for nothing and is refused. */
const RECENT_REPLIES = 100_000;
/**
 * With in-memory ordering the launcher tells duplicates itself, before the log does: the log
 * forgets digests after this many appends, the launcher after twice as many, so it never takes
 * for new what the log would call a duplicate (the two would then disagree on timestamps).
 */
const MEMORY_DEDUP_WINDOW = 100_000;
/**
 * With in-memory ordering, ordered transactions reach the log together, at most this long
 * after the first of them went into the ring, or once this many wait. An append costs the
 * launcher a wake of the log's writer, a pool thread waiting for it and the completion's
 * handling: one per request was a tenth of the launcher's CPU per single put (2 × 1, one
 * closed-loop client). Replies never waited for the log in this mode; this only groups its
 * writes.
 */
const LOG_DELAY_MS = 2;
const LOG_BATCH = 256;
/** How long an append waits for a replica to make room in the ring before dropping it. */
const RING_STALL_MS = 100;

const key = (partition: number, replica: number): string => `${partition}.${replica}`;

/**
 * Resolves true once `done()` holds, checked now and each time `waiters` are woken (whoever
 * changes what it reads wakes them), or false after `timeoutMs`.
 */
async function until(done: () => boolean, waiters: (() => void)[], timeoutMs: number): Promise<boolean> {
  if (done()) return true;
  let timer: NodeJS.Timeout | undefined;
  let check: (() => void) | undefined;
  const ok = await Promise.race([
    new Promise<boolean>((resolve) => {
      check = () => {
        if (done()) resolve(true);
        else if (check) waiters.push(check);
      };
      waiters.push(check);
    }),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  // Timed out: not woken again for nothing.
  check = undefined;
  return ok;
}

/** A delivery as the socket carries it (the decoded transaction stays behind). */
function socketDelivery(d: Delivered): Delivered {
  return { ts: d.ts, body: d.body, auth: d.auth, dest: d.dest, ...(d.table ? { table: d.table } : {}) };
}

export class HeronCluster {
  private readonly conns = new Map<string, Conn>();
  private readonly waiters = new Map<bigint, Waiter>();
  private readonly early = new Map<bigint, HeronReply>();
  /** Per partition, per applied count: the digests reported so far, by replica. */
  private readonly digests = new Map<number, Map<number, Map<number, string>>>();
  /**
   * Per ts, the first outcome's canonical bytes and decision, and how many replicas answered:
   * the last `recentReplies` first answers. A replica answering older ones is not compared.
   */
  private readonly outcomes = new Map<bigint, { bytes: Uint8Array; decision: Decision; count: number }>();
  /** The newest timestamp dropped from `outcomes`. */
  private outcomesFloor = 0n;
  readonly divergences: Divergence[] = [];
  readonly outcomeMismatches: string[] = [];
  /** Replicas (of any destination) that merged a transaction differently from the first. */
  readonly decisionMismatches: string[] = [];
  /**
   * The pre-executor pool (options `preExecutors`, `preExecution`): member processes attach on
   * the launcher's socket; their copies follow the first replica of each partition to report
   * its writes; tables wait here, by digest, for the log.
   */
  readonly pool: PreExecutionPool | null;
  /** The pool's member processes, by name. */
  readonly memberProcesses = new Map<string, RoleProcess>();
  private nextMember = 1;
  private readonly joining = new Map<string, () => void>();
  private readonly tables = new Map<string, { table: LookupTable; from: string }>();
  /** Per digest, what waits for its table: admission, and optimistic replies. */
  private readonly tableWaits = new Map<string, (() => void)[]>();
  private readonly optimisticWaits = new Map<string, ((outcome: Outcome) => void)[]>();
  private readonly admitting: Admitting[] = [];
  /** Per ts carried with a table: its member and the objects it read, for the pool's feedback. */
  private readonly handed = new Map<bigint, { digest: string; from: string; reads: string[] }>();
  /** Tables received in time to be carried (or dropped as duplicates). */
  private tablesReceived = 0;
  /** Per partition, the newest timestamp whose writes the members' copies were sent. */
  private readonly preApplied = new Map<number, bigint>();
  /** The app members must run: its spec to start them, its digest to check their hello. */
  private appSpec = '';
  private appDigest = '';
  readonly transfers: StateTransfer[] = [];
  private transferWaiters: (() => void)[] = [];
  /**
   * Whether a replica whose process exits unexpectedly is restarted (option `restartReplicas`);
   * may be changed while the cluster runs.
   */
  restartReplicas = false;
  /** Restarted replicas that caught up, in order; and what a restart in progress waits for. */
  readonly rejoins: Rejoin[] = [];
  private rejoinWaiters: (() => void)[] = [];
  private readonly rejoining = new Map<string, { needed: bigint; started: number; done: (r: Rejoin) => void; fail: (e: Error) => void }>();
  /** Replica processes being started again, restarts scheduled, and recent restart times. */
  private readonly respawning = new Map<string, Promise<RoleProcess>>();
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private readonly restartTimes = new Map<string, number[]>();
  /** A replica's command line (set once the launcher is listening). */
  private replicaArgs: (h: number, q: number) => string[] = () => [];
  /** Over `tcp`/`verbs`: each replica's store address (by entry index) and the ring's store. */
  private readonly addresses: (string | undefined)[] = [];
  private ringAddress: string | null = null;
  /** Replicas (entry indices) that said hello at least once: a second hello is a restart. */
  private readonly greetedOnce = new Set<number>();
  private closed = false;
  /** Last timestamp multicast to each partition, and last one each replica answered. */
  private readonly lastDelivered = new Map<number, bigint>();
  private readonly lastAnswered: bigint[] = [];
  private settledWaiters: (() => void)[] = [];
  /** Recent first replies, for duplicates of transactions (same body) submitted again. */
  private readonly recent = new Map<bigint, HeronReply>();
  private dupWaiters: { ts: bigint; resolve: (r: HeronReply) => void }[] = [];
  private readonly partitionOf: (id: string) => number;
  private readonly log: (m: string) => void;
  readonly ordering: Ordering;
  /** The ring's data bytes: a transaction whose record is larger is refused at admission. */
  private readonly ringBytes: number;
  private readonly recentReplies: number;
  /** Replicas the ring dropped (they fell behind it): delivered to over their socket. */
  private readonly socketFed = new Set<string>();
  /** In-memory ordering: the next timestamp, digests ordered (for duplicates), log appends in flight. */
  private nextTs = 1n;
  private readonly ordered = new Map<string, bigint>();
  private readonly appending = new Set<Promise<void>>();
  /** In-memory ordering: ordered, not yet handed to the log (see LOG_DELAY_MS), and the timer that hands them over. */
  private toLog: Sequenced[] = [];
  private logTimer: NodeJS.Timeout | null = null;
  /** When each transaction not answered yet went into the ring, if nobody waited for it then. */
  private readonly orderedAt = new Map<bigint, number>();
  /** Why the cluster refuses submissions (the background log failed or disagreed). */
  private failure: Error | null = null;
  /** Clients on the launcher's socket and on `listen`. */
  readonly clients: HeronClients;

  private constructor(
    readonly app: App,
    readonly opts: HeronOptions,
    private readonly sequencer: OpenedSequencer,
    private server: Server | null,
    readonly replicas: Map<string, RoleProcess>,
    private readonly launcherStore: NativeStore,
    private readonly ring: NativeRingProducer,
  ) {
    this.ordering = opts.ordering ?? 'synced';
    this.ringBytes = Math.ceil((opts.ringBytes ?? RING_BYTES) / 32) * 32;
    this.recentReplies = opts.recentReplies ?? RECENT_REPLIES;
    this.partitionOf = partitionerOf(app, opts.partitions);
    this.log = opts.log ?? ((m) => console.error(m));
    this.pool =
      preExecutorsOf(opts) > 0
        ? new PreExecutionPool(
            {
              offer: (digest, table, from) => this.tableCame(digest, table, from),
              malformed: (digest, from, e) => {
                this.log(`heron: dropped the table of ${digest.slice(0, 12)} from pre-executor ${from}: ${e.message}`);
                this.noTable(digest);
              },
              forget: (digest) => this.noTable(digest),
              orphaned: (digests) => {
                for (const d of digests) this.noTable(d);
              },
              log: this.log,
            },
            {
              // Speculation is off: a guess is retired by comparing a transaction's whole write
              // set with what was applied, and here each partition reports only its own part.
              speculation: false,
            },
          )
        : null;
    this.clients = new HeronClients((tx, onOptimistic) => this.submit(tx, onOptimistic), this.log);
  }

  static async start(opts: HeronOptions): Promise<HeronCluster> {
    const loaded = await loadAppModule(opts.app);
    const app = loaded.app;
    for (const [name, v, max] of [
      ['partitions', opts.partitions, 1024],
      ['replicas', opts.replicas, 31],
    ] as const) {
      if (!Number.isInteger(v) || v < 1 || v > max) throw new RangeError(`${name} must be an integer from 1 to ${max}, got ${v}`);
    }
    const kept = opts.recentReplies;
    if (kept !== undefined && (!Number.isSafeInteger(kept) || kept < 1)) throw new RangeError(`recentReplies must be a positive integer, got ${kept}`);
    const members = preExecutorsOf(opts);
    if (!Number.isInteger(members) || members < 0 || members > MAX_PRE_EXECUTORS) {
      throw new RangeError(`preExecutors must be an integer from 0 to ${MAX_PRE_EXECUTORS}, got ${members}`);
    }
    const size = checkClusterSize(opts.partitions, opts.replicas);
    if (size.errors.length > 0) throw new RangeError(`heron: ${size.errors.join('; ')}`);
    // Said here, not where a file is parsed, so every way of starting a cluster says it once.
    for (const w of size.warnings) (opts.log ?? ((m: string) => console.error(m)))(w);
    const ordering = opts.ordering ?? 'synced';
    if (ordering !== 'synced' && ordering !== 'memory') throw new RangeError(`ordering must be 'synced' or 'memory', got ${String(ordering)}`);
    const transport = opts.transport ?? 'shm';
    if (!isTransport(transport)) throw new RangeError(`transport must be 'shm', 'tcp' or 'verbs', got ${String(transport)}`);
    const secret = loadOrCreateSecret(opts.dir);
    // The ring lives in the launcher's own store, which replicas attach to like any peer.
    const launcherStore = NativeStore.create({ dir: opts.dir, name: RING_STORE, secret: Buffer.from(secret) });
    let ring: NativeRingProducer;
    let ringAddress: string | null = null;
    let sequencer: OpenedSequencer;
    const logDir = join(opts.dir, 'log');
    try {
      ring = launcherStore.heronRing({ partitions: opts.partitions, replicas: opts.replicas, capacity: opts.ringBytes ?? RING_BYTES });
      if (ring.region !== RING_REGION) throw new Error(`the ring got region ${ring.region}, expected ${RING_REGION}`);
      // Replicas read the ring (and write their positions) through the launcher's store.
      if (transport !== 'shm') ringAddress = launcherStore.serve({ transport, listen: '127.0.0.1:0' });
      if (opts.sequencer && opts.sequencer.kind !== 'embedded') {
        if (ordering === 'memory') throw new RangeError("ordering 'memory' orders in the launcher, so it cannot be used with a replicated sequencer");
        sequencer = await openSequencer(opts.sequencer, logDir, null, { name: `heron:${opts.dir}`, ...(opts.log && { log: opts.log }) });
      } else sequencer = new EmbeddedSequencer(logDir, ordering === 'memory' ? { dedupWindow: MEMORY_DEDUP_WINDOW } : {});
    } catch (e) {
      launcherStore.close();
      throw e;
    }
    const cluster = new HeronCluster(app, opts, sequencer, null, new Map(), launcherStore, ring);
    cluster.ringAddress = ringAddress;
    cluster.appSpec = loaded.spec;
    cluster.appDigest = loaded.digest;
    const hellos = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
    const helloFrom = (k: string) =>
      new Promise<void>((resolve, reject) => {
        hellos.set(k, { resolve, reject });
      });
    const expected: Promise<void>[] = [];
    for (let h = 0; h < opts.partitions; h++) for (let q = 0; q < opts.replicas; q++) expected.push(helloFrom(key(h, q)));
    try {
      cluster.server = await listen({
        path: join(opts.dir, HERON_SOCKET),
        // Replicas are members: only the member credential opens their role. Clients hold the
        // client credential, which opens theirs and no other.
        secretFor: (role) =>
          role.startsWith(`${REPLICA_ROLE}:`) || role.startsWith(PRE_EXECUTOR_ROLE)
            ? secret
            : HeronClients.isClient(role)
              ? HeronClients.credential(secret)
              : undefined,
        log: cluster.log,
        onConnection: (conn) => {
          if (HeronClients.isClient(conn.role)) {
            cluster.clients.accept(conn);
            return;
          }
          if (conn.role.startsWith(PRE_EXECUTOR_ROLE)) {
            cluster.acceptMember(conn);
            return;
          }
          let role: { partition: number; replica: number };
          try {
            role = replicaOfRole(conn.role, opts.partitions, opts.replicas);
          } catch (e) {
            cluster.log(`heron: ${conn.peer}: ${e instanceof Error ? e.message : String(e)}; closing the connection`);
            conn.close();
            return;
          }
          const at = role;
          const k = key(at.partition, at.replica);
          let greeted = false;
          conn.onMessage(
            guarded(conn, cluster.log, `heron: replica ${k}`, (m) => {
              const msg = parseFromReplica(m);
              // A member speaks only for the replica its role names, and that replica has one connection.
              if (msg.partition !== at.partition || msg.replica !== at.replica)
                throw new ProtocolError(`${msg.t} names replica ${key(msg.partition, msg.replica)}`);
              if ((msg.t === 'hello') === greeted) throw new ProtocolError(greeted ? 'hello sent twice' : `the first message must be hello, got ${msg.t}`);
              if (msg.t !== 'hello') {
                cluster.onReplica(msg);
                return;
              }
              if (cluster.conns.has(k)) throw new ProtocolError('that replica is already connected');
              if (msg.digest !== loaded.digest) {
                // Replicas running other code would diverge at the first command that differs.
                hellos
                  .get(k)
                  ?.reject(
                    new AppLoadError(
                      `heron replica ${k} loaded app digest ${msg.digest.slice(0, 12)}, but the launcher runs ${app.name} ${loaded.digest.slice(0, 12)} (${loaded.spec})`,
                    ),
                  );
                conn.close();
                return;
              }
              if (transport !== 'shm' && msg.address === undefined)
                throw new ProtocolError(`hello: a ${transport} cluster needs the address the replica serves its store at`);
              greeted = true;
              cluster.conns.set(k, conn);
              conn.onClose(() => {
                if (cluster.conns.get(k) === conn) cluster.conns.delete(k);
              });
              cluster.greeted(msg.partition * opts.replicas + msg.replica, msg.address);
              hellos.get(k)?.resolve();
            }),
          );
        },
      });
      const args = (h: number, q: number) => [
        '--dir',
        opts.dir,
        '--app',
        loaded.spec,
        '--partitions',
        String(opts.partitions),
        '--replicas',
        String(opts.replicas),
        '--partition',
        String(h),
        '--replica',
        String(q),
        '--grace-ms',
        String(opts.graceMs ?? 2),
        '--transfer-bytes',
        String(opts.transferBytes ?? 1 << 20),
        ...(members > 0 ? ['--report-writes'] : []),
        '--ring-spin-us',
        String(opts.ringSpinMicros ?? defaultRingSpinMicros(1 + opts.partitions * opts.replicas + members)),
        ...(opts.remoteCacheEntries !== undefined ? ['--remote-cache-entries', String(opts.remoteCacheEntries)] : []),
        ...(transport !== 'shm' ? ['--transport', transport] : []),
      ];
      cluster.replicaArgs = args;
      cluster.restartReplicas = opts.restartReplicas === true;
      const starting: Promise<void>[] = [];
      for (let h = 0; h < opts.partitions; h++) {
        for (let q = 0; q < opts.replicas; q++) {
          starting.push(
            RoleProcess.start('heron-replica', args(h, q), { readyTimeoutMs: 60_000 }).then((p) => {
              cluster.replicas.set(key(h, q), p);
              cluster.watchReplica(h, q, p);
            }),
          );
        }
      }
      await Promise.all(starting);
      await Promise.all(expected);
      await Promise.all(Array.from({ length: members }, () => cluster.addPreExecutor()));
    } catch (e) {
      await cluster.close();
      throw e;
    }
    if (ordering === 'synced') {
      sequencer.subscribe(0n, (batch) => cluster.multicast(batch));
      return cluster.openToClients(secret);
    }
    // In-memory ordering: what an earlier run logged is replayed from the log first; new
    // transactions are multicast as they are ordered, so the log's own delivery stops there.
    // A fresh log has nothing to replay, so no subscription: it would only hand every append
    // back to be dropped.
    const replayed = sequencer.lastTs;
    cluster.nextTs = replayed + 1n;
    if (replayed === 0n) return cluster.openToClients(secret);
    await new Promise<void>((resolve, reject) => {
      sequencer.subscribe(
        0n,
        (batch) => {
          const old = batch.filter((x) => x.ts <= replayed);
          if (old.length === 0) return;
          for (const { ts, tx } of old) cluster.rememberOrdered(tx.digest, ts);
          cluster.multicast(old);
          if ((old[old.length - 1]?.ts ?? 0n) >= replayed) resolve();
        },
        reject,
      );
    });
    return cluster.openToClients(secret);
  }

  private async openToClients(secret: Buffer): Promise<HeronCluster> {
    try {
      await this.clients.open(secret, this.opts.listen);
    } catch (e) {
      await this.close();
      throw e;
    }
    return this;
  }

  /** `host:port` where clients are accepted over TCP (option `listen`), if anywhere. */
  get tcpAddress(): string | null {
    return this.clients.tcpAddress;
  }

  private rememberOrdered(digest: string, ts: bigint): void {
    this.ordered.set(digest, ts);
    if (this.ordered.size > 2 * MEMORY_DEDUP_WINDOW) {
      const oldest = this.ordered.keys().next();
      if (!oldest.done) this.ordered.delete(oldest.value);
    }
  }

  /** Destination set of a transaction's declared objects. */
  destinations(objects: readonly string[]): number[] {
    return destinations(objects, this.partitionOf);
  }

  /**
   * Appends the batch to the ring once (every replica reads it there); replicas the ring
   * dropped for falling behind get their partition's part over their socket instead.
   * `dests`: each transaction's destinations, when admission computed them already.
   */
  private multicast(batch: Sequenced[], dests?: number[][]): void {
    const deliveries: Delivered[] = batch.map(({ ts, tx }, i) => {
      const table = this.takeTable(tx.digest);
      if (table) this.handed.set(ts, { digest: tx.digest, from: table.from, reads: table.table.reads.map(([id]) => id) });
      const dest = dests?.[i] ?? this.destinations(tx.objects);
      return { ts, body: tx.body, auth: tx.auth, dest, ...(table ? { table: table.table } : {}) };
    });
    if (this.handed.size > RECENT_REPLIES) {
      // Transactions no replica answered (their partition is gone) stop being followed.
      for (const ts of this.handed.keys()) {
        if (this.handed.size <= RECENT_REPLIES) break;
        this.handed.delete(ts);
      }
    }
    const records: RingRecordIn[] = deliveries.map((d, i) => {
      const txBytes = batch[i]?.tx.bytes ?? Buffer.alloc(0);
      let payload = encodeRingPayload(txBytes, d.table);
      if (d.table && ringRecordBytes(d.dest.length, payload.length) > this.ringBytes) {
        // The transaction fits (admission checked) but not with its table: the destinations
        // execute it themselves, as they do any transaction without one.
        delete d.table;
        payload = encodeRingPayload(txBytes, undefined);
      }
      return { ts: d.ts, dest: d.dest, payload };
    });
    for (const d of deliveries) for (const h of d.dest) this.lastDelivered.set(h, d.ts);
    const now = monotonicMicros();
    for (const d of deliveries) {
      // Kept with its waiter when there is one (in-memory ordering: always): one map less per request.
      const w = this.waiters.get(d.ts);
      if (w) w.orderedAt = now;
      else this.orderedAt.set(d.ts, now);
    }
    if (this.orderedAt.size > RECENT_REPLIES) {
      // Transactions no replica answered (their partition is gone) stop being timed.
      const oldest = this.orderedAt.keys().next();
      if (!oldest.done) this.orderedAt.delete(oldest.value);
    }
    for (const dropped of this.ring.push(records, RING_STALL_MS)) this.fellBehind(dropped);
    for (const k of this.socketFed) {
      const h = Number(k.split('.')[0]);
      const txs = deliveries.filter((d) => d.dest.includes(h));
      if (txs.length > 0) this.conns.get(k)?.send({ t: 'deliver', txs });
    }
  }

  /**
   * A replica the ring stopped waiting for: it is sent what it had not read, and from now on
   * its partition's part of every batch, over its socket. It skips redeliveries by timestamp,
   * so what it also reads from the ring before noticing does no harm.
   */
  private fellBehind(d: DroppedConsumer): void {
    const k = key(Math.floor(d.consumer / this.opts.replicas), d.consumer % this.opts.replicas);
    this.socketFed.add(k);
    if (this.closed || (this.replicas.get(k)?.exitStatus ?? null) !== null) return;
    this.log(
      `heron: replica ${k} fell ${RING_STALL_MS} ms behind the ordered stream's ring; delivering to it over its socket${d.lost ? ' (where it stopped reading is unknown: it catches up by state transfer)' : ''}`,
    );
    const txs = d.records.map((r) => socketDelivery(decodeRingRecord(r.ts, r.dest, r.payload)));
    if (txs.length > 0) this.conns.get(k)?.send({ t: 'deliver', txs });
  }

  private onReplica(msg: Received): void {
    if (msg.t === 'outcome') {
      const seen = this.outcomes.get(msg.ts);
      // Answered first long ago (its entry dropped): not a first answer, nothing to compare.
      const dropped = seen === undefined && msg.ts <= this.outcomesFloor && !this.waiters.has(msg.ts);
      // Bytes equal to the first reply's were checked with it; other bytes are checked now,
      // before anything changes (a malformed outcome closes the connection).
      const differs = seen !== undefined && !Buffer.from(seen.bytes.buffer, seen.bytes.byteOffset, seen.bytes.byteLength).equals(msg.bytes);
      const outcome = seen === undefined || differs ? (msg.outcome ?? parseOutcomeBytes(msg.bytes)) : undefined;
      this.lastAnswered[msg.partition * this.opts.replicas + msg.replica] = msg.ts;
      // A partition's first reports come in timestamp order (each replica reports in order);
      // across partitions they do not, so members install objects by version, not effects.
      if (this.pool && msg.writes && msg.ts > (this.preApplied.get(msg.partition) ?? 0n)) {
        const ts = msg.ts;
        this.pool.broadcastObjects(msg.writes.map(([id, value]) => [id, ts, value]));
        this.preApplied.set(msg.partition, ts);
      }
      this.wakeSettled();
      if (dropped) return;
      if (seen === undefined && outcome !== undefined) {
        const w = this.waiters.get(msg.ts);
        const orderedAt = w?.orderedAt || (this.orderedAt.get(msg.ts) ?? 0);
        if (this.orderedAt.size > 0) this.orderedAt.delete(msg.ts);
        const reply: HeronReply = {
          ts: msg.ts,
          outcome,
          dest: w?.dest ?? [],
          from: { partition: msg.partition, replica: msg.replica },
          timing: msg.timing,
          orderedAt,
          repliedAt: monotonicMicros(),
          decision: msg.decision,
        };
        this.remember(reply);
        if (w) {
          this.waiters.delete(msg.ts);
          w.resolve(reply);
        } else this.early.set(msg.ts, reply);
        this.outcomes.set(msg.ts, { bytes: msg.bytes, decision: msg.decision, count: 1 });
        if (this.outcomes.size > this.recentReplies) {
          const oldest = this.outcomes.keys().next();
          if (!oldest.done) {
            this.outcomes.delete(oldest.value);
            if (oldest.value > this.outcomesFloor) this.outcomesFloor = oldest.value;
          }
        }
        this.decided(msg.ts, outcome, msg.decision);
      } else if (seen !== undefined) {
        if (differs) {
          const m = `heron: OUTCOME MISMATCH at ts ${msg.ts}: replica ${key(msg.partition, msg.replica)} computed a different outcome`;
          this.outcomeMismatches.push(m);
          this.log(m);
        }
        if (seen.decision !== msg.decision) {
          const m = `heron: DECISION MISMATCH at ts ${msg.ts}: replica ${key(msg.partition, msg.replica)} ${msg.decision}, the first ${seen.decision}`;
          this.decisionMismatches.push(m);
          this.log(m);
        }
        seen.count++;
      }
    } else if (msg.t === 'transferred') {
      this.transfers.push({
        partition: msg.partition,
        replica: msg.replica,
        from: msg.from,
        since: msg.since,
        ts: msg.ts,
        objects: msg.objects,
        bytes: msg.bytes,
        micros: msg.micros,
        nativeMicros: msg.nativeMicros,
      });
      this.log(
        `heron: replica ${key(msg.partition, msg.replica)} caught up by state transfer from replica ${msg.from}: ${msg.objects} objects, ${msg.bytes} bytes, applied ${msg.since} -> ${msg.ts}`,
      );
      // It resumes after `ts`: it will not answer what it skipped.
      this.lastAnswered[msg.partition * this.opts.replicas + msg.replica] = msg.ts;
      this.wakeSettled();
      for (const w of this.transferWaiters.splice(0)) w();
      this.rejoined(msg);
    } else if (msg.t === 'digest') {
      let byApplied = this.digests.get(msg.partition);
      if (!byApplied) this.digests.set(msg.partition, (byApplied = new Map<number, Map<number, string>>()));
      let byReplica = byApplied.get(msg.applied);
      if (!byReplica) byApplied.set(msg.applied, (byReplica = new Map<number, string>()));
      byReplica.set(msg.replica, msg.digest);
      const distinct = new Set(byReplica.values());
      if (distinct.size > 1) {
        const d: Divergence = { partition: msg.partition, applied: msg.applied, digests: Object.fromEntries([...byReplica].map(([q, g]) => [String(q), g])) };
        this.divergences.push(d);
        this.log(`heron: REPLICA DIVERGENCE in partition ${msg.partition} after ${msg.applied} transactions: ${JSON.stringify(d.digests)}`);
      }
    }
  }

  /**
   * Orders `tx` and resolves with the first replica's reply (after its phase 4). Declared
   * objects other than the app's for the command are refused (a `TxError`) before ordering:
   * they choose the destinations, and a partition left out would never see its writes.
   */
  async submit(tx: Transaction | Uint8Array, onOptimistic?: (outcome: Outcome) => void): Promise<HeronReply> {
    if (this.closed) throw new Error('heron cluster is closed');
    if (this.failure) throw this.failure;
    const decoded = admitTx(this.app, tx);
    const dest = this.destinations(decoded.objects);
    // Refused before ordering: once ordered, a record the ring cannot hold would stop delivery
    // for everyone.
    const record = ringRecordBytes(dest.length, decoded.bytes.length);
    if (record > this.ringBytes) {
      throw new TxError(
        `transaction of ${decoded.bytes.length} bytes does not fit the ordered stream's ring of ${this.ringBytes} bytes (a record takes ${record}); give the cluster a larger ringBytes`,
      );
    }
    if (this.pool) await this.preExecute(decoded, onOptimistic);
    if (this.ordering === 'memory') return this.orderInMemory(decoded, dest);
    let accepted;
    try {
      accepted = await this.sequencer.submit(decoded);
    } catch (e) {
      this.takeTable(decoded.digest);
      throw e;
    }
    if (accepted.duplicate) {
      this.takeTable(decoded.digest);
      return this.duplicateOf(accepted.ts, dest);
    }
    const early = this.early.get(accepted.ts);
    if (early) {
      this.early.delete(accepted.ts);
      return { ...early, dest };
    }
    return new Promise((resolve) => this.waiters.set(accepted.ts, { resolve, dest, orderedAt: 0 }));
  }

  /** The same body again (the log deduplicates by digest): answers with the first reply. */
  private async duplicateOf(ts: bigint, dest: number[]): Promise<HeronReply> {
    const known = this.recent.get(ts);
    if (!known && (this.outcomes.has(ts) || ts <= this.outcomesFloor)) {
      throw new Error(`transaction is a duplicate of ts ${ts}, whose reply is no longer kept`);
    }
    const first = known ?? (await new Promise<HeronReply>((resolve) => this.dupWaiters.push({ ts, resolve })));
    return { ...first, dest, duplicate: true };
  }

  /**
   * In-memory ordering: the launcher is the log's only writer, so the timestamp the log will
   * give is the next one (duplicates aside, which the launcher tells itself, see
   * MEMORY_DEDUP_WINDOW). The transaction goes into the ring at once; the log write and fsync
   * follow in the background, and a log that fails or disagrees stops the cluster's intake.
   */
  private orderInMemory(decoded: DecodedTx, dest: number[]): Promise<HeronReply> {
    const seen = this.ordered.get(decoded.digest);
    if (seen !== undefined) {
      this.takeTable(decoded.digest);
      return this.duplicateOf(seen, dest);
    }
    const ts = this.nextTs++;
    this.rememberOrdered(decoded.digest, ts);
    const reply = new Promise<HeronReply>((resolve) => this.waiters.set(ts, { resolve, dest, orderedAt: 0 }));
    this.multicast([{ ts, tx: decoded }], [dest]);
    this.toLog.push({ ts, tx: decoded });
    if (this.toLog.length >= LOG_BATCH) this.flushLog();
    else this.logTimer ??= setTimeout(() => this.flushLog(), LOG_DELAY_MS);
    return reply;
  }

  /** Hands what in-memory ordering ordered to the log, in timestamp order, as one group. */
  private flushLog(): void {
    if (this.logTimer !== null) clearTimeout(this.logTimer);
    this.logTimer = null;
    const batch = this.toLog;
    if (batch.length === 0) return;
    this.toLog = [];
    const logged = Promise.all(
      batch.map(({ ts, tx }) =>
        this.sequencer.submit(tx).then(
          (a) => {
            if (a.ts !== ts || a.duplicate)
              this.fail(new Error(`heron: ORDER MISMATCH: the launcher delivered ts ${ts}, the log gave ${a.ts}${a.duplicate ? ' (a duplicate)' : ''}`));
          },
          (e: unknown) => this.fail(new Error(`heron: the log failed behind in-memory ordering: ${e instanceof Error ? e.message : String(e)}`)),
        ),
      ),
    ).then(() => undefined);
    this.appending.add(logged);
    void logged.finally(() => this.appending.delete(logged));
  }

  /**
   * Hands `tx` to the pool and resolves once its table is back, or it will not come (no member
   * took it, the member left, the table was malformed), or `preExecutionWaitMs` passed: it is
   * then ordered with whatever table there is. Submissions are released in admission order,
   * so waiting keeps the order clients submitted in; no wait exceeds its own bound.
   */
  private preExecute(tx: DecodedTx, onOptimistic?: (outcome: Outcome) => void): Promise<void> {
    const pool = this.pool;
    if (!pool) return Promise.resolve();
    const have = this.tables.get(tx.digest);
    if (onOptimistic) {
      if (have) onOptimistic(have.table.outcome);
      else this.optimisticWaits.set(tx.digest, [...(this.optimisticWaits.get(tx.digest) ?? []), onOptimistic]);
    }
    return new Promise<void>((go) => {
      const entry: Admitting = { ready: false, go };
      this.admitting.push(entry);
      if (have || !pool.dispatch(tx)) {
        entry.ready = true;
        this.release();
        return;
      }
      const ready = () => {
        if (entry.ready) return;
        entry.ready = true;
        clearTimeout(timer);
        this.release();
      };
      const timer = setTimeout(ready, this.opts.preExecutionWaitMs ?? DEFAULT_PRE_EXECUTION_WAIT_MS);
      this.tableWaits.set(tx.digest, [...(this.tableWaits.get(tx.digest) ?? []), ready]);
    });
  }

  /** Lets submissions go on to ordering, oldest first, while the oldest is ready. */
  private release(): void {
    while (this.admitting[0]?.ready) this.admitting.shift()?.go();
  }

  /** A member's table, checked by the pool: kept for the multicast; optimistic replies go now. */
  private tableCame(digest: string, received: ReceivedTable, from: string): void {
    const table = decodeTable(received.bytes, received.rest);
    this.tables.set(digest, { table, from });
    this.tablesReceived++;
    const optimistic = this.optimisticWaits.get(digest);
    this.optimisticWaits.delete(digest);
    for (const o of optimistic ?? []) o(table.outcome);
    this.noTable(digest);
  }

  /** Whatever waits for `digest`'s table stops waiting (it came, or none will). */
  private noTable(digest: string): void {
    const waits = this.tableWaits.get(digest);
    this.tableWaits.delete(digest);
    for (const w of waits ?? []) w();
  }

  /** The table carried with `digest` (if any); from now on none is wanted. */
  private takeTable(digest: string): { table: LookupTable; from: string } | undefined {
    // Tables and their waits come from the pool only: without one there is nothing to take.
    if (!this.pool) return undefined;
    const t = this.tables.get(digest);
    this.tables.delete(digest);
    this.optimisticWaits.delete(digest);
    this.pool?.done(digest);
    this.noTable(digest);
    return t;
  }

  /** The first replica's decision on `ts`: the pool's feedback, as the primary's in the pipeline. */
  private decided(ts: bigint, outcome: Outcome, decision: Decision): void {
    if (!this.pool) return;
    const h = this.handed.get(ts);
    this.handed.delete(ts);
    // Replicas do not report which reads were stale: every object the table read stands for them.
    const a: Applied = {
      ts,
      digest: h?.digest ?? '',
      outcome,
      decision,
      preExecutor: h?.from ?? null,
      writes: [],
      writeCount: 0,
      conflicts: decision === 'reexecuted' ? (h?.reads ?? []) : [],
    };
    this.pool.decided([a]);
  }

  /** A pre-executor process on the launcher's socket, checked like a pipeline node checks one. */
  private acceptMember(conn: Conn): void {
    const pool = this.pool;
    if (!pool) {
      this.log(`heron: ${conn.peer}: pre-executor ${conn.role}, but this cluster runs without pre-execution; closing`);
      conn.close();
      return;
    }
    const name = conn.role.slice(PRE_EXECUTOR_ROLE.length) || conn.peer;
    attachMember(pool, conn, name, {
      refuse: (n, spec, digest) =>
        digest === this.appDigest
          ? null
          : `pre-executor ${n} loaded app ${spec} with digest ${digest.slice(0, 12)}, but the launcher runs ${this.app.name} ${this.appDigest.slice(0, 12)} (${this.appSpec}): start it with the same --app`,
      config: { t: 'config', stateUpdate: 'broadcast', store: null, transport: 'shm', address: null, speculate: pool.speculation },
      log: this.log,
      onPool: (event, n) => {
        if (event === 'join') {
          this.joining.get(n)?.();
          this.joining.delete(n);
        } else if (!this.closed) this.log(`heron: pre-executor ${n} left the pool`);
      },
    });
  }

  /** Starts one more pre-executor process; resolves with its name once it joined the pool. */
  async addPreExecutor(): Promise<string> {
    if (!this.pool) throw new Error('this cluster runs without pre-execution');
    const name = `pre-${this.nextMember++}`;
    const attached = new Promise<void>((resolve) => this.joining.set(name, resolve));
    const p = await RoleProcess.start('pre-executor', ['--join', this.opts.dir, '--app', this.appSpec, '--name', name], { readyTimeoutMs: 60_000 });
    this.memberProcesses.set(name, p);
    void p.exited.then((e) => {
      if (!this.closed) this.log(`heron: pre-executor ${name} exited (${e.signal ?? `code ${e.code}`}): ${p.stderr.trim()}`);
    });
    await Promise.race([attached, p.exited.then((e) => Promise.reject(new Error(`pre-executor ${name} exited before joining (${JSON.stringify(e)})`)))]);
    return name;
  }

  /** Work per pool member (results returned, results owed); empty without pre-execution. */
  poolStats(): MemberStats[] {
    return this.pool?.stats() ?? [];
  }

  /** Tables members returned in time to be carried with their transactions. */
  get tablesCarried(): number {
    return this.tablesReceived;
  }

  /** Sends a signal to a pool member's process (SIGKILL to crash it). */
  signalPreExecutor(name: string, signal: NodeJS.Signals): void {
    const p = this.memberProcesses.get(name);
    if (!p) throw new Error(`no pre-executor ${name}`);
    p.kill(signal);
  }

  private fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    this.log(e.message);
  }

  private remember(reply: HeronReply): void {
    this.recent.set(reply.ts, reply);
    if (this.recent.size > this.recentReplies) {
      const oldest = this.recent.keys().next();
      if (!oldest.done) this.recent.delete(oldest.value);
    }
    if (this.dupWaiters.length === 0) return;
    const ready = this.dupWaiters.filter((w) => w.ts === reply.ts);
    if (ready.length > 0) {
      this.dupWaiters = this.dupWaiters.filter((w) => w.ts !== reply.ts);
      for (const w of ready) w.resolve(reply);
    }
  }

  /** Every running replica of `only` (default: all partitions) answered everything delivered to its partition. */
  private settled(only?: readonly number[]): boolean {
    const { partitions, replicas } = this.opts;
    for (let h = 0; h < partitions; h++) {
      if (only !== undefined && !only.includes(h)) continue;
      for (let q = 0; q < replicas; q++) {
        const p = this.replicas.get(key(h, q));
        if (!p || p.exitStatus !== null) continue;
        if ((this.lastAnswered[h * replicas + q] ?? 0n) < (this.lastDelivered.get(h) ?? 0n)) return false;
      }
    }
    return true;
  }

  /** Wakes `settle` callers to check again (only while someone waits). */
  private wakeSettled(): void {
    if (this.settledWaiters.length > 0) for (const w of this.settledWaiters.splice(0)) w();
  }

  /**
   * Resolves once every running replica (of `partitions`, default all) caught up with what was
   * delivered to its partition (false on timeout).
   */
  settle(timeoutMs = 30_000, partitions?: readonly number[]): Promise<boolean> {
    return until(() => this.settled(partitions), this.settledWaiters, timeoutMs);
  }

  /**
   * What the launcher holds per transaction: replies kept for duplicates, first outcomes kept
   * for comparison, and replies that came before their submitter heard its timestamp.
   */
  kept(): { replies: number; outcomes: number; early: number } {
    return { replies: this.recent.size, outcomes: this.outcomes.size, early: this.early.size };
  }

  /** Per replica (`partition.replica`), the last timestamp it answered and its partition's last delivered one. */
  progress(): Record<string, { answered: bigint; delivered: bigint }> {
    const { partitions, replicas } = this.opts;
    const out: Record<string, { answered: bigint; delivered: bigint }> = {};
    for (let h = 0; h < partitions; h++) {
      for (let q = 0; q < replicas; q++) out[key(h, q)] = { answered: this.lastAnswered[h * replicas + q] ?? 0n, delivered: this.lastDelivered.get(h) ?? 0n };
    }
    return out;
  }

  /** Resolves once `count` state transfers happened in all (false on timeout). */
  waitTransfers(count: number, timeoutMs = 30_000): Promise<boolean> {
    return until(() => this.transfers.length >= count, this.transferWaiters, timeoutMs);
  }

  /** Resolves true once replica `replica` of `partition` caught up by state transfer, false after `timeoutMs`. */
  waitTransferOf(partition: number, replica: number, timeoutMs = 30_000): Promise<boolean> {
    return until(() => this.transfers.some((t) => t.partition === partition && t.replica === replica), this.transferWaiters, timeoutMs);
  }

  /** Checkpoints every replica of `partition` reported, by applied count. */
  digestReports(partition: number): Map<number, Map<number, string>> {
    return this.digests.get(partition) ?? new Map<number, Map<number, string>>();
  }

  /**
   * A replica's exit is logged; with `restartReplicas` an unexpected one is restarted, at most
   * RESTARTS_PER_MINUTE times a minute. The ring keeps its place until it is restarted or the
   * ring next fills (the producer then stops waiting for it after its stall budget); the
   * restart runs from a timer, never from the exit path itself (calling into the addon while
   * this process exits is unsafe).
   */
  private watchReplica(h: number, q: number, p: RoleProcess): void {
    void p.exited.then((e) => {
      if (this.closed || this.replicas.get(key(h, q)) !== p) return;
      this.log(`heron: replica ${key(h, q)} exited (${e.signal ?? `code ${e.code}`}): ${p.stderr.trim()}`);
      if (!this.restartReplicas) return;
      const now = Date.now();
      const recent = (this.restartTimes.get(key(h, q)) ?? []).filter((t) => now - t < 60_000);
      if (recent.length >= RESTARTS_PER_MINUTE) {
        this.log(`heron: replica ${key(h, q)} exited ${recent.length + 1} times within a minute; not restarting it again (restartReplica restarts it by hand)`);
        return;
      }
      const timer = setTimeout(() => {
        this.restartTimers.delete(timer);
        this.restartReplica(h, q).catch((err: unknown) =>
          this.log(`heron: restarting replica ${key(h, q)} failed: ${err instanceof Error ? err.message : String(err)}`),
        );
      }, RESTART_DELAY_MS);
      this.restartTimers.add(timer);
    });
  }

  /**
   * Starts a replica whose process exited again, and resolves once it caught up and serves:
   * the ring takes it back at its head, the process starts with an empty store and is given
   * the last timestamp its partition was sent before that point; it installs a peer's state
   * that covers it (state transfer since 0), then applies what the ring holds after it. Refused
   * while the replica's process runs, or after `close`.
   */
  async restartReplica(partition: number, replica: number): Promise<Rejoin> {
    const k = key(partition, replica);
    const old = this.replicas.get(k);
    if (!old) throw new Error(`no replica ${k}`);
    if (this.closed) throw new Error('heron cluster is closed');
    if (this.respawning.has(k) || this.rejoining.has(k)) throw new Error(`replica ${k} is being restarted already`);
    if (old.exitStatus === null) throw new Error(`replica ${k} is running (pid ${old.pid ?? '?'}): only a replica that exited can be restarted`);
    const times = this.restartTimes.get(k) ?? [];
    times.push(Date.now());
    this.restartTimes.set(
      k,
      times.filter((t) => Date.now() - t < 60_000),
    );
    // Its old connection may not have noticed the exit yet; the new one says hello afresh.
    this.conns.get(k)?.close();
    this.conns.delete(k);
    const consumer = partition * this.opts.replicas + replica;
    this.ring.reattach(consumer);
    this.socketFed.delete(k);
    // Every record before the ring's head addressed to the partition is at or before this.
    const needed = this.lastDelivered.get(partition) ?? 0n;
    const started = monotonicMicros();
    const rejoined = new Promise<Rejoin>((resolve, reject) => {
      const fail = (e: Error) => {
        clearTimeout(timer);
        this.rejoining.delete(k);
        reject(e);
      };
      const timer = setTimeout(() => fail(new Error(`replica ${k} did not catch up within ${REJOIN_TIMEOUT_MS} ms of its restart`)), REJOIN_TIMEOUT_MS);
      this.rejoining.set(k, {
        needed,
        started,
        done: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        fail,
      });
    });
    rejoined.catch(() => undefined);
    const spawn = RoleProcess.start('heron-replica', [...this.replicaArgs(partition, replica), '--rejoin-after', String(needed)], {
      readyTimeoutMs: REJOIN_TIMEOUT_MS,
    });
    this.respawning.set(k, spawn);
    let p: RoleProcess;
    try {
      p = await spawn;
    } catch (e) {
      this.rejoining.get(k)?.fail(e instanceof Error ? e : new Error(String(e)));
      // Nobody reads as this consumer: the ring must not wait for it.
      if (!this.closed) this.ring.retire(consumer);
      throw e;
    } finally {
      this.respawning.delete(k);
    }
    this.replicas.set(k, p);
    this.watchReplica(partition, replica, p);
    this.log(`heron: replica ${k} restarted (pid ${p.pid ?? '?'}); catching up to at least ts ${needed}`);
    return rejoined;
  }

  /**
   * A replica said hello (entry index `index`, its store served at `address` over the network).
   * Once all did, over `tcp`/`verbs`, each is told where every peer is; a second hello is a
   * restarted replica, and every replica is told (so each attaches to its new incarnation,
   * at its new address, instead of writing into the dead one's memory).
   */
  private greeted(index: number, address: string | undefined): void {
    const restarted = this.greetedOnce.has(index);
    this.greetedOnce.add(index);
    if (address !== undefined) this.addresses[index] = address;
    const total = this.opts.partitions * this.opts.replicas;
    const net = (this.opts.transport ?? 'shm') !== 'shm';
    if (!restarted && (!net || this.greetedOnce.size < total)) return;
    const addresses = net ? Array.from({ length: total }, (_, i) => this.addresses[i] ?? '') : null;
    const msg: ToReplica = { t: 'peers', addresses, ring: this.ringAddress, rejoined: restarted ? index : null };
    for (const conn of this.conns.values()) conn.send(msg);
  }

  /**
   * Over `tcp`/`verbs`: where each replica serves its store (by entry index, the latest
   * incarnation's) and where the launcher serves the ring; empty and null over `shm`.
   */
  get storeAddresses(): { replicas: readonly (string | undefined)[]; ring: string | null } {
    return { replicas: [...this.addresses], ring: this.ringAddress };
  }

  /** A restarted replica's first state transfer: it serves again. */
  private rejoined(msg: { partition: number; replica: number; from: number; ts: bigint; objects: number; bytes: number }): void {
    const k = key(msg.partition, msg.replica);
    const r = this.rejoining.get(k);
    if (!r) return;
    this.rejoining.delete(k);
    const rejoin: Rejoin = {
      partition: msg.partition,
      replica: msg.replica,
      from: msg.from,
      needed: r.needed,
      ts: msg.ts,
      objects: msg.objects,
      bytes: msg.bytes,
      micros: monotonicMicros() - r.started,
    };
    this.rejoins.push(rejoin);
    this.log(`heron: replica ${k} rejoined: state as of ts ${msg.ts} from replica ${msg.from} (needed ${r.needed})`);
    r.done(rejoin);
    for (const w of this.rejoinWaiters.splice(0)) w();
  }

  /** Resolves once `count` restarted replicas rejoined in all (false on timeout). */
  waitRejoins(count: number, timeoutMs = 30_000): Promise<boolean> {
    return until(() => this.rejoins.length >= count, this.rejoinWaiters, timeoutMs);
  }

  /** Sends a signal to one replica (SIGKILL to crash it, SIGSTOP/SIGCONT to slow it). */
  signal(partition: number, replica: number, signal: NodeJS.Signals): void {
    const p = this.replicas.get(key(partition, replica));
    if (!p) throw new Error(`no replica ${key(partition, replica)}`);
    p.kill(signal);
  }

  /**
   * Stops the replicas (each finishes what it was delivered) and the sequencer. Resolves with
   * the summaries of the replicas that were still running.
   */
  async close(): Promise<ReplicaSummary[]> {
    const wasClosed = this.closed;
    this.closed = true;
    for (const t of this.restartTimers) clearTimeout(t);
    this.restartTimers.clear();
    // A replica being started again is stopped with the others.
    await Promise.allSettled([...this.respawning.values()]);
    for (const r of [...this.rejoining.values()]) r.fail(new Error('heron cluster closed before the replica caught up'));
    await this.clients.close();
    if (!wasClosed) {
      // Replicas still behind need their peers' memory to finish (remote reads): stop together.
      if (!(await this.settle())) this.log('heron: replicas did not catch up within 30 s; stopping anyway');
      // In-memory ordering: what was delivered reaches the disk before the log closes.
      this.flushLog();
      await Promise.all([...this.appending]);
      await this.sequencer.close().catch(() => undefined);
    }
    await Promise.all([...this.memberProcesses.values()].filter((p) => p.exitStatus === null).map((p) => p.stop(2000)));
    const summaries: ReplicaSummary[] = [];
    await Promise.all(
      [...this.replicas.values()].map(async (p) => {
        if (p.exitStatus !== null) return;
        const s = await p.stop(10_000);
        if (s.result !== undefined) summaries.push(s.result as ReplicaSummary);
      }),
    );
    await this.server?.close();
    this.server = null;
    if (!wasClosed) this.launcherStore.close();
    return summaries.sort((a, b) => a.partition - b.partition || a.replica - b.replica);
  }
}
