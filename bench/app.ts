// `remora bench app --app SPEC`: any app's own workload end to end on the embedded cluster,
// with 0, 1 and 2 pre-executors: throughput, latency from submit to final outcome, and the
// node's CPU per transaction, the number that says how far execution can scale out (DESIGN,
// "Performance shape").
//
// Clients run in this process, as in `bench merge`, and every transaction is generated (and
// signed) before the timed window, so the CPU this process spends in the window is the node's
// (admission, sequencing, dispatch, merge, store, replies) plus the in-process submit calls,
// and not the clients' signing. Pre-executors are other processes and not counted.
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, relative } from 'node:path';
import type { Transaction } from '../ts/app/tx.js';
import { loadAppUnderLoad, take } from '../ts/cli/app-workload.js';
import { ConfigError } from '../ts/cli/errors.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { atExit } from '../ts/process.js';
import { describeMachine, summariseMachine } from './machine.js';

export interface AppBenchOptions {
  /** The app: a built-in name, a module path or a package (docs/apps.md). */
  spec: string;
  quick: boolean;
  /** Default `bench/results/app-<app name>.json`. */
  out?: string;
  seed: number;
}

const POOL_SIZES = [0, 1, 2] as const;
/** Closed-loop clients, as in `bench merge`'s end-to-end runs. */
const CLIENTS = 128;

type Metrics = Record<string, number>;

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const stage = (m: string) => process.stdout.write(`» ${m}\n`);

function quantile(sorted: Float64Array, q: number): number {
  return sorted.length === 0 ? NaN : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN);
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Submits `txs` in order with `clients` outstanding; each reply's latency in ms. */
async function closedLoop(cluster: EmbeddedCluster, txs: readonly Transaction[], clients: number): Promise<{ latencies: Float64Array; aborted: number }> {
  const latencies = new Float64Array(txs.length);
  let next = 0;
  let aborted = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      // Taking the index and submitting happen in one step, so the log gets them in order.
      for (let i = next++; i < txs.length; i = next++) {
        const t0 = performance.now();
        const r = await cluster.node.submit(txs[i]);
        latencies[i] = performance.now() - t0;
        if (r.outcome?.status !== 'ok') aborted++;
      }
    }),
  );
  return { latencies, aborted };
}

export async function runAppBench(opts: AppBenchOptions): Promise<number> {
  const { loaded, source, workload } = await loadAppUnderLoad(opts.spec);
  const name = loaded.app.name;
  const out = opts.out ?? join('bench', 'results', `app-${name.replace(/[^\w.-]/g, '-')}.json`);
  // The spec as the user would type it here: a results file names no path of this machine.
  const spec = isAbsolute(loaded.spec) ? relative(process.cwd(), loaded.spec) : loaded.spec;
  const warmup = opts.quick ? 2500 : 5000;
  const timed = opts.quick ? 6000 : 30_000;
  const machine = describeMachine();
  process.stdout.write(
    `remora bench app (${opts.quick ? 'quick' : 'full'}): ${name} ${loaded.digest.slice(0, 12)} (${spec}), ${source}\n` +
      `machine: ${summariseMachine(machine)}\nseed ${opts.seed}\n`,
  );

  // One stream for every pool size, generated once: each run starts from an empty cluster.
  const it = workload(opts.seed);
  const warm = take(it, warmup, source);
  const txs = take(it, timed, source, warm.length);
  if (txs.length === 0) throw new ConfigError(`${source} yielded only ${warm.length} transactions: ${warmup} warm up the cluster, the rest are timed`);

  const settings = {
    quick: opts.quick,
    seed: opts.seed,
    app: { name, spec, digest: loaded.digest },
    workload: source.replace(opts.spec, spec),
    warmup_transactions: warm.length,
    timed_transactions: txs.length,
    clients: CLIENTS,
    pool_sizes: [...POOL_SIZES],
    deadline_ms: 50,
    note:
      'clients run in the node process on transactions signed before the timed window; node CPU per transaction is ' +
      'process.cpuUsage() of that process over the window divided by the transactions (pre-executors excluded). ' +
      'The first transactions warm the cluster untimed and include the workload set-up.',
  };
  const dir = mkdtempSync(join(tmpdir(), 'remora-bench-app-'));
  const cancel = atExit(() => rmSync(dir, { recursive: true, force: true }));
  const m: Metrics = {};
  try {
    for (const size of POOL_SIZES) {
      stage(
        `${size} pre-executor${size === 1 ? '' : 's'}: ${fmt(warm.length)} transactions untimed, then ${fmt(txs.length)} timed, ${CLIENTS} closed-loop clients`,
      );
      const cluster = await EmbeddedCluster.start({ dir: join(dir, `cluster-${size}`), app: opts.spec, preExecutors: size, deadlineMs: 50 });
      try {
        await closedLoop(cluster, warm, CLIENTS);
        const before = { ...cluster.node.stats };
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        const { latencies, aborted } = await closedLoop(cluster, txs, CLIENTS);
        const elapsed = (performance.now() - t0) / 1000;
        const cpu = process.cpuUsage(cpu0);
        const s = cluster.node.stats;
        const applied = Math.max(1, s.applied - before.applied);
        const sorted = latencies.sort();
        const k = `${size}_preexecutors`;
        m[`e2e_tps_${k}`] = Math.round(txs.length / elapsed);
        m[`latency_p50_ms_${k}`] = round(quantile(sorted, 0.5), 3);
        m[`latency_p99_ms_${k}`] = round(quantile(sorted, 0.99), 3);
        m[`node_cpu_us_per_tx_${k}`] = round((cpu.user + cpu.system) / txs.length, 1);
        m[`adopted_share_${k}`] = round((s.adopted - before.adopted) / applied, 3);
        m[`reexecuted_share_${k}`] = round((s.reexecuted - before.reexecuted) / applied, 3);
        m[`executed_share_${k}`] = round((s.executed - before.executed) / applied, 3);
        m[`aborted_share_${k}`] = round(aborted / txs.length, 3);
      } finally {
        await cluster.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    cancel();
  }
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(`${out}.tmp`, `${JSON.stringify({ suite: 'app', machine, settings, metrics: m }, null, 2)}\n`);
  renameSync(`${out}.tmp`, out);
  const lines = ['', 'pre-executors  tx/s     p50 ms   p99 ms   node CPU µs/tx  adopted  re-executed  executed alone'];
  for (const n of POOL_SIZES) {
    const k = `${n}_preexecutors`;
    const share = (key: string) => `${((m[`${key}_${k}`] ?? NaN) * 100).toFixed(1)} %`;
    lines.push(
      `${String(n).padEnd(14)} ${fmt(m[`e2e_tps_${k}`] ?? NaN).padEnd(8)} ${(m[`latency_p50_ms_${k}`] ?? NaN).toFixed(2).padEnd(8)} ` +
        `${(m[`latency_p99_ms_${k}`] ?? NaN).toFixed(2).padEnd(8)} ${(m[`node_cpu_us_per_tx_${k}`] ?? NaN).toFixed(1).padEnd(15)} ` +
        `${share('adopted_share').padEnd(8)} ${share('reexecuted_share').padEnd(12)} ${share('executed_share')}`,
    );
  }
  if (machine.available_parallelism <= 2) lines.push(`(${machine.available_parallelism} cores: the clients, the node and the pre-executors share them)`);
  process.stdout.write(`${lines.join('\n')}\nresults: ${out}\n`);
  return 0;
}
