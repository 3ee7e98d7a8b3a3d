// `remora bench merge`: what merging saves the primary, and end-to-end throughput by pool size.
//
// Part 1 runs the real Primary over the native store in this process. Every transfer is
// pre-executed *before* the timed window, so the two cores do not blur the comparison: the
// primary then merges (adopting, or re-executing with the lookup table's hints) in one run, and
// executes every transaction itself in the other, over identical state and order.
// Part 2 runs the embedded cluster (pre-executor processes) with closed-loop clients.
//
// What part 1 times is `Primary.deliver` alone: the merge and the store writes. It does not
// time what the node pays around it (admission, sequencing, handing transactions to
// pre-executors, taking their tables in, state updates, replies), so its speedup is an upper
// bound of what merging saves the node. `remora bench scale` measures the node as a whole.
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { nativeFunctions } from '../ts/app/natives.js';
import { decodeTx, type DecodedTx } from '../ts/app/tx.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { PreExecutor, type Effect } from '../ts/pipeline/preexecutor.js';
import { Primary } from '../ts/pipeline/primary.js';
import type { Sequenced } from '../ts/pipeline/sequencer.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { atExit } from '../ts/process.js';
import { loadOrCreateSecret } from '../ts/secret.js';
import { Store } from '../ts/store.js';
import { startLoadGenerators } from '../ts/loadgen.js';
import { BANK_HOT_ACCOUNTS, bankBench, bankWorkload, DEMO_MINT_AUTHORITY_APP } from '../ts/workload.js';
import { describeMachine, summariseMachine } from './machine.js';

export interface MergeOptions {
  quick: boolean;
  out: string;
  seed: number;
}

type Metrics = Record<string, number>;
/** Transactions per delivered batch in the primary-only runs (also `bench primary`'s). */
export const BATCH = 256;
const CONFLICT_RATES = [0, 0.1, 0.5] as const;
const POOL_SIZES = [0, 1, 2, 4] as const;

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const stage = (m: string) => process.stdout.write(`» ${m}\n`);

/** `txs` as the sequencer would deliver them: batches of `BATCH`, timestamps from `firstTs`. */
export function batches(txs: readonly DecodedTx[], firstTs: bigint): Sequenced[][] {
  const out: Sequenced[][] = [];
  for (let i = 0; i < txs.length; i += BATCH) {
    out.push(txs.slice(i, i + BATCH).map((tx, j) => ({ ts: firstTs + BigInt(i + j), tx })));
  }
  return out;
}

/** A primary over a fresh native store, with the set-up transactions applied. */
async function primaryWithSetup(dir: string, name: string, setup: readonly DecodedTx[]) {
  const store = new NativePrimaryStore(Store.create({ dir, name, secret: loadOrCreateSecret(dir) }));
  const effects: Effect[] = [];
  const primary = new Primary(DEMO_MINT_AUTHORITY_APP, store, nativeFunctions, {
    deadlineMs: 0,
    onApplied: (b) => {
      for (const a of b) if (a.writes.length > 0) effects.push([a.ts, a.writes, a.digest]);
    },
  });
  for (const b of batches(setup, 1n)) await primary.deliver(b);
  return { store, primary, effects };
}

/** Primary-only throughput, merging pre-executed results vs executing everything itself. */
async function measurePrimary(dir: string, m: Metrics, quick: boolean, seed: number): Promise<void> {
  const transfers = quick ? 10_000 : 30_000;
  for (const rate of CONFLICT_RATES) {
    const label = `${Math.round(rate * 100)}pct`;
    stage(`primary: ${fmt(transfers)} signed transfers, conflict rate ${Math.round(rate * 100)} %`);
    // Two fresh accounts per transfer: conflicts come only from the hot accounts, at `rate`.
    const work = bankBench({ transfers, conflictRate: rate, seed, accounts: 2 * transfers + BANK_HOT_ACCOUNTS });
    const setup = work.setup.map(decodeTx);
    const txs = work.transfers.map(decodeTx);
    const firstTs = BigInt(setup.length + 1);

    // Pre-execution, untimed: a pre-executor holding the state after set-up.
    const merging = await primaryWithSetup(dir, `merge-${label}`, setup);
    // Without speculation: the conflict rate is the bench's setting, not undone by guesses.
    const pre = new PreExecutor(DEMO_MINT_AUTHORITY_APP, nativeFunctions, { speculate: false });
    pre.install(merging.effects);
    for (let i = 0; i < txs.length; i += BATCH) {
      for (const [digest, table] of pre.run(txs.slice(i, i + BATCH))) {
        merging.primary.expect(digest);
        merging.primary.offer(digest, table, 'bench');
      }
    }
    const runsBefore = merging.primary.stats.mergeRuns;
    const mergeRun = await timed(merging.primary, batches(txs, firstTs));
    const runs = merging.primary.stats.mergeRuns - runsBefore;
    const mergedDigest = merging.store.digest();
    merging.store.store.close();

    const executing = await primaryWithSetup(dir, `execute-${label}`, setup);
    const executeRun = await timed(executing.primary, batches(txs, firstTs));
    const sameState = executing.store.digest() === mergedDigest;
    executing.store.store.close();
    if (!sameState) throw new Error(`merge and execute runs disagree on the state at conflict rate ${rate}`);

    const s = merging.primary.stats;
    m[`primary_merge_tps_conflict_${label}`] = Math.round(txs.length / mergeRun);
    m[`primary_execute_tps_conflict_${label}`] = Math.round(txs.length / executeRun);
    m[`merge_speedup_conflict_${label}`] = round(executeRun / mergeRun, 2);
    // Set-up transactions had no offers, so adoptions and re-executions are all transfers.
    m[`merge_adopted_share_conflict_${label}`] = round(s.adopted / txs.length, 3);
    m[`merge_reexecuted_share_conflict_${label}`] = round(s.reexecuted / txs.length, 3);
    m[`merge_signatures_taken_from_tables_conflict_${label}`] = s.authFromTables;
    // Each run merged in JavaScript costs a store read, a write and a native call: under
    // contention, stale transactions are merged in clusters rather than one run each.
    m[`merge_js_runs_per_1000_tx_conflict_${label}`] = round((1000 * runs) / txs.length, 1);
  }
  // The headline numbers are the conflict-free ones.
  m['primary_merge_tps'] = m['primary_merge_tps_conflict_0pct'] ?? NaN;
  m['primary_execute_tps'] = m['primary_execute_tps_conflict_0pct'] ?? NaN;
  m['merge_speedup'] = m['merge_speedup_conflict_0pct'] ?? NaN;
}

async function timed(primary: Primary, bs: readonly Sequenced[][]): Promise<number> {
  const t0 = performance.now();
  for (const b of bs) await primary.deliver(b);
  return (performance.now() - t0) / 1000;
}

/**
 * End-to-end: clients → admission → sequencer (fsync) → primary, with pools of pre-executors.
 * The clients are load-generator processes (ts/loadgen.ts) that sign before the window.
 */
async function measureEndToEnd(dir: string, m: Metrics, quick: boolean, seed: number): Promise<void> {
  const seconds = quick ? 3 : 10;
  const accounts = 2000;
  for (const size of POOL_SIZES) {
    stage(`end to end: ${size} pre-executor${size === 1 ? '' : 's'}, ${seconds} s of closed-loop transfers from 2 load-generator processes`);
    const clusterDir = join(dir, `cluster-${size}`);
    const cluster = await EmbeddedCluster.start({ dir: clusterDir, app: 'bank', preExecutors: size, deadlineMs: 50 });
    try {
      const setup = bankWorkload({ accounts, alpha: 0, seed }).setup;
      await Promise.all(setup.map((tx) => cluster.node.submit(tx)));
      const gens = await startLoadGenerators({
        dir: clusterDir,
        count: 2,
        workload: { app: 'bank', accounts, alpha: 0, seed },
        mode: { kind: 'closed', clients: 256 },
        transactions: seconds * 12_000,
        seconds,
      });
      try {
        const before = { ...cluster.node.stats };
        const t0 = performance.now();
        gens.go();
        await gens.finished();
        const elapsed = (performance.now() - t0) / 1000;
        const s = cluster.node.stats;
        m[`e2e_tps_${size}_preexecutors`] = Math.round((s.applied - before.applied) / elapsed);
        m[`e2e_adopted_share_${size}_preexecutors`] = round((s.adopted - before.adopted) / Math.max(1, s.applied - before.applied), 3);
      } finally {
        await gens.close();
      }
    } finally {
      await cluster.close();
    }
  }
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export async function runMerge(opts: MergeOptions): Promise<number> {
  const machine = describeMachine();
  const settings = {
    quick: opts.quick,
    seed: opts.seed,
    batch: BATCH,
    conflict_rates: [...CONFLICT_RATES],
    pool_sizes: [...POOL_SIZES],
    note: 'the machine has 2 cores: pre-executors, the node and the clients share them, so end-to-end numbers do not show scale-out; the primary-only comparison isolates the merge cost',
  };
  process.stdout.write(`remora bench merge (${opts.quick ? 'quick' : 'full'})\nmachine: ${summariseMachine(machine)}\nseed ${opts.seed}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'remora-bench-merge-'));
  const cancel = atExit(() => rmSync(dir, { recursive: true, force: true }));
  const m: Metrics = {};
  try {
    await measurePrimary(dir, m, opts.quick, opts.seed);
    await measureEndToEnd(dir, m, opts.quick, opts.seed);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    cancel();
  }
  mkdirSync(dirname(opts.out), { recursive: true });
  const tmp = `${opts.out}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ suite: 'merge', machine, settings, metrics: m }, null, 2)}\n`);
  renameSync(tmp, opts.out);
  const lines = [
    '',
    "primary only (Primary.deliver: merge and store writes; not admission, sequencing, dispatch, tables, state updates or replies: see `bench scale` for the node's whole CPU)",
    'conflict  merge tx/s  execute tx/s  speedup',
  ];
  for (const rate of CONFLICT_RATES) {
    const l = `${Math.round(rate * 100)}pct`;
    lines.push(
      `${`${Math.round(rate * 100)} %`.padEnd(9)} ${fmt(m[`primary_merge_tps_conflict_${l}`] ?? NaN).padStart(10)}  ` +
        `${fmt(m[`primary_execute_tps_conflict_${l}`] ?? NaN).padStart(12)}  ${(m[`merge_speedup_conflict_${l}`] ?? NaN).toFixed(2)}x`,
    );
  }
  lines.push('', 'pre-executors  end-to-end tx/s  adopted (2-core machine: all processes share 2 cores)');
  for (const n of POOL_SIZES) {
    lines.push(
      `${String(n).padEnd(14)} ${fmt(m[`e2e_tps_${n}_preexecutors`] ?? NaN).padStart(15)}  ${((m[`e2e_adopted_share_${n}_preexecutors`] ?? NaN) * 100).toFixed(1)} %`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\nresults: ${opts.out}\n`);
  return 0;
}
