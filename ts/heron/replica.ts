// One replica of one partition (Heron, Algorithms 1 and 2): delivers the transactions addressed
// to its partition in timestamp order; executes single-partition ones directly; coordinates
// multi-partition ones (phase 2), executes them reading remote objects one-sidedly from a
// replica that reached phase 2, writes its own objects only, and coordinates again (phase 4).
// A replica that finds only newer versions at every such replica lags: it catches up by state
// transfer from a peer of its partition (Algorithm 3) and resumes after the shipped prefix.
import type { App } from '../app/app.js';
import { execute, hintsFrom, type Hints, type LookupTable, type Natives, type Outcome, type StateSource, type Versioned } from '../app/exec.js';
import { decodeTx, type DecodedTx } from '../app/tx.js';
import type { NativeCoordinator, NativeTransfer } from '../binding.js';
import { staleReads, type Decision } from '../pipeline/merge.js';
import { NativePrimaryStore } from '../pipeline/store-adapter.js';
import { Store, type ReadResult } from '../store.js';
import type { Transport } from '../transport.js';
import { nextDigest, DIGEST_ZERO } from './digest.js';
import { COORD_REGION, TRANSFER_REGION, storeName, type Delivered, type FromReplica, type Timing } from './messages.js';
import { destinations, partitionerOf } from './partition.js';
import { DEFAULT_REMOTE_CACHE_ENTRIES, RemoteCache, VersionedRemote } from './remote-cache.js';

export const PHASE_DELIVERED = 2;
export const PHASE_EXECUTED = 4;
/** `coordinateSync`'s statuses and where its replica bitmaps start (see the binding). */
const COORD_PENDING = 0;
const COORD_COMPLETE = 1;
const COORD_MASKS = 5;
/** Applied transactions between prefixes published for state transfer within one run. */
const PUBLISH_EVERY = 64;

export interface ReplicaOptions {
  dir: string;
  secret: Uint8Array;
  /**
   * How peers' memory is reached (default `shm`, through `dir`). Over `tcp`/`verbs` every
   * replica serves its store at an address of its own, learnt through `peersAt`.
   */
  transport?: Transport;
  app: App;
  natives: Natives;
  partitions: number;
  replicas: number;
  partition: number;
  replica: number;
  /** Wait for the rest after a majority (default 2 ms). */
  graceMs?: number;
  /** A coordination without a majority by then fails the replica (default 30 s). */
  timeoutMs?: number;
  /** A coordination checks the entries this long before it sleeps (default 30 µs). */
  coordSpinMicros?: number;
  /** A coordination waits on the replica's own thread this long, then on the pool (default 5 ms). */
  coordBudgetMicros?: number;
  /** Report the digest (and announce how far it applied) every this many transactions (default 16). */
  digestEvery?: number;
  /** Bytes of each peer's state-transfer landing slot here: shipments of any size pass through it in chunks of half of it (default 1 MiB). */
  transferSlotBytes?: number;
  /** How long a lagger waits for one peer's shipment before asking the next (default 2 s). */
  transferTimeoutMs?: number;
  /** Send this partition's writes with each outcome (a pre-executor's copy follows them). */
  reportWrites?: boolean;
  /** Remote objects kept by version, reused while current (default 4096; 0 turns caching and prefetching off). */
  remoteCacheEntries?: number;
  send: (msg: FromReplica) => void;
}

/** The result a replica reports when it stops. */
export interface ReplicaSummary {
  partition: number;
  replica: number;
  applied: number;
  lastTs: string;
  digest: string;
  remoteReads: number;
  remoteRetries: number;
  delayed: number;
  /** Coordination waits; those that found a majority but not everyone, and their time beyond it (µs). */
  coordinations: number;
  graceWaits: number;
  graceMicros: number;
  /** State transfers this replica received, and served. */
  transfers: number;
  served: number;
  /** Merge decisions: pre-executed tables adopted, re-executed; transactions without a table. */
  adopted: number;
  reexecuted: number;
  executed: number;
  /** Remote-object cache: reads answered from it, reads of objects it lacked, reads that found a newer version, entries prefetched. */
  cacheHits: number;
  cacheMisses: number;
  cacheStale: number;
  cachePrefetched: number;
}

interface Executed {
  outcome: Outcome;
  /** Every write of the transaction, any partition's: `contain` keeps this partition's. */
  writes: [string, Uint8Array | null][];
  decision: Decision;
}

/** Every replica that reached phase 2 already overwrote both versions a read needs. */
class LaggingError extends Error {}

const nowMicros = (): number => Number(process.hrtime.bigint() / 1000n);

export class HeronReplica {
  private readonly state: NativePrimaryStore;
  private readonly partitionOf: (id: string) => number;
  /** Remote replicas (key `h * replicas + q`), connected on first use. */
  private readonly remotes = new Map<number, Promise<VersionedRemote>>();
  /** Over `tcp`/`verbs`: every replica's store address, by entry index (`peersAt`). */
  private addresses: string[] | null = null;
  private readonly cache: RemoteCache;
  /** Per remote partition, the replica that last served a read: prefetches go there only. */
  private readonly servedBy = new Map<number, number>();
  /** Peers (as `remotes`) with a prefetch under way: at most one each. */
  private readonly prefetching = new Set<number>();
  private queue: Delivered[] = [];
  private head = 0;
  private transfers = 0;
  private running: Promise<void> | null = null;
  private lastTs = 0n;
  private applied = 0;
  private digest = DIGEST_ZERO;
  private remoteReads = 0;
  private remoteRetries = 0;
  private delayed = 0;
  private coordinations = 0;
  private graceWaits = 0;
  private graceMicros = 0;
  /** `coordinateSync`'s result numbers, reused across waits. */
  private coordOut = new Float64Array(COORD_MASKS + 2);
  private readonly decisions: Record<Decision, number> = { adopted: 0, reexecuted: 0, executed: 0 };
  private failure: ((e: unknown) => void) | null = null;
  /** Rejects when the replica cannot go on (a coordination timeout, no replica to read from). */
  readonly failed: Promise<never>;

  private constructor(
    private readonly opts: ReplicaOptions,
    readonly store: Store,
    readonly coordinator: NativeCoordinator,
    private readonly transfer: NativeTransfer,
  ) {
    this.state = new NativePrimaryStore(store);
    this.partitionOf = partitionerOf(opts.app, opts.partitions);
    this.cache = new RemoteCache(opts.remoteCacheEntries ?? DEFAULT_REMOTE_CACHE_ENTRIES);
    this.failed = new Promise<never>((_, reject) => {
      this.failure = reject;
    });
    this.failed.catch(() => undefined);
  }

  /** Creates the store and its coordination region; `connect` attaches to the peers. */
  static create(opts: ReplicaOptions): HeronReplica {
    const store = Store.create({ dir: opts.dir, name: storeName(opts.partition, opts.replica), secret: opts.secret });
    try {
      const peers: string[] = [];
      for (let h = 0; h < opts.partitions; h++) for (let q = 0; q < opts.replicas; q++) peers.push(storeName(h, q));
      // Over the network peers are named by address, learnt later (`peersAt`); until then
      // their store names stand in, and attaching to them fails (the majority wait copes).
      const transport = opts.transport ?? 'shm';
      // `Store.heronCoordinator`/`heronTransfer` hand their options to the binding whole; the
      // transport rides along (their declared option types predate it).
      const coordOpts: Parameters<Store['heronCoordinator']>[0] & { transport: Transport } = {
        transport,
        dir: opts.dir,
        secret: opts.secret,
        partitions: opts.partitions,
        replicas: opts.replicas,
        partition: opts.partition,
        replica: opts.replica,
        peers,
        region: COORD_REGION,
      };
      const coordinator = store.heronCoordinator(coordOpts);
      const transferOpts: Parameters<Store['heronTransfer']>[0] & { transport: Transport } = {
        transport,
        dir: opts.dir,
        secret: opts.secret,
        replicas: opts.replicas,
        replica: opts.replica,
        peers: Array.from({ length: opts.replicas }, (_, q) => storeName(opts.partition, q)),
        slotBytes: opts.transferSlotBytes ?? 1 << 20,
        requestRegion: TRANSFER_REGION,
      };
      const transfer = store.heronTransfer(transferOpts);
      return new HeronReplica(opts, store, coordinator, transfer);
    } catch (e) {
      store.close();
      throw e;
    }
  }

  /** Attaches to every peer's coordination memory (they start in any order). */
  async connect(timeoutMs = 30_000): Promise<void> {
    await this.coordinator.connect(timeoutMs);
    // Peers' state-transfer requests are served by a native thread, from the store, while
    // this thread executes: it ships the state as of the last prefix `publish`ed.
    this.transfer.serve();
  }

  /**
   * A restarted replica (empty store): catches up by state transfer since 0, from a peer of its
   * partition, until the shipped prefix covers `need` (the last transaction addressed to this
   * partition before the ring took it back: what follows comes from the ring, and whatever of
   * it the prefix covers is skipped). Deliveries queue meanwhile and are applied after it.
   * Call it before the first delivery; a failure fails the replica.
   */
  rejoin(need: bigint): Promise<void> {
    if (this.running || this.applied > 0) throw new Error('rejoin must come before any transaction is applied');
    const rejoined = this.catchUp(need, 'restarted with an empty store');
    this.running = rejoined.then(
      () => {
        this.running = null;
        this.kick();
      },
      (e: unknown) => {
        this.failure?.(e);
      },
    );
    return rejoined;
  }

  /**
   * Where the peers are (`addresses` by entry index, over `tcp`/`verbs`; null over `shm`), and
   * which one restarted (`rejoined`): coordination, state transfer and remote reads attach to
   * a peer whose address changed, or that restarted, afresh; coordination also writes our
   * latest entry into its new memory (what we announced since its restart went to the dead
   * incarnation's).
   */
  peersAt(addresses: readonly string[] | null, rejoined: number | null): void {
    const { partitions, replicas, partition, replica } = this.opts;
    const mine = partition * replicas + replica;
    if (addresses !== null && addresses.length !== partitions * replicas) {
      throw new Error(`peers: ${addresses.length} addresses for ${partitions} × ${replicas} replicas`);
    }
    const before = this.addresses;
    if (addresses !== null) this.addresses = [...addresses];
    for (let i = 0; i < partitions * replicas; i++) {
      if (i === mine) continue;
      const address = addresses?.[i];
      if (i !== rejoined && address === before?.[i]) continue;
      this.coordinator.reattach(i, address);
      if (Math.floor(i / replicas) === partition) this.transfer.reattach(i % replicas, address);
      this.remotes.delete(i);
    }
  }

  /** Queues transactions addressed to this partition, in timestamp order. */
  deliver(txs: readonly Delivered[]): void {
    for (const d of txs) this.queue.push(d);
    this.prefetch(txs);
    this.kick();
  }

  private publish(): void {
    if (this.lastTs > 0n) this.transfer.publish(this.lastTs, this.applied, this.digest);
  }

  /** A delivered transaction is being applied. */
  get busy(): boolean {
    return this.running !== null;
  }

  /**
   * Resolves once everything delivered so far is applied (or the replica failed); at once when
   * nothing is being applied.
   */
  drained(): Promise<void> {
    return this.running?.then(() => undefined, () => undefined) ?? Promise.resolve();
  }

  private kick(): void {
    this.running ??= this.run().finally(() => {
      this.running = null;
    });
  }

  private async run(): Promise<void> {
    for (;;) {
      const d = this.queue[this.head];
      if (d === undefined) {
        this.queue = [];
        this.head = 0;
        this.publish();
        return;
      }
      this.head++;
      if (this.head >= 1024) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      try {
        await this.apply(d);
      } catch (e) {
        this.failure?.(e);
        this.queue = [];
        this.head = 0;
        return;
      }
    }
  }

  private async apply(d: Delivered): Promise<void> {
    // Algorithm 1, lines 3-4: skip what was already applied (a redelivery).
    if (d.ts <= this.lastTs) return;
    const before = this.lastTs;
    this.lastTs = d.ts;
    const { partition, replica } = this.opts;
    // Decoded where it arrived (the ring), or here (the socket).
    const tx = d.tx ?? decodeTx({ body: d.body, auth: d.auth });
    // The destination set is recomputed, not trusted: every member must agree on it.
    const dest = destinations(tx.objects, this.partitionOf);
    if (dest.join() !== d.dest.join() || !dest.includes(partition)) {
      throw new Error(`transaction ${d.ts} was delivered to partition ${partition} with destinations [${d.dest.join()}], but its objects give [${dest.join()}]`);
    }
    const timing: Timing = { phase2: 0, execute: 0, phase4: 0, delayed: 0, graceWaits: 0, graceMicros: 0 };
    if (d.arrived !== undefined) timing.arrived = d.arrived;
    let outcome: Outcome;
    let writes: [string, Uint8Array | null][];
    let decision: Decision;
    if (dest.length === 1) {
      const t0 = nowMicros();
      ({ outcome, writes, decision } = this.contain(this.executeLocal(tx, d.table), dest));
      timing.execute = nowMicros() - t0;
      this.write(writes, d.ts);
    } else {
      const t0 = nowMicros();
      const p2 = await this.coordinate(d.ts, PHASE_DELIVERED, dest, timing);
      const t1 = nowMicros();
      try {
        ({ outcome, writes, decision } = this.contain(await this.executeWithRemote(tx, d.ts, dest, p2, d.table), dest));
      } catch (e) {
        if (!(e instanceof LaggingError)) throw e;
        // Algorithm 3: this replica lags; it adopts a peer's prefix, which covers `d.ts`.
        this.lastTs = before;
        await this.catchUp(d.ts, e.message);
        return;
      }
      this.write(writes, d.ts);
      const t2 = nowMicros();
      await this.coordinate(d.ts, PHASE_EXECUTED, dest, timing);
      [timing.phase2, timing.execute, timing.phase4] = [t1 - t0, t2 - t1, nowMicros() - t2];
    }
    this.applied++;
    this.decisions[decision]++;
    this.digest = nextDigest(this.digest, d.ts, writes);
    // The prefix through d.ts is in the store: state transfers may ship it from now on. Told
    // natively once per run of deliveries (and every PUBLISH_EVERY), not per transaction: a
    // server ships the newest prefix it was told, and a lagger given a shorter one asks again.
    if (this.applied % PUBLISH_EVERY === 0) this.publish();
    timing.sent = nowMicros();
    this.opts.send({ t: 'outcome', ts: d.ts, outcome, partition, replica, timing, decision, ...(this.opts.reportWrites ? { writes } : {}) });
    if (this.applied % (this.opts.digestEvery ?? 16) === 0) {
      this.opts.send({ t: 'digest', partition, replica, applied: this.applied, ts: d.ts, digest: this.digest });
      this.checkpoint();
    }
  }

  /**
   * Shows the partition's peers how far this replica applied (its entry at phase 4 of its last
   * timestamp: true of every earlier transaction too). State transfer needs no log to truncate:
   * the store keeps every object's newest version with its timestamp.
   */
  private checkpoint(): void {
    const { partition } = this.opts;
    if (this.lastTs > 0n) this.coordinator.announce(this.lastTs, PHASE_EXECUTED, [partition]);
  }

  /** Peers to ask, in order: those whose entry shows `ts` executed first, from our right. */
  private servers(ts: bigint): number[] {
    const { partition, replicas, replica } = this.opts;
    const entries = this.coordinator.entries();
    const order = Array.from({ length: replicas - 1 }, (_, k) => (replica + 1 + k) % replicas);
    const done = (q: number) => {
      const e = entries[partition * replicas + q];
      return e !== undefined && (e.ts > ts || (e.ts === ts && e.phase >= PHASE_EXECUTED));
    };
    return [...order.filter(done), ...order.filter((q) => !done(q))];
  }

  /**
   * Asks peers in turn for every object updated after our last applied timestamp, each for up
   * to the transfer timeout, until one ships a prefix covering `ts`. The shipment is installed
   * natively, chunk by chunk, before the wait resolves; this replica then adopts the server's
   * prefix (timestamp, applied count, digest), so digests keep agreeing.
   */
  private async catchUp(ts: bigint, why: string): Promise<void> {
    const since = this.lastTs;
    const started = nowMicros();
    const deadline = Date.now() + (this.opts.timeoutMs ?? 30_000);
    const tried: string[] = [];
    let [objects, bytes] = [0, 0];
    while (Date.now() < deadline) {
      for (const server of this.servers(ts)) {
        let got: Awaited<ReturnType<NativeTransfer['receive']>>;
        try {
          const number = this.transfer.request(server, this.lastTs);
          got = await this.transfer.receive(server, number, this.opts.transferTimeoutMs ?? 2000);
        } catch (e) {
          tried.push(`${server}: ${e instanceof Error ? e.message : String(e)}`);
          continue;
        }
        if (got === null) {
          tried.push(`${server}: no shipment in time`);
          continue;
        }
        objects += got.objects;
        bytes += got.bytes;
        // Installed already: the store holds the server's state as of `upTo`, a prefix at
        // least as long as ours, even when it does not reach `ts` yet.
        if (got.upTo > this.lastTs) {
          this.lastTs = got.upTo;
          this.applied = got.applied;
          this.digest = got.digest;
          this.transfer.publish(this.lastTs, this.applied, this.digest);
        }
        if (got.upTo < ts) {
          tried.push(`${server}: shipped only up to ${got.upTo}`);
          continue;
        }
        this.transfers++;
        this.checkpoint();
        const { partition, replica } = this.opts;
        this.opts.send({ t: 'transferred', partition, replica, from: server, since, ts: got.upTo, objects, bytes, micros: nowMicros() - started });
        return;
      }
    }
    throw new Error(`transaction ${ts}: lagging (${why}) and no peer shipped state within ${this.opts.timeoutMs ?? 30_000} ms (${tried.join('; ')})`);
  }

  /**
   * Replicas (per involved partition, in `dest` order) that reached the phase. The wait runs on
   * this thread for up to the budget (a spin, then a futex sleep until a peer announces): the
   * replica has nothing else to do before this transaction is coordinated, and a pool hop costs
   * more than the whole wait in the common case. Longer waits go on on the pool (`finish`), so
   * the process stays responsive through a slow peer or a timeout.
   */
  private async coordinate(ts: bigint, phase: number, dest: number[], timing: Timing): Promise<number[][]> {
    const { graceMs = 2, timeoutMs = 30_000, coordSpinMicros = 30, coordBudgetMicros = 5000 } = this.opts;
    if (this.coordOut.length < COORD_MASKS + dest.length) this.coordOut = new Float64Array(COORD_MASKS + dest.length);
    let r: Float64Array = this.coordOut;
    const status = this.coordinator.coordinateSync(ts, phase, Uint32Array.from(dest), graceMs, timeoutMs, coordSpinMicros, coordBudgetMicros, r);
    if (status === COORD_PENDING) r = await this.coordinator.finish();
    this.coordinations++;
    const [complete, majorityMicros, waitedMicros] = [r[0] === COORD_COMPLETE, r[1] ?? 0, r[2] ?? 0];
    if (!complete) {
      timing.delayed++;
      this.delayed++;
    }
    if (!complete || waitedMicros > majorityMicros) {
      const beyond = waitedMicros - majorityMicros;
      timing.graceWaits++;
      timing.graceMicros += beyond;
      this.graceWaits++;
      this.graceMicros += beyond;
    }
    const replicas: number[][] = [];
    for (let i = 0; i < dest.length; i++) {
      const mask = r[COORD_MASKS + i] ?? 0;
      const got: number[] = [];
      for (let q = 0; q < this.opts.replicas; q++) if ((mask >>> q) & 1) got.push(q);
      replicas.push(got);
    }
    return replicas;
  }

  private local(id: string): Versioned {
    return this.state.get([id])[0] ?? { version: 0n, value: undefined };
  }

  /** This partition's objects only (Algorithm 2, lines 29-31), sorted for the digest. */
  private ownWrites(all: readonly [string, Uint8Array | null][]): [string, Uint8Array | null][] {
    return all.filter(([id]) => this.partitionOf(id) === this.opts.partition).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  private write(writes: [string, Uint8Array | null][], ts: bigint): void {
    if (writes.length === 0) return;
    this.state.write(writes.map(([id, value]) => [id, ts, value]));
  }

  /**
   * The pipeline's merge rule at one partition: a pre-executed table is adopted when every read
   * it recorded (versions, and speculative values) is what this transaction sees at its
   * timestamp. `source` answers with exactly that: local objects from the store (everything
   * before the timestamp applied, nothing after), remote ones as `get_before(ts)` gave them,
   * which is the same at every replica of every destination; so every one decides the same.
   * A read outside the destinations cannot be seen consistently: never adopted (re-executing
   * aborts it the same way everywhere).
   */
  private adoptable(table: LookupTable, dest: readonly number[], source: StateSource): boolean {
    const ids = [...table.reads.map(([id]) => id), ...table.speculative.map(([id]) => id)];
    if (ids.some((id) => !dest.includes(this.partitionOf(id)))) return false;
    return staleReads(table, source).length === 0;
  }

  private adopt(table: LookupTable): Executed {
    return { outcome: table.outcome, writes: table.writes, decision: 'adopted' };
  }

  /**
   * A write to an object whose partition is not a destination would be lost: that partition
   * never sees the transaction, and every destination keeps only its own objects. So the
   * transaction aborts, and nothing of it is written anywhere. Every destination decides the
   * same: each executes the whole transaction (or adopts the same table) on the same versions
   * as of its timestamp, so each sees the same write set, and the destination set is the
   * delivery's. The abort names the smallest such id, not the first written, so the reason
   * does not depend on the order of the command's writes.
   */
  private contain(ex: Executed, dest: readonly number[]): Executed {
    let outside: string | undefined;
    for (const [id] of ex.writes) {
      if (!dest.includes(this.partitionOf(id)) && (outside === undefined || id < outside)) outside = id;
    }
    if (outside === undefined) return { ...ex, writes: this.ownWrites(ex.writes) };
    const reason = `writes ${outside} of partition ${this.partitionOf(outside)}, which is not among its destinations [${dest.join(', ')}]: the app's objects() must declare it`;
    return { outcome: { status: 'aborted', reason }, writes: [], decision: ex.decision };
  }

  private executeLocal(tx: DecodedTx, pre: LookupTable | undefined): Executed {
    const outside: string[] = [];
    const source: StateSource = {
      read: (id) => {
        if (this.partitionOf(id) === this.opts.partition) return this.local(id);
        outside.push(id);
        return { version: 0n, value: undefined };
      },
    };
    if (pre && this.adoptable(pre, [this.opts.partition], source)) return this.adopt(pre);
    const decision: Decision = pre ? 'reexecuted' : 'executed';
    const { table } = execute(this.opts.app, tx, source, this.opts.natives, pre ? hintsFrom(pre) : {});
    if (outside.length > 0) return { outcome: this.outsideAbort(outside[0] ?? '', [this.opts.partition]), writes: [], decision };
    return { outcome: table.outcome, writes: table.writes, decision };
  }

  /**
   * A read of an object whose partition is not a destination cannot be served consistently
   * (that partition did not order this transaction): the transaction aborts, identically at
   * every destination, since all of them see the same reads.
   */
  private outsideAbort(id: string, dest: number[]): Outcome {
    return {
      status: 'aborted',
      reason: `reads ${id} of partition ${this.partitionOf(id)}, which is not among its destinations [${dest.join(', ')}]: declare it`,
    };
  }

  /**
   * Executes with remote objects read by `get_before(ts)`. Declared remote objects are fetched
   * first; a dynamic read of a remote object not fetched yet ends that run, the object is
   * fetched, and the transaction runs again (execution is deterministic, so the last run is
   * the one every replica computes).
   */
  private async executeWithRemote(
    tx: DecodedTx,
    ts: bigint,
    dest: number[],
    reached: number[][],
    pre: LookupTable | undefined,
  ): Promise<Executed> {
    const remote = new Map<string, Versioned>();
    const isRemote = (id: string) => this.partitionOf(id) !== this.opts.partition;
    let want = tx.objects.filter(isRemote);
    if (pre) {
      // The recorded versions of remote objects, read one-sidedly as of `ts` like any input.
      const recorded = [...pre.reads.map(([id]) => id), ...pre.speculative.map(([id]) => id)];
      if (recorded.every((id) => dest.includes(this.partitionOf(id)))) want = [...new Set([...want, ...recorded.filter(isRemote)])];
    }
    const decision: Decision = pre ? 'reexecuted' : 'executed';
    const hints: Hints = pre ? hintsFrom(pre) : {};
    let judged = !pre;
    for (;;) {
      await this.fetchRemote(want, ts, dest, reached, remote);
      const missing: string[] = [];
      const source: StateSource = {
        read: (id) => {
          if (!isRemote(id)) return this.local(id);
          const v = remote.get(id);
          if (v) return v;
          missing.push(id);
          return { version: 0n, value: undefined };
        },
      };
      // Judged once, on the first run: every recorded remote read was fetched for it.
      if (pre && !judged && this.adoptable(pre, dest, source)) return this.adopt(pre);
      judged = true;
      const { table } = execute(this.opts.app, tx, source, this.opts.natives, hints);
      if (missing.length === 0) return { outcome: table.outcome, writes: table.writes, decision };
      const outside = missing.find((id) => !dest.includes(this.partitionOf(id)));
      if (outside !== undefined) return { outcome: this.outsideAbort(outside, dest), writes: [], decision };
      want = missing;
    }
  }

  private async fetchRemote(
    ids: readonly string[],
    ts: bigint,
    dest: number[],
    reached: number[][],
    into: Map<string, Versioned>,
  ): Promise<void> {
    const byPartition = new Map<number, string[]>();
    for (const id of ids) {
      if (into.has(id)) continue;
      const h = this.partitionOf(id);
      byPartition.set(h, [...(byPartition.get(h) ?? []), id]);
    }
    for (const [h, group] of byPartition) {
      // Only replicas that reached phase 2 have applied everything before `ts` (Algorithm 2,
      // line 15). Start at a replica picked by our own index to spread the reads.
      const candidates = reached[dest.indexOf(h)] ?? [];
      const errors: string[] = [];
      let done = false;
      let laggingAnswers = 0;
      for (let k = 0; k < candidates.length && !done; k++) {
        const q = candidates[(k + this.opts.replica) % candidates.length] ?? 0;
        try {
          const found = await this.readBefore(h, q, group, ts);
          const lagging = found.findIndex((r) => r.status === 'lagging');
          if (lagging >= 0) {
            // This replica already overwrote both versions: it is ahead of us, try another.
            errors.push(`replica ${h}.${q} has only versions ≥ ${ts} of ${group[lagging]}`);
            this.remoteRetries++;
            laggingAnswers++;
            continue;
          }
          found.forEach((r, i) => {
            const id = group[i] ?? '';
            if (r.status === 'value') into.set(id, { version: r.version, value: r.value });
            else if (r.status === 'deleted') into.set(id, { version: r.version, value: undefined });
            else into.set(id, { version: 0n, value: undefined });
          });
          this.remoteReads += group.length;
          this.servedBy.set(h, q);
          done = true;
        } catch (e) {
          // The peer is gone (Algorithm 2, lines 19-21): forget it and try another.
          this.remotes.delete(h * this.opts.replicas + q);
          this.remoteRetries++;
          errors.push(`replica ${h}.${q}: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
      if (!done && laggingAnswers > 0) {
        // Whoever can still answer is past both versions we need: we are the lagger.
        throw new LaggingError(errors.join('; '));
      }
      if (!done) {
        throw new Error(`transaction ${ts}: no replica of partition ${h} could serve its remote reads (${errors.join('; ') || 'none reached phase 2'})`);
      }
    }
  }

  /** Replica h.q's store, connected once (a failed connection is forgotten, tried again next time). */
  private peer(h: number, q: number): Promise<VersionedRemote> {
    const key = h * this.opts.replicas + q;
    let r = this.remotes.get(key);
    if (!r) {
      const address = this.addresses?.[key];
      const transport = this.opts.transport ?? 'shm';
      r =
        transport === 'shm'
          ? VersionedRemote.connect({ dir: this.opts.dir, store: storeName(h, q), secret: this.opts.secret })
          : address === undefined
            ? Promise.reject(new Error(`the address of replica ${h}.${q} is not known yet`))
            : VersionedRemote.connect({ transport, address, secret: this.opts.secret });
      this.remotes.set(key, r);
      r.catch(() => {
        if (this.remotes.get(key) === r) this.remotes.delete(key);
      });
    }
    return r;
  }

  /**
   * `get_before(ts)` of `ids` at replica h.q: ids are resolved to handles once (a control
   * round trip, usually done already by `prefetch`), then checked and read in one call on
   * this thread: a version held in the cache is reused when it is the one chosen, so only
   * other versions' values are copied out of the shared mapping.
   */
  private async readBefore(h: number, q: number, ids: string[], ts: bigint): Promise<ReadResult[]> {
    const r = await this.peer(h, q);
    await r.resolve(ids);
    return r.readBefore(ids, ts, this.cache);
  }

  /**
   * State prefetching (S-SMR 4.3.2), as far as one-sided reads allow: a delivery names the
   * remote objects its transaction declares, so while earlier transactions execute their
   * handles are resolved and the cache is filled with the newest versions of those it lacks.
   * Reads for the transaction still happen after its phase 2 (only then is a version choice
   * valid); a prefetched version is used only when it is the one chosen.
   *
   * Only at the replica of each partition that served this replica's last read there (it was
   * alive and up to date then), and one prefetch per peer at a time: resolving is a control
   * round trip on the libuv pool, and a peer stopped mid-run would hold the pool thread until
   * it resumes; more of them would starve coordination waits. Failures are ignored: the read
   * after phase 2 reports them.
   */
  private prefetch(txs: readonly Delivered[]): void {
    if (this.cache.capacity === 0) return;
    const { partition, replicas } = this.opts;
    const byPartition = new Map<number, Set<string>>();
    for (const d of txs) {
      if (d.dest.length < 2 || d.ts <= this.lastTs) continue;
      for (const id of d.tx?.objects ?? []) {
        const h = this.partitionOf(id);
        if (h === partition || !d.dest.includes(h)) continue;
        let set = byPartition.get(h);
        if (!set) byPartition.set(h, (set = new Set()));
        set.add(id);
      }
    }
    for (const [h, set] of byPartition) {
      const q = this.servedBy.get(h);
      const key = h * replicas + (q ?? 0);
      if (q === undefined || this.prefetching.has(key)) continue;
      const ids = [...set];
      this.prefetching.add(key);
      void this.peer(h, q)
        .then(async (r) => {
          await r.resolve(ids);
          r.prefetch(ids, this.cache);
        })
        .catch(() => undefined)
        .finally(() => this.prefetching.delete(key));
    }
  }

  summary(): ReplicaSummary {
    return {
      partition: this.opts.partition,
      replica: this.opts.replica,
      applied: this.applied,
      lastTs: this.lastTs.toString(),
      digest: this.digest,
      remoteReads: this.remoteReads,
      remoteRetries: this.remoteRetries,
      delayed: this.delayed,
      coordinations: this.coordinations,
      graceWaits: this.graceWaits,
      graceMicros: this.graceMicros,
      transfers: this.transfers,
      served: this.transfer.served(),
      ...this.decisions,
      cacheHits: this.cache.counters.hits,
      cacheMisses: this.cache.counters.misses,
      cacheStale: this.cache.counters.stale,
      cachePrefetched: this.cache.counters.prefetched,
    };
  }

  /** Finishes what was delivered, then releases the store. */
  async close(): Promise<ReplicaSummary> {
    await this.running;
    this.transfer.close();
    const s = this.summary();
    this.store.close();
    return s;
  }
}
