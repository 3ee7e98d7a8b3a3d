// The built-in `work` as an app module (`--app work`), like any user's app; its `workload`
// export is what `remora check --app work` and `remora bench app --app work` drive it with.
import { builtinApps } from './index.js';
import type { Transaction } from '../app/tx.js';
import { workWorkload } from '../workload.js';

export default builtinApps.work;

/** 1,000 counters (Zipf α 0.8), 1,000 rounds a transaction: cheap enough to check quickly. */
export function* workload(seed: number): Generator<Transaction, never, undefined> {
  const w = workWorkload({ objects: 1000, alpha: 0.8, rounds: 1000, seed });
  for (;;) yield w.next();
}
