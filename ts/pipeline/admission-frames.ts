// What an admission process and the node say to each other (docs/pipeline.md, "Admission
// processes"), and the checks that turn the peer's bytes into it. The admission process
// forwards what it admitted in batches; the node answers each transaction once, many to a
// message, in the `answers.v1` layout below.
import { Buffer } from 'node:buffer';
import type { Outcome } from '../app/exec.js';
import { decode, encode } from '../app/codec.js';
import { putU64le } from '../bytes.js';
import { forwardedTx, LIMITS, type DecodedTx } from '../app/tx.js';
import type { Decision } from './merge.js';
import { ProtocolError } from './messages.js';
import { slotOf } from './scheduler.js';
import { commonOutcome, commonOutcomeByte } from './table-bytes.js';

/** The role an admission process announces, followed by its name. */
export const ADMISSION_ROLE = 'admission:';

export type AdmissionToNode =
  /** The first message: the app it admits for, which must be the node's active one. */
  | { t: 'hello'; app: string; digest: string }
  /** Admitted transactions, numbered from `first` (mod 2^32) in the order given. */
  | { t: 'admit'; first: number; txs: DecodedTx[] };

export type NodeToAdmission = { t: 'welcome' } | { t: 'refused'; reason: string } | { t: 'answers'; answers: Buffer };

/** Most transactions in one `admit` message. */
export const MAX_FORWARDED = 8192;
/**
 * Bytes past which an `admit` or `answers` message ends and the next begins: well under a
 * frame's 4 MiB, and a transaction (64 KiB of body, 8 authenticators, 256 ids) or an answer is
 * far smaller, so one always fits. A burst of large ones must not make one frame too large to
 * send, which would cut the link every client of the process goes through.
 */
export const MESSAGE_BYTES = 1 << 20;

/** What `tx` adds to an `admit` message: its bytes, digest, end and its objects' slots. */
export function forwardedBytes(tx: DecodedTx): number {
  return tx.bytes.length + 38 + 4 * tx.objects.length;
}

function fail(what: string): never {
  throw new ProtocolError(what);
}
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isText = (v: unknown, max: number): v is string => typeof v === 'string' && v.length <= max;

/** An `admit` message as sent (`flatFrame` writes it). */
export interface AdmitMessage {
  [field: string]: string | number | Buffer;
  t: 'admit';
  first: number;
  digests: Buffer;
  ends: Buffer;
  slots: Buffer;
  bytes: Buffer;
}

/**
 * The `admit` message for `txs`, numbered from `first`. Nothing in it is per-transaction
 * msgpack: `digests` (32 bytes each), `ends` (u32le, where each transaction's bytes end in
 * `bytes`) and `slots` (per transaction a u16le count of its declared objects, then each one's
 * `slotOf` as u32le, what the node's scheduler hashes them to). The node reads the command and
 * the objects from the bytes only if it executes the transaction; decoding an array of strings
 * per transaction was most of what reading the message cost.
 */
export function admitMessage(first: number, txs: readonly DecodedTx[]): AdmitMessage {
  let hex = '';
  let slotBytes = 0;
  for (const tx of txs) slotBytes += 2 + 4 * tx.objects.length;
  const ends = Buffer.allocUnsafe(4 * txs.length);
  const slots = Buffer.allocUnsafe(slotBytes);
  let end = 0;
  let at = 0;
  txs.forEach((tx, i) => {
    hex += tx.digest;
    end += tx.bytes.length;
    ends.writeUInt32LE(end, 4 * i);
    at = slots.writeUInt16LE(tx.objects.length, at);
    for (const id of tx.objects) at = slots.writeUInt32LE(slotOf(id), at);
  });
  const bytes = Buffer.allocUnsafe(end);
  let to = 0;
  for (const tx of txs) to += tx.bytes.copy(bytes, to);
  return { t: 'admit', first, digests: Buffer.from(hex, 'hex'), ends, slots, bytes };
}

export function parseAdmissionMessage(m: unknown): AdmissionToNode {
  if (!isObj(m)) fail('expected a map');
  if (m['t'] === 'hello') {
    const { app, digest } = m;
    if (!isText(app, 256) || !isText(digest, 64)) fail('hello: bad app or digest');
    return { t: 'hello', app, digest };
  }
  if (m['t'] !== 'admit') fail(`expected hello or admit, got ${typeof m['t'] === 'string' ? JSON.stringify(m['t'].slice(0, 32)) : typeof m['t']}`);
  const { first, digests, slots, ends, bytes } = m;
  if (typeof first !== 'number' || first >>> 0 !== first) fail('admit: first must be a uint32');
  if (!(ends instanceof Uint8Array) || !(bytes instanceof Uint8Array) || !(digests instanceof Uint8Array) || !(slots instanceof Uint8Array))
    fail('admit: missing fields');
  if (ends.length % 4 !== 0) fail(`admit: ends of ${ends.length} bytes, not a whole number of u32`);
  const n = ends.length / 4;
  if (n === 0 || n > MAX_FORWARDED) fail(`admit: ${n} transactions, expected 1 to ${MAX_FORWARDED}`);
  if (digests.length !== 32 * n) fail(`admit: ${n} transactions but ${digests.length} bytes of digests`);
  const all = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const endsView = Buffer.from(ends.buffer, ends.byteOffset, ends.byteLength);
  const slotsView = Buffer.from(slots.buffer, slots.byteOffset, slots.byteLength);
  // One conversion for the batch, sliced per transaction: the node's maps key on hex.
  const hex = Buffer.from(digests.buffer, digests.byteOffset, digests.byteLength).toString('hex');
  const txs: DecodedTx[] = new Array<DecodedTx>(n);
  let start = 0;
  let at = 0;
  for (let i = 0; i < n; i++) {
    const end = endsView.readUInt32LE(4 * i);
    // A tx.v1 is at least its layout byte, body length and authenticator count.
    if (end < start + 7 || end > all.length) fail(`admit: transaction ${i} ends at ${end}, outside the bytes`);
    const count = at + 2 <= slotsView.length ? slotsView.readUInt16LE(at) : -1;
    if (count < 0 || count > LIMITS.objects || at + 2 + 4 * count > slotsView.length)
      fail(`admit: the slots of transaction ${i} do not fit (${count < 0 ? 'no count' : `${count} objects`})`);
    txs[i] = forwardedTx(hex.slice(64 * i, 64 * i + 64), all.subarray(start, end), digests, 32 * i, slotsView, at);
    start = end;
    at += 2 + 4 * count;
  }
  if (start !== all.length) fail(`admit: ${all.length - start} bytes after the last transaction`);
  if (at !== slotsView.length) fail(`admit: ${slotsView.length - at} bytes of slots after the last transaction`);
  return { t: 'admit', first, txs };
}

export function parseNodeToAdmission(m: unknown): NodeToAdmission {
  if (isObj(m) && m['t'] === 'welcome') return { t: 'welcome' };
  const reason = isObj(m) ? m['reason'] : undefined;
  if (isObj(m) && m['t'] === 'refused' && isText(reason, 4096)) return { t: 'refused', reason };
  const b = isObj(m) ? m['answers'] : undefined;
  if (isObj(m) && m['t'] === 'answers' && b instanceof Uint8Array) return { t: 'answers', answers: Buffer.from(b.buffer, b.byteOffset, b.byteLength) };
  return fail('expected welcome, refused or answers');
}

// answers.v1, one record per transaction, little-endian:
//   u32 id, u8 kind
//   kind 0, a reply: u64 ts, u8 duplicate, u8 decision (0 none, 1 adopted, 2 reexecuted,
//     3 executed), u8 outcome (0 none; 1 a shared `ok` outcome, its result byte follows; 2 any
//     other, u32 length and its msgpack follow)
//   kind 1, refused: u8 (1 if a `TxError`, the client's fault), u32 length, UTF-8 message
const DECISIONS: readonly (Decision | null)[] = [null, 'adopted', 'reexecuted', 'executed'];

/** A reply, or why the transaction was not sequenced. */
export type Answer =
  | { id: number; reply: { ts: bigint; duplicate: boolean; outcome: Outcome | null; decision: Decision | null } }
  | { id: number; error: string; txError: boolean };

/** Collects answers into one `answers.v1` buffer. */
export class AnswerWriter {
  private buf = Buffer.allocUnsafe(4096);
  private at = 0;

  get length(): number {
    return this.at;
  }

  reply(id: number, ts: bigint, duplicate: boolean, outcome: Outcome | null, decision: Decision | null): void {
    const common = outcome === null ? undefined : commonOutcomeByte(outcome);
    const encoded = outcome === null || common !== undefined ? null : encode(outcome);
    const b = this.room(17 + (common !== undefined ? 1 : encoded ? 4 + encoded.length : 0));
    let at = this.at;
    b.writeUInt32LE(id, at);
    b[at + 4] = 0;
    putU64le(b, at + 5, ts);
    b[at + 13] = duplicate ? 1 : 0;
    b[at + 14] = DECISIONS.indexOf(decision);
    at += 15;
    if (outcome === null) b[at++] = 0;
    else if (common !== undefined) {
      b[at] = 1;
      b[at + 1] = common;
      at += 2;
    } else if (encoded) {
      b[at] = 2;
      b.writeUInt32LE(encoded.length, at + 1);
      at += 5 + encoded.copy(b, at + 5);
    }
    this.at = at;
  }

  refused(id: number, error: string, txError: boolean): void {
    const msg = Buffer.from(error, 'utf8');
    const b = this.room(10 + msg.length);
    b.writeUInt32LE(id, this.at);
    b[this.at + 4] = 1;
    b[this.at + 5] = txError ? 1 : 0;
    b.writeUInt32LE(msg.length, this.at + 6);
    this.at += 10 + msg.copy(b, this.at + 10);
  }

  /** The answers written so far; the writer starts over. */
  take(): Buffer {
    const out = Buffer.from(this.buf.subarray(0, this.at));
    this.at = 0;
    return out;
  }

  private room(n: number): Buffer {
    if (this.at + n > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.at + n));
      this.buf.copy(grown, 0, 0, this.at);
      this.buf = grown;
    }
    return this.buf;
  }
}

/** Reads an `answers.v1` buffer; a record that does not hold together is a protocol error. */
export function readAnswers(b: Buffer, each: (a: Answer) => void): void {
  let at = 0;
  const need = (n: number) => {
    if (at + n > b.length) fail(`answers: record cut short at byte ${at}`);
  };
  while (at < b.length) {
    need(5);
    const id = b.readUInt32LE(at);
    const kind = b[at + 4];
    at += 5;
    if (kind === 1) {
      need(5);
      const txError = b[at] === 1;
      const len = b.readUInt32LE(at + 1);
      at += 5;
      need(len);
      each({ id, error: b.toString('utf8', at, at + len), txError });
      at += len;
      continue;
    }
    if (kind !== 0) fail(`answers: unknown kind ${kind}`);
    need(11);
    const ts = b.readBigUInt64LE(at);
    const duplicate = b[at + 8] === 1;
    const decision = DECISIONS[b[at + 9] ?? 255];
    const how = b[at + 10];
    at += 11;
    if (decision === undefined) fail('answers: unknown decision');
    let outcome: Outcome | null = null;
    if (how === 1) {
      need(1);
      outcome = commonOutcome(b[at] ?? 0) ?? fail('answers: not a shared outcome byte');
      at += 1;
    } else if (how === 2) {
      need(4);
      const len = b.readUInt32LE(at);
      at += 4;
      need(len);
      outcome = decode(b.subarray(at, at + len)) as Outcome;
      at += len;
    } else if (how !== 0) fail(`answers: unknown outcome kind ${how}`);
    each({ id, reply: { ts, duplicate, outcome, decision: decision ?? null } });
  }
}
