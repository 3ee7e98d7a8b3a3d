// Speculative execution for the multi-core merge (seed 000, "overloaded primary"): a run of a
// batch's transactions executed against a snapshot of the state taken before the batch, on
// every merge thread at once. Shared by the primary's thread and the merge workers, so both
// execute exactly the same way; what they produce is only ever a table that the primary then
// merges in sequence order by the one rule (merge.ts).
import type { App } from '../app/app.js';
import { execute, verifyAll, type ExecCounts, type LookupTable, type Natives, type StateSource, type Versioned } from '../app/exec.js';
import type { DecodedTx } from '../app/tx.js';

/** An object as the snapshot holds it: id, version (0: never written), value (null: none). */
export type SnapshotEntry = [id: string, version: bigint, value: Uint8Array | null];

/** One transaction to speculate on, as it crosses to a worker. */
export interface SpeculationJob {
  /** The transaction's `tx.v1` bytes; a worker decodes them itself. */
  bytes: Uint8Array;
  /** Every object it declares, as of the batch's start. */
  state: SnapshotEntry[];
}

/** `ahead`: executed at admission, beside the log's sync (`Primary.executeAhead`), not by the merge threads. */
export type Speculated = { table: LookupTable; counts: ExecCounts; ahead?: true } | { error: string };

/**
 * Reads answered from the snapshot; an object outside it reads as never written. That read is
 * recorded with version 0 like any other, so the in-order merge finds it stale (if the object
 * exists) and executes the transaction again on the real state: a snapshot can cost a
 * re-execution, never a wrong result.
 */
class Snapshot implements StateSource {
  private readonly objects = new Map<string, Versioned>();

  constructor(entries: readonly SnapshotEntry[]) {
    for (const [id, version, value] of entries) this.objects.set(id, { version, value: value ?? undefined });
  }

  read(id: string): Versioned {
    return this.objects.get(id) ?? { version: 0n, value: undefined };
  }
}

/**
 * Executes `txs` against their snapshots. Signatures are checked first for all of them in one
 * batched native call (the dominant cost of a transaction the primary executes alone) and
 * given to execution as hints, exactly as a pre-executor's table would give them.
 */
export function speculate(app: App, natives: Natives, txs: readonly DecodedTx[], states: readonly (readonly SnapshotEntry[])[]): Speculated[] {
  const auth = verifyAll(natives, txs);
  return txs.map((tx, k) => {
    try {
      const r = execute(app, tx, new Snapshot(states[k] ?? []), natives, { auth: auth[k] ?? [] });
      // The hinted verifications happened here, in this batch: count them as verified.
      const counts = { ...r.counts, verified: r.counts.verified + r.counts.authFromHints, authFromHints: 0 };
      return { table: r.table, counts };
    } catch (e) {
      // A command reaching for a clock or I/O: the primary's own execution reports it.
      return { error: e instanceof Error ? e.message : String(e) };
    }
  });
}
