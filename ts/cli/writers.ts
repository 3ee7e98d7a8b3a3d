// The writer roles: store owners in child processes whose objects other processes read one-sidedly
// (a store must be owned by another process for reads of it to be one-sided).
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { BENCH_STORE, benchLayout, STRESS_STORE, stressIds } from './oneside-layout.js';
import { serveRole, type Role } from '../process.js';
import { loadOrCreateSecret } from '../secret.js';
import { Store } from '../store.js';
import { asError } from '../errors.js';
import { intOption, required, seedOption } from './options.js';

// ---- self-checking values, written by the writer roles and verified by the demo ----

// [version u64][object u32][size u32][written-at ms f64], then a payload repeating an 8-byte
// word made of (version, object): a value mixing two writes, or two objects, fails the check.
const HEADER = 24;
export const MIN_SIZE = 32;
export const MAX_SIZE = 1 << 20;

/** Milliseconds on the wall clock, to sub-millisecond precision, comparable across processes. */
export const wallMs = () => performance.timeOrigin + performance.now();

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

export class ValueChecker {
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

export const demoId = (i: number) => `demo/${String(i).padStart(6, '0')}`;

export function demoWriterRole(argv: string[]) {
  return writerRole(argv, 'writer', (v) => {
    const objects = intOption(v['objects'], 'objects', 1000, 1, 1_000_000);
    const size = intOption(v['size'], 'size', 256, MIN_SIZE, MAX_SIZE);
    return Array.from({ length: objects }, (_, i) => ({ id: Buffer.from(demoId(i)), size }));
  });
}

export function benchWriterRole(argv: string[]) {
  return writerRole(argv, BENCH_STORE, () => benchLayout().map((o) => ({ id: Buffer.from(o.id), size: o.size })));
}

/** Owner side of the torn-read stress: the native writer, reported ready once it populated. */
export function stressWriterRole(argv: string[]) {
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
      if (error !== null) throw asError(error);
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
