// Frames of the node's busiest connections (transactions to members, their results, admission's
// batches and their answers) written and read without msgpack's packer and decoder. Each is a
// map of a few ASCII keys to ASCII strings, small unsigned integers and byte strings: the packer
// copied every byte string into its own buffer (and a broadcast once per member), and the
// decoder interned each key. The bytes written are msgpack, so a peer decodes them either way,
// and a frame the reader does not recognise is left to the decoder.
import { Buffer } from 'node:buffer';
import { putU32be } from './bytes.js';

/** A byte string given as parts, written as one (the parts are copied once, into the frame). */
export class BytesParts {
  constructor(readonly parts: readonly Uint8Array[]) {}
}

export type FlatValue = string | number | Uint8Array | BytesParts;

const MAX_KEY = 31;
const MAX_STRING = 255;

function valueSize(v: FlatValue): number {
  if (typeof v === 'string') return (v.length < 32 ? 1 : 2) + v.length;
  if (typeof v === 'number') return v < 0x80 ? 1 : v < 0x100 ? 2 : v < 0x10000 ? 3 : 5;
  const n = bytesLength(v);
  return (n < 0x100 ? 2 : n < 0x10000 ? 3 : 5) + n;
}

const bytesLength = (v: Uint8Array | BytesParts): number => (v instanceof BytesParts ? v.parts.reduce((n, p) => n + p.length, 0) : v.length);

function checkField(key: string, v: FlatValue): void {
  if (key.length > MAX_KEY || !isAscii(key)) throw new Error(`flat frame: key ${JSON.stringify(key)} is not ASCII of at most ${MAX_KEY} characters`);
  if (typeof v === 'string' && (v.length > MAX_STRING || !isAscii(v)))
    throw new Error(`flat frame: the string of ${key} is not ASCII of at most ${MAX_STRING} characters`);
  if (typeof v === 'number' && !(Number.isInteger(v) && v >= 0 && v <= 0xffffffff)) throw new Error(`flat frame: ${key} = ${v} is not a u32`);
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/**
 * The whole frame (u32 big-endian body length, then the body) for the map `fields`, in their
 * order: what `Conn.sendFrame` takes. Throws on a field it cannot write (see `FlatValue`).
 */
export function flatFrame(fields: Readonly<Record<string, FlatValue>>): Buffer {
  const keys = Object.keys(fields);
  if (keys.length > 15) throw new Error('flat frame: at most 15 fields');
  let size = 1;
  for (const k of keys) {
    const v = fields[k] as FlatValue;
    checkField(k, v);
    size += 1 + k.length + valueSize(v);
  }
  const frame = Buffer.allocUnsafe(4 + size);
  putU32be(frame, 0, size);
  let at = 4;
  frame[at++] = 0x80 | keys.length;
  for (const k of keys) {
    frame[at++] = 0xa0 | k.length;
    at += frame.write(k, at, 'latin1');
    at = writeValue(frame, at, fields[k] as FlatValue);
  }
  return frame;
}

function writeValue(b: Buffer, at: number, v: FlatValue): number {
  if (typeof v === 'string') {
    if (v.length < 32) b[at++] = 0xa0 | v.length;
    else {
      b[at++] = 0xd9;
      b[at++] = v.length;
    }
    return at + b.write(v, at, 'latin1');
  }
  if (typeof v === 'number') return v < 0x80 ? ((b[at] = v), at + 1) : sized(b, at, v, 0xcc);
  const n = bytesLength(v);
  at = sized(b, at, n, 0xc4);
  for (const p of v instanceof BytesParts ? v.parts : [v]) {
    b.set(p, at);
    at += p.length;
  }
  return at;
}

/** `n` after the first of three type bytes (`first`, +1, +2) whose width, 1, 2 or 4 bytes, holds it. */
function sized(b: Buffer, at: number, n: number, first: number): number {
  if (n < 0x100) {
    b[at] = first;
    b[at + 1] = n;
    return at + 2;
  }
  b[at] = n < 0x10000 ? first + 1 : first + 2;
  return n < 0x10000 ? b.writeUInt16BE(n, at + 1) : b.writeUInt32BE(n, at + 1);
}

/**
 * The map in `body` as msgpack's decoder would give it, with byte strings copied out of the
 * frame (`ownBytes`), if it is a map of ASCII fixstr keys to ASCII strings, unsigned
 * integers up to 32 bits and byte strings, and nothing else; undefined otherwise.
 */
export function readFlatMap(body: Buffer): Record<string, string | number | Buffer> | undefined {
  const h = body[0] ?? 0;
  let entries: number;
  let at: number;
  // msgpack's packer writes every map's count in 16 bits; this module's writer, in the type byte.
  if (h >= 0x80 && h <= 0x8f) [entries, at] = [h & 0x0f, 1];
  else if (h === 0xde && body.length >= 3) [entries, at] = [body.readUInt16BE(1), 3];
  else return undefined;
  const out: Record<string, string | number | Buffer> = {};
  for (let n = entries; n > 0; n--) {
    const k = body[at] ?? 0;
    if (k < 0xa0 || k > 0xbf) return undefined;
    const keyEnd = at + 1 + (k & 0x1f);
    if (keyEnd > body.length || !asciiAt(body, at + 1, keyEnd)) return undefined;
    const key = body.toString('latin1', at + 1, keyEnd);
    if (key === '__proto__') return undefined;
    at = keyEnd;
    const t = body[at] ?? 0xc1;
    let len: number;
    let start: number;
    if (t <= 0x7f) {
      out[key] = t;
      at += 1;
      continue;
    } else if (t === 0xcc || t === 0xcd || t === 0xce) {
      const w = t === 0xcc ? 1 : t === 0xcd ? 2 : 4;
      if (at + 1 + w > body.length) return undefined;
      out[key] = body.readUIntBE(at + 1, w);
      at += 1 + w;
      continue;
    } else if ((t >= 0xa0 && t <= 0xbf) || t === 0xd9) {
      [start, len] = t === 0xd9 ? [at + 2, body[at + 1] ?? 0] : [at + 1, t & 0x1f];
      if (start > body.length || start + len > body.length || !asciiAt(body, start, start + len)) return undefined;
      out[key] = body.toString('latin1', start, start + len);
      at = start + len;
      continue;
    } else if (t === 0xc4 || t === 0xc5 || t === 0xc6) {
      const w = t === 0xc4 ? 1 : t === 0xc5 ? 2 : 4;
      if (at + 1 + w > body.length) return undefined;
      len = body.readUIntBE(at + 1, w);
      start = at + 1 + w;
      if (start + len > body.length) return undefined;
      out[key] = Buffer.from(body.subarray(start, start + len));
      at = start + len;
      continue;
    }
    return undefined;
  }
  return at === body.length ? out : undefined;
}

function asciiAt(b: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if ((b[i] as number) > 0x7f) return false;
  return true;
}
