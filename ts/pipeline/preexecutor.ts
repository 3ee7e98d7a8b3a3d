// A pre-executor: executes transactions on its own copy of the state as soon as admission
// hands them over, and returns each one's lookup table. Its copy follows the primary's
// applied writes; its own guesses stay apart (speculation.ts), so every version it records
// is real and every guess it read is marked as one.
import type { App } from '../app/app.js';
import { execute, verifyAll, type LookupTable, type Natives } from '../app/exec.js';
import { MemoryState, type Write } from '../app/state.js';
import type { DecodedTx } from '../app/tx.js';
import { Speculation } from './speculation.js';
import type { PushedObject } from './state-update.js';

export type Result = [digest: string, table: LookupTable];
/** Writes the primary applied at `ts`, by the transaction `digest`. */
export type Effect = [ts: bigint, writes: Write[], digest: string];

/** What the primary last told this pre-executor about conflicts (see feedback.ts). */
export interface Feedback {
  /** Its results the primary re-executed, since it joined. */
  misses: number;
  /** Objects pushed to it (state update `push`). */
  pushes: number;
  /** Objects conflicting often lately. */
  hot: string[];
}

export class PreExecutor {
  readonly state = new MemoryState();
  executed = 0;
  /** Newest timestamp whose effects this copy holds. */
  appliedTs = 0n;
  /** Objects the primary pushed (state update `push`). */
  pushed = 0;
  feedback: Feedback = { misses: 0, pushes: 0, hot: [] };
  /** Its own results not yet applied by the primary, read by later transactions; null when off. */
  speculation: Speculation | null;

  constructor(
    /** Replaced when the node says an upgrade is active (preexecutor-main.ts). */
    public app: App,
    private readonly natives: Natives,
    opts: { speculate?: boolean } = {},
  ) {
    this.speculation = opts.speculate === false ? null : new Speculation(this.state);
  }

  /** Turns speculation on or off (the node says which in its config message). */
  speculate(on: boolean): void {
    if (on && !this.speculation) this.speculation = new Speculation(this.state);
    if (!on) this.speculation = null;
  }

  /** Executes a batch: its authenticators are verified in one native call first. */
  run(txs: readonly DecodedTx[]): Result[] {
    const auth = verifyAll(this.natives, txs);
    const source = this.speculation ?? this.state;
    return txs.map((tx, i) => {
      const { table } = execute(this.app, tx, source, this.natives, { auth: auth[i] ?? [] });
      this.speculation?.record(tx.digest, table.writes);
      this.executed++;
      return [tx.digest, table];
    });
  }

  /** Installs objects the primary pushed, each only if newer than the copy's. */
  installObjects(objects: readonly PushedObject[]): void {
    for (const [id, version, value] of objects) this.state.install(id, version, value);
    this.speculation?.forget(objects.map(([id]) => id));
    this.pushed += objects.length;
  }

  /** Applies the primary's effects, skipping any already held (effects may be resent). */
  install(effects: readonly Effect[]): void {
    for (const [ts, writes, digest] of effects) {
      if (ts <= this.appliedTs) continue;
      this.state.apply(writes, ts);
      this.speculation?.applied(digest, writes);
      this.appliedTs = ts;
    }
  }
}
