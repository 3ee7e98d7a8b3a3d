// Admission scheduling: which pre-executor is handed a transaction. The node tells the
// scheduler who is in the pool, when work is sent and when results come back; the primary's
// conflict feedback tells it which objects are hot.

/**
 * - `round-robin`: members in turn, whatever their load.
 * - `load`: fewest outstanding results (ties in turn, so work spreads).
 * - `load+affinity`: the member last handed the most recently handed of the transaction's
 *   declared objects, unless its outstanding count exceeds the least-loaded member's by more
 *   than `slack` (`YOUNG_SLACK` times `slack` when that handing is recent enough that its
 *   write is likely still in flight).
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
  /**
   * Object ids the affinity memory is sized for (default 16,384): a table of at least twice as
   * many slots, each holding the member an id hashing there was last handed to. An id whose
   * slot a later id takes is forgotten, as the least recently used were by an exact map. A
   * memory is worth following while its write may be in flight, a few thousand ids at most;
   * a larger table only spreads each transaction's two misses over more of the cache the rest
   * of the node needs (docs/pipeline.md, "Scheduling").
   */
  affinityCapacity?: number;
  /** `load+affinity+hot` only: transactions touching a hot object are not pre-executed. */
  hotToPrimary?: boolean;
}

const NONE: readonly string[] = [];
/** How many times the slack a member may be ahead and still be handed what follows a young memory. */
export const YOUNG_SLACK = 4;

export class Scheduler {
  readonly policy: Policy;
  readonly slack: number;
  readonly affinityCapacity: number;
  readonly hotToPrimary: boolean;
  /** Members' tags in joining order. */
  private readonly members: number[] = [];
  /** Tag → results its member still owes: asked several times a transaction, so not a map of names. */
  private readonly load: number[] = [0];
  private cursor = 0;
  /**
   * Affinity memory: slot (a hash of the object id) → at `2·slot` the tag of the member last
   * handed a transaction declaring an id there (0 is nobody), at `2·slot + 1` when (`handed`
   * then). A map of ids, with its entries and the order of their use, cost ~2 µs a
   * transaction in the node (cache misses on entries the rest of the turn had evicted); the
   * table is one typed array, one miss per id at most.
   */
  private readonly affinity: Uint32Array;
  private readonly mask: number;
  /** Transactions handed out with their objects remembered, modulo 2³² (ages are differences). */
  private handed = 0;
  /** Tag → member name (index 0 unused); a member's tag is freed, and its slots cleared, when it leaves. */
  private readonly byTag: (string | undefined)[] = [undefined];
  private readonly tags = new Map<string, number>();
  private hotSet: ReadonlySet<string> = new Set();
  /** `slotOf` of each hot object: a forwarded transaction's hashes are checked against these first. */
  private hotSlots = new Set<number>();
  /** A forwarded transaction's hashes, unmasked, for that check. */
  private readonly hashes: number[] = [];
  /** Hot object id → the member every transaction on it goes to. */
  private readonly pins = new Map<string, string>();
  /** The slot of each of the transaction's objects (`hash`), for `affine` and `remember`. */
  private readonly slots: number[] = [];

  constructor(opts: SchedulerOptions = {}) {
    this.policy = opts.policy ?? DEFAULT_POLICY;
    this.slack = opts.slack ?? 32;
    this.affinityCapacity = opts.affinityCapacity ?? 16_384;
    this.hotToPrimary = opts.hotToPrimary ?? false;
    if (!POLICIES.includes(this.policy)) throw new RangeError(`unknown scheduling policy ${JSON.stringify(this.policy)}`);
    if (!(this.slack >= 0)) throw new RangeError(`slack must be non-negative, got ${this.slack}`);
    if (!Number.isSafeInteger(this.affinityCapacity) || this.affinityCapacity < 0) {
      throw new RangeError(`affinityCapacity must be a non-negative integer, got ${this.affinityCapacity}`);
    }
    const slots = this.affinityCapacity === 0 ? 0 : 2 ** Math.ceil(Math.log2(2 * this.affinityCapacity));
    this.affinity = new Uint32Array(2 * slots);
    this.mask = slots - 1;
  }

  add(name: string): void {
    if (this.tags.has(name)) throw new Error(`scheduler member ${name} already present`);
    let tag = this.byTag.indexOf(undefined, 1);
    if (tag < 0) tag = this.byTag.length;
    if (tag > 0xffff) throw new Error(`scheduler: more than ${0xffff} members`);
    this.byTag[tag] = name;
    this.tags.set(name, tag);
    this.members.push(tag);
    this.load[tag] = 0;
  }

  /** A member left: its pins go (re-pinned on next use), and what the affinity memory held for it. */
  remove(name: string): void {
    const tag = this.tags.get(name);
    if (tag === undefined) return;
    const i = this.members.indexOf(tag);
    this.members.splice(i, 1);
    this.load[tag] = 0;
    if (i < this.cursor) this.cursor--;
    for (const [id, m] of this.pins) if (m === name) this.pins.delete(id);
    // Its slots are cleared so that a member joining later can take its tag (a scan of the
    // table, once per departure).
    this.tags.delete(name);
    this.byTag[tag] = undefined;
    const table = this.affinity;
    for (let k = 0; k < table.length; k += 2) if (table[k] === tag) table[k] = 0;
  }

  has(name: string): boolean {
    return this.tags.has(name);
  }

  /** Results `name` still owes. */
  outstanding(name: string): number {
    const tag = this.tags.get(name);
    return tag === undefined ? 0 : (this.load[tag] ?? 0);
  }

  /** A result came back from `name`. */
  completed(name: string): void {
    const tag = this.tags.get(name);
    if (tag !== undefined) this.load[tag] = Math.max(0, (this.load[tag] ?? 0) - 1);
  }

  /** Replaces the hot set (from `ConflictFeedback.hot()`); objects no longer hot lose their pins. */
  setHot(hot: ReadonlySet<string>): void {
    this.hotSet = hot;
    this.hotSlots = new Set();
    for (const id of hot) this.hotSlots.add(slotOf(id));
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
   * Chooses the member to hand a transaction declaring `objects` (or `tx`'s), counts it as
   * outstanding there and remembers the affinity; null when nobody should pre-execute it. A
   * transaction whose objects' hashes came with it (`slotsInto`) is not asked for its objects
   * unless the hot set is in use.
   */
  choose(tx: readonly string[] | Schedulable): string | null {
    if (this.members.length === 0) return null;
    const affinity = this.policy === 'load+affinity' || this.policy === 'load+affinity+hot';
    const count = affinity ? this.hash(tx) : 0;
    let chosen: number;
    switch (this.policy) {
      case 'round-robin':
        chosen = this.next();
        break;
      case 'load':
        chosen = this.leastLoaded();
        break;
      case 'load+affinity':
        chosen = this.affine(count);
        break;
      case 'load+affinity+hot': {
        // Most transactions touch no hot object: those allocate nothing here.
        const objects = this.mayTouchHot(tx) ? objectsOf(tx) : NONE;
        const hot = objects === NONE || !this.touchesHot(objects) ? NONE : objects.filter((id) => this.hotSet.has(id));
        if (hot.length > 0 && this.hotToPrimary) return null;
        let pinned: string | undefined;
        for (const id of hot) if ((pinned = this.pins.get(id)) !== undefined) break;
        chosen = pinned === undefined ? this.affine(count) : (this.tags.get(pinned) ?? this.affine(count));
        const name = this.byTag[chosen] as string;
        for (const id of hot) if (!this.pins.has(id)) this.pins.set(id, name);
        break;
      }
    }
    this.load[chosen] = (this.load[chosen] ?? 0) + 1;
    if (affinity) this.remember(count, chosen);
    return this.byTag[chosen] as string;
  }

  /**
   * False when `tx` surely declares no hot object: none is hot, or its hashes came with it and
   * none is a hot object's (then its objects, which would decode its body, are not read).
   */
  private mayTouchHot(tx: readonly string[] | Schedulable): boolean {
    if (this.hotSet.size === 0) return false;
    if (isIds(tx) || !tx.slotsInto) return true;
    const n = tx.slotsInto(this.hashes, 0xffffffff);
    for (let i = 0; i < n; i++) if (this.hotSlots.has(this.hashes[i] as number)) return true;
    return false;
  }

  private touchesHot(objects: readonly string[]): boolean {
    for (const id of objects) if (this.hotSet.has(id)) return true;
    return false;
  }

  /** The member at the cursor; advances it. Requires a non-empty pool. */
  private next(): number {
    if (this.cursor >= this.members.length) this.cursor = 0;
    const m = this.members[this.cursor] as number;
    this.cursor = (this.cursor + 1) % this.members.length;
    return m;
  }

  /** Fewest outstanding, scanning from the cursor so ties take turns; advances past the pick. */
  private leastLoaded(): number {
    const n = this.members.length;
    if (this.cursor >= n) this.cursor = 0;
    let best = this.cursor;
    let bestLoad = Infinity;
    for (let k = 0; k < n; k++) {
      const i = (this.cursor + k) % n;
      const l = this.load[this.members[i] as number] ?? 0;
      if (l < bestLoad) {
        best = i;
        bestLoad = l;
      }
    }
    this.cursor = (best + 1) % n;
    return this.members[best] as number;
  }

  /**
   * The member last handed the most recently handed of `objects`, if within `slack` of the least
   * loaded (or within `YOUNG_SLACK` times it, for a young memory); else the least loaded. The
   * newest memory, not the most ids: a memory is worth following while that member may still
   * hold a write to the object not yet applied (its speculation then reads it), and the newest
   * is the likeliest to. A majority of old memories
   * sent a transaction away from a write still in flight as often as not (at α 0, 10,000
   * accounts: nearly every re-execution read an object another member had been handed).
   */
  private affine(count: number): number {
    let affine = 0;
    let youngest = Infinity;
    if (this.mask >= 0) {
      for (let i = 0; i < count; i++) {
        const at = 2 * (this.slots[i] as number);
        const tag = this.affinity[at] ?? 0;
        if (tag === 0) continue;
        const age = (this.handed - (this.affinity[at + 1] ?? 0)) >>> 0;
        if (age < youngest) {
          affine = tag;
          youngest = age;
        }
      }
    }
    if (affine === 0) return this.leastLoaded();
    const load = this.load;
    let least = Infinity;
    let owed = 0;
    for (const m of this.members) {
      const l = load[m] ?? 0;
      least = Math.min(least, l);
      owed += l;
    }
    const ahead = (load[affine] ?? 0) - least;
    if (ahead <= this.slack) return affine;
    // Past the slack, a memory younger than twice the results owed is most likely a write not
    // yet applied, which any other member would read stale: followed up to YOUNG_SLACK times
    // the slack, so a member's backlog stays bounded.
    return youngest < 2 * owed && ahead <= YOUNG_SLACK * this.slack ? affine : this.leastLoaded();
  }

  /**
   * Each object's slot in the affinity memory, into `slots`: hashed once for `affine` and
   * `remember`. Returns how many (0 without an affinity memory).
   */
  private hash(tx: readonly string[] | Schedulable): number {
    if (this.mask < 0) return 0;
    if (!isIds(tx) && tx.slotsInto) return tx.slotsInto(this.slots, this.mask);
    const objects = objectsOf(tx);
    for (let i = 0; i < objects.length; i++) this.slots[i] = slotOf(objects[i] as string) & this.mask;
    return objects.length;
  }

  /** The member handed the transaction whose `count` objects `hash` just placed. */
  private remember(count: number, tag: number): void {
    if (this.mask < 0) return;
    const stamp = this.handed;
    for (let i = 0; i < count; i++) {
      const at = 2 * (this.slots[i] as number);
      this.affinity[at] = tag;
      this.affinity[at + 1] = stamp;
    }
    this.handed = (stamp + 1) >>> 0;
  }
}

/** What the scheduler needs of a transaction: its objects, or their hashes if they came with it. */
export interface Schedulable {
  readonly objects: readonly string[];
  slotsInto?(out: number[], mask: number): number;
}

const isIds = (tx: readonly string[] | Schedulable): tx is readonly string[] => Array.isArray(tx);
const objectsOf = (tx: readonly string[] | Schedulable): readonly string[] => (isIds(tx) ? tx : tx.objects);

/**
 * The affinity table's hash of an object id: FNV-1a over its UTF-16 code units, then mixed so
 * that the low bits (the slot) depend on every unit. Exported for the tests' reference model.
 */
export function slotOf(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x45d9f3b);
  return (h ^ (h >>> 16)) >>> 0;
}
