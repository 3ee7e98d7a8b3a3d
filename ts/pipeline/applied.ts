// What the primary reports per applied transaction. An adopted one keeps its effects in its
// table's bytes (docs/binary-layouts.md): the node forwards them to pre-executors as they are,
// and nothing decodes them unless someone asks for the writes as objects.
import type { Outcome } from '../app/exec.js';
import type { Write } from '../app/state.js';
import type { Decision } from './merge.js';
import { encodeWrites } from './records.js';
import { tableWrites, type ReceivedTable } from './table-bytes.js';

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
  ) {}

  get outcome(): Outcome {
    return this.table.rest.outcome;
  }

  get writeCount(): number {
    return this.table.shape.writes;
  }

  get writes(): Write[] {
    return (this.decoded ??= tableWrites(this.table.bytes, this.table.shape));
  }

  /** The writes section as effects carry it: its count, then the entries as the table has them. */
  writesBytes(): Buffer {
    const { bytes, shape } = this.table;
    const out = Buffer.allocUnsafe(2 + shape.restAt - shape.writesAt);
    out.writeUInt16LE(shape.writes, 0);
    bytes.copy(out, 2, shape.writesAt, shape.restAt);
    return out;
  }
}

/** `a`'s writes as effects.v1 carries them. */
export function writesBytes(a: Applied): Buffer {
  return a instanceof AdoptedTx ? a.writesBytes() : encodeWrites(a.writes);
}
