// State held in memory: a pre-executor's copy, the reference executor's, and what tests compare.
import { createHash } from 'node:crypto';
import type { StateSource, Versioned } from './exec.js';

const ABSENT: Versioned = Object.freeze({ version: 0n, value: undefined });

/** One applied write: `value` null for a delete. */
export type Write = [id: string, value: Uint8Array | null];

export class MemoryState implements StateSource {
  readonly objects = new Map<string, Versioned>();

  read(id: string): Versioned {
    return this.objects.get(id) ?? ABSENT;
  }

  /** Applies a transaction's writes with version `ts`. */
  apply(writes: readonly Write[], ts: bigint): void {
    applyWrites(this.objects, writes, ts);
  }

  /** Installs an object as some other member has it, if it is newer than ours. */
  install(id: string, version: bigint, value: Uint8Array | null): void {
    if (this.read(id).version < version) this.objects.set(id, { version, value: value ?? undefined });
  }

  digest(): string {
    return stateDigest(this.objects);
  }
}

/**
 * The one rule for applying writes, shared with the primary's batch view so both agree with
 * the native store: deleting an object that never existed leaves no tombstone.
 */
export function applyWrites(objects: Map<string, Versioned>, writes: readonly Write[], ts: bigint): void {
  for (const [id, value] of writes) {
    if (value === null && (objects.get(id)?.version ?? 0n) === 0n) continue;
    objects.set(id, { version: ts, value: value ?? undefined });
  }
}

/**
 * SHA-256 over every existing object in id order: id, version, value. Deleted objects count
 * by their tombstone version, so two states agree only if they saw the same deletes too.
 */
export function stateDigest(objects: ReadonlyMap<string, Versioned>): string {
  const h = createHash('sha256');
  const len = Buffer.alloc(4);
  const ver = Buffer.alloc(8);
  for (const id of [...objects.keys()].sort()) {
    const o = objects.get(id);
    if (!o || o.version === 0n) continue;
    const idb = Buffer.from(id);
    len.writeUInt32LE(idb.length);
    h.update(len).update(idb);
    ver.writeBigUInt64LE(o.version);
    h.update(ver);
    if (o.value === undefined) h.update(Buffer.from([0]));
    else {
      len.writeUInt32LE(o.value.length);
      h.update(Buffer.from([1]))
        .update(len)
        .update(o.value);
    }
  }
  return h.digest('hex');
}
