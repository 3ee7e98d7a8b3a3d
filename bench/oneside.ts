// `remora bench oneside`: what reading an object out of another process's memory costs, set
// against its floor (a local memcpy of the same bytes) and the clock itself; the same read as
// JavaScript sees it; what a write costs the owner; and whether a reader ever accepts a torn
// value while the owner rewrites its objects flat out. One run, one JSON file, one table.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { benchMemcpy, benchTimer, type Latency } from './native.js';
import { atExit, RoleProcess } from '../ts/process.js';
import { loadOrCreateSecret } from '../ts/secret.js';
import { RemoteStore, Store, type ReadBatch, type ReadResult } from '../ts/store.js';
import { describeMachine, summariseMachine } from './machine.js';
import {
  BENCH_STORE,
  benchLayout,
  formatCount,
  formatNs,
  OBJECTS_PER_SIZE,
  resultField,
  resultNumber,
  SIZES,
  sizeLabel,
  STRESS_OBJECTS,
  STRESS_STORE,
  stressIds,
  summarise,
  type Summary,
} from '../ts/cli/oneside-layout.js';

const BATCH = 64;

const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

// ---- the run ----

export interface OnesideOptions {
  quick: boolean;
  out: string;
  /** Seed of the stress writer; random when absent. The reader's seed derives from it. */
  seed?: bigint;
}

interface Settings {
  quick: boolean;
  sizes: readonly number[];
  objects_per_size: number;
  timer_iterations: number;
  memcpy_iterations: number;
  shm_read_iterations: number;
  js_timer_iterations: number;
  js_batch1_iterations: number;
  js_batch64_iterations: number;
  js_warmup_batches: number;
  set_batches: number;
  set_batch_size: number;
  bench_writer_rate_per_s: number;
  stress_objects: number;
  stress_reads: number;
  stress_writer_max_ms: number;
  stress_writer_seed: string;
  stress_reader_seed: string;
  notes: string[];
}

type Metrics = Record<string, number>;

/** Iteration counts: --quick keeps the whole run well inside a minute on 2 busy cores. */
function settingsFor(quick: boolean, seed: bigint): Settings {
  const scale = quick ? 1 : 10;
  return {
    quick,
    sizes: SIZES,
    objects_per_size: OBJECTS_PER_SIZE,
    timer_iterations: 1_000_000 * scale,
    memcpy_iterations: 1_000_000 * scale,
    shm_read_iterations: 1_000_000 * scale,
    js_timer_iterations: 200_000 * scale,
    js_batch1_iterations: 100_000 * scale,
    js_batch64_iterations: 10_000 * scale,
    js_warmup_batches: 2_000,
    set_batches: 2_000 * scale,
    set_batch_size: BATCH,
    bench_writer_rate_per_s: 3_000,
    stress_objects: STRESS_OBJECTS,
    stress_reads: quick ? 1e6 : 1e8,
    // An upper bound only: the writer is stopped as soon as the reader is done.
    stress_writer_max_ms: quick ? 120_000 : 4 * 3_600_000,
    stress_writer_seed: seed.toString(),
    stress_reader_seed: (seed ^ 0x5deece66dn).toString(),
    notes: [
      'latencies are per operation, each timed on its own, and include the timer (see timer_overhead_*)',
      'native timer: Rust Instant; JS timer: process.hrtime.bigint()',
      'shm reads run while a writer process rewrites the objects at bench_writer_rate_per_s',
      'js batch64 per-object latency is the batch time divided by 64',
      'shm_read_* and js_read_*_batch{1,64}*: reads through handles into reused buffers (readMany); ' +
        'shm_read_snapshot_* and js_read_*_objects_api*: the allocating per-object path (readSync)',
      'set throughput includes building each batch of puts in JS',
    ],
  };
}

const stage = (what: string) => process.stderr.write(`» ${what}\n`);

function latencyMetrics(m: Metrics, name: string, l: Latency | Summary): void {
  const [p50, p99, mean] = 'p50Ns' in l ? [l.p50Ns, l.p99Ns, l.meanNs] : [l.p50, l.p99, l.mean];
  m[`${name}_p50_ns`] = round(p50);
  m[`${name}_p99_ns`] = round(p99);
  m[`${name}_mean_ns`] = round(mean);
}

/**
 * Times `op` once per iteration with the JS clock, checking each result outside the timed
 * span. Yields to the event loop every ~50 ms so signals (Ctrl-C) are still handled.
 */
async function timeJs<T>(iterations: number, warmup: number, perOp: number, op: (i: number) => T, check: (result: T, i: number) => void): Promise<Summary> {
  for (let i = 0; i < warmup; i++) check(op(i), i);
  const ns = new Float64Array(iterations);
  let lastYield = performance.now();
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    const r = op(i);
    ns[i] = Number(process.hrtime.bigint() - t0) / perOp;
    check(r, i);
    if ((i & 1023) === 0 && performance.now() - lastYield > 50) {
      await yieldToLoop();
      lastYield = performance.now();
    }
  }
  return summarise(ns);
}

/** Failed read checks: counted all, described only the first few. */
interface Failures {
  count: number;
  samples: string[];
}

function fail(f: Failures, what: string): void {
  f.count++;
  if (f.samples.length < 10) f.samples.push(what);
}

function expectValues(size: number, failures: Failures) {
  return (found: ReadResult[]) => {
    for (const r of found) {
      if (r.status !== 'value') fail(failures, `read found ${r.status}`);
      else if (r.value.length !== size) fail(failures, `read ${r.value.length} bytes, expected ${size}`);
    }
  };
}

/** Checks a `readMany` batch: every object a value of `size` bytes. */
function expectBatch(size: number, failures: Failures) {
  return (b: ReadBatch) => {
    for (let i = 0; i < b.count; i++) {
      if (b.status(i) !== 'value') fail(failures, `readMany found ${b.status(i)}`);
      else if (b.length(i) !== size) fail(failures, `readMany read ${b.length(i)} bytes, expected ${size}`);
    }
  };
}

/**
 * Reads of the bench writer's objects: native loops (through handles, and through the
 * allocating snapshot path), then JS batches of 1 and 64 through `readMany` (handles, one
 * reused buffer) and through `readSync` (one result object per read).
 */
async function measureReads(dir: string, secret: Buffer, s: Settings, m: Metrics, failures: Failures) {
  stage(`bench writer process: ${s.bench_writer_rate_per_s} writes/s over ${SIZES.length * OBJECTS_PER_SIZE} objects`);
  const writer = await RoleProcess.start('bench-writer', ['--dir', dir, '--rate', String(s.bench_writer_rate_per_s)]);
  try {
    const remote = await RemoteStore.connect({ dir, store: BENCH_STORE, secret });
    const layout = benchLayout();
    await remote.resolve(layout.map((o) => o.id));
    for (const size of SIZES) {
      const label = sizeLabel(size);
      const ids = layout.filter((o) => o.size === size).map((o) => Buffer.from(o.id));
      stage(`one-sided reads of ${label} objects: native, JS batch of 1, JS batch of 64`);
      latencyMetrics(m, `shm_read_${label}`, await remote.benchReads(ids, s.shm_read_iterations));
      latencyMetrics(m, `shm_read_snapshot_${label}`, await remote.benchReads(ids, s.shm_read_iterations, true));
      const handles = await remote.handles(ids);
      const singleHandles = Array.from(handles, (h) => Uint32Array.of(h));
      const checkBatch = expectBatch(size, failures);
      const one = await timeJs(
        s.js_batch1_iterations,
        s.js_warmup_batches,
        1,
        (i) => remote.readMany(singleHandles[i % singleHandles.length] ?? handles),
        checkBatch,
      );
      latencyMetrics(m, `js_read_${label}_batch1`, one);
      const many = await timeJs(s.js_batch64_iterations, s.js_warmup_batches / 10, BATCH, () => remote.readMany(handles), checkBatch);
      latencyMetrics(m, `js_read_${label}_batch64_per_object`, many);
      m[`js_read_${label}_batch64_p50_ns`] = round(many.p50 * BATCH);

      const singles = ids.map((id) => [id]);
      const check = expectValues(size, failures);
      const oneObj = await timeJs(s.js_batch1_iterations, s.js_warmup_batches, 1, (i) => remote.readSync(singles[i % singles.length] ?? []), check);
      latencyMetrics(m, `js_read_${label}_batch1_objects_api`, oneObj);
      const manyObj = await timeJs(s.js_batch64_iterations, s.js_warmup_batches / 10, BATCH, () => remote.readSync(ids), check);
      latencyMetrics(m, `js_read_${label}_batch64_objects_api_per_object`, manyObj);
      m[`js_read_${label}_batch64_objects_api_p50_ns`] = round(manyObj.p50 * BATCH);
      m[`shm_read_${label}_over_memcpy`] = round((m[`shm_read_${label}_p50_ns`] ?? 0) / (m[`memcpy_${label}_p50_ns`] ?? 1), 2);
    }
    const result = await writer.finish();
    m['bench_writer_writes_per_s'] = round(resultNumber(result, 'writes_per_s'));
  } finally {
    await writer.stop();
  }
}

/** `Store.set` throughput in this process: batches of 64 puts with fresh versions. */
async function measureSets(dir: string, secret: Buffer, s: Settings, m: Metrics) {
  const store = Store.create({ dir, name: 'local', secret });
  try {
    let version = 0n;
    for (const size of SIZES) {
      const label = sizeLabel(size);
      stage(`Store.set of ${label} values, batches of ${BATCH}`);
      const ids = Array.from({ length: BATCH }, (_, i) => Buffer.from(`local/${label}/${i}`));
      const values = ids.map(() => randomBytes(size));
      const batch = () => ids.map((id, j) => ({ id, value: values[j] ?? Buffer.alloc(size), version: ++version }));
      for (let i = 0; i < s.js_warmup_batches / 10; i++) store.set(batch());
      const ns = new Float64Array(s.set_batches);
      const began = process.hrtime.bigint();
      for (let i = 0; i < s.set_batches; i++) {
        const puts = batch();
        const t0 = process.hrtime.bigint();
        store.set(puts);
        ns[i] = Number(process.hrtime.bigint() - t0);
        if ((i & 255) === 0) await yieldToLoop();
      }
      const seconds = Number(process.hrtime.bigint() - began) / 1e9;
      m[`set_${label}_ops_per_s`] = Math.round((s.set_batches * BATCH) / seconds);
      m[`set_${label}_batch64_p50_ns`] = round(summarise(ns).p50);
    }
  } finally {
    store.close();
  }
}

/** The newest version among `found` (values and tombstones both carry one). */
function newestVersion(found: ReadResult[]): bigint {
  let newest = 0n;
  for (const r of found) if ((r.status === 'value' || r.status === 'deleted') && r.version > newest) newest = r.version;
  return newest;
}

/** Torn-read stress: a native writer in a child, a native verifying reader here. */
async function measureStress(dir: string, secret: Buffer, s: Settings, m: Metrics): Promise<string[]> {
  stage(`torn-read stress: ${formatCount(s.stress_reads)} verified reads of ${s.stress_objects} objects rewritten flat out`);
  const writer = await RoleProcess.start('stress-writer', [
    '--dir',
    dir,
    '--objects',
    String(s.stress_objects),
    '--seed',
    s.stress_writer_seed,
    '--millis',
    String(s.stress_writer_max_ms),
  ]);
  try {
    const remote = await RemoteStore.connect({ dir, store: STRESS_STORE, secret });
    const ids = stressIds(s.stress_objects);
    // Timestamps count writes, so their advance measures the writer's work during the read.
    const before = newestVersion(await remote.read(ids));
    const began = performance.now();
    const report = await remote.stressRead(s.stress_objects, BigInt(s.stress_reader_seed), s.stress_reads);
    const seconds = (performance.now() - began) / 1000;
    const after = newestVersion(await remote.read(ids));
    const writerFinished = resultField(await writer.finish(), 'finished') === true;
    m['stress_reads'] = report.reads;
    m['stress_verified'] = report.verified;
    m['stress_deleted'] = report.deleted;
    m['stress_absent'] = report.absent;
    m['stress_lagging'] = report.lagging;
    m['stress_torn_values_accepted'] = report.violations.length;
    m['stress_reads_per_s'] = Math.round(report.reads / seconds);
    m['stress_seconds'] = round(seconds, 2);
    m['stress_writer_writes_during_read'] = Number(after - before);
    m['stress_writer_writes_per_s'] = Math.round(Number(after - before) / seconds);
    // A writer that ran out of time before the reader finished stressed only part of the run.
    m['stress_writer_outlived_reader'] = writerFinished ? 0 : 1;
    return report.violations;
  } finally {
    await writer.stop();
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((cell, c) => cell.padEnd(widths[c] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function report(m: Metrics, s: Settings, wallSeconds: number): string {
  const pair = (name: string) => `${formatNs(m[`${name}_p50_ns`] ?? NaN)} / ${formatNs(m[`${name}_p99_ns`] ?? NaN)}`;
  const rows = [
    [
      'object',
      'memcpy p50/p99',
      'shm read p50/p99',
      'shm/memcpy',
      'JS batch 1 p50/p99',
      'JS batch 64 per obj p50/p99',
      'objects API: native / JS 64 per obj p50',
      'set ops/s',
    ],
    ...SIZES.map((size) => {
      const l = sizeLabel(size);
      return [
        l,
        pair(`memcpy_${l}`),
        pair(`shm_read_${l}`),
        `${(m[`shm_read_${l}_over_memcpy`] ?? NaN).toFixed(2)}x`,
        pair(`js_read_${l}_batch1`),
        pair(`js_read_${l}_batch64_per_object`),
        `${formatNs(m[`shm_read_snapshot_${l}_p50_ns`] ?? NaN)} / ${formatNs(m[`js_read_${l}_batch64_objects_api_per_object_p50_ns`] ?? NaN)}`,
        formatCount(m[`set_${l}_ops_per_s`] ?? NaN),
      ];
    }),
  ];
  const torn = m['stress_torn_values_accepted'] ?? NaN;
  return [
    '',
    `timer overhead p50/p99: native ${pair('timer_overhead')}; JS hrtime.bigint() ${pair('js_timer_overhead')}`,
    `bench writer: ${formatCount(m['bench_writer_writes_per_s'] ?? NaN)} writes/s while reading`,
    '',
    table(rows),
    '',
    `torn-read stress: ${formatCount(m['stress_reads'] ?? NaN)} reads in ${m['stress_seconds']} s ` +
      `(${formatCount(m['stress_reads_per_s'] ?? NaN)}/s): ${formatCount(m['stress_verified'] ?? NaN)} verified, ` +
      `${formatCount(m['stress_deleted'] ?? NaN)} deleted, ${formatCount(m['stress_lagging'] ?? NaN)} lagging, ` +
      `${formatCount(m['stress_absent'] ?? NaN)} absent`,
    `  writer made ${formatCount(m['stress_writer_writes_during_read'] ?? NaN)} writes meanwhile ` +
      `(${formatCount(m['stress_writer_writes_per_s'] ?? NaN)}/s); seeds writer ${s.stress_writer_seed} reader ${s.stress_reader_seed}`,
    `  torn values accepted: ${torn}${torn === 0 ? '' : '  <-- FAILURE'}`,
    '',
    `wall time ${wallSeconds.toFixed(1)} s (${s.quick ? 'quick' : 'full'} mode)`,
  ].join('\n');
}

/** Runs the suite, writes the JSON, prints the table; resolves to the exit code. */
export async function runOneside(opts: OnesideOptions): Promise<number> {
  const wallStart = performance.now();
  const seed = opts.seed ?? randomBytes(8).readBigUInt64LE();
  const settings = settingsFor(opts.quick, seed);
  const machine = describeMachine();
  process.stdout.write(`remora bench oneside (${opts.quick ? 'quick' : 'full'})\nmachine: ${summariseMachine(machine)}\n`);
  process.stdout.write(`stress seeds: writer ${settings.stress_writer_seed}, reader ${settings.stress_reader_seed}\n`);

  const dir = mkdtempSync(join(tmpdir(), 'remora-bench-'));
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  const cancel = atExit(removeDir);
  const m: Metrics = {};
  const failures: Failures = { count: 0, samples: [] };
  let violations: string[];
  try {
    const secret = loadOrCreateSecret(dir);
    stage('timer overhead');
    latencyMetrics(m, 'timer_overhead', benchTimer(settings.timer_iterations));
    latencyMetrics(
      m,
      'js_timer_overhead',
      await timeJs(
        settings.js_timer_iterations,
        0,
        1,
        () => 0,
        () => undefined,
      ),
    );
    for (const size of SIZES) {
      stage(`memcpy baseline, ${sizeLabel(size)}`);
      latencyMetrics(m, `memcpy_${sizeLabel(size)}`, await benchMemcpy(size, settings.memcpy_iterations));
    }
    await measureReads(dir, secret, settings, m, failures);
    await measureSets(dir, secret, settings, m);
    violations = await measureStress(dir, secret, settings, m);
  } finally {
    removeDir();
    cancel();
  }
  const wallSeconds = (performance.now() - wallStart) / 1000;
  m['wall_time_s'] = round(wallSeconds, 2);
  m['read_check_failures'] = failures.count;

  mkdirSync(dirname(opts.out), { recursive: true });
  // Write then rename, so a reader of the results never sees half a file.
  const tmp = `${opts.out}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ suite: 'oneside', machine, settings, metrics: m }, null, 2)}\n`);
  renameSync(tmp, opts.out);

  process.stdout.write(`${report(m, settings, wallSeconds)}\nresults: ${opts.out}\n`);
  for (const v of violations.slice(0, 10)) process.stderr.write(`torn value accepted: ${v}\n`);
  for (const f of failures.samples) process.stderr.write(`read check failed: ${f}\n`);
  return violations.length === 0 && failures.count === 0 ? 0 : 1;
}
