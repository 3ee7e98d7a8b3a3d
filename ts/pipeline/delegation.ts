// Delegation when the primary is overwhelmed (seed 000, "Overwhelmed Primary"; docs/primary.md,
// "Delegation to a free pre-executor"): past a backlog, a hot subset of the state is leased to
// the least-loaded pre-executor, which is handed, batch by batch and in sequence order, every
// transaction that declares an object of that subset, after the authoritative versions of
// everything they declare.
//
// Nothing here decides a state: the delegate's tables reach the primary like any member's and
// are merged by the one rule (merge.ts). The lease only makes them likely to be adoptable.
import type { Versioned } from '../app/exec.js';
import type { DecodedTx } from '../app/tx.js';
import { isAdmin } from '../app/versions.js';
import type { Applied } from './applied.js';
import type { Sequenced } from './sequencer.js';
import type { PushedObject } from './state-update.js';

export interface DelegationOptions {
  /** Transactions ordered but not yet applied (a delivered batch's size) at which a lease is granted. */
  backlog: number;
  /** How long a lease holds; the primary waits for the delegate's tables at most until then. */
  leaseMs: number;
  /** Hot objects a lease covers at most, the hottest first. */
  maxObjects: number;
}

/** Defaults for whatever the CLI or a cluster file leaves out once delegation is on. */
export const DELEGATION_DEFAULTS: Readonly<DelegationOptions> = Object.freeze({ backlog: 1024, leaseMs: 500, maxObjects: 64 });

/** Why a lease ended: the backlog fell below half the threshold, its time ran out, or its member left. */
export type LeaseEnd = 'load' | 'expired' | 'member';
export const LEASE_ENDS: readonly LeaseEnd[] = ['load', 'expired', 'member'];

export interface Lease {
  readonly member: string;
  readonly objects: ReadonlySet<string>;
  /** When it was granted and when it expires, on the host's clock (ms). */
  readonly granted: number;
  readonly until: number;
}

export interface DelegationStats {
  /** Leases granted. */
  leases: number;
  /** Leases ended, by reason. */
  ended: Record<LeaseEnd, number>;
  /** Transactions handed to a delegate. */
  delegated: number;
  /** Of those, the ones whose delegate's table the primary adopted. */
  adopted: number;
}

/** What the delegator needs from the node. */
export interface DelegationHost {
  /** Objects conflicting often lately, hottest first. */
  hot(): readonly string[];
  /** Members that may be handed work, each with the results it has not returned. */
  members(): readonly { name: string; load: number }[];
  /** The primary's current version and value of `ids`. */
  current(ids: readonly string[]): Versioned[];
  /**
   * Hands `txs` to `member` alone, in this order, after installing `objects`; the primary
   * drops any table it holds for them, keeps the delegate's, and waits for them until `until`
   * (host clock).
   */
  hand(member: string, objects: readonly PushedObject[], txs: readonly DecodedTx[], until: number): void;
  /** The clock leases are timed on (ms). */
  now(): number;
  /** Told when a lease starts and ends (null), so admission can keep clear of it. */
  leased?(lease: Lease | null): void;
}

/**
 * Whether `tx` is delegated under a lease on `objects`: not administrative (its effect on the
 * app version is the primary's alone), and it declares a leased object. Every transaction on a
 * leased object goes to the delegate, so none the primary executes itself moves a leased
 * object under the delegate's feet; its other declared objects are sent along at their
 * current versions. Undeclared reads are allowed: the merge rule checks them.
 */
export function delegable(tx: Pick<DecodedTx, 'command' | 'objects'>, objects: ReadonlySet<string>): boolean {
  if (isAdmin(tx)) return false;
  for (const id of tx.objects) if (objects.has(id)) return true;
  return false;
}

/** The member with the fewest results not returned; ties go to the first listed. Null if none. */
export function freest(members: readonly { name: string; load: number }[]): string | null {
  let best: { name: string; load: number } | null = null;
  for (const m of members) if (best === null || m.load < best.load) best = m;
  return best?.name ?? null;
}

export class Delegator {
  readonly stats: DelegationStats = { leases: 0, ended: { load: 0, expired: 0, member: 0 }, delegated: 0, adopted: 0 };
  private current: Lease | null = null;
  /** Digests handed to a delegate and not yet applied. */
  private readonly handed = new Set<string>();

  constructor(
    readonly opts: DelegationOptions,
    private readonly host: DelegationHost,
  ) {
    const { backlog, leaseMs, maxObjects } = opts;
    if (!Number.isSafeInteger(backlog) || backlog < 1) throw new RangeError(`delegation backlog must be a positive integer, got ${backlog}`);
    if (!(leaseMs > 0) || !Number.isFinite(leaseMs)) throw new RangeError(`delegation leaseMs must be positive, got ${leaseMs}`);
    if (!Number.isSafeInteger(maxObjects) || maxObjects < 1) throw new RangeError(`delegation maxObjects must be a positive integer, got ${maxObjects}`);
  }

  /** The lease in force, if any. */
  get lease(): Lease | null {
    return this.current;
  }

  /**
   * A batch is about to be merged (the store holds the state before it): ends the lease if it
   * is due, grants one if the backlog calls for it, and hands the lease's delegable
   * transactions to its member. Call before the primary waits for the batch's tables.
   */
  batch(batch: readonly Sequenced[]): void {
    const now = this.host.now();
    const backlog = batch.length;
    this.check(now, backlog);
    if (this.current === null && backlog >= this.opts.backlog) this.grant(now);
    if (this.current !== null) this.route(this.current, batch);
  }

  /**
   * Ends the lease if its member left, its time ran out or (given a backlog) the load fell
   * below half the threshold. Also called when a member leaves between batches.
   */
  check(now = this.host.now(), backlog?: number): void {
    const lease = this.current;
    if (lease === null) return;
    if (!this.host.members().some((m) => m.name === lease.member)) this.end('member');
    else if (now >= lease.until) this.end('expired');
    else if (backlog !== undefined && backlog < this.opts.backlog / 2) this.end('load');
  }

  /** Counts the primary's decisions on delegated transactions. */
  applied(batch: readonly Applied[]): void {
    if (this.handed.size === 0) return;
    for (const a of batch) {
      if (!this.handed.delete(a.digest)) continue;
      if (a.decision === 'adopted') this.stats.adopted++;
    }
  }

  private grant(now: number): void {
    const objects = this.host.hot().slice(0, this.opts.maxObjects);
    if (objects.length === 0) return;
    const member = freest(this.host.members());
    if (member === null) return;
    this.current = { member, objects: new Set(objects), granted: now, until: now + this.opts.leaseMs };
    this.stats.leases++;
    this.host.leased?.(this.current);
  }

  private end(reason: LeaseEnd): void {
    this.stats.ended[reason]++;
    this.current = null;
    this.host.leased?.(null);
  }

  /**
   * Up to the batch's first administrative transaction (after it, the app version is known only
   * once it is applied), the delegable ones, in sequence order, preceded by
   * the current versions of the leased objects and of every object those transactions declare:
   * every batch re-installs them, so the delegate's guesses from earlier batches (and from what
   * admission handed it out of order) give way to what the primary actually applied. A table
   * that admission's member already returned is replaced too: computed out of order, it would
   * likely be stale, and merged in the delegate's place it would move a leased object the
   * delegate's later tables do not know of.
   */
  private route(lease: Lease, batch: readonly Sequenced[]): void {
    const txs: DecodedTx[] = [];
    for (const { tx } of batch) {
      if (isAdmin(tx)) break;
      if (delegable(tx, lease.objects)) txs.push(tx);
    }
    if (txs.length === 0) return;
    const ids = [...new Set([...lease.objects, ...txs.flatMap((tx) => tx.objects)])];
    const values = this.host.current(ids);
    const objects = ids.map((id, i): PushedObject => [id, values[i]?.version ?? 0n, values[i]?.value ?? null]);
    for (const tx of txs) this.handed.add(tx.digest);
    this.stats.delegated += txs.length;
    this.host.hand(lease.member, objects, txs, lease.until);
  }
}
