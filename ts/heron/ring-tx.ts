// A transaction as a replica takes it from the ordered stream's ring. The launcher admitted it
// (app/tx.ts `decodeTx`: shape, limits, canonical form, sorted authenticators, digest) before
// giving it a timestamp, so a replica need not prove canonical form again: re-encoding the body
// to compare it was an eighth of a replica's CPU per request (profiled, 2 × 3, one client).
//
// What stays checked is what a replica acts on: the `tx.v1` framing, the body's shape, the
// command, and every declared id (the destination set is recomputed from them, never trusted).
// The ring is still input: malformed bytes throw a `TxError` saying what is wrong. A body that
// decodes but is not canonical is executed as it decodes: every destination reads the same
// bytes from the same ring, so all of them agree on it. Nothing here depends on the digest, so
// it is computed only if asked for.
import { decodeBody, splitTxBytes, txDigest, TxError, type Authenticator, type DecodedTx } from '../app/tx.js';

class AdmittedTx implements DecodedTx {
  private txid: string | undefined;

  constructor(
    readonly command: string,
    readonly args: unknown,
    readonly objects: string[],
    readonly body: Uint8Array,
    readonly auth: Authenticator[],
    readonly bytes: Buffer,
  ) {}

  get digest(): string {
    this.txid ??= txDigest(this.body, this.auth);
    return this.txid;
  }
}

/**
 * Decodes `tx.v1` bytes the launcher admitted (exactly one transaction, nothing after it).
 * Throws `TxError` on bytes that do not frame a transaction or a body without its shape.
 */
export function decodeAdmittedTx(bytes: Uint8Array): DecodedTx {
  const { tx, end } = splitTxBytes(bytes);
  if (end !== bytes.length) throw new TxError(`transaction bytes hold ${bytes.length - end} bytes after the transaction`);
  const { command, args, objects } = decodeBody(tx.body);
  return new AdmittedTx(command, args, objects, tx.body, tx.auth, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}
