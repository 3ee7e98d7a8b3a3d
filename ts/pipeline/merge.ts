// The primary's merge rule (seed 000, "Merge Operation"; DESIGN "Core concepts").
import type { App } from '../app/app.js';
import { execute, hintsFrom, type ExecCounts, type LookupTable, type Natives, type StateSource } from '../app/exec.js';
import type { DecodedTx } from '../app/tx.js';

/** adopted: the table's effects applied as they are; reexecuted: with the table's hints; executed: no table. */
export type Decision = 'adopted' | 'reexecuted' | 'executed';

export interface Merged {
  table: LookupTable;
  decision: Decision;
  counts: ExecCounts | null;
  /** Re-executed only: the recorded reads whose version was no longer current (the conflicts). */
  conflicts: string[];
}

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

/**
 * Merges one transaction, in sequence order, against the primary's current state. Adopting is
 * safe exactly when no read is stale: execution is a deterministic function of the
 * transaction and the values it reads, and equal versions mean equal values (speculative
 * reads, which have no version, are compared by value).
 */
export function merge(
  app: App,
  tx: DecodedTx,
  table: LookupTable | undefined,
  state: StateSource,
  natives: Natives,
  /** False when the table was computed by another version of the app: never adopted then. */
  sameCode = true,
): Merged {
  if (!table) {
    const r = execute(app, tx, state, natives);
    return { table: r.table, decision: 'executed', counts: r.counts, conflicts: [] };
  }
  if (!sameCode) {
    // Signatures, pre-compiled results and dynamic reads do not depend on the code: still hints.
    const r = execute(app, tx, state, natives, hintsFrom(table));
    return { table: r.table, decision: 'reexecuted', counts: r.counts, conflicts: [] };
  }
  // Judged before executing, against the state the table is checked on.
  const conflicts = staleReads(table, state);
  if (conflicts.length === 0) return { table, decision: 'adopted', counts: null, conflicts };
  const r = execute(app, tx, state, natives, hintsFrom(table));
  return { table: r.table, decision: 'reexecuted', counts: r.counts, conflicts };
}
