// Remote objects cached at a replica by version (S-SMR's conservative caching, checked
// one-sidedly). A version of an object is immutable once written: every replica of its
// partition writes the same value at the same timestamp, and a later write gets a later one.
// So a copy of the version of `id` written at `v` answers any read whose chosen version is
// `v`; a read checks only the chosen version's timestamp (no value copied) and copies the
// value only when it is another version (the copy then replaces the entry).
import { NativeRemote } from '../binding.js';
import { idBytes } from '../ids.js';
import { NO_HANDLE, type ReadResult } from '../store.js';
import type { NetTransport } from '../transport.js';

/** Entries a replica keeps by default (`remoteCacheEntries`; 0 turns the cache off). */
export const DEFAULT_REMOTE_CACHE_ENTRIES = 4096;

/** `readUnlessCurrent`'s status codes (`meta[3i]`). */
const VALUE = 0;
const DELETED = 1;
const ABSENT = 2;
const LAGGING = 3;
const NO_ROOM = 4;
const CURRENT = 5;

/** The newest version, as a bound: no timestamp reaches it. */
const NEWEST = 0xffff_ffff_ffff_ffffn;

/** What the cache counted. */
export interface RemoteCacheCounters {
  /** Reads answered from the cache: the version chosen was the one held. */
  hits: number;
  /** Reads of objects the cache did not hold (the value was read). */
  misses: number;
  /** Reads that found another version than the one held (the value was read, the entry replaced). */
  stale: number;
  /** Entries filled ahead of their transaction's reads (delivery-time prefetch). */
  prefetched: number;
}

interface Entry {
  ts: bigint;
  /** `undefined`: a tombstone (the object was deleted at `ts`). */
  value: Buffer | undefined;
  /** Used since it last came up for eviction (second chance). */
  used: boolean;
}

/**
 * A bounded map id -> (version timestamp, value or tombstone). Eviction is the clock's second
 * chance over insertion order: the oldest entry goes unless it was used since it last came up,
 * then it moves to the back. A hit only sets a flag (no reordering per read).
 * Ids are unique across partitions, so the partition is implied by the id.
 */
export class RemoteCache {
  private readonly entries = new Map<string, Entry>();
  readonly counters: RemoteCacheCounters = { hits: 0, misses: 0, stale: 0, prefetched: 0 };

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError(`remoteCacheEntries must be a non-negative integer, got ${capacity}`);
  }

  get size(): number {
    return this.entries.size;
  }

  /** The entry held for `id`, without counting or touching it. */
  peek(id: string): Entry | undefined {
    return this.entries.get(id);
  }

  /** The timestamp held for `id`, 0n when none (no version has timestamp 0). */
  known(id: string): bigint {
    return this.capacity === 0 ? 0n : (this.entries.get(id)?.ts ?? 0n);
  }

  /** The entry held for `id`, marked used (it gets a second chance at eviction). */
  touch(id: string): Entry | undefined {
    const e = this.entries.get(id);
    if (e) e.used = true;
    return e;
  }

  put(id: string, ts: bigint, value: Buffer | undefined): void {
    if (this.capacity === 0) return;
    const held = this.entries.get(id);
    if (held) {
      [held.ts, held.value, held.used] = [ts, value, true];
      return;
    }
    // Each pass over an entry clears its flag, so this ends within one round of the clock.
    while (this.entries.size >= this.capacity) {
      const oldest = this.entries.entries().next();
      if (oldest.done) break;
      const [k, e] = oldest.value;
      this.entries.delete(k);
      if (e.used) {
        e.used = false;
        this.entries.set(k, e);
      }
    }
    this.entries.set(id, { ts, value, used: false });
  }
}

/** A peer's store in the cluster directory (`shm`), or served at an address (`tcp`, `verbs`). */
export type VersionedRemoteOptions = { dir: string; store: string; secret: Uint8Array } | { transport: NetTransport; address: string; secret: Uint8Array };

/** A version a check found: what `get_before` would choose, without its value. */
export type VersionFound =
  { status: 'value'; version: bigint; length: number } | { status: 'deleted'; version: bigint } | { status: 'absent' } | { status: 'lagging' };

/**
 * One peer store read one-sidedly (over `shm`, or `tcp`/`verbs` blocking the thread for the
 * round trips) through handles, by a reader holding a
 * `RemoteCache`: a batch of reads is one native call that checks every object's chosen
 * version and copies only the values the cache does not hold.
 */
export class VersionedRemote {
  private readonly handles = new Map<string, number>();
  /** Per batch, reused: handles, bounds and held timestamps in; statuses and timestamps out. */
  private hs = new Uint32Array(0);
  private bounds = new BigUint64Array(0);
  private known = new BigUint64Array(0);
  private meta = new Uint32Array(0);
  private ts = new BigUint64Array(0);
  private out: Buffer = Buffer.alloc(16 * 1024);

  private constructor(private readonly native: NativeRemote) {}

  static async connect(opts: VersionedRemoteOptions): Promise<VersionedRemote> {
    const secret = Buffer.from(opts.secret);
    return new VersionedRemote(
      await NativeRemote.connect(
        'address' in opts ? { transport: opts.transport, address: opts.address, secret } : { transport: 'shm', dir: opts.dir, store: opts.store, secret },
      ),
    );
  }

  /** Resolves the ids without a handle yet (one control round trip); unknown ids stay so. */
  async resolve(ids: readonly string[]): Promise<void> {
    const missing = [...new Set(ids.filter((id) => !this.handles.has(id)))];
    if (missing.length === 0) return;
    const got = await this.native.handles(missing.map(idBytes));
    // An id the owner does not hold yet reads as absent, and is resolved again next time.
    missing.forEach((id, i) => {
      const h = got[i] ?? NO_HANDLE;
      if (h !== NO_HANDLE) this.handles.set(id, h);
    });
  }

  /**
   * Lays out a batch of `ids`: their handles, the bound `before` for each and, with `cache`,
   * the timestamp it holds for each (0n: none). Returns views of the reused arrays.
   */
  private batch(ids: readonly string[], before: bigint, cache?: RemoteCache): [Uint32Array, BigUint64Array, BigUint64Array] {
    const n = ids.length;
    if (this.hs.length < n) {
      const size = Math.max(n, 2 * this.hs.length, 16);
      [this.hs, this.bounds, this.known] = [new Uint32Array(size), new BigUint64Array(size), new BigUint64Array(size)];
      [this.meta, this.ts] = [new Uint32Array(3 * size), new BigUint64Array(size)];
    }
    for (let i = 0; i < n; i++) {
      const id = ids[i] ?? '';
      this.hs[i] = this.handles.get(id) ?? NO_HANDLE;
      this.bounds[i] = before;
      this.known[i] = cache ? cache.known(id) : 0n;
    }
    return [this.hs.subarray(0, n), this.bounds.subarray(0, n), this.known.subarray(0, n)];
  }

  /** The version `get_before(before)` (or the newest) would choose for each id, no value copied. */
  versions(ids: readonly string[], before?: bigint): VersionFound[] {
    const [handles, bounds] = this.batch(ids, before ?? NEWEST);
    this.native.versionsInto(handles, this.meta, this.ts, before === undefined ? undefined : bounds);
    return ids.map((_, i): VersionFound => {
      const status = this.meta[3 * i];
      const version = this.ts[i] ?? 0n;
      if (status === VALUE) return { status: 'value', version, length: this.meta[3 * i + 2] ?? 0 };
      if (status === DELETED) return { status: 'deleted', version };
      if (status === LAGGING) return { status: 'lagging' };
      return { status: 'absent' };
    });
  }

  /**
   * Reads `ids` into `this.meta`, `this.ts`, `this.out`: for each, the version before
   * `before`, unless it is the value `cache` holds. Grows `out` until every value fits.
   */
  private readInto(ids: readonly string[], before: bigint, cache?: RemoteCache): void {
    const n = ids.length;
    const [handles, bounds, known] = this.batch(ids, before, cache);
    for (;;) {
      this.native.readUnlessCurrent(handles, bounds, known, this.out, this.meta, this.ts);
      let needed = 0;
      for (let i = 0; i < n; i++) if (this.meta[3 * i] === NO_ROOM) needed += this.meta[3 * i + 2] ?? 0;
      if (needed === 0) return;
      this.out = Buffer.alloc(Math.max(2 * this.out.length, this.out.length + needed));
    }
  }

  /**
   * `get_before(before)` of `ids`, through `cache`. An answer with any object `lagging` is
   * returned as it is and changes neither the cache nor its counters (the caller asks
   * another replica). Otherwise each value read replaces its entry, and each object is
   * counted: a hit (the version held was chosen), stale (another was), or a miss (none held).
   * Absent objects are not counted.
   */
  readBefore(ids: readonly string[], before: bigint, cache: RemoteCache): ReadResult[] {
    const n = ids.length;
    this.readInto(ids, before, cache);
    const results: ReadResult[] = [];
    let lagging = false;
    for (let i = 0; i < n; i++) {
      const id = ids[i] ?? '';
      const status = this.meta[3 * i];
      const version = this.ts[i] ?? 0n;
      switch (status) {
        case CURRENT: {
          const e = cache.peek(id);
          // The native side answered "current" only for the timestamp we passed, which is the
          // entry's: nothing runs between.
          if (e?.value === undefined || e.ts !== version) throw new Error(`remote cache: ${id} answered current at ${version} but holds ${e?.ts ?? 'nothing'}`);
          results.push({ status: 'value', version, value: e.value });
          break;
        }
        case VALUE: {
          const at = this.meta[3 * i + 1] ?? 0;
          results.push({ status: 'value', version, value: Buffer.from(this.out.subarray(at, at + (this.meta[3 * i + 2] ?? 0))) });
          break;
        }
        case DELETED:
          results.push({ status: 'deleted', version });
          break;
        case LAGGING:
          lagging = true;
          results.push({ status: 'lagging' });
          break;
        case ABSENT:
          results.push({ status: 'absent' });
          break;
        default:
          throw new Error(`readUnlessCurrent returned an unknown status ${String(status)} for ${id}`);
      }
    }
    if (lagging || cache.capacity === 0) return results;
    results.forEach((r, i) => {
      const id = ids[i] ?? '';
      if (r.status !== 'value' && r.status !== 'deleted') return;
      const held = cache.touch(id);
      const value = r.status === 'value' ? r.value : undefined;
      if (held && held.ts === r.version) {
        cache.counters.hits++;
        return;
      }
      if (held) cache.counters.stale++;
      else cache.counters.misses++;
      cache.put(id, r.version, value);
    });
    return results;
  }

  /**
   * Fills `cache` with the newest versions of the ids it does not hold (any version is safe
   * to hold: a read uses it only when it is the version chosen). Returns how many it filled.
   */
  prefetch(ids: readonly string[], cache: RemoteCache): number {
    const want = ids.filter((id) => this.handles.has(id) && cache.peek(id) === undefined);
    if (want.length === 0 || cache.capacity === 0) return 0;
    const n = want.length;
    this.readInto(want, NEWEST);
    let filled = 0;
    for (let i = 0; i < n; i++) {
      const id = want[i] ?? '';
      const version = this.ts[i] ?? 0n;
      if (this.meta[3 * i] === VALUE) {
        const at = this.meta[3 * i + 1] ?? 0;
        cache.put(id, version, Buffer.from(this.out.subarray(at, at + (this.meta[3 * i + 2] ?? 0))));
        filled++;
      } else if (this.meta[3 * i] === DELETED) {
        cache.put(id, version, undefined);
        filled++;
      }
    }
    cache.counters.prefetched += filled;
    return filled;
  }
}
