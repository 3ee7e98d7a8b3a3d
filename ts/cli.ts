#!/usr/bin/env node
// The `remora` command: the demo, the benchmarks, and the hidden roles their child processes
// run (a store must be owned by another process for reads of it to be one-sided).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import {
  BENCH_STORE,
  benchLayout,
  formatCount,
  formatNs,
  resultNumber,
  runOneside,
  STRESS_STORE,
  stressIds,
  summarise,
} from '../bench/oneside.js';
import { nativeFunctions } from './app/natives.js';
import { loadApp } from './apps/index.js';
import { EmbeddedCluster, NODE_SOCKET } from './cluster.js';
import { runDemo as runBankDemo } from './demo.js';
import { runPreExecutor } from './pipeline/preexecutor-main.js';
import { runMerge } from '../bench/merge.js';
import { atExit, RoleProcess, serveRole, type Role } from './process.js';
import { loadOrCreateSecret } from './secret.js';
import { RemoteStore, Store, type ReadResult } from './store.js';

const USAGE = `Usage:
  remora demo [options]           an embedded cluster runs the bank app, then checks itself
      --seconds N                 how long to run the load (default 10)
      --accounts N                bank accounts (default 1000)
      --alpha A                   Zipf skew of the accounts chosen (default 0.8; 0 = uniform)
      --clients N                 closed-loop clients (default 256)
      --pre-executors N           pre-executor processes (default 2)
      --deadline-ms N             primary's wait for a pre-execution result (default 50)
      --seed N                    workload seed (default random; printed)
      --dir DIR                   cluster directory (default: a temporary one, removed after)
  remora demo-oneside [options]   a writer process updates objects; this one reads them one-sidedly
      --seconds N                 how long to read (default 10)
      --rate N                    writer's writes per second (default 20000)
      --objects N                 objects written (default 1000)
      --size BYTES                value size, at least 32 (default 256)
      --dir DIR                   cluster directory (default: a temporary one, removed after)
  remora bench oneside [options]  one-sided read latency vs memcpy, JS reads, writes, torn-read stress
      --quick                     short run (under a minute on 2 cores)
      --out FILE                  JSON results (default bench/results/oneside.json)
      --seed N                    stress writer seed (default random; printed)
  remora bench merge [options]    primary throughput merging vs executing; end to end by pool size
      --quick                     short run
      --out FILE                  JSON results (default bench/results/merge.json)
      --seed N                    workload seed (default random; printed)
  remora help                     this text
`;

/** A mistake in how the command was called: usage goes with it, and exit code 2. */
class UsageError extends Error {}

function intOption(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got '${raw}'`);
  }
  return n;
}

function seedOption(raw: string | undefined): bigint | undefined {
  if (raw === undefined) return undefined;
  try {
    const n = BigInt(raw);
    if (n >= 0n && n < 1n << 64n) return n;
  } catch {
    // Not an integer: reported below.
  }
  throw new UsageError(`--seed must be an unsigned 64-bit integer, got '${raw}'`);
}

function required(raw: string | undefined, name: string): string {
  if (raw === undefined) throw new UsageError(`--${name} is required`);
  return raw;
}

// ---- self-checking values, written by the writer roles and verified by the demo ----

// [version u64][object u32][size u32][written-at ms f64], then a payload repeating an 8-byte
// word made of (version, object): a value mixing two writes, or two objects, fails the check.
const HEADER = 24;
const MIN_SIZE = 32;
const MAX_SIZE = 1 << 20;

/** Milliseconds on the wall clock, to sub-millisecond precision, comparable across processes. */
const wallMs = () => performance.timeOrigin + performance.now();

function payloadWord(version: bigint, object: number, into: Buffer): Buffer {
  into.writeUInt32LE(Number(version & 0xffff_ffffn), 0);
  into.writeUInt32LE((object ^ 0x9e37_79b9) >>> 0, 4);
  return into;
}

function encodeValue(version: bigint, object: number, size: number, word: Buffer): Buffer {
  const v = Buffer.allocUnsafe(size);
  v.writeBigUInt64LE(version, 0);
  v.writeUInt32LE(object, 8);
  v.writeUInt32LE(size, 12);
  v.writeDoubleLE(wallMs(), 16);
  return v.fill(payloadWord(version, object, word), HEADER);
}

class ValueChecker {
  private readonly scratch: Buffer;
  private readonly word = Buffer.alloc(8);

  constructor(private readonly size: number) {
    this.scratch = Buffer.alloc(size);
  }

  /** Null if `value` is exactly what the writer wrote as `version` of `object`. */
  check(value: Buffer, version: bigint, object: number): string | null {
    if (value.length !== this.size) return `object ${object} @${version}: ${value.length} bytes, not ${this.size}`;
    const [v, o] = [value.readBigUInt64LE(0), value.readUInt32LE(8)];
    if (v !== version || o !== object || value.readUInt32LE(12) !== this.size) {
      return `object ${object} @${version}: header says object ${o} @${v}`;
    }
    this.scratch.fill(payloadWord(version, object, this.word), HEADER);
    if (value.compare(this.scratch, HEADER, this.size, HEADER, this.size) !== 0) {
      return `object ${object} @${version}: payload does not match its version`;
    }
    return null;
  }
}

// ---- the writer roles ----

interface WriterObject {
  id: Buffer;
  size: number;
}

const TICK_MS = 10;
const SET_BATCH = 256;

/**
 * Writes every object once (so readers find them all from `ready` on), then rewrites them
 * round-robin at `rate` writes/s, paced by a timer: each tick writes what the clock says is
 * due. Versions count writes, so they strictly increase. A stall is forgiven beyond 100 ms
 * rather than made up in one burst, so the reported rate is what was really achieved.
 */
function startWriter(store: Store, objects: readonly WriterObject[], rate: number): Role {
  const word = Buffer.alloc(8);
  let version = 0n;
  let cursor = 0;
  const write = (count: number) => {
    for (let left = count; left > 0; left -= SET_BATCH) {
      const puts = [];
      for (let i = 0; i < Math.min(left, SET_BATCH); i++) {
        const object = cursor++ % objects.length;
        const o = objects[object];
        if (o === undefined) throw new Error('writer has no objects');
        version++;
        puts.push({ id: o.id, value: encodeValue(version, object, o.size, word), version });
      }
      store.set(puts);
    }
  };
  write(objects.length);

  const began = performance.now();
  let credited = 0;
  let writes = 0;
  let reject: (e: unknown) => void = () => undefined;
  const failed = new Promise<never>((_, r) => (reject = r));
  const maxBurst = Math.max(1, Math.ceil(rate / 10));
  const timer = setInterval(() => {
    try {
      const target = Math.floor((rate * (performance.now() - began)) / 1000);
      credited = Math.max(credited, target - maxBurst);
      const due = target - credited;
      if (due > 0) write(due);
      credited += due;
      writes += due;
    } catch (e) {
      clearInterval(timer);
      reject(e);
    }
  }, TICK_MS);

  return {
    failed,
    stop: () => {
      clearInterval(timer);
      const seconds = (performance.now() - began) / 1000;
      store.close();
      return { writes, seconds, writes_per_s: writes / seconds, last_version: Number(version) };
    },
  };
}

function writerRole(argv: string[], name: string, layout: (values: Record<string, string | undefined>) => WriterObject[]) {
  const { values } = parseArgs({
    args: argv,
    options: { dir: { type: 'string' }, rate: { type: 'string' }, objects: { type: 'string' }, size: { type: 'string' } },
  });
  const dir = required(values.dir, 'dir');
  const rate = intOption(values.rate, 'rate', 1000, 1, 10_000_000);
  return serveRole(() => {
    const store = Store.create({ dir, name, secret: loadOrCreateSecret(dir) });
    return startWriter(store, layout(values), rate);
  });
}

const demoId = (i: number) => `demo/${String(i).padStart(6, '0')}`;

function demoWriterRole(argv: string[]) {
  return writerRole(argv, 'writer', (v) => {
    const objects = intOption(v['objects'], 'objects', 1000, 1, 1_000_000);
    const size = intOption(v['size'], 'size', 256, MIN_SIZE, MAX_SIZE);
    return Array.from({ length: objects }, (_, i) => ({ id: Buffer.from(demoId(i)), size }));
  });
}

function benchWriterRole(argv: string[]) {
  return writerRole(argv, BENCH_STORE, () => benchLayout().map((o) => ({ id: Buffer.from(o.id), size: o.size })));
}

/** Owner side of the torn-read stress: the native writer, reported ready once it populated. */
function stressWriterRole(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: { dir: { type: 'string' }, objects: { type: 'string' }, seed: { type: 'string' }, millis: { type: 'string' } },
  });
  const dir = required(values.dir, 'dir');
  const objects = intOption(values.objects, 'objects', 48, 1, 100_000);
  const seed = seedOption(values.seed) ?? 1n;
  const millis = intOption(values.millis, 'millis', 60_000, 1, 2 ** 32 - 1);
  return serveRole(async () => {
    const store = Store.create({ dir, name: STRESS_STORE, secret: loadOrCreateSecret(dir) });
    let writes: number | null = null;
    let error: unknown = null;
    const running = store.stressWrite(objects, seed, millis).then((n) => (writes = n));
    const failed = running.then(
      () => new Promise<never>(() => undefined),
      (e: unknown) => {
        error = e;
        throw e;
      },
    );
    // The native writer populates the objects in order and has no way to say it did, so
    // watch for the last one (a few microseconds of work), yielding to the loop meanwhile.
    const last = stressIds(objects).at(-1) ?? '';
    const deadline = performance.now() + 10_000;
    while (store.get([last])[0]?.status === 'absent') {
      if (error !== null) throw error;
      if (performance.now() > deadline) throw new Error('stress writer did not populate its objects within 10 s');
      await yieldToLoop();
    }
    return {
      failed,
      // Closing ends the native writer loop, so the writes it made can be reported exactly.
      stop: async () => {
        const finished = writes !== null;
        store.close();
        await running;
        return { finished, writes };
      },
    };
  });
}

/** A pre-executor of an embedded cluster (see cluster.ts). */
function preExecutorRole(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: { dir: { type: 'string' }, app: { type: 'string' }, name: { type: 'string' } },
  });
  const dir = required(values.dir, 'dir');
  return serveRole(async () => {
    const p = await runPreExecutor({
      path: join(dir, NODE_SOCKET),
      secret: loadOrCreateSecret(dir),
      name: required(values.name, 'name'),
      app: loadApp(required(values.app, 'app')),
      natives: nativeFunctions,
    });
    return {
      failed: p.closed.then(() => Promise.reject(new Error('the node closed the connection'))),
      stop: () => {
        p.close();
        return { executed: p.pre.executed };
      },
    };
  });
}

/** An embedded node with its pre-executors, as a process a test can kill and restart. */
function nodeRole(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      app: { type: 'string' },
      'pre-executors': { type: 'string' },
      'deadline-ms': { type: 'string' },
    },
  });
  return serveRole(async () => {
    const cluster = await EmbeddedCluster.start({
      dir: required(values.dir, 'dir'),
      app: required(values.app, 'app'),
      preExecutors: intOption(values['pre-executors'], 'pre-executors', 2, 0, 64),
      deadlineMs: intOption(values['deadline-ms'], 'deadline-ms', 50, 0, 60_000),
    });
    return {
      stop: async () => {
        const result = { digest: cluster.store.digest(), lastApplied: String(cluster.node.lastApplied), stats: cluster.node.stats };
        await cluster.close();
        return result;
      },
    };
  });
}

// ---- the demo ----

interface Batch {
  ids: Buffer[];
  objects: number[];
}

/** Batches of `size` ids cycling through all objects, so every read batch is full. */
function batchesOf(count: number, size: number): Batch[] {
  return Array.from({ length: Math.ceil(count / size) }, (_, b) => {
    const objects = Array.from({ length: size }, (_, j) => (b * size + j) % count);
    return { ids: objects.map((o) => Buffer.from(demoId(o))), objects };
  });
}

interface DemoOptions {
  seconds: number;
  rate: number;
  objects: number;
  size: number;
}

const READ_BATCH = 64;
/** How long the read loop runs before yielding to the event loop (signals, child exit). */
const SLICE_MS = 5;

function progress(elapsed: number, total: number, readsPerS: number, newest: bigint): void {
  const width = 30;
  const filled = Math.round(width * Math.min(1, elapsed / total));
  const line =
    `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${elapsed.toFixed(0)}/${total} s  ` +
    `${formatCount(readsPerS)} reads/s  newest version ${newest}`;
  // A terminal gets one bar redrawn in place; a log gets a line per second.
  process.stderr.write(process.stderr.isTTY ? `\r${line}\x1b[K` : `${line}\n`);
}

async function readLoop(remote: RemoteStore, o: DemoOptions, writer: RoleProcess) {
  const batches = batchesOf(o.objects, READ_BATCH);
  const checker = new ValueChecker(o.size);
  const seen: bigint[] = new Array<bigint>(o.objects).fill(0n);
  const batchNs: number[] = [];
  const agesMs: number[] = [];
  const failures: string[] = [];
  const perSecond: { reads: number; newest: bigint }[] = [];
  let [reads, verified, failed, newest, secondReads, b] = [0, 0, 0, 0n, 0, 0];
  const fail = (what: string) => {
    failed++;
    if (failures.length < 10) failures.push(what);
  };

  const began = performance.now();
  let nextSecond = began + 1000;
  for (;;) {
    const sliceEnd = performance.now() + SLICE_MS;
    let now: number;
    do {
      const batch = batches[b++ % batches.length] ?? { ids: [], objects: [] };
      const t0 = process.hrtime.bigint();
      const found: ReadResult[] = remote.readSync(batch.ids);
      batchNs.push(Number(process.hrtime.bigint() - t0));
      for (let j = 0; j < found.length; j++) {
        const r = found[j];
        const object = batch.objects[j] ?? -1;
        if (r?.status !== 'value') {
          fail(`object ${object}: read found ${r?.status ?? 'nothing'}`);
          continue;
        }
        const err = checker.check(r.value, r.version, object);
        if (err !== null) fail(err);
        else verified++;
        if (r.version < (seen[object] ?? 0n)) fail(`object ${object}: version went back to ${r.version}`);
        seen[object] = r.version;
        if (r.version > newest) newest = r.version;
        if (j === 0) agesMs.push(wallMs() - r.value.readDoubleLE(16));
      }
      reads += found.length;
      secondReads += found.length;
      now = performance.now();
    } while (now < sliceEnd);
    if (now >= nextSecond) {
      perSecond.push({ reads: secondReads, newest });
      progress((now - began) / 1000, o.seconds, secondReads, newest);
      secondReads = 0;
      nextSecond += 1000;
    }
    if (now - began >= o.seconds * 1000 || failures.length >= 10) break;
    if (writer.exitStatus !== null) {
      fail('the writer process exited during the demo');
      break;
    }
    await yieldToLoop();
  }
  if (process.stderr.isTTY) process.stderr.write('\n');
  const seconds = (performance.now() - began) / 1000;
  return { reads, verified, failed, failures, seconds, batchNs, agesMs, perSecond, newest };
}

async function runDemo(dir: string, o: DemoOptions): Promise<number> {
  const secret = loadOrCreateSecret(dir);
  process.stderr.write(`demo: cluster directory ${dir}; starting the writer process\n`);
  const writer = await RoleProcess.start('demo-writer', [
    '--dir', dir,
    '--objects', String(o.objects),
    '--size', String(o.size),
    '--rate', String(o.rate),
  ]);
  try {
    const remote = await RemoteStore.connect({ dir, store: 'writer', secret });
    const initial = BigInt(o.objects);
    await remote.resolve(Array.from({ length: o.objects }, (_, i) => demoId(i)));
    process.stderr.write(
      `demo: writer pid ${writer.pid ?? '?'} writes ${formatCount(o.rate)}/s; reading ${formatCount(o.objects)} ` +
        `objects of ${o.size} B for ${o.seconds} s in batches of ${READ_BATCH} (readSync)\n`,
    );
    const r = await readLoop(remote, o, writer);
    const w = await writer.finish();
    const writesPerS = resultNumber(w, 'writes_per_s');
    const lastWritten = resultNumber(w, 'last_version');

    const batch = summarise(r.batchNs);
    const age = summarise(r.agesMs);
    const newestBySecond = r.perSecond.map((s) => s.newest);
    const rises = newestBySecond.filter((v, i) => v > (newestBySecond[i - 1] ?? initial)).length;
    const advancing = r.newest > initial && rises > 0;
    const ok = r.failed === 0 && r.reads > 0 && advancing;
    const us = (ms: number) => formatNs(ms * 1e6);
    process.stdout.write(
      [
        '',
        `remora demo: one writer process, one reader (this one), ${formatCount(o.objects)} objects of ${o.size} B`,
        `  reads      ${formatCount(r.reads)} one-sided in ${r.seconds.toFixed(1)} s = ${formatCount(r.reads / r.seconds)} reads/s ` +
          `(${formatCount(batch.count)} batches of ${READ_BATCH})`,
        `  latency    per batch p50 ${formatNs(batch.p50)}, p99 ${formatNs(batch.p99)}; ` +
          `per object p50 ${formatNs(batch.p50 / READ_BATCH)}, p99 ${formatNs(batch.p99 / READ_BATCH)}`,
        `  verified   ${formatCount(r.verified)} of ${formatCount(r.reads)} values (self-checking payloads; no version went back)`,
        `  writer     ${formatCount(writesPerS)} writes/s achieved of ${formatCount(o.rate)} asked; last version ${formatCount(lastWritten)}`,
        `  freshness  newest version seen each second: ${newestBySecond.map((v) => formatCount(Number(v))).join(' → ')}`,
        `             rose in ${rises} of ${newestBySecond.length} seconds; age of values read p50 ${us(age.p50)}, ` +
          `p99 ${us(age.p99)} (each object is rewritten every ~${us((o.objects / o.rate) * 1000)})`,
        `  result     ${ok ? 'ok' : 'FAILED'}`,
        '',
      ].join('\n'),
    );
    for (const f of r.failures) process.stderr.write(`demo: ${f}\n`);
    if (r.failed > r.failures.length) process.stderr.write(`demo: ... ${r.failed - r.failures.length} more failures\n`);
    if (!advancing) process.stderr.write('demo: the reader never saw a newer version than the initial ones\n');
    return ok ? 0 : 1;
  } finally {
    await writer.stop();
  }
}

async function demo(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string' },
      rate: { type: 'string' },
      objects: { type: 'string' },
      size: { type: 'string' },
      dir: { type: 'string' },
    },
  });
  const o: DemoOptions = {
    seconds: intOption(values.seconds, 'seconds', 10, 1, 86_400),
    rate: intOption(values.rate, 'rate', 20_000, 1, 10_000_000),
    objects: intOption(values.objects, 'objects', 1000, 1, 1_000_000),
    size: intOption(values.size, 'size', 256, MIN_SIZE, MAX_SIZE),
  };
  const temporary = values.dir === undefined;
  const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'remora-demo-'));
  const removeDir = () => {
    if (temporary) rmSync(dir, { recursive: true, force: true });
  };
  const cancel = atExit(removeDir);
  try {
    return await runDemo(dir, o);
  } finally {
    removeDir();
    cancel();
  }
}

async function pipelineDemo(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string' },
      accounts: { type: 'string' },
      alpha: { type: 'string' },
      clients: { type: 'string' },
      'pre-executors': { type: 'string' },
      'deadline-ms': { type: 'string' },
      seed: { type: 'string' },
      dir: { type: 'string' },
    },
  });
  const alpha = values.alpha === undefined ? 0.8 : Number(values.alpha);
  if (!(alpha >= 0 && alpha <= 5)) throw new UsageError(`--alpha must be a number from 0 to 5, got '${values.alpha}'`);
  return runBankDemo({
    seconds: intOption(values.seconds, 'seconds', 10, 1, 86_400),
    accounts: intOption(values.accounts, 'accounts', 1000, 2, 1_000_000),
    alpha,
    concurrency: intOption(values.clients, 'clients', 256, 1, 100_000),
    preExecutors: intOption(values['pre-executors'], 'pre-executors', 2, 0, 64),
    deadlineMs: intOption(values['deadline-ms'], 'deadline-ms', 50, 0, 60_000),
    seed: intOption(values.seed, 'seed', Math.floor(Math.random() * 2 ** 31), 0, 2 ** 31 - 1),
    ...(values.dir === undefined ? {} : { dir: values.dir }),
  });
}

function benchMerge(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { quick: { type: 'boolean' }, out: { type: 'string' }, seed: { type: 'string' } },
  });
  return runMerge({
    quick: values.quick ?? false,
    out: values.out ?? join('bench', 'results', 'merge.json'),
    seed: intOption(values.seed, 'seed', Math.floor(Math.random() * 2 ** 31), 0, 2 ** 31 - 1),
  });
}

async function bench(argv: string[]): Promise<number> {
  const [suite, ...rest] = argv;
  if (suite === 'merge') return benchMerge(rest);
  if (suite !== 'oneside') {
    throw new UsageError(suite === undefined ? 'bench needs a suite: oneside, merge' : `unknown bench suite '${suite}'`);
  }
  const { values } = parseArgs({
    args: rest,
    options: { quick: { type: 'boolean' }, out: { type: 'string' }, seed: { type: 'string' } },
  });
  const seed = seedOption(values.seed);
  return runOneside({
    quick: values.quick ?? false,
    out: values.out ?? join('bench', 'results', 'oneside.json'),
    ...(seed === undefined ? {} : { seed }),
  });
}

const commands: Record<string, (argv: string[]) => Promise<number>> = {
  demo: pipelineDemo,
  'demo-oneside': demo,
  bench,
  help: async () => {
    process.stdout.write(USAGE);
    return 0;
  },
  // Hidden: the child processes the commands above start (see process.ts).
  'demo-writer': demoWriterRole,
  'bench-writer': benchWriterRole,
  'stress-writer': stressWriterRole,
  'pre-executor': preExecutorRole,
  node: nodeRole,
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h') return commands['help']?.([]) ?? 0;
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (command === undefined) throw new UsageError(`unknown command '${name}'`);
  return command(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    // parseArgs reports unknown or malformed options with these codes: usage errors too.
    const code = (e as { code?: unknown }).code;
    if (e instanceof UsageError || code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      process.stderr.write(`remora: ${(e as Error).message}\n\n${USAGE}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`remora: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    }
  },
);
