// The `work` application: a compute-bound workload, like the compute-heavy ones of the
// Pilotfish and Remora evaluations. `crunch` reads one or two counters, runs `rounds` rounds of
// 32-bit mixing seeded from its arguments and what it read, and writes the digest back.
//
// The mixing is plain JavaScript on purpose: no node:crypto, no pre-compiled function, so every
// member that executes the command (a pre-executor, the primary re-executing, the reference
// executor) pays the whole cost, and that cost is set by the client with `rounds`.
//
// Arguments come from untrusted clients: every command checks their shape and aborts with a
// reason.
import { defineApp, type Ctx } from '../app/app.js';
import { asArgs, type Args } from './args.js';
import { hashPartition } from '../app/partition.js';

/** What `work/<n>` holds: how many crunches wrote it, and the digest of the last one. */
export interface Counter {
  n: number;
  h: number;
}

/**
 * Most rounds one transaction may ask for: some 35 ms of one core at the ~3.3 ns a round
 * measured on a 2-core cloud machine, so one client cannot stall a member for long.
 */
export const WORK_MAX_ROUNDS = 10_000_000;
/** Counters one transaction reads and writes: one or two, as in the evaluations' workloads. */
export const WORK_MAX_OBJECTS = 2;

export const workId = (object: number): string => `work/${object}`;

/** Counter numbers are 32-bit unsigned, so they enter the mixer whole. */
const isObjectNumber = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff;

function objectsArg(ctx: Ctx, args: Args): number[] {
  const v = args['objects'];
  if (!Array.isArray(v) || v.length < 1 || v.length > WORK_MAX_OBJECTS) {
    ctx.abort(`objects must be an array of 1 to ${WORK_MAX_OBJECTS} counter numbers`);
  }
  if (!v.every(isObjectNumber)) ctx.abort('objects must be integers from 0 to 4294967295');
  if (new Set(v).size !== v.length) ctx.abort('objects must be distinct');
  return v;
}

function roundsArg(ctx: Ctx, args: Args): number {
  const v = args['rounds'];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > WORK_MAX_ROUNDS) {
    ctx.abort(`rounds must be an integer from 0 to ${WORK_MAX_ROUNDS}`);
  }
  return v;
}

/** An optional client-chosen number that makes otherwise equal transactions distinct. */
function tagArg(ctx: Ctx, args: Args): number {
  const v = args['tag'];
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) ctx.abort('tag must be a non-negative safe integer');
  return v;
}

/** murmur3's 32-bit finaliser: every input bit flips each output bit with probability ~1/2. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const rotl = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;

/**
 * `rounds` rounds over a 4-word state: each round folds a neighbour and the round number into
 * one word and mixes it, so no round can be skipped or reordered, and the result depends on
 * every input word. Pure: the same state and rounds give the same digest everywhere.
 */
export function crunchDigest(seed: readonly [number, number, number, number], rounds: number): number {
  const s = Uint32Array.from(seed);
  for (let r = 0; r < rounds; r++) {
    const i = r & 3;
    s[i] = fmix32(((s[i] ?? 0) ^ rotl(s[(i + 1) & 3] ?? 0, 5)) + r);
  }
  return fmix32((s[0] ?? 0) ^ rotl(s[1] ?? 0, 8) ^ rotl(s[2] ?? 0, 16) ^ rotl(s[3] ?? 0, 24));
}

const readCounter = (ctx: Ctx, object: number): Counter => ctx.read<Counter>(workId(object)) ?? { n: 0, h: 0 };

export const workApp = defineApp({
  name: 'work',
  commands: {
    /**
     * Reads the counters, mixes for `rounds` rounds from (rounds, objects, tag, their values),
     * writes the digest and an incremented count into each, and returns the digest.
     */
    crunch(ctx: Ctx, raw: { objects: number[]; rounds: number; tag?: number }): number {
      const args = asArgs(ctx, raw);
      const objects = objectsArg(ctx, args);
      const rounds = roundsArg(ctx, args);
      const tag = tagArg(ctx, args);
      const counters = objects.map((o) => readCounter(ctx, o));
      const [o0 = 0, o1 = 0] = objects;
      const [c0 = { n: 0, h: 0 }, c1 = { n: 0, h: 0 }] = counters;
      // Every argument and every value read reaches the state, so a stale read gives another
      // digest (the primary must notice), and so does a change of any argument.
      const digest = crunchDigest(
        [
          fmix32(rounds ^ Math.imul(objects.length, 0x9e3779b1) ^ c0.n ^ rotl(c1.n, 16)),
          fmix32(o0 ^ 0x85ebca6b) ^ c0.h,
          fmix32(o1 ^ 0xc2b2ae35) ^ c1.h,
          fmix32((tag >>> 0) ^ fmix32(Math.floor(tag / 0x1_0000_0000))),
        ],
        rounds,
      );
      objects.forEach((o, i) => ctx.write(workId(o), { n: (counters[i]?.n ?? 0) + 1, h: digest }));
      return digest;
    },

    /** The counter's value ({ n: 0, h: 0 } if never written). */
    get(ctx: Ctx, raw: { object: number }): Counter {
      const v = asArgs(ctx, raw)['object'];
      if (!isObjectNumber(v)) ctx.abort('object must be an integer from 0 to 4294967295');
      return readCounter(ctx, v);
    },
  },

  /** Counter n lives in partition n mod P, like the bank's accounts. */
  partition(id: string, partitions: number): number {
    const m = /^work\/(\d+)$/.exec(id);
    return m?.[1] === undefined ? hashPartition(id, partitions) : Number(m[1]) % partitions;
  },

  objects(command, args): string[] {
    const a = (typeof args === 'object' && args !== null ? args : {}) as Args;
    switch (command) {
      case 'crunch': {
        const objects = a['objects'];
        // Too many is malformed: declare nothing, and the command aborts with the reason.
        if (!Array.isArray(objects) || objects.length > WORK_MAX_OBJECTS) return [];
        return [...new Set(objects.filter(isObjectNumber).map(workId))];
      }
      case 'get':
        return isObjectNumber(a['object']) ? [workId(a['object'])] : [];
      default:
        return [];
    }
  },
});

export type WorkApp = typeof workApp;
