// What the primary reports per applied transaction. An adopted one keeps its effects in its
// table's bytes (docs/binary-layouts.md): the node forwards them to pre-executors as they are,
// and nothing decodes them unless someone asks for the writes as objects.
import { Buffer } from 'node:buffer';
import type { Outcome } from '../app/exec.js';
import type { DecodedTx } from '../app/tx.js';
import type { Write } from '../app/state.js';
import type { Decision } from './merge.js';
import type { Flight } from './in-flight.js';
import { encodeWrites, writeDigest } from './records.js';
import { tableWrites, type ReceivedTable } from './table-bytes.js';
import { copyBytes, putU16le, putU64le } from '../bytes.js';

export interface Applied {
  ts: bigint;
  digest: string;
  outcome: Outcome;
  decision: Decision;
  /** Which pre-executor's result was used (adopted or as hints), if any. */
  preExecutor: string | null;
  /** Decoded on first use for adopted transactions: the node forwards their bytes instead. */
  readonly writes: Write[];
  /** How many objects it wrote. */
  readonly writeCount: number;
  /** Re-executed only: objects whose version the pre-executor saw was no longer current. */
  conflicts: string[];
  /** The node's entry for it (in-flight.ts), if it was delivered with one. */
  flight?: Flight | undefined;
}

/** An adopted transaction: its effects stay in its table's bytes unless someone asks. */
export class AdoptedTx implements Applied {
  readonly decision = 'adopted' as const;
  readonly conflicts: string[] = [];
  private decoded: Write[] | null = null;

  constructor(
    readonly ts: bigint,
    readonly digest: string,
    readonly preExecutor: string,
    private readonly table: ReceivedTable,
    /** The transaction, where it can copy its digest as bytes (`DecodedTx.copyDigest`). */
    private readonly tx?: Pick<DecodedTx, 'copyDigest'>,
    readonly flight?: Flight,
  ) {}

  /** Writes the digest's 32 bytes at `at` of `out`. */
  putDigest(out: Buffer, at: number): void {
    if (this.tx?.copyDigest?.(out, at) !== true) writeDigest(out, at, this.digest);
  }

  get outcome(): Outcome {
    return this.table.rest.outcome;
  }

  get writeCount(): number {
    return this.table.shape.writes;
  }

  get writes(): Write[] {
    return (this.decoded ??= tableWrites(this.table.bytes, this.table.shape));
  }

  /** Bytes of the writes section as effects carry it: its count, then the entries as the table has them. */
  get writesLength(): number {
    return 2 + this.table.shape.restAt - this.table.shape.writesAt;
  }

  /** Writes that section at `at` of `out` (`writesLength` bytes). */
  copyWrites(out: Buffer, at: number): void {
    const { bytes, shape } = this.table;
    putU16le(out, at, shape.writes);
    copyBytes(bytes, shape.writesAt, shape.restAt, out, at + 2);
  }
}

const HEAD = 8 + 32;

/**
 * effects.v1 for the transactions of `batch` that wrote something or were pre-executed (a
 * member drops the guesses an abort left), in one buffer; null if there are none. Adopted
 * transactions' writes are copied from their tables as they are.
 */
export function effectsOf(batch: readonly Applied[]): Buffer | null {
  let size = 0;
  // Encoded writes of those not adopted (re-executed, executed alone): few under load.
  let encoded: Map<number, Buffer> | null = null;
  for (let k = 0; k < batch.length; k++) {
    const a = batch[k] as Applied;
    if (a.writeCount === 0 && a.preExecutor === null) continue;
    if (a instanceof AdoptedTx) size += HEAD + a.writesLength;
    else {
      const w = encodeWrites(a.writes);
      (encoded ??= new Map()).set(k, w);
      size += HEAD + w.length;
    }
  }
  if (size === 0) return null;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let k = 0; k < batch.length; k++) {
    const a = batch[k] as Applied;
    if (a.writeCount === 0 && a.preExecutor === null) continue;
    putU64le(out, at, a.ts);
    if (a instanceof AdoptedTx) a.putDigest(out, at + 8);
    else writeDigest(out, at + 8, a.digest);
    at += HEAD;
    const w = encoded?.get(k);
    if (w === undefined) {
      (a as AdoptedTx).copyWrites(out, at);
      at += (a as AdoptedTx).writesLength;
    } else {
      w.copy(out, at);
      at += w.length;
    }
  }
  return out;
}
