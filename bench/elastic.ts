// `remora bench elastic`: scheduling policies and state-update strategies on bank with Zipfian
// skew, by adoption, primary CPU per transaction and throughput; then a load that steps up and
// down under the autoscaler, with the pool size over time. JSON plus one SVG per experiment.
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { EmbeddedCluster } from '../ts/cluster.js';
import { POLICIES, type Policy } from '../ts/pipeline/scheduler.js';
import { STATE_UPDATES, type StateUpdate } from '../ts/pipeline/state-update.js';
import { atExit } from '../ts/process.js';
import { bankWorkload } from '../ts/workload.js';
import { describeMachine, summariseMachine } from './machine.js';
import { barChart, lineChart } from './plot.js';

export interface ElasticOptions {
  quick: boolean;
  out: string;
  seed: number;
}

type Metrics = Record<string, number>;

const ALPHAS = [0, 0.8, 1.2] as const;
const ACCOUNTS = 1000;
const CLIENTS = 128;
const PRE_EXECUTORS = 2;

interface RunResult {
  tps: number;
  adopted: number;
  reexecuted: number;
  /** Time the primary spent merging and storing, per applied transaction (µs). */
  primaryUsPerTx: number;
}

const say = (m: string) => process.stderr.write(`${m}\n`);
const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;

interface Variant {
  policy: Policy;
  stateUpdate: StateUpdate;
  speculation: boolean;
}

/** One cluster, `clients` closed-loop bank clients for `seconds`, measured after set-up. */
async function run(dir: string, alpha: number, v: Variant, seconds: number, seed: number): Promise<RunResult> {
  let mergeMs = 0;
  const cluster = await EmbeddedCluster.start({
    dir,
    app: 'bank',
    preExecutors: PRE_EXECUTORS,
    deadlineMs: 50,
    ...v,
    onMerged: (ms) => (mergeMs += ms),
  });
  try {
    const work = bankWorkload({ accounts: ACCOUNTS, alpha, seed });
    await Promise.all(work.setup.map((tx) => cluster.node.submit(tx)));
    const before = { ...cluster.node.stats };
    mergeMs = 0;
    let done = 0;
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (performance.now() < end) {
          await cluster.node.submit(work.next());
          done++;
        }
      }),
    );
    const elapsed = (performance.now() - t0) / 1000;
    const s = cluster.node.stats;
    const applied = Math.max(1, s.applied - before.applied);
    return {
      tps: Math.round(done / elapsed),
      adopted: round((s.adopted - before.adopted) / applied, 3),
      reexecuted: round((s.reexecuted - before.reexecuted) / applied, 3),
      primaryUsPerTx: round((mergeMs * 1000) / applied, 1),
    };
  } finally {
    await cluster.close();
  }
}

/** Load steps 8 → 256 → 8 clients under the autoscaler; the pool size is sampled throughout. */
async function step(dir: string, phaseSeconds: number, seed: number, m: Metrics) {
  const phases = [8, 256, 8];
  const samples: { t: number; clients: number; pool: number; tps: number }[] = [];
  const events: string[] = [];
  const cluster = await EmbeddedCluster.start({
    dir,
    app: 'bank',
    preExecutors: 1,
    deadlineMs: 50,
    autoscale: { min: 1, max: 4, intervalMs: 250, patience: 2 },
    onScale: (d, pool) => events.push(`${d}:${pool}`),
  });
  try {
    const work = bankWorkload({ accounts: ACCOUNTS, alpha: 0.8, seed });
    await Promise.all(work.setup.map((tx) => cluster.node.submit(tx)));
    let clients = 0;
    let done = 0;
    const t0 = performance.now();
    let [lastT, lastDone] = [t0, 0];
    const sampler = setInterval(() => {
      const now = performance.now();
      const tps = ((done - lastDone) * 1000) / (now - lastT);
      [lastT, lastDone] = [now, done];
      samples.push({ t: round((now - t0) / 1000, 2), clients, pool: cluster.node.members.length, tps: Math.round(tps) });
    }, 250);
    for (const [i, n] of phases.entries()) {
      say(`  phase ${i + 1}: ${n} clients for ${phaseSeconds} s (pool ${cluster.node.members.length})`);
      clients = n;
      const end = performance.now() + phaseSeconds * 1000;
      await Promise.all(
        Array.from({ length: n }, async () => {
          while (performance.now() < end) {
            await cluster.node.submit(work.next());
            done++;
          }
        }),
      );
    }
    clearInterval(sampler);
    const poolIn = (phase: number) => {
      const inPhase = samples.filter((s) => s.t > phase * phaseSeconds && s.t <= (phase + 1) * phaseSeconds);
      return Math.max(0, ...inPhase.map((s) => s.pool));
    };
    m['step_pool_max_low_load_start'] = poolIn(0);
    m['step_pool_max_high_load'] = poolIn(1);
    m['step_pool_at_end'] = samples.at(-1)?.pool ?? NaN;
    m['step_scale_events'] = events.length;
    return { samples, events };
  } finally {
    await cluster.close();
  }
}

/** The experiments: each varies one thing against the same base. */
const BASE: Variant = { policy: 'load+affinity+hot', stateUpdate: 'broadcast', speculation: true };
const EXPERIMENTS: { name: string; title: string; label: (v: Variant) => string; variants: Variant[] }[] = [
  {
    name: 'policies',
    title: 'Scheduling policy (state update broadcast, speculation on)',
    label: (v) => v.policy,
    variants: POLICIES.map((policy) => ({ ...BASE, policy })),
  },
  {
    name: 'state-updates',
    title: `State update (policy ${BASE.policy}, speculation on)`,
    label: (v) => v.stateUpdate,
    variants: STATE_UPDATES.map((stateUpdate) => ({ ...BASE, stateUpdate })),
  },
  {
    name: 'speculation',
    title: `Speculation (policy ${BASE.policy}, state update broadcast)`,
    label: (v) => (v.speculation ? 'speculation on' : 'speculation off'),
    variants: [true, false].map((speculation) => ({ ...BASE, speculation })),
  },
];

const keyOf = (alpha: number, v: Variant) =>
  `alpha_${String(alpha).replace('.', '_')}_${v.policy.replace(/\+/g, '_')}_${v.stateUpdate}_spec_${v.speculation ? 'on' : 'off'}`;

export async function runElastic(opts: ElasticOptions): Promise<number> {
  const machine = describeMachine();
  const seconds = opts.quick ? 1.5 : 4;
  const phaseSeconds = opts.quick ? 3 : 8;
  const settings = {
    quick: opts.quick,
    seed: opts.seed,
    app: 'bank (ed25519-signed transfers)',
    accounts: ACCOUNTS,
    alphas: [...ALPHAS],
    clients: CLIENTS,
    pre_executors: PRE_EXECUTORS,
    deadline_ms: 50,
    seconds_per_run: seconds,
    base: BASE,
    step_phases_clients: [8, 256, 8],
    step_phase_seconds: phaseSeconds,
    autoscale: { min: 1, max: 4, interval_ms: 250, patience: 2, high_queue: 64, low_queue: 8 },
    primary_us_per_tx: "the primary's merge-and-store time per applied transaction (the onMerged hook), excluding waits",
    note: 'the machine has 2 cores shared by the node, the clients and every pre-executor process: more pre-executors cannot add CPU here, so the step run shows the pool following load, not throughput scaling',
  };
  process.stdout.write(`remora bench elastic (${opts.quick ? 'quick' : 'full'})\nmachine: ${summariseMachine(machine)}\nseed ${opts.seed}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'remora-bench-elastic-'));
  const cancel = atExit(() => rmSync(dir, { recursive: true, force: true }));
  const m: Metrics = {};
  const results = new Map<string, RunResult>();
  let stepRun: Awaited<ReturnType<typeof step>>;
  try {
    let k = 0;
    for (const e of EXPERIMENTS) {
      for (const alpha of ALPHAS) {
        for (const v of e.variants) {
          const key = keyOf(alpha, v);
          if (results.has(key)) continue; // the base appears in every experiment
          say(`${e.name}: alpha ${alpha}, ${v.policy}, ${v.stateUpdate}, speculation ${v.speculation ? 'on' : 'off'}: ${seconds} s`);
          const r = await run(join(dir, `run-${k++}`), alpha, v, seconds, opts.seed);
          results.set(key, r);
          m[`${key}_tps`] = r.tps;
          m[`${key}_adopted_share`] = r.adopted;
          m[`${key}_reexecuted_share`] = r.reexecuted;
          m[`${key}_primary_us_per_tx`] = r.primaryUsPerTx;
        }
      }
    }
    say('step load under the autoscaler');
    stepRun = await step(join(dir, 'step'), phaseSeconds, opts.seed, m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    cancel();
  }

  mkdirSync(dirname(opts.out), { recursive: true });
  const base = opts.out.replace(/\.json$/, '');
  const plots: Record<string, string> = {};
  const lines: string[] = [];
  for (const e of EXPERIMENTS) {
    const get = (alpha: number, v: Variant) => results.get(keyOf(alpha, v)) as RunResult;
    const file = `${base}-${e.name}.svg`;
    plots[e.name] = file;
    writeFileSync(
      file,
      barChart({
        title: `${e.title}: adoption`,
        yLabel: 'adopted %',
        groups: e.variants.map(e.label),
        series: ALPHAS.map((alpha) => ({ name: `Zipf α ${alpha}`, values: e.variants.map((v) => get(alpha, v).adopted * 100) })),
      }),
    );
    lines.push('', `${e.title}`, 'alpha  variant             tx/s   adopted  re-executed  primary µs/tx');
    for (const alpha of ALPHAS) {
      for (const v of e.variants) {
        const r = get(alpha, v);
        lines.push(
          `${String(alpha).padEnd(6)} ${e.label(v).padEnd(18)} ${String(r.tps).padStart(6)}  ${(r.adopted * 100).toFixed(1).padStart(6)} %  ` +
            `${(r.reexecuted * 100).toFixed(1).padStart(9)} %  ${r.primaryUsPerTx.toFixed(1).padStart(12)}`,
        );
      }
    }
  }
  plots['step'] = `${base}-step.svg`;
  writeFileSync(
    `${base}-step.svg`,
    lineChart({
      title: 'Pool size following load (autoscaler, bank α 0.8)',
      xLabel: 'seconds',
      yLabel: 'pre-executors / clients ÷ 64 / tx/s ÷ 1000',
      series: [
        { name: 'pre-executors', points: stepRun.samples.map((s) => [s.t, s.pool]), step: true },
        { name: 'clients ÷ 64', points: stepRun.samples.map((s) => [s.t, s.clients / 64]), step: true },
        { name: 'tx/s ÷ 1000', points: stepRun.samples.map((s) => [s.t, s.tps / 1000]) },
      ],
    }),
  );
  const tmp = `${opts.out}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ suite: 'elastic', machine, settings, metrics: m, plots, step: stepRun }, null, 2)}\n`);
  renameSync(tmp, opts.out);
  lines.push(
    '',
    `step load: pool max ${m['step_pool_max_low_load_start']} at 8 clients, ${m['step_pool_max_high_load']} at 256, ` +
      `${m['step_pool_at_end']} at the end; events ${stepRun.events.join(' ') || 'none'}`,
  );
  process.stdout.write(`${lines.join('\n')}\nresults: ${opts.out}\nplots: ${Object.values(plots).join(', ')}\n`);
  return 0;
}
