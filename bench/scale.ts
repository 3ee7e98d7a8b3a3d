// `remora bench scale`: does adding pre-executors add throughput? The node's whole CPU per
// transaction (every thread of its process, by stage) when pre-executors' results are adopted
// vs when it executes everything; the native adoption alone; the durable sequencer through the
// binding; a compute-heavy workload pinned with taskset; a capacity model from those costs;
// latency below saturation. Load generators are processes of their own (ts/loadgen.ts) that
// sign before the window, so the node's process runs the node and nothing else.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { decodeTx, type Transaction } from '../ts/app/tx.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { startLoadGenerators, type LoadMode, type LoadResults, type LoadWorkload } from '../ts/loadgen.js';
import { asError } from '../ts/errors.js';
import { atExit } from '../ts/process.js';
import { perTransaction, stages, type StageTotals } from '../ts/stages.js';
import { bankWorkload, kvWorkload } from '../ts/workload.js';
import { EmbeddedSequencer } from '../ts/pipeline/sequencer.js';
import { mountHugeTmpfs, type HugeTmpfs } from './huge-tmpfs.js';
import { benchAdopt } from './native.js';
import { describeMachine, summariseMachine } from './machine.js';
import { lineChart } from './plot.js';
import { fullCollections } from './gc-count.js';
import { ownThreadsCpuSeconds, processCpuSeconds, threadsUsPerTx } from './proc-cpu.js';

export interface ScaleOptions {
  quick: boolean;
  out: string;
  seed: number;
}

type Metrics = Record<string, number>;
const SHM = '/dev/shm';
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const say = (m: string) => process.stdout.write(`» ${m}\n`);
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

interface Run {
  tps: number;
  applied: number;
  /** Node process CPU per applied transaction (µs), every thread, and by stage. */
  node: Record<string, number>;
  /** The same CPU by kind of thread of the node's process (`threadsUsPerTx`). */
  threads: Record<string, number>;
  /** CPU per applied transaction (µs) of all pre-executors together, and of the load generators. */
  preCpuUs: number;
  /** CPU per applied transaction (µs) of the admission processes together (0 without any). */
  admissionCpuUs: number;
  loadCpuUs: number;
  adopted: number;
  reexecuted: number;
  executed: number;
  /** Transactions per log append (one write and one sync each) over the window. */
  txPerAppend: number | null;
  /** Full collections of the node's JavaScript heap in the window. */
  fullCollections: number;
  load: LoadResults;
}

interface RunOptions {
  workload: LoadWorkload;
  preExecutors: number;
  mode: LoadMode;
  transactions: number;
  seconds: number;
  generators: number;
  deadlineMs: number;
  /** Node on core 0, pre-executors and load generators on core 1. */
  pinned?: boolean;
  /** Admission processes the load generators submit through (default 0: to the node itself). */
  admissions?: number;
  /** Answers left out of the latencies, the generators' first (steady state only). */
  warmup?: number;
  /**
   * Transactions applied before the CPU window opens. A run starts a fresh cluster and fresh
   * connections, and its first seconds pay for compiling what they make hot, on V8's helper
   * threads: a node that runs for hours pays that once.
   */
  warmupApplied?: number;
}

/** One client's first answers, not measured: steady state, as for the throughput runs' windows. */
const LATENCY_WARMUP = { quick: 1000, full: 4000 } as const;
/** Interleaved pairs of one-client runs (without, with pre-executors). */
const LATENCY_PAIRS = { quick: 1, full: 5 } as const;
/** Interleaved pairs of node-CPU runs (executed, adopted) at Zipf α 0. */
const NODE_CPU_PAIRS = { quick: 1, full: 5 } as const;
/** Clients of the batch-size sweep beside the 256 of the pairs, and each run's window (after as many warming up). */
const SWEEP_CLIENTS = { quick: [16, 64], full: [16, 48, 128] } as const;
const SWEEP_RUN = { quick: 15_000, full: 60_000 } as const;
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
};

/**
 * Resolves once `cluster` applied `n` more transactions than when called, looking every 10 ms
 * (a few hundred transactions at these rates, not counted either way: the window opens where
 * it looked). Rejects if the load ends first, since the window would then be empty.
 */
function appliedMore(cluster: EmbeddedCluster, n: number, finished: Promise<void>): Promise<void> {
  const target = cluster.node.stats.applied + n;
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      if (cluster.node.stats.applied < target) return;
      clearInterval(timer);
      resolve();
    }, 10);
    finished.then(
      () => {
        clearInterval(timer);
        reject(new Error(`bench scale: the load ended before ${n} transactions warmed the cluster`));
      },
      (e: unknown) => {
        clearInterval(timer);
        reject(asError(e));
      },
    );
  });
}

/** One end-to-end run on a fresh embedded cluster. */
async function run(dir: string, o: RunOptions): Promise<Run> {
  const prefix = o.pinned ? ['taskset', '-c', '1'] : undefined;
  const cluster = await EmbeddedCluster.start({
    dir,
    app: o.workload.app,
    preExecutors: o.preExecutors,
    deadlineMs: o.deadlineMs,
    ...(prefix && { preExecutorPrefix: prefix, admissionPrefix: prefix }),
    admissions: o.admissions ?? 0,
  });
  try {
    if (o.workload.app === 'bank') {
      const setup = bankWorkload({ accounts: o.workload.accounts, alpha: o.workload.alpha, seed: o.workload.seed }).setup;
      for (let i = 0; i < setup.length; i += 1024) await Promise.all(setup.slice(i, i + 1024).map((tx) => cluster.node.submit(tx)));
    }
    const gens = await startLoadGenerators({
      dir,
      sockets: cluster.admissionSockets,
      count: o.generators,
      workload: o.workload,
      mode: o.mode,
      transactions: o.transactions,
      seconds: o.seconds,
      ...(o.warmup !== undefined && { warmup: o.warmup }),
      ...(prefix && { prefix }),
    });
    try {
      const pids = [...cluster.children.values()].map((c) => c.pid);
      const admissionPids = [...cluster.admissions.values()].map((c) => c.pid);
      const finished = gens.finished();
      const sent = cluster.node.stats.applied;
      gens.go();
      if (o.warmupApplied !== undefined) await appliedMore(cluster, o.warmupApplied, finished);
      const pre0 = pids.map(processCpuSeconds);
      const adm0 = admissionPids.map(processCpuSeconds);
      const s0 = { ...cluster.node.stats };
      const appends0 = cluster.node.logAppends;
      const t0: StageTotals = stages.totals();
      const th0 = ownThreadsCpuSeconds();
      const gc0 = fullCollections();
      const w0 = performance.now();
      await finished;
      const elapsed = (performance.now() - w0) / 1000;
      const t1 = stages.totals();
      const th1 = ownThreadsCpuSeconds();
      const pre1 = pids.map(processCpuSeconds);
      const adm1 = admissionPids.map(processCpuSeconds);
      const s1 = cluster.node.stats;
      const appends = (cluster.node.logAppends ?? 0) - (appends0 ?? 0);
      const load = await gens.results();
      const applied = s1.applied - s0.applied;
      const share = (k: 'adopted' | 'reexecuted' | 'executed') => round((s1[k] - s0[k]) / Math.max(1, applied), 3);
      const preCpu = pre1.reduce((a, c, i) => a + c - (pre0[i] ?? 0), 0);
      const admissionCpu = adm1.reduce((a, c, i) => a + c - (adm0[i] ?? 0), 0);
      return {
        tps: Math.round(applied / elapsed),
        applied,
        node: Object.fromEntries(Object.entries(perTransaction(t0, t1, applied)).map(([k, v]) => [k, round(v, 2)])),
        threads: threadsUsPerTx(th0, th1, applied),
        preCpuUs: round((preCpu * 1e6) / Math.max(1, applied), 1),
        admissionCpuUs: round((admissionCpu * 1e6) / Math.max(1, applied), 2),
        // The generators' CPU is for their whole run, warm-up included.
        loadCpuUs: round(load.cpuUs / Math.max(1, s1.applied - sent), 1),
        adopted: share('adopted'),
        reexecuted: share('reexecuted'),
        executed: share('executed'),
        txPerAppend: appends0 === null || appends === 0 ? null : round(applied / appends, 1),
        fullCollections: fullCollections() - gc0,
        load,
      };
    } finally {
      await gens.close();
    }
  } finally {
    await cluster.close();
  }
}

function pin(cores: string): boolean {
  try {
    execFileSync('taskset', ['-a', '-cp', cores, String(process.pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The embedded sequencer through the binding, fsync per appended batch, `n` transactions in flight at most `window`. */
async function sequencerTps(dir: string, txs: readonly Transaction[], window: number): Promise<{ tps: number; appends: number }> {
  const decoded = txs.map(decodeTx);
  // Admission takes the digest (decodeTx computes it lazily); the sequencer only reads it.
  for (const tx of decoded) void tx.digest;
  const seq = new EmbeddedSequencer(dir);
  try {
    const t0 = performance.now();
    for (let i = 0; i < decoded.length; i += window) await Promise.all(decoded.slice(i, i + window).map((tx) => seq.submit(tx)));
    const s = (performance.now() - t0) / 1000;
    return { tps: Math.round(decoded.length / s), appends: seq.appends };
  } finally {
    await seq.close();
  }
}

export async function runScale(opts: ScaleOptions): Promise<number> {
  const machine = describeMachine();
  const q = opts.quick;
  stages.watchGc();
  process.stdout.write(`remora bench scale (${q ? 'quick' : 'full'}), seed ${opts.seed}\nmachine: ${summariseMachine(machine)}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'remora-bench-scale-'));
  let huge: HugeTmpfs | null = null;
  const cancel = atExit(() => {
    huge?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const m: Metrics = {};
  const detail: Record<string, unknown> = {};
  let n = 0;
  const fresh = () => join(dir, `run-${n++}`);
  const seconds = q ? 3 : 6;
  try {
    // The durable sequencer through the binding; first, before the adoption runs create and
    // free gigabytes of tmpfs (measured after them it ran at 370-400 k tx/s, alone 570-660 k).
    const seqTxs = Array.from(
      { length: q ? 50_000 : 200_000 },
      (
        (gen) => () =>
          gen.next().value
      )(kvWorkload({ keys: 1 << 20, hotKeys: 0, conflictRate: 0, dynamicRate: 0, seed: opts.seed })),
    );
    say(`sequencer: ${fmt(seqTxs.length)} kv transactions, durable (fsync per batch)`);
    const seq = await sequencerTps(fresh(), seqTxs, 65_536);
    m['sequencer_tps_durable'] = seq.tps;
    m['sequencer_mean_batch'] = round(seqTxs.length / Math.max(1, seq.appends), 0);

    // The native batch check-and-apply alone, one core. Regions are memory: on tmpfs, as a
    // deployment keeps its cluster directory, of 2 MiB pages where this process may mount one
    // (docs/native-core.md); then also on /dev/shm's 4 KiB pages at the smallest and largest size.
    const adoptIn = async (parent: string, objects: number) => {
      const memDir = mkdtempSync(join(parent, 'remora-bench-adopt-'));
      try {
        return Math.round((await benchAdopt(objects, q ? 200_000 : 1_000_000, memDir, q ? 1 : 3)).tps);
      } finally {
        rmSync(memDir, { recursive: true, force: true });
      }
    };
    const shm = existsSync(SHM) ? SHM : tmpdir();
    const largest = q ? 1e6 : 1e7;
    const sizes = [[1e4, 'adopt_tps_native_1e4'], [1e6, 'adopt_tps_native'], ...(q ? [] : [[1e7, 'adopt_tps_native_1e7'] as const])] as const;
    huge = mountHugeTmpfs(tmpdir(), 16);
    for (const [objects, key] of sizes) {
      say(`native adoption: ${fmt(objects)} objects, 2 reads + 2 writes per transaction, ${huge ? '2 MiB' : '4 KiB'} pages`);
      m[key] = await adoptIn(huge?.dir ?? shm, objects);
    }
    huge?.close();
    if (huge) {
      for (const objects of [1e4, largest]) {
        say(`native adoption: ${fmt(objects)} objects, 4 KiB pages`);
        m[`adopt_tps_native_${objects === 1e4 ? '1e4' : q ? '1e6' : '1e7'}_4k_pages`] = await adoptIn(shm, objects);
      }
    }
    const top = m[q ? 'adopt_tps_native' : 'adopt_tps_native_1e7'];
    if (top) m['adopt_flatness'] = round((m['adopt_tps_native_1e4'] ?? NaN) / top, 2);
    const top4k = m[`adopt_tps_native_${q ? '1e6' : '1e7'}_4k_pages`];
    if (top4k) m['adopt_flatness_4k_pages'] = round((m['adopt_tps_native_1e4_4k_pages'] ?? NaN) / top4k, 2);

    // The node's CPU per transaction: every result adopted vs executing everything.
    const bank = (alpha: number): LoadWorkload => ({ app: 'bank', accounts: 10_000, alpha, seed: opts.seed });
    const closed: LoadMode = { kind: 'closed', clients: 256 };
    // Each run's window opens once enough transactions warmed its fresh cluster: measured
    // from the start, a 40,000-transfer window read 4–5 µs a transaction higher, mostly V8's
    // helper threads compiling what the new cluster and connections made hot. That tail is
    // long: V8's optimizing compiler still spent 60–80 ms a second after 40,000 transfers,
    // 25–55 after 130,000, under 20 after 200,000 (bench/README.md). A node runs for hours, so
    // its cost per transaction is the steady one: the full run warms up on 200,000.
    // Windows of 40,000 (1.5 s) differed by up to ±15 % run to run even after the warm-up (one
    // round's adopted runs read 8.26 to 11.87 µs a transaction): a scavenge, a major
    // collection's marking or a checkpoint more or less in the window. 120,000 averages over
    // more of each, and the log writer's 10 ms ticks resolve three times finer.
    const perRun = q ? 15_000 : 120_000;
    const warmupApplied = q ? 15_000 : 200_000;
    // A bound, not a target: the runs end when their transactions are answered.
    const nodeCpuSeconds = Math.max(2 * seconds, Math.ceil((warmupApplied + perRun) / 5_000));
    // At α 0, where the goal is judged, the two sides run as interleaved pairs and each side's
    // figure is its median run. The load comes in through one admission process (the figures
    // without a suffix), so the node's CPU is sequencing and merging alone; at α 0 the same
    // pairs also run with the node admitting its clients itself (suffix `_node_admits`), the
    // way the node ran before admission had processes of its own.
    const VARIANTS = [
      { admissions: 1, suffix: '', what: 'through 1 admission process' },
      { admissions: 0, suffix: '_node_admits', what: 'the node admitting' },
    ] as const;
    const nodeCpu = async (alpha: number, pairs: number, variants: readonly (typeof VARIANTS)[number][]) => {
      const a = String(alpha).replace('.', '_');
      const runs = variants.map(() => [] as { executed: Run; adopted: Run }[]);
      for (let pair = 0; pair < pairs; pair++) {
        const of = pairs > 1 ? ` (pair ${pair + 1})` : '';
        for (const [v, variant] of variants.entries()) {
          // Executing everything (a short deadline: nothing will come), then every result waited for.
          const side = (preExecutors: number, deadlineMs: number, what: string): Promise<Run> => {
            say(`bank α ${alpha}: node CPU per transaction, ${what}, ${variant.what}${of}`);
            return run(fresh(), {
              workload: bank(alpha),
              preExecutors,
              admissions: variant.admissions,
              mode: closed,
              transactions: warmupApplied + perRun,
              warmupApplied,
              seconds: nodeCpuSeconds,
              generators: 2,
              deadlineMs,
            });
          };
          const executed = await side(0, 50, '0 pre-executors');
          const adopted = await side(2, 2000, '2 pre-executors, every result waited for');
          runs[v]?.push({ executed, adopted });
        }
      }
      const cpu = (r: Run): number => r.node['total'] ?? NaN;
      for (const [v, variant] of variants.entries()) {
        const mine = runs[v] ?? [];
        const medianRun = (side: 'executed' | 'adopted'): Run => {
          // The middle run (the lower middle one for an even count), so its stages and rates go with its CPU.
          const sorted = mine.map((r) => r[side]).sort((x, y) => cpu(x) - cpu(y));
          const middle = sorted[(sorted.length - 1) >> 1];
          if (!middle) throw new Error('bench scale: no node CPU runs');
          return middle;
        };
        const executed = medianRun('executed');
        const adopted = medianRun('adopted');
        const suffix = `${alpha === 0 ? '' : `_alpha_${a}`}${variant.suffix}`;
        m[`node_cpu_us_per_tx_executed${suffix}`] = cpu(executed);
        m[`node_cpu_us_per_tx_adopted${suffix}`] = cpu(adopted);
        m[`node_capacity_ratio${suffix}`] = round(cpu(executed) / cpu(adopted), 2);
        m[`adopted_share${suffix}`] = adopted.adopted;
        m[`e2e_tps_0_preexecutors${suffix}`] = executed.tps;
        m[`e2e_tps_2_preexecutors${suffix}`] = adopted.tps;
        if (variant.admissions > 0) m[`admission_cpu_us_per_tx_adopted${suffix}`] = adopted.admissionCpuUs;
        const split = (r: Run) =>
          Object.entries(r.threads)
            .map(([k, val]) => `${k} ${val}`)
            .join(', ');
        say(`bank α ${alpha}, ${variant.what}: node µs/tx by thread, executing: ${split(executed)}; adopted: ${split(adopted)}`);
        detail[`bank_alpha_${a}${variant.suffix}`] = {
          admission_processes: variant.admissions,
          executed: summary(executed),
          adopted: summary(adopted),
          ...(pairs > 1 && {
            pairs: mine.map((r) => ({
              executed: cpu(r.executed),
              adopted: cpu(r.adopted),
              adopted_threads: r.adopted.threads,
              adopted_tx_per_append: r.adopted.txPerAppend,
            })),
          }),
        };
      }
    };

    await nodeCpu(0, NODE_CPU_PAIRS[q ? 'quick' : 'full'], VARIANTS);
    // The adopted node's cost splits into a part per transaction and a part per batch (an
    // append, the messages around it): at 256 clients ~128 transactions share each batch, and a
    // node loaded to its capacity would share them among more. Fewer clients make smaller
    // batches; cost = a + b / (transactions an append), fitted over those runs and the median
    // one above, says what is left per transaction however large batches grow.
    const sweep: { clients: number; tx_per_append: number; node_cpu_us_per_tx: number }[] = [];
    const pairsRun = detail['bank_alpha_0'] as { adopted: { tx_per_append: number | null } } | undefined;
    if (pairsRun?.adopted.tx_per_append)
      sweep.push({ clients: 256, tx_per_append: pairsRun.adopted.tx_per_append, node_cpu_us_per_tx: m['node_cpu_us_per_tx_adopted'] ?? NaN });
    for (const clients of SWEEP_CLIENTS[q ? 'quick' : 'full']) {
      say(`bank α 0: node CPU per transaction at ${clients} clients, 2 pre-executors, through 1 admission process`);
      const r = await run(fresh(), {
        workload: bank(0),
        preExecutors: 2,
        admissions: 1,
        mode: { kind: 'closed', clients },
        transactions: 2 * SWEEP_RUN[q ? 'quick' : 'full'],
        warmupApplied: SWEEP_RUN[q ? 'quick' : 'full'],
        seconds: nodeCpuSeconds,
        generators: 2,
        deadlineMs: 2000,
      });
      if (r.txPerAppend !== null) sweep.push({ clients, tx_per_append: r.txPerAppend, node_cpu_us_per_tx: r.node['total'] ?? NaN });
    }
    const fit = perBatchFit(sweep.map((p) => [p.tx_per_append, p.node_cpu_us_per_tx]));
    if (fit) {
      m['model_node_cpu_us_per_tx_adopted_per_tx'] = round(fit.perTx, 2);
      m['model_node_cpu_us_per_batch_adopted'] = round(fit.perBatch, 0);
      m['model_node_capacity_ratio_large_batches'] = round((m['node_cpu_us_per_tx_executed'] ?? NaN) / fit.perTx, 2);
    }
    detail['batch_sweep'] = { points: sweep, fit: 'node_cpu_us_per_tx = a + b / tx_per_append, least squares; a, b are model_* metrics' };
    // Latency: one closed-loop client with and without pre-executors, then open loop at half
    // the capacity just measured; before the heavier runs, which leave this process's heap larger.
    // Runs of one client differ by more than the gap being judged, so they are paired and
    // interleaved, and each side's figure is the median of its runs.
    const latencyRuns: Record<'nopre' | 'pre', { p50: number; p99: number }[]> = { nopre: [], pre: [] };
    for (let pair = 0; pair < LATENCY_PAIRS[q ? 'quick' : 'full']; pair++) {
      for (const pre of [0, 2]) {
        say(`latency: 1 client, ${pre} pre-executors (pair ${pair + 1})`);
        const r = await run(fresh(), {
          workload: bank(0),
          preExecutors: pre,
          mode: { kind: 'closed', clients: 1 },
          transactions: LATENCY_WARMUP[q ? 'quick' : 'full'] + (q ? 1500 : 4000),
          warmup: LATENCY_WARMUP[q ? 'quick' : 'full'],
          // A bound: the transactions end the run first.
          seconds: 60,
          generators: 1,
          deadlineMs: 50,
        });
        latencyRuns[pre === 0 ? 'nopre' : 'pre'].push({ p50: round(r.load.latencyUs?.p50 ?? NaN), p99: round(r.load.latencyUs?.p99 ?? NaN) });
      }
    }
    for (const side of ['nopre', 'pre'] as const) {
      m[`latency_1client_p50_us_${side}`] = median(latencyRuns[side].map((r) => r.p50));
      m[`latency_1client_p99_us_${side}`] = median(latencyRuns[side].map((r) => r.p99));
    }
    detail['latency_1client_runs'] = latencyRuns;
    const capacity = m['e2e_tps_2_preexecutors'] ?? 1000;
    const rate = Math.max(100, Math.round(capacity / 2));
    say(`latency: open loop at ${fmt(rate)} tx/s (half the measured capacity), 2 pre-executors`);
    const open = await run(fresh(), {
      workload: bank(0),
      preExecutors: 2,
      mode: { kind: 'open', rate },
      transactions: rate * seconds,
      seconds,
      generators: 2,
      deadlineMs: 50,
    });
    m['open_loop_rate'] = rate;
    m['open_loop_p50_us'] = round(open.load.latencyUs?.p50 ?? NaN);
    m['open_loop_p99_us'] = round(open.load.latencyUs?.p99 ?? NaN);
    detail['open_loop'] = summary(open);
    for (const alpha of [0.8, 1.2]) await nodeCpu(alpha, 1, VARIANTS.slice(0, 1));

    // Compute-heavy work, pinned: node on core 0, pre-executor and load generators on core 1.
    const rounds = q ? 20_000 : 40_000;
    const work: LoadWorkload = { app: 'work', objects: 100_000, alpha: 0, rounds, seed: opts.seed };
    let model: Model | null = null;
    if (availableParallelism() >= 2 && pin('0')) {
      try {
        const pinnedRun = (pre: number) =>
          run(fresh(), {
            workload: work,
            preExecutors: pre,
            mode: { kind: 'closed', clients: 64 },
            transactions: q ? 8_000 : 20_000,
            seconds,
            generators: 1,
            deadlineMs: 2000,
            pinned: true,
          });
        say(`work (${fmt(rounds)} rounds), pinned: 0 pre-executors`);
        const p0 = await pinnedRun(0);
        say(`work (${fmt(rounds)} rounds), pinned: 1 pre-executor`);
        const p1 = await pinnedRun(1);
        m['pinned_tps_0_preexecutors'] = p0.tps;
        m['pinned_tps_1_preexecutor'] = p1.tps;
        m['pinned_node_cpu_us_per_tx_0'] = p0.node['total'] ?? NaN;
        m['pinned_node_cpu_us_per_tx_1'] = p1.node['total'] ?? NaN;
        m['pinned_pre_cpu_us_per_tx'] = p1.preCpuUs;
        detail['pinned'] = { p0: summary(p0), p1: summary(p1) };
        model = capacityModel(p0, p1);
        for (const k of [1, 2, 4, 8, 16, 32]) m[`model_tps_${k}_preexecutors`] = Math.round(model.predict(k));
      } finally {
        pin(`0-${availableParallelism() - 1}`);
      }
    }

    const settings = {
      quick: q,
      seed: opts.seed,
      bank: {
        accounts: 10_000,
        clients: 256,
        generators: 2,
        transactions_per_run: perRun,
        warmup_applied_per_run: warmupApplied,
        seconds_at_most: nodeCpuSeconds,
        interleaved_pairs_alpha_0: NODE_CPU_PAIRS[q ? 'quick' : 'full'],
        figure: 'node CPU: the median run of each side over the pairs (α 0); one pair at α 0.8 and 1.2',
        batch_sweep: {
          clients: SWEEP_CLIENTS[q ? 'quick' : 'full'],
          transactions_per_run: SWEEP_RUN[q ? 'quick' : 'full'],
          warmup_applied_per_run: SWEEP_RUN[q ? 'quick' : 'full'],
          figure: 'one adopted run each (2 pre-executors, 1 admission process), with the median adopted run at 256 clients',
        },
      },
      work: { rounds, objects: 100_000, clients: 64 },
      latency_1client: {
        transactions_measured: q ? 1500 : 4000,
        warmup_unmeasured: LATENCY_WARMUP[q ? 'quick' : 'full'],
        generators: 1,
        deadline_ms: 50,
        interleaved_pairs: LATENCY_PAIRS[q ? 'quick' : 'full'],
        figure: 'median over the pairs of each side',
      },
      adopt: {
        store_dir: huge
          ? 'tmpfs mounted huge=always for the run (2 MiB pages); *_4k_pages on tmpfs (/dev/shm) of 4 KiB pages'
          : existsSync(SHM)
            ? 'tmpfs (/dev/shm), 4 KiB pages (no huge-page tmpfs could be mounted: that takes root)'
            : 'the temporary directory',
        batch: 1024,
        reads_writes: '2 + 2',
        flatness: 'adopt_tps_native_1e4 / adopt_tps_native_1e7 (1e6 with --quick)',
      },
      note:
        'node CPU is getrusage of the node process (all threads) over the window divided by transactions applied; stages are ' +
        'time on its JavaScript thread inside each stage (ts/stages.ts), other = CPU minus stages; node_threads_cpu_us_per_tx splits ' +
        'the same CPU by thread (/proc/self/task, 10 ms ticks): main, runtime helpers (the collector, compiler, libuv pool) and the ' +
        "core's named threads; full_collections counts the node's full (mark-compact) collections in the window. Load generators are separate " +
        'processes that sign before the window. The node CPU runs submit through one admission process (its CPU is ' +
        "admission_processes_cpu_us_per_tx, not the node's); *_node_admits: the same runs with the node admitting its clients itself. Pinned runs: node on core 0, pre-executor and load generator on core 1 (taskset). " +
        'model_* figures are predicted by the capacity model or fitted (model_node_*: the batch sweep), not measured.',
    };
    mkdirSync(dirname(opts.out), { recursive: true });
    writeFileSync(`${opts.out}.tmp`, `${JSON.stringify({ suite: 'scale', machine, settings, metrics: m, detail, model: model?.describe ?? null }, null, 2)}\n`);
    renameSync(`${opts.out}.tmp`, opts.out);
    if (model) writeFileSync(opts.out.replace(/\.json$/, '') + '-model.svg', model.plot());
    process.stdout.write(
      `\n${Object.entries(m)
        .map(([k, v]) => `${k.padEnd(40)} ${v}`)
        .join('\n')}\nresults: ${opts.out}\n`,
    );
  } finally {
    huge?.close();
    rmSync(dir, { recursive: true, force: true });
    cancel();
  }
  return 0;
}

function summary(r: Run): Record<string, unknown> {
  return {
    tps: r.tps,
    applied: r.applied,
    node_cpu_us_per_tx: r.node,
    node_threads_cpu_us_per_tx: r.threads,
    pre_executors_cpu_us_per_tx: r.preCpuUs,
    admission_processes_cpu_us_per_tx: r.admissionCpuUs,
    load_generators_cpu_us_per_tx: r.loadCpuUs,
    adopted: r.adopted,
    reexecuted: r.reexecuted,
    executed: r.executed,
    tx_per_append: r.txPerAppend,
    full_collections: r.fullCollections,
    latency_us: r.load.latencyUs,
    committed: r.load.committed,
    aborted: r.load.aborted,
    rejected: r.load.rejected,
  };
}

interface Model {
  predict(k: number): number;
  describe: Record<string, unknown>;
  plot(): string;
}

/**
 * Least squares of cost = a + b / x over `points` of (x, cost): a per transaction, b per
 * batch of x; null with fewer than two distinct x.
 */
export function perBatchFit(points: readonly (readonly [x: number, cost: number])[]): { perTx: number; perBatch: number } | null {
  const ok = points.filter(([x, c]) => x > 0 && Number.isFinite(c));
  if (new Set(ok.map(([x]) => x)).size < 2) return null;
  const us = ok.map(([x]) => 1 / x);
  const mu = us.reduce((s, u) => s + u, 0) / ok.length;
  const mc = ok.reduce((s, [, c]) => s + c, 0) / ok.length;
  let num = 0;
  let den = 0;
  ok.forEach(([, c], i) => {
    const du = (us[i] as number) - mu;
    num += du * (c - mc);
    den += du * du;
  });
  const perBatch = num / den;
  return { perTx: mc - perBatch * mu, perBatch };
}

/**
 * Throughput with k pre-executors, each on a core of its own and the node on another: the
 * node applies at most 1/c_node transactions a second (its CPU per transaction when results
 * are adopted), and k pre-executors execute k/c_pre (their CPU per transaction). Without
 * pre-executors the node executes everything: 1/c_exec. From the pinned runs' measured costs.
 */
function capacityModel(p0: Run, p1: Run): Model {
  const cExec = p0.node['total'] ?? NaN;
  const cNode = p1.node['total'] ?? NaN;
  const cPre = p1.preCpuUs;
  const predict = (k: number) => (k === 0 ? 1e6 / cExec : Math.min(1e6 / cNode, (k * 1e6) / cPre));
  const ks = Array.from({ length: 32 }, (_, i) => i + 1);
  return {
    predict,
    describe: {
      formula: 'tps(0) = 1e6 / c_exec; tps(k) = min(1e6 / c_node, k * 1e6 / c_pre)',
      c_exec_us: cExec,
      c_node_us: cNode,
      c_pre_us: cPre,
      saturates_at_preexecutors: Math.ceil(cPre / cNode),
      measured: { 0: p0.tps, 1: p1.tps },
      note: 'measured at 1 pre-executor with the load generator sharing its core',
    },
    plot: () =>
      lineChart({
        title: 'Throughput by pre-executors (work app, pinned): predicted line, measured points',
        xLabel: 'pre-executors (each on its own core)',
        yLabel: 'transactions / s',
        series: [
          { name: 'predicted (model)', points: [[0, predict(0)], ...ks.map((k): [number, number] => [k, predict(k)])] },
          {
            name: 'measured',
            points: [
              [0, p0.tps],
              [1, p1.tps],
            ],
          },
        ],
      }),
  };
}
