// The primary's state in the native dual-versioned store.
import type { Versioned } from '../app/exec.js';
import { stateDigest } from '../app/state.js';
import type { Store } from '../store.js';
import type { AdoptRun, PrimaryStore } from './primary.js';

export class NativePrimaryStore implements PrimaryStore {
  constructor(readonly store: Store) {}

  adopt(tables: Buffer, ends: Uint32Array, ts: BigUint64Array, from: number): AdoptRun {
    return this.store.adoptBatch(tables, ends, ts, from);
  }

  get(ids: readonly string[]): Versioned[] {
    if (ids.length === 0) return [];
    return this.store.get(ids).map((r) => {
      switch (r.status) {
        case 'value':
          return { version: r.version, value: r.value };
        case 'deleted':
          return { version: r.version, value: undefined };
        default:
          return { version: 0n, value: undefined };
      }
    });
  }

  write(writes: readonly [id: string, ts: bigint, value: Uint8Array | null][]): void {
    // Sets and deletes are separate native calls; cutting the list wherever the kind changes
    // keeps every object's versions in timestamp order.
    let i = 0;
    while (i < writes.length) {
      const isDelete = writes[i]?.[2] === null;
      let j = i;
      while (j < writes.length && (writes[j]?.[2] === null) === isDelete) j++;
      const run = writes.slice(i, j);
      if (isDelete) this.store.delete(run.map(([id, version]) => ({ id, version })));
      else this.store.set(run.map(([id, version, value]) => ({ id, version, value: value ?? new Uint8Array() })));
      i = j;
    }
  }

  digest(): string {
    const ids = this.store.ids().map((b) => b.toString('utf8'));
    const values = this.get(ids);
    return stateDigest(new Map(ids.map((id, k) => [id, values[k] ?? { version: 0n, value: undefined }])));
  }
}
