// The merge rule at one destination of a transaction (Heron, Algorithm 2 with pre-execution):
// the pipeline's `merge`, on a state that holds this partition's objects and the remote ones
// read as of the transaction's timestamp, and refuses every other partition's.
import type { App } from '../app/app.js';
import type { LookupTable, Natives, Versioned } from '../app/exec.js';
import type { DecodedTx } from '../app/tx.js';
import { merge, recordedReads, type Merged, type MergeState } from '../pipeline/merge.js';

/** Where a replica merges: its app, its partition and how it reads its own objects. */
export interface Destination {
  app: App;
  natives: Natives;
  partitionOf: (id: string) => number;
  partition: number;
  /** This partition's object as of the transaction: the store holds everything before it and nothing after. */
  local: (id: string) => Versioned;
}

/** Fetches remote objects as of the transaction's timestamp into `into`, or throws. */
export type FetchRemote = (ids: readonly string[], into: Map<string, Versioned>) => Promise<void>;

const ABSENT: Versioned = { version: 0n, value: undefined };
const NONE: ReadonlyMap<string, Versioned> = new Map();

/**
 * A transaction's view at one destination: local objects from the store, remote ones of its
 * destinations as fetched, none of any other partition (that partition did not order it).
 * A remote object of a destination not fetched yet reads as absent and is noted in `missing`:
 * a merge that saw any is not the one to keep.
 */
export class DestinationState implements MergeState {
  readonly missing: string[] = [];
  /** `merge` asks `outside(id)` and then `read(id)`: the partition is hashed once for both. */
  private lastId: string | undefined;
  private lastPartition = 0;

  constructor(
    private readonly at: Destination,
    private readonly dest: readonly number[],
    private readonly remote: ReadonlyMap<string, Versioned> = NONE,
  ) {}

  private partitionOf(id: string): number {
    if (id !== this.lastId) {
      this.lastPartition = this.at.partitionOf(id);
      this.lastId = id;
    }
    return this.lastPartition;
  }

  outside(id: string): string | undefined {
    const h = this.partitionOf(id);
    if (this.dest.includes(h)) return undefined;
    return `reads ${id} of partition ${h}, which is not among its destinations [${this.dest.join(', ')}]: declare it`;
  }

  read(id: string): Versioned {
    if (this.partitionOf(id) === this.at.partition) return this.at.local(id);
    const v = this.remote.get(id);
    if (v) return v;
    this.missing.push(id);
    return ABSENT;
  }
}

/** A single-partition transaction: everything it may read is local, so the merge is immediate. */
export function mergeLocal(at: Destination, tx: DecodedTx, table: LookupTable | undefined): Merged {
  return merge(at.app, tx, table, new DestinationState(at, [at.partition]), at.natives);
}

/**
 * A transaction across partitions, after phase 2. The declared remote objects are fetched
 * first, with the table's recorded remote reads when all of them are of a destination (so an
 * adoptable table costs no extra round; otherwise it cannot be adopted anyway). A dynamic read
 * of a remote object not fetched yet makes that merge provisional: the object is fetched and
 * the transaction merged again. Execution is deterministic and what is fetched depends only on
 * the transaction and its table, so the last merge is the one every destination computes.
 * Merging again re-judges the table to the same end: its recorded reads were all fetched for
 * the first judgement and fetched values do not change.
 *
 * A read outside the destinations ends it at once, as the abort `merge` gives, even when other
 * reads were missing: what it read before depends only on what was fetched, the same everywhere.
 */
export async function mergeWithRemote(
  at: Destination,
  tx: DecodedTx,
  table: LookupTable | undefined,
  dest: readonly number[],
  fetch: FetchRemote,
): Promise<Merged> {
  const isRemote = (id: string) => at.partitionOf(id) !== at.partition;
  let want = tx.objects.filter(isRemote);
  if (table) {
    const recorded = recordedReads(table);
    if (recorded.every((id) => dest.includes(at.partitionOf(id)))) want = [...new Set([...want, ...recorded.filter(isRemote)])];
  }
  const remote = new Map<string, Versioned>();
  for (;;) {
    await fetch(want, remote);
    const state = new DestinationState(at, dest, remote);
    const m = merge(at.app, tx, table, state, at.natives);
    if (state.missing.length === 0 || m.outside !== undefined) return m;
    want = state.missing;
  }
}
