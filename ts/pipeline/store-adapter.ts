// The primary's state in the native dual-versioned store.
import type { Versioned } from '../app/exec.js';
import { stateDigest } from '../app/state.js';
import type { Store } from '../store.js';
import type { AdoptRun, PrimaryStore } from './primary.js';
import { copyBytes } from '../bytes.js';

/** `Store.currentInto`'s kinds. */
const VALUE = 1;
const DELETED = 2;

export class NativePrimaryStore implements PrimaryStore {
  // `get`'s answers land here and `write`'s entries go from here, reused from call to call:
  // grown, never shrunk.
  private kinds = Buffer.allocUnsafe(64);
  private versions = new BigUint64Array(64);
  private ends = new Uint32Array(64);
  private values = Buffer.allocUnsafe(64 * 1024);

  constructor(readonly store: Store) {}

  adopt(tables: Buffer, ends: Uint32Array, ts: BigUint64Array, from: number): AdoptRun {
    return this.store.adoptBatch(tables, ends, ts, from);
  }

  get(ids: readonly string[]): Versioned[] {
    const n = ids.length;
    if (n === 0) return [];
    if (n > this.kinds.length) this.grow(n);
    const bytes = this.store.currentInto(ids, this.kinds, this.versions, this.values, this.ends);
    if (bytes > this.values.length) {
      // Asked again with room: nothing changed in between (the call is synchronous).
      this.values = Buffer.allocUnsafe(Math.max(bytes, 2 * this.values.length));
      this.store.currentInto(ids, this.kinds, this.versions, this.values, this.ends);
    }
    const { kinds, versions, values, ends } = this;
    const out = new Array<Versioned>(n);
    for (let i = 0; i < n; i++) {
      const kind = kinds[i];
      if (kind === VALUE) {
        // Copied out of the scratch buffer the next call overwrites (small ones from the pool).
        const start = i === 0 ? 0 : (ends[i - 1] as number);
        const end = ends[i] as number;
        const value = Buffer.allocUnsafe(end - start);
        copyBytes(values, start, end, value, 0);
        out[i] = { version: versions[i] as bigint, value };
      } else out[i] = { version: kind === DELETED ? (versions[i] as bigint) : 0n, value: undefined };
    }
    return out;
  }

  private grow(n: number): void {
    const size = Math.max(n, 2 * this.kinds.length);
    this.kinds = Buffer.allocUnsafe(size);
    this.versions = new BigUint64Array(size);
    this.ends = new Uint32Array(size);
  }

  write(writes: readonly [id: string, ts: bigint, value: Uint8Array | null][]): void {
    const n = writes.length;
    if (n === 0) return;
    if (n > this.kinds.length) this.grow(n);
    const ids = new Array<string>(n);
    // The arrays `get` answers in, reused: `kinds` says which entries delete.
    const { kinds: deleted, versions: ts, ends } = this;
    let end = 0;
    for (let i = 0; i < n; i++) {
      const [id, version, value] = writes[i] as [string, bigint, Uint8Array | null];
      ids[i] = id;
      ts[i] = version;
      deleted[i] = value === null ? 1 : 0;
      end += value?.length ?? 0;
      ends[i] = end;
    }
    if (end > this.values.length) this.values = Buffer.allocUnsafe(Math.max(end, 2 * this.values.length));
    const values = this.values;
    for (let i = 0; i < n; i++) {
      const value = (writes[i] as [string, bigint, Uint8Array | null])[2];
      if (value !== null) copyBytes(value, 0, value.length, values, i === 0 ? 0 : (ends[i - 1] as number));
    }
    this.store.writeFlat(ids, values, ends, ts, deleted);
  }

  digest(): string {
    const ids = this.store.ids().map((b) => b.toString('utf8'));
    const values = this.get(ids);
    return stateDigest(new Map(ids.map((id, k) => [id, values[k] ?? { version: 0n, value: undefined }])));
  }
}
