// `remora demo-oneside`: a writer process updates objects at a steady rate; this process reads
// them one-sidedly and reports reads/s, latency and freshness.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { formatCount, formatNs, resultNumber, summarise } from './oneside-layout.js';
import { atExit, RoleProcess } from '../process.js';
import { loadOrCreateSecret } from '../secret.js';
import { RemoteStore, type ReadResult } from '../store.js';
import { intOption } from './options.js';
import { demoId, MAX_SIZE, MIN_SIZE, ValueChecker, wallMs } from './writers.js';

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
    `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${elapsed.toFixed(0)}/${total} s  ` + `${formatCount(readsPerS)} reads/s  newest version ${newest}`;
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
  const writer = await RoleProcess.start('demo-writer', ['--dir', dir, '--objects', String(o.objects), '--size', String(o.size), '--rate', String(o.rate)]);
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

export async function demoOneside(argv: string[]): Promise<number> {
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
