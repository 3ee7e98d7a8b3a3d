// The built-in `tpcc` as an app module (`--app tpcc`), like any user's app; its `workload`
// export (the loader for 2 warehouses at 1/100 scale, then the specification's mix) is what
// `remora check --app tpcc` and `remora bench app --app tpcc` drive it with, and its `check`
// export is TPC-C's consistency conditions over a state.
import type { Transaction } from '../app/tx.js';
import { tpccConsistency, type Snapshot, type TpccCondition } from './tpcc-check.js';
import { tpccWorkload } from './tpcc-workload.js';
import { tpccApp } from './tpcc.js';

export default tpccApp;

export function workload(seed: number): Generator<Transaction, never, undefined> {
  return tpccWorkload(seed);
}

export function check(snapshot: Snapshot): TpccCondition[] {
  return tpccConsistency(snapshot);
}
