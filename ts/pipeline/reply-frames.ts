// The reply frame a client gets for each transaction, `{ t: 'reply', id, ts, duplicate,
// outcome, decision }`, written without msgpack's general encoder.
//
// The encoder is shared by every message the node sends, so its property loads are
// megamorphic: timed after it had packed the wire's other shapes, 0.41 µs a reply against
// 0.12 for this writer, which knows the one shape (both making the timestamp's bigint). It writes exactly the bytes the encoder would (`test/reply-frames.test.ts` holds
// the two to the same bytes), so clients decode it as before. It answers only for what it can
// write whole: an id that is a uint32, a decision it knows, and an outcome that is one of the
// shared `ok` outcomes adopted tables carry (`commonOutcomeByte`); anything else (an optimistic
// check, an executed transaction's own outcome object) goes to the encoder.
import { Buffer } from 'node:buffer';
import type { Outcome } from '../app/exec.js';
import type { Decision } from './merge.js';
import { commonOutcomeByte } from './table-bytes.js';
import { putU32be } from '../bytes.js';

const ascii = (s: string): number[] => [...Buffer.from(s, 'latin1')];
const fixstr = (s: string): number[] => [0xa0 | s.length, ...ascii(s)];

/** A map16 header: the encoder writes one for every object, whatever its size. */
const map16 = (n: number): number[] => [0xde, 0, n];

/** The map header, `t: 'reply'` and the key `id`. */
const HEAD = Buffer.from([...map16(6), ...fixstr('t'), ...fixstr('reply'), ...fixstr('id')]);
const TS = Buffer.from(fixstr('ts'));
const DUPLICATE = Buffer.from(fixstr('duplicate'));
/** `outcome: {status: 'ok', result: ` (the result's byte follows). */
const OUTCOME_OK = Buffer.from([...fixstr('outcome'), ...map16(2), ...fixstr('status'), ...fixstr('ok'), ...fixstr('result')]);
const DECISION = Buffer.from(fixstr('decision'));
const DECISIONS = new Map<Decision | null, Buffer>([
  ['adopted', Buffer.from(fixstr('adopted'))],
  ['reexecuted', Buffer.from(fixstr('reexecuted'))],
  ['executed', Buffer.from(fixstr('executed'))],
  [null, Buffer.from([0xc0])],
]);

/** Bytes of a uint32 as the encoder writes it (`useRecords: false`). */
function uintBytes(n: number): number {
  return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

function writeUint(out: Buffer, at: number, n: number): number {
  if (n < 0x80) {
    out[at] = n;
    return at + 1;
  }
  if (n < 0x100) {
    out[at] = 0xcc;
    out[at + 1] = n;
    return at + 2;
  }
  if (n < 0x10000) {
    out[at] = 0xcd;
    out[at + 1] = n >>> 8;
    out[at + 2] = n & 0xff;
    return at + 3;
  }
  out[at] = 0xce;
  putU32be(out, at + 1, n);
  return at + 5;
}

function put(out: Buffer, at: number, lit: Buffer): number {
  out.set(lit, at);
  return at + lit.length;
}

const MAX_TS = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * The whole frame (u32 big-endian body length, then the body) of this reply, or undefined
 * when this writer does not know the shape and the general encoder must write it.
 */
export function replyFrame(id: number, ts: bigint, duplicate: boolean, outcome: Outcome | null, decision: Decision | null): Buffer | undefined {
  const result = outcome === null ? undefined : commonOutcomeByte(outcome);
  const decided = DECISIONS.get(decision);
  if (result === undefined || decided === undefined || id >>> 0 !== id || ts < 0n || ts > MAX_TS) return undefined;
  const size = HEAD.length + uintBytes(id) + TS.length + 9 + DUPLICATE.length + 1 + OUTCOME_OK.length + 1 + DECISION.length + decided.length;
  const out = Buffer.allocUnsafe(4 + size);
  putU32be(out, 0, size);
  let at = put(out, 4, HEAD);
  at = writeUint(out, at, id);
  at = put(out, at, TS);
  // A bigint as the encoder writes one that fits: int64, big-endian. Timestamps stay below
  // 2^53 (checked above), where the conversion to a number is exact.
  const t = Number(ts);
  const hi = Math.floor(t / 0x1_0000_0000);
  out[at] = 0xd3;
  putU32be(out, at + 1, hi);
  putU32be(out, at + 5, t >>> 0);
  at = put(out, at + 9, DUPLICATE);
  out[at++] = duplicate ? 0xc3 : 0xc2;
  at = put(out, at, OUTCOME_OK);
  out[at++] = result;
  at = put(out, at, DECISION);
  put(out, at, decided);
  return out;
}
