// What the node holds for a transaction from admission until it is applied, by digest, in one
// map: who waits for its reply (replies.ts), which member owes its result (pool.ts), and the
// result the primary keeps for it (primary.ts). Each of those kept a map of its own, and a
// transaction paid an insertion, a deletion and the lookups between in every one of them
// (docs/pipeline.md, "One entry per transaction in flight").
import type { DecodedTx } from '../app/tx.js';
import type { Offer } from './primary.js';
import type { AppliedListener } from './replies.js';
import { ChurnMap } from './churn-map.js';

/** Who owes a transaction's result (pool.ts). */
export interface Owed {
  name: string;
  /** The app version the member runs, when it told us. */
  app: string | undefined;
  /** No longer its flight's `owed`: returned, no longer wanted, or owed by another. */
  settled: boolean;
  /** The transaction, with its digest as admission made it (which may compare itself as bytes, `DecodedTx.isDigestAt`). */
  tx: DecodedTx;
  flight: Flight;
}

/** One digest's parts; the entry goes once none holds anything. */
export class Flight {
  /** Who waits for it to be applied (chained when submitted twice). */
  listener: AppliedListener | null = null;
  /** The member that owes its result. */
  owed: Owed | null = null;
  /** The primary keeps a result for it: the result once one came, and who waits for it. */
  expected = false;
  offer: Offer | null = null;
  /** Set while a delivery waits for the result; called (once) when it comes or none will. */
  wake: (() => void) | null = null;
  /** In the map: a flight released is never used again (a later one for the digest is new). */
  live = true;

  constructor(readonly digest: string) {}
}

export class Flights {
  private readonly map = new ChurnMap<Flight>();

  get size(): number {
    return this.map.size;
  }

  get(digest: string): Flight | undefined {
    return this.map.get(digest);
  }

  /** The digest's flight, made if there is none. */
  open(digest: string): Flight {
    let f = this.map.get(digest);
    if (f === undefined) {
      f = new Flight(digest);
      this.map.set(digest, f);
    }
    return f;
  }

  /** Drops `f` if no part holds anything for it any more. */
  release(f: Flight): void {
    if (!f.live || f.listener !== null || f.owed !== null || f.expected) return;
    f.live = false;
    this.map.delete(f.digest);
  }

  /** Every flight now (a copy: scans on rare paths, such as a member leaving). */
  all(): Flight[] {
    return this.map.keys().map((d) => this.map.get(d) as Flight);
  }
}
