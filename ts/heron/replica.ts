// One replica of one partition (Heron, Algorithms 1 and 2): delivers the transactions addressed
// to its partition in timestamp order; executes single-partition ones directly; coordinates
// multi-partition ones (phase 2), executes them reading remote objects one-sidedly from a
// replica that reached phase 2, writes its own objects only, and coordinates again (phase 4:
// announced at once, waited for before a write could hide a version its peers read, not
// before the reply).
// A replica that finds only newer versions at every such replica lags: it catches up by state
// transfer from a peer of its partition (Algorithm 3) and resumes after the shipped prefix.
import type { App } from '../app/app.js';
import type { Natives, Outcome, Versioned } from '../app/exec.js';
import { destinations, partitionerOf } from '../app/partition.js';
import { decodeTx } from '../app/tx.js';
import type { NativeCoordinator, NativeTransfer } from '../binding.js';
import type { Decision, Merged } from '../pipeline/merge.js';
import { NativePrimaryStore } from '../pipeline/store-adapter.js';
import { Store } from '../store.js';
import type { Transport } from '../transport.js';
import { CatchUp, type Prefix } from './catch-up.js';
import { mergeLocal, mergeWithRemote, type Destination, type FetchRemote } from './destination-merge.js';
import { nextDigest, DIGEST_ZERO } from './digest.js';
import { COORD_REGION, TRANSFER_REGION, storeName, type Delivered, type FromReplica, type Timing } from './messages.js';
import { PhaseWaits } from './phase-waits.js';
import { PHASE_DELIVERED, PHASE_EXECUTED } from './phases.js';
import { LaggingError, RemoteReads } from './remote-reads.js';

/** Applied transactions between prefixes published for state transfer within one run. */
const PUBLISH_EVERY = 64;
/** Objects written while a phase 4 is owed, after which the next writer waits for it. */
const OWED_WRITES = 1024;

/** Phase 4 of a multi-partition transaction, announced but not waited for yet. */
interface Owed {
  ts: bigint;
  dest: number[];
  /** This partition's objects written since `ts`, `ts`'s own writes included. */
  written: Set<string>;
}

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

const nowMicros = (): number => Number(process.hrtime.bigint() / 1000n);

export class HeronReplica {
  private readonly state: NativePrimaryStore;
  private readonly partitionOf: (id: string) => number;
  /** What merges read here: this partition's objects from the store. */
  private readonly at: Destination;
  private readonly remote: RemoteReads;
  private readonly phases: PhaseWaits;
  private readonly lagging: CatchUp;
  private queue: Delivered[] = [];
  private head = 0;
  private running: Promise<void> | null = null;
  private lastTs = 0n;
  private applied = 0;
  private digest = DIGEST_ZERO;
  private readonly decisions: Record<Decision, number> = { adopted: 0, reexecuted: 0, executed: 0 };
  private failure: ((e: unknown) => void) | null = null;
  /** The last timestamp whose phase 2 `arriving` announced: its turn only waits. */
  private announcedOnArrival = 0n;
  /** Phase 4 of the last multi-partition transaction: announced, not yet waited for. */
  private settling: Owed | null = null;
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
    this.at = { app: opts.app, natives: opts.natives, partitionOf: this.partitionOf, partition: opts.partition, local: (id) => this.local(id) };
    this.remote = new RemoteReads({
      ...opts,
      partitionOf: this.partitionOf,
      ...(opts.remoteCacheEntries !== undefined && { cacheEntries: opts.remoteCacheEntries }),
    });
    this.phases = new PhaseWaits(coordinator, opts);
    this.lagging = new CatchUp(transfer, opts);
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
      // The partition and coordination region order the peers a catch-up asks.
      const transferOpts: Parameters<Store['heronTransfer']>[0] & { transport: Transport; partition: number; coordinationRegion: number } = {
        transport,
        dir: opts.dir,
        secret: opts.secret,
        replicas: opts.replicas,
        replica: opts.replica,
        peers: Array.from({ length: opts.replicas }, (_, q) => storeName(opts.partition, q)),
        slotBytes: opts.transferSlotBytes ?? 1 << 20,
        requestRegion: TRANSFER_REGION,
        partition: opts.partition,
        coordinationRegion: COORD_REGION,
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
    this.lagging.rehearse(this.prefix(), this.adoptPrefix);
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
    const before = this.remote.peerAddresses;
    this.remote.peerAddresses = addresses;
    for (let i = 0; i < partitions * replicas; i++) {
      if (i === mine) continue;
      const address = addresses?.[i];
      if (i !== rejoined && address === before?.[i]) continue;
      this.coordinator.reattach(i, address);
      if (Math.floor(i / replicas) === partition) this.transfer.reattach(i % replicas, address);
      this.remote.forget(i);
    }
  }

  /** Queues transactions addressed to this partition, in timestamp order. */
  deliver(txs: readonly Delivered[]): void {
    for (const d of txs) this.queue.push(d);
    this.remote.prefetch(txs, this.lastTs);
    this.kick();
  }

  /**
   * Announces phase 2 of a transaction as it arrives, before it is decoded, when nothing
   * before it is still to be applied: its phase-2 entry then says what it will say once the
   * transaction's turn comes (this replica applied everything before `ts`), and peers that
   * arrive later find it there instead of waiting for this replica's decoding and scheduling.
   * Heron announces on delivery the same way. The wait itself stays at the transaction's turn.
   */
  arriving(ts: bigint, dest: number[]): void {
    if (this.running !== null || this.head < this.queue.length || ts <= this.lastTs) return;
    if (dest.length < 2 || !dest.includes(this.opts.partition)) return;
    this.coordinator.announce(ts, PHASE_DELIVERED, dest);
    this.announcedOnArrival = ts;
  }

  private publish(): void {
    if (this.lastTs > 0n) this.transfer.publish(this.lastTs, this.applied, this.digest);
  }

  /** A delivered transaction is being applied. */
  get busy(): boolean {
    return this.running !== null;
  }

  /** Nothing delivered waits behind the transaction being applied (true when idle too). */
  get lastQueued(): boolean {
    return this.head >= this.queue.length;
  }

  /**
   * Resolves once everything delivered so far is applied (or the replica failed); at once when
   * nothing is being applied.
   */
  drained(): Promise<void> {
    return (
      this.running?.then(
        () => undefined,
        () => undefined,
      ) ?? Promise.resolve()
    );
  }

  private kick(): void {
    this.running ??= this.run().finally(() => {
      this.running = null;
      // Delivered after the run found the queue empty but before it was let go: a kick
      // meanwhile found it still running.
      if (this.head < this.queue.length) this.kick();
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
    const timing: Timing = { phase2: 0, execute: 0, phase4: 0, delayed: 0, graceWaits: 0, graceMicros: 0 };
    if (d.arrived !== undefined) timing.arrived = d.arrived;
    const before = this.lastTs;
    this.lastTs = d.ts;
    const { partition, replica } = this.opts;
    // Decoded where it arrived (the ring), or here (the socket).
    const tx = d.tx ?? decodeTx({ body: d.body, auth: d.auth });
    // The destination set is recomputed, not trusted: every member must agree on it.
    const dest = destinations(tx.objects, this.partitionOf);
    if (dest.join() !== d.dest.join() || !dest.includes(partition)) {
      throw new Error(
        `transaction ${d.ts} was delivered to partition ${partition} with destinations [${d.dest.join()}], but its objects give [${dest.join()}]`,
      );
    }
    // Phase 4 of the last multi-partition transaction T may still be owed: what this reply
    // waits for of it is on its path. A phase-2 wait on destinations that include T's covers
    // it (an entry at phase 2 of `d.ts` is past phase 4 of every earlier timestamp); another
    // multi-partition transaction waits for it first; a single-partition one only if it would
    // write over a version T's readers may need (`mayWriteOwing`).
    const owed = this.settling;
    if (owed !== null && dest.length > 1) {
      if (owed.dest.every((h) => dest.includes(h))) this.settling = null;
      else {
        const settled = this.settle(owed, timing);
        timing.phase4 = typeof settled === 'number' ? settled : await settled;
      }
    }
    let outcome: Outcome;
    let writes: [string, Uint8Array | null][];
    let decision: Decision;
    if (dest.length === 1) {
      const t0 = nowMicros();
      ({ outcome, writes, decision } = this.contain(this.executed(mergeLocal(this.at, tx, d.table)), dest));
      timing.execute = nowMicros() - t0;
      if (owed !== null && !this.mayWriteOwing(owed, writes)) {
        const settled = this.settle(owed, timing);
        timing.phase4 = typeof settled === 'number' ? settled : await settled;
      }
      this.write(writes, d.ts);
    } else {
      const t0 = nowMicros();
      let p2 = this.phases.wait(d.ts, PHASE_DELIVERED, dest, timing, this.announcedOnArrival !== d.ts);
      if (p2 instanceof Promise) p2 = await p2;
      const t1 = nowMicros();
      try {
        const fetch: FetchRemote = (ids, into) => this.remote.fetch(ids, d.ts, dest, p2, into);
        ({ outcome, writes, decision } = this.contain(this.executed(await mergeWithRemote(this.at, tx, d.table, dest, fetch)), dest));
      } catch (e) {
        if (!(e instanceof LaggingError)) throw e;
        // Algorithm 3: this replica lags; it adopts a peer's prefix, which covers `d.ts`.
        this.lastTs = before;
        await this.catchUp(d.ts, e.message);
        return;
      }
      this.write(writes, d.ts);
      [timing.phase2, timing.execute] = [t1 - t0, nowMicros() - t1];
      // Phase 4 keeps this replica from writing over versions the other destinations may
      // still read for `d.ts` (Heron, Figure 3b), so it must end before such a write; the
      // outcome itself is fixed, so the reply need not wait for it.
      this.coordinator.announce(d.ts, PHASE_EXECUTED, dest);
      this.settling = { ts: d.ts, dest, written: new Set(writes.map(([id]) => id)) };
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
   * Waits for phase 4 of the last multi-partition transaction, still owed: every
   * destination executed it, so none reads this store for it any more (Heron, Algorithm 1,
   * lines 14-16). Returns the µs waited.
   */
  private settle(owed: Owed, timing: Timing): number | Promise<number> {
    this.settling = null;
    const t0 = nowMicros();
    const waited = this.phases.wait(owed.ts, PHASE_EXECUTED, owed.dest, timing, false);
    return waited instanceof Promise ? waited.then(() => nowMicros() - t0) : nowMicros() - t0;
  }

  /**
   * Whether a single-partition transaction may write `writes` while phase 4 of `owed` is
   * still owed, noting them if so. T's other destinations read this partition's objects as of
   * just before T, and the store keeps two versions of each: the first write of an object
   * since T leaves that version in place, a second one (or one after T's own write of it)
   * would not, and its reader would find itself lagging. A write of an object already written
   * since T, or past `OWED_WRITES` of them, waits for phase 4 first.
   */
  private mayWriteOwing(owed: Owed, writes: readonly [string, Uint8Array | null][]): boolean {
    if (owed.written.size + writes.length > OWED_WRITES) return false;
    for (const [id] of writes) if (owed.written.has(id)) return false;
    for (const [id] of writes) owed.written.add(id);
    return true;
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

  /**
   * Algorithm 3: brings this replica to a peer's prefix covering `ts` by state transfer
   * (catch-up.ts) and adopts it (timestamp, applied count, digest), so digests keep agreeing.
   */
  private async catchUp(ts: bigint, why: string): Promise<void> {
    const done = await this.lagging.run(ts, why, this.prefix(), this.adoptPrefix);
    this.checkpoint();
    const { partition, replica } = this.opts;
    this.opts.send({ t: 'transferred', partition, replica, ...done });
  }

  private prefix(): Prefix {
    return { lastTs: this.lastTs, applied: this.applied, digest: this.digest };
  }

  /** A catch-up's prefix becomes this replica's, so digests keep agreeing. */
  private readonly adoptPrefix = (p: Prefix): void => {
    this.lastTs = p.lastTs;
    this.applied = p.applied;
    this.digest = p.digest;
  };

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

  private executed(m: Merged): Executed {
    return { outcome: m.table.outcome, writes: m.table.writes, decision: m.decision };
  }

  summary(): ReplicaSummary {
    return {
      partition: this.opts.partition,
      replica: this.opts.replica,
      applied: this.applied,
      lastTs: this.lastTs.toString(),
      digest: this.digest,
      remoteReads: this.remote.reads,
      remoteRetries: this.remote.retries,
      delayed: this.phases.delayed,
      coordinations: this.phases.coordinations,
      graceWaits: this.phases.graceWaits,
      graceMicros: this.phases.graceMicros,
      transfers: this.lagging.transfers,
      served: this.transfer.served(),
      ...this.decisions,
      cacheHits: this.remote.cache.counters.hits,
      cacheMisses: this.remote.cache.counters.misses,
      cacheStale: this.remote.cache.counters.stale,
      cachePrefetched: this.remote.cache.counters.prefetched,
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
