// The primary: consumes the ordered stream, merges pre-executed results, applies writes.
import type { App } from '../app/app.js';
import type { LookupTable, Natives, Outcome, StateSource, Versioned } from '../app/exec.js';
import type { LoadedApp } from '../app/module.js';
import { applyWrites, type Write } from '../app/state.js';
import type { DecodedTx } from '../app/tx.js';
import { AppVersions, isAdmin, upgradeOf, type AppVersion } from '../app/versions.js';
import { merge, type Decision } from './merge.js';
import type { Sequenced } from './sequencer.js';

/** Where the primary keeps its state: the native store in production, memory in unit tests. */
export interface PrimaryStore {
  /** Current version and value of each id (version 0: never written). */
  get(ids: readonly string[]): Versioned[];
  /** Applies writes in the order given; versions of one object increase. */
  write(writes: readonly [id: string, ts: bigint, value: Uint8Array | null][]): void;
}

export interface Applied {
  ts: bigint;
  digest: string;
  outcome: Outcome;
  decision: Decision;
  /** Which pre-executor's result was used (adopted or as hints), if any. */
  preExecutor: string | null;
  writes: Write[];
  /** Re-executed only: objects whose version the pre-executor saw was no longer current. */
  conflicts: string[];
}

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
}

export interface PrimaryStats {
  applied: number;
  adopted: number;
  reexecuted: number;
  executed: number;
  /** Results that arrived after their transaction was applied, or for unknown digests. */
  lateResults: number;
  nativeVerifies: number;
  authFromTables: number;
  precompilesReused: number;
}

interface Offer {
  table: LookupTable;
  from: string;
  /** Digest of the app version the table was computed with; undefined: the one at its position. */
  app: string | undefined;
}

export class Primary {
  private readonly offers = new Map<string, Offer>();
  private readonly waiting = new Map<string, () => void>();
  /** Digests whose results are still useful: sequenced, or expected from admission. */
  private readonly expected = new Set<string>();
  readonly stats: PrimaryStats = {
    applied: 0,
    adopted: 0,
    reexecuted: 0,
    executed: 0,
    lateResults: 0,
    nativeVerifies: 0,
    authFromTables: 0,
    precompilesReused: 0,
  };

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
  }

  /** Makes `v` available to the upgrade transaction that will activate it. */
  stage(v: LoadedApp): void {
    this.staged.set(v.digest, v);
  }

  /** Admission tells the primary a result may come for `digest`, so it keeps the result. */
  expect(digest: string): void {
    this.expected.add(digest);
  }

  /** The current version and value of `ids` in the primary's store. */
  current(ids: readonly string[]): Versioned[] {
    return this.store.get(ids);
  }

  /** Stops keeping results for `digest` (a duplicate of a transaction applied long ago). */
  forget(digest: string): void {
    this.expected.delete(digest);
    this.offers.delete(digest);
  }

  /** A pre-executor's result. Kept until its transaction is applied; dropped if unexpected. */
  offer(digest: string, table: LookupTable, from: string, app?: string): void {
    if (!this.expected.has(digest)) {
      this.stats.lateResults++;
      return;
    }
    if (!this.offers.has(digest)) this.offers.set(digest, { table, from, app });
    this.waiting.get(digest)?.();
  }

  /** Merges and applies one ordered batch. */
  async deliver(batch: readonly Sequenced[]): Promise<void> {
    if (batch.length === 0) return;
    const w0 = this.opts.onWaited ? performance.now() : 0;
    await this.awaitResults(batch);
    this.opts.onWaited?.(performance.now() - w0);
    const t0 = this.opts.onMerged ? performance.now() : 0;
    const overlay = new Overlay(this.store, batch, this.offers);
    const applied: Applied[] = [];
    const writes: [string, bigint, Uint8Array | null][] = [];
    const upgrades: [AppVersion, bigint][] = [];
    for (const { ts, tx } of batch) {
      if (isAdmin(tx)) {
        upgrades.push([this.upgrade(ts, tx), ts]);
        applied.push({ ts, digest: tx.digest, outcome: { status: 'ok', result: { app: this.versions.active.digest } }, decision: 'executed', preExecutor: null, writes: [], conflicts: [] });
        this.offers.delete(tx.digest);
        this.expected.delete(tx.digest);
        continue;
      }
      const offer = this.offers.get(tx.digest);
      const version = this.versions.at(ts);
      const sameCode = offer?.app === undefined || offer.app === version.digest;
      const m = merge(version.app, tx, offer?.table, overlay, this.natives, sameCode);
      this.count(m.decision, m.counts);
      overlay.apply(m.table.writes, ts);
      for (const [id, value] of m.table.writes) writes.push([id, ts, value]);
      applied.push({
        ts,
        digest: tx.digest,
        outcome: m.table.outcome,
        decision: m.decision,
        preExecutor: offer?.from ?? null,
        writes: m.table.writes,
        conflicts: m.conflicts,
      });
      this.offers.delete(tx.digest);
      this.expected.delete(tx.digest);
    }
    this.store.write(writes);
    this.opts.onMerged?.(performance.now() - t0, batch.length);
    for (const [v, ts] of upgrades) this.opts.onUpgrade?.(v, ts);
    this.opts.onApplied(applied);
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

  /** Waits, up to the deadline, for results of the batch's expected transactions. */
  private async awaitResults(batch: readonly Sequenced[]): Promise<void> {
    const missing = batch.filter(({ tx }) => this.expected.has(tx.digest) && !this.offers.has(tx.digest));
    if (missing.length === 0 || this.opts.deadlineMs <= 0) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.opts.deadlineMs)));
    const arrivals = missing.map(
      ({ tx }) => new Promise<void>((resolve) => this.waiting.set(tx.digest, resolve)),
    );
    await Promise.race([Promise.all(arrivals), deadline]);
    clearTimeout(timer);
    for (const { tx } of missing) this.waiting.delete(tx.digest);
  }
}

/**
 * The batch's view of the state: prefetched from the store in one call, then updated by each
 * transaction of the batch in turn, so transaction i+1 sees transaction i's writes.
 */
class Overlay implements StateSource {
  private readonly objects = new Map<string, Versioned>();

  constructor(
    private readonly store: PrimaryStore,
    batch: readonly Sequenced[],
    offers: ReadonlyMap<string, Offer>,
  ) {
    const ids = new Set<string>();
    for (const { tx } of batch) {
      for (const id of tx.objects) ids.add(id);
      const table = offers.get(tx.digest)?.table;
      for (const [id] of table?.reads ?? []) ids.add(id);
      for (const [id] of table?.speculative ?? []) ids.add(id);
    }
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
