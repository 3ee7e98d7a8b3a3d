// The merge rule (seed 000, "Merge Operation"; DESIGN "Core concepts"), for the primary and for
// every Heron destination alike.
import type { App } from '../app/app.js';
import { execute, hintsFrom, type ExecCounts, type Hints, type LookupTable, type Natives, type StateSource, type Versioned } from '../app/exec.js';
import type { DecodedTx } from '../app/tx.js';

/** adopted: the table's effects applied as they are; reexecuted: with the table's hints; executed: no table. */
export type Decision = 'adopted' | 'reexecuted' | 'executed';

export interface Merged {
  table: LookupTable;
  decision: Decision;
  counts: ExecCounts | null;
  /** Re-executed only: the recorded reads whose version was no longer current (the conflicts). */
  conflicts: string[];
  /**
   * Partitioned state only: the first object the execution read that the state may not serve.
   * The outcome is then its abort, with no writes.
   */
  outside?: string;
}

/**
 * The state a merge reads. A partitioned one (a Heron destination: only the partitions among
 * the transaction's destinations ordered it, so only their objects can be read as of its
 * timestamp) says which objects it may not serve; `read` is never asked for those.
 */
export interface MergeState extends StateSource {
  /** Why this transaction may not read `id` (the reason its abort gives); undefined when it may. */
  outside?(id: string): string | undefined;
}

/** What a never-written object reads as; also what a read outside the state sees. */
const ABSENT: Versioned = { version: 0n, value: undefined };

/**
 * The recorded reads that no longer hold: a version that is not the current one, or a
 * speculative value that is not the current value. These are the conflicts.
 */
export function staleReads(table: LookupTable, state: StateSource): string[] {
  const stale = table.reads.filter(([id, version]) => state.read(id).version !== version).map(([id]) => id);
  for (const [id, value] of table.speculative) {
    const now = state.read(id).value;
    if (now === undefined ? value !== null : value === null || !Buffer.from(now).equals(value)) stale.push(id);
  }
  return stale;
}

/** Every object a table recorded reading, versioned or speculative. */
export function recordedReads(table: LookupTable): string[] {
  return [...table.reads.map(([id]) => id), ...table.speculative.map(([id]) => id)];
}

/**
 * Merges one transaction, in sequence order, against the current state. Adopting is safe
 * exactly when no read is stale: execution is a deterministic function of the transaction and
 * the values it reads, and equal versions mean equal values (speculative reads, which have no
 * version, are compared by value).
 *
 * On a partitioned state a table that read an object the state may not serve cannot be judged
 * current: it is never adopted, and those reads are its conflicts. An execution that reads such
 * an object aborts, naming the first: every destination sees the same reads as of the
 * timestamp, so every one aborts the same way.
 */
export function merge(
  app: App,
  tx: DecodedTx,
  table: LookupTable | undefined,
  state: MergeState,
  natives: Natives,
  /** False when the table was computed by another version of the app: never adopted then. */
  sameCode = true,
): Merged {
  if (!table) return run(app, tx, state, natives, {}, 'executed', []);
  // Signatures, pre-compiled results and dynamic reads do not depend on the code: still hints.
  if (!sameCode) return run(app, tx, state, natives, hintsFrom(table), 'reexecuted', []);
  // Judged before executing, against the state the table is checked on.
  const unserved = state.outside ? unservedReads(table, state) : [];
  const conflicts = unserved.length > 0 ? unserved : staleReads(table, state);
  if (conflicts.length === 0) return { table, decision: 'adopted', counts: null, conflicts };
  return run(app, tx, state, natives, hintsFrom(table), 'reexecuted', conflicts);
}

/** The recorded reads a partitioned state may not serve. */
function unservedReads(table: LookupTable, state: MergeState): string[] {
  const out: string[] = [];
  for (const [id] of table.reads) if (state.outside?.(id) !== undefined) out.push(id);
  for (const [id] of table.speculative) if (state.outside?.(id) !== undefined) out.push(id);
  return out;
}

/** Executes with `hints`; on a partitioned state, reading an object it may not serve ends in that read's abort. */
function run(app: App, tx: DecodedTx, state: MergeState, natives: Natives, hints: Hints, decision: Decision, conflicts: string[]): Merged {
  if (!state.outside) {
    const r = execute(app, tx, state, natives, hints);
    return { table: r.table, decision, counts: r.counts, conflicts };
  }
  let first: { id: string; reason: string } | undefined;
  const guarded: StateSource = {
    read: (id) => {
      const reason = state.outside?.(id);
      if (reason === undefined) return state.read(id);
      first ??= { id, reason };
      // Execution goes on as if the object were absent; its result is replaced by the abort.
      return ABSENT;
    },
  };
  const r = execute(app, tx, guarded, natives, hints);
  if (!first) return { table: r.table, decision, counts: r.counts, conflicts };
  const table: LookupTable = { ...r.table, writes: [], outcome: { status: 'aborted', reason: first.reason } };
  return { table, decision, counts: r.counts, conflicts, outside: first.id };
}
