// `remora demo`: an embedded cluster (sequencer + primary + pre-executor processes) runs the
// bank application for a bounded time, then checks itself against sequential execution.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nativeFunctions } from './app/natives.js';
import { executeSequentially } from './app/reference.js';
import type { Transaction } from './app/tx.js';
import { EmbeddedCluster } from './cluster.js';
import type { PrimaryStats } from './pipeline/primary.js';
import type { Policy } from './pipeline/scheduler.js';
import type { StateUpdate } from './pipeline/state-update.js';
import { readSequence } from './pipeline/sequencer.js';
import { atExit } from './process.js';
import { bankWorkload } from './workload.js';

export interface DemoOptions {
  seconds: number;
  accounts: number;
  alpha: number;
  concurrency: number;
  preExecutors: number;
  deadlineMs: number;
  policy: Policy;
  stateUpdate: StateUpdate;
  seed: number;
  dir?: string;
  /** Serve Prometheus metrics on this port (0: any free one); none if undefined. */
  metricsPort?: number;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (a: number, b: number) => (b === 0 ? '–' : `${((100 * a) / b).toFixed(1)} %`);

function quantile(sorted: Float64Array, q: number): number {
  return sorted.length === 0 ? NaN : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN);
}

function ms(ns: number): string {
  return `${(ns / 1e6).toFixed(2)} ms`;
}

export async function runDemo(o: DemoOptions): Promise<number> {
  const dir = o.dir ?? mkdtempSync(join(tmpdir(), 'remora-demo-'));
  const removeDir = o.dir === undefined ? atExit(() => rmSync(dir, { recursive: true, force: true })) : () => undefined;
  const say = (m: string) => process.stderr.write(`${m}\n`);
  say(
    `demo: bank, ${fmt(o.accounts)} accounts (Zipf α ${o.alpha}), ${o.preExecutors} pre-executor processes, ` +
      `${o.concurrency} clients in closed loop for ${o.seconds} s, policy ${o.policy}, state update ${o.stateUpdate}; seed ${o.seed}`,
  );
  const cluster = await EmbeddedCluster.start({
    dir,
    app: 'bank',
    preExecutors: o.preExecutors,
    deadlineMs: o.deadlineMs,
    policy: o.policy,
    stateUpdate: o.stateUpdate,
    ...(o.metricsPort !== undefined && { metricsPort: o.metricsPort }),
  });
  if (cluster.metricsPort !== null) say(`demo: metrics at http://127.0.0.1:${cluster.metricsPort}/metrics`);
  let ok = false;
  try {
    const work = bankWorkload({ accounts: o.accounts, alpha: o.alpha, seed: o.seed });
    await submitAll(cluster, work.setup);
    const before: PrimaryStats = { ...cluster.node.stats };
    const poolBefore = new Map(cluster.node.poolStats().map((p) => [p.name, p.executed]));
    const latencies: number[] = [];
    let committed = 0;
    let aborted = 0;
    const started = performance.now();
    const end = started + o.seconds * 1000;
    let lastTick = started;
    let lastCount = 0;
    const ticker = setInterval(() => {
      const now = performance.now();
      const done = Math.min(o.seconds, Math.round((now - started) / 1000));
      const bar = '#'.repeat(Math.round((30 * done) / o.seconds)).padEnd(30, '.');
      const s = cluster.node.stats;
      const rate = ((latencies.length - lastCount) * 1000) / (now - lastTick);
      [lastTick, lastCount] = [now, latencies.length];
      say(`[${bar}] ${done}/${o.seconds} s  ${fmt(rate)} tx/s  adopted ${pct(s.adopted - before.adopted, s.applied - before.applied)}`);
    }, 1000);
    const client = async () => {
      while (performance.now() < end) {
        const t0 = process.hrtime.bigint();
        const r = await cluster.node.submit(work.next());
        latencies.push(Number(process.hrtime.bigint() - t0));
        if (r.outcome?.status === 'ok') committed++;
        else aborted++;
      }
    };
    await Promise.all(Array.from({ length: o.concurrency }, client));
    clearInterval(ticker);
    const elapsed = (performance.now() - started) / 1000;
    const s = cluster.node.stats;
    const applied = s.applied - before.applied;
    const sorted = Float64Array.from(latencies).sort();
    const pool = cluster.node.poolStats();
    const digest = cluster.store.digest();
    await cluster.close();

    say('checking: re-executing the whole log sequentially…');
    const entries = await readSequence(join(dir, 'log'));
    const reference = executeSequentially(cluster.app, entries, nativeFunctions);
    ok = reference.state.digest() === digest;

    const out = [
      '',
      `remora demo: bank on an embedded cluster (sequencer + primary + ${o.preExecutors} pre-executors), 2-core machine`,
      `  throughput   ${fmt(latencies.length / elapsed)} tx/s (${fmt(latencies.length)} transfers in ${elapsed.toFixed(1)} s; ${fmt(committed)} committed, ${fmt(aborted)} aborted)`,
      `  latency      p50 ${ms(quantile(sorted, 0.5))}, p99 ${ms(quantile(sorted, 0.99))} (submit to final outcome)`,
      `  merge        adopted ${pct(s.adopted - before.adopted, applied)}, re-executed ${pct(s.reexecuted - before.reexecuted, applied)}, ` +
        `executed by the primary alone ${pct(s.executed - before.executed, applied)}`,
      `  signatures   ${fmt(s.nativeVerifies - before.nativeVerifies)} verified by the primary, ${fmt(s.authFromTables - before.authFromTables)} taken from lookup tables`,
      `  pre-executors ${pool.map((p) => `${p.name} ${fmt(p.executed - (poolBefore.get(p.name) ?? 0))}`).join(', ')} transactions`,
      `  check        primary state ${ok ? 'equals' : 'DIFFERS FROM'} sequential re-execution of all ${fmt(entries.length)} logged transactions`,
      `  result       ${ok ? 'ok' : 'FAILED'}`,
    ];
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
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
