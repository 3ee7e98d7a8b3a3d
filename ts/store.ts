// The TypeScript face of the native object store: an owner's store, and a peer's one-sided
// view of another process's store.
import { benchEntry, NativeRemote, NativeStore, type NativeCoordinator, type NativeTransfer } from './binding.js';
import type { ReadResult as NativeReadResult, RemoteStats, StoreStats, StressReport, Latency } from './binding.js';
import {
  readCheckpoint as nativeReadCheckpoint,
  readCheckpointHeader as nativeReadCheckpointHeader,
  verifyCheckpoint as nativeVerifyCheckpoint,
  type CheckpointHeaderJs as CheckpointHeader,
  type CheckpointRecords,
  type CheckpointRestored,
  type CheckpointWritten,
  type SharedCheckpoint,
} from './binding.js';
import { idBytes, timestamp, valueBytes, type ObjectId } from './ids.js';
import type { NetTransport, Transport } from './transport.js';

export type { RemoteStats, StoreStats, StressReport, Latency };
/**
 * What a read of one object found (`status`: `value`, `deleted`, `absent` or `lagging`).
 * `version` is the timestamp of the write that made it. The addon generates this union.
 */
export type ReadResult = NativeReadResult;
export type { CheckpointWritten, CheckpointRestored, CheckpointRecords, CheckpointHeader };

/** A checkpoint file's format, `ts` and meta, checked (its records are checked on restore). */
export function readCheckpointHeader(path: string): CheckpointHeader {
  return nativeReadCheckpointHeader(path);
}

/** Every record of a checkpoint file, laid flat, after checking the whole file. */
export function readCheckpoint(path: string): CheckpointRecords {
  return nativeReadCheckpoint(path);
}

/** Like `readCheckpointHeader`, but reads and checks every record too (installs nothing). */
export function verifyCheckpoint(path: string): CheckpointHeader {
  return nativeVerifyCheckpoint(path);
}

/** What one native adoption run did: adopted transactions, and why it stopped. */
export interface AdoptRun {
  adopted: number;
  stop: 'end' | 'none' | 'stale' | 'malformed';
  error: string | null;
  /** After `stale`: how many transactions after it will most likely not be adopted either (0 otherwise). */
  staleAfter: number;
}

function list<T>(items: readonly T[], what: string): readonly T[] {
  if (!Array.isArray(items satisfies unknown)) throw new TypeError(`${what} must be an array`);
  return items;
}

export interface StoreOptions {
  /** The cluster directory on this host; created private to this user (0700). */
  dir: string;
  /** This store's name: peers attach to it by name. */
  name: string;
  /** The cluster secret (at least 16 bytes), required of peers on the control channel. */
  secret: Uint8Array;
  /** Bytes per registered region (default 4 MiB). */
  regionBytes?: number;
}

export interface ServeOptions {
  transport: NetTransport;
  /** `host:port` to listen on (port 0: any free one). */
  listen: string;
}

export interface Put {
  id: ObjectId;
  value: Uint8Array;
  /** Timestamp of the writing transaction; must be after the object's current version. */
  version: bigint | number;
}

/** A dual-versioned object store owned by this process. */
export class Store {
  private constructor(private readonly native: NativeStore) {}

  static create(opts: StoreOptions): Store {
    return new Store(
      NativeStore.create({
        dir: opts.dir,
        name: opts.name,
        secret: Buffer.from(opts.secret),
        ...(opts.regionBytes === undefined ? {} : { regionBytes: opts.regionBytes }),
      }),
    );
  }

  get name(): string {
    return this.native.name;
  }

  /**
   * Also serves this store's regions over `tcp` or `verbs` (native threads answer peers; this
   * thread does nothing) until `close`. Returns the bound `host:port` peers connect to.
   */
  serve(opts: ServeOptions): string {
    return this.native.serve({ transport: opts.transport, listen: opts.listen });
  }

  /** Writes each entry as a new version, overwriting the object's older one. All or nothing. */
  set(puts: readonly Put[]): void {
    list(puts, 'set(puts)');
    this.native.setMany(
      puts.map((p) => idBytes(p.id)),
      puts.map((p) => valueBytes(p.value)),
      BigUint64Array.from(puts.map((p) => timestamp(p.version))),
    );
  }

  /** Deletes objects at the given versions (tombstones: older versions stay readable). */
  delete(dels: readonly { id: ObjectId; version: bigint | number }[]): void {
    list(dels, 'delete(entries)');
    this.native.deleteMany(
      dels.map((d) => idBytes(d.id)),
      BigUint64Array.from(dels.map((d) => timestamp(d.version))),
    );
  }

  /** The newest version of each object. */
  get(ids: readonly ObjectId[]): ReadResult[] {
    return this.native.getMany(list(ids, 'get(ids)').map(idBytes));
  }

  /**
   * The newest version of each object into the caller's buffers (`kinds[i]`: 0 absent, 1 a
   * value, 2 deleted; the value is `values[ends[i-1]..ends[i]]`): the owner's own read, as
   * `get` answers it without an object per id, for the primary's merge. Returns the value
   * bytes; when `values` is smaller, only `kinds` and `versions` were written: ask again with
   * room for that many.
   */
  currentInto(ids: readonly string[], kinds: Buffer, versions: BigUint64Array, values: Buffer, ends: Uint32Array): number {
    return this.native.currentInto(list(ids, 'currentInto(ids)') as string[], kinds, versions, values, ends);
  }

  /**
   * Sets, or with `deleted[i]` 1 deletes, each object in one call: entry i's value is
   * `values[ends[i-1]..ends[i]]`, at version `ts[i]` (arrays may be longer than `ids`). In
   * order; all or nothing.
   */
  writeFlat(ids: readonly string[], values: Buffer, ends: Uint32Array, ts: BigUint64Array, deleted: Buffer): void {
    this.native.writeFlat(list(ids, 'writeFlat(ids)') as string[], values, ends, ts, deleted);
  }

  /** For each object, the newest version older than `before` (Heron's remote-read rule). */
  getBefore(reqs: readonly { id: ObjectId; before: bigint | number }[]): ReadResult[] {
    list(reqs, 'getBefore(requests)');
    return this.native.getBeforeMany(
      reqs.map((r) => idBytes(r.id)),
      BigUint64Array.from(reqs.map((r) => timestamp(r.before, 'before'))),
    );
  }

  /**
   * Checks lookup tables (`table.v1`) against the newest versions and applies the writes of
   * each adoptable one at its timestamp, in order from `from`, until one is not adoptable
   * (docs/binary-layouts.md, "Native adoption"). `tables[ends[i-1]..ends[i]]` is
   * transaction i's table; empty: none.
   */
  adoptBatch(tables: Buffer, ends: Uint32Array, ts: BigUint64Array, from: number): AdoptRun {
    const r = this.native.adoptBatch(tables, ends, ts, from);
    return { adopted: r.adopted, stop: r.stop, error: r.stop === 'malformed' ? r.error : null, staleAfter: r.stop === 'stale' ? r.staleAfter : 0 };
  }

  /** Every object id the store holds (deleted ones until purged), as bytes. */
  ids(): Buffer[] {
    return this.native.ids();
  }

  /** Timestamps of the versions kept for `id`, newest first. */
  versions(id: ObjectId): bigint[] {
    return this.native.versions(idBytes(id));
  }

  /** Frees objects deleted before `horizon`, a timestamp every reader has passed. */
  purgeDeleted(horizon: bigint | number): number {
    return this.native.purgeDeleted(timestamp(horizon, 'horizon'));
  }

  stats(): StoreStats {
    return this.native.stats();
  }

  /**
   * Adds this store's Heron coordination region (remote-writable) and returns the native
   * coordinator that writes peers' regions and waits on this one (see `heron/coordination.ts`).
   */
  heronCoordinator(opts: {
    dir: string;
    secret: Uint8Array;
    partitions: number;
    replicas: number;
    partition: number;
    replica: number;
    peers: string[];
    region: number;
    transport?: Transport;
  }): NativeCoordinator {
    return this.native.heronCoordinator({ ...opts, secret: Buffer.from(opts.secret) });
  }

  /**
   * Adds this store's Heron state-transfer regions (requests, then landing slots; both
   * remote-writable) and returns the native side that requests, ships and waits.
   */
  heronTransfer(opts: {
    dir: string;
    secret: Uint8Array;
    replicas: number;
    replica: number;
    peers: string[];
    slotBytes: number;
    requestRegion: number;
    transport?: Transport;
  }): NativeTransfer {
    return this.native.heronTransfer({ ...opts, secret: Buffer.from(opts.secret) });
  }

  /**
   * Writes the state as of `ts` (every object's newest version at or before it, tombstones
   * included) to `path` from the libuv pool, a chunk of objects per read-lock hold, so writes
   * go on meanwhile (docs/checkpoints.md). `gone` > 0: objects were overwritten twice after
   * `ts` during the export and no file was written; retry at a newer point.
   */
  checkpoint(path: string, ts: bigint, meta: Uint8Array, opts: { chunkObjects?: number } = {}): Promise<CheckpointWritten> {
    return this.native.checkpoint(path, timestamp(ts), Buffer.from(meta.buffer, meta.byteOffset, meta.byteLength), opts.chunkObjects);
  }

  /**
   * Like `checkpoint`, but exports now, on this thread, under one read-lock hold (the caller
   * must be the writer, at `ts`: then nothing is gone); only the file is written off-thread.
   */
  checkpointHeld(path: string, ts: bigint, meta: Uint8Array): Promise<CheckpointWritten> {
    return this.native.checkpointHeld(path, timestamp(ts), Buffer.from(meta.buffer, meta.byteOffset, meta.byteLength));
  }

  /**
   * Copies the checkpoint file at `path` into a shared region of this store (`region` when it
   * is large enough, else a new one) for peers to copy one-sidedly; returns where it lies.
   */
  shareCheckpoint(path: string, region?: number): SharedCheckpoint {
    return this.native.shareCheckpoint(path, region);
  }

  /** Installs the checkpoint at `path` into this (empty) store; a damaged file changes nothing. */
  restore(path: string): CheckpointRestored {
    return this.native.restore(path);
  }

  /**
   * Torn-read stress, owner side (native thread): rewrites self-checking values. Needs an
   * addon built with the `bench` feature.
   */
  stressWrite(objects: number, seed: bigint, millis: number): Promise<number> {
    return benchEntry('stressWrite')(this.native, objects, seed, millis);
  }

  close(): void {
    this.native.close();
  }
}

/** A store of this host, through the cluster directory. */
export interface ShmRemoteOptions {
  transport?: 'shm';
  dir: string;
  /** The name of the store to read. */
  store: string;
  secret: Uint8Array;
}

/** A store served (`Store.serve`) on a network address. */
export interface NetRemoteOptions {
  transport: NetTransport;
  /** The `host:port` the owner serves on. */
  address: string;
  secret: Uint8Array;
}

export type RemoteOptions = ShmRemoteOptions | NetRemoteOptions;

const isNet = (o: RemoteOptions): o is NetRemoteOptions => o.transport === 'tcp' || o.transport === 'verbs';

/** The handle `RemoteStore.handles` gives an id the owner does not know (it reads as absent). */
export const NO_HANDLE = 0xffffffff;

export type ReadStatus = 'value' | 'deleted' | 'absent' | 'lagging';

// The native `readInto` status codes, by number (4: no room left in the buffer).
const STATUSES: readonly ReadStatus[] = ['value', 'deleted', 'absent', 'lagging'];
const NO_ROOM = 4;

/**
 * The results of one `RemoteStore.readMany` call, read by index: numbers in typed arrays and
 * values back to back in one buffer, so a batch creates no object per result. The reader
 * reuses it: it is valid until the next `readMany` on the same `RemoteStore`.
 */
export class ReadBatch {
  /** Objects in the batch. */
  count = 0;
  /** For object i: [status code, offset of its value in `buffer`, its length] at 3i. */
  meta = new Uint32Array(0);
  /** For object i: the timestamp of the version found (0n when absent or lagging). */
  versions = new BigUint64Array(0);
  /** The values, back to back. */
  buffer: Buffer = Buffer.alloc(64 * 1024);

  status(i: number): ReadStatus {
    const s = STATUSES[this.meta[3 * this.index(i)] ?? NO_ROOM];
    if (s === undefined) throw new Error(`readMany: object ${i} has no result`);
    return s;
  }

  version(i: number): bigint {
    return this.versions[this.index(i)] ?? 0n;
  }

  /** Where object i's value lies in `buffer`: `[offset, length]` (length 0 when none). */
  offset(i: number): number {
    return this.meta[3 * this.index(i) + 1] ?? 0;
  }

  length(i: number): number {
    return this.meta[3 * this.index(i) + 2] ?? 0;
  }

  /** Object i's value as a view of `buffer` (no copy), or null when it has none. */
  value(i: number): Buffer | null {
    if (this.status(i) !== 'value') return null;
    const at = this.offset(i);
    return this.buffer.subarray(at, at + this.length(i));
  }

  /** Object i as the per-object read API reports it (copies the value). */
  result(i: number): ReadResult {
    const status = this.status(i);
    switch (status) {
      case 'value':
        return { status, version: this.version(i), value: Buffer.from(this.value(i) ?? Buffer.alloc(0)) };
      case 'deleted':
        return { status, version: this.version(i) };
      default:
        return { status };
    }
  }

  private index(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) {
      throw new RangeError(`readMany: no object ${i} in a batch of ${this.count}`);
    }
    return i;
  }
}

/**
 * Another process's store, read one-sidedly: through shared memory on this host (the owner's
 * CPU does nothing), over RDMA (likewise), or over TCP (a native server thread of the owner's).
 */
export class RemoteStore {
  private readonly batch = new ReadBatch();

  private constructor(private readonly native: NativeRemote) {}

  static async connect(opts: RemoteOptions): Promise<RemoteStore> {
    const secret = Buffer.from(opts.secret);
    // An unknown transport name (from untyped callers) goes to the native side, which names
    // the valid ones.
    const native = isNet(opts)
      ? NativeRemote.connect({ transport: opts.transport, address: opts.address, secret })
      : NativeRemote.connect({ transport: opts.transport ?? 'shm', dir: opts.dir, store: opts.store, secret });
    return new RemoteStore(await native);
  }

  get transport(): Transport {
    return this.native.transport;
  }

  /** Copies `len` bytes at `offset` of the peer's region `region` one-sidedly (shared memory the peer laid out). */
  readRegion(region: number, offset: number, len: number): Buffer {
    return this.native.readRegion(region, offset, len);
  }

  /** Learns where objects live (one control round trip); later reads need none. */
  async resolve(ids: readonly ObjectId[]): Promise<void> {
    await this.native.resolve(list(ids, 'resolve(ids)').map(idBytes));
  }

  async read(ids: readonly ObjectId[]): Promise<ReadResult[]> {
    return this.native.read(list(ids, 'read(ids)').map(idBytes));
  }

  async readBefore(reqs: readonly { id: ObjectId; before: bigint | number }[]): Promise<ReadResult[]> {
    list(reqs, 'readBefore(requests)');
    return this.native.readBefore(
      reqs.map((r) => idBytes(r.id)),
      BigUint64Array.from(reqs.map((r) => timestamp(r.before, 'before'))),
    );
  }

  /** `read` on the calling thread, for resolved ids over `shm` only: a memory copy, never I/O. */
  readSync(ids: readonly ObjectId[]): ReadResult[] {
    return this.native.readSync(list(ids, 'readSync(ids)').map(idBytes));
  }

  /**
   * Resolves objects into handles for `readMany` (one control round trip for those not
   * resolved yet). An id the owner does not know gets `NO_HANDLE`; resolve it again to pick
   * it up once it exists.
   */
  handles(ids: readonly ObjectId[]): Promise<Uint32Array> {
    return this.native.handles(list(ids, 'handles(ids)').map(idBytes));
  }

  /**
   * Reads the objects behind `handles` on the calling thread, over `shm` only: the newest
   * versions, or with `before`, for each the newest version older than `before[i]` (as
   * `readBefore`). No object per result: the returned batch is reused by the next call.
   */
  readMany(handles: Uint32Array, before?: BigUint64Array): ReadBatch {
    if (!(handles instanceof Uint32Array)) throw new TypeError('readMany(handles) must be a Uint32Array');
    const b = this.batch;
    const n = handles.length;
    if (b.meta.length < 3 * n) b.meta = new Uint32Array(3 * n);
    if (b.versions.length < n) b.versions = new BigUint64Array(n);
    b.count = 0;
    for (;;) {
      this.native.readInto(handles, b.buffer, b.meta, b.versions, before);
      let needed = 0;
      for (let i = 0; i < n; i++) if (b.meta[3 * i] === NO_ROOM) needed += b.meta[3 * i + 2] ?? 0;
      if (needed === 0) break;
      // Some values did not fit: grow and read the whole batch again.
      b.buffer = Buffer.alloc(Math.max(2 * b.buffer.length, b.buffer.length + needed));
    }
    b.count = n;
    return b;
  }

  stats(): RemoteStats {
    return this.native.stats();
  }

  /**
   * Torn-read stress, reader side: verified reads of the stress objects (native loop). Needs
   * an addon built with the `bench` feature.
   */
  stressRead(objects: number, seed: bigint, reads: number): Promise<StressReport> {
    return benchEntry('stressRead')(this.native, objects, seed, reads);
  }

  /**
   * Native latency of one-sided reads of `ids`, timed one by one: through handles (the path
   * of `readMany`), or with `snapshots`, the allocating path of `read` and `readSync`. Needs
   * an addon built with the `bench` feature.
   */
  benchReads(ids: readonly ObjectId[], iterations: number, snapshots = false): Promise<Latency> {
    return benchEntry('benchReads')(this.native, ids.map(idBytes), iterations, snapshots);
  }
}
