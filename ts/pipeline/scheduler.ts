// Admission scheduling: which pre-executor is handed a transaction. The node tells the
// scheduler who is in the pool, when work is sent and when results come back; the primary's
// conflict feedback tells it which objects are hot.

/**
 * - `round-robin`: members in turn, whatever their load.
 * - `load`: fewest outstanding results (ties in turn, so work spreads).
 * - `load+affinity`: the member last handed most of the transaction's declared objects, unless
 *   its outstanding count exceeds the least-loaded member's by more than `slack`.
 * - `load+affinity+hot`: as `load+affinity`, but each hot object is pinned to one member, which
 *   is handed every transaction on it (or, with `hotToPrimary`, nobody is: the primary executes).
 */
export type Policy = 'round-robin' | 'load' | 'load+affinity' | 'load+affinity+hot';

export const POLICIES: readonly Policy[] = ['round-robin', 'load', 'load+affinity', 'load+affinity+hot'];

/** The policy `remora bench elastic` shows best: highest adoption at every skew (tied at α 0). */
export const DEFAULT_POLICY: Policy = 'load+affinity+hot';

export interface SchedulerOptions {
  /** Default `load`. */
  policy?: Policy;
  /** How much busier than the least-loaded member an affine member may be (default 32). */
  slack?: number;
  /** Object ids whose last member is remembered; the oldest are forgotten first (default 100,000). */
  affinityCapacity?: number;
  /** `load+affinity+hot` only: transactions touching a hot object are not pre-executed. */
  hotToPrimary?: boolean;
}

const NONE: readonly string[] = [];

export class Scheduler {
  readonly policy: Policy;
  readonly slack: number;
  readonly affinityCapacity: number;
  readonly hotToPrimary: boolean;
  /** Members in joining order, with their outstanding results. */
  private readonly members: string[] = [];
  private readonly load = new Map<string, number>();
  private cursor = 0;
  /**
   * Object id → the member last handed a transaction declaring it, and when (a use count).
   * The order of use is kept apart, in `usedIds`/`usedAt`: moving an id to the newest end of
   * the map on every use (a delete and a set) kept its hash table rebuilding under load.
   */
  private readonly affinity = new Map<string, Affinity>();
  /** Uses, oldest first from `usedHead`; a use is current if the id's entry still has its time. */
  private usedIds: string[] = [];
  private usedAt: number[] = [];
  private usedHead = 0;
  private clock = 0;
  private hotSet: ReadonlySet<string> = new Set();
  /** Hot object id → the member every transaction on it goes to. */
  private readonly pins = new Map<string, string>();
  /** `affine`'s working space: members among a transaction's objects, and how many each holds. */
  private readonly names: string[] = [];
  private readonly counts: number[] = [];

  constructor(opts: SchedulerOptions = {}) {
    this.policy = opts.policy ?? DEFAULT_POLICY;
    this.slack = opts.slack ?? 32;
    this.affinityCapacity = opts.affinityCapacity ?? 100_000;
    this.hotToPrimary = opts.hotToPrimary ?? false;
    if (!POLICIES.includes(this.policy)) throw new RangeError(`unknown scheduling policy ${JSON.stringify(this.policy)}`);
    if (!(this.slack >= 0)) throw new RangeError(`slack must be non-negative, got ${this.slack}`);
    if (!Number.isSafeInteger(this.affinityCapacity) || this.affinityCapacity < 0) {
      throw new RangeError(`affinityCapacity must be a non-negative integer, got ${this.affinityCapacity}`);
    }
  }

  add(name: string): void {
    if (this.load.has(name)) throw new Error(`scheduler member ${name} already present`);
    this.members.push(name);
    this.load.set(name, 0);
  }

  /** A member left: its pins go (re-pinned on next use); stale affinity entries are ignored. */
  remove(name: string): void {
    const i = this.members.indexOf(name);
    if (i < 0) return;
    this.members.splice(i, 1);
    this.load.delete(name);
    if (i < this.cursor) this.cursor--;
    for (const [id, m] of this.pins) if (m === name) this.pins.delete(id);
  }

  has(name: string): boolean {
    return this.load.has(name);
  }

  /** Results `name` still owes. */
  outstanding(name: string): number {
    return this.load.get(name) ?? 0;
  }

  /** A result came back from `name`. */
  completed(name: string): void {
    const n = this.load.get(name);
    if (n !== undefined) this.load.set(name, Math.max(0, n - 1));
  }

  /** Replaces the hot set (from `ConflictFeedback.hot()`); objects no longer hot lose their pins. */
  setHot(hot: ReadonlySet<string>): void {
    this.hotSet = hot;
    for (const id of this.pins.keys()) if (!hot.has(id)) this.pins.delete(id);
  }

  get hot(): ReadonlySet<string> {
    return this.hotSet;
  }

  /** The member pinned to a hot object, if any. */
  pinnedTo(id: string): string | undefined {
    return this.pins.get(id);
  }

  /**
   * Chooses the member to hand a transaction declaring `objects`, counts it as outstanding
   * there and remembers the affinity; null when nobody should pre-execute it.
   */
  choose(objects: readonly string[]): string | null {
    if (this.members.length === 0) return null;
    let chosen: string;
    switch (this.policy) {
      case 'round-robin':
        chosen = this.next();
        break;
      case 'load':
        chosen = this.leastLoaded();
        break;
      case 'load+affinity':
        chosen = this.affine(objects);
        break;
      case 'load+affinity+hot': {
        // Most transactions touch no hot object: those allocate nothing here.
        const hot = this.hotSet.size === 0 || !this.touchesHot(objects) ? NONE : objects.filter((id) => this.hotSet.has(id));
        if (hot.length > 0 && this.hotToPrimary) return null;
        let pinned: string | undefined;
        for (const id of hot) if ((pinned = this.pins.get(id)) !== undefined) break;
        chosen = pinned ?? this.affine(objects);
        for (const id of hot) if (!this.pins.has(id)) this.pins.set(id, chosen);
        break;
      }
    }
    this.load.set(chosen, this.outstanding(chosen) + 1);
    if (this.policy === 'load+affinity' || this.policy === 'load+affinity+hot') this.remember(objects, chosen);
    return chosen;
  }

  private touchesHot(objects: readonly string[]): boolean {
    for (const id of objects) if (this.hotSet.has(id)) return true;
    return false;
  }

  /** The member at the cursor; advances it. Requires a non-empty pool. */
  private next(): string {
    if (this.cursor >= this.members.length) this.cursor = 0;
    const m = this.members[this.cursor] as string;
    this.cursor = (this.cursor + 1) % this.members.length;
    return m;
  }

  /** Fewest outstanding, scanning from the cursor so ties take turns; advances past the pick. */
  private leastLoaded(): string {
    const n = this.members.length;
    if (this.cursor >= n) this.cursor = 0;
    let best = this.cursor;
    let bestLoad = Infinity;
    for (let k = 0; k < n; k++) {
      const i = (this.cursor + k) % n;
      const l = this.outstanding(this.members[i] as string);
      if (l < bestLoad) {
        best = i;
        bestLoad = l;
      }
    }
    this.cursor = (best + 1) % n;
    return this.members[best] as string;
  }

  /** The member holding most of `objects`, if within `slack` of the least loaded; else the least loaded. */
  private affine(objects: readonly string[]): string {
    // Counted per member in the order members first appear among the objects, as a Map would
    // iterate them; in arrays kept between calls, since this runs for every transaction admitted.
    // Counted in place, not emptied: emptying an array frees its storage, and refilling it
    // allocates again, for every transaction.
    const names = this.names;
    const counts = this.counts;
    let n = 0;
    for (const id of objects) {
      const m = this.affinity.get(id)?.member;
      if (m === undefined || !this.load.has(m)) continue;
      let k = 0;
      while (k < n && names[k] !== m) k++;
      if (k === n) {
        names[n] = m;
        counts[n++] = 1;
      } else counts[k] = (counts[k] ?? 0) + 1;
    }
    let affine: string | undefined;
    let most = 0;
    for (let k = 0; k < n; k++) {
      const m = names[k] as string;
      const c = counts[k] ?? 0;
      if (c > most || (c === most && affine !== undefined && this.outstanding(m) < this.outstanding(affine))) {
        affine = m;
        most = c;
      }
    }
    if (affine === undefined) return this.leastLoaded();
    let least = Infinity;
    for (const m of this.members) least = Math.min(least, this.outstanding(m));
    return this.outstanding(affine) - least > this.slack ? this.leastLoaded() : affine;
  }

  private remember(objects: readonly string[], member: string): void {
    if (this.affinityCapacity === 0) return;
    for (const id of objects) {
      const at = ++this.clock;
      const e = this.affinity.get(id);
      if (e === undefined) this.affinity.set(id, { member, at });
      else {
        e.member = member;
        e.at = at;
      }
      this.usedIds.push(id);
      this.usedAt.push(at);
    }
    // The least recently used go first: the oldest uses that are still their id's latest.
    while (this.affinity.size > this.affinityCapacity && this.usedHead < this.usedIds.length) {
      const id = this.usedIds[this.usedHead] as string;
      const at = this.usedAt[this.usedHead] as number;
      this.usedHead++;
      if (this.affinity.get(id)?.at === at) this.affinity.delete(id);
    }
    // Uses no longer current (or already passed) are dropped once they outnumber the current
    // ones: each use is copied at most once per time its kind doubles, so amortised O(1).
    const held = this.usedIds.length - this.usedHead;
    if (held > 2 * this.affinity.size + 1024 || (this.usedHead > 1024 && this.usedHead > held)) this.compactUses();
  }

  /** Keeps only each id's latest use, oldest first. */
  private compactUses(): void {
    const ids: string[] = [];
    const ats: number[] = [];
    for (let k = this.usedHead; k < this.usedIds.length; k++) {
      const id = this.usedIds[k] as string;
      const at = this.usedAt[k] as number;
      if (this.affinity.get(id)?.at === at) {
        ids.push(id);
        ats.push(at);
      }
    }
    this.usedIds = ids;
    this.usedAt = ats;
    this.usedHead = 0;
  }
}

/** Where an object's last transaction went, and at which use. */
interface Affinity {
  member: string;
  at: number;
}
