// `remora bench sequencer`: the embedded sequencer (the durable log on this disk) vs the
// replicated one (NATS JetStream, 3 nodes on loopback, `sync_interval: always`), both acking
// only durable transactions. Closed-loop clients each issue a batch of submits at once and
// await them all before the next: batches of 1 (many clients), 100 and 1000. Tx/s and the
// latency of each submit (issue to resolve).
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { makeTx } from '../ts/app/app.js';
import { decodeTx, type DecodedTx } from '../ts/app/tx.js';
import { kvApp } from '../ts/apps/kv.js';
import { startNatsCluster } from '../ts/engine/nats.js';
import { JetStreamSequencer } from '../ts/pipeline/jetstream-sequencer.js';
import { EmbeddedSequencer, type Sequencer } from '../ts/pipeline/sequencer.js';
import { atExit } from '../ts/process.js';
import { benchLogSync } from './log-sync.js';
import { describeMachine, summariseMachine } from './machine.js';
import { processCpuSeconds } from './proc-cpu.js';
import { benchRestart } from './restart.js';

export interface SequencerBenchOptions {
  quick: boolean;
  out: string;
}

type Metrics = Record<string, number>;

const say = (m: string) => process.stderr.write(`${m}\n`);
const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;
const fmt = (n: number) => n.toLocaleString('en-US');

/** Offered batch size -> closed-loop clients issuing batches of it. */
const SHAPES = [
  { batch: 1, clients: 64 },
  { batch: 100, clients: 32 },
  { batch: 1000, clients: 8 },
] as const;

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

let nonce = 0;
/** Distinct kv puts (a nonce each: an identical body would be a duplicate), decoded before any timing. */
function transactions(n: number): DecodedTx[] {
  return Array.from({ length: n }, () => decodeTx(makeTx(kvApp, 'put', { key: `k${nonce % 4096}`, value: `v${nonce++}` })));
}

interface Run {
  tps: number;
  p50_us: number;
  p99_us: number;
  transactions: number;
  seconds: number;
}

/** Clients submit batches from `txs` until it runs out or `seconds` pass; every submit must be fresh. */
async function load(seq: Sequencer, txs: DecodedTx[], batch: number, clients: number, seconds: number): Promise<Run> {
  const latencies = new Float64Array(txs.length);
  let next = 0;
  let done = 0;
  const t0 = performance.now();
  const stopAt = t0 + seconds * 1000;
  const client = async (): Promise<void> => {
    while (performance.now() < stopAt && next + batch <= txs.length) {
      const mine = txs.slice(next, next + batch);
      next += batch;
      const issued = performance.now();
      await Promise.all(
        mine.map((t) =>
          seq.submit(t).then((r) => {
            if (r.duplicate) throw new Error(`bench transaction ${t.digest} was sequenced twice`);
            latencies[done++] = performance.now() - issued;
          }),
        ),
      );
    }
  };
  await Promise.all(Array.from({ length: clients }, client));
  const elapsed = (performance.now() - t0) / 1000;
  const sorted = latencies.subarray(0, done).sort();
  return {
    tps: Math.round(done / elapsed),
    p50_us: round(percentile(sorted, 50) * 1000),
    p99_us: round(percentile(sorted, 99) * 1000),
    transactions: done,
    seconds: round(elapsed, 2),
  };
}

/**
 * Measures each shape; `servers()` gives the CPU seconds the engine's processes have used (the
 * replicated sequencer), so each run reports CPU per transaction here and there: the model.
 */
async function measure(
  kind: string,
  seq: Sequencer,
  seconds: number,
  perRun: number,
  pool: (n: number) => DecodedTx[],
  m: Metrics,
  detail: Record<string, unknown>,
  servers?: () => number,
): Promise<void> {
  // Warm-up: connections, JIT, the first file segments.
  await load(seq, pool(2000), 100, 4, 1);
  for (const { batch, clients } of SHAPES) {
    // Runs end after `seconds` or when their transactions run out, whichever comes first.
    const txs = pool(batch === 1 ? perRun / 4 : perRun);
    say(`${kind}: batches of ${batch}, ${clients} clients, up to ${seconds} s`);
    const [cpu0, servers0] = [process.cpuUsage(), servers?.() ?? 0];
    const r = await load(seq, txs, batch, clients, seconds);
    const cpu = process.cpuUsage(cpu0);
    const here = round((cpu.user + cpu.system) / r.transactions, 2);
    const there = servers ? round(((servers() - servers0) * 1e6) / r.transactions, 2) : null;
    say(
      `  ${fmt(r.tps)} tx/s, p50 ${fmt(r.p50_us)} µs, p99 ${fmt(r.p99_us)} µs (${fmt(r.transactions)} transactions); CPU per tx: ${here} µs in this process${there === null ? '' : `, ${there} µs in the 3 servers`}`,
    );
    m[`sequencer_${kind}_cpu_us_per_tx_b${batch}`] = here;
    if (there !== null) m[`sequencer_${kind}_server_cpu_us_per_tx_b${batch}`] = there;
    m[`sequencer_${kind}_tps_b${batch}`] = r.tps;
    m[`sequencer_${kind}_p50_us_b${batch}`] = r.p50_us;
    m[`sequencer_${kind}_p99_us_b${batch}`] = r.p99_us;
    detail[`${kind}_b${batch}`] = { ...r, batch, clients };
  }
  m[`sequencer_${kind}_tps`] = Math.max(m[`sequencer_${kind}_tps_b100`] ?? 0, m[`sequencer_${kind}_tps_b1000`] ?? 0);
}

export async function runSequencerBench(opts: SequencerBenchOptions): Promise<number> {
  const machine = describeMachine();
  const seconds = opts.quick ? 3 : 10;
  process.stdout.write(`remora bench sequencer (${opts.quick ? 'quick' : 'full'})\nmachine: ${summariseMachine(machine)}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'remora-bench-sequencer-'));
  const cancel = atExit(() => rmSync(dir, { recursive: true, force: true }));
  const m: Metrics = {};
  const detail: Record<string, unknown> = {};
  try {
    const perRun = opts.quick ? 150_000 : 600_000;
    // Each run takes fresh transactions (a repeated digest would be a duplicate), made and
    // decoded just before it: holding every run's at once would make the process's heap, and
    // so its garbage collection, the thing measured.
    const pool = (n: number): DecodedTx[] => transactions(n);

    // What one sync costs the log, growing its file or writing into zeros written ahead.
    Object.assign(m, await benchLogSync({ quick: opts.quick, dir, log: say }));

    const embedded = new EmbeddedSequencer(join(dir, 'embedded'));
    embedded.subscribe(0n, () => undefined);
    try {
      await measure('embedded', embedded, seconds, perRun, pool, m, detail);
    } finally {
      await embedded.close();
    }

    const cluster = await startNatsCluster({ dir: join(dir, 'nats'), log: say });
    try {
      const replicated = await JetStreamSequencer.open({ servers: cluster.urls, log: say });
      replicated.subscribe(0n, () => undefined);
      try {
        const servers = () => cluster.pids().reduce((t, pid) => t + processCpuSeconds(pid), 0);
        await measure('replicated', replicated, seconds, perRun, pool, m, detail, servers);
        // Both sides busy on 2 cores: the most this machine can order is 2 cores / CPU per tx.
        const perTx = (m['sequencer_replicated_cpu_us_per_tx_b1000'] ?? 0) + (m['sequencer_replicated_server_cpu_us_per_tx_b1000'] ?? 0);
        if (perTx > 0) m['sequencer_replicated_model_tps_2_cores_b1000'] = Math.round(2e6 / perTx);
        m['sequencer_replicated_mean_message_txs'] = round(Number(replicated.lastTs) / Math.max(1, replicated.messages), 0);
      } finally {
        await replicated.close();
      }
    } finally {
      await cluster.stop();
    }

    // Restart after a long log: checkpoint + tail against a full replay (bench/restart.ts).
    Object.assign(m, await benchRestart({ quick: opts.quick, log: say }));

    const settings = {
      quick: opts.quick,
      seconds_per_run: seconds,
      transactions_per_run: { b1: perRun / 4, b100: perRun, b1000: perRun },
      shapes: SHAPES,
      workload: 'kv put, ~100-byte tx.v1 bytes, distinct digests, decoded before timing',
      embedded: 'EmbeddedSequencer on the temporary directory: group commit, one fsync per append',
      replicated:
        'JetStreamSequencer, 3 nats-server nodes on loopback, file storage, 3 replicas, sync_interval always; batchMax 1000, inFlight 8; submit resolves once acked and delivered to its own subscriber',
      note: 'batch = submits a client issues together before awaiting them all; latency is per submit, from issue to resolve. Both sequencers and the 3 servers share this machine. CPU per tx: this process (client + sequencer, every thread) and the 3 servers (/proc), measured per run; the 2-core model divides 2 cores by their sum.',
    };
    mkdirSync(dirname(opts.out), { recursive: true });
    writeFileSync(`${opts.out}.tmp`, `${JSON.stringify({ suite: 'sequencer', machine, settings, metrics: m, detail }, null, 2)}\n`);
    renameSync(`${opts.out}.tmp`, opts.out);
    process.stdout.write(
      `\n${Object.entries(m)
        .map(([k, v]) => `${k.padEnd(40)} ${v}`)
        .join('\n')}\nresults: ${opts.out}\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
    cancel();
  }
  return 0;
}
