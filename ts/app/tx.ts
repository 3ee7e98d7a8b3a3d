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
import { createHash } from 'node:crypto';
import { decode, encode, type Data } from './codec.js';

/** Tag that opens every body: a body of another format or version is never mistaken for one. */
export const TX_TAG = 'remora.tx.v1';

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
}

export class TxError extends Error {
  override name = 'TxError';
}

export function encodeBody(command: string, args: Data, objects: readonly string[]): Buffer {
  return encode([TX_TAG, command, args, [...objects]]);
}

const DIGEST_TAG = 'remora.txid.v1';

/**
 * Hex SHA-256 of the body and the authenticators: the transaction's identity for dedup and for
 * matching results. Fixed-size fields after the length-prefixed body, so no two different
 * (body, authenticators) pairs hash the same input.
 */
export function txDigest(body: Uint8Array, auth: readonly Authenticator[]): string {
  const h = createHash('sha256').update(DIGEST_TAG);
  const n = Buffer.alloc(8);
  n.writeUInt32BE(body.length, 0);
  n.writeUInt32BE(auth.length, 4);
  h.update(n).update(body);
  for (const a of auth) h.update(a.publicKey).update(a.signature);
  return h.digest('hex');
}

const isBytes = (v: unknown, len: number): v is Uint8Array => v instanceof Uint8Array && v.length === len;

/**
 * Checks shape and limits and decodes. Throws `TxError` with a message a client can act on;
 * checking the command against an application is the caller's part.
 */
export function decodeTx(tx: unknown): DecodedTx {
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
    if (prev && cur && Buffer.compare(prev.publicKey, cur.publicKey) >= 0) {
      throw new TxError('authenticators must be sorted by public key, each key at most once');
    }
  }
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
  let canonical: Buffer;
  try {
    canonical = encode(decoded);
  } catch (e) {
    throw new TxError(`transaction body holds data that cannot be re-encoded: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!canonical.equals(body)) throw new TxError('transaction body is not in canonical form (sorted map keys, minimal encoding)');
  return { command, args, objects: objects as string[], digest: txDigest(body, checkedAuth), body, auth: checkedAuth };
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
