// Maps and sets for keys that come and go with transactions (digests, ids written), on the
// node's and the pre-executors' paths.
//
// A `Map` that every transaction passes through rebuilds its hash table every few hundred
// transactions, and V8 leaves each replaced table linked to its successor (for iterators still
// walking it), entries and all. Once one table of the chain is in the old generation, every
// scavenge treats it as a root, so each later table and every value put in it survive until the
// next full collection: each transaction's objects were promoted, whatever the young
// generation's size. These maps start a new `Map` with the live entries once as many were
// deleted as it holds (and at least RENEW): a map and its tables are then rarely old enough to
// be promoted, and a chain ends with its map. docs/pipeline.md has the measurements.

const RENEW = 256;

/** The part of `Map<string, V>` the node uses. */
export class ChurnMap<V> {
  private map = new Map<string, V>();
  private deleted = 0;

  get size(): number {
    return this.map.size;
  }

  // An empty map is answered without hashing the key: most of the node's maps are empty
  // unless a rare path (delegation, optimistic replies, a late result) is in use, and the
  // common path still asks each of them about every transaction.
  get(key: string): V | undefined {
    return this.map.size === 0 ? undefined : this.map.get(key);
  }

  has(key: string): boolean {
    return this.map.size !== 0 && this.map.has(key);
  }

  set(key: string, value: V): this {
    this.map.set(key, value);
    return this;
  }

  delete(key: string): boolean {
    if (this.map.size === 0 || !this.map.delete(key)) return false;
    if (++this.deleted >= RENEW && this.deleted >= this.map.size) {
      // Copied by forEach: `new Map(map)` walks an iterator, an entry array and a result per entry.
      const next = new Map<string, V>();
      this.map.forEach((v, k) => next.set(k, v));
      this.map = next;
      this.deleted = 0;
    }
    return true;
  }

  /** The oldest entry still held. */
  oldest(): [string, V] | undefined {
    return this.map.entries().next().value;
  }

  /** The keys now, in insertion order (a copy: the map may be renewed while they are walked). */
  keys(): string[] {
    return [...this.map.keys()];
  }
}

/** The part of `Set<string>` the node uses. */
export class ChurnSet implements Iterable<string> {
  private readonly map = new ChurnMap<true>();

  get size(): number {
    return this.map.size;
  }

  has(key: string): boolean {
    return this.map.has(key);
  }

  add(key: string): this {
    this.map.set(key, true);
    return this;
  }

  delete(key: string): boolean {
    return this.map.delete(key);
  }

  /** Walks the keys as they are when the walk starts. */
  [Symbol.iterator](): IterableIterator<string> {
    return this.map.keys()[Symbol.iterator]();
  }
}
