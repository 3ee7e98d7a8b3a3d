// The frame a client sends for each transaction, `{ t: 'submit', id, tx, optimistic? }` with
// `tx` as `tx.v1` bytes, read without msgpack's general decoder.
//
// The general path (msgpack's decoder, a copy of each byte string, `parseClientMessage`) takes
// about 0.5 µs a frame; this reader about 0.13 µs for the one shape msgpack encoders write. It
// answers only for frames it can read whole: anything else (other key orders, `tx` as
// `{ body, auth }`, trailing bytes, any doubt) is left to the general path, which alone says
// what is wrong. `test/client-frames.test.ts` holds the two to the same answers. Replies have
// a writer of their own (`reply-frames.ts`).
import { Buffer } from 'node:buffer';
import type { ClientToNode } from './messages.js';
import { holds } from '../bytes.js';

/** `t`, `submit`, `id`, `tx`, `optimistic` as msgpack fixstr, each with its header byte. */
const T = Buffer.from([0xa1, 0x74]);
const SUBMIT = Buffer.from([0xa6, ...Buffer.from('submit')]);
const ID = Buffer.from([0xa2, ...Buffer.from('id')]);
const TX = Buffer.from([0xa2, ...Buffer.from('tx')]);
const OPTIMISTIC = Buffer.from([0xaa, ...Buffer.from('optimistic')]);

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * The submit message in `body` (one frame's body), or undefined when this reader does not
 * vouch for the frame and the general decoder must decide.
 */
export function readSubmitFrame(body: Buffer): SubmitFrame | undefined {
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
  return new SubmitFrame(id, body.subarray(txAt, txAt + len), optimistic);
}

/**
 * A submit message this reader took: checked as `parseClientMessage` checks one, so not again.
 * `tx` is a view of the frame, so of the socket's read buffer: what keeps the transaction past
 * this turn of the event loop copies it (`ownTx`, or a batch's one buffer), or it would hold
 * the whole read buffer as long.
 */
export class SubmitFrame implements ClientToNode {
  readonly t = 'submit';

  constructor(
    readonly id: number,
    readonly tx: Buffer,
    readonly optimistic: boolean,
  ) {}

  /** `tx` copied out of the frame. */
  ownTx(): Buffer {
    return Buffer.from(this.tx);
  }
}
