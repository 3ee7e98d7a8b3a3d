// Checkpoints of the primary's store (docs/checkpoints.md): taken in the background every
// `every` applied transactions at a batch boundary, kept two deep, and restored on start so
// that a restart replays only the log's tail.
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { decode, encode } from '../app/codec.js';
import type { AppVersions } from '../app/versions.js';
import { asError } from '../errors.js';
import { readCheckpoint, verifyCheckpoint, type CheckpointRestored, type CheckpointWritten } from '../store.js';

/** The layout of the meta blob this module keeps in a checkpoint file. */
export const CHECKPOINT_META_FORMAT = 1;
export const DEFAULT_CHECKPOINT_EVERY = 50_000;
/** Checkpoint files kept: the newest, and one to fall back to if it turns out damaged. */
export const KEEP_CHECKPOINTS = 2;
export const CHECKPOINTS_DIR = 'checkpoints';

const SUFFIX = '.ckpt';
const NAME = /^(\d{20})\.ckpt$/;

/** What a checkpoint records beside the state: enough to resume the sequencer and check the code. */
export interface CheckpointMeta {
  format: number;
  /** The sequencer's resume point after `ts` (`Sequencer.resumePoint`). */
  resume: Uint8Array;
  /** The app versions in effect: each activated after `after`. */
  versions: { after: bigint; spec: string; digest: string }[];
}

/** What taking checkpoints needs of the store (the native `Store`; a fake in tests). */
export interface CheckpointTarget {
  checkpoint(path: string, ts: bigint, meta: Uint8Array): Promise<CheckpointWritten>;
  checkpointHeld(path: string, ts: bigint, meta: Uint8Array): Promise<CheckpointWritten>;
}

export interface CheckpointStats {
  taken: number;
  /** Timestamp of the newest checkpoint taken (0n: none yet). */
  lastTs: bigint;
  /** Wall time of the newest one, from start to the file renamed in place (ms). */
  lastMs: number;
  /** Size of the newest one's file. */
  bytes: number;
  records: number;
  /** Exports abandoned because objects were overwritten twice while they ran. */
  gone: number;
  /** Checkpoints exported under one read-lock hold, after a retry was gone too. */
  held: number;
  failed: number;
}

export interface CheckpointerOptions {
  /** The directory checkpoint files go to (created 0700). */
  dir: string;
  store: CheckpointTarget;
  /** Applied transactions between checkpoints; 0: none. */
  every: number;
  /** The sequencer's resume point after `ts`, the end of a batch it delivered. */
  resumePoint(ts: bigint): Uint8Array | null;
  versions(): AppVersions;
  /** Told of each checkpoint once its file is in place (e.g. to share it with peers). */
  onTaken?: (path: string, ts: bigint) => void;
  log?: (m: string) => void;
}

export const checkpointFile = (dir: string, ts: bigint): string => join(dir, `${ts.toString().padStart(20, '0')}${SUFFIX}`);

/** Checkpoint files in `dir`, newest first. */
export function listCheckpoints(dir: string): { ts: bigint; path: string }[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .flatMap((n) => {
      const m = NAME.exec(n);
      return m?.[1] === undefined ? [] : [{ ts: BigInt(m[1]), path: join(dir, n) }];
    })
    .sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0));
}

export function encodeMeta(meta: CheckpointMeta): Uint8Array {
  return encode({ format: meta.format, resume: meta.resume, versions: meta.versions });
}

/** The meta of a checkpoint file; throws naming what is wrong. */
export function decodeMeta(bytes: Uint8Array): CheckpointMeta {
  const raw = decode(bytes) as Record<string, unknown> | null;
  if (typeof raw !== 'object' || raw === null) throw new Error('its meta is not a map');
  if (raw['format'] !== CHECKPOINT_META_FORMAT) throw new Error(`its meta has format ${String(raw['format'])}, this build reads ${CHECKPOINT_META_FORMAT}`);
  const resume = raw['resume'];
  const versions = raw['versions'];
  if (!(resume instanceof Uint8Array)) throw new Error('its meta has no resume point');
  const ok = (v: unknown): v is { after: bigint | number; spec: string; digest: string } => {
    const r = v as Record<string, unknown> | null;
    return (
      typeof r === 'object' &&
      r !== null &&
      (typeof r['after'] === 'bigint' || typeof r['after'] === 'number') &&
      typeof r['spec'] === 'string' &&
      typeof r['digest'] === 'string'
    );
  };
  if (!Array.isArray(versions) || versions.length === 0 || !versions.every(ok)) throw new Error('its meta has no app versions');
  // A plain view (msgpack decodes bytes as a Buffer): what `resumePoint` gave, as it gave it.
  return {
    format: CHECKPOINT_META_FORMAT,
    resume: new Uint8Array(resume.buffer, resume.byteOffset, resume.byteLength),
    versions: versions.map((v) => ({ after: BigInt(v.after), spec: v.spec, digest: v.digest })),
  };
}

const short = (d: string): string => d.slice(0, 12);

/**
 * Why a checkpoint at `ts`, taken with `taken` in effect, cannot start a node whose log runs
 * `versions` (null if it can): the state must come from the same code at every point up to `ts`.
 */
export function versionMismatch(ts: bigint, taken: CheckpointMeta['versions'], versions: AppVersions): string | null {
  const upTo = versions.all.filter((v) => v.after < ts || v.after === 0n);
  const had = taken.filter((v) => v.after < ts || v.after === 0n);
  if (upTo.length !== had.length) return `it was taken with ${had.length} app versions up to ts ${ts}, the log's header has ${upTo.length}`;
  for (const [i, v] of upTo.entries()) {
    const t = had[i];
    if (t?.after !== v.after || t.digest !== v.digest) {
      return `it was taken with app ${short(t?.digest ?? '?')} after ts ${t?.after ?? '?'}, the log's header has ${short(v.digest)} after ts ${v.after}`;
    }
  }
  return null;
}

/** A checkpoint chosen to start from: the node resumes after `ts`. */
export interface RestoredCheckpoint {
  ts: bigint;
  records: number;
  resume: Uint8Array;
  path: string;
  /** Newer files passed over, each with why. */
  skipped: string[];
}

/**
 * The newest checkpoint of `dir` a node whose log runs `versions` can start from, checked
 * whole (header, meta, every record), or null: a damaged file, or one taken with other code
 * than the log's, is passed over (and said why) for the one before it. Chosen before the store
 * exists, so the sequencer can be opened with its resume point first.
 */
export function chooseCheckpoint(
  dir: string,
  versions: AppVersions,
  log: (m: string) => void = () => undefined,
  passed: ReadonlySet<string> = new Set(),
): RestoredCheckpoint | null {
  const skipped: string[] = [];
  for (const { ts, path } of listCheckpoints(dir)) {
    if (passed.has(path)) continue;
    const why = ((): string | RestoredCheckpoint => {
      try {
        const head = verifyCheckpoint(path);
        if (head.ts !== ts) return `its header says ts ${head.ts}, its name ${ts}`;
        const meta = decodeMeta(head.meta);
        return versionMismatch(ts, meta.versions, versions) ?? { ts, records: head.records, resume: meta.resume, path, skipped };
      } catch (e) {
        return e instanceof Error ? e.message : String(e);
      }
    })();
    if (typeof why !== 'string') return why;
    const line = `checkpoint ${path} skipped: ${why}`;
    skipped.push(line);
    log(line);
  }
  return null;
}

/** Installs the newest usable checkpoint of `dir` into `store` (empty), or none (see `chooseCheckpoint`). */
export function restoreLatest(
  dir: string,
  store: { restore(path: string): CheckpointRestored },
  versions: AppVersions,
  log: (m: string) => void = () => undefined,
): RestoredCheckpoint | null {
  const passed = new Set<string>();
  const skipped: string[] = [];
  for (;;) {
    const c = chooseCheckpoint(dir, versions, log, passed);
    if (c === null) return null;
    skipped.push(...c.skipped);
    try {
      // Damage is found before anything is installed, so the store is still empty after a failure.
      store.restore(c.path);
      return { ...c, skipped };
    } catch (e) {
      const line = `checkpoint ${c.path} skipped: ${e instanceof Error ? e.message : String(e)}`;
      skipped.push(line);
      log(line);
      passed.add(c.path);
    }
  }
}

/** A copy of the state kept in memory (a pre-executor's `MemoryState`). */
export interface StateCopy {
  /** Keeps `version` of `id` only if it is newer than the copy's (value null: deleted). */
  install(id: string, version: bigint, value: Uint8Array | null): void;
}

/**
 * Seeds `copy` from the newest checkpoint of `dir` that reads whole (damaged ones are passed
 * over and said why), each object only where newer than what the copy holds, so seeding after
 * the copy started following the primary is harmless. Returns the checkpoint's point and
 * objects, or null if there is none. Objects written after that point stay as old as the
 * checkpoint until the primary's state updates bring them; a read of one is a miss the primary
 * catches, as a read of an empty copy is.
 */
export function seedFromCheckpoint(
  dir: string,
  copy: StateCopy,
  log: (m: string) => void = () => undefined,
): { ts: bigint; objects: number; path: string } | null {
  for (const { path } of listCheckpoints(dir)) {
    let r;
    try {
      r = readCheckpoint(path);
    } catch (e) {
      log(`checkpoint ${path} skipped: ${e instanceof Error ? e.message : String(e)}`);
      continue;
    }
    let [id0, v0] = [0, 0];
    r.versions.forEach((version, i) => {
      const [id1, v1] = [r.idEnds[i] ?? id0, r.valueEnds[i] ?? v0];
      copy.install(r.ids.toString('utf8', id0, id1), version, r.tombstones[i] === 1 ? null : r.values.subarray(v0, v1));
      [id0, v0] = [id1, v1];
    });
    return { ts: r.ts, objects: r.versions.length, path };
  }
  return null;
}

type Attempt = 'chunked' | 'retry' | 'held';

/**
 * Takes a checkpoint every `every` applied transactions, one at a time, at a batch boundary
 * (`applied`). A background export whose state got overwritten is retried once at the next
 * boundary; if that one is overwritten too, the next is exported under one read-lock hold on
 * this thread, which pauses the merge for the export (docs/checkpoints.md gives the cost).
 */
export class Checkpointer {
  readonly stats: CheckpointStats = { taken: 0, lastTs: 0n, lastMs: 0, bytes: 0, records: 0, gone: 0, held: 0, failed: 0 };
  private sinceLast = 0;
  private running: Promise<void> | null = null;
  /** Set when an export was gone: the next boundary takes one at once, this way. */
  private next: Attempt | null = null;
  private closed = false;

  constructor(private readonly opts: CheckpointerOptions) {
    if (opts.every > 0) {
      mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
      // A crash mid-write leaves a temp file; nothing else writes here.
      for (const n of readdirSync(opts.dir)) if (n.includes(`${SUFFIX}.tmp-`)) rmSync(join(opts.dir, n), { force: true });
    }
  }

  /** The primary applied `count` transactions, the last at `endTs`: the end of a delivered batch. */
  applied(endTs: bigint, count: number): void {
    if (this.opts.every <= 0 || this.closed) return;
    this.sinceLast += count;
    if (this.running || (this.next === null && this.sinceLast < this.opts.every)) return;
    const resume = this.opts.resumePoint(endTs);
    if (resume === null) return;
    const attempt = this.next ?? 'chunked';
    this.next = null;
    this.sinceLast = 0;
    const versions = this.opts.versions().all.map((v) => ({ after: v.after, spec: v.spec, digest: v.digest }));
    const meta = encodeMeta({ format: CHECKPOINT_META_FORMAT, resume, versions });
    const path = checkpointFile(this.opts.dir, endTs);
    const t0 = performance.now();
    let writing: Promise<CheckpointWritten>;
    try {
      writing = attempt === 'held' ? this.opts.store.checkpointHeld(path, endTs, meta) : this.opts.store.checkpoint(path, endTs, meta);
    } catch (e) {
      writing = Promise.reject(asError(e));
    }
    this.running = writing
      .then(
        (w) => this.done(attempt, endTs, w, performance.now() - t0),
        (e: unknown) => {
          this.stats.failed++;
          this.say(`checkpoint at ts ${endTs} failed: ${e instanceof Error ? e.message : String(e)}`);
        },
      )
      .finally(() => (this.running = null));
  }

  private done(attempt: Attempt, ts: bigint, w: CheckpointWritten, ms: number): void {
    if (w.gone > 0) {
      this.stats.gone++;
      this.next = attempt === 'chunked' ? 'retry' : 'held';
      this.say(
        `checkpoint at ts ${ts}: ${w.gone} objects were overwritten twice during the export; ${this.next === 'retry' ? 'retrying at the next batch' : 'exporting the next under one lock hold'}`,
      );
      return;
    }
    if (attempt === 'held') this.stats.held++;
    Object.assign(this.stats, { taken: this.stats.taken + 1, lastTs: ts, lastMs: ms, bytes: w.bytes, records: w.records });
    for (const old of listCheckpoints(this.opts.dir).slice(KEEP_CHECKPOINTS)) rmSync(old.path, { force: true });
    this.opts.onTaken?.(checkpointFile(this.opts.dir, ts), ts);
  }

  private say(m: string): void {
    (this.opts.log ?? ((line: string) => process.stderr.write(`${line}\n`)))(m);
  }

  /** Waits for the checkpoint being written, if any; takes no more. */
  async close(): Promise<void> {
    this.closed = true;
    await this.running;
  }
}
