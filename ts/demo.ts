// `remora demo`: an embedded cluster (sequencer + primary + pre-executor processes) runs the
// bank (or the compute-bound `work`) application for a bounded time, then checks itself against
// sequential execution.
//
// The clients are load-generator processes (ts/loadgen.ts), not loops in this process: this
// process hosts only the node, so its CPU over the window is the node's, and the demo reports it
// per transaction. Only the bank's set-up (opening and minting accounts) is submitted from here,
// before the window.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nativeFunctions } from './app/natives.js';
import { executeSequentially } from './app/reference.js';
import type { Transaction } from './app/tx.js';
import { WORK_MAX_ROUNDS } from './apps/index.js';
import { runTpccDemo } from './apps/tpcc-demo.js';
import { intOption, UsageError } from './cli/options.js';
import { EmbeddedCluster } from './cluster.js';
import { startLoadGenerators, type LoadMode, type LoadWorkload } from './loadgen.js';
import type { PrimaryStats } from './pipeline/primary.js';
import { YOUNG_SLACK, type Policy } from './pipeline/scheduler.js';
import type { StateUpdate } from './pipeline/state-update.js';
import { readSequence } from './pipeline/sequencer.js';
import { atExit } from './process.js';
import { bankWorkload } from './workload.js';

export type DemoApp = 'bank' | 'work' | 'tpcc';

export interface DemoOptions {
  seconds: number;
  /** Bank accounts, or `work` counters. */
  accounts: number;
  alpha: number;
  /** Closed-loop clients over all generators (unless `rate`). */
  concurrency: number;
  preExecutors: number;
  /** Admission processes the generators submit through (default 0: to the node itself). */
  admissions?: number;
  deadlineMs: number;
  policy: Policy;
  stateUpdate: StateUpdate;
  seed: number;
  dir?: string;
  /** Serve Prometheus metrics on this port (0: any free one); none if undefined. */
  metricsPort?: number;
  /** Default `bank`. */
  app?: DemoApp;
  /** Mixing rounds per `work` transaction (default `DEMO_WORK_ROUNDS`). */
  rounds?: number;
  /** Load-generator processes (default 1). */
  generators?: number;
  /** Transactions built before the window (default: `DEMO_TRANSACTIONS_PER_SECOND` × seconds, or rate × seconds). */
  transactions?: number;
  /** Open loop at this many transactions a second over all generators, instead of closed-loop clients. */
  rate?: number;
}

/** Transactions prepared per second of demo: above what 2 cores sustain, so the time limit ends the run. */
export const DEMO_TRANSACTIONS_PER_SECOND = 12_000;
/** ~35 µs of mixing a transaction on a 2-core cloud machine, about an ed25519 verification's cost. */
export const DEMO_WORK_ROUNDS = 10_000;

/** The demo's load options (`--app`, `--rounds`, `--generators`, `--transactions`, `--rate`), checked. */
export function demoLoadOptions(v: {
  app?: string | undefined;
  rounds?: string | undefined;
  generators?: string | undefined;
  transactions?: string | undefined;
  rate?: string | undefined;
}): Pick<DemoOptions, 'app' | 'rounds' | 'generators' | 'transactions' | 'rate'> {
  const app = v.app ?? 'bank';
  if (app !== 'bank' && app !== 'work' && app !== 'tpcc') throw new UsageError(`--app must be bank, work or tpcc for the demo, got '${app}'`);
  return {
    app,
    rounds: intOption(v.rounds, 'rounds', DEMO_WORK_ROUNDS, 0, WORK_MAX_ROUNDS),
    generators: intOption(v.generators, 'generators', 1, 1, 64),
    ...(v.transactions !== undefined && { transactions: intOption(v.transactions, 'transactions', 0, 1, 100_000_000) }),
    ...(v.rate !== undefined && { rate: intOption(v.rate, 'rate', 0, 1, 10_000_000) }),
  };
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (a: number, b: number) => (b === 0 ? '–' : `${((100 * a) / b).toFixed(1)} %`);
const ms = (us: number | undefined) => (us === undefined ? '–' : `${(us / 1000).toFixed(2)} ms`);

export async function runDemo(o: DemoOptions): Promise<number> {
  const app = o.app ?? 'bank';
  if (app === 'tpcc') return runTpccDemo(o);
  const rounds = o.rounds ?? DEMO_WORK_ROUNDS;
  const generators = o.generators ?? 1;
  if (o.rate === undefined && o.concurrency < generators) throw new UsageError(`--clients ${o.concurrency} cannot be split over ${generators} generators`);
  if (app === 'bank' && o.accounts < generators) throw new UsageError(`${generators} bank generators need at least ${generators} accounts`);
  const mode: LoadMode = o.rate === undefined ? { kind: 'closed', clients: o.concurrency } : { kind: 'open', rate: o.rate };
  const transactions = o.transactions ?? Math.ceil((o.rate ?? DEMO_TRANSACTIONS_PER_SECOND) * o.seconds);
  const dir = o.dir ?? mkdtempSync(join(tmpdir(), 'remora-demo-'));
  const removeDir = o.dir === undefined ? atExit(() => rmSync(dir, { recursive: true, force: true })) : () => undefined;
  const say = (m: string) => process.stderr.write(`${m}\n`);
  const what = app === 'bank' ? `bank, ${fmt(o.accounts)} accounts` : `work, ${fmt(rounds)} rounds a transaction on ${fmt(o.accounts)} counters`;
  const load = mode.kind === 'closed' ? `${o.concurrency} clients in closed loop` : `open loop at ${fmt(mode.rate)} tx/s`;
  say(
    `demo: ${what} (Zipf α ${o.alpha}), ${o.preExecutors} pre-executor processes, ${o.admissions ? `${o.admissions} admission processes, ` : ''}` +
      `${load} for ${o.seconds} s, policy ${o.policy}, state update ${o.stateUpdate}; seed ${o.seed}`,
  );
  const cluster = await EmbeddedCluster.start({
    dir,
    app,
    preExecutors: o.preExecutors,
    admissions: o.admissions ?? 0,
    deadlineMs: o.deadlineMs,
    policy: o.policy,
    stateUpdate: o.stateUpdate,
    ...(o.metricsPort !== undefined && { metricsPort: o.metricsPort }),
  });
  if (cluster.metricsPort !== null) say(`demo: metrics at http://127.0.0.1:${cluster.metricsPort}/metrics`);
  let ok = false;
  let stopGenerators: () => Promise<void> = () => Promise.resolve();
  try {
    const workload: LoadWorkload =
      app === 'bank' ? { app, accounts: o.accounts, alpha: o.alpha, seed: o.seed } : { app, objects: o.accounts, alpha: o.alpha, rounds, seed: o.seed };
    if (app === 'bank') await submitAll(cluster, bankWorkload({ accounts: o.accounts, alpha: o.alpha, seed: o.seed }).setup);
    say(
      `demo: ${generators} load generator process${generators === 1 ? '' : 'es'} ` +
        `(seed${generators === 1 ? ` ${o.seed}` : `s ${o.seed}..${o.seed + generators - 1}`}) preparing ${fmt(transactions)} transactions…`,
    );
    const gens = await startLoadGenerators({ dir, sockets: cluster.admissionSockets, count: generators, workload, mode, transactions, seconds: o.seconds });
    stopGenerators = () => gens.close();
    say(`demo: generators ready (built and signed in ${(Math.max(...gens.prepareMs) / 1000).toFixed(1)} s); go`);

    const before: PrimaryStats = { ...cluster.node.stats };
    const poolBefore = new Map(cluster.node.poolStats().map((p) => [p.name, p.executed]));
    const started = performance.now();
    let [lastTick, lastApplied] = [started, before.applied];
    const ticker = setInterval(() => {
      const now = performance.now();
      const done = Math.min(o.seconds, Math.round((now - started) / 1000));
      const bar = '#'.repeat(Math.round((30 * done) / o.seconds)).padEnd(30, '.');
      const s = cluster.node.stats;
      const rate = ((s.applied - lastApplied) * 1000) / (now - lastTick);
      [lastTick, lastApplied] = [now, s.applied];
      say(`[${bar}] ${done}/${o.seconds} s  ${fmt(rate)} tx/s  adopted ${pct(s.adopted - before.adopted, s.applied - before.applied)}`);
    }, 1000);
    // The window: from the start signal to the last generator's exit. This process runs the
    // node and nothing else meanwhile (the ticker aside), so its CPU is the node's.
    const cpu0 = process.cpuUsage();
    gens.go();
    await gens.finished();
    const cpu = process.cpuUsage(cpu0);
    clearInterval(ticker);
    const r = await gens.results();
    const s = cluster.node.stats;
    const applied = s.applied - before.applied;
    const answered = r.committed + r.aborted;
    const pool = cluster.node.poolStats();
    const slack = cluster.node.scheduler.slack;
    const digest = cluster.store.digest();
    await cluster.close();

    if (answered > 0) say(`demo: the load generators spent ${fmt(r.cpuUs / answered)} µs of CPU per transaction (not the node's)`);
    say('checking: re-executing the whole log sequentially…');
    const entries = await readSequence(join(dir, 'log'));
    const reference = executeSequentially(cluster.app, entries, nativeFunctions);
    ok = reference.state.digest() === digest && r.unanswered === 0;

    const noun = app === 'bank' ? 'transfers' : 'transactions';
    const handed = pool.map((p) => ({ name: p.name, n: p.executed - (poolBefore.get(p.name) ?? 0) }));
    const total = handed.reduce((sum, p) => sum + p.n, 0);
    // Affinity keeps transactions on the same objects together, so under skew one member may
    // take nearly everything while it keeps up: said, so an idle member is not taken for a fault.
    const lopsided = handed.length > 1 && total > 0 && Math.max(...handed.map((p) => p.n)) >= 0.9 * total && o.policy.includes('affinity');
    const notes = [...(r.rejected > 0 ? [`${fmt(r.rejected)} rejected`] : []), ...(r.unanswered > 0 ? [`${fmt(r.unanswered)} UNANSWERED`] : [])];
    const out = [
      '',
      `remora demo: ${app} on an embedded cluster (sequencer + primary + ${o.preExecutors} pre-executors` +
        `${o.admissions ? ` + ${o.admissions} admission processes, whose CPU is not the node's` : ''}), 2-core machine`,
      `  throughput   ${fmt(r.elapsed > 0 ? answered / r.elapsed : 0)} tx/s (${fmt(answered)} ${noun} in ${r.elapsed.toFixed(1)} s; ` +
        `${fmt(r.committed)} committed, ${fmt(r.aborted)} aborted${notes.map((n) => `, ${n}`).join('')})` +
        (r.ranOut ? `; the generators ran out of transactions, raise --transactions` : ''),
      `  latency      p50 ${ms(r.latencyUs?.p50)}, p99 ${ms(r.latencyUs?.p99)} (submit to final outcome, ${generators} load generator process${generators === 1 ? '' : 'es'})`,
      `  node CPU     ${applied === 0 ? '–' : fmt((cpu.user + cpu.system) / applied)} µs per transaction (node process, all threads, during the window)`,
      `  merge        adopted ${pct(s.adopted - before.adopted, applied)}, re-executed ${pct(s.reexecuted - before.reexecuted, applied)}, ` +
        `executed by the primary alone ${pct(s.executed - before.executed, applied)}`,
      `  signatures   ${fmt(s.nativeVerifies - before.nativeVerifies)} verified by the primary, ${fmt(s.authFromTables - before.authFromTables)} taken from lookup tables`,
      `  pre-executors ${handed.map((p) => `${p.name} ${fmt(p.n)}`).join(', ')} transactions` +
        (lopsided
          ? ` (policy ${o.policy} keeps ${noun} on the same ${app === 'bank' ? 'accounts' : 'objects'} on one pre-executor, ` +
            `which chains them without conflicts; others get work once it owes ${slack} more results than they do ` +
            `(${YOUNG_SLACK * slack} while a transaction's objects were just handed to it)` +
            `${o.policy.includes('hot') ? ', except for hot objects' : ''}: docs/pipeline.md, Scheduling)`
          : ''),
      `  check        primary state ${reference.state.digest() === digest ? 'equals' : 'DIFFERS FROM'} sequential re-execution of all ${fmt(entries.length)} logged transactions`,
      `  result       ${ok ? 'ok' : 'FAILED'}`,
    ];
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    await stopGenerators();
    await cluster.close();
    removeDir();
    if (o.dir === undefined) rmSync(dir, { recursive: true, force: true });
  }
  return ok ? 0 : 1;
}

async function submitAll(cluster: EmbeddedCluster, txs: readonly Transaction[]): Promise<void> {
  const replies = await Promise.all(txs.map((tx) => cluster.node.submit(tx)));
  const failed = replies.find((r) => r.outcome?.status !== 'ok');
  if (failed) throw new Error(`demo set-up transaction failed: ${JSON.stringify(failed.outcome)}`);
}
