// The primary: consumes the ordered stream, merges pre-executed results, applies writes.
//
// Tables arrive as bytes (docs/binary-layouts.md). Where the store can check them itself
// (the native store's `adoptBatch`), runs of adoptable transactions are checked and applied in
// one native call each, without becoming objects; whatever it does not adopt (no table, a
// stale read, a malformed table) is merged here in JavaScript by the one rule in merge.ts,
// and the native run resumes after it.
import type { App } from '../app/app.js';
import type { ExecCounts, LookupTable, Natives, StateSource, Versioned } from '../app/exec.js';
import type { LoadedApp } from '../app/module.js';
import { applyWrites, type Write } from '../app/state.js';
import type { DecodedTx } from '../app/tx.js';
import { AppVersions, isAdmin, upgradeOf, type AppVersion } from '../app/versions.js';
import { merge, type Decision, type Merged } from './merge.js';
import { AdoptedTx, type Applied } from './applied.js';
import type { Sequenced } from './sequencer.js';
import { stages } from '../stages.js';
import { decodeTable, encodeTable, receiveTable, TableError, type ReceivedTable } from './table-bytes.js';
import { MIN_PARALLEL_RUN, type MergeThreads } from './merge-threads.js';
import { speculate, type SnapshotEntry, type Speculated } from './speculate.js';
import { ChurnMap } from './churn-map.js';
import { Flights, type Flight } from './in-flight.js';
import { joinBytes } from '../bytes.js';

/** What one native adoption run did (see `PrimaryStore.adopt`). */
export interface AdoptRun {
  /** Transactions adopted, from the first one asked. */
  adopted: number;
  /** Why it stopped: `end` of the batch, or the next one had no table, a stale read, or a malformed table. */
  stop: 'end' | 'none' | 'stale' | 'malformed';
  error?: string | null;
  /**
   * After `stale`: how many transactions after that one will most likely not be adopted
   * either (no table, a read the state has already passed, or a read of what a stale one before
   * it wrote), so are merged in the same run. Only a hint: the run merges each by the one rule.
   */
  staleAfter?: number;
}

/** Where the primary keeps its state: the native store in production, memory in unit tests. */
export interface PrimaryStore {
  /** Current version and value of each id (version 0: never written). */
  get(ids: readonly string[]): Versioned[];
  /** Applies writes in the order given; versions of one object increase. */
  write(writes: readonly [id: string, ts: bigint, value: Uint8Array | null][]): void;
  /**
   * Checks tables against the state and applies their writes, in order from `from`, while
   * every read is current (docs/binary-layouts.md, "Native adoption"). Optional: without
   * it, every table is merged in JavaScript.
   */
  adopt?(tables: Buffer, ends: Uint32Array, ts: BigUint64Array, from: number): AdoptRun;
}

export type { Applied } from './applied.js';

export interface PrimaryOptions {
  /** How long to wait, from delivery, for a pre-execution result before executing alone. */
  deadlineMs: number;
  /** Called once per transaction, in timestamp order, after its writes are in the store. */
  onApplied(batch: readonly Applied[]): void;
  /** Called per batch with the time spent merging and storing it (ms; waiting for results excluded). */
  onMerged?(ms: number, size: number): void;
  /** Called per batch with the time spent waiting for its pre-execution results (ms; 0 if none missing). */
  onWaited?(ms: number): void;
  /** Called when an upgrade transaction at `ts` activated `version` (after the batch is stored). */
  onUpgrade?(version: AppVersion, ts: bigint): void;
  /** Where the primary reports tables it could not use. */
  log?: (msg: string) => void;
  /**
   * Threads that execute the transactions without a table speculatively, all at once, before
   * the batch is merged in order (docs/pipeline.md, "Multi-core merge"). Absent: one thread.
   */
  threads?: MergeThreads;
  /** Where the results kept for digests are held (a flight's `expected`), shared with the node's other parts. */
  flights?: Flights;
}

export interface PrimaryStats {
  applied: number;
  adopted: number;
  reexecuted: number;
  executed: number;
  /** Results that arrived after their transaction was applied, or for unknown digests. */
  lateResults: number;
  /** Tables found malformed (at intake or by the native check): dropped, the transaction executed. */
  malformedTables: number;
  nativeVerifies: number;
  authFromTables: number;
  precompilesReused: number;
  /** Executed by the merge threads ahead of the in-order merge, and of those, kept as executed. */
  speculated: number;
  speculationsKept: number;
  /** Lone transactions executed at admission while the log synced (`executeAhead`), and of those, kept. */
  executedAhead: number;
  executionsAheadKept: number;
  /**
   * Runs of transactions merged in JavaScript. Each costs a store read and a write, and with
   * the native check one more native call, whatever its length.
   */
  mergeRuns: number;
}

/** A lone transaction's execution at admission, kept until it is ordered. */
interface Ahead {
  guess: Speculated;
  /** Digest of the app version it ran with: used only if the one at its timestamp is the same. */
  app: string;
}

/**
 * Executions ahead held at most: one per transaction admitted while nothing else was in
 * flight, dropped as it is applied or refused, so more than a handful means the log stalled.
 */
const MAX_AHEAD = 64;

export interface Offer {
  table: ReceivedTable;
  from: string;
  /** Digest of the app version the table was computed with; undefined: the one at its position. */
  app: string | undefined;
}

export class Primary {
  /**
   * Digests whose results are still useful (expected from admission or a delegate: a flight's
   * `expected`), with the result once one came and the delivery waiting for it.
   */
  private readonly flights: Flights;
  /** Delegated digests: waited for until this time (performance.now()), past the deadline. */
  private readonly waitBounds = new ChurnMap<number>();
  readonly stats: PrimaryStats = {
    applied: 0,
    adopted: 0,
    reexecuted: 0,
    executed: 0,
    lateResults: 0,
    malformedTables: 0,
    nativeVerifies: 0,
    authFromTables: 0,
    precompilesReused: 0,
    speculated: 0,
    speculationsKept: 0,
    executedAhead: 0,
    executionsAheadKept: 0,
    mergeRuns: 0,
  };
  private readonly ahead = new ChurnMap<Ahead>();

  /** Versions loaded ahead of the upgrade transaction that activates them, by digest. */
  private readonly staged = new Map<string, LoadedApp>();
  readonly versions: AppVersions;

  constructor(
    app: App | AppVersions,
    private readonly store: PrimaryStore,
    private readonly natives: Natives,
    private readonly opts: PrimaryOptions,
  ) {
    this.versions = app instanceof AppVersions ? app : new AppVersions({ app, spec: app.name, digest: '' });
    this.flights = opts.flights ?? new Flights();
  }

  /** `digest`'s flight if a result for it is expected; `f`: its flight as held, if live, spares the lookup. */
  private expected(digest: string, f?: Flight): Flight | undefined {
    const found = f?.live === true ? f : this.flights.get(digest);
    return found?.expected === true ? found : undefined;
  }

  /** The flight of a delivered transaction if a result for it is expected. */
  private expectedFor(item: Sequenced): Flight | undefined {
    return this.expected(item.tx.digest, item.flight);
  }

  /** `f` no longer expects a result (any it holds is dropped); whoever waited stops. */
  private unexpect(f: Flight): void {
    f.expected = false;
    f.offer = null;
    arrived(f);
    this.flights.release(f);
  }

  /** Makes `v` available to the upgrade transaction that will activate it. */
  stage(v: LoadedApp): void {
    this.staged.set(v.digest, v);
  }

  /** Admission tells the primary a result may come for `digest`, so it keeps the result. */
  expect(digest: string): void {
    this.expectOn(this.flights.open(digest));
  }

  /** As `expect`, on the digest's flight (live, from the registry this was made with). */
  expectOn(f: Flight): void {
    if (f.expected) return;
    f.expected = true;
    f.offer = null;
  }

  /**
   * Delegation (delegation.ts): `digest`'s result will come from a delegate, and is worth
   * waiting for until `until` (performance.now() clock) even past the deadline. A table already
   * here is dropped: the delegate's, computed in sequence order, replaces it.
   */
  expectUntil(digest: string, until: number): void {
    const f = this.flights.open(digest);
    f.expected = true;
    f.offer = null;
    this.waitBounds.set(digest, until);
  }

  /** The current version and value of `ids` in the primary's store. */
  current(ids: readonly string[]): Versioned[] {
    return this.store.get(ids);
  }

  /**
   * Executes `tx` now, against the store as it is, while the log syncs it: a transaction
   * admitted with nothing else in flight is the primary's own (no pre-executor is handed it),
   * and its execution would otherwise start only once the log delivers it. Merged when it is
   * ordered by the one rule: kept if every read is still current, executed again otherwise.
   */
  executeAhead(tx: DecodedTx): void {
    if (this.ahead.size >= MAX_AHEAD || isAdmin(tx)) return;
    const version = this.versions.active;
    const ids = tx.objects;
    const state = this.store.get(ids).map((v, i): SnapshotEntry => [ids[i] as string, v.version, v.value ?? null]);
    let guess: Speculated | undefined;
    try {
      [guess] = speculate(version.app, this.natives, [tx], [state]);
    } catch {
      // Only a head start: the in-order execution meets the same failure and reports it.
      return;
    }
    if (guess && 'table' in guess) this.ahead.set(tx.digest, { guess, app: version.digest });
  }

  /** Executions ahead held for transactions not yet ordered. */
  get pendingAhead(): number {
    return this.ahead.size;
  }

  /** Stops keeping results for `digest` (a duplicate applied long ago, or a table it cannot use). */
  forget(digest: string): void {
    this.ahead.delete(digest);
    this.waitBounds.delete(digest);
    const f = this.expected(digest);
    if (f !== undefined) this.unexpect(f);
  }

  /** A table found malformed before it reached the primary: counted; the transaction is executed here. */
  malformed(digest: string, from: string, e: TableError): void {
    this.stats.malformedTables++;
    this.opts.log?.(`primary: dropped the table of ${digest.slice(0, 12)} from ${from}: ${e.message}`);
    this.forget(digest);
  }

  /**
   * A pre-executor's result (as received, or a table an in-process pre-executor computed).
   * Kept until its transaction is applied; dropped if unexpected.
   */
  offer(digest: string, table: ReceivedTable | LookupTable, from: string, app?: string, flight?: Flight): void {
    const f = this.expected(digest, flight);
    if (f === undefined) {
      this.stats.lateResults++;
      return;
    }
    const received = 'bytes' in table ? table : receiveTable(encodeTable(table));
    f.offer ??= { table: received, from, app };
    arrived(f);
  }

  /** Merges and applies one ordered batch. */
  async deliver(batch: readonly Sequenced[]): Promise<void> {
    if (batch.length === 0) return;
    const w0 = this.opts.onWaited ? performance.now() : 0;
    // Usually every result is in: the offers found looking are the batch's, no second lookup.
    const held = this.heldOffers(batch);
    if (held === null) await this.awaitResults(batch);
    this.opts.onWaited?.(performance.now() - w0);
    const threads = this.opts.threads ? await this.speculate(this.opts.threads, batch) : null;
    const speculated = this.ahead.size > 0 ? this.takeAhead(batch, threads) : threads;
    const prev = stages.enter('merge');
    try {
      // Looked up again after any wait: results (or delegations) may have come meanwhile.
      const offers = held !== null && !this.opts.threads ? held : batch.map((item) => this.expectedFor(item)?.offer ?? undefined);
      this.applyBatch(batch, speculated, offers);
    } finally {
      stages.leave(prev);
    }
  }

  /**
   * Executes the batch's transactions that have no table on the merge threads, against the
   * state before the batch. Only up to the first administrative transaction: after it the
   * version that executes is not known until it is applied. The tables are merged in order
   * like a pre-executor's, so a snapshot made stale by an earlier transaction of the batch
   * costs a re-execution (with the signatures already checked), never a different result.
   */
  private async speculate(threads: MergeThreads, batch: readonly Sequenced[]): Promise<(Speculated | undefined)[] | null> {
    const picked: number[] = [];
    for (let k = 0; k < batch.length; k++) {
      const item = batch[k] as Sequenced;
      if (isAdmin(item.tx)) break;
      if (!this.expectedFor(item)?.offer) picked.push(k);
    }
    if (picked.length < MIN_PARALLEL_RUN) return null;
    const prev = stages.enter('merge');
    let pending: Promise<Speculated[]>;
    try {
      const txs = picked.map((k) => (batch[k] as Sequenced).tx);
      const ids = [...new Set(txs.flatMap((tx) => tx.objects))];
      const current = new Map<string, SnapshotEntry>();
      this.store.get(ids).forEach((v, i) => {
        const id = ids[i] as string;
        current.set(id, [id, v.version, v.value ?? null]);
      });
      const states = txs.map((tx) => tx.objects.map((id): SnapshotEntry => current.get(id) ?? [id, 0n, null]));
      // The primary's own share runs here, synchronously; the workers' shares meanwhile.
      pending = threads.run(this.versions.at((batch[picked[0] as number] as Sequenced).ts), txs, states);
    } finally {
      stages.leave(prev);
    }
    const results = await pending;
    const out: (Speculated | undefined)[] = new Array<Speculated | undefined>(batch.length);
    picked.forEach((k, i) => (out[k] = results[i]));
    return out;
  }

  /**
   * The batch's executions ahead (where the app version at its timestamp ran them and no table
   * came), beside the merge threads' results, taken out of the map either way.
   */
  private takeAhead(batch: readonly Sequenced[], threads: (Speculated | undefined)[] | null): (Speculated | undefined)[] {
    const out = threads ?? new Array<Speculated | undefined>(batch.length);
    batch.forEach((item, k) => {
      const { ts, tx } = item;
      const a = this.ahead.get(tx.digest);
      if (a === undefined) return;
      this.ahead.delete(tx.digest);
      if (out[k] === undefined && !this.expectedFor(item)?.offer && a.app === this.versions.at(ts).digest) out[k] = { ...a.guess, ahead: true };
    });
    return out;
  }

  /**
   * The batch's offers if none of its expected results is missing (an expected one not yet in
   * is null in the map); null otherwise.
   */
  private heldOffers(batch: readonly Sequenced[]): (Offer | undefined)[] | null {
    const out = new Array<Offer | undefined>(batch.length);
    for (let k = 0; k < batch.length; k++) {
      const f = this.expectedFor(batch[k] as Sequenced);
      if (f === undefined) continue;
      if (f.offer === null) return null;
      out[k] = f.offer;
    }
    return out;
  }

  /** Merges and stores `batch` with `offers[k]`, the result held for `batch[k]` (if any). */
  private applyBatch(batch: readonly Sequenced[], speculated: readonly (Speculated | undefined)[] | null, offers: (Offer | undefined)[]): void {
    const t0 = this.opts.onMerged ? performance.now() : 0;
    // Only delegation bounds waits: without it the map is empty and not asked per transaction.
    const bounded = this.waitBounds.size > 0;
    for (const item of batch) {
      const f = this.expectedFor(item);
      if (f !== undefined) {
        f.expected = false;
        f.offer = null;
        this.flights.release(f);
      }
      if (bounded) this.waitBounds.delete(item.tx.digest);
    }
    const applied: Applied[] = [];
    const upgrades: [AppVersion, bigint][] = [];
    const native = this.store.adopt ? this.nativeInput(batch, offers) : null;
    const noTable = (k: number) => native !== null && native.ends[k] === (k === 0 ? 0 : native.ends[k - 1]);
    let i = 0;
    while (i < batch.length) {
      let stale = false;
      let staleAfter: number | undefined;
      if (native && this.store.adopt) {
        const store = this.store as Required<PrimaryStore>;
        const from = i;
        const run = stages.time('store', () => store.adopt(native.tables, native.ends, native.ts, from));
        for (let k = i; k < i + run.adopted; k++) {
          const offer = offers[k];
          const item = batch[k];
          if (!offer || !item) throw new Error(`native adoption adopted transaction ${k}, which has no table`);
          applied.push(new AdoptedTx(item.ts, item.tx.digest, offer.from, offer.table, item.tx, item.flight));
          this.count('adopted', null);
        }
        i += run.adopted;
        if (run.stop === 'end' || i >= batch.length) break;
        stale = run.stop === 'stale';
        staleAfter = run.staleAfter;
        if (run.stop === 'malformed') {
          this.stats.malformedTables++;
          this.opts.log?.(`primary: dropped the table of ${batch[i]?.tx.digest.slice(0, 12)} from ${offers[i]?.from}: ${run.error ?? 'malformed'}`);
          offers[i] = undefined;
        }
      }
      // Merged here: this transaction and, when it has no table for the native check, those
      // after it that have none either; when it is stale, those after it the native check
      // found would most likely not be adopted either (without native adoption: the rest of
      // the batch). A run costs a store read and a write whatever its length, and under
      // contention stale transactions come in clusters.
      let j = i + 1;
      if (!native) j = batch.length;
      else if (stale) j = Math.min(batch.length, j + (staleAfter ?? 0));
      else while (j < batch.length && noTable(j)) j++;
      this.mergeRun(batch, offers, i, j, applied, upgrades, speculated);
      i = j;
    }
    this.opts.onMerged?.(performance.now() - t0, batch.length);
    for (const [v, ts] of upgrades) this.opts.onUpgrade?.(v, ts);
    this.opts.onApplied(applied);
  }

  /**
   * The batch as the native check takes it: tables concatenated, end offsets, timestamps. No
   * table for what it must not adopt: administrative transactions, tables computed by other
   * code, and everything after an upgrade in the batch (the version it activates is known
   * only once it is applied, so those are merged here, where the version is asked then).
   */
  private nativeInput(batch: readonly Sequenced[], offers: (Offer | undefined)[]): { tables: Buffer; ends: Uint32Array; ts: BigUint64Array } {
    const parts: Buffer[] = [];
    const ends = new Uint32Array(batch.length);
    const ts = new BigUint64Array(batch.length);
    let end = 0;
    let upgraded = false;
    batch.forEach(({ ts: t, tx }, k) => {
      ts[k] = t;
      const offer = offers[k];
      upgraded ||= isAdmin(tx);
      if (offer && !upgraded && this.sameCode(offer, t)) {
        parts.push(offer.table.bytes);
        end += offer.table.bytes.length;
      }
      ends[k] = end;
    });
    return { tables: joinBytes(parts, end), ends, ts };
  }

  private sameCode(offer: Offer, ts: bigint): boolean {
    return offer.app === undefined || offer.app === this.versions.at(ts).digest;
  }

  /** Merges `batch[from..to)` in JavaScript against a view of the store, then stores their writes. */
  private mergeRun(
    batch: readonly Sequenced[],
    offers: (Offer | undefined)[],
    from: number,
    to: number,
    applied: Applied[],
    upgrades: [AppVersion, bigint][],
    speculated: readonly (Speculated | undefined)[] | null,
  ): void {
    this.stats.mergeRuns++;
    const tables: (LookupTable | undefined)[] = [];
    for (let k = from; k < to; k++) tables.push(this.decoded(batch[k], offers, k));
    const overlay = new Overlay(this.store, batch.slice(from, to), tables);
    const writes: [string, bigint, Uint8Array | null][] = [];
    for (let k = from; k < to; k++) {
      const item = batch[k];
      if (!item) continue;
      const { ts, tx } = item;
      if (isAdmin(tx)) {
        upgrades.push([this.upgrade(ts, tx), ts]);
        applied.push({
          ts,
          digest: tx.digest,
          outcome: { status: 'ok', result: { app: this.versions.active.digest } },
          decision: 'executed',
          preExecutor: null,
          writes: [],
          writeCount: 0,
          conflicts: [],
          flight: item.flight,
        });
        continue;
      }
      const offer = offers[k];
      const table = tables[k - from];
      const version = this.versions.at(ts);
      const guess = table === undefined ? speculated?.[k] : undefined;
      const m =
        guess && 'table' in guess
          ? this.mergeSpeculated(version.app, tx, guess, overlay)
          : merge(version.app, tx, table, overlay, this.natives, offer === undefined || this.sameCode(offer, ts));
      this.count(m.decision, m.counts);
      overlay.apply(m.table.writes, ts);
      for (const [id, value] of m.table.writes) writes.push([id, ts, value]);
      // Adopted here as the native check would have: its effects and outcome stay in the table's bytes.
      if (m.decision === 'adopted' && offer) {
        applied.push(new AdoptedTx(ts, tx.digest, offer.from, offer.table, tx, item.flight));
        continue;
      }
      applied.push({
        ts,
        digest: tx.digest,
        outcome: m.table.outcome,
        decision: m.decision,
        preExecutor: table ? (offer?.from ?? null) : null,
        writes: m.table.writes,
        writeCount: m.table.writes.length,
        conflicts: m.conflicts,
        flight: item.flight,
      });
    }
    if (writes.length > 0) stages.time('store', () => this.store.write(writes));
  }

  /**
   * A merge thread's table, merged like a pre-executor's: kept when every read is still
   * current, otherwise executed again here with its hints. Either way the primary executed the
   * transaction, so the decision stays `executed`.
   */
  private mergeSpeculated(app: App, tx: DecodedTx, guess: { table: LookupTable; counts: ExecCounts; ahead?: true }, state: StateSource): Merged {
    const m = merge(app, tx, guess.table, state, this.natives);
    if (guess.ahead) this.stats.executedAhead++;
    else this.stats.speculated++;
    if (m.decision === 'adopted') {
      if (guess.ahead) this.stats.executionsAheadKept++;
      else this.stats.speculationsKept++;
      return { table: m.table, decision: 'executed', counts: guess.counts, conflicts: [] };
    }
    const counts = m.counts ?? guess.counts;
    return { table: m.table, decision: 'executed', counts: { ...counts, verified: counts.verified + guess.counts.verified }, conflicts: [] };
  }

  /** The whole table of `batch[k]`, or undefined (none, or malformed: then counted and dropped). */
  private decoded(item: Sequenced | undefined, offers: (Offer | undefined)[], k: number): LookupTable | undefined {
    const offer = offers[k];
    if (!offer || !item) return undefined;
    try {
      return decodeTable(offer.table.bytes, offer.table.rest);
    } catch (e) {
      if (!(e instanceof TableError)) throw e;
      this.stats.malformedTables++;
      this.opts.log?.(`primary: dropped the table of ${item.tx.digest.slice(0, 12)} from ${offer.from}: ${e.message}`);
      offers[k] = undefined;
      return undefined;
    }
  }

  /**
   * Applies an upgrade transaction: the version it names is active after `ts`. On a replay the
   * log's header already activated it there; otherwise the node staged it before submitting.
   */
  private upgrade(ts: bigint, tx: DecodedTx): AppVersion {
    const u = upgradeOf(tx);
    const known = this.versions.all.find((v) => v.after === ts);
    if (known) {
      if (known.digest !== u.digest) throw new Error(`the log upgrades to app ${u.digest} at ${ts}, but its header says ${known.digest}`);
      return known;
    }
    const staged = this.staged.get(u.digest);
    if (!staged) throw new Error(`the log upgrades to app ${u.digest} (${u.spec}) at ${ts}, which this node has not loaded`);
    this.versions.activate(staged, ts);
    this.staged.delete(u.digest);
    return this.versions.active;
  }

  private count(decision: Decision, counts: { verified: number; authFromHints: number; precompilesReused: number } | null): void {
    this.stats.applied++;
    this.stats[decision]++;
    if (counts) {
      this.stats.nativeVerifies += counts.verified;
      this.stats.authFromTables += counts.authFromHints;
      this.stats.precompilesReused += counts.precompilesReused;
    }
  }

  /**
   * Without delegation: resolves once every one of `missing` has its result (or none will
   * come), or after `ms`. One count for the batch, not a promise per transaction.
   */
  private async allArrive(missing: readonly Flight[], ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const all = new Promise<void>((resolve) => {
      let left = missing.length;
      // `arrived` clears an entry's waiter as it calls it, so each counts once.
      const one = () => {
        if (--left === 0) resolve();
      };
      for (const e of missing) e.wake = one;
      timer = setTimeout(resolve, ms);
    });
    try {
      await all;
    } finally {
      clearTimeout(timer);
      for (const e of missing) e.wake = null;
    }
  }

  /**
   * Waits, up to the deadline, for results of the batch's expected transactions; then, for
   * delegated ones still missing, up to their lease's end (a delegate answers a whole batch
   * at once, after the round trip the deadline is not sized for).
   */
  private async awaitResults(batch: readonly Sequenced[]): Promise<void> {
    const missing: [string, Flight][] = [];
    for (const item of batch) {
      const f = this.expectedFor(item);
      if (f !== undefined && f.offer === null) missing.push([item.tx.digest, f]);
    }
    if (missing.length === 0) return;
    if (this.waitBounds.size === 0) {
      if (this.opts.deadlineMs > 0)
        await this.allArrive(
          missing.map(([, e]) => e),
          this.opts.deadlineMs,
        );
      return;
    }
    if (this.opts.deadlineMs <= 0 && !missing.some(([digest]) => this.waitBounds.has(digest))) return;
    const arrivals = new Map(missing.map(([digest, e]) => [digest, new Promise<void>((resolve) => (e.wake = resolve))]));
    try {
      if (this.opts.deadlineMs > 0) await within([...arrivals.values()], this.opts.deadlineMs);
      let until = -Infinity;
      const bounded: Promise<void>[] = [];
      for (const [digest, arrival] of arrivals) {
        const bound = this.waitBounds.get(digest);
        // Arrived, or no longer expected: not waited for.
        if (bound === undefined || this.expected(digest)?.offer !== null) continue;
        until = Math.max(until, bound);
        bounded.push(arrival);
      }
      const left = until - performance.now();
      if (bounded.length > 0 && left > 0) await within(bounded, left);
    } finally {
      for (const [, e] of missing) e.wake = null;
    }
  }
}

/** A result for `e` is in, or none will come: whoever waits for it stops (once). */
function arrived(e: Flight): void {
  const w = e.wake;
  if (w === null) return;
  e.wake = null;
  w();
}

/** Resolves when every one of `arrivals` has, or after `ms`, whichever is first. */
async function within(arrivals: readonly Promise<void>[], ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  await Promise.race([Promise.all(arrivals), deadline]);
  clearTimeout(timer);
}

/**
 * A run's view of the state: prefetched from the store in one call, then updated by each
 * transaction of the run in turn, so transaction i+1 sees transaction i's writes.
 */
class Overlay implements StateSource {
  private readonly objects = new Map<string, Versioned>();

  constructor(
    private readonly store: PrimaryStore,
    run: readonly Sequenced[],
    tables: readonly (LookupTable | undefined)[],
  ) {
    const ids = new Set<string>();
    run.forEach(({ tx }, k) => {
      for (const id of tx.objects) ids.add(id);
      const table = tables[k];
      for (const [id] of table?.reads ?? []) ids.add(id);
      for (const [id] of table?.speculative ?? []) ids.add(id);
    });
    const list = [...ids];
    store.get(list).forEach((v, i) => this.objects.set(list[i] ?? '', v));
  }

  read(id: string): Versioned {
    let v = this.objects.get(id);
    if (!v) {
      // A dynamic read nobody predicted: one more store call.
      v = this.store.get([id])[0] ?? { version: 0n, value: undefined };
      this.objects.set(id, v);
    }
    return v;
  }

  apply(writes: readonly Write[], ts: bigint): void {
    for (const [id] of writes) this.read(id);
    applyWrites(this.objects, writes, ts);
  }
}
