// Lookup tables as `table.v1` bytes (docs/binary-layouts.md): what pre-executors return and
// the node hands to the native adoption check without turning it into objects. The sections
// adoption needs (reads, speculative reads, writes) are flat; the rest (dynamic reads, the
// authenticators' results, pre-compiles, the outcome) is msgpack, decoded by the node once
// at intake, since its outcome answers the client anyway.
import { Buffer } from 'node:buffer';
import { decode, encode, type Data } from '../app/codec.js';
import { MAX_VALUE_BYTES, type LookupTable, type Outcome } from '../app/exec.js';
import type { Write } from '../app/state.js';
import { LIMITS } from '../app/tx.js';
import { holds, u16le, u32le } from '../bytes.js';

const LAYOUT = 1;
const OK = 1;
const HEADER = 12;
const NONE = 0xffffffff;
const MAX_ENTRIES = 0xffff;

export class TableError extends Error {
  override name = 'TableError';
}

/** The msgpack part: everything but the sections adoption checks. */
export interface TableRest {
  dynamic: LookupTable['dynamic'];
  auth: LookupTable['auth'];
  precompiles: LookupTable['precompiles'];
  outcome: Outcome;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function encodeTable(t: LookupTable): Buffer {
  if (t.reads.length > MAX_ENTRIES || t.speculative.length > MAX_ENTRIES || t.writes.length > MAX_ENTRIES) {
    throw new TableError(`a table holds at most ${MAX_ENTRIES} reads, speculative reads and writes each`);
  }
  const rest = encode([t.dynamic, t.auth, t.precompiles, t.outcome]);
  const ids = (list: readonly (readonly [string, ...unknown[]])[]) => list.map(([id]) => Buffer.from(id, 'utf8'));
  const readIds = ids(t.reads);
  const specIds = ids(t.speculative);
  const writeIds = ids(t.writes);
  let size = HEADER + rest.length;
  for (const id of readIds) size += 9 + id.length;
  t.speculative.forEach(([, v], i) => (size += 5 + (specIds[i]?.length ?? 0) + (v?.length ?? 0)));
  t.writes.forEach(([, v], i) => (size += 5 + (writeIds[i]?.length ?? 0) + (v?.length ?? 0)));
  const out = Buffer.allocUnsafe(size);
  out[0] = LAYOUT;
  out[1] = t.outcome.status === 'ok' ? OK : 0;
  out.writeUInt16LE(t.reads.length, 2);
  out.writeUInt16LE(t.speculative.length, 4);
  out.writeUInt16LE(t.writes.length, 6);
  out.writeUInt32LE(rest.length, 8);
  let at = HEADER;
  const id = (b: Buffer) => {
    out[at] = b.length;
    out.set(b, at + 1);
    at += 1 + b.length;
  };
  const value = (v: Uint8Array | null) => {
    out.writeUInt32LE(v === null ? NONE : v.length, at);
    at += 4;
    if (v !== null) {
      out.set(v, at);
      at += v.length;
    }
  };
  t.reads.forEach(([, version], i) => {
    id(readIds[i] ?? Buffer.alloc(0));
    out.writeBigUInt64LE(version, at);
    at += 8;
  });
  t.speculative.forEach(([, v], i) => {
    id(specIds[i] ?? Buffer.alloc(0));
    value(v);
  });
  t.writes.forEach(([, v], i) => {
    id(writeIds[i] ?? Buffer.alloc(0));
    value(v);
  });
  out.set(rest, at);
  return out;
}

/** Where the sections of a well-formed table start, found by walking its header and entries. */
export interface TableShape {
  ok: boolean;
  reads: number;
  speculative: number;
  writes: number;
  /** Offset of the writes section, and of the msgpack rest (the writes section's end). */
  writesAt: number;
  restAt: number;
}

/** Walks a table, checking every bound the native check does; throws `TableError` naming the fault. */
export function tableShape(b: Buffer): TableShape {
  if (b.length < HEADER) throw new TableError(`table: ${b.length} bytes, shorter than its header`);
  if (b[0] !== LAYOUT) throw new TableError(`table: unknown layout ${b[0]}`);
  const flags = b[1] ?? 0;
  if ((flags & ~OK) !== 0) throw new TableError(`table: unknown flags ${flags}`);
  const reads = u16le(b, 2);
  const speculative = u16le(b, 4);
  const writes = u16le(b, 6);
  const restLen = u32le(b, 8);
  if ((flags & OK) === 0 && writes !== 0) throw new TableError('table: writes in a table whose outcome is not ok');
  // Module-level walkers, not closures: this runs for every table the node receives.
  let at = HEADER;
  for (let i = 0; i < reads; i++) {
    at = skipId(b, at, 'read', i);
    if (at + 8 > b.length) throw new TableError(`table: read ${i}: truncated`);
    at += 8;
  }
  for (let i = 0; i < speculative; i++) at = skipValue(b, skipId(b, at, 'speculative read', i), 'speculative read', i);
  const writesAt = at;
  for (let i = 0; i < writes; i++) at = skipValue(b, skipId(b, at, 'write', i), 'write', i);
  if (at + restLen !== b.length) throw new TableError(`table: ${b.length - at} bytes after the writes, but rest says ${restLen}`);
  return { ok: (flags & OK) !== 0, reads, speculative, writes, writesAt, restAt: at };
}

/** Past entry `i`'s id at `at`, checked. */
function skipId(b: Buffer, at: number, what: string, i: number): number {
  const n = b[at];
  if (n === undefined) throw new TableError(`table: ${what} ${i}: truncated`);
  if (n === 0 || n > LIMITS.idBytes) throw new TableError(`table: ${what} ${i}: id of ${n} bytes`);
  if (at + 1 + n > b.length) throw new TableError(`table: ${what} ${i}: truncated`);
  return at + 1 + n;
}

/** Past entry `i`'s value (length, or none, then bytes) at `at`, checked. */
function skipValue(b: Buffer, at: number, what: string, i: number): number {
  if (at + 4 > b.length) throw new TableError(`table: ${what} ${i}: truncated`);
  const n = u32le(b, at);
  if (n === NONE) return at + 4;
  if (n > MAX_VALUE_BYTES) throw new TableError(`table: ${what} ${i}: value of ${n} bytes, over ${MAX_VALUE_BYTES}`);
  if (at + 4 + n > b.length) throw new TableError(`table: ${what} ${i}: truncated`);
  return at + 4 + n;
}

const isBytes = (x: unknown): x is Uint8Array => x instanceof Uint8Array;
const isDynamicRead = (d: unknown): boolean =>
  Array.isArray(d) && d.length === 3 && typeof d[0] === 'string' && typeof d[1] === 'bigint' && d[1] >= 0n && (d[2] === null || isBytes(d[2]));
const isAuthResult = (a: unknown): boolean => a === null || typeof a === 'boolean';
const isPrecompile = (p: unknown): boolean => Array.isArray(p) && typeof p[0] === 'string' && isBytes(p[1]);

/** `{status: 'ok', result: X}` as the codec writes it (keys sorted): before X, and after it. */
const OK_BEFORE = Buffer.from([0x82, 0xa6, ...Buffer.from('result')]);
const OK_AFTER = Buffer.from([0xa6, ...Buffer.from('status'), 0xa2, ...Buffer.from('ok')]);

/**
 * The rest nearly every table has, read without the msgpack decoder: no dynamic reads, at most
 * 15 authenticator results, no pre-compiles, an ok outcome whose result is one byte (nil, a
 * boolean, a small integer). Null for anything else, which `decodeTableRest` decodes in full;
 * what this accepts, that decodes to the same rest (test/table-bytes.test.ts).
 */
function commonRest(b: Buffer, at: number, ok: boolean): TableRest | null {
  const head = b[at + 2] ?? 0;
  const n = head & 0x0f;
  if (!ok || (head & 0xf0) !== 0x90 || b.length - at !== 5 + n + OK_BEFORE.length + OK_AFTER.length || b[at] !== 0x94 || b[at + 1] !== 0x90) return null;
  let p = at + 3;
  let allTrue = true;
  for (const end = p + n; p < end; p++) {
    const x = b[p];
    if (x === 0xc2 || x === 0xc0) allTrue = false;
    else if (x !== 0xc3) return null;
  }
  if (b[p] !== 0x90 || !holds(b, p + 1, OK_BEFORE)) return null;
  const r = b[p + 1 + OK_BEFORE.length] ?? 0xc1;
  const outcome = OK_OUTCOMES[r];
  if (outcome === undefined || !holds(b, p + 2 + OK_BEFORE.length, OK_AFTER)) return null;
  if (allTrue)
    return (VERIFIED_RESTS[n * 256 + r] ??= Object.freeze({
      dynamic: NO_DYNAMIC,
      auth: ALL_VERIFIED[n] as TableRest['auth'],
      precompiles: NO_PRECOMPILES,
      outcome,
    }));
  const auth: (boolean | null)[] = [];
  for (let q = at + 3; q < at + 3 + n; q++) auth.push(b[q] === 0xc3 ? true : b[q] === 0xc2 ? false : null);
  return { dynamic: NO_DYNAMIC, auth, precompiles: NO_PRECOMPILES, outcome };
}

/**
 * `{status: 'ok', result}` for each one-byte result, by that byte: shared and frozen, since the
 * node keeps 100,000 outcomes for duplicates and one object per transaction would be kept
 * that long, through every collection of the old generation.
 */
const OK_OUTCOMES: (Outcome | undefined)[] = Array.from({ length: 256 }, (_, r) => {
  let result: Data;
  if (r === 0xc0) result = null;
  else if (r === 0xc3 || r === 0xc2) result = r === 0xc3;
  else if (r <= 0x7f) result = r;
  else if (r >= 0xe0) result = r - 0x100;
  else return undefined;
  return Object.freeze({ status: 'ok', result });
});

/** Each shared `ok` outcome's result byte. */
const OK_BYTES = new Map<Outcome, number>();
OK_OUTCOMES.forEach((o, r) => {
  if (o !== undefined) OK_BYTES.set(o, r);
});

/**
 * The result byte of `outcome` if it is one of the shared `ok` outcomes common tables carry
 * (their msgpack is `{status: 'ok', result: <that byte>}`); undefined for any other object.
 */
export function commonOutcomeByte(outcome: Outcome): number | undefined {
  return OK_BYTES.get(outcome);
}

/** The shared `ok` outcome whose result byte is `byte` (`commonOutcomeByte`'s inverse), if any. */
export function commonOutcome(byte: number): Outcome | undefined {
  return OK_OUTCOMES[byte];
}

// Shared by every common rest: nothing changes a received table's lists (frozen to make sure).
/** `[true, …]` of each length: every signature verified, as in nearly every table. */
const ALL_VERIFIED: readonly TableRest['auth'][] = Array.from(
  { length: 16 },
  (_, n) => Object.freeze(new Array<boolean>(n).fill(true)) as unknown as TableRest['auth'],
);
const NO_DYNAMIC = Object.freeze([]) as unknown as TableRest['dynamic'];
const NO_PRECOMPILES = Object.freeze([]) as unknown as TableRest['precompiles'];
/** The common rest with every signature verified, by authenticator count × 256 + result byte: one object, not one per table. */
const VERIFIED_RESTS = new Array<TableRest | undefined>(16 * 256).fill(undefined);

/** Decodes the msgpack rest, checking its shape; throws `TableError` if it is not a table's. */
export function decodeTableRest(b: Buffer, shape: TableShape): TableRest {
  return commonRest(b, shape.restAt, shape.ok) ?? decodeTableRestFully(b, shape);
}

/** `decodeTableRest` through the msgpack decoder alone: the reading the common case is held to. */
export function decodeTableRestFully(b: Buffer, shape: TableShape): TableRest {
  let v: unknown;
  try {
    v = decode(b.subarray(shape.restAt));
  } catch (e) {
    throw new TableError(`table: rest is not msgpack: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!Array.isArray(v) || v.length !== 4) throw new TableError('table: rest must be [dynamic, auth, precompiles, outcome]');
  const [dynamic, auth, precompiles, outcome] = v as unknown[];
  if (!Array.isArray(dynamic) || !dynamic.every(isDynamicRead)) throw new TableError('table: dynamic reads malformed');
  if (!Array.isArray(auth) || !auth.every(isAuthResult)) throw new TableError('table: auth malformed');
  if (!Array.isArray(precompiles) || !precompiles.every(isPrecompile)) throw new TableError('table: precompiles malformed');
  const o = outcome as Record<string, unknown> | null;
  const okOutcome = typeof o === 'object' && o !== null && o['status'] === 'ok' && 'result' in o;
  const aborted = typeof o === 'object' && o !== null && o['status'] === 'aborted' && typeof o['reason'] === 'string';
  if (!okOutcome && !aborted) throw new TableError('table: outcome malformed');
  if (okOutcome !== shape.ok) throw new TableError('table: flags disagree with the outcome');
  // Rebuilt, so an adopted outcome is the same object, key order included, as an executed one.
  const o2: Outcome = okOutcome ? { status: 'ok', result: o['result'] as Data } : { status: 'aborted', reason: o?.['reason'] as string };
  return { dynamic: dynamic as TableRest['dynamic'], auth: auth as TableRest['auth'], precompiles: precompiles as TableRest['precompiles'], outcome: o2 };
}

/** Reads the entries of a section as the walk in `tableShape` checked them. */
function entries(b: Buffer, at: number, n: number, versioned: boolean): { list: [string, bigint | Uint8Array | null][]; end: number } {
  const list: [string, bigint | Uint8Array | null][] = [];
  for (let i = 0; i < n; i++) {
    const len = b[at] ?? 0;
    let id: string;
    try {
      id = utf8.decode(b.subarray(at + 1, at + 1 + len));
    } catch {
      throw new TableError(`table: entry ${i}: id is not UTF-8`);
    }
    at += 1 + len;
    if (versioned) {
      list.push([id, b.readBigUInt64LE(at)]);
      at += 8;
      continue;
    }
    const vlen = b.readUInt32LE(at);
    at += 4;
    if (vlen === NONE) list.push([id, null]);
    else {
      list.push([id, b.subarray(at, at + vlen)]);
      at += vlen;
    }
  }
  return { list, end: at };
}

/** The writes of a well-formed table (the effects of adopting it). */
export function tableWrites(b: Buffer, shape: TableShape): Write[] {
  return entries(b, shape.writesAt, shape.writes, false).list as Write[];
}

/** The whole table, checked as the native check does: `TableError` if malformed. */
export function decodeTable(b: Buffer, rest?: TableRest): LookupTable {
  const shape = tableShape(b);
  const r = rest ?? decodeTableRest(b, shape);
  const reads = entries(b, HEADER, shape.reads, true);
  const speculative = entries(b, reads.end, shape.speculative, false);
  return {
    reads: reads.list as [string, bigint][],
    dynamic: r.dynamic,
    speculative: speculative.list as [string, Uint8Array | null][],
    writes: tableWrites(b, shape),
    auth: r.auth,
    precompiles: r.precompiles,
    outcome: r.outcome,
  };
}

/** A table as the node keeps it: its bytes for the native check, its rest decoded once. */
export interface ReceivedTable {
  bytes: Buffer;
  shape: TableShape;
  rest: TableRest;
}

/** Checks a table's framing and decodes its rest; `TableError` if it is malformed. */
export function receiveTable(bytes: Buffer): ReceivedTable {
  const shape = tableShape(bytes);
  return { bytes, shape, rest: decodeTableRest(bytes, shape) };
}
