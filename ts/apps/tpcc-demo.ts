// `remora demo --app tpcc`: an embedded cluster loads W warehouses, runs the TPC-C mix from
// closed-loop clients in this process for a bounded time, then checks the primary's state
// against sequential re-execution and against TPC-C's consistency conditions 1–4.
//
// Unlike the bank demo there are no load-generator processes: the mix is unsigned and cheap to
// build, and New-Order latency (what Heron's Figure 6 reports) is measured per transaction here.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nativeFunctions } from '../app/natives.js';
import { executeSequentially } from '../app/reference.js';
import { EmbeddedCluster } from '../cluster.js';
import type { DemoOptions } from '../demo.js';
import { readSequence } from '../pipeline/sequencer.js';
import { atExit } from '../process.js';
import { formatConsistency, memorySnapshot, tpccConsistency } from './tpcc-check.js';
import { loadTpcc, quantile, runTpccMix, storeSnapshot, TPCC_MODULE } from './tpcc-run.js';
import { TPCC_DEFAULT_SCALE, TPCC_KINDS, TpccMix, type TpccScale } from './tpcc-workload.js';

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (us: number | undefined) => (us === undefined ? '–' : `${(us / 1000).toFixed(2)} ms`);
const pct = (a: number, b: number) => (b === 0 ? '–' : `${((100 * a) / b).toFixed(1)} %`);

export async function runTpccDemo(o: DemoOptions & { scale?: TpccScale }): Promise<number> {
  const scale = o.scale ?? TPCC_DEFAULT_SCALE;
  const dir = o.dir ?? mkdtempSync(join(tmpdir(), 'remora-demo-'));
  const removeDir = o.dir === undefined ? atExit(() => rmSync(dir, { recursive: true, force: true })) : () => undefined;
  const say = (m: string) => process.stderr.write(`${m}\n`);
  // The specification's 10 terminals a warehouse (without their think times): more clients only queue on
  // the warehouse and district rows every Payment and New-Order writes.
  const clients = Math.max(1, Math.min(o.concurrency, 10 * scale.warehouses));
  say(
    `demo: tpcc, ${scale.warehouses} warehouses (${fmt(scale.customers)} customers a district, ${fmt(scale.items)} items), ` +
      `${o.preExecutors} pre-executor processes, ${clients} clients in closed loop for ${o.seconds} s, policy ${o.policy}, ` +
      `state update ${o.stateUpdate}; seed ${o.seed}`,
  );
  const cluster = await EmbeddedCluster.start({
    dir,
    app: TPCC_MODULE,
    preExecutors: o.preExecutors,
    deadlineMs: o.deadlineMs,
    policy: o.policy,
    stateUpdate: o.stateUpdate,
    ...(o.metricsPort !== undefined && { metricsPort: o.metricsPort }),
  });
  let ok = false;
  try {
    const submit = (tx: Parameters<typeof cluster.node.submit>[0]) => cluster.node.submit(tx);
    const t0 = performance.now();
    const loadTxs = await loadTpcc(submit, scale);
    const loadS = (performance.now() - t0) / 1000;
    say(`demo: loaded in ${loadS.toFixed(1)} s (${fmt(loadTxs)} load transactions); go`);

    const before = { ...cluster.node.stats };
    const run = await runTpccMix(submit, new TpccMix(scale, o.seed), {
      clients,
      transactions: o.transactions ?? Number.MAX_SAFE_INTEGER,
      seconds: o.seconds,
    });
    const s = cluster.node.stats;
    const applied = s.applied - before.applied;
    const primary = tpccConsistency(storeSnapshot(cluster.store));
    const digest = cluster.store.digest();
    await cluster.close();

    say('checking: re-executing the whole log sequentially…');
    const entries = await readSequence(join(dir, 'log'));
    const reference = executeSequentially(cluster.app, entries, nativeFunctions);
    const same = reference.state.digest() === digest;
    const conditions = tpccConsistency(memorySnapshot(reference.state));
    ok = same && primary.every((c) => c.ok) && conditions.every((c) => c.ok) && run.abortReasons.length === 0;

    const answered = TPCC_KINDS.reduce((n, k) => n + run.kinds[k].committed + run.kinds[k].rolledBack + run.kinds[k].aborted, 0);
    const no = run.kinds.newOrder;
    const out = [
      '',
      `remora demo: tpcc on an embedded cluster (sequencer + primary + ${o.preExecutors} pre-executors), 2-core machine`,
      `  load         ${scale.warehouses} warehouses in ${loadS.toFixed(1)} s (${fmt(loadTxs)} load transactions)`,
      `  throughput   ${fmt(run.seconds > 0 ? answered / run.seconds : 0)} tx/s (${fmt(answered)} transactions in ${run.seconds.toFixed(1)} s, ${clients} clients)`,
      `  mix          ${TPCC_KINDS.map((k) => `${k} ${pct(run.kinds[k].committed + run.kinds[k].rolledBack + run.kinds[k].aborted, answered)}`).join(', ')}`,
      `  New-Order    ${fmt(no.committed)} committed, ${fmt(no.rolledBack)} rolled back; latency p50 ${ms(quantile(run.newOrderUs, 0.5))}, p99 ${ms(quantile(run.newOrderUs, 0.99))} (submit to final outcome)`,
      ...(run.abortReasons.length > 0 ? [`  ABORTED      ${run.abortReasons.join('; ')}`] : []),
      `  merge        adopted ${pct(s.adopted - before.adopted, applied)}, re-executed ${pct(s.reexecuted - before.reexecuted, applied)}, ` +
        `executed by the primary alone ${pct(s.executed - before.executed, applied)}`,
      `  check        primary state ${same ? 'equals' : 'DIFFERS FROM'} sequential re-execution of all ${fmt(entries.length)} logged transactions`,
      `  consistency  TPC-C conditions on the primary's state:`,
      ...formatConsistency(primary).map((l) => `    ${l}`),
      ...(conditions.every((c) => c.ok) ? [] : ['  consistency  on the sequential re-execution:', ...formatConsistency(conditions).map((l) => `    ${l}`)]),
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
