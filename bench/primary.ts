// `remora bench primary`: the overloaded primary's way out through more cores (seed 000).
//
// Runs the real Primary over the native store in this process, with no pre-executors: every
// signed transfer is the primary's to verify and execute, as when the pool cannot keep up.
// The same transfers, over identical state and order, are merged with 1 thread (the
// sequential merge) and with 2 (speculation on a merge worker beside the primary's thread,
// then the in-order merge). What is timed is `Primary.deliver` (merge and store writes); CPU is
// the process's, all threads, over the same window.
//
// Part 2, delegation: the embedded cluster with pre-executor processes under open-loop transfers
// offered faster than the node applies them, Zipf-skewed (hot accounts), with delegation off
// and on; the applied count and the backlog (ordered, not applied) sampled over time.
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { nativeFunctions } from '../ts/app/natives.js';
import { decodeTx, type DecodedTx } from '../ts/app/tx.js';
import { MergeThreads } from '../ts/pipeline/merge-threads.js';
import { Primary } from '../ts/pipeline/primary.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { atExit } from '../ts/process.js';
import { loadOrCreateSecret } from '../ts/secret.js';
import { Store } from '../ts/store.js';
import { BANK_HOT_ACCOUNTS, bankBench, DEMO_MINT_AUTHORITY_APP } from '../ts/workload.js';
import { describeMachine, summariseMachine } from './machine.js';
import { barChart, lineChart } from './plot.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { startLoadGenerators } from '../ts/loadgen.js';
import { bankWorkload } from '../ts/workload.js';
import { DELEGATION_DEFAULTS, type DelegationOptions } from '../ts/pipeline/delegation.js';
import { BATCH, batches } from './merge.js';

export interface PrimaryBenchOptions {
  quick: boolean;
  out: string;
  seed: number;
}

type Metrics = Record<string, number>;
const CONFLICT_RATES = [0, 0.1, 0.5] as const;
const THREADS = [1, 2] as const;

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const stage = (m: string) => process.stdout.write(`» ${m}\n`);
const pct = (rate: number) => `${Math.round(rate * 100)}pct`;

interface Run {
  seconds: number;
  cpuSeconds: number;
  digest: string;
  kept: number;
  speculated: number;
}

/** One timed run over a fresh store: set-up untimed, then the transfers. */
async function run(dir: string, name: string, setup: readonly DecodedTx[], txs: readonly DecodedTx[], threads: number): Promise<Run> {
  const store = new NativePrimaryStore(Store.create({ dir, name, secret: loadOrCreateSecret(dir) }));
  const pool = threads > 1 ? new MergeThreads(threads, nativeFunctions) : undefined;
  try {
    const primary = new Primary(DEMO_MINT_AUTHORITY_APP, store, nativeFunctions, { deadlineMs: 0, onApplied: () => {}, ...(pool && { threads: pool }) });
    for (const b of batches(setup, 1n)) await primary.deliver(b);
    const before = { ...primary.stats };
    const work = batches(txs, BigInt(setup.length + 1));
    // One batch first, so the threads have loaded the app before the window.
    const first = work.shift();
    if (first) await primary.deliver(first);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (const b of work) await primary.deliver(b);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    return {
      seconds,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      digest: store.digest(),
      kept: primary.stats.speculationsKept - before.speculationsKept,
      speculated: primary.stats.speculated - before.speculated,
    };
  } finally {
    await pool?.close();
    store.store.close();
  }
}

/** Part 2's load: skewed transfers offered open-loop faster than the node applies them. */
const OVERLOAD = { accounts: 2_000, alpha: 1.2, preExecutors: 2, generators: 2, sampleMs: 250 } as const;
/** Delegation as part 2 turns it on: a backlog low enough to be passed under this load. */
const BENCH_DELEGATION: DelegationOptions = { ...DELEGATION_DEFAULTS, backlog: 256 };

interface Sample {
  /** Seconds since the load started. */
  t: number;
  applied: number;
  backlog: number;
}

interface OverloadRun {
  samples: Sample[];
  /** Applied per second over the offered window. */
  tps: number;
  maxBacklog: number;
  avgBacklog: number;
  adoptedShare: number;
  delegation: { leases: number; delegated: number; adopted: number; ended: Record<string, number> } | null;
}

/** One open-loop run against a fresh cluster, sampling applied and backlog every 250 ms. */
async function overload(dir: string, seed: number, rate: number, seconds: number, delegation: DelegationOptions | null): Promise<OverloadRun> {
  const cluster = await EmbeddedCluster.start({ dir, app: 'bank', preExecutors: OVERLOAD.preExecutors, deadlineMs: 50, ...(delegation && { delegation }) });
  try {
    const setup = bankWorkload({ accounts: OVERLOAD.accounts, alpha: OVERLOAD.alpha, seed }).setup;
    await Promise.all(setup.map((tx) => cluster.node.submit(tx)));
    const gens = await startLoadGenerators({
      dir,
      count: OVERLOAD.generators,
      workload: { app: 'bank', accounts: OVERLOAD.accounts, alpha: OVERLOAD.alpha, seed },
      mode: { kind: 'open', rate },
      transactions: Math.ceil(rate * seconds),
      seconds,
      drainSeconds: 5,
    });
    try {
      const node = cluster.node;
      const applied0 = node.stats.applied;
      const adopted0 = node.stats.adopted;
      const samples: Sample[] = [];
      const t0 = performance.now();
      const sample = () =>
        samples.push({
          t: (performance.now() - t0) / 1000,
          applied: node.stats.applied - applied0,
          backlog: Math.max(0, Number(cluster.ordered() - node.lastApplied)),
        });
      gens.go();
      sample();
      const timer = setInterval(sample, OVERLOAD.sampleMs);
      await gens.finished();
      clearInterval(timer);
      sample();
      const inWindow = samples.filter((x) => x.t <= seconds + 1e-9);
      const last = inWindow.at(-1) ?? { t: 1, applied: 0 };
      const backlogs = inWindow.map((x) => x.backlog);
      const d = node.delegation?.stats;
      return {
        samples,
        tps: Math.round(last.applied / Math.max(1e-9, last.t)),
        maxBacklog: Math.max(0, ...backlogs),
        avgBacklog: Math.round(backlogs.reduce((a, b) => a + b, 0) / Math.max(1, backlogs.length)),
        adoptedShare: Math.round(((node.stats.adopted - adopted0) / Math.max(1, node.stats.applied - applied0)) * 1000) / 1000,
        delegation: d ? { leases: d.leases, delegated: d.delegated, adopted: d.adopted, ended: { ...d.ended } } : null,
      };
    } finally {
      await gens.close();
    }
  } finally {
    await cluster.close();
  }
}

/** Part 2: delegation off and on under the same overload; metrics, and two charts over time. */
async function measureOverload(dir: string, m: Metrics, quick: boolean, seed: number, out: string): Promise<Record<string, unknown>> {
  const seconds = quick ? 3 : 10;
  const rate = quick ? 8_000 : 10_000;
  const runs = new Map<string, OverloadRun>();
  for (const [label, delegation] of [
    ['off', null],
    ['on', BENCH_DELEGATION],
  ] as const) {
    stage(
      `overload: ${fmt(rate)} transfers/s offered for ${seconds} s (Zipf α ${OVERLOAD.alpha}, ${OVERLOAD.preExecutors} pre-executors), delegation ${label}`,
    );
    const r = await overload(join(dir, `overload-${label}`), seed, rate, seconds, delegation);
    runs.set(label, r);
    m[`overload_tps_delegation_${label}`] = r.tps;
    m[`overload_max_backlog_delegation_${label}`] = r.maxBacklog;
    m[`overload_avg_backlog_delegation_${label}`] = r.avgBacklog;
    m[`overload_adopted_share_delegation_${label}`] = r.adoptedShare;
    if (r.delegation) {
      m['overload_leases'] = r.delegation.leases;
      m['overload_delegated'] = r.delegation.delegated;
      m['overload_delegated_adopted'] = r.delegation.adopted;
      for (const [end, n] of Object.entries(r.delegation.ended)) m[`overload_leases_ended_${end}`] = n;
    }
  }
  const base = out.replace(/\.json$/, '');
  const perSecond = (r: OverloadRun): [number, number][] =>
    r.samples.slice(1).map((x, i) => {
      const prev = r.samples[i] ?? x;
      return [x.t, (x.applied - prev.applied) / Math.max(1e-9, x.t - prev.t)];
    });
  writeFileSync(
    `${base}-overload-tps.svg`,
    lineChart({
      title: `Applied tx/s under ${fmt(rate)} tx/s offered, Zipf α ${OVERLOAD.alpha} (measured)`,
      xLabel: 's',
      yLabel: 'tx/s',
      series: [...runs].map(([label, r]) => ({ name: `delegation ${label}`, points: perSecond(r) })),
    }),
  );
  writeFileSync(
    `${base}-overload-backlog.svg`,
    lineChart({
      title: 'Backlog: ordered, not yet applied (measured)',
      xLabel: 's',
      yLabel: 'transactions',
      series: [...runs].map(([label, r]) => ({ name: `delegation ${label}`, points: r.samples.map((x): [number, number] => [x.t, x.backlog]) })),
    }),
  );
  return { rate, seconds, ...OVERLOAD, delegation: BENCH_DELEGATION, charts: [`${basename(base)}-overload-tps.svg`, `${basename(base)}-overload-backlog.svg`] };
}

export async function runPrimaryBench(opts: PrimaryBenchOptions): Promise<number> {
  const machine = describeMachine();
  const transfers = opts.quick ? 4_000 : 30_000;
  const settings = {
    quick: opts.quick,
    seed: opts.seed,
    batch: BATCH,
    transfers,
    conflict_rates: [...CONFLICT_RATES],
    threads: [...THREADS],
    note: 'Primary.deliver in this process, no pre-executors (every transfer verified and executed by the primary); threads = the primary thread plus merge workers; tx/s over the timed window, CPU = process CPU time (all threads) / transfers. 2-core machine: 2 threads use both cores, so nothing else may run beside the bench.',
  };
  process.stdout.write(`remora bench primary (${opts.quick ? 'quick' : 'full'})\nmachine: ${summariseMachine(machine)}\nseed ${opts.seed}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'remora-bench-primary-'));
  const cancel = atExit(() => rmSync(dir, { recursive: true, force: true }));
  const m: Metrics = {};
  let overloadSettings: Record<string, unknown> = {};
  try {
    for (const rate of CONFLICT_RATES) {
      // Two fresh accounts per transfer: conflicts come only from the hot accounts, at `rate`.
      const work = bankBench({ transfers, conflictRate: rate, seed: opts.seed, accounts: 2 * transfers + BANK_HOT_ACCOUNTS });
      const setup = work.setup.map(decodeTx);
      const txs = work.transfers.map(decodeTx);
      const digests = new Set<string>();
      for (const n of THREADS) {
        stage(`${fmt(transfers)} signed transfers, conflict rate ${Math.round(rate * 100)} %, ${n} merge thread${n === 1 ? '' : 's'}`);
        const r = await run(dir, `primary-${pct(rate)}-${n}`, setup, txs, n);
        digests.add(r.digest);
        const timed = transfers - Math.min(BATCH, transfers);
        m[`merge_tps_threads_${n}_conflict_${pct(rate)}`] = Math.round(timed / r.seconds);
        m[`merge_cpu_us_per_tx_threads_${n}_conflict_${pct(rate)}`] = Math.round((r.cpuSeconds / timed) * 1e7) / 10;
        if (n > 1) m[`merge_kept_share_threads_${n}_conflict_${pct(rate)}`] = Math.round((r.kept / Math.max(1, r.speculated)) * 1000) / 1000;
      }
      // The thread count must not change the state: checked here too, not only in the tests.
      if (digests.size !== 1) throw new Error(`merge threads changed the state at conflict rate ${rate}: ${[...digests].join(' vs ')}`);
      const one = m[`merge_tps_threads_1_conflict_${pct(rate)}`] ?? NaN;
      m[`merge_speedup_threads_2_conflict_${pct(rate)}`] = Math.round(((m[`merge_tps_threads_2_conflict_${pct(rate)}`] ?? NaN) / one) * 100) / 100;
    }
    mkdirSync(dirname(opts.out), { recursive: true });
    overloadSettings = await measureOverload(dir, m, opts.quick, opts.seed, opts.out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    cancel();
  }
  for (const n of THREADS) m[`merge_tps_threads_${n}`] = m[`merge_tps_threads_${n}_conflict_0pct`] ?? NaN;
  mkdirSync(dirname(opts.out), { recursive: true });
  const tmp = `${opts.out}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ suite: 'primary', machine, settings: { ...settings, overload: overloadSettings }, metrics: m }, null, 2)}\n`);
  renameSync(tmp, opts.out);
  const svg = opts.out.replace(/\.json$/, '') + '-threads.svg';
  writeFileSync(
    svg,
    barChart({
      title: 'Primary merge throughput, no pre-executors (measured)',
      yLabel: 'tx/s',
      groups: CONFLICT_RATES.map((r) => `${Math.round(r * 100)} % conflicts`),
      series: THREADS.map((n) => ({
        name: `${n} thread${n === 1 ? '' : 's'}`,
        values: CONFLICT_RATES.map((r) => m[`merge_tps_threads_${n}_conflict_${pct(r)}`] ?? 0),
      })),
    }),
  );
  const lines = ['', 'conflict  1 thread tx/s  2 threads tx/s  speedup  CPU µs/tx (1 → 2)  kept'];
  for (const rate of CONFLICT_RATES) {
    const l = pct(rate);
    lines.push(
      `${`${Math.round(rate * 100)} %`.padEnd(9)} ${fmt(m[`merge_tps_threads_1_conflict_${l}`] ?? NaN).padStart(13)}  ${fmt(m[`merge_tps_threads_2_conflict_${l}`] ?? NaN).padStart(14)}  ` +
        `${(m[`merge_speedup_threads_2_conflict_${l}`] ?? NaN).toFixed(2).padStart(6)}x  ` +
        `${`${m[`merge_cpu_us_per_tx_threads_1_conflict_${l}`]} → ${m[`merge_cpu_us_per_tx_threads_2_conflict_${l}`]}`.padStart(17)}  ${((m[`merge_kept_share_threads_2_conflict_${l}`] ?? NaN) * 100).toFixed(1)} %`,
    );
  }
  lines.push('', 'overload      applied tx/s  max backlog  avg backlog  adopted');
  for (const label of ['off', 'on']) {
    lines.push(
      `delegation ${label.padEnd(3)} ${fmt(m[`overload_tps_delegation_${label}`] ?? NaN).padStart(12)}  ${fmt(m[`overload_max_backlog_delegation_${label}`] ?? NaN).padStart(11)}  ` +
        `${fmt(m[`overload_avg_backlog_delegation_${label}`] ?? NaN).padStart(11)}  ${((m[`overload_adopted_share_delegation_${label}`] ?? NaN) * 100).toFixed(1)} %`,
    );
  }
  lines.push(
    `leases ${m['overload_leases'] ?? 0}, delegated ${fmt(m['overload_delegated'] ?? 0)}, of which adopted ${fmt(m['overload_delegated_adopted'] ?? 0)}`,
  );
  const base = opts.out.replace(/\.json$/, '');
  process.stdout.write(`${lines.join('\n')}\nresults: ${opts.out}, ${svg}, ${base}-overload-tps.svg, ${base}-overload-backlog.svg\n`);
  return 0;
}
