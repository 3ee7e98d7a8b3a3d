// The bytes the replicated sequencer writes: its stream messages (`seqmsg.v1`) and its resume
// points (`resume.v1`), both in docs/binary-layouts.md. Everything read is validated: a stream
// message may come from any publisher on the subject.
import { decodeTx, type DecodedTx } from '../app/tx.js';
import { message } from './jetstream-stream.js';

/** Layout byte of a stream message (docs/binary-layouts.md, "Sequencer message"). */
const MESSAGE_LAYOUT = 1;
/** Layout byte of a resume point (docs/binary-layouts.md, "Sequencer resume point"). */
const RESUME_LAYOUT = 1;
export const MESSAGE_HEADER = 5;
export const TX_HEADER = 36;
const RESUME_HEADER = 25;

/** A stream message decoded: each transaction with the digest it was published under. */
export interface Decoded {
  digests: string[];
  txs: DecodedTx[];
}

/** One message holding `txs`, `bytes` long (`MESSAGE_HEADER` + `TX_HEADER` + length, each). */
export function encodeMessage(txs: readonly DecodedTx[], bytes: number): Buffer {
  const payload = Buffer.allocUnsafe(bytes);
  payload[0] = MESSAGE_LAYOUT;
  payload.writeUInt32LE(txs.length, 1);
  let at = MESSAGE_HEADER;
  for (const tx of txs) {
    payload.write(tx.digest, at, 32, 'hex');
    payload.writeUInt32LE(tx.bytes.length, at + 32);
    at += TX_HEADER;
    at += tx.bytes.copy(payload, at);
  }
  return payload;
}

/** A resume point: where delivery stood (`seq`, `index` in it, `ts`) and the window's `count` digests, oldest first. */
export function encodeResumePoint(at: { seq: number; index: number; ts: number }, count: number, digest: (i: number) => string): Buffer {
  const out = Buffer.allocUnsafe(RESUME_HEADER + 32 * count);
  out[0] = RESUME_LAYOUT;
  out.writeBigUInt64LE(BigInt(at.seq), 1);
  out.writeUInt32LE(at.index, 9);
  out.writeBigUInt64LE(BigInt(at.ts), 13);
  out.writeUInt32LE(count, 21);
  for (let i = 0; i < count; i++) out.write(digest(i), RESUME_HEADER + 32 * i, 32, 'hex');
  return out;
}

/** Decodes and validates a stream message written by any instance: each transaction as admission would. */
export function decodeMessage(b: Buffer, seq: number): Decoded {
  const bad = (why: string) => new Error(`JetStream stream message ${seq} is malformed: ${why}`);
  if (b.length < MESSAGE_HEADER) throw bad(`${b.length} bytes, shorter than its header`);
  if (b[0] !== MESSAGE_LAYOUT) throw bad(`layout ${b[0]}, expected ${MESSAGE_LAYOUT}`);
  const n = b.readUInt32LE(1);
  if (n === 0) throw bad('it holds no transactions');
  if (n > (b.length - MESSAGE_HEADER) / TX_HEADER) throw bad(`it claims ${n} transactions in ${b.length} bytes`);
  const digests: string[] = [];
  const txs: DecodedTx[] = [];
  let at = MESSAGE_HEADER;
  for (let i = 0; i < n; i++) {
    if (b.length - at < TX_HEADER) throw bad(`transaction ${i} is truncated`);
    const digest = b.toString('hex', at, at + 32);
    const len = b.readUInt32LE(at + 32);
    at += TX_HEADER;
    if (len > b.length - at) throw bad(`transaction ${i} claims ${len} bytes, ${b.length - at} remain`);
    let tx: DecodedTx;
    try {
      tx = decodeTx(b.subarray(at, at + len));
    } catch (e) {
      throw bad(`transaction ${i} does not decode: ${message(e)}`);
    }
    if (tx.digest !== digest) throw bad(`transaction ${i} has digest ${tx.digest}, the message says ${digest}`);
    at += len;
    digests.push(digest);
    txs.push(tx);
  }
  if (at !== b.length) throw bad(`${b.length - at} bytes after its last transaction`);
  return { digests, txs };
}

export function decodeResumePoint(b: Uint8Array, window: number): { seq: number; index: number; ts: number; digests: string[] } {
  const bad = (why: string) => new Error(`JetStream sequencer: resume point is invalid: ${why}`);
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.length < RESUME_HEADER) throw bad(`${buf.length} bytes, shorter than its header of ${RESUME_HEADER}`);
  if (buf[0] !== RESUME_LAYOUT) throw bad(`layout ${buf[0]}, expected ${RESUME_LAYOUT}`);
  const seq = buf.readBigUInt64LE(1);
  const index = buf.readUInt32LE(9);
  const ts = buf.readBigUInt64LE(13);
  const count = buf.readUInt32LE(21);
  if (seq < 1n || seq > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`stream sequence ${seq} is out of range`);
  if (ts < 1n || ts > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`timestamp ${ts} is out of range`);
  const expected = Math.min(Number(ts), window);
  if (count !== expected)
    throw bad(`it holds ${count} digests, a dedup window of ${window} at ts ${ts} needs ${expected} (was it made with another dedupWindow?)`);
  if (buf.length !== RESUME_HEADER + 32 * count) throw bad(`${buf.length} bytes, ${count} digests need ${RESUME_HEADER + 32 * count}`);
  const digests: string[] = [];
  for (let i = 0; i < count; i++) digests.push(buf.toString('hex', RESUME_HEADER + 32 * i, RESUME_HEADER + 32 * (i + 1)));
  if (new Set(digests).size !== count) throw bad('its dedup window holds a digest twice');
  return { seq: Number(seq), index, ts: Number(ts), digests };
}
