// The reference sequential executor: the definition of correct that tests compare against
// (DESIGN invariant 1). It shares `execute` with every other member and nothing else.
import type { App } from './app.js';
import { execute, type Natives, type Outcome } from './exec.js';
import { MemoryState } from './state.js';
import type { DecodedTx } from './tx.js';
import { AppVersions, isAdmin, upgradeOf } from './versions.js';

export function executeSequentially(
  app: App | AppVersions,
  entries: Iterable<{ ts: bigint; tx: DecodedTx }>,
  natives: Natives,
  state = new MemoryState(),
): { state: MemoryState; outcomes: Map<bigint, Outcome> } {
  const versions = app instanceof AppVersions ? app : null;
  const outcomes = new Map<bigint, Outcome>();
  let last = 0n;
  for (const { ts, tx } of entries) {
    if (ts <= last) throw new Error(`reference executor: timestamps must increase (${ts} after ${last})`);
    last = ts;
    if (isAdmin(tx)) {
      // An upgrade: the versions say what runs after it; it changes no object.
      const u = upgradeOf(tx);
      if (versions && versions.at(ts + 1n).digest !== u.digest) {
        throw new Error(`reference executor: the log activates app ${u.digest} at ${ts}, which the versions given do not`);
      }
      outcomes.set(ts, { status: 'ok', result: { app: u.digest } });
      continue;
    }
    const { table } = execute(versions ? versions.at(ts).app : (app as App), tx, state, natives);
    state.apply(table.writes, ts);
    outcomes.set(ts, table.outcome);
  }
  return { state, outcomes };
}
