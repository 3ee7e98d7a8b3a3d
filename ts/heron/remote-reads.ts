// A replica's reads of other partitions' objects (Heron, Algorithm 2, lines 15-21): one-sided
// `get_before(ts)` at a replica that reached phase 2, another one when it is gone or already
// past both versions, a cache of versions and prefetching ahead of delivery (S-SMR 4.3.2).
import type { Versioned } from '../app/exec.js';
import type { ReadResult } from '../store.js';
import type { Transport } from '../transport.js';
import { storeName, type Delivered } from './messages.js';
import { DEFAULT_REMOTE_CACHE_ENTRIES, RemoteCache, VersionedRemote } from './remote-cache.js';

/**
 * A peer whose request failed (gone, or silent past the transport's timeout: a stopped
 * process holds a lookup until then) is tried last for this long, so the reads after the
 * first one that met it do not each wait out the timeout again; afterwards reads spread to it
 * again.
 */
export const SUSPECT_MS = 30_000;

/**
 * The order to try `candidates` in: from the one at `start` round the list (spreading
 * readers by their index), with `suspect` ones moved to the end in the same order.
 */
export function readOrder(candidates: readonly number[], start: number, suspect: (q: number) => boolean): number[] {
  const n = candidates.length;
  const rotated = candidates.map((_, k) => candidates[(k + start) % n] ?? 0);
  return [...rotated.filter((q) => !suspect(q)), ...rotated.filter((q) => suspect(q))];
}

/** Every replica that reached phase 2 already overwrote both versions a read needs. */
export class LaggingError extends Error {}

export interface RemoteReadsOptions {
  dir: string;
  secret: Uint8Array;
  transport?: Transport;
  replicas: number;
  /** This replica's partition and index: reads start at a peer picked by the index, to spread them. */
  partition: number;
  replica: number;
  partitionOf: (id: string) => number;
  /** Remote objects kept by version (default 4096; 0 turns caching and prefetching off). */
  cacheEntries?: number;
}

export class RemoteReads {
  /** Objects read remotely, and reads tried again at another replica. */
  reads = 0;
  retries = 0;
  readonly cache: RemoteCache;
  /** Remote replicas (key `h * replicas + q`), connected on first use. */
  private readonly remotes = new Map<number, Promise<VersionedRemote>>();
  /** Over `tcp`/`verbs`: every replica's store address, by entry index (`peersAt`). */
  private addresses: string[] | null = null;
  /** Per remote partition, the replica that last served a read: prefetches go there only. */
  private readonly servedBy = new Map<number, number>();
  /** Peers (as `remotes`) with a prefetch under way: at most one each. */
  private readonly prefetching = new Set<number>();
  /** Peers (as `remotes`) whose last request failed, and when (`performance.now()`). */
  private readonly failedAt = new Map<number, number>();

  constructor(private readonly opts: RemoteReadsOptions) {
    this.cache = new RemoteCache(opts.cacheEntries ?? DEFAULT_REMOTE_CACHE_ENTRIES);
  }

  /** Peers' addresses changed (null over `shm`): later reads attach by these. */
  set peerAddresses(addresses: readonly string[] | null) {
    if (addresses !== null) this.addresses = [...addresses];
  }

  get peerAddresses(): readonly string[] | null {
    return this.addresses;
  }

  /** Replica entry `i` restarted or moved: the next read attaches to it afresh. */
  forget(i: number): void {
    this.remotes.delete(i);
  }

  /**
   * Reads `ids` as of `ts` into `into` (those it holds already are skipped), per partition from
   * a replica in `reached` (per partition of `dest`, the replicas that reached phase 2). Throws
   * `LaggingError` when every one that answered is past both versions: this replica lags.
   */
  async fetch(ids: readonly string[], ts: bigint, dest: number[], reached: number[][], into: Map<string, Versioned>): Promise<void> {
    const byPartition = new Map<number, string[]>();
    for (const id of ids) {
      if (into.has(id)) continue;
      const h = this.opts.partitionOf(id);
      byPartition.set(h, [...(byPartition.get(h) ?? []), id]);
    }
    for (const [h, group] of byPartition) {
      // Only replicas that reached phase 2 have applied everything before `ts` (Algorithm 2,
      // line 15). Start at a replica picked by our own index to spread the reads.
      const candidates = readOrder(reached[dest.indexOf(h)] ?? [], this.opts.replica, (q) => this.suspect(h, q));
      const errors: string[] = [];
      let done = false;
      let laggingAnswers = 0;
      for (const q of candidates) {
        if (done) break;
        const key = h * this.opts.replicas + q;
        try {
          const found = await this.readBefore(h, q, group, ts);
          const lagging = found.findIndex((r) => r.status === 'lagging');
          if (lagging >= 0) {
            // This replica already overwrote both versions: it is ahead of us, try another.
            errors.push(`replica ${h}.${q} has only versions ≥ ${ts} of ${group[lagging]}`);
            this.retries++;
            laggingAnswers++;
            continue;
          }
          found.forEach((r, i) => {
            const id = group[i] ?? '';
            if (r.status === 'value') into.set(id, { version: r.version, value: r.value });
            else if (r.status === 'deleted') into.set(id, { version: r.version, value: undefined });
            else into.set(id, { version: 0n, value: undefined });
          });
          this.reads += group.length;
          this.servedBy.set(h, q);
          this.failedAt.delete(key);
          done = true;
        } catch (e) {
          // The peer is gone or silent (Algorithm 2, lines 19-21): forget it and try another.
          this.remotes.delete(key);
          this.failedAt.set(key, performance.now());
          this.retries++;
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

  /** Whether replica h.q failed a request within the last `SUSPECT_MS`. */
  private suspect(h: number, q: number): boolean {
    const at = this.failedAt.get(h * this.opts.replicas + q);
    return at !== undefined && performance.now() - at < SUSPECT_MS;
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
   * valid); a prefetched version is used only when it is the one chosen. Deliveries at or
   * before `applied` are skipped.
   *
   * Only at the replica of each partition that served this replica's last read there (it was
   * alive and up to date then), and one prefetch per peer at a time: resolving is a control
   * round trip on the libuv pool, and a peer stopped mid-run would hold the pool thread until
   * it resumes; more of them would starve coordination waits. Failures are ignored: the read
   * after phase 2 reports them.
   */
  prefetch(txs: readonly Delivered[], applied: bigint): void {
    if (this.cache.capacity === 0) return;
    const { partition, replicas } = this.opts;
    const byPartition = new Map<number, Set<string>>();
    for (const d of txs) {
      if (d.dest.length < 2 || d.ts <= applied) continue;
      for (const id of d.tx?.objects ?? []) {
        const h = this.opts.partitionOf(id);
        if (h === partition || !d.dest.includes(h)) continue;
        let set = byPartition.get(h);
        if (!set) byPartition.set(h, (set = new Set()));
        set.add(id);
      }
    }
    for (const [h, set] of byPartition) {
      const q = this.servedBy.get(h);
      const key = h * replicas + (q ?? 0);
      if (q === undefined || this.prefetching.has(key) || this.suspect(h, q)) continue;
      const ids = [...set];
      this.prefetching.add(key);
      void this.peer(h, q)
        .then(async (r) => {
          await r.resolve(ids);
          r.prefetch(ids, this.cache);
        })
        .catch(() => this.failedAt.set(key, performance.now()))
        .finally(() => this.prefetching.delete(key));
    }
  }
}
