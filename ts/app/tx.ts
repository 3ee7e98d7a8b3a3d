// Transactions: a canonical body (what is signed) plus authenticators.
//
// The body is encoded once, by the client, and travels as bytes; every member decodes it but
// never re-encodes it, so a signature can never depend on a re-encoding. Admission rejects
// bodies that are not in canonical form and authenticators out of order, so one transaction
// has exactly one digest.
//
// The digest covers the body *and* the authenticators (docs/security.md, "Transaction
// identity"): a copy of someone's body with a forged or missing signature is another
// transaction, so it can never take the digest of the real one and have it answered as a
// duplicate. Together with execution's rule that every authenticator must verify and be asked
// for by the command (exec.ts), a third party can resubmit a signed transaction only as itself.
import { Buffer } from 'node:buffer';
import { hash } from 'node:crypto';
import { vouchTx, vouchTxs } from '../binding.js';
import { decode, encode, type Data } from './codec.js';
import { copyBytes, u32le } from '../bytes.js';

/** Tag that opens every body: a body of another format or version is never mistaken for one. */
export const TX_TAG = 'remora.tx.v1';

/** Commands with this prefix are the node's own; no app may define one, no client submit one. */
export const ADMIN_PREFIX = 'remora.';
const ADMIN_PREFIX_BYTES = Buffer.from(ADMIN_PREFIX);
/** Where a canonical body's command header is: after `fixarray(4)` and the tag as a fixstr. */
const COMMAND_AT = 2 + TX_TAG.length;

export const LIMITS = {
  /** Encoded body, bytes. */
  bodyBytes: 64 * 1024,
  /** Declared object ids per transaction. */
  objects: 256,
  /** One object id, bytes (UTF-8), as the store allows. */
  idBytes: 88,
  authenticators: 8,
  commandLength: 64,
} as const;

/** An ed25519 signature by `publicKey` over the transaction's body bytes. */
export interface Authenticator {
  scheme: 'ed25519';
  publicKey: Uint8Array;
  signature: Uint8Array;
}

/** What a transaction asks for, decoded from its body. */
export interface TxBody {
  command: string;
  args: unknown;
  /** Declared object ids: the estimate used for routing; reads outside it are allowed. */
  objects: string[];
}

/** A transaction as it travels: body bytes, authenticators, and the digest of the body. */
export interface Transaction {
  body: Uint8Array;
  auth: Authenticator[];
}

/** A transaction checked and decoded once at the receiving end. */
export interface DecodedTx extends TxBody {
  digest: string;
  body: Uint8Array;
  auth: Authenticator[];
  /** The `tx.v1` bytes (docs/binary-layouts.md): what the log stores and pre-executors are handed. */
  bytes: Buffer;
  /**
   * Where the digest came as 32 bytes (forwarded by an admission process): copies them to `at`
   * of `out` and returns true. The log and effects want bytes; decoding the hex costs three
   * times a copy. Absent or false: the caller decodes `digest`.
   */
  copyDigest?(out: Uint8Array, at: number): boolean;
  /**
   * Where the digest came as bytes: whether the 32 bytes at `at` of `b` are it, compared byte
   * by byte (a third of the time of comparing them with the hex). Absent: the caller compares
   * with `digest`.
   */
  isDigestAt?(b: Uint8Array, at: number): boolean;
  /**
   * Where the objects' affinity hashes came with the transaction (forwarded by an admission
   * process): writes each, masked by `mask`, to `out` and returns how many there are, without
   * reading `objects`. Absent: the caller hashes `objects`.
   */
  slotsInto?(out: number[], mask: number): number;
  /** Whether the command is the node's own (`ADMIN_PREFIX`), where known without decoding the body. */
  readonly admin?: boolean;
}

export class TxError extends Error {
  override name = 'TxError';
}

export function encodeBody(command: string, args: Data, objects: readonly string[]): Buffer {
  return encode([TX_TAG, command, args, [...objects]]);
}

const DIGEST_TAG_BYTES = Buffer.from('remora.txid.v1');

/**
 * Hex SHA-256 of the body and the authenticators: the transaction's identity for dedup and for
 * matching results. Fixed-size fields after the length-prefixed body, so no two different
 * (body, authenticators) pairs hash the same input.
 */
export function txDigest(body: Uint8Array, auth: readonly Authenticator[]): string {
  const { input, at: start } = digestInput(body.length, auth.length);
  input.set(body, start);
  let at = start + body.length;
  for (const a of auth) {
    input.set(a.publicKey, at);
    input.set(a.signature, at + a.publicKey.length);
    at += a.publicKey.length + a.signature.length;
  }
  // Every authenticator checked is 96 bytes, so `at` is the whole buffer: no view to make.
  return hash('sha256', at === input.length ? input : input.subarray(0, at), 'hex');
}

/**
 * The digest's input for a body of `bodyLen` bytes and `n` authenticators, its header written
 * (tag, the two lengths) and `at` where the body goes; the authenticators' keys and signatures
 * follow it, 96 bytes each. One buffer and a one-shot hash: half the cost of a streaming hash.
 */
function digestInput(bodyLen: number, n: number): { input: Buffer; at: number } {
  const input = Buffer.allocUnsafe(DIGEST_TAG_BYTES.length + 8 + bodyLen + 96 * n);
  let at = DIGEST_TAG_BYTES.copy(input, 0);
  at = input.writeUInt32BE(bodyLen, at);
  at = input.writeUInt32BE(n, at);
  return { input, at };
}

const isBytes = (v: unknown, len: number): v is Uint8Array => v instanceof Uint8Array && v.length === len;

const TX_LAYOUT = 1;
const ED25519 = 1;
const AUTH_BYTES = 97;

/** Whether `tx` has the shape `tx.v1` can carry (anything else is the node's to refuse, with its reasons). */
export function fitsTxBytes(tx: Transaction): boolean {
  return (
    tx.body instanceof Uint8Array &&
    tx.body.length <= LIMITS.bodyBytes &&
    Array.isArray(tx.auth) &&
    tx.auth.length <= LIMITS.authenticators &&
    tx.auth.every((a) => a?.scheme === 'ed25519' && isBytes(a.publicKey, 32) && isBytes(a.signature, 64))
  );
}

/** The `tx.v1` bytes of a transaction (docs/binary-layouts.md); `TxError` if it has another shape. */
export function encodeTxBytes(tx: Transaction): Buffer {
  if (!fitsTxBytes(tx))
    throw new TxError('transaction does not fit tx.v1: body must be bytes, each authenticator an ed25519 key of 32 bytes and signature of 64');
  const out = Buffer.allocUnsafe(6 + tx.body.length + AUTH_BYTES * tx.auth.length);
  out[0] = TX_LAYOUT;
  out.writeUInt32LE(tx.body.length, 1);
  out.set(tx.body, 5);
  let at = 5 + tx.body.length;
  out[at++] = tx.auth.length;
  for (const a of tx.auth) {
    out[at] = ED25519;
    out.set(a.publicKey, at + 1);
    out.set(a.signature, at + 33);
    at += AUTH_BYTES;
  }
  return out;
}

/**
 * Splits `tx.v1` bytes starting at `at` into body and authenticators (views, not copies), and
 * says where they end, so a batch of them can be walked without a length prefix.
 */
export function splitTxBytes(bytes: Uint8Array, at = 0): { tx: Transaction; end: number } {
  const b = asBuffer(bytes);
  const { bodyEnd, n, end } = frameTx(b, at);
  const auth: Authenticator[] = [];
  for (let i = 0, p = bodyEnd + 1; i < n; i++, p += AUTH_BYTES) {
    auth.push({ scheme: 'ed25519', publicKey: b.subarray(p + 1, p + 33), signature: b.subarray(p + 33, p + 97) });
  }
  return { tx: { body: b.subarray(at + 5, bodyEnd), auth }, end };
}

/** Where the `tx.v1` transaction at `at` has its body's end, how many authenticators, and its end; `TxError` if it is not one. */
function frameTx(b: Buffer, at: number): { bodyEnd: number; n: number; end: number } {
  if (b.length - at < 6) throw new TxError('transaction bytes are truncated');
  if (b[at] !== TX_LAYOUT) throw new TxError(`transaction bytes have layout ${b[at]}, expected ${TX_LAYOUT}`);
  const bodyLen = b.readUInt32LE(at + 1);
  if (bodyLen > LIMITS.bodyBytes) throw new TxError(`transaction body is ${bodyLen} bytes, over the limit of ${LIMITS.bodyBytes}`);
  const bodyEnd = at + 5 + bodyLen;
  if (bodyEnd + 1 > b.length) throw new TxError('transaction bytes are truncated');
  const n = b[bodyEnd] ?? 0;
  if (n > LIMITS.authenticators) throw new TxError(`transaction has ${n} authenticators, over the limit of ${LIMITS.authenticators}`);
  const end = bodyEnd + 1 + n * AUTH_BYTES;
  if (end > b.length) throw new TxError('transaction bytes are truncated');
  for (let i = 0, p = bodyEnd + 1; i < n; i++, p += AUTH_BYTES) if (b[p] !== ED25519) throw new TxError(`authenticator ${i}: unknown scheme ${b[p]}`);
  return { bodyEnd, n, end };
}

/**
 * Checks shape and limits and decodes: `tx` is `tx.v1` bytes, or `{ body, auth }` as msgpack
 * carries it. Throws `TxError` with a message a client can act on; checking the command
 * against an application is the caller's part.
 */
export function decodeTx(tx: unknown): DecodedTx {
  return tx instanceof Uint8Array ? decodeTxBytes(asBuffer(tx)) : decodeTxObject(tx);
}

/**
 * A transaction decoded from its `tx.v1` bytes. Its authenticators are split out only when
 * asked for: the node that adopts a pre-executor's table never looks at them, and the array,
 * objects and views they take would be made for every transaction admitted.
 */
class TxFromBytes implements DecodedTx {
  private split: Authenticator[] | undefined;

  constructor(
    readonly command: string,
    readonly args: unknown,
    readonly objects: string[],
    readonly digest: string,
    readonly body: Buffer,
    readonly bytes: Buffer,
  ) {}

  get auth(): Authenticator[] {
    // The bytes were checked whole when this was made: splitting them again cannot fail.
    this.split ??= splitTxBytes(this.bytes).tx.auth;
    return this.split;
  }
}

/**
 * A transaction an admission process checked and forwarded (docs/pipeline.md, "Admission
 * processes"): its digest and its objects' affinity hashes came with its bytes, so the node
 * does not read the body until something asks for its command or objects (executing it, a
 * lease, the hot-object policy), which for an adopted transaction is never.
 */
class TxForwarded implements DecodedTx {
  private decoded: TxBody | undefined;
  private authOf: Authenticator[] | undefined;

  constructor(
    readonly digest: string,
    readonly bytes: Buffer,
    /** The admit message's digests, this one at `digestAt`. */
    private readonly digests: Uint8Array,
    private readonly digestAt: number,
    /** The admit message's slots, this transaction's (u16le count, then u32le each) at `slotsAt`. */
    private readonly slots: Buffer,
    private readonly slotsAt: number,
  ) {}

  copyDigest(out: Uint8Array, at: number): boolean {
    copyBytes(this.digests, this.digestAt, this.digestAt + 32, out, at);
    return true;
  }

  isDigestAt(b: Uint8Array, at: number): boolean {
    if (at + 32 > b.length) return false;
    const own = this.digests;
    const from = this.digestAt;
    for (let i = 0; i < 32; i++) if (b[at + i] !== own[from + i]) return false;
    return true;
  }

  slotsInto(out: number[], mask: number): number {
    const s = this.slots;
    const n = s.readUInt16LE(this.slotsAt);
    for (let i = 0, at = this.slotsAt + 2; i < n; i++, at += 4) out[i] = (s.readUInt32LE(at) & mask) >>> 0;
    return n;
  }

  get body(): Buffer {
    return this.bytes.subarray(5, 5 + u32le(this.bytes, 1));
  }

  /**
   * Read in place where a canonical body has its command (every body admission forwards is
   * canonical): the primary asks this of every transaction it applies, and the command alone
   * would decode the whole body.
   */
  get admin(): boolean {
    const b = this.bytes;
    const at = 5 + COMMAND_AT;
    if (b[5] !== 0x94 || b[6] !== (0xa0 | TX_TAG.length)) return this.command.startsWith(ADMIN_PREFIX);
    const h = b[at] ?? 0;
    // A command is at most 64 characters: a fixstr or a str8.
    let start = -1;
    let len = 0;
    if ((h & 0xe0) === 0xa0) {
      start = at + 1;
      len = h & 0x1f;
    } else if (h === 0xd9) {
      start = at + 2;
      len = b[at + 1] ?? 0;
    } else return this.command.startsWith(ADMIN_PREFIX);
    if (len < ADMIN_PREFIX_BYTES.length || start + ADMIN_PREFIX_BYTES.length > b.length) return false;
    for (let i = 0; i < ADMIN_PREFIX_BYTES.length; i++) if (b[start + i] !== ADMIN_PREFIX_BYTES[i]) return false;
    return true;
  }

  get command(): string {
    return this.read().command;
  }

  get objects(): string[] {
    return this.read().objects;
  }

  get args(): unknown {
    return this.read().args;
  }

  get auth(): Authenticator[] {
    // Admission split these bytes whole before forwarding them: a failure here is damage.
    this.authOf ??= splitTxBytes(this.bytes).tx.auth;
    return this.authOf;
  }

  private read(): TxBody {
    // Admission decoded this body whole before forwarding it: a failure here is damage.
    this.decoded ??= decodeBody(this.body);
    return this.decoded;
  }
}

/**
 * The node's view of a transaction an admission process forwarded: `bytes` must be what that
 * process admitted under `digest` (the admission role is trusted as pre-executors are,
 * docs/security.md); `digests[digestAt..+32]` is `digest` as bytes, and `slots` at `slotsAt`
 * holds its declared objects' count (u16le) and their `slotOf` hashes (u32le each).
 */
export function forwardedTx(digest: string, bytes: Buffer, digests: Uint8Array, digestAt: number, slots: Buffer, slotsAt: number): DecodedTx {
  return new TxForwarded(digest, bytes, digests, digestAt, slots, slotsAt);
}

/** `decodeTx` of `tx.v1` bytes: the checks of `splitTxBytes` and `decodeTxObject`, without views per authenticator. */
function decodeTxBytes(b: Buffer, vouch = true): DecodedTx {
  // The native check vouches for most transactions in one pass (framing, canonical body,
  // digest), sparing the body's second encoding and the digest's copy; what it cannot vouch
  // for, the checks below decide, and they alone say what is wrong. (`vouch` false: the
  // batch's call already declined.)
  const vouched = vouch ? vouchTx(b) : null;
  if (vouched !== null) return fromVouched(b, vouched);
  const { bodyEnd, n, end } = frameTx(b, 0);
  if (end !== b.length) throw new TxError(`transaction bytes hold ${b.length - end} bytes after the transaction`);
  // Each key against the one before, in place (`compare`'s source is the earlier key, as in Buffer.compare(prev, cur)).
  for (let p = bodyEnd + 2 + AUTH_BYTES; p < end; p += AUTH_BYTES)
    if (b.compare(b, p, p + 32, p - AUTH_BYTES, p + 32 - AUTH_BYTES) >= 0) throw new TxError(UNSORTED_AUTH);
  const body = b.subarray(5, bodyEnd);
  const { command, args, objects } = checkBody(body);
  // The digest's input (as `txDigest` makes it), the body and each key and signature copied straight from the bytes.
  const { input, at: start } = digestInput(bodyEnd - 5, n);
  let at = start + b.copy(input, start, 5, bodyEnd);
  for (let i = 0, p = bodyEnd + 2; i < n; i++, p += AUTH_BYTES) at += b.copy(input, at, p, p + 96);
  return new TxFromBytes(command, args, objects, hash('sha256', input, 'hex'), body, b);
}

/** The decoding of `b`, which the native check vouched for under `digest`: only the body is left to read. */
function fromVouched(b: Buffer, digest: string): DecodedTx {
  const body = b.subarray(5, 5 + u32le(b, 1));
  const { command, args, objects } = decodeBody(body);
  return new TxFromBytes(command, args, objects, digest, body, b);
}

const UNSORTED_AUTH = 'authenticators must be sorted by public key, each key at most once';

/** The dash `vouchTxs` writes 64 of for a transaction it did not vouch for. */
const NOT_VOUCHED = 0x2d;

/**
 * `decodeTx` of a batch of `tx.v1` transactions, each answered apart: its decoding, or the
 * error `decodeTx` would have thrown. The bytes are copied once into one buffer (the views
 * handed in may be of a socket's read buffer), and the native check sees them in one call.
 */
export function decodeTxBatch(txs: readonly Uint8Array[]): (DecodedTx | Error)[] {
  let total = 0;
  for (const tx of txs) total += tx.length;
  const all = Buffer.allocUnsafe(total);
  const ends = new Uint32Array(txs.length);
  let at = 0;
  for (let i = 0; i < txs.length; i++) {
    all.set(txs[i] as Uint8Array, at);
    at += (txs[i] as Uint8Array).length;
    ends[i] = at;
  }
  const digests = vouchTxs(all, ends);
  const out: (DecodedTx | Error)[] = new Array<DecodedTx | Error>(txs.length);
  let start = 0;
  for (let i = 0; i < txs.length; i++) {
    const b = all.subarray(start, ends[i]);
    start = ends[i] as number;
    try {
      if (digests[64 * i] === NOT_VOUCHED) out[i] = decodeTxBytes(b, false);
      else out[i] = fromVouched(b, digests.toString('latin1', 64 * i, 64 * i + 64));
    } catch (e) {
      out[i] = e instanceof Error ? e : new Error(String(e));
    }
  }
  return out;
}

/** `bytes` as a Buffer: itself when it is one (as received), else a view, never a copy. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** `decodeTx` of `{ body, auth }` as msgpack carries it. */
function decodeTxObject(tx: unknown): DecodedTx {
  if (typeof tx !== 'object' || tx === null) throw new TxError('transaction must be an object { body, auth }');
  const { body, auth } = tx as { body?: unknown; auth?: unknown };
  if (!(body instanceof Uint8Array)) throw new TxError('transaction body must be bytes');
  if (body.length > LIMITS.bodyBytes) {
    throw new TxError(`transaction body is ${body.length} bytes, over the limit of ${LIMITS.bodyBytes}`);
  }
  if (!Array.isArray(auth)) throw new TxError('transaction auth must be an array');
  if (auth.length > LIMITS.authenticators) {
    throw new TxError(`transaction has ${auth.length} authenticators, over the limit of ${LIMITS.authenticators}`);
  }
  const checkedAuth = auth.map((a: unknown, i): Authenticator => {
    const { scheme, publicKey, signature } = (a ?? {}) as Record<string, unknown>;
    if (scheme !== 'ed25519') throw new TxError(`authenticator ${i}: unknown scheme ${describeScheme(scheme)}`);
    if (!isBytes(publicKey, 32)) throw new TxError(`authenticator ${i}: public key must be 32 bytes`);
    if (!isBytes(signature, 64)) throw new TxError(`authenticator ${i}: signature must be 64 bytes`);
    return { scheme, publicKey, signature };
  });
  // One encoding per set of signatures: otherwise a reordering would be a new digest that a
  // third party could submit to run a signed transaction twice.
  for (let i = 1; i < checkedAuth.length; i++) {
    const prev = checkedAuth[i - 1];
    const cur = checkedAuth[i];
    if (prev && cur && Buffer.compare(prev.publicKey, cur.publicKey) >= 0) throw new TxError(UNSORTED_AUTH);
  }
  const { command, args, objects } = checkBody(body);
  const digest = txDigest(body, checkedAuth);
  return { command, args, objects, digest, body, auth: checkedAuth, bytes: encodeTxBytes({ body, auth: checkedAuth }) };
}

/** `decodeBody`, and the body must be in canonical form: one transaction, one encoding, one digest. */
function checkBody(body: Uint8Array): TxBody {
  const { decoded, command, args, objects } = decodeBody(body);
  let canonical: Buffer;
  try {
    canonical = encode(decoded);
  } catch (e) {
    throw new TxError(`transaction body holds data that cannot be re-encoded: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!canonical.equals(body)) throw new TxError('transaction body is not in canonical form (sorted map keys, minimal encoding)');
  return { command, args, objects };
}

/**
 * A body decoded and checked for its shape (tag, command, declared ids), not for canonical
 * form: `TxError` says what is wrong. `decoded` is the whole msgpack value.
 */
export function decodeBody(body: Uint8Array): TxBody & { decoded: unknown } {
  let decoded: unknown;
  try {
    decoded = decode(body);
  } catch (e) {
    throw new TxError(`transaction body is not valid msgpack: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!Array.isArray(decoded) || decoded.length !== 4 || decoded[0] !== TX_TAG) {
    throw new TxError(`transaction body must be [${JSON.stringify(TX_TAG)}, command, args, objects]`);
  }
  const [, command, args, objects] = decoded as [unknown, unknown, unknown, unknown];
  if (typeof command !== 'string' || command.length === 0 || command.length > LIMITS.commandLength) {
    throw new TxError(`transaction command must be a non-empty string of at most ${LIMITS.commandLength} characters`);
  }
  if (!Array.isArray(objects) || objects.length > LIMITS.objects) {
    throw new TxError(`transaction objects must be an array of at most ${LIMITS.objects} ids`);
  }
  for (const id of objects) checkId(id);
  return { decoded, command, args, objects: objects as string[] };
}

export function checkId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || id.length === 0) throw new TxError('object id must be a non-empty string');
  const n = Buffer.byteLength(id, 'utf8');
  if (n > LIMITS.idBytes) throw new TxError(`object id ${JSON.stringify(id.slice(0, 32))}… is ${n} bytes, over ${LIMITS.idBytes}`);
}

/** A scheme as an attacker may send it (any msgpack value), named without calling its methods. */
function describeScheme(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.slice(0, 32));
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : typeof v;
}
