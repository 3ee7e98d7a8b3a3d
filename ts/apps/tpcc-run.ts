// Driving TPC-C against a running cluster: the loader, then the mix from closed-loop clients,
// counting each kind's outcomes and New-Order's latency. The demo and the tests share it; the
// submit function is the only thing it knows of the cluster.
import type { Outcome, Versioned } from '../app/exec.js';
import type { Transaction } from '../app/tx.js';
import type { Snapshot } from './tpcc-check.js';
import { tpccLoad, TPCC_KINDS, type TpccKind, type TpccMix, type TpccScale } from './tpcc-workload.js';

/** What `--app` names the built-in TPC-C by: every member of a cluster resolves the same file. */
export const TPCC_MODULE = 'tpcc';

export type Submit = (tx: Transaction) => Promise<{ outcome: Outcome | null }>;

/** Submits the loader's transactions (independent of each other, so all at once); throws naming one that failed. */
export async function loadTpcc(submit: Submit, scale: TpccScale): Promise<number> {
  const txs = tpccLoad(scale);
  const replies = await Promise.all(txs.map((tx) => submit(tx)));
  const failed = replies.find((r) => r.outcome?.status !== 'ok');
  if (failed) throw new Error(`tpcc load transaction failed: ${JSON.stringify(failed.outcome)}`);
  return txs.length;
}

export type KindCounts = { committed: number; rolledBack: number; aborted: number };

export type MixRun = {
  submitted: number;
  seconds: number;
  kinds: Record<TpccKind, KindCounts>;
  /** The first few aborts that were not rollbacks, with their reasons. */
  abortReasons: string[];
  /** Submit to outcome, microseconds, of every committed or rolled-back New-Order, ascending. */
  newOrderUs: number[];
};

/** Runs `mix` from `clients` closed-loop clients until `transactions` were submitted or `seconds` passed. */
export async function runTpccMix(submit: Submit, mix: TpccMix, o: { clients: number; transactions: number; seconds: number }): Promise<MixRun> {
  const kinds = Object.fromEntries(TPCC_KINDS.map((k) => [k, { committed: 0, rolledBack: 0, aborted: 0 }])) as Record<TpccKind, KindCounts>;
  const abortReasons: string[] = [];
  const newOrderUs: number[] = [];
  const started = performance.now();
  const deadline = started + o.seconds * 1000;
  let submitted = 0;
  const client = async (): Promise<void> => {
    while (submitted < o.transactions && performance.now() < deadline) {
      submitted++;
      const { kind, tx } = mix.next();
      const t0 = performance.now();
      const { outcome } = await submit(tx);
      const us = (performance.now() - t0) * 1000;
      const k = kinds[kind];
      if (outcome?.status === 'ok') k.committed++;
      else if (outcome?.reason.startsWith('rollback: ')) k.rolledBack++;
      else {
        k.aborted++;
        if (abortReasons.length < 5) abortReasons.push(`${kind}: ${outcome?.reason ?? 'no outcome'}`);
        continue;
      }
      if (kind === 'newOrder') newOrderUs.push(us);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.clients) }, client));
  newOrderUs.sort((a, b) => a - b);
  return { submitted, seconds: (performance.now() - started) / 1000, kinds, abortReasons, newOrderUs };
}

/** The value at quantile q of ascending `xs`. */
export const quantile = (xs: readonly number[], q: number): number | undefined => xs[Math.min(xs.length - 1, Math.floor(q * xs.length))];

/** A store's objects as a snapshot for the consistency check: its ids, then one batched read. */
export function* storeSnapshot(store: { store: { ids(): Buffer[] }; get(ids: readonly string[]): Versioned[] }): Snapshot {
  const ids = store.store.ids().map((b) => b.toString('utf8'));
  const values = store.get(ids);
  for (let k = 0; k < ids.length; k++) {
    const v = values[k]?.value;
    const id = ids[k];
    if (v !== undefined && id !== undefined) yield [id, v];
  }
}
