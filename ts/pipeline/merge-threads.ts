// The primary's merge threads (issue: the overloaded primary, seed 000): worker threads that
// speculate on a batch's transactions while the primary's own thread takes a share, so
// signature checks and execution use every core. Results are tables only; the primary merges
// them in sequence order by the one rule, so the state never depends on the thread count.
import { Worker } from 'node:worker_threads';
import type { Natives } from '../app/exec.js';
import type { AppVersion } from '../app/versions.js';
import type { DecodedTx } from '../app/tx.js';
import { decode, type Data } from '../app/codec.js';
import type { MergeRequest, MergeResponse, WireSpeculated } from './merge-worker.js';
import { speculate, type SnapshotEntry, type Speculated } from './speculate.js';

/** Fewer transactions than this are not worth a message to a thread. */
export const MIN_PARALLEL_RUN = 8;

/** The compiled worker sits next to this module; from the TypeScript sources, in dist. */
const WORKER_URL = import.meta.url.endsWith('.ts')
  ? new URL('../../dist/ts/pipeline/merge-worker.js', import.meta.url)
  : new URL('./merge-worker.js', import.meta.url);

interface Pending {
  resolve: (r: Speculated[]) => void;
  count: number;
}

class MergeWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  alive = true;

  constructor(
    readonly name: string,
    private readonly log: (m: string) => void,
  ) {
    this.worker = new Worker(WORKER_URL);
    // A thread must not keep the process alive; the primary closes them when it stops.
    this.worker.unref();
    this.worker.on('message', (res: MergeResponse) => {
      const p = this.pending.get(res.id);
      if (!p) return;
      this.pending.delete(res.id);
      p.resolve('results' in res ? res.results.map(fromWire) : failed(p.count, `${this.name}: ${res.error}`));
    });
    const lost = (why: string) => {
      if (!this.alive) return;
      this.log(`primary: merge thread ${this.name} ${why}; its share goes to the primary's thread`);
      this.end(why);
    };
    this.worker.on('error', (e) => lost(`failed: ${e.message}`));
    this.worker.on('exit', (code) => lost(`exited with code ${code}`));
  }

  run(version: AppVersion, txs: readonly DecodedTx[], states: readonly SnapshotEntry[][]): Promise<Speculated[]> {
    if (!this.alive) return Promise.resolve(failed(txs.length, `${this.name} is gone`));
    const id = this.nextId++;
    const req: MergeRequest = { id, spec: version.spec, digest: version.digest, jobs: txs.map((tx, k) => ({ bytes: tx.bytes, state: states[k] ?? [] })) };
    return new Promise((resolve) => {
      this.pending.set(id, { resolve, count: txs.length });
      this.worker.postMessage(req);
    });
  }

  /** No more work: what it was asked comes back as errors, which the merge executes itself. */
  private end(why: string): void {
    this.alive = false;
    for (const p of this.pending.values()) p.resolve(failed(p.count, `${this.name} ${why}`));
    this.pending.clear();
  }

  async close(): Promise<void> {
    this.end('was closed');
    await this.worker.terminate();
  }
}

/** Bytes as this thread's own execution holds them: the codec hands back the kind it is given. */
const buf = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
const bufOrNull = (b: Uint8Array | null): Buffer | null => (b === null ? null : buf(b));

/**
 * A worker's result as if this thread had computed it: structured cloning turned every Buffer
 * into a plain Uint8Array, and values written here are read (and decoded) by the transactions
 * after it, whose results must be the very values a sequential execution gives.
 */
function fromWire(r: WireSpeculated): Speculated {
  if ('error' in r) return r;
  const table = {
    ...r.table,
    writes: r.table.writes.map(([id, v]): [string, Uint8Array | null] => [id, bufOrNull(v)]),
    dynamic: r.table.dynamic.map(([id, version, v]): [string, bigint, Uint8Array | null] => [id, version, bufOrNull(v)]),
    speculative: r.table.speculative.map(([id, v]): [string, Uint8Array | null] => [id, bufOrNull(v)]),
    precompiles: r.table.precompiles.map(([d, out]): [string, Uint8Array] => [d, buf(out)]),
  };
  if ('result' in r) return { table: { ...table, outcome: { status: 'ok', result: decode(buf(r.result)) as Data } }, counts: r.counts };
  return { table: { ...table, outcome: r.table.outcome }, counts: r.counts };
}

function failed(count: number, error: string): Speculated[] {
  return Array.from({ length: count }, () => ({ error }));
}

export class MergeThreads {
  private readonly workers: MergeWorker[] = [];
  /** Transactions sent to threads, and runs. */
  readonly stats = { runs: 0, speculated: 0, failed: 0 };
  private lastError = '';

  /** `threads` in all, the primary's own included: 1 is the sequential merge. */
  constructor(
    readonly threads: number,
    private readonly natives: Natives,
    private readonly log: (m: string) => void = (m) => console.error(m),
  ) {
    if (!Number.isInteger(threads) || threads < 1 || threads > 64) throw new RangeError(`merge threads must be an integer from 1 to 64, got ${threads}`);
    for (let i = 1; i < threads; i++) this.workers.push(new MergeWorker(`merge-${i}`, log));
  }

  /**
   * Speculates on `txs` (each with its snapshot) on every thread, in equal shares: the merge
   * that follows waits for the slowest share, so an uneven split only idles a core. A share
   * whose thread failed comes back as errors, which the merge executes itself.
   */
  async run(version: AppVersion, txs: readonly DecodedTx[], states: readonly SnapshotEntry[][]): Promise<Speculated[]> {
    const live = this.workers.filter((w) => w.alive);
    const own = Math.floor(txs.length / (live.length + 1));
    const each = Math.ceil((txs.length - own) / Math.max(1, live.length));
    const shares: Promise<Speculated[]>[] = [];
    for (let i = 0, from = own; i < live.length && from < txs.length; i++, from += each) {
      const w = live[i] as MergeWorker;
      shares.push(w.run(version, txs.slice(from, from + each), states.slice(from, from + each)));
    }
    const mine = speculate(version.app, this.natives, txs.slice(0, own), states.slice(0, own));
    const results = mine.concat(...(await Promise.all(shares)));
    this.stats.runs++;
    this.stats.speculated += txs.length;
    const failures = results.filter((r): r is { error: string } => 'error' in r);
    this.stats.failed += failures.length;
    // Once per distinct reason: a thread that cannot execute fails every run the same way.
    const reason = failures[0]?.error;
    if (reason !== undefined && reason !== this.lastError)
      this.log(`primary: a merge thread could not execute ${failures.length} transactions (executed in order instead): ${reason}`);
    this.lastError = reason ?? this.lastError;
    return results;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
  }
}
