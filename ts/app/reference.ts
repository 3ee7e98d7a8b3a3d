// The reference sequential executor: the definition of correct that tests compare against
// (DESIGN invariant 1). It shares `execute` with every other member and nothing else.
import type { App } from './app.js';
import { execute, type Natives, type Outcome } from './exec.js';
import { MemoryState } from './state.js';
import type { DecodedTx } from './tx.js';

export function executeSequentially(
  app: App,
  entries: Iterable<{ ts: bigint; tx: DecodedTx }>,
  natives: Natives,
  state = new MemoryState(),
): { state: MemoryState; outcomes: Map<bigint, Outcome> } {
  const outcomes = new Map<bigint, Outcome>();
  let last = 0n;
  for (const { ts, tx } of entries) {
    if (ts <= last) throw new Error(`reference executor: timestamps must increase (${ts} after ${last})`);
    last = ts;
    const { table } = execute(app, tx, state, natives);
    state.apply(table.writes, ts);
    outcomes.set(ts, table.outcome);
  }
  return { state, outcomes };
}
