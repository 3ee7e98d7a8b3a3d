// The frames a client's connection carries most, each way, without msgpack's general coder:
// `{ t: 'submit', id, tx, optimistic? }` in (with `tx` as `tx.v1` bytes), the final reply out.
//
// The general path in (msgpack's decoder, a copy of each byte string, `parseClientMessage`)
// took about 0.7 µs a frame, as much as admitting the transaction's body; the reader here takes
// about 0.15 µs for the one shape msgpack encoders write. It answers only for frames it can read
// whole: anything else (other key orders, `tx` as `{ body, auth }`, trailing bytes, any doubt)
// is left to the general path, which alone says what is wrong. The reply's writer puts down the
// bytes msgpack's encoder would (0.37 µs a reply there), encoding only the outcome with it.
// `test/client-frames.test.ts` holds both to the general coder.
import { Packr } from 'msgpackr';
import type { ClientToNode, NodeToClient } from './messages.js';

/** `t`, `submit`, `id`, `tx`, `optimistic` as msgpack fixstr, each with its header byte. */
const T = Buffer.from([0xa1, 0x74]);
const SUBMIT = Buffer.from([0xa6, ...Buffer.from('submit')]);
const ID = Buffer.from([0xa2, ...Buffer.from('id')]);
const TX = Buffer.from([0xa2, ...Buffer.from('tx')]);
const OPTIMISTIC = Buffer.from([0xaa, ...Buffer.from('optimistic')]);

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Whether `b` holds `lit` at `at`. */
function holds(b: Buffer, at: number, lit: Buffer): boolean {
  if (at + lit.length > b.length) return false;
  for (let i = 0; i < lit.length; i++) if (b[at + i] !== lit[i]) return false;
  return true;
}

/**
 * The submit message in `body` (one frame's body), with `tx` copied out of it, or undefined
 * when this reader does not vouch for the frame and the general decoder must decide.
 */
export function readSubmitFrame(body: Buffer): ClientToNode | undefined {
  let at: number;
  let entries: number;
  const h = body[0] ?? 0;
  if (h >= 0x80 && h <= 0x8f) {
    entries = h & 0x0f;
    at = 1;
  } else if (h === 0xde && body.length >= 3) {
    entries = body.readUInt16BE(1);
    at = 3;
  } else return undefined;
  if (entries !== 3 && entries !== 4) return undefined;
  if (!holds(body, at, T) || !holds(body, at + T.length, SUBMIT)) return undefined;
  at += T.length + SUBMIT.length;
  if (!holds(body, at, ID)) return undefined;
  at += ID.length;
  let id: number;
  const k = body[at] ?? 0xc1;
  if (k <= 0x7f) {
    id = k;
    at += 1;
  } else if (k === 0xcc && at + 2 <= body.length) {
    id = body.readUInt8(at + 1);
    at += 2;
  } else if (k === 0xcd && at + 3 <= body.length) {
    id = body.readUInt16BE(at + 1);
    at += 3;
  } else if (k === 0xce && at + 5 <= body.length) {
    id = body.readUInt32BE(at + 1);
    at += 5;
  } else if (k === 0xcf && at + 9 <= body.length) {
    const v = body.readBigUInt64BE(at + 1);
    if (v > MAX_SAFE) return undefined;
    id = Number(v);
    at += 9;
  } else if (k === 0xcb && at + 9 <= body.length) {
    id = body.readDoubleBE(at + 1);
    // -0 is a safe integer that msgpack's decoder keeps as -0: not worth a second look.
    if (!Number.isSafeInteger(id) || Object.is(id, -0)) return undefined;
    at += 9;
  } else return undefined;
  if (!holds(body, at, TX)) return undefined;
  at += TX.length;
  let len: number;
  const b = body[at] ?? 0xc1;
  if (b === 0xc4 && at + 2 <= body.length) {
    len = body.readUInt8(at + 1);
    at += 2;
  } else if (b === 0xc5 && at + 3 <= body.length) {
    len = body.readUInt16BE(at + 1);
    at += 3;
  } else if (b === 0xc6 && at + 5 <= body.length) {
    len = body.readUInt32BE(at + 1);
    at += 5;
  } else return undefined;
  if (at + len > body.length) return undefined;
  const txAt = at;
  at += len;
  let optimistic = false;
  if (entries === 4) {
    if (!holds(body, at, OPTIMISTIC)) return undefined;
    at += OPTIMISTIC.length;
    const v = body[at];
    if (v !== 0xc2 && v !== 0xc3) return undefined;
    optimistic = v === 0xc3;
    at += 1;
  }
  if (at !== body.length) return undefined;
  // Copied: the frame is a view of the socket's read buffer, which the transaction outlives.
  return { t: 'submit', id, tx: Buffer.from(body.subarray(txAt, txAt + len)), optimistic };
}

/** As the wire packs (ts/wire.ts): the outcome inside a reply is its work. */
const packr = new Packr({ useRecords: false, int64AsType: 'bigint' });

const fixstr = (s: string): Buffer => Buffer.concat([Buffer.from([0xa0 | s.length]), Buffer.from(s)]);
const REPLY_HEAD = Buffer.concat([fixstr('t'), fixstr('reply'), fixstr('id')]);
const TS = fixstr('ts');
const DUPLICATE = fixstr('duplicate');
const OUTCOME = fixstr('outcome');
const DECISION = fixstr('decision');
const OPTIMISTIC_KEY = fixstr('optimistic');
/** Every string value a reply holds besides the outcome, encoded once. */
const WORDS = new Map(['adopted', 'reexecuted', 'executed', 'confirmed', 'wrong', 'none'].map((w) => [w, fixstr(w)]));
const NIL = Buffer.from([0xc0]);

/** Where msgpack's encoder puts an integer `id` (a safe integer, as `parseClientMessage` holds it). */
function idBytes(id: number): number {
  if (id >>> 0 === id) return id < 0x80 ? 1 : id < 0x100 ? 2 : id < 0x10000 ? 3 : 5;
  if (id >> 0 === id) return id >= -0x20 ? 1 : id >= -0x80 ? 2 : id >= -0x8000 ? 3 : 5;
  return 9;
}

function writeId(out: Buffer, at: number, id: number): number {
  if (id >>> 0 === id) {
    if (id < 0x80) out[at] = id;
    else if (id < 0x100) out.writeUInt16BE(0xcc00 | id, at);
    else if (id < 0x10000) {
      out[at] = 0xcd;
      out.writeUInt16BE(id, at + 1);
    } else {
      out[at] = 0xce;
      out.writeUInt32BE(id, at + 1);
    }
  } else if (id >> 0 === id) {
    if (id >= -0x20) out[at] = 0x100 + id;
    else if (id >= -0x80) {
      out[at] = 0xd0;
      out.writeInt8(id, at + 1);
    } else if (id >= -0x8000) {
      out[at] = 0xd1;
      out.writeInt16BE(id, at + 1);
    } else {
      out[at] = 0xd2;
      out.writeInt32BE(id, at + 1);
    }
  } else {
    out[at] = 0xcb;
    out.writeDoubleBE(id, at + 1);
  }
  return at + idBytes(id);
}

/**
 * A reply's frame: 4 bytes left for the length (`Conn.sendFrame` writes it), then the msgpack
 * map the general encoder makes of `m`; undefined for a reply this writer does not know how
 * to put down (a word it has not encoded), which the general encoder then sends.
 */
export function writeReplyFrame(m: Extract<NodeToClient, { t: 'reply' }>): Buffer | undefined {
  const decision = m.decision === null ? NIL : WORDS.get(m.decision);
  const optimistic = m.optimistic === undefined ? null : WORDS.get(m.optimistic);
  if (decision === undefined || optimistic === undefined || m.ts < 0n || m.ts >= 1n << 63n) return undefined;
  // A view of the encoder's own buffer, good until it encodes again: copied below at once.
  const outcome = m.outcome === null ? NIL : packr.pack(m.outcome);
  const size =
    4 +
    3 +
    REPLY_HEAD.length +
    idBytes(m.id) +
    TS.length +
    9 +
    DUPLICATE.length +
    1 +
    OUTCOME.length +
    outcome.length +
    DECISION.length +
    decision.length +
    (optimistic === null ? 0 : OPTIMISTIC_KEY.length + optimistic.length);
  const out = Buffer.allocUnsafe(size);
  let at = 4;
  out[at++] = 0xde;
  out.writeUInt16BE(optimistic === null ? 6 : 7, at);
  at += 2;
  at += REPLY_HEAD.copy(out, at);
  at = writeId(out, at, m.id);
  at += TS.copy(out, at);
  out[at] = 0xd3;
  out.writeBigInt64BE(m.ts, at + 1);
  at += 9;
  at += DUPLICATE.copy(out, at);
  out[at++] = m.duplicate ? 0xc3 : 0xc2;
  at += OUTCOME.copy(out, at);
  at += outcome.copy(out, at);
  at += DECISION.copy(out, at);
  at += decision.copy(out, at);
  if (optimistic !== null) {
    at += OPTIMISTIC_KEY.copy(out, at);
    at += optimistic.copy(out, at);
  }
  return out;
}
