// `remora bench heron`: Heron partitions on one host over `shm`. Coordination latency (phases
// 2 + 4) by partitions and replicas; single- vs multi-partition latency from one closed-loop
// client split into ordering, coordination and execution (Heron's Figure 6); delayed
// transactions with and without the grace wait (Table I); state-transfer time by size
// (Figure 8). JSON plus one SVG per figure.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/kv.js';
import { HeronCluster, type HeronReply } from '../ts/heron/cluster.js';
import type { Ordering } from '../ts/heron/messages.js';
import { partitionerOf } from '../ts/app/partition.js';
import type { ReplicaSummary } from '../ts/heron/replica.js';
import { atExit } from '../ts/process.js';
import type { Transport } from '../ts/transport.js';
import { describeMachine, summariseMachine } from './machine.js';
import { barChart } from './plot.js';

export interface HeronBenchOptions {
  quick: boolean;
  out: string;
  /** Run one part alone (its metrics alone go to `out`, no plots). */
  only?: HeronPart;
  /** How replicas reach each other in the coordination runs (default `shm`). */
  transport?: Transport;
}

export const HERON_PARTS = ['coordination', 'breakdown', 'transfer'] as const;
export type HeronPart = (typeof HERON_PARTS)[number];

type Metrics = Record<string, number>;

const say = (m: string) => process.stderr.write(`${m}\n`);
const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;
const micros = (): number => Number(process.hrtime.bigint() / 1000n);

function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}
const mean = (xs: readonly number[]) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);

/** A full collection of this process's heap, now. */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** One key per partition, found by the app's partitioner. */
function keysByPartition(partitions: number): string[] {
  const part = partitionerOf(kvApp, partitions);
  const keys: string[] = [];
  for (let i = 0, found = 0; found < partitions; i++) {
    const h = part(`kv/k${i}`);
    if (keys[h] === undefined) {
      keys[h] = `k${i}`;
      found++;
    }
  }
  return keys;
}

let nonce = 0;
// A nonce per request: the log treats an identical body as a retry of the first.
const put = (key: string, value: string | number) => {
  const args = { key, value, nonce: nonce++ };
  return makeTx(kvApp, 'put', args);
};
const copy = (from: string, to: string) => {
  const args = { from, to, nonce: nonce++ };
  return makeTx(kvApp, 'copy', args);
};

async function timed(cluster: HeronCluster, tx: ReturnType<typeof put>): Promise<{ total: number; reply: HeronReply }> {
  const t0 = micros();
  const reply = await cluster.submit(tx);
  if (reply.outcome.status !== 'ok') throw new Error(`bench transaction aborted: ${reply.outcome.reason}`);
  return { total: micros() - t0, reply };
}

async function withCluster<T>(
  dir: string,
  p: number,
  r: number,
  extra: { graceMs?: number; transferBytes?: number; ordering?: Ordering; transport?: Transport },
  body: (c: HeronCluster) => Promise<T>,
): Promise<{ value: T; summaries: ReplicaSummary[] }> {
  const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: p, replicas: r, log: () => undefined, ...extra });
  let value: T;
  try {
    value = await body(cluster);
  } catch (e) {
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const summaries = await cluster.close();
  // Removed at once: the files of a closed cluster (its stores and log, on the temporary
  // directory's disk) would otherwise be written back under the runs after it (measured: 6.4 MB
  // transfers at 37-40 ms after the delay runs, 10 ms without them).
  rmSync(dir, { recursive: true, force: true });
  return { value, summaries };
}

/**
 * Pins every replica process (all its threads) to a core of its own, round robin: as Heron
 * runs one replica per machine, a wait then never shares its core with the peer it waits for.
 */
function pinReplicas(c: HeronCluster, p: number, r: number): void {
  const cores = availableParallelism();
  let core = 0;
  for (let h = 0; h < p; h++) {
    for (let q = 0; q < r; q++) {
      const pid = c.replicas.get(`${h}.${q}`)?.pid;
      if (pid === undefined) throw new Error(`replica ${h}.${q} has no process to pin`);
      const run = spawnSync('taskset', ['-a', '-p', '-c', String(core++ % cores), String(pid)], { encoding: 'utf8' });
      if (run.status !== 0) throw new Error(`taskset could not pin replica ${h}.${q}: ${run.error?.message ?? run.stderr.trim()}`);
    }
  }
}

/**
 * Copies run before the measured ones: Heron's figures are a running system's, and the first
 * few hundred transactions of a fresh cluster run code V8 has not optimised yet.
 */
const COORD_WARMUP = 1000;

/**
 * Phases 2 + 4 of multi-partition copies (the first replier's), one closed-loop client. The
 * keys are written first, so the copies read objects that exist, as TPC-C's do.
 */
async function coordination(dir: string, p: number, r: number, ops: number, pinned = false, transport: Transport = 'shm') {
  const keys = keysByPartition(p);
  const { value } = await withCluster(dir, p, r, { transport }, async (c) => {
    if (pinned) pinReplicas(c, p, r);
    for (const k of keys) await timed(c, put(k, 0));
    const coord: number[] = [];
    for (let i = 0; i < ops + COORD_WARMUP; i++) {
      const a = keys[i % p] ?? '';
      const b = keys[(i + 1) % p] ?? '';
      const { reply } = await timed(c, copy(a, b));
      if (i >= COORD_WARMUP) coord.push(reply.timing.phase2 + reply.timing.phase4);
    }
    return coord;
  });
  return { p50: percentile(value, 50), p99: percentile(value, 99) };
}

/**
 * Requests of one kind run before the measured ones (Heron's figures are steady state): a
 * single put measured after 1,000 puts had p50 112 µs at 2 x 3, after 3,000 81 µs, after 6,000
 * 63 µs, each process's hot path being optimised by V8 only after that many turns.
 */
const BREAKDOWN_WARMUP = { single: 6000, multi: 1500 } as const;
/** Pairs run before the measured ones in the alternating run. */
const MIXED_WARMUP = 500;

type Kind = 'single' | 'multi';
/** Means of the parts, and the p50 of the totals (µs). */
type Breakdown = Record<'total' | 'ordering' | 'coordination' | 'execution' | 'p50', number>;

/** [total, ordering, coordination, execution] of one request. */
async function measured(c: HeronCluster, tx: ReturnType<typeof put>): Promise<number[]> {
  const { total, reply } = await timed(c, tx);
  const t = reply.timing;
  const coord = t.phase2 + t.phase4;
  // Ordering: the log append and the delivery messages, i.e. what the replica did not see.
  return [total, Math.max(0, total - coord - t.execute), coord, t.execute];
}

function summarise(rows: readonly number[][]): Breakdown {
  const avg = (k: number) => mean(rows.map((x) => x[k] ?? 0));
  return {
    total: avg(0),
    ordering: avg(1),
    coordination: avg(2),
    execution: avg(3),
    p50: percentile(
      rows.map((x) => x[0] ?? 0),
      50,
    ),
  };
}

/**
 * Figure 6: where a single- and a multi-partition request's time goes (2 x `replicas`, one
 * closed-loop client). As in Heron's figure, each kind runs on its own (its 1WH workload has
 * only local requests): first `ops * 5` puts, then `ops` copies, each after its warm-up.
 */
async function breakdown(dir: string, ops: number, ordering: Ordering, replicas = 3): Promise<Record<Kind, Breakdown>> {
  const keys = keysByPartition(2);
  const [a, b] = [keys[0] ?? '', keys[1] ?? ''];
  const { value } = await withCluster(dir, 2, replicas, { ordering }, async (c) => {
    const run = async (kind: Kind, n: number) => {
      const next = (i: number) => (kind === 'single' ? put(a, i) : copy(a, b));
      for (let i = 0; i < BREAKDOWN_WARMUP[kind]; i++) await timed(c, next(i));
      const rows: number[][] = [];
      for (let i = 0; i < n; i++) rows.push(await measured(c, next(i)));
      return summarise(rows);
    };
    return { single: await run('single', ops * 5), multi: await run('multi', ops) };
  });
  return value;
}

/**
 * The earlier definition, kept beside it: one client alternating a put and a copy. A copy's
 * reply does not wait for its slowest replicas (phase 4 is off the reply path), so the put
 * after it shares the host's cores with their remaining work.
 */
async function mixedBreakdown(dir: string, ops: number): Promise<Record<Kind, Breakdown>> {
  const keys = keysByPartition(2);
  const [a, b] = [keys[0] ?? '', keys[1] ?? ''];
  const { value } = await withCluster(dir, 2, 3, { ordering: 'memory' }, async (c) => {
    const rows: Record<Kind, number[][]> = { single: [], multi: [] };
    for (let i = 0; i < ops + MIXED_WARMUP; i++) {
      for (const kind of ['single', 'multi'] as const) {
        const r = await measured(c, kind === 'single' ? put(a, i) : copy(a, b));
        if (i >= MIXED_WARMUP) rows[kind].push(r);
      }
    }
    return rows;
  });
  return { single: summarise(value.single), multi: summarise(value.multi) };
}

/**
 * The breakdown with in-memory ordering (the `breakdown_*` metrics), and the request latencies
 * with ordering synced to disk beside them (`breakdown_*_synced_*`).
 */
async function breakdowns(fresh: () => string, ops: number, m: Metrics): Promise<void> {
  say('breakdown: single- vs multi-partition, 2 x 3, in-memory ordering');
  const b = await breakdown(fresh(), ops, 'memory');
  for (const kind of ['single', 'multi'] as const) {
    for (const [f, v] of Object.entries(b[kind])) m[`breakdown_${kind}_${f}_us`] = round(v);
  }
  say('breakdown: single- vs multi-partition, 2 x 3, ordering synced to disk');
  const synced = await breakdown(fresh(), ops, 'synced');
  for (const kind of ['single', 'multi'] as const) {
    m[`breakdown_${kind}_synced_p50_us`] = round(synced[kind].p50);
    m[`breakdown_${kind}_synced_total_us`] = round(synced[kind].total);
    m[`breakdown_${kind}_synced_ordering_us`] = round(synced[kind].ordering);
  }
  // Heron's figure has a machine per replica; here 2 x 3 puts 7 processes on the host's cores.
  // One replica per partition shows what a request costs with 3 processes.
  say('breakdown: single- vs multi-partition, 2 x 1, in-memory ordering');
  const one = await breakdown(fresh(), ops, 'memory', 1);
  for (const kind of ['single', 'multi'] as const) m[`breakdown_${kind}_r1_p50_us`] = round(one[kind].p50);
  say('breakdown: a put and a copy alternating, 2 x 3, in-memory ordering');
  const mixed = await mixedBreakdown(fresh(), ops);
  for (const kind of ['single', 'multi'] as const) m[`breakdown_${kind}_mixed_p50_us`] = round(mixed[kind].p50);
}

/** Table I: coordination waits that found a majority but not everyone, with and without grace. */
async function delays(dir: string, p: number, graceMs: number, ops: number, clients: number) {
  const keys = keysByPartition(p);
  const { summaries } = await withCluster(dir, p, 3, { graceMs }, async (c) => {
    await Promise.all(
      Array.from({ length: clients }, async (_, k) => {
        for (let i = 0; i < ops; i++) await timed(c, copy(keys[(i + k) % p] ?? '', keys[(i + k + 1) % p] ?? ''));
      }),
    );
  });
  const waits = summaries.reduce((n, s) => n + s.coordinations, 0);
  const delayed = summaries.reduce((n, s) => n + s.graceWaits, 0);
  const cut = summaries.reduce((n, s) => n + s.delayed, 0);
  const delayMicros = summaries.reduce((n, s) => n + s.graceMicros, 0);
  return {
    share: waits === 0 ? 0 : delayed / waits,
    avgDelay: delayed === 0 ? 0 : delayMicros / delayed,
    cutShare: waits === 0 ? 0 : cut / waits,
    retries: summaries.reduce((n, s) => n + s.remoteRetries, 0),
  };
}

/**
 * Figure 8: replica 2 of partition 0 is stopped, a transaction it will find lagging is ordered
 * (a copy from partition 1, then two writes of the copied key), then `bytes` of values are
 * written to partition 0; it is continued and catches up by one state transfer.
 */
async function transfer(dir: string, bytes: number, valueBytes: number) {
  const keys = keysByPartition(2);
  const [x, y] = [keys[0] ?? '', keys[1] ?? ''];
  const part = partitionerOf(kvApp, 2);
  const objects = Math.ceil(bytes / valueBytes);
  const mine: string[] = [];
  for (let i = 0; mine.length < objects; i++) if (part(`kv/s${i}`) === 0) mine.push(`s${i}`);
  const value = 'v'.repeat(valueBytes);
  // A 1 MiB landing slot: larger shipments go through it in chunks of 512 KiB.
  const { value: st } = await withCluster(dir, 2, 3, { transferBytes: 1 << 20 }, async (c) => {
    c.signal(0, 2, 'SIGSTOP');
    try {
      await timed(c, copy(y, x));
      await timed(c, put(y, 1));
      await timed(c, put(y, 2));
      for (let i = 0; i < mine.length; i += 16) await Promise.all(mine.slice(i, i + 16).map((k) => timed(c, put(k, value))));
      // This process is the launcher: the garbage of writing those values is collected now,
      // not by V8's memory reducer on one of the two cores during the catch-up (measured: 5
      // to 10 ms collections inside 6.4 MB transfers after the runs before them).
      collectGarbage();
    } finally {
      c.signal(0, 2, 'SIGCONT');
    }
    if (!(await c.waitTransfers(1, 120_000))) throw new Error('no state transfer within 120 s');
    return c.transfers[0];
  });
  if (!st) throw new Error('no state transfer recorded');
  return { micros: st.micros, nativeMicros: st.nativeMicros, bytes: st.bytes, objects: st.objects };
}

/** `--only coordination`: the coordination metrics alone, no plots. */
function writeOnly(opts: HeronBenchOptions, machine: ReturnType<typeof describeMachine>, m: Metrics): number {
  mkdirSync(dirname(opts.out), { recursive: true });
  const tmp = `${opts.out}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ suite: 'heron', only: opts.only, transport: opts.transport ?? 'shm', machine, metrics: m }, null, 2)}\n`);
  renameSync(tmp, opts.out);
  process.stdout.write(
    `${Object.entries(m)
      .map(([key, v]) => `${key.padEnd(44)} ${v}`)
      .join('\n')}\nresults: ${opts.out}\n`,
  );
  return 0;
}

export async function runHeron(opts: HeronBenchOptions): Promise<number> {
  const machine = describeMachine();
  const ops = opts.quick ? 60 : 400;
  const sizes = [64_000, 640_000, 6_400_000];
  const transferRuns = opts.quick ? 1 : 5;
  const settings = {
    quick: opts.quick,
    transport: opts.transport ?? 'shm',
    app: 'kv',
    ops_per_configuration: ops,
    coordination:
      "multi-partition copies between two partitions, one closed-loop client; phase 2 + phase 4 as the first replying replica waited for them before replying (a replica waits for phase 4 of a transaction only before a write that could hide a version its peers read, or within the next multi-partition transaction's phase 2, so what a reply waits for is its predecessor's)",
    coordination_pinned:
      'the same at 2 partitions x 1 replica, each replica process pinned to its own core with taskset (the launcher and client are not pinned)',
    breakdown:
      '2 partitions x 3 replicas (7 processes: the launcher, which is also the client, and 6 replicas), one closed-loop client; as in Heron Fig. 6, each kind on its own: 6,000 unmeasured single-partition puts then ops x 5 measured, then 1,500 unmeasured multi-partition copies then ops measured; ordering = client latency - coordination - execution (log append unless in memory, the ring, delivery and the reply message); breakdown_* with in-memory ordering (log written in the background), breakdown_*_synced_* with delivery after the fsync; breakdown_*_r1_p50_us: 2 partitions x 1 replica (3 processes), in-memory ordering; breakdown_*_mixed_p50_us: the earlier definition, 2 x 3 in memory, the client alternating a put and a copy, measured after 500 such pairs',
    table_i:
      '2 and 4 partitions x 3 replicas, 4 closed-loop clients of copies; grace 2 ms vs 0; a wait is delayed when it found a majority but not every replica',
    state_transfer:
      'one lagger (replica 2 of partition 0, SIGSTOPped) caught up: transfer_*_us times its whole catch-up call on the replica (choosing peers, into and out of the native call, the transfer), transfer_*_native_us the transfer alone, natively, from its first request to the covering shipment installed; values of 1 KB (64 KB) or 10 KB; 1 MiB landing slots (chunks of 512 KiB); cluster directory on tmpfs (/dev/shm) when there is one; each the median of 5 catch-ups (1 with --quick), each in a fresh cluster, _min/_max beside it',
    note: 'the host has 2 cores shared by every replica process (up to 12), the launcher and the client; memory is shared through files, not a NIC',
  };
  process.stdout.write(`remora bench heron (${opts.quick ? 'quick' : 'full'})\nmachine: ${summariseMachine(machine)}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'remora-bench-heron-'));
  const cancel = atExit(() => rmSync(dir, { recursive: true, force: true }));
  const m: Metrics = {};
  let k = 0;
  const fresh = () => join(dir, `run-${k++}`);
  const transfers = async () => {
    // Regions are memory: on tmpfs, as a deployment keeps its cluster directory (on a disk
    // file system, the lagger's first writes to fresh region pages cost far more than the
    // transfer itself).
    const memDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'remora-bench-transfer-'));
    try {
      for (const bytes of sizes) {
        // One catch-up is one sample of a 2-core host's scheduling: the median of several,
        // each in a fresh cluster, with the fastest and slowest beside it.
        const runs: { micros: number; nativeMicros: number; bytes: number; objects: number }[] = [];
        for (let i = 0; i < transferRuns; i++) {
          say(`state transfer of ${bytes} bytes (${i + 1} of ${transferRuns})`);
          runs.push(await transfer(join(memDir, `run-${k++}`), bytes, bytes === 64_000 ? 1000 : 10_000));
        }
        const sorted = runs.map((r) => r.micros).sort((a, b) => a - b);
        const last = runs[runs.length - 1];
        m[`transfer_${bytes}_us`] = round(sorted[sorted.length >> 1] ?? NaN);
        m[`transfer_${bytes}_min_us`] = round(sorted[0] ?? NaN);
        m[`transfer_${bytes}_max_us`] = round(sorted[sorted.length - 1] ?? NaN);
        const native = runs.map((r) => r.nativeMicros).sort((a, b) => a - b);
        m[`transfer_${bytes}_native_us`] = round(native[native.length >> 1] ?? NaN);
        m[`transfer_${bytes}_shipped_bytes`] = last?.bytes ?? 0;
        m[`transfer_${bytes}_objects`] = last?.objects ?? 0;
      }
    } finally {
      rmSync(memDir, { recursive: true, force: true });
    }
  };
  try {
    if (opts.only === 'transfer') {
      await transfers();
      return writeOnly(opts, machine, m);
    }
    if (opts.only === 'breakdown') {
      await breakdowns(fresh, ops, m);
      return writeOnly(opts, machine, m);
    }
    for (const p of [2, 4]) {
      for (const r of [1, 3]) {
        say(`coordination: ${p} partitions x ${r} replicas, ${ops} copies`);
        const c = await coordination(fresh(), p, r, ops, false, opts.transport);
        m[`coord_p${p}_r${r}_p50_us`] = round(c.p50);
        m[`coord_p${p}_r${r}_p99_us`] = round(c.p99);
      }
    }
    say(`coordination: 2 partitions x 1 replica, each replica pinned to its own core, ${ops} copies`);
    const pinned = await coordination(fresh(), 2, 1, ops, true, opts.transport);
    m['coord_p2_r1_pinned_p50_us'] = round(pinned.p50);
    m['coord_p2_r1_pinned_p99_us'] = round(pinned.p99);
    if (opts.only === 'coordination') return writeOnly(opts, machine, m);
    await breakdowns(fresh, ops, m);
    for (const p of [2, 4]) {
      for (const grace of [2, 0]) {
        say(`delays: ${p} x 3, grace ${grace} ms`);
        const d = await delays(fresh(), p, grace, opts.quick ? 30 : 150, 4);
        const tag = `delays_p${p}_grace${grace}`;
        m[`${tag}_share`] = round(d.share, 4);
        m[`${tag}_avg_delay_us`] = round(d.avgDelay);
        m[`${tag}_incomplete_share`] = round(d.cutShare, 4);
        m[`${tag}_remote_read_retries`] = d.retries;
      }
    }
    await transfers();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    cancel();
  }

  mkdirSync(dirname(opts.out), { recursive: true });
  const base = opts.out.replace(/\.json$/, '');
  const plots: Record<string, string> = {
    coordination: `${base}-coordination.svg`,
    breakdown: `${base}-breakdown.svg`,
    delays: `${base}-delays.svg`,
    transfer: `${base}-transfer.svg`,
  };
  const configs = ['2 x 1', '2 x 3', '4 x 1', '4 x 3'];
  const coordKeys = ['p2_r1', 'p2_r3', 'p4_r1', 'p4_r3'];
  writeFileSync(
    plots['coordination'] ?? '',
    barChart({
      title: 'Coordination latency (phase 2 + phase 4), partitions x replicas',
      yLabel: 'µs',
      groups: configs,
      series: ['p50', 'p99'].map((q) => ({ name: q, values: coordKeys.map((c) => m[`coord_${c}_${q}_us`] ?? 0) })),
    }),
  );
  writeFileSync(
    plots['breakdown'] ?? '',
    barChart({
      title: 'Where a request goes (2 x 3, one client; cf. Heron Fig. 6)',
      yLabel: 'mean µs',
      groups: ['single-partition', 'multi-partition'],
      series: ['ordering', 'coordination', 'execution'].map((f) => ({
        name: f,
        values: ['single', 'multi'].map((kind) => m[`breakdown_${kind}_${f}_us`] ?? 0),
      })),
    }),
  );
  writeFileSync(
    plots['delays'] ?? '',
    barChart({
      title: 'Delayed coordination waits (cf. Heron Table I)',
      yLabel: '% of waits / mean delay ÷ 100 µs',
      groups: ['2 x 3, grace 2 ms', '2 x 3, no grace', '4 x 3, grace 2 ms', '4 x 3, no grace'],
      series: [
        { name: 'delayed %', values: ['p2_grace2', 'p2_grace0', 'p4_grace2', 'p4_grace0'].map((t) => (m[`delays_${t}_share`] ?? 0) * 100) },
        { name: 'still incomplete %', values: ['p2_grace2', 'p2_grace0', 'p4_grace2', 'p4_grace0'].map((t) => (m[`delays_${t}_incomplete_share`] ?? 0) * 100) },
        { name: 'mean delay ÷ 100 µs', values: ['p2_grace2', 'p2_grace0', 'p4_grace2', 'p4_grace0'].map((t) => (m[`delays_${t}_avg_delay_us`] ?? 0) / 100) },
      ],
    }),
  );
  writeFileSync(
    plots['transfer'] ?? '',
    barChart({
      title: 'State transfer time (cf. Heron Fig. 8)',
      yLabel: 'ms',
      groups: ['64 KB', '640 KB', '6.4 MB'],
      series: [{ name: 'request to installed', values: sizes.map((s) => (m[`transfer_${s}_us`] ?? 0) / 1000) }],
    }),
  );
  const tmp = `${opts.out}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ suite: 'heron', machine, settings, metrics: m, plots }, null, 2)}\n`);
  renameSync(tmp, opts.out);
  const lines = Object.entries(m).map(([key, v]) => `${key.padEnd(44)} ${v}`);
  process.stdout.write(`${lines.join('\n')}\nresults: ${opts.out}\nplots: ${Object.values(plots).join(', ')}\n`);
  return 0;
}
