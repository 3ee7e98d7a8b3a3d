// Building blocks of the wire fuzzer (fuzz.test.ts): a seeded PRNG, a msgpack writer that can
// also write what msgpackr never would (non-minimal widths, unsorted or non-string map keys,
// extension types, raw bytes), and generators of hostile frames for each stage of a connection.
//
// Every frame says in advance what the node must do with it: answer it and keep the connection
// (submits, results), or end the connection (`Expect`); a submitted transaction also says, where
// its mutation settles it, whether admission must take or refuse it (`Must`). The test holds the
// node to all of it, so a generator that labels a frame wrongly shows up as a failure, not as
// silently weaker coverage.
import { createHmac } from 'node:crypto';
import { decodeTx, TX_TAG, type Transaction } from '../ts/app/tx.js';
import { encodeFrame } from '../ts/frames.js';
import type { LookupTable } from '../ts/app/exec.js';
import { encodeResults } from '../ts/pipeline/records.js';
import { encodeTable } from '../ts/pipeline/table-bytes.js';

export const PROTO = 'remora-wire/1';
/** The node's frame limits (wire.ts): before the handshake, and after it by default. */
export const HANDSHAKE_FRAME_BYTES = 1024;
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// PRNG

/** splitmix32 finaliser: spreads nearby seeds and labels over unrelated streams. */
function mix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x21f0aaad);
  h = Math.imul(h ^ (h >>> 15), 0x735a2d97);
  return (h ^ (h >>> 15)) >>> 0;
}

/**
 * sfc32: small, fast, and plenty for choosing mutations. One stream per (seed, labels), so a
 * connection's frames depend only on the seed and its own index, not on how the connections
 * happened to interleave: a failing frame can be rebuilt from the printed seed alone.
 */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, ...labels: number[]) {
    let h = mix(seed >>> 0);
    for (const l of labels) h = mix(h ^ mix(l >>> 0));
    this.a = h;
    this.b = mix(h ^ 0x9e3779b9);
    this.c = mix(h ^ 0x7f4a7c15);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 2 ** 32) * n);
  }

  /** Uniform in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }

  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error('pick from an empty list');
    return xs[this.int(xs.length)] as T;
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** Small lengths mostly, occasionally large ones: where parsers' edge cases live. */
  length(max: number): number {
    const r = this.int(10);
    if (r < 6) return this.int(Math.min(max, 16) + 1);
    if (r < 9) return this.int(Math.min(max, 300) + 1);
    return this.int(max + 1);
  }
}

// ---------------------------------------------------------------------------------------------
// msgpack, written by hand

/** An extension value: type (−128..127) and payload. */
export class Ext {
  constructor(
    readonly type: number,
    readonly data: Uint8Array,
  ) {}
}
/** Bytes put into the output as they are (possibly not msgpack at all). */
export class Raw {
  constructor(readonly bytes: Uint8Array) {}
}
/** A map whose keys may be anything, in the order given, duplicates included. */
export class Pairs {
  constructor(readonly pairs: readonly (readonly [Mp, Mp])[]) {}
}
/** A str whose payload is these bytes, valid UTF-8 or not. */
export class StrBytes {
  constructor(readonly bytes: Uint8Array) {}
}
export class Float32 {
  constructor(readonly value: number) {}
}
/** Encodes `value` (not its children) in a wider form than needed. */
export class Wide {
  constructor(readonly value: Mp) {}
}

export type Mp =
  | null
  | undefined
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Ext
  | Raw
  | Pairs
  | StrBytes
  | Float32
  | Wide
  | readonly Mp[]
  | { readonly [key: string]: Mp };

class Writer {
  private buf = Buffer.allocUnsafe(256);
  len = 0;

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  u8(x: number): this {
    this.room(1);
    this.buf[this.len++] = x & 0xff;
    return this;
  }

  u16(x: number): this {
    this.room(2);
    this.buf.writeUInt16BE(x & 0xffff, this.len);
    this.len += 2;
    return this;
  }

  u32(x: number): this {
    this.room(4);
    this.buf.writeUInt32BE(x >>> 0, this.len);
    this.len += 4;
    return this;
  }

  u64(x: bigint): this {
    this.room(8);
    this.buf.writeBigUInt64BE(BigInt.asUintN(64, x), this.len);
    this.len += 8;
    return this;
  }

  f32(x: number): this {
    this.room(4);
    this.buf.writeFloatBE(x, this.len);
    this.len += 4;
    return this;
  }

  f64(x: number): this {
    this.room(8);
    this.buf.writeDoubleBE(x, this.len);
    this.len += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }

  done(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.len));
  }
}

/** Chooses, per node, whether to widen it; null: always minimal. */
export type Widen = (() => boolean) | null;

const U32 = 2 ** 32;

/** Integer forms: marker and payload width; marker null is the fixint itself. */
const UINT_FORMS: [marker: number | null, bytes: number, below: number][] = [
  [null, 0, 128],
  [0xcc, 1, 256],
  [0xcd, 2, 65536],
  [0xce, 4, U32],
  [0xcf, 8, Infinity],
];
const INT_FORMS: [marker: number | null, bytes: number, atLeast: number][] = [
  [null, 0, -32],
  [0xd0, 1, -128],
  [0xd1, 2, -32768],
  [0xd2, 4, -(2 ** 31)],
  [0xd3, 8, -Infinity],
];

function writeInt(w: Writer, v: number, wide: boolean): Writer {
  const forms = v >= 0 ? UINT_FORMS.filter(([, , below]) => v < below) : INT_FORMS.filter(([, , atLeast]) => v >= atLeast);
  // Wide: any fitting form but the smallest, chosen by the value so it stays reproducible.
  const form = (wide && forms.length > 1 ? forms[1 + (Math.abs(v) % (forms.length - 1))] : forms[0]) ?? [0xd3, 8, 0];
  const [marker, bytes] = form;
  if (marker === null) return w.u8(v & 0xff);
  w.u8(marker);
  if (bytes === 1) return w.u8(v & 0xff);
  if (bytes === 2) return w.u16(v & 0xffff);
  if (bytes === 4) return w.u32(v >>> 0);
  return w.u64(BigInt(v));
}

/** Header of a str, bin, array or map of `n` items: fix form (if any) below `fixMax`. */
function writeHeader(w: Writer, n: number, wide: boolean, fix: number | null, fixMax: number, w8: number | null, w16: number, w32: number): Writer {
  if (!wide) {
    if (fix !== null && n < fixMax) return w.u8(fix | n);
    if (w8 !== null && n < 256) return w.u8(w8).u8(n);
    if (n < 65536) return w.u8(w16).u16(n);
    return w.u8(w32).u32(n);
  }
  if (n < 65536 && (n & 1) === 0) return w.u8(w16).u16(n);
  return w.u8(w32).u32(n);
}

function writeValue(w: Writer, v: Mp, widen: Widen): Writer {
  const wide = widen !== null && widen();
  if (v instanceof Wide) return writeValue(w, v.value, () => true);
  if (v === null) return w.u8(0xc0);
  if (v === undefined) return w.u8(0xd4).u8(0).u8(0);
  if (v === true) return w.u8(0xc3);
  if (v === false) return w.u8(0xc2);
  if (typeof v === 'number') {
    // As msgpackr: integers beyond 32 bits go as float64 (a 64-bit integer form decodes to a
    // bigint), so only a widened value takes one.
    const int32 = v >= -(2 ** 31) && v < U32;
    if (Number.isSafeInteger(v) && !Object.is(v, -0) && (wide ? v % 3 !== 0 : int32)) return writeInt(w, v, wide);
    return w.u8(0xcb).f64(v);
  }
  if (typeof v === 'bigint') {
    if (v >= 0n && v < 2n ** 64n) return w.u8(0xcf).u64(v);
    if (v < 0n && v >= -(2n ** 63n)) return w.u8(0xd3).u64(v);
    // Beyond 64 bits: msgpackr's big-integer extension (0x42), big-endian two's complement.
    let hex = BigInt.asUintN(8 * Math.ceil((v.toString(16).length + 2) / 2), v).toString(16);
    if (hex.length % 2) hex = `0${hex}`;
    return writeValue(w, new Ext(0x42, Buffer.from(hex, 'hex')), null);
  }
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    return writeHeader(w, b.length, wide, 0xa0, 32, 0xd9, 0xda, 0xdb).bytes(b);
  }
  if (v instanceof StrBytes) return writeHeader(w, v.bytes.length, wide, 0xa0, 32, 0xd9, 0xda, 0xdb).bytes(v.bytes);
  if (v instanceof Uint8Array) return writeHeader(w, v.length, wide, null, 0, 0xc4, 0xc5, 0xc6).bytes(v);
  if (v instanceof Raw) return w.bytes(v.bytes);
  if (v instanceof Float32) return w.u8(0xca).f32(v.value);
  if (v instanceof Ext) {
    const n = v.data.length;
    const fixed = [1, 2, 4, 8, 16].indexOf(n);
    if (fixed >= 0 && !wide) w.u8(0xd4 + fixed);
    else if (n < 256) w.u8(0xc7).u8(n);
    else if (n < 65536) w.u8(0xc8).u16(n);
    else w.u8(0xc9).u32(n);
    return w.u8(v.type & 0xff).bytes(v.data);
  }
  if (Array.isArray(v)) {
    const items = v as readonly Mp[];
    writeHeader(w, items.length, wide, 0x90, 16, null, 0xdc, 0xdd);
    for (const x of items) writeValue(w, x, widen);
    return w;
  }
  const pairs: readonly (readonly [Mp, Mp])[] = v instanceof Pairs ? v.pairs : Object.entries(v as { readonly [key: string]: Mp });
  writeHeader(w, pairs.length, wide, 0x80, 16, null, 0xde, 0xdf);
  for (const [k, x] of pairs) writeValue(writeValue(w, k, widen), x, widen);
  return w;
}

/** msgpack of `v`; minimal forms unless `widen` says otherwise, map keys in the order given. */
export function mp(v: Mp, widen: Widen = null): Buffer {
  const w = new Writer();
  return writeValue(w, v, widen).done();
}

/** Plain data with its map keys sorted, as the canonical encoding (codec.ts) orders them. */
export function sorted(v: Mp): Mp {
  if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return v;
  if (v instanceof Ext || v instanceof Raw || v instanceof Pairs || v instanceof StrBytes || v instanceof Float32 || v instanceof Wide) return v;
  if (Array.isArray(v)) return (v as readonly Mp[]).map(sorted);
  const o = v as { readonly [key: string]: Mp };
  const out: Record<string, Mp> = {};
  for (const k of Object.keys(o).sort()) out[k] = sorted(o[k]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Random values

const INTS = [
  0,
  1,
  -1,
  31,
  32,
  -32,
  -33,
  127,
  128,
  -128,
  -129,
  255,
  256,
  65535,
  65536,
  -32768,
  -32769,
  2 ** 31 - 1,
  2 ** 31,
  -(2 ** 31),
  U32 - 1,
  U32,
  2 ** 53 - 1,
  -(2 ** 53 - 1),
];
const FLOATS = [0.5, -0, NaN, Infinity, -Infinity, 1e308, 5e-324, 2 ** 53, -(2 ** 53), 2 ** 63, 1.0000000000000002];
const BIGINTS = [0n, 1n, 2n ** 63n, 2n ** 63n - 1n, 2n ** 64n - 1n, -(2n ** 63n), -1n, 2n ** 64n, 2n ** 100n, -(2n ** 64n)];
const WORDS = [
  '',
  't',
  'submit',
  'hello',
  'auth',
  'challenge',
  'ok',
  'results',
  'exec',
  'config',
  'effects',
  'objects',
  'feedback',
  'reply',
  'rejected',
  'optimistic',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'valueOf',
  'hasOwnProperty',
  'body',
  'auth',
  'ed25519',
  'status',
  'aborted',
  'reads',
  'writes',
  TX_TAG,
  PROTO,
  'client',
  'pre-executor:fuzz',
  'kv/a',
  'key/1',
  'hot/0',
  'é',
  '\u0000',
  '\ud83d\ude00',
  'x'.repeat(40),
];

/** Ext payloads msgpackr reads without a care: undefined, dates, big integers. */
function benignExt(r: Prng): Ext {
  switch (r.int(4)) {
    case 0:
      return new Ext(0, Buffer.alloc(1));
    case 1:
      return new Ext(-1, r.bytes(r.pick([4, 8, 12])));
    case 2:
      return new Ext(0x42, r.bytes(r.range(1, 24)));
    default:
      return new Ext(-1, r.bytes(r.pick([0, 3, 5])));
  }
}

/** Any extension type, with payloads that steer msgpackr's own extensions into their corners. */
function anyExt(r: Prng): Ext {
  const type = r.chance(0.6) ? r.pick([0x00, 0x42, 0x62, 0x65, 0x69, 0x70, 0x72, 0x73, 0x74, 0x78, 0xff, -1, -2, 0x7f, -128]) : r.range(-128, 127);
  const data = r.chance(0.5) ? r.bytes(r.pick([1, 2, 4, 8, 16])) : r.bytes(r.length(64));
  return new Ext(type, data);
}

export interface ValueOptions {
  /** Only values msgpackr decodes without throwing (no Raw, no unknown extensions). */
  decodable: boolean;
  /** Map keys are strings only (so the decoded value is a plain object). */
  stringKeys?: boolean;
}

/** A random msgpack value, at most `depth` levels deep. */
export function randomValue(r: Prng, depth: number, o: ValueOptions): Mp {
  const leaf = depth <= 0 || r.chance(0.55);
  if (leaf) {
    switch (r.int(o.decodable ? 12 : 14)) {
      case 0:
        return null;
      case 1:
        return r.chance(0.5);
      case 2:
        return r.pick(INTS);
      case 3:
        return r.range(-1_000_000, 1_000_000);
      case 4:
        return r.pick(FLOATS);
      case 5:
        return r.pick(BIGINTS.filter((b) => b >= -(2n ** 63n) && b < 2n ** 64n));
      case 6:
        return r.pick(WORDS);
      case 7:
        return r.bytes(r.length(96)).toString('latin1');
      case 8:
        return r.bytes(r.length(128));
      case 9:
        return new StrBytes(r.bytes(r.length(24)));
      case 10:
        return new Float32(r.pick([0.25, 1.5, NaN, -Infinity, 3.4e38]));
      case 11:
        return benignExt(r);
      case 12:
        return anyExt(r);
      default:
        return new Raw(r.bytes(r.range(1, 8)));
    }
  }
  const n = r.length(12);
  if (r.chance(0.5)) return Array.from({ length: n }, () => randomValue(r, depth - 1, o));
  if (o.stringKeys || r.chance(0.7)) {
    return new Pairs(
      Array.from({ length: n }, () => [r.chance(0.7) ? r.pick(WORDS) : r.bytes(r.length(12)).toString('latin1'), randomValue(r, depth - 1, o)] as const),
    );
  }
  // Keys msgpackr turns into strings; containers, bytes and dates as keys it refuses outright.
  const key = (): Mp =>
    o.decodable ? r.pick<Mp>([null, true, r.pick(INTS), r.pick(FLOATS), 2n ** 63n, new StrBytes(r.bytes(3))]) : randomValue(r, depth - 1, o);
  return new Pairs(Array.from({ length: n }, () => [key(), randomValue(r, depth - 1, o)] as const));
}

// ---------------------------------------------------------------------------------------------
// Frames

/**
 * What the node must do after a frame that ends a connection: `close` it on its own, or
 * `either` (a frame cut short, which the node waits to complete, or one whose fate depends on
 * how random bytes happen to decode): then the sender ends the connection itself. Frames that
 * must leave the connection open are the submits and results a connection sends before.
 */
export type Expect = 'close' | 'either';

/** Bytes to write, how many frames they hold, what the node must do, and a name for reports. */
export interface Frame {
  bytes: Buffer;
  frames: number;
  expect: Expect;
  what: string;
}

export const frame = (body: Uint8Array): Buffer => encodeFrame(body);

/** Flips `n` random bits of `b` in place. */
function flipBits(r: Prng, b: Buffer, n: number): void {
  for (let i = 0; i < n && b.length > 0; i++) {
    const at = r.int(b.length);
    b.writeUInt8((b.readUInt8(at) ^ (1 << r.int(8))) & 0xff, at);
  }
}

function lengthPrefix(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** The MAC of the handshake (wire.ts): HMAC-SHA256(secret, label ‖ nonceC ‖ nonceS ‖ role). */
export function handshakeMac(secret: Buffer, label: 'remora-server' | 'remora-client', nonceC: Uint8Array, nonceS: Uint8Array, role: string): Buffer {
  return createHmac('sha256', secret).update(label).update(nonceC).update(nonceS).update(role, 'utf8').digest();
}

export const hello = (role: string, nonce: Uint8Array): Buffer => frame(mp({ t: 'hello', proto: PROTO, role, nonce }));

/**
 * Broken framing that fits any stage: bytes that are not frames, length prefixes that lie,
 * bodies that are not msgpack. `limit` is the largest body the node accepts at this stage.
 */
export function brokenFrame(r: Prng, limit: number): Frame {
  switch (r.int(9)) {
    case 0: {
      // Closed at once if the first four bytes announce too much; else the node awaits the rest.
      const bytes = r.bytes(r.range(5, 600));
      return { bytes, frames: 1, expect: bytes.readUInt32BE(0) > limit ? 'close' : 'either', what: 'random bytes' };
    }
    case 1: {
      const n = r.chance(0.5) ? r.pick([limit + 1, 0xffffffff, 0x80000000, limit * 2]) : r.range(limit + 1, 0xffffffff);
      return { bytes: Buffer.concat([lengthPrefix(n), r.bytes(r.int(64))]), frames: 1, expect: 'close', what: `length prefix ${n} over the limit ${limit}` };
    }
    case 2:
      return { bytes: r.bytes(r.range(1, 3)), frames: 1, expect: 'either', what: 'a partial length prefix' };
    case 3: {
      const n = r.range(2, Math.min(limit, 4096));
      return { bytes: Buffer.concat([lengthPrefix(n), r.bytes(r.int(n))]), frames: 1, expect: 'either', what: `a body of ${n} bytes cut short` };
    }
    case 4:
      return { bytes: lengthPrefix(0), frames: 1, expect: 'close', what: 'an empty body' };
    case 5: {
      // Valid msgpack followed by trailing bytes inside the frame.
      const body = Buffer.concat([mp({ t: 'hello', proto: PROTO }), r.bytes(r.range(1, 8))]);
      return { bytes: frame(body), frames: 1, expect: 'close', what: 'a body with trailing bytes' };
    }
    case 6: {
      // Containers announcing more items than the frame holds.
      const head = r.pick([
        [0xdd, 0xff, 0xff, 0xff, 0xff],
        [0xdf, 0x7f, 0xff, 0xff, 0xff],
        [0xdb, 0x00, 0x10, 0x00, 0x00],
        [0xc6, 0xff, 0xff, 0xff, 0xf0],
        [0x9f],
        [0x8f, 0xa1, 0x74],
      ]);
      return {
        bytes: frame(Buffer.from(head)),
        frames: 1,
        expect: 'close',
        what: `a container header claiming more than the body (${Buffer.from(head).toString('hex')})`,
      };
    }
    case 7: {
      // Arrays nested as deep as the frame allows: a recursive decoder must not take the node down.
      const depth = Math.min(limit, r.pick([1000, 5000, 100_000, 1_000_000]));
      return { bytes: frame(Buffer.alloc(depth, 0x91)), frames: 1, expect: 'close', what: `arrays nested ${depth} deep, unterminated` };
    }
    default: {
      const body = Buffer.from(mp(randomValue(r, 3, { decodable: false })));
      if (body.length === 0 || body.length > limit) return { bytes: lengthPrefix(0), frames: 1, expect: 'close', what: 'an empty body' };
      // Flip bits inside an otherwise plausible body; the result may even decode, to garbage.
      flipBits(r, body, r.range(1, 4));
      return { bytes: frame(body), frames: 1, expect: 'either', what: 'a mutated random value' };
    }
  }
}

/** A role that fails the node's checks or names nobody (it serves client, pre-executor:NAME, admin). */
function badRole(r: Prng): Mp {
  switch (r.int(9)) {
    case 0:
      return '';
    case 1:
      return 'x'.repeat(r.range(256, 900));
    case 2:
      return r.pick(['Admin', 'admin ', 'administrator', 'node', 'Client', 'client ', 'pre-executor', 'pre_executor:x', 'heron', '\u0000client']);
    case 3:
      return r.pick(INTS);
    case 4:
      return r.pick(BIGINTS.filter((b) => b >= -(2n ** 63n) && b < 2n ** 64n));
    case 5:
      return new Pairs([
        ['role', 'client'],
        ['nested', { deeper: { client: true } }],
      ]);
    case 6:
      return ['client'];
    case 7:
      return Buffer.from('client');
    default:
      return null;
  }
}

function badNonce(r: Prng): Mp {
  switch (r.int(6)) {
    case 0:
      return r.bytes(r.pick([0, 1, 16, 31, 33, 64, 512]));
    case 1:
      return r.bytes(32).toString('hex');
    case 2:
      return r.pick(BIGINTS.filter((b) => b >= -(2n ** 63n) && b < 2n ** 64n));
    case 3:
      return Array.from(r.bytes(32));
    case 4:
      return new Pairs([['nonce', r.bytes(32)]]);
    default:
      return null;
  }
}

/**
 * A first frame the node must refuse: a hello with one thing wrong, or another message. `role`
 * is a role the node would accept, to which the one defect is applied.
 */
export function badHello(r: Prng, role: string): Frame {
  const nonce = r.bytes(32);
  const base: [string, Mp][] = [
    ['t', 'hello'],
    ['proto', PROTO],
    ['role', role],
    ['nonce', nonce],
  ];
  const kind = r.int(11);
  let pairs: [Mp, Mp][] = base.map(([k, v]) => [k, v]);
  let what: string;
  const set = (key: string, v: Mp) => (pairs = pairs.map(([k, x]) => [k, k === key ? v : x]));
  switch (kind) {
    case 0:
      set('proto', r.pick(['remora-wire/0', 'remora-wire/2', 'REMORA-WIRE/1', '', 'x'.repeat(700), 1, null, Buffer.from(PROTO), [PROTO]]));
      what = 'hello with a wrong proto';
      break;
    case 1:
      set('role', badRole(r));
      what = 'hello with a bad role';
      break;
    case 2:
      set('nonce', badNonce(r));
      what = 'hello with a bad nonce';
      break;
    case 3: {
      const gone = r.pick(['t', 'proto', 'role', 'nonce']);
      pairs = pairs.filter(([k]) => k !== gone);
      what = `hello without ${gone}`;
      break;
    }
    case 4:
      set('t', r.pick(['Hello', 'auth', 'submit', 'results', '', 7, null, ['hello']]));
      what = 'hello with a wrong t';
      break;
    case 5:
      return {
        bytes: frame(mp(randomValue(r, 3, { decodable: true, stringKeys: r.chance(0.5) }))),
        frames: 1,
        expect: 'close',
        what: 'a random value as hello',
      };
    case 6:
      return { bytes: frame(mp([...base.map(([, v]) => v)])), frames: 1, expect: 'close', what: 'hello as an array' };
    case 7:
      return { bytes: frame(mp({ t: 'auth', mac: r.bytes(32) })), frames: 1, expect: 'close', what: 'auth before hello' };
    case 8:
      return { bytes: frame(mp({ t: 'submit', id: 1, tx: { body: r.bytes(20), auth: [] } })), frames: 1, expect: 'close', what: 'submit before the handshake' };
    case 9:
      set('role', new Pairs([[new Pairs([['a', 1]]), 'client']]));
      what = 'hello whose role is a map with a map key';
      break;
    default: {
      // Well-formed, but a role only a member may hold, asked with a wrong-typed nonce.
      set('role', 'pre-executor:x');
      set('nonce', r.bytes(r.pick([31, 33])));
      what = 'member hello with a nonce of the wrong length';
    }
  }
  return { bytes: frame(mp(new Pairs(pairs))), frames: 1, expect: 'close', what };
}

/**
 * An auth frame the node must refuse, given what the honest one would be. With `mac` null the
 * sender has not seen the challenge (pipelined), so any MAC it sends is wrong.
 */
export function badAuth(r: Prng, mac: Buffer | null, wrongCredentialMac: Buffer | null): Frame {
  const good = mac ?? r.bytes(32);
  const kind = r.int(8);
  let v: Mp;
  let what: string;
  switch (kind) {
    case 0: {
      const m = Buffer.from(good);
      flipBits(r, m, 1);
      v = { t: 'auth', mac: m };
      what = 'auth with a flipped MAC bit';
      break;
    }
    case 1:
      v = { t: 'auth', mac: mac === null ? r.bytes(32) : (wrongCredentialMac ?? r.bytes(32)) };
      what = mac === null ? 'auth with a guessed MAC' : 'auth with the other role credential';
      break;
    case 2:
      v = { t: 'auth', mac: good.subarray(0, r.pick([0, 16, 31])) };
      what = 'auth with a short MAC';
      break;
    case 3:
      v = { t: 'auth', mac: Buffer.concat([good, r.bytes(r.range(1, 32))]) };
      what = 'auth with a long MAC';
      break;
    case 4:
      v = { t: 'auth', mac: r.pick<Mp>([good.toString('hex'), Array.from(good), null, 2n ** 63n, new Pairs([['mac', good]])]) };
      what = 'auth with a MAC of the wrong type';
      break;
    case 5:
      v = new Pairs([
        ['t', r.pick<Mp>(['Auth', 'hello', 'ok', null, 1])],
        ['mac', good],
      ]);
      what = 'auth with a wrong t';
      break;
    case 6:
      v = { mac: good };
      what = 'auth without t';
      break;
    default:
      return { bytes: frame(mp(randomValue(r, 3, { decodable: true }))), frames: 1, expect: 'close', what: 'a random value as auth' };
  }
  return { bytes: frame(mp(v)), frames: 1, expect: 'close', what };
}

// ---------------------------------------------------------------------------------------------
// Transactions

const decodedBody = (tx: Transaction): [unknown, unknown, unknown, unknown] => {
  const d = decodeTx(tx);
  return [TX_TAG, d.command, d.args, d.objects];
};

/** Plain data (from a decoded body) as a value this writer takes. */
function asMp(v: unknown): Mp {
  if (v === null || v === undefined || typeof v === 'boolean' || typeof v === 'number' || typeof v === 'bigint' || typeof v === 'string') return v;
  if (v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map(asMp);
  const out: Record<string, Mp> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) out[k] = asMp(x);
  return out;
}

/**
 * What admission must answer, where the mutation settles it: `reject` (the node says why) or
 * `accept` (sequenced and executed, whatever its outcome); undefined where it depends on the bytes.
 */
export type Must = 'reject' | 'accept' | undefined;

/** A transaction body `tx`'s, changed in one of many ways; it may still be valid. */
export function mutateBody(r: Prng, tx: Transaction, other: Transaction): { body: Mp; what: string; must: Must } {
  const body = Buffer.from(tx.body);
  const [tag, command, args, objects] = decodedBody(tx).map(asMp) as [Mp, Mp, Mp, Mp];
  const canonical = (v: Mp): Buffer => mp(sorted(v));
  switch (r.int(21)) {
    case 0: {
      flipBits(r, body, r.range(1, 4));
      return { body, what: 'body with flipped bits', must: undefined };
    }
    case 1:
      body[r.int(body.length)] = r.pick([0x00, 0xff, 0xc0, 0xc1, 0x7f, 0x80, 0x90, 0xa0, 0xd9, 0xdc, 0xde]);
      return { body, what: 'body with a byte set to a msgpack marker', must: undefined };
    case 2:
      return { body: body.subarray(0, r.int(body.length)), what: 'truncated body', must: 'reject' };
    case 3:
      return { body: Buffer.concat([body, r.bytes(r.range(1, 16))]), what: 'body with bytes appended', must: 'reject' };
    case 4: {
      const at = r.int(body.length + 1);
      return { body: Buffer.concat([body.subarray(0, at), r.bytes(r.range(1, 8)), body.subarray(at)]), what: 'body with bytes inserted', must: undefined };
    }
    case 5: {
      const at = r.int(body.length);
      return { body: Buffer.concat([body.subarray(0, at), body.subarray(at + r.range(1, 8))]), what: 'body with bytes removed', must: undefined };
    }
    case 6: {
      const b = Buffer.from(other.body);
      return { body: Buffer.concat([body.subarray(0, r.int(body.length)), b.subarray(r.int(b.length))]), what: 'two bodies spliced', must: undefined };
    }
    case 7:
      return {
        body: canonical([r.pick<Mp>(['remora.tx.v0', 'remora.tx.v2', `${TX_TAG} `, Buffer.from(TX_TAG), null, 1, '']), command, args, objects]),
        what: 'body with a wrong tag',
        must: 'reject',
      };
    case 8:
      return {
        body: canonical(r.chance(0.5) ? [tag, command, args] : [tag, command, args, objects, randomValue(r, 1, { decodable: true })]),
        what: 'body with the wrong number of parts',
        must: 'reject',
      };
    case 9:
      return {
        body: canonical([
          tag,
          r.pick<Mp>(['', 'launch', 'PUT', 'x'.repeat(65), 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'remora.x', 7, null, ['put']]),
          args,
          objects,
        ]),
        what: 'body with a bad command',
        must: 'reject',
      };
    case 10: {
      const ids = Array.isArray(objects) ? [...(objects as Mp[])] : [];
      const variants: [Mp, string][] = [
        [[], 'no declared objects'],
        [[...ids, 'kv/extra'], 'an extra declared object'],
        [[...ids].reverse().concat(ids.length === 1 ? ['kv/z'] : []), 'declared objects reordered'],
        [[...ids, ...ids], 'declared objects repeated'],
        [ids.map(() => 5), 'non-string object ids'],
        [Array.from({ length: 300 }, (_, i) => `kv/${i}`), '300 declared objects'],
        [[`kv/${'k'.repeat(86)}`], 'an 89-byte object id'],
        [[''], 'an empty object id'],
        ['kv/a', 'objects as a string'],
      ];
      const [v, what] = r.pick(variants);
      return { body: canonical([tag, command, args, v]), what: `body with ${what}`, must: 'reject' };
    }
    case 11:
      return { body: mp([tag, command, args, objects], () => r.chance(0.3)), what: 'non-canonical widths', must: undefined };
    case 12: {
      // The same map with its keys out of order: a second encoding of one transaction.
      const a = args !== null && typeof args === 'object' && !Array.isArray(args) ? (args as Record<string, Mp>) : { key: 'a', value: 1 };
      const keys = Object.keys(a).sort().reverse();
      const unsorted = new Pairs(
        keys.length > 1
          ? keys.map((k) => [k, a[k]] as const)
          : [
              ['value', 1],
              ['key', 'a'],
            ],
      );
      return { body: mp([tag, command, unsorted, objects]), what: 'map keys out of order', must: 'reject' };
    }
    case 13: {
      const a = args !== null && typeof args === 'object' && !Array.isArray(args) ? (args as Record<string, Mp>) : {};
      return {
        body: canonical([
          tag,
          command,
          { ...a, [r.pick(['extra', 'zz', 'into', 'value', '_'])]: randomValue(r, 2, { decodable: true, stringKeys: true }) },
          objects,
        ]),
        what: 'args with an extra field',
        must: undefined,
      };
    }
    case 14:
      return { body: canonical([tag, command, randomValue(r, 3, { decodable: true }), objects]), what: 'random args', must: undefined };
    case 15: {
      let deep: Mp = 'bottom';
      const depth = r.pick([63, 65, 200, 2000]);
      for (let i = 0; i < depth; i++) deep = r.chance(0.5) ? [deep] : { v: deep };
      return { body: mp([tag, command, { key: 'a', value: deep }, ['kv/a']]), what: `value nested ${depth} deep`, must: depth > 64 ? 'reject' : undefined };
    }
    case 16: {
      const size = r.pick([64 * 1024 - 40, 64 * 1024, 64 * 1024 + 1, 200_000]);
      const big = canonical([tag, 'put', { key: 'big', value: 'v'.repeat(size) }, ['kv/big']]);
      return { body: big, what: `a put of a ${size}-byte value (body ${big.length} bytes)`, must: big.length > 64 * 1024 ? 'reject' : 'accept' };
    }
    case 17: {
      // Integers written as floats or as wider integers than needed.
      const a = args !== null && typeof args === 'object' && !Array.isArray(args) ? (args as Record<string, Mp>) : {};
      return { body: mp([tag, command, sorted({ ...a, value: new Wide(r.pick(INTS)) }), objects]), what: 'a wide integer inside the body', must: undefined };
    }
    case 18:
      return {
        body: mp([tag, command, sorted({ key: 'a', value: r.chance(0.5) ? benignExt(r) : anyExt(r) }), ['kv/a']]),
        what: 'an extension value inside the body',
        must: undefined,
      };
    case 19: {
      // The node's own upgrade transaction, as a client might forge it.
      const forged = canonical([tag, 'remora.upgrade', { digest: r.bytes(32).toString('hex'), since: '0', spec: r.pick(['kv', 'bank', './evil.js']) }, []]);
      return { body: forged, what: 'a forged upgrade transaction', must: 'reject' };
    }
    default:
      return { body: r.chance(0.5) ? r.bytes(r.length(200)) : randomValue(r, 2, { decodable: true }), what: 'a body that is random', must: undefined };
  }
}

/** An `auth` list with something wrong, or right but unrequested (then the command aborts). */
export function mutateAuth(r: Prng): { auth: Mp; what: string; must: Must } {
  const a = (key = r.bytes(32), sig = r.bytes(64)): Mp => ({ scheme: 'ed25519', publicKey: key, signature: sig });
  const sortedKeys = Array.from({ length: 2 }, () => r.bytes(32)).sort(Buffer.compare);
  const variants: (() => [Mp, string])[] = [
    // Well-formed: admitted, then aborted by execution (nobody asked for the signature).
    () => [[a()], 'a well-formed random signature'],
    () => [Array.from({ length: 9 }, () => a()), 'nine authenticators'],
    () => [[{ scheme: r.pick<Mp>(['ed448', 'ED25519', '', null, 1]), publicKey: r.bytes(32), signature: r.bytes(64) }], 'an unknown scheme'],
    () => [[a(r.bytes(r.pick([0, 31, 33])))], 'a public key of the wrong length'],
    () => [[a(undefined, r.bytes(r.pick([0, 63, 65])))], 'a signature of the wrong length'],
    () => [[a(sortedKeys[1]), a(sortedKeys[0])], 'authenticators out of order'],
    () => [[a(sortedKeys[0]), a(sortedKeys[0])], 'the same key twice'],
    () => [r.pick<Mp>([null, {}, 'ed25519', 1, Buffer.alloc(96)]), 'auth that is not a list'],
    () => [[null, 1, 'x', []], 'authenticators that are not maps'],
    () => [[{ ...(a() as Record<string, Mp>), extra: true }], 'an authenticator with an extra field'],
  ];
  const [auth, what] = r.pick(variants)();
  return { auth, what, must: what === 'a well-formed random signature' || what === 'an authenticator with an extra field' ? 'accept' : 'reject' };
}

/** The `tx` of a submit: a mutation of `tx` at some level (bytes, structure, object). */
export function mutateTx(r: Prng, tx: Transaction, other: Transaction): { tx: Mp; what: string; must: Must } {
  const roll = r.int(10);
  if (roll < 6) {
    const m = mutateBody(r, tx, other);
    const body = m.body instanceof Uint8Array ? m.body : mp(m.body);
    return { tx: { body, auth: [] }, what: m.what, must: m.must };
  }
  if (roll < 8) {
    const m = mutateAuth(r);
    return { tx: { body: tx.body, auth: m.auth }, what: m.what, must: m.must };
  }
  const variants: (() => [Mp, string])[] = [
    () => [{ body: Buffer.from(tx.body).toString('latin1'), auth: [] }, 'body as a string'],
    () => [{ body: Array.from(tx.body), auth: [] }, 'body as an array'],
    () => [{ body: tx.body }, 'no auth'],
    () => [{ auth: [] }, 'no body'],
    () => [{ body: tx.body, auth: [], extra: randomValue(r, 2, { decodable: true }) }, 'a transaction with an extra field'],
    () => [randomValue(r, 3, { decodable: true }), 'a random transaction'],
    () => [null, 'a null transaction'],
    () => [{ body: r.pick(BIGINTS.filter((b) => b >= -(2n ** 63n) && b < 2n ** 64n)), auth: [] }, 'body as a big integer'],
  ];
  const [v, what] = r.pick(variants)();
  const must: Must = what === 'a transaction with an extra field' ? 'accept' : what === 'a random transaction' ? undefined : 'reject';
  return { tx: v, what, must };
}

// ---------------------------------------------------------------------------------------------
// Client messages

/** A submit the node must answer (not a protocol error): a valid transaction, or a mutated one. */
export interface Submit {
  bytes: Buffer;
  id: number;
  tx: Mp;
  what: string;
  must: Must;
  optimistic: boolean;
  /** A good transaction, sent as it is (counted apart from the mutated frames). */
  valid: boolean;
}

/**
 * A submit numbered `id`, its transaction valid (from `nextTx`, or one of `validSent` again)
 * or mutated; its envelope varies in ways that keep it a well-formed submit.
 */
export function submitFrame(r: Prng, id: number, nextTx: () => Transaction, validSent: Mp[]): Submit {
  const roll = r.int(100);
  const optimistic = r.pick([undefined, true, false]);
  let tx: Mp;
  let what: string;
  let must: Must = 'accept';
  let valid = false;
  if (roll < 10) {
    tx = { body: nextTx().body, auth: [] };
    validSent.push(tx);
    what = 'a valid transaction';
    valid = true;
  } else if (roll < 12 && validSent.length > 0) {
    tx = r.pick(validSent);
    what = 'a valid transaction again';
    valid = true;
  } else {
    const m = mutateTx(r, nextTx(), nextTx());
    tx = m.tx;
    what = m.what;
    must = m.must;
  }
  const idBytes = Buffer.alloc(9, 0xcb);
  idBytes.writeDoubleBE(id, 1);
  const fields: [Mp, Mp][] = [
    ['t', 'submit'],
    // An integer id written as a float decodes to the same number.
    ['id', r.chance(0.1) ? new Raw(idBytes) : id],
    ['tx', tx],
  ];
  if (optimistic !== undefined) fields.push(['optimistic', optimistic]);
  const envelope = r.int(10);
  if (envelope === 0) fields.push([r.pick(['extra', 'ts', 'auth', '']), randomValue(r, 2, { decodable: true, stringKeys: true })]);
  else if (envelope === 1) fields.reverse();
  else if (envelope === 2) fields.unshift(['t', r.pick(['reply', 'hello', 7])]); // the later 't' wins
  return { bytes: frame(mp(new Pairs(fields))), id, tx, what, must, optimistic: optimistic === true, valid };
}

/** A client frame that must end the connection: a broken submit, another message, or bad framing. */
export function fatalClientFrame(r: Prng, tx: Transaction, id: number): Frame {
  const submit = (fields: [string, Mp][]): Buffer => frame(mp(new Pairs([['t', 'submit'], ...fields])));
  switch (r.int(7)) {
    case 0: {
      const id = r.pick<Mp>([
        1.5,
        -0.5,
        NaN,
        Infinity,
        2 ** 53,
        -(2 ** 53),
        1e300,
        2n ** 63n,
        2n ** 64n - 1n,
        -(2n ** 63n),
        '1',
        '',
        null,
        [1],
        { id: 1 },
        true,
        undefined,
      ]);
      const fields: [string, Mp][] = [['tx', { body: tx.body, auth: [] }]];
      if (r.chance(0.8)) fields.unshift(['id', id]);
      return { bytes: submit(fields), frames: 1, expect: 'close', what: `submit with id ${describeMp(id)}${fields.length === 1 ? ' (absent)' : ''}` };
    }
    case 1: {
      const opt = r.pick<Mp>(['true', 1, 0, null, [], {}, Buffer.alloc(1), 'false']);
      return {
        bytes: submit([
          ['id', 1],
          ['tx', { body: tx.body, auth: [] }],
          ['optimistic', opt],
        ]),
        frames: 1,
        expect: 'close',
        what: `submit with optimistic ${describeMp(opt)}`,
      };
    }
    case 2: {
      const t = r.pick<Mp>([
        'Submit',
        'submit ',
        'reply',
        'results',
        'hello',
        'auth',
        'exec',
        '',
        null,
        0,
        ['submit'],
        new StrBytes(Buffer.from([0x73, 0x75, 0x62, 0xff])),
      ]);
      return {
        bytes: frame(
          mp(
            new Pairs([
              ['t', t],
              ['id', 1],
              ['tx', { body: tx.body, auth: [] }],
            ]),
          ),
        ),
        frames: 1,
        expect: 'close',
        what: `message of type ${describeMp(t)}`,
      };
    }
    case 3: {
      let v = randomValue(r, 3, { decodable: true, stringKeys: r.chance(0.5) });
      // A random map could only be read as a submit if it said so; it must not.
      if (v instanceof Pairs) v = new Pairs(v.pairs.filter(([k]) => k !== 't'));
      return { bytes: frame(mp(v)), frames: 1, expect: 'close', what: 'a random value' };
    }
    case 4: {
      // A submit whose msgpack is cut or corrupted after the envelope began.
      const whole = mp({ t: 'submit', id: 1, tx: { body: tx.body, auth: [] } });
      const body = r.chance(0.5) ? whole.subarray(0, r.range(1, whole.length - 1)) : Buffer.concat([whole, Buffer.from([0xc1])]);
      return { bytes: frame(body), frames: 1, expect: 'close', what: 'a submit whose msgpack is cut or has trailing bytes' };
    }
    case 5: {
      const bad = new Pairs([
        ['t', 'submit'],
        ['id', id],
        ['tx', anyExt(r)],
      ]);
      return { bytes: frame(mp(bad)), frames: 1, expect: 'either', what: 'a submit whose tx is an extension value' };
    }
    default:
      return brokenFrame(r, MAX_FRAME_BYTES);
  }
}

/** A short, printable description of a value in a report. */
export function describeMp(v: Mp): string {
  if (v === undefined) return 'undefined';
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (v instanceof Wide) return `wide(${describeMp(v.value)})`;
  if (v instanceof Uint8Array) return `bytes(${v.length})`;
  if (v instanceof StrBytes) return `str-bytes(${Buffer.from(v.bytes).toString('hex')})`;
  if (Array.isArray(v)) return `array(${v.length})`;
  if (v === null) return 'null';
  return typeof v === 'object' ? v.constructor.name : typeof v;
}

// ---------------------------------------------------------------------------------------------
// Pre-executor results

/** A well-formed lookup table (`table.v1` bytes that pass the node's intake), with room for bulk. */
export function wellFormedTable(r: Prng, bulk: number): Buffer {
  // Bulky tables keep each item small, so that many of them fit one frame.
  const id = (): string => r.pick(['kv/a', 'kv/key/1', 'kv/hot/0', `kv/${r.int(1000)}`, ...(bulk > 0 ? [] : ['x'.repeat(r.range(1, 88))])]);
  const ts = (): bigint => r.pick([0n, 1n, 2n ** 63n, 2n ** 64n - 1n, BigInt(r.int(1_000_000))]);
  const val = (): Uint8Array | null => (r.chance(0.3) ? null : r.bytes(bulk > 0 ? r.int(9) : r.length(64)));
  const n = (): number => Math.min(0xffff, bulk > 0 && r.chance(0.5) ? bulk : r.int(4));
  const ok = r.chance(0.7);
  const table: LookupTable = {
    reads: Array.from({ length: n() }, () => [id(), ts()]),
    dynamic: Array.from({ length: n() }, () => [id(), ts(), val()]),
    speculative: Array.from({ length: n() }, () => [id(), val()]),
    writes: ok ? Array.from({ length: n() }, () => [id(), val()]) : [],
    auth: Array.from({ length: r.int(4) }, () => r.pick([null, true, false])),
    precompiles: Array.from({ length: r.int(3) }, () => [r.bytes(32).toString('hex'), r.bytes(r.length(64))]),
    outcome: ok ? { status: 'ok', result: null } : { status: 'aborted', reason: r.pick(['', 'no', 'x'.repeat(300)]) },
  };
  return encodeTable(table);
}

/** Bodies of bulk messages stay under this, well inside the node's 4 MiB frame limit. */
const BULK_BYTES = 3.5 * 1024 * 1024;

/** A results message holding `records` (results.v1), with an extra field now and then. */
function resultsMessage(r: Prng, records: Buffer): Buffer {
  return mp(
    r.chance(0.1) ? { t: 'results', tables: records, extra: randomValue(r, 1, { decodable: true, stringKeys: true }) } : { t: 'results', tables: records },
  );
}

/**
 * The body of a results message that passes the node's checks, each of its `entries` results
 * then dropped by the node as owed by nobody. (A malformed table owed by nobody is dropped
 * the same way, before anyone reads it.)
 */
export function unowedResults(r: Prng, digests: readonly string[]): { body: Buffer; entries: number; what: string } {
  const hex = (): string => (digests.length > 0 && r.chance(0.4) ? r.pick(digests) : r.bytes(32).toString('hex'));
  const table = (): Buffer => (r.chance(0.2) ? malformedTable(r).table : wellFormedTable(r, 0));
  // Bulk is rare: a few MiB to encode and decode costs as much as hundreds of small frames.
  const roll = r.int(400);
  if (roll === 0) {
    // Many entries in one message: as many as fit the frame limit, all to be dropped.
    const t = wellFormedTable(r, 0);
    const entries = Math.min(r.range(10_000, 40_000), Math.floor(BULK_BYTES / (36 + t.length)));
    return { body: resultsMessage(r, encodeResults(Array.from({ length: entries }, () => [hex(), t]))), entries, what: `${entries} results in one message` };
  }
  if (roll === 1) {
    for (let bulk = r.range(5_000, 20_000); ; bulk = Math.floor(bulk / 2)) {
      const body = resultsMessage(r, encodeResults([[hex(), wellFormedTable(r, bulk)]]));
      if (body.length <= BULK_BYTES) return { body, entries: 1, what: `one result with arrays of ${bulk}` };
    }
  }
  if (roll < 12) return { body: resultsMessage(r, Buffer.alloc(0)), entries: 0, what: 'no results' };
  const entries = r.range(1, 8);
  const records = encodeResults(Array.from({ length: entries }, () => [hex(), table()]));
  return { body: resultsMessage(r, records), entries, what: `${entries} results for digests owed by nobody` };
}

/** A lookup table with exactly one defect the node's intake must catch (docs/binary-layouts.md). */
export function malformedTable(r: Prng): { table: Buffer; what: string } {
  const good = wellFormedTable(r, 0);
  const set = (at: number, f: (c: Buffer) => void): Buffer => {
    const c = Buffer.from(good);
    if (at < c.length) f(c);
    return c;
  };
  switch (r.int(8)) {
    case 0:
      return { table: set(0, (c) => (c[0] = r.pick([0, 2, 255]))), what: 'a table of an unknown layout' };
    case 1:
      return { table: set(1, (c) => (c[1] = (c[1] ?? 0) | r.pick([2, 4, 128]))), what: 'a table with unknown flags' };
    case 2:
      return { table: good.subarray(0, r.int(good.length)), what: 'a truncated table' };
    case 3:
      return { table: Buffer.concat([good, r.bytes(r.range(1, 9))]), what: 'a table with bytes after it' };
    case 4:
      return { table: set(2, (c) => c.writeUInt16LE(r.range(1000, 0xffff), 2)), what: 'a table whose read count lies' };
    case 5:
      return { table: set(8, (c) => c.writeUInt32LE(r.pick([0xffffffff, c.readUInt32LE(8) + 1, 0]), 8)), what: 'a table whose rest length lies' };
    case 6:
      return {
        table: Buffer.concat([good.subarray(0, good.length - good.readUInt32LE(8)), mp(r.pick<Mp>([null, [], [[], [], [], { status: 'ok' }], 'x']))]),
        what: 'a table whose rest is not a table',
      };
    default:
      return { table: r.bytes(r.int(40)), what: 'random bytes' };
  }
}

/** A frame from a member that must end its connection. */
export function fatalMemberFrame(r: Prng): Frame {
  switch (r.int(6)) {
    case 0:
    case 1: {
      // Records whose framing lies: a length past the end, or a record cut short.
      const records = encodeResults(Array.from({ length: r.range(1, 3) }, () => [r.bytes(32).toString('hex'), wellFormedTable(r, 0)]));
      const bad = r.chance(0.5)
        ? records.subarray(0, records.length - r.range(1, Math.min(records.length, 36)))
        : Buffer.concat([records, r.bytes(r.range(1, 35))]);
      if (bad.length === 0) return { bytes: frame(mp({ t: 'results' })), frames: 1, expect: 'close', what: 'results without tables' };
      return { bytes: frame(mp({ t: 'results', tables: bad })), frames: 1, expect: 'close', what: 'results whose record framing lies' };
    }
    case 2: {
      const v = r.pick<Mp>([null, 'results', {}, 5, [[1, {}]], [['d']], [null], [[r.bytes(32), {}]]]);
      return {
        bytes: frame(mp(r.chance(0.5) ? { t: 'results', tables: v } : { t: 'results', results: v })),
        frames: 1,
        expect: 'close',
        what: `results holding ${describeMp(v)}`,
      };
    }
    case 3: {
      const t = r.pick<Mp>(['exec', 'config', 'effects', 'objects', 'feedback', 'submit', 'hello', 'result', 'Results', '', null, 3]);
      return { bytes: frame(mp({ t, results: [], txs: [], effects: [] })), frames: 1, expect: 'close', what: `a message of type ${describeMp(t)}` };
    }
    case 4: {
      let v = randomValue(r, 3, { decodable: true, stringKeys: true });
      if (v instanceof Pairs) v = new Pairs(v.pairs.filter(([k]) => k !== 't'));
      return { bytes: frame(mp(v)), frames: 1, expect: 'close', what: 'a random value' };
    }
    default:
      return brokenFrame(r, MAX_FRAME_BYTES);
  }
}

/** A member's first message: the app it loaded (the node refuses other code than its own). */
export const memberHello = (digest: string): Buffer => frame(mp({ t: 'hello', app: 'kv', digest }));

/** A member's first message, wrong: the node must close, after saying why (`refused`) if asked. */
export function badMemberHello(r: Prng, digest: string): Frame & { refused: boolean } {
  const close = (v: Mp, what: string, refused = false) => ({ bytes: frame(mp(v)), frames: 1, expect: 'close' as const, what, refused });
  switch (r.int(8)) {
    case 0:
      return close({ t: 'hello', app: 'kv', digest: r.bytes(32).toString('hex') }, 'hello with the digest of other code', true);
    case 1:
      return close({ t: 'hello', app: 'kv', digest: `${digest}0` }, 'hello with a 65-character digest');
    case 2:
      return close({ t: 'hello', app: 'k'.repeat(r.range(257, 900)), digest }, 'hello with an app name over 256 characters');
    case 3:
      return close(r.chance(0.5) ? { t: 'hello', app: 'kv' } : { t: 'hello', digest }, 'hello missing a field');
    case 4:
      return close({ t: 'hello', app: r.pick<Mp>([null, 1, ['kv'], Buffer.from('kv')]), digest }, 'hello with an app that is not a string');
    case 5:
      return close(
        r.pick<Mp>([
          { t: 'loaded', digest },
          { t: 'load-failed', reason: 'no' },
          { t: 'results', results: [] },
        ]),
        'another message before hello',
      );
    case 6: {
      let v = randomValue(r, 3, { decodable: true, stringKeys: true });
      if (v instanceof Pairs) v = new Pairs(v.pairs.filter(([k]) => k !== 't'));
      return close(v, 'a random value before hello');
    }
    default:
      return { ...brokenFrame(r, MAX_FRAME_BYTES), refused: false };
  }
}

/** Member messages the node must take in its stride: answers to loads it never asked for. */
export function unaskedLoadAnswer(r: Prng): { body: Buffer; what: string } {
  return r.chance(0.5)
    ? { body: mp({ t: 'loaded', digest: r.pick(['', 'x', r.bytes(32).toString('hex')]) }), what: 'an unasked loaded' }
    : { body: mp({ t: 'load-failed', reason: r.pick(['', 'no', 'x'.repeat(4096)]) }), what: 'an unasked load-failed' };
}

/** After attaching: a second hello, or a load answer out of bounds; all end the connection. */
export function fatalMemberControl(r: Prng, digest: string): Frame {
  const close = (v: Mp, what: string): Frame => ({ bytes: frame(mp(v)), frames: 1, expect: 'close', what });
  switch (r.int(4)) {
    case 0:
      return close({ t: 'hello', app: 'kv', digest }, 'hello a second time');
    case 1:
      return close({ t: 'loaded', digest: 'd'.repeat(65) }, 'loaded with a 65-character digest');
    case 2:
      return close({ t: 'load-failed', reason: 'r'.repeat(4097) }, 'load-failed with a reason over 4096 characters');
    default:
      return close({ t: 'loaded', digest: r.pick<Mp>([null, 5, Buffer.alloc(32)]) }, 'loaded with a digest that is not a string');
  }
}
