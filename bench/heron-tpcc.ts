// `remora bench heron --app tpcc`: TPC-C on Heron partitions on one host, beside the Heron
// paper's TPC-C figures. New-Order latency from one closed-loop client split into ordering,
// coordination, execution and the reply (Figure 6), single- and multi-partition apart; then the
// full mix's throughput at 1, 2 and 4 partitions (one warehouse each) × 1 and 3 replicas from
// load-generator processes, each run followed by the consistency check, which must pass.
//
// Load generators run in processes of their own (the `heron-tpcc-loadgen` role below) so that
// the launcher's and the replicas' CPU is theirs alone: each builds and encodes its share of
// the mix before the window, then runs closed loop over the launcher's client socket.
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { encodeTxBytes } from '../ts/app/tx.js';
import { execute } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { MemoryState } from '../ts/app/state.js';
import { formatConsistency, memorySnapshot, tpccConsistency } from '../ts/apps/tpcc-check.js';
import { loadTpcc, TPCC_MODULE, type Submit } from '../ts/apps/tpcc-run.js';
import { TPCC_KINDS, TpccMix, type TpccKind, type TpccScale } from '../ts/apps/tpcc-workload.js';
import { tpccApp } from '../ts/apps/tpcc.js';
import { startSignal } from '../ts/cli/loadgen-role.js';
import { intOption, required } from '../ts/cli/options.js';
import { RemoraClient } from '../ts/client.js';
import { HeronCluster, type HeronReply } from '../ts/heron/cluster.js';
import { DIGEST_ZERO, nextDigest } from '../ts/heron/digest.js';
import { HERON_SOCKET, type Ordering } from '../ts/heron/messages.js';
import { destinations, partitionerOf } from '../ts/app/partition.js';
import { emptyGeneratorResult, GO_SIGNAL, runLoad, type GeneratorResult } from '../ts/loadgen.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { atExit, RoleProcess } from '../ts/process.js';
import { CLIENT_SECRET_FILE, readSecretFile } from '../ts/secret.js';
import { describeMachine, summariseMachine } from './machine.js';
import { barChart } from './plot.js';
import { processCpuSeconds } from './proc-cpu.js';

export interface HeronTpccOptions {
  quick: boolean;
  out: string;
  /** Seed of the mix (one stream, generators taking disjoint slices of it); printed, so a run can be replayed. */
  seed: number;
  /** Smaller than quick, for the smoke test: timed New-Orders per latency run, seconds per throughput window. */
  newOrders?: number;
  windowSeconds?: number;
}

type Metrics = Record<string, number>;

/** The Heron paper's TPC-C figures (Section V, Fig. 6, Table I), on its RDMA cluster. */
export const PAPER = {
  paper_tpcc_neworder_mean_us: 35.4,
  paper_tpcc_neworder_ordering_us: 18,
  paper_tpcc_neworder_coordination_us: 2,
  paper_tpcc_neworder_execution_us: 16,
  paper_tpcc_single_partition_mean_us: 19,
  paper_tpcc_multi_partition_mean_us: 35,
  paper_tpcc_tps_p2_r3: 53_340,
  paper_tpcc_tps_p4_r3: 92_808,
  paper_tpcc_mean_latency_p2_r3_us: 35.7,
  paper_tpcc_mean_latency_p4_r3_us: 41.3,
} as const;

const PAPER_MACHINE =
  'CloudLab XL170: one machine per replica (ten-core Intel E5-2640v4 at 2.4 GHz, 64 GB), Mellanox ConnectX-4 RDMA NICs on a 25 Gbps network, Java 11; clients on machines of their own';

/** Metrics the JSON always holds (the smoke test checks them). */
export const TPCC_REQUIRED_METRICS = [
  'tpcc_neworder_p50_us',
  'tpcc_neworder_p99_us',
  'tpcc_neworder_ordering_p50_us',
  'tpcc_neworder_coordination_p50_us',
  'tpcc_neworder_execution_p50_us',
  'tpcc_neworder_multi_p50_us',
  'tpcc_neworder_synced_p50_us',
  'tpcc_neworder_p1_r1_p50_us',
  ...[1, 2, 4].flatMap((p) => [1, 3].map((r) => `tpcc_tps_p${p}_r${r}`)),
] as const;

const PARTITIONS = [1, 2, 4] as const;
const REPLICAS = [1, 3] as const;
const LOADGEN_ROLE = 'heron-tpcc-loadgen';
/** Transactions of the mix the launcher submits itself before a throughput window. */
const WARMUP = 200;

const say = (m: string) => process.stderr.write(`${m}\n`);
const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;
const micros = (): number => Number(process.hrtime.bigint() / 1000n);
const mean = (xs: readonly number[]) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);

function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

/** The database: the app's default rows per warehouse, one warehouse per partition. */
const scaleFor = (warehouses: number): TpccScale => ({ warehouses, customers: 30, items: 1000 });

const isRollback = (r: { outcome: { status: string; reason?: string } | null }) =>
  r.outcome?.status === 'aborted' && (r.outcome.reason ?? '').startsWith('rollback: ');

// ---------------------------------------------------------------------------------------------
// New-Order latency (Figure 6)

/** One New-Order's legs, µs of the host's monotonic clock. */
interface Sample {
  multi: boolean;
  total: number;
  /** Submit to the replica taking it from the ring: admission, ordering (and the fsync when synced), the ring. */
  ordering: number;
  /** The part of `ordering` before the launcher put it into the ring. */
  sequencing: number;
  coordination: number;
  execution: number;
  /** At the replica, neither coordinating nor executing: waiting behind earlier transactions, encoding the reply. */
  replica: number;
  /** The replica's reply to the client's promise resolving. */
  reply: number;
}

const LEGS = ['ordering', 'coordination', 'execution', 'replica', 'reply'] as const;

function sampleOf(t0: number, t1: number, r: HeronReply): Sample {
  const t = r.timing;
  const coordination = t.phase2 + t.phase4;
  const total = t1 - t0;
  // Stamps from the replica split the rest; without them all of it counts as ordering.
  const arrived = t.arrived ?? t1 - coordination - t.execute;
  const sent = t.sent ?? t1;
  return {
    multi: r.dest.length > 1,
    total,
    ordering: Math.max(0, arrived - t0),
    sequencing: Math.max(0, r.orderedAt - t0),
    coordination,
    execution: t.execute,
    replica: Math.max(0, sent - arrived - coordination - t.execute),
    reply: Math.max(0, t1 - sent),
  };
}

/** The next New-Order of the mix (the others are drawn and dropped: inputs never depend on state). */
function nextNewOrder(mix: TpccMix) {
  for (;;) {
    const n = mix.next();
    if (n.kind === 'newOrder') return n.tx;
  }
}

async function newOrderLatency(dir: string, p: number, r: number, ordering: Ordering, ops: number, seed: number): Promise<Sample[]> {
  const cluster = await HeronCluster.start({ dir, app: TPCC_MODULE, partitions: p, replicas: r, ordering, log: () => undefined });
  const samples: Sample[] = [];
  try {
    const scale = scaleFor(p);
    await loadTpcc((tx) => cluster.submit(tx), scale);
    const mix = new TpccMix(scale, seed);
    const warmup = Math.min(50, Math.floor(ops / 4));
    for (let i = 0; i < ops + warmup; i++) {
      const tx = nextNewOrder(mix);
      const t0 = micros();
      const reply = await cluster.submit(tx);
      const t1 = micros();
      if (reply.outcome.status !== 'ok' && !isRollback(reply)) throw new Error(`New-Order aborted: ${reply.outcome.reason}`);
      if (i >= warmup) samples.push(sampleOf(t0, t1, reply));
    }
  } finally {
    await cluster.close();
  }
  if (cluster.divergences.length > 0 || cluster.outcomeMismatches.length > 0) {
    throw new Error(`replicas disagreed during the latency run: ${JSON.stringify([...cluster.divergences, ...cluster.outcomeMismatches])}`);
  }
  return samples;
}

/** p50/p99 of the totals, p50 of each leg, single- and multi-partition apart, means for the plot. */
function latencyMetrics(tag: string, samples: readonly Sample[], m: Metrics, means: boolean): void {
  const q = (xs: readonly Sample[], f: (s: Sample) => number, p: number) => round(percentile(xs.map(f), p));
  m[`${tag}_p50_us`] = q(samples, (s) => s.total, 50);
  m[`${tag}_p99_us`] = q(samples, (s) => s.total, 99);
  m[`${tag}_mean_us`] = round(mean(samples.map((s) => s.total)));
  m[`${tag}_count`] = samples.length;
  // Most New-Orders are single-partition, so the p50 of coordination is 0; the mean is Fig. 6's figure.
  for (const leg of LEGS) {
    m[`${tag}_${leg}_p50_us`] = q(samples, (s) => s[leg], 50);
    m[`${tag}_${leg}_mean_us`] = round(mean(samples.map((s) => s[leg])));
  }
  m[`${tag}_sequencing_p50_us`] = q(samples, (s) => s.sequencing, 50);
  const kinds = { single: samples.filter((s) => !s.multi), multi: samples.filter((s) => s.multi) };
  for (const [kind, xs] of Object.entries(kinds)) {
    m[`${tag}_${kind}_count`] = xs.length;
    // No multi-partition New-Order on one partition: no figure rather than a zero.
    if (xs.length === 0) continue;
    m[`${tag}_${kind}_p50_us`] = q(xs, (s) => s.total, 50);
    m[`${tag}_${kind}_p99_us`] = q(xs, (s) => s.total, 99);
    m[`${tag}_${kind}_coordination_p50_us`] = q(xs, (s) => s.coordination, 50);
    if (means) for (const leg of LEGS) m[`${tag}_${kind}_${leg}_mean_us`] = round(mean(xs.map((s) => s[leg])));
  }
}

// ---------------------------------------------------------------------------------------------
// Throughput: the mix from load-generator processes

/** What one TPC-C generator reports: the load loop's counts plus committed / rolled back / aborted by kind. */
export interface TpccGeneratorResult extends GeneratorResult {
  kinds: Record<TpccKind, { committed: number; rolledBack: number; aborted: number }>;
}

/**
 * `remora heron-tpcc-loadgen` (hidden): one TPC-C load generator, with the `loadgen` role's
 * protocol (ts/cli/loadgen-role.ts): it connects to the launcher's socket, builds and encodes
 * its transactions, prints `ready`, runs closed loop from the start signal for `--seconds` and
 * prints `result <json>` (a TpccGeneratorResult). Its transactions are `--transactions` of the
 * mix's one stream after `--skip`: generators take disjoint slices, and as every body carries
 * its place in the stream (the date or `ref`), no two are ever the same transaction (which the
 * log would answer as a duplicate instead of executing it).
 */
export async function heronTpccLoadgenRole(argv: string[]): Promise<never> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      warehouses: { type: 'string' },
      seed: { type: 'string' },
      skip: { type: 'string' },
      clients: { type: 'string' },
      transactions: { type: 'string' },
      seconds: { type: 'string' },
    },
  });
  const dir = required(values.dir, 'dir');
  const scale = scaleFor(intOption(values.warehouses, 'warehouses', 1, 1, 1024));
  const seed = intOption(values.seed, 'seed', 0, 0, 2 ** 31 - 1);
  const skip = intOption(values.skip, 'skip', 0, 0, 100_000_000);
  const clients = intOption(values.clients, 'clients', 16, 1, 10_000);
  const count = intOption(values.transactions, 'transactions', 10_000, 1, 10_000_000);
  const seconds = intOption(values.seconds, 'seconds', 10, 1, 3600);

  let stop: () => void = () => undefined;
  const signal = startSignal(() => stop());
  const client = await RemoraClient.connect({ path: join(dir, HERON_SOCKET), secret: readSecretFile(join(dir, CLIENT_SECRET_FILE)) });
  const t0 = performance.now();
  const mix = new TpccMix(scale, seed);
  for (let i = 0; i < skip; i++) mix.next();
  const txs = Array.from({ length: count }, () => {
    const { kind, tx } = mix.next();
    return { kind, bytes: encodeTxBytes(tx) };
  });
  const prepareMs = Math.round(performance.now() - t0);
  process.stdout.write(`ready ${JSON.stringify({ seed, transactions: txs.length, prepareMs })}\n`);

  const kinds = Object.fromEntries(TPCC_KINDS.map((k) => [k, { committed: 0, rolledBack: 0, aborted: 0 }])) as TpccGeneratorResult['kinds'];
  let result: GeneratorResult | null = null;
  if ((await signal) === 'go') {
    ({ result } = await runLoad(
      async (t: { kind: TpccKind; bytes: Buffer }) => {
        const reply = await client.submit(t.bytes);
        const k = kinds[t.kind];
        if (reply.duplicate) return reply;
        if (reply.outcome?.status === 'ok') k.committed++;
        else if (reply.outcome && isRollback({ outcome: reply.outcome })) k.rolledBack++;
        else k.aborted++;
        return reply;
      },
      txs,
      { mode: { kind: 'closed', clients }, seconds, drainSeconds: 30, seed, onStop: (s) => (stop = s) },
    ));
  }
  client.close();
  const now = Date.now();
  const none = emptyGeneratorResult(seed, now, now);
  process.stdout.write(`result ${JSON.stringify({ ...(result ?? none), kinds })}\n`);
  process.exit(0);
}

function checkGeneratorResult(v: unknown): TpccGeneratorResult {
  const ok =
    typeof v === 'object' &&
    v !== null &&
    ['sent', 'elapsed', 'startMs', 'endMs', 'cpuUs'].every((k) => typeof (v as Record<string, unknown>)[k] === 'number') &&
    typeof (v as Record<string, unknown>)['kinds'] === 'object';
  if (!ok) throw new Error(`${LOADGEN_ROLE} child printed a result without its counts: ${JSON.stringify(v)}`);
  return v as TpccGeneratorResult;
}

interface Throughput {
  tps: number;
  newOrderTps: number;
  transactions: number;
  seconds: number;
  rolledBack: number;
  duplicates: number;
  /** Aborts other than the specification's rollback, with the generators' reasons: must be none. */
  aborted: number;
  abortReasons: Record<string, number>;
  ranOut: boolean;
  replicaCpuUsPerTx: number;
  launcherCpuUsPerTx: number;
  loadgenCpuUsPerTx: number;
  p50Us: number;
  p99Us: number;
  consistency: string[];
  logged: number;
}

/**
 * Replays the log sequentially, as one machine would execute it: the replicas' digests must
 * be the replay's, partition by partition, and TPC-C's conditions 1–4 must hold on its state.
 * Throws, naming what failed.
 */
async function verify(
  dir: string,
  p: number,
  cluster: HeronCluster,
  summaries: Awaited<ReturnType<HeronCluster['close']>>,
): Promise<{ lines: string[]; logged: number }> {
  const problems: string[] = [...cluster.outcomeMismatches, ...cluster.divergences.map((d) => `divergence in partition ${d.partition} after ${d.applied}`)];
  const entries = await readSequence(join(dir, 'log'));
  const partitionOf = partitionerOf(tpccApp, p);
  const state = new MemoryState();
  const digests = Array.from({ length: p }, () => DIGEST_ZERO);
  for (const { ts, tx } of entries) {
    const { table } = execute(tpccApp, tx, state, nativeFunctions);
    state.apply(table.writes, ts);
    for (const h of destinations(tx.objects, partitionOf)) {
      const own = table.writes.filter(([id]) => partitionOf(id) === h).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      digests[h] = nextDigest(digests[h] ?? DIGEST_ZERO, ts, own);
    }
  }
  if (summaries.length !== p * cluster.opts.replicas) problems.push(`${summaries.length} of ${p * cluster.opts.replicas} replicas reported at the end`);
  for (const s of summaries) {
    if (s.digest !== digests[s.partition]) problems.push(`replica ${s.partition}.${s.replica}'s state differs from sequential execution of the log`);
  }
  const conditions = tpccConsistency(memorySnapshot(state));
  const lines = formatConsistency(conditions);
  for (const [i, c] of conditions.entries()) if (!c.ok) problems.push(lines[i] ?? `condition ${c.n} failed`);
  if (problems.length > 0)
    throw new Error(`TPC-C consistency check FAILED at ${p} partitions x ${cluster.opts.replicas} replicas:\n  ${problems.join('\n  ')}`);
  return { lines, logged: entries.length };
}

async function throughput(
  dir: string,
  p: number,
  r: number,
  o: { seconds: number; generators: number; clients: number; perGenerator: number; seed: number },
): Promise<Throughput> {
  const scale = scaleFor(p);
  const cluster = await HeronCluster.start({ dir, app: TPCC_MODULE, partitions: p, replicas: r, ordering: 'memory', log: () => undefined });
  let summaries: Awaited<ReturnType<HeronCluster['close']>> = [];
  const gens: RoleProcess[] = [];
  let results: TpccGeneratorResult[];
  let replicaCpu: number;
  let launcherCpu: number;
  try {
    const submit: Submit = (tx) => cluster.submit(tx);
    await loadTpcc(submit, scale);
    // A short in-process warm-up (the replicas' code paths compiled before the window): the
    // start of the stream the generators continue.
    const warm = new TpccMix(scale, o.seed);
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let i = 0; i < WARMUP / 4; i++) await submit(warm.next().tx);
      }),
    );
    const split = (total: number, i: number) => Math.floor(total / o.generators) + (i < total % o.generators ? 1 : 0);
    const started = await Promise.allSettled(
      Array.from({ length: o.generators }, (_, i) =>
        RoleProcess.start(
          LOADGEN_ROLE,
          [
            '--dir',
            dir,
            '--warehouses',
            String(p),
            '--seed',
            String(o.seed),
            '--skip',
            String(WARMUP + i * o.perGenerator),
            '--clients',
            String(split(o.clients, i)),
            '--transactions',
            String(o.perGenerator),
            '--seconds',
            String(o.seconds),
          ],
          { readyTimeoutMs: 120_000 },
        ),
      ),
    );
    for (const s of started) if (s.status === 'fulfilled') gens.push(s.value);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason instanceof Error ? failed.reason : new Error(String(failed.reason));
    const pids = [...cluster.replicas.values()].map((q) => q.pid);
    const cpu0 = pids.map(processCpuSeconds);
    const self0 = process.cpuUsage();
    for (const g of gens) g.kill(GO_SIGNAL);
    await Promise.all(gens.map((g) => g.exited));
    launcherCpu = (() => {
      const d = process.cpuUsage(self0);
      return d.user + d.system;
    })();
    replicaCpu = pids.map(processCpuSeconds).reduce((n, c, i) => n + (c - (cpu0[i] ?? 0)), 0) * 1e6;
    results = await Promise.all(gens.map(async (g) => checkGeneratorResult(await g.finish())));
  } catch (e) {
    await Promise.all(gens.map((g) => g.stop(2000)));
    await cluster.close();
    throw e;
  }
  summaries = await cluster.close();
  const { lines, logged } = await verify(dir, p, cluster, summaries);

  const sum = (f: (g: TpccGeneratorResult) => number) => results.reduce((n, g) => n + f(g), 0);
  const byKind = (f: (k: { committed: number; rolledBack: number; aborted: number }) => number, only?: TpccKind) =>
    sum((g) => TPCC_KINDS.filter((k) => only === undefined || k === only).reduce((n, k) => n + f(g.kinds[k]), 0));
  const done = byKind((k) => k.committed + k.rolledBack);
  const seconds = (Math.max(...results.map((g) => g.endMs)) - Math.min(...results.map((g) => g.startMs))) / 1000;
  const abortReasons: Record<string, number> = {};
  for (const g of results)
    for (const [why, n] of Object.entries(g.abortReasons)) if (!why.startsWith('rollback: ')) abortReasons[why] = (abortReasons[why] ?? 0) + n;
  for (const g of results)
    for (const [why, n] of Object.entries(g.rejectReasons)) abortReasons[`rejected: ${why}`] = (abortReasons[`rejected: ${why}`] ?? 0) + n;
  const aborted = byKind((k) => k.aborted) + sum((g) => g.rejected + g.unanswered);
  if (aborted > 0) throw new Error(`${aborted} TPC-C transactions failed other than by rollback at ${p} x ${r}: ${JSON.stringify(abortReasons)}`);
  const perTx = (us: number) => (done === 0 ? 0 : us / done);
  // Each generator's quantiles are its own; the median of theirs is reported, as an indication only.
  const lat = results.flatMap((g) => (g.latencyUs ? [g.latencyUs] : []));
  return {
    tps: seconds > 0 ? done / seconds : 0,
    newOrderTps: seconds > 0 ? byKind((k) => k.committed + k.rolledBack, 'newOrder') / seconds : 0,
    transactions: done,
    seconds,
    rolledBack: byKind((k) => k.rolledBack),
    duplicates: sum((g) => g.duplicates),
    aborted,
    abortReasons,
    ranOut: results.some((g) => g.ranOut),
    replicaCpuUsPerTx: perTx(replicaCpu),
    launcherCpuUsPerTx: perTx(launcherCpu),
    loadgenCpuUsPerTx: perTx(sum((g) => g.cpuUs)),
    p50Us: percentile(
      lat.map((l) => l.p50),
      50,
    ),
    p99Us: percentile(
      lat.map((l) => l.p99),
      50,
    ),
    consistency: lines,
    logged,
  };
}

// ---------------------------------------------------------------------------------------------

function plots(m: Metrics): string {
  const tput = barChart({
    title: 'TPC-C throughput, one warehouse per partition (memory ordering; 2 shared cores)',
    yLabel: 'transactions / s',
    groups: PARTITIONS.map((p) => `${p} partition${p > 1 ? 's' : ''}`),
    series: REPLICAS.map((r) => ({ name: `${r} replica${r > 1 ? 's' : ''}`, values: PARTITIONS.map((p) => m[`tpcc_tps_p${p}_r${r}`] ?? 0) })),
  });
  const legs = barChart({
    title: 'New-Order latency, 2 x 3, one client, memory ordering (mean µs; cf. Heron Fig. 6)',
    yLabel: 'mean µs',
    groups: ['all New-Orders', 'single-partition', 'multi-partition', 'Heron paper (all, RDMA)'],
    series: LEGS.map((leg) => ({
      name: leg,
      values: [
        m[`tpcc_neworder_${leg}_mean_us`] ?? 0,
        m[`tpcc_neworder_single_${leg}_mean_us`] ?? 0,
        m[`tpcc_neworder_multi_${leg}_mean_us`] ?? 0,
        leg === 'ordering'
          ? PAPER.paper_tpcc_neworder_ordering_us
          : leg === 'coordination'
            ? PAPER.paper_tpcc_neworder_coordination_us
            : leg === 'execution'
              ? PAPER.paper_tpcc_neworder_execution_us
              : 0,
      ],
    })),
  });
  // Two panels in one file: each chart is a complete SVG, nested at its own offset.
  const height = (svg: string) => Number(/height="(\d+)"/.exec(svg)?.[1] ?? 420);
  const width = (svg: string) => Number(/width="(\d+)"/.exec(svg)?.[1] ?? 900);
  const h1 = height(tput);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width(tput)}" height="${h1 + height(legs)}">`,
    tput.replace('<svg ', '<svg x="0" y="0" ').trimEnd(),
    legs.replace('<svg ', `<svg x="0" y="${h1}" `).trimEnd(),
    '</svg>',
    '',
  ].join('\n');
}

export async function runHeronTpcc(opts: HeronTpccOptions): Promise<number> {
  const machine = describeMachine();
  const ops = opts.newOrders ?? (opts.quick ? 150 : 1500);
  const seconds = opts.windowSeconds ?? (opts.quick ? 3 : 10);
  const generators = 2;
  const clientsFor = (p: number) => 16 * p;
  // Enough for the window at well above any rate this host reaches; a generator that runs out is reported.
  const perGenerator = opts.quick ? 8_000 : 40_000;
  const settings = {
    quick: opts.quick,
    seed: opts.seed,
    new_orders_per_latency_run: ops,
    window_seconds: seconds,
    load_generators: generators,
    clients_per_partition: clientsFor(1),
    transactions_per_generator: perGenerator,
    transport: 'shm',
    app: 'tpcc',
    scale: 'one warehouse per partition; per warehouse 10 districts, 30 customers a district, 1,000 items (docs/tpcc.md, Scale)',
    latency: `one closed-loop client in the launcher's process submitting New-Orders only (the mix's: 5-15 lines, 1 % rollbacks, 1 % of lines from another warehouse, so about 10 % of New-Orders span both partitions), ${ops} timed after a warm-up; 2 partitions x 3 replicas with in-memory ordering (tpcc_neworder_*, the headline: Heron's model), the same with ordering synced to disk (tpcc_neworder_synced_*), and 1 x 1 (tpcc_neworder_p1_r1_*)`,
    latency_legs:
      "ordering = submit to the first replying replica taking it from the ring (admission, the log or in-memory timestamp, the ring; sequencing = the part before the launcher's ring push); coordination = phase 2 + phase 4; execution = the command; replica = the rest of that replica's time (waiting for its turn, reply encoding); reply = the replica's reply reaching the client's promise. Stamps of the host's monotonic clock; p50 of each leg, means for the plot",
    throughput: `the full mix (45 % New-Order, 43 % Payment, 4 % each Order-Status, Delivery, Stock-Level) from ${generators} load-generator processes over the launcher's client socket, ${clientsFor(1)} closed-loop clients per partition in all, ${seconds} s window, in-memory ordering; one mix stream from the seed: its first ${WARMUP} transactions submitted by the launcher as a warm-up, then disjoint slices of it built and encoded by each generator before the window (so no two bodies are equal); tps counts committed and rolled-back transactions (rollbacks are the specification's)`,
    consistency:
      "after every throughput run the log is replayed sequentially: every replica's digest must equal the replay's for its partition and TPC-C's conditions 1-4 must hold on the replayed state; the bench fails otherwise",
    latency_under_load:
      'tpcc_latency_p50_us_* and _p99_us_*: the median over the load generators of their own p50 and p99 (quantiles of different generators do not combine; indicative only)',
    cpu: 'tpcc_replica_cpu_us_per_tx_*: CPU (user + system) of all replica processes over the window / transactions; tpcc_launcher_cpu_us_per_tx_*: the launcher (this process); tpcc_loadgen_cpu_us_per_tx_*: the generators',
    note: 'the host has 2 cores shared by every replica process (up to 12), the launcher and the load generators, and by other jobs: throughput cannot scale with partitions here (more partitions only add processes to the same 2 cores); CPU per transaction is the comparable figure. Heron ran one machine per replica with RDMA NICs',
    paper_machine: PAPER_MACHINE,
  };
  process.stdout.write(`remora bench heron --app tpcc (${opts.quick ? 'quick' : 'full'}), seed ${opts.seed}\nmachine: ${summariseMachine(machine)}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'remora-bench-heron-tpcc-'));
  const cancel = atExit(() => rmSync(dir, { recursive: true, force: true }));
  const m: Metrics = {};
  const consistency: Record<string, string[]> = {};
  let k = 0;
  const fresh = () => join(dir, `run-${k++}`);
  try {
    say(`New-Order latency: 2 x 3, in-memory ordering, ${ops} New-Orders`);
    latencyMetrics('tpcc_neworder', await newOrderLatency(fresh(), 2, 3, 'memory', ops, opts.seed), m, true);
    say(`New-Order latency: 2 x 3, ordering synced to disk, ${ops} New-Orders`);
    latencyMetrics('tpcc_neworder_synced', await newOrderLatency(fresh(), 2, 3, 'synced', ops, opts.seed), m, false);
    say(`New-Order latency: 1 x 1, in-memory ordering, ${ops} New-Orders`);
    latencyMetrics('tpcc_neworder_p1_r1', await newOrderLatency(fresh(), 1, 1, 'memory', ops, opts.seed), m, false);
    for (const p of PARTITIONS) {
      for (const r of REPLICAS) {
        say(`throughput: ${p} partition(s) x ${r} replica(s), ${clientsFor(p)} clients, ${seconds} s`);
        const t = await throughput(fresh(), p, r, { seconds, generators, clients: clientsFor(p), perGenerator, seed: opts.seed });
        const tag = `p${p}_r${r}`;
        m[`tpcc_tps_${tag}`] = Math.round(t.tps);
        m[`tpcc_neworder_tps_${tag}`] = Math.round(t.newOrderTps);
        m[`tpcc_transactions_${tag}`] = t.transactions;
        m[`tpcc_rolled_back_${tag}`] = t.rolledBack;
        m[`tpcc_duplicates_${tag}`] = t.duplicates;
        m[`tpcc_loadgen_ran_out_${tag}`] = t.ranOut ? 1 : 0;
        m[`tpcc_replica_cpu_us_per_tx_${tag}`] = round(t.replicaCpuUsPerTx);
        m[`tpcc_launcher_cpu_us_per_tx_${tag}`] = round(t.launcherCpuUsPerTx);
        m[`tpcc_loadgen_cpu_us_per_tx_${tag}`] = round(t.loadgenCpuUsPerTx);
        m[`tpcc_latency_p50_us_${tag}`] = round(t.p50Us);
        m[`tpcc_latency_p99_us_${tag}`] = round(t.p99Us);
        m[`tpcc_consistency_ok_${tag}`] = 1;
        consistency[tag] = t.consistency;
        say(`  ${m[`tpcc_tps_${tag}`]} tx/s; replicas ${m[`tpcc_replica_cpu_us_per_tx_${tag}`]} µs CPU/tx; ${t.logged} logged; consistency ok`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    cancel();
  }

  mkdirSync(dirname(opts.out), { recursive: true });
  const svg = opts.out.replace(/\.json$/, '') + '.svg';
  writeFileSync(svg, plots(m));
  const tmp = `${opts.out}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ suite: 'heron-tpcc', machine, settings, metrics: m, paper: PAPER, consistency, plots: { tpcc: svg } }, null, 2)}\n`);
  renameSync(tmp, opts.out);
  const lines = Object.entries(m).map(([key, v]) => `${key.padEnd(48)} ${v}`);
  process.stdout.write(`${lines.join('\n')}\nresults: ${opts.out}\nplot: ${svg}\n`);
  return 0;
}
