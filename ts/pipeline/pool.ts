// The pre-executor pool: who is in it, which member is handed each admitted transaction (the
// scheduler), what each member owes, intake of the tables they return, and how their copies
// follow the applied state (state updates and conflict feedback). Its host decides what a
// table is for: the pipeline's node offers it to the primary, Heron's launcher carries it in
// the multicast.
import { Buffer } from 'node:buffer';
import type { LookupTable, Versioned } from '../app/exec.js';
import type { DecodedTx } from '../app/tx.js';
import { stages } from '../stages.js';
import type { Conn } from '../wire.js';
import { ConflictFeedback, type FeedbackOptions } from './feedback.js';
import { parsePreMessage, ProtocolError, type NodeToPre, type NodeToPreSent } from './messages.js';
import type { Effect, Feedback } from './preexecutor.js';
import type { Applied } from './primary.js';
import { effectsOf } from './applied.js';
import { encodeEffects } from './records.js';
import { DEFAULT_POLICY, Scheduler, type Policy, type SchedulerOptions } from './scheduler.js';
import { MissPush, type PushedObject, type PushOptions, type StateUpdate } from './state-update.js';
import { encodeTable, receiveTable, TableError, type ReceivedTable } from './table-bytes.js';
import { DIGEST_BYTES, digestIs, resultTable, type ResultBatch } from './records.js';
import { Flights, type Flight, type Owed } from './in-flight.js';
import { ChurnSet } from './churn-map.js';
import { BytesParts, flatFrame, readFlatMap } from '../flat-frames.js';

/**
 * `broadcast` effects held while members owe nothing go out at this many transactions or after
 * this long.
 * Each flush wakes every member at once, on cores a lone client's transaction needs: flushed
 * every 20 ms, one client's p99 with 2 members was 0.79–1.1 ms; every 250 ms, 0.50–0.83 ms
 * (one outlier 1.2) against 0.41–0.55 ms without members (docs/pipeline.md).
 */
const EFFECTS_HELD_TXS = 2048;
const EFFECTS_HELD_MS = 250;

/** How the pool reaches one pre-executor. */
export interface PreExecutorLink {
  readonly name: string;
  /** Digest of the app version it executes with (undefined: whatever is active, in-process). */
  app?: string;
  send(txs: readonly DecodedTx[]): void;
  /** Asks it to load an app version ahead of its upgrade; resolves with the digest it loaded. */
  load?(v: { spec: string; digest: string }): Promise<string>;
  /** Tells it `digest` is now active: what it is handed from here on runs with that version. */
  upgrade?(digest: string): void;
  /**
   * Returns one result for each transaction sent, in the order sent, through `results` (a
   * member over the wire): its results are then matched to what it owes in order, without a
   * lookup by digest (`PreExecutionPool.results`).
   */
  readonly ordered?: boolean;
  /** Applied writes as effects.v1 bytes: one buffer per batch, shared by every member. */
  sendEffects(effects: Buffer): void;
  sendObjects(objects: readonly PushedObject[]): void;
  sendFeedback(feedback: Feedback): void;
}

/** What the pool needs from the process it runs in. */
export interface PoolHost {
  /** A member's well-formed table for `digest`, computed with app `app` when it said which. */
  offer(digest: string, table: ReceivedTable, from: string, app: string | undefined, flight: Flight): void;
  /** A member's table that does not decode: its transaction is executed as if none came. */
  malformed(digest: string, from: string, e: TableError): void;
  /** A retiring member will not be waited for on `digest`. */
  forget(digest: string): void;
  /** A member left owing these results: none will come (optional; else they fall to a deadline). */
  orphaned?(digests: readonly string[]): void;
  /** `push` only: the current version and value of `ids`. */
  current?(ids: readonly string[]): Versioned[];
  log?: (msg: string) => void;
}

export interface PoolOptions {
  /** Which member a transaction is handed (default `DEFAULT_POLICY`). */
  policy?: Policy;
  /** Tuning of the policy: affinity slack and capacity, `hotToPrimary`. */
  scheduling?: Omit<SchedulerOptions, 'policy'>;
  /** When an object counts as hot, and how fast conflict counts decay. */
  feedback?: FeedbackOptions;
  /** How members' copies follow the applied state (default `broadcast`). */
  stateUpdate?: StateUpdate;
  /** `push` only: when an object is pushed. */
  push?: PushOptions;
  /** Applied transactions between feedback messages to the members (default 1024). */
  feedbackEvery?: number;
  /** Whether members read their own results not yet applied (default true); told when they attach. */
  speculation?: boolean;
}

/** One member's work, as `poolStats` reports it. */
export interface MemberStats {
  name: string;
  /** Results it returned while they were owed. */
  executed: number;
  /** Results it still owes. */
  outstanding: number;
  retiring: boolean;
}

interface Member {
  link: PreExecutorLink;
  executed: number;
  queued: DecodedTx[];
  /** What each queued transaction is owed as, in the same order. */
  queuedOwed: Owed[];
  /**
   * An `ordered` member's transactions sent, in order, from `head` on: its next result is
   * most likely the first one's. A hint beside the flights, which say what is owed: an entry
   * that is no longer (`settled`) leaves the front as it reaches it.
   */
  sent: Owed[];
  head: number;
  /**
   * Results handed to it that are still useful (not returned, not yet applied): what a
   * retirement waits for; which ones is the flights' to say. The scheduler's load counts results
   * not returned, applied or not, so a member that stops answering keeps looking busy and stops
   * being chosen.
   */
  owed: number;
  /** Set while retiring: called once nothing is owed. */
  drained: (() => void)[] | null;
}

export class PreExecutionPool {
  readonly scheduler: Scheduler;
  /** Conflicts per object and misses per member, fed by every applied transaction. */
  readonly feedback: ConflictFeedback;
  readonly stateUpdate: StateUpdate;
  readonly speculation: boolean;
  /** `push` only: misses per member and object, and what each follows. */
  readonly push: MissPush | null;
  /** Results dropped because their sender did not owe them (late, or not handed the transaction). */
  unowedResults = 0;
  private readonly members = new Map<string, Member>();
  /** Who owes each digest's result: a flight's `owed`, shared with the node's other parts. */
  private readonly flights: Flights;
  /** Flights with an `owed`: whether any member owes anything. */
  private owedCount = 0;
  /**
   * Digests delegated (`delegate`), which the scheduler never counted: their results do not
   * lower the owing member's load, so admission's view of it stays what admission handed it.
   */
  private readonly uncharged = new ChurnSet();
  /**
   * Digests delegated to the member that already owed them from admission: the first result it
   * returns is the admission copy (it executes in arrival order), dropped as unowed.
   */
  private readonly supersededOnce = new ChurnSet();
  /** Objects for every member, sent before the next transactions they are handed. */
  private pendingObjects: PushedObject[] = [];
  /** `broadcast` effects held back while no member owes anything (`updateMembers`). */
  private pendingEffects: Buffer[] = [];
  /** Batches applied while effects are held, older than any of `pendingEffects`; built at the flush. */
  private heldApplied: (readonly Applied[])[] = [];
  private heldTxs = 0;
  private effectsTimer: NodeJS.Timeout | null = null;
  /** Some member was handed a transaction since effects last went out: members are busy. */
  private handedSinceEffects = false;
  private sinceFeedback = 0;
  private flushScheduled = false;

  constructor(
    private readonly host: PoolHost,
    private readonly opts: PoolOptions = {},
    flights?: Flights,
  ) {
    this.flights = flights ?? new Flights();
    this.scheduler = new Scheduler({ ...opts.scheduling, policy: opts.policy ?? DEFAULT_POLICY });
    this.feedback = new ConflictFeedback(opts.feedback);
    this.stateUpdate = opts.stateUpdate ?? 'broadcast';
    this.speculation = opts.speculation ?? true;
    this.push = this.stateUpdate === 'push' ? new MissPush(opts.push) : null;
  }

  add(link: PreExecutorLink): void {
    if (this.members.has(link.name)) throw new Error(`pre-executor ${link.name} is already attached`);
    this.members.set(link.name, { link, executed: 0, queued: [], queuedOwed: [], sent: [], head: 0, owed: 0, drained: null });
    this.scheduler.add(link.name);
    this.push?.add(link.name);
  }

  /** Detaches a member (left or crashed); the host hears what it still owed. */
  remove(name: string): void {
    const p = this.members.get(name);
    if (!p) return;
    this.members.delete(name);
    this.scheduler.remove(name);
    this.push?.remove(name);
    // A scan of everything owed, once per departure: a set per member would cost every
    // transaction an insertion and a deletion.
    const orphans = this.flights
      .all()
      .filter((f) => f.owed?.name === name)
      .map((f) => f.digest);
    for (const digest of orphans) {
      this.unown(this.owedOf(digest));
      this.uncharged.delete(digest);
      this.supersededOnce.delete(digest);
    }
    if (orphans.length > 0) this.host.orphaned?.(orphans);
    for (const d of p.drained ?? []) d();
  }

  /**
   * Retires a member gracefully: it is handed nothing more, and the promise resolves once
   * every result it owes has come back (or was settled without it).
   */
  retire(name: string): Promise<void> {
    const p = this.members.get(name);
    if (!p) return Promise.resolve();
    this.scheduler.remove(name);
    // Queued but not yet sent: nobody must wait for those.
    for (const tx of p.queued) this.settle(tx.digest, name, false);
    p.queued = [];
    p.queuedOwed = [];
    return new Promise((resolve) => {
      if (p.owed === 0) return resolve();
      (p.drained ??= []).push(resolve);
    });
  }

  /** Names of the members being handed work (retiring ones excluded). */
  get active(): string[] {
    return [...this.members.keys()].filter((n) => this.scheduler.has(n));
  }

  /** Links of every member, retiring ones included. */
  links(): PreExecutorLink[] {
    return [...this.members.values()].map((p) => p.link);
  }

  /** The member that owes `digest`'s result, if any. */
  owing(digest: string): string | undefined {
    return this.owedOf(digest)?.name;
  }

  /** Who owes `digest`'s result; `flight`: its flight as held, if live, spares the lookup. */
  private owedOf(digest: string, flight?: Flight): Owed | undefined {
    return (flight?.live === true ? flight : this.flights.get(digest))?.owed ?? undefined;
  }

  /** `owed` is what is owed for its digest from here on. */
  private own(owed: Owed): void {
    const f = owed.flight;
    if (f.owed === null) this.owedCount++;
    else f.owed.settled = true;
    f.owed = owed;
  }

  /**
   * Hands `tx` to the member the scheduler picks; sent in one message per member per tick.
   * False when nobody was handed it (no member, or the policy keeps it from the pool).
   */
  dispatch(tx: DecodedTx, flight?: Flight): boolean {
    // A resubmission while a member still owes the result: that result will do.
    if (this.owedOf(tx.digest, flight) !== undefined) return true;
    const lease = this.lease;
    // Under a lease, a transaction on a leased object is the delegate's once it is ordered:
    // executed now, out of order, it would only be thrown away.
    if (lease && tx.objects.some((id) => lease.objects.has(id))) return false;
    let name = this.scheduler.choose(tx);
    let charged = true;
    if (lease && name === lease.member) {
      // The delegate stays free for the leased objects: another member takes this one.
      const other = this.active.filter((n) => n !== lease.member).sort((a, b) => this.scheduler.outstanding(a) - this.scheduler.outstanding(b))[0];
      if (other !== undefined) {
        this.scheduler.completed(name);
        name = other;
        charged = false;
      }
    }
    const best = name === null ? undefined : this.members.get(name);
    if (!best || name === null) return false;
    const owed: Owed = {
      name,
      app: best.link.app,
      settled: false,
      tx,
      flight: flight?.live === true ? flight : this.flights.open(tx.digest),
    };
    best.queued.push(tx);
    best.queuedOwed.push(owed);
    this.handedSinceEffects = true;
    best.owed++;
    this.own(owed);
    if (!charged) this.uncharged.add(tx.digest);
    this.scheduleFlush();
    return true;
  }

  /**
   * The delegation lease in force (delegation.ts), or null: while it holds, admission hands the
   * delegate nothing and nobody the transactions on leased objects.
   */
  lease: { readonly member: string; readonly objects: ReadonlySet<string> } | null = null;

  /**
   * Delegation (delegation.ts): hands `txs` to member `name` alone, now, after `objects`, in
   * this order. It owes their results from here on; a result another member owed is no
   * longer taken from that member (its copy counts as unowed). False if `name` is not an
   * active member (nothing is sent then).
   */
  delegate(name: string, objects: readonly PushedObject[], txs: readonly DecodedTx[]): boolean {
    const p = this.members.get(name);
    if (!p || !this.scheduler.has(name)) return false;
    const digests = new Set(txs.map((tx) => tx.digest));
    // Handed at admission but not sent yet: not sent at all, the delegated copy replaces it.
    const unsent = new Set<string>();
    for (const m of this.members.values()) {
      if (!m.queued.some((tx) => digests.has(tx.digest))) continue;
      for (const tx of m.queued) if (digests.has(tx.digest)) unsent.add(tx.digest);
      m.queuedOwed = m.queuedOwed.filter((_, i) => !digests.has((m.queued[i] as DecodedTx).digest));
      m.queued = m.queued.filter((tx) => !digests.has(tx.digest));
    }
    const sent: Owed[] = [];
    for (const tx of txs) {
      const before = this.owedOf(tx.digest);
      const prev = before?.name;
      if (before !== undefined && prev === name) {
        // Its admission copy, executed out of order, comes back first: not the one wanted.
        if (!unsent.has(tx.digest)) this.supersededOnce.add(tx.digest);
        sent.push(before);
        continue;
      }
      if (prev !== undefined) this.reassign(tx.digest, prev);
      p.owed++;
      const owed: Owed = { name, app: p.link.app, settled: false, tx, flight: this.flights.open(tx.digest) };
      this.own(owed);
      this.uncharged.add(tx.digest);
      sent.push(owed);
    }
    this.sendEffects();
    if (objects.length > 0) p.link.sendObjects(objects);
    // Last: a link may fail as it sends (a crashed member is removed then, owing these).
    if (p.link.ordered === true) p.sent.push(...sent);
    p.link.send(txs);
    return true;
  }

  /** `digest` is no longer owed by `prev`: its load drops, a retirement may complete. */
  private reassign(digest: string, prev: string): void {
    if (!this.uncharged.delete(digest)) this.scheduler.completed(prev);
    const q = this.members.get(prev);
    if (!q) return;
    q.owed--;
    if (q.drained && q.owed === 0) for (const d of q.drained.splice(0)) d();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  /** Sends what is queued now: objects first, so what members are handed runs on them. */
  flush(): void {
    stages.time('dispatch', () => this.flushNow());
  }

  private flushNow(): void {
    this.flushScheduled = false;
    this.sendEffects();
    if (this.pendingObjects.length > 0) {
      const objects = this.pendingObjects;
      this.pendingObjects = [];
      for (const p of this.members.values()) p.link.sendObjects(objects);
    }
    for (const p of this.members.values()) {
      if (p.queued.length === 0) continue;
      const txs = p.queued;
      const owed = p.queuedOwed;
      p.queued = [];
      p.queuedOwed = [];
      if (p.link.ordered === true) {
        if (p.head === p.sent.length) {
          p.sent = owed;
          p.head = 0;
        } else for (const o of owed) p.sent.push(o);
      }
      p.link.send(txs);
    }
  }

  /**
   * A member's result for `digest`. Taken only from the member the transaction was handed to,
   * while it still owes it: a table is trusted (adopted as it is), so no other member, and no
   * late copy, may put one in front of the host. Anything else is counted and dropped.
   */
  result(from: string, digest: string, table: LookupTable | Uint8Array): void {
    stages.time('tables', () => this.intake(from, digest, table));
  }

  /**
   * A batch of results.v1 from `from`, as `result` takes each. An `ordered` member's are
   * matched to what it was sent in order, by comparing digests in place: no digest becomes a
   * string, nor is looked up, unless the member skipped or reordered one.
   */
  results(from: string, batch: ResultBatch): void {
    stages.time('tables', () => {
      const p = this.members.get(from);
      const { bytes, starts } = batch;
      for (let i = 0; i < starts.length; i++) {
        const at = starts[i] as number;
        const table = resultTable(bytes, at);
        const owed = p === undefined ? undefined : this.nextSent(p, bytes, at);
        if (owed === undefined) this.intake(from, bytes.toString('hex', at, at + DIGEST_BYTES), table);
        else if (owed === null) this.unowedResults++;
        else this.take(p as Member, owed, table);
      }
    });
  }

  /**
   * The entry at the front of what `p` was sent, if the digest at `at` of `b` is its: null if
   * that entry is settled (its result is no longer owed), undefined if the digest is another
   * (the caller looks it up). Settled entries ahead of it leave the front.
   */
  private nextSent(p: Member, b: Buffer, at: number): Owed | null | undefined {
    while (p.head < p.sent.length) {
      const o = p.sent[p.head] as Owed;
      if (o.tx.isDigestAt?.(b, at) ?? digestIs(b, at, o.tx.digest)) {
        this.advance(p, p.head + 1);
        return o.settled ? null : o;
      }
      if (!o.settled) return undefined;
      this.advance(p, p.head + 1);
    }
    return undefined;
  }

  /** `p`'s sent entries before `head` are done with; the array is cut once most of it is. */
  private advance(p: Member, head: number): void {
    p.head = head;
    if (head === p.sent.length) {
      p.sent = [];
      p.head = 0;
    } else if (head >= 1024 && 2 * head >= p.sent.length) {
      p.sent = p.sent.slice(head);
      p.head = 0;
    }
  }

  private intake(from: string, sent: string, table: LookupTable | Uint8Array): void {
    const p = this.members.get(from);
    const owed = this.owedOf(sent);
    if (!p || owed?.name !== from) {
      this.unowedResults++;
      return;
    }
    if (p.link.ordered === true) {
      // Out of order (the member skipped what it was sent before this): those are no
      // longer expected first.
      const i = p.sent.indexOf(owed, p.head);
      if (i >= 0) this.advance(p, i + 1);
    }
    this.take(p, owed, table);
  }

  /** `table` is `owed`'s result, from the member `p` that owes it. */
  private take(p: Member, owed: Owed, table: LookupTable | Uint8Array): void {
    const from = p.link.name;
    // The digest as admission made it, from here on: the maps it is looked up in next then
    // meet the string they hold, not an equal one to compare character by character.
    const { app } = owed;
    const digest = owed.tx.digest;
    if (this.supersededOnce.delete(digest)) {
      // Admission charged this copy; the delegated one is not charged.
      if (!this.uncharged.has(digest)) this.scheduler.completed(from);
      this.uncharged.add(digest);
      this.unowedResults++;
      return;
    }
    if (!this.uncharged.delete(digest)) this.scheduler.completed(from);
    p.executed++;
    this.settleOwed(digest, p, true, owed);
    let received: ReceivedTable;
    try {
      received = receiveTable(
        Buffer.isBuffer(table) ? table : table instanceof Uint8Array ? Buffer.from(table.buffer, table.byteOffset, table.byteLength) : encodeTable(table),
      );
    } catch (e) {
      if (!(e instanceof TableError)) throw e;
      this.host.malformed(digest, from, e);
      return;
    }
    this.host.offer(digest, received, from, app, owed.flight);
  }

  /** `digest`'s result is no longer wanted (its transaction was applied or ordered without it). */
  done(digest: string, flight?: Flight): void {
    const owed = this.owedOf(digest, flight);
    if (owed !== undefined) this.settle(digest, owed.name, false, owed);
  }

  /** `digest`'s result is no longer owed by `name` (returned, or no longer wanted); `owed`: its entry, if just looked up. */
  private settle(digest: string, name: string | undefined, returned: boolean, owed = this.owedOf(digest)): void {
    if (name === undefined || owed?.name !== name) return;
    const p = this.members.get(name);
    if (p) this.settleOwed(digest, p, returned, owed);
    else {
      this.unown(owed);
      this.uncharged.delete(digest);
      this.supersededOnce.delete(digest);
    }
  }

  /** `owed` is no longer owed: its flight lets it go, and `sent` sees it is settled. */
  private unown(owed: Owed | undefined): void {
    if (owed === undefined || owed.settled) return;
    owed.settled = true;
    const f = owed.flight;
    if (f.owed !== owed) return;
    f.owed = null;
    this.owedCount--;
    this.flights.release(f);
  }

  /** `settle` for a digest known to be owed (as `owed`) by member `p`. */
  private settleOwed(digest: string, p: Member, returned: boolean, owed: Owed): void {
    this.unown(owed);
    this.uncharged.delete(digest);
    this.supersededOnce.delete(digest);
    const name = p.link.name;
    p.owed--;
    if (!returned && !this.scheduler.has(name)) this.host.forget(digest);
    if (p.drained && p.owed === 0) for (const d of p.drained.splice(0)) d();
  }

  /** Work per member: results returned and results still owed. */
  stats(): MemberStats[] {
    return [...this.members.values()].map((p) => ({
      name: p.link.name,
      executed: p.executed,
      outstanding: p.owed,
      retiring: !this.scheduler.has(p.link.name),
    }));
  }

  /**
   * Every member loads app version `v` ahead of its activation; a member that cannot, or loads
   * other code, is detached.
   */
  async load(v: { spec: string; digest: string }): Promise<void> {
    await Promise.all(
      this.links().map(async (link) => {
        if (!link.load) return;
        const got = await link.load(v).catch((e: unknown) => `failed: ${e instanceof Error ? e.message : String(e)}`);
        if (got !== v.digest) {
          this.host.log?.(`pre-executor ${link.name} could not load app ${v.digest.slice(0, 12)} (${got}); detaching it`);
          this.remove(link.name);
        }
      }),
    );
  }

  /** Members hear of the new version after everything handed to them under the old one. */
  upgraded(digest: string): void {
    this.flush();
    for (const link of this.links()) {
      if (link.app === undefined) continue;
      link.app = digest;
      link.upgrade?.(digest);
    }
  }

  /**
   * A batch the primary applied, in timestamp order: results for it are no longer owed,
   * members' copies move forward, and its decisions feed the scheduler.
   */
  applied(batch: readonly Applied[]): void {
    for (const a of batch) {
      // Its flight let go: nothing is owed for it.
      if (a.flight?.live === false) continue;
      this.done(a.digest, a.flight);
    }
    stages.time('state-update', () => this.updateMembers(batch));
    this.decided(batch);
  }

  /**
   * Decisions on pre-executed transactions (adopted, re-executed with the objects that were
   * stale, executed alone), in timestamp order: hot objects for the scheduler, and every
   * `feedbackEvery` transactions the members' misses and the hot set for the members.
   */
  decided(batch: readonly Applied[]): void {
    this.feedback.record(batch);
    if (this.scheduler.policy === 'load+affinity+hot') this.scheduler.setHot(this.feedback.hot());
    this.sinceFeedback += batch.length;
    if (this.sinceFeedback >= (this.opts.feedbackEvery ?? 1024)) {
      this.sinceFeedback = 0;
      this.sendFeedback();
    }
  }

  /**
   * Objects at their versions for every member's copy (each installs an object only if newer
   * than its own), sent before the next transactions they are handed: a state update for hosts
   * whose writes arrive in pieces, out of timestamp order across pieces (Heron's partitions).
   */
  broadcastObjects(objects: readonly PushedObject[]): void {
    if (this.members.size === 0 || objects.length === 0) return;
    for (const o of objects) this.pendingObjects.push(o);
    this.scheduleFlush();
  }

  /**
   * Brings members' copies forward as the state-update strategy says. `broadcast`: one effects
   * buffer per batch for every member, holding every transaction that wrote something and every
   * one a member executed (so it drops the guesses an abort left).
   */
  private updateMembers(batch: readonly Applied[]): void {
    if (this.stateUpdate === 'pull' || this.members.size === 0) return;
    if (!this.push) {
      if (!this.handedSinceEffects && this.owedCount === 0 && !this.flushScheduled && this.heldTxs + batch.length <= EFFECTS_HELD_TXS) {
        // No member was handed anything since the last effects went out (a loaded node hands
        // out nearly every transaction) and none owes a result, so nothing reads a stale copy
        // meanwhile: the effects go out before the next transactions a member is handed. Sent
        // now, they would wake every member as a lone client's reply leaves (measured: +50 µs
        // on its p50 with 2 members on 2 cores). The timer bounds how long an idle node's
        // members lag. The batch is kept as applied and its effects are built at the flush,
        // with the others held, as one buffer: a lone client's transactions come one to a
        // batch, and building a buffer for each, and sending each, sat on its path.
        this.heldApplied.push(batch);
        this.heldTxs += batch.length;
        this.effectsTimer ??= setTimeout(() => this.flush(), EFFECTS_HELD_MS).unref();
        return;
      }
      this.buildHeld();
      const effects = effectsOf(batch);
      if (effects !== null) this.pendingEffects.push(effects);
      // After this turn of the event loop: the batch's replies leave first, members hear next.
      if (this.pendingEffects.length > 0) this.scheduleFlush();
      return;
    }
    // Effects first: the pushed versions read from the store below are at least as new.
    const effects: Effect[] = batch.filter((a) => a.writeCount > 0).map((a) => [a.ts, a.writes, a.digest]);
    for (const p of this.members.values()) {
      const mine = this.push.filter(p.link.name, effects);
      if (mine.length > 0) p.link.sendEffects(encodeEffects(mine));
    }
    if (!this.host.current) return;
    for (const [name, ids] of this.push.record(batch)) {
      const values = this.host.current(ids);
      this.members.get(name)?.link.sendObjects(ids.map((id, i) => [id, values[i]?.version ?? 0n, values[i]?.value ?? null]));
    }
  }

  /** Sends held `broadcast` effects to every member. */
  private sendEffects(): void {
    if (this.effectsTimer !== null) {
      clearTimeout(this.effectsTimer);
      this.effectsTimer = null;
    }
    this.handedSinceEffects = false;
    this.buildHeld();
    if (this.pendingEffects.length === 0) return;
    // One message per buffer, as built: joining them would copy every byte again.
    const out = this.pendingEffects;
    this.pendingEffects = [];
    // Buffer by buffer, so a link that frames one for the wire frames it once for all members.
    stages.time('state-update', () => {
      for (const effects of out) for (const p of this.members.values()) p.link.sendEffects(effects);
    });
  }

  /** The held batches' effects, as one buffer ahead of any pending. */
  private buildHeld(): void {
    if (this.heldApplied.length === 0) return;
    const held = this.heldApplied;
    this.heldApplied = [];
    this.heldTxs = 0;
    const effects = stages.time('state-update', () => effectsOf(held.length === 1 ? (held[0] as Applied[]) : held.flat()));
    if (effects !== null) this.pendingEffects.unshift(effects);
  }

  private sendFeedback(): void {
    const hot = [...this.feedback.hot()];
    const misses = this.feedback.misses();
    for (const p of this.members.values()) {
      const name = p.link.name;
      p.link.sendFeedback({ misses: misses.get(name) ?? 0, pushes: this.push?.pushes(name) ?? 0, hot });
    }
  }
}

/**
 * The frame of the effects buffer framed last: `sendEffects` hands every member the same
 * buffer in turn, and each link framing it again would copy it once per member.
 */
let framed: { effects: Buffer; frame: Buffer } | null = null;

function effectsFrame(effects: Buffer): Buffer {
  if (framed?.effects !== effects) framed = { effects, frame: flatFrame({ t: 'effects', effects }) };
  return framed.frame;
}

/** How a member connected over the wire is admitted (`attachMember`). */
export interface MemberAdmission {
  /** Why a member that loaded app `app` with `digest` may not join, or null if it may. */
  refuse(name: string, app: string, digest: string): string | null;
  /** The config message a member is sent once attached. */
  config: Extract<NodeToPre, { t: 'config' }>;
  log: (msg: string) => void;
  /** Called when the member attached (after its config was sent) and when it left. */
  onPool?: (event: 'join' | 'leave', name: string) => void;
  /**
   * The node's own string for an app digest it accepted: the digest a table was computed with
   * is compared with the node's for every transaction, and one object compares at once where
   * an equal copy compares character by character.
   */
  canonicalApp?: (digest: string) => string;
}

/**
 * A pre-executor on `conn` (role `pre-executor:NAME`, already authenticated with the member
 * credential) joins `pool` once its first message, `hello`, names the app it loaded; one
 * running other code is refused, and told why. It is detached when the connection closes.
 */
export function attachMember(pool: PreExecutionPool, conn: Conn, name: string, admission: MemberAdmission): void {
  const { log } = admission;
  const send = (m: NodeToPreSent | Buffer) => {
    try {
      if (m instanceof Buffer) conn.sendFrame(m);
      else conn.send(m);
    } catch {
      // Closing: the member is detached on close, and the host handles what it owed.
    }
  };
  const loads: ((answer: string) => void)[] = [];
  let attached = false;
  const hello = (app: string, digest: string): void => {
    const refused = admission.refuse(name, app, digest);
    if (refused !== null) {
      log(`${conn.peer}: ${refused}; closing`);
      send({ t: 'refused', reason: refused });
      conn.close();
      return;
    }
    pool.add({
      name,
      app: admission.canonicalApp?.(digest) ?? digest,
      // It runs what it is sent in order and answers each in a `results` batch (preexecutor-main.ts).
      ordered: true,
      send: (txs) => send(flatFrame({ t: 'exec', txs: new BytesParts(txs.map((tx) => tx.bytes)) })),
      sendEffects: (effects) => send(effectsFrame(effects)),
      sendObjects: (objects) => send({ t: 'objects', objects: [...objects] }),
      sendFeedback: (feedback) => send({ t: 'feedback', feedback }),
      load: (v) =>
        new Promise<string>((resolve) => {
          loads.push(resolve);
          send({ t: 'load', spec: v.spec, digest: v.digest });
        }),
      upgrade: (d) => send({ t: 'upgrade', digest: d }),
    });
    attached = true;
    send(admission.config);
    admission.onPool?.('join', name);
  };
  conn.readWith(readFlatMap);
  conn.onMessage((raw) => {
    try {
      const m = parsePreMessage(raw);
      if (!attached) {
        if (m.t !== 'hello') throw new ProtocolError(`a pre-executor's first message must be hello, got ${m.t}`);
        hello(m.app, m.digest);
        return;
      }
      switch (m.t) {
        case 'results':
          pool.results(name, m.results);
          return;
        case 'loaded':
          loads.shift()?.(m.digest);
          return;
        case 'load-failed':
          loads.shift()?.(`failed: ${m.reason}`);
          return;
        case 'hello':
          throw new ProtocolError('hello sent twice');
      }
    } catch (e) {
      log(`${conn.role} at ${conn.peer}: ${e instanceof Error ? e.message : String(e)}; closing the connection`);
      conn.close();
    }
  });
  conn.onClose(() => {
    for (const answer of loads.splice(0)) answer('the connection closed');
    if (!attached) return;
    pool.remove(name);
    admission.onPool?.('leave', name);
  });
}
