// Transactions: a canonical body (what is signed and digested) plus authenticators.
//
// The body is encoded once, by the client, and travels as bytes; every member decodes it but
// never re-encodes it, so a digest or signature can never depend on a re-encoding. Admission
// rejects bodies that are not in canonical form, so one transaction has exactly one digest.
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

/** Hex SHA-256 of the body: the transaction's identity for dedup and for matching results. */
export function txDigest(body: Uint8Array): string {
  return createHash('sha256').update(body).digest('hex');
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
    if (scheme !== 'ed25519') throw new TxError(`authenticator ${i}: unknown scheme ${String(scheme)}`);
    if (!isBytes(publicKey, 32)) throw new TxError(`authenticator ${i}: public key must be 32 bytes`);
    if (!isBytes(signature, 64)) throw new TxError(`authenticator ${i}: signature must be 64 bytes`);
    return { scheme, publicKey, signature };
  });
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
  return { command, args, objects: objects as string[], digest: txDigest(body), body, auth: checkedAuth };
}

export function checkId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || id.length === 0) throw new TxError('object id must be a non-empty string');
  const n = Buffer.byteLength(id, 'utf8');
  if (n > LIMITS.idBytes) throw new TxError(`object id ${JSON.stringify(id.slice(0, 32))}… is ${n} bytes, over ${LIMITS.idBytes}`);
}
