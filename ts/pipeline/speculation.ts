// A pre-executor's guesses: the writes of transactions it executed that the primary has not
// applied yet. A later transaction on the same objects reads them instead of the stale copy,
// so a chain of transactions on a hot object, handed to one pre-executor in order, can all be
// adopted. The guesses never enter the copy itself; reads of them are marked speculative and
// the primary checks them by value (merge.ts), so a wrong guess costs a re-execution only.
import type { StateSource, Versioned } from '../app/exec.js';
import type { MemoryState, Write } from '../app/state.js';
import { ChurnMap } from './churn-map.js';

interface Guess {
  value: Uint8Array | undefined;
  /** The transaction that wrote it. */
  writer: string;
  /** The executions counter when it was written, for ageing. */
  at: number;
}

export class Speculation implements StateSource {
  private readonly guesses = new ChurnMap<Guess>();
  /** What each of our transactions not yet applied wrote, oldest first. */
  private readonly pending = new ChurnMap<readonly Write[]>();
  private clock = 0;

  /**
   * @param window Guesses older than this many executions are ignored: by then the primary has
   *   almost surely applied (or replaced) the write, and the copy is the better source.
   */
  constructor(
    private readonly state: MemoryState,
    readonly window = 4096,
  ) {}

  read(id: string): Versioned {
    const g = this.guesses.get(id);
    if (g && this.clock - g.at <= this.window) return { version: 0n, value: g.value, speculative: true };
    if (g) this.guesses.delete(id);
    return this.state.read(id);
  }

  /** Remembers the writes of the transaction `digest`, just executed. */
  record(digest: string, writes: readonly Write[]): void {
    this.clock++;
    if (writes.length === 0) return;
    this.pending.set(digest, writes);
    for (const [id, value] of writes) this.guesses.set(id, { value: value ?? undefined, writer: digest, at: this.clock });
    // Transactions we never heard applied (lost, far behind, or no effects are sent, as with
    // `pull`) age out with their guesses, so both maps stay bounded by the window.
    while (this.pending.size > this.window) {
      const oldest = this.pending.oldest();
      if (oldest === undefined) break;
      const [writer, written] = oldest;
      this.pending.delete(writer);
      for (const [id] of written) if (this.guesses.get(id)?.writer === writer) this.guesses.delete(id);
    }
  }

  /**
   * The primary applied `digest` with `writes`. If it is ours and wrote what we guessed, only
   * the guesses it made itself are done (later ones build on it and stay). Otherwise every
   * guess on those objects was built on something else than what happened: drop them.
   */
  applied(digest: string, writes: readonly Write[]): void {
    const ours = this.pending.get(digest);
    if (ours) this.pending.delete(digest);
    if (this.guesses.size === 0) return;
    const landed = ours !== undefined && sameWrites(ours, writes);
    for (const [id] of landed ? writes : [...writes, ...(ours ?? [])]) {
      const g = this.guesses.get(id);
      if (g && (!landed || g.writer === digest)) this.guesses.delete(id);
    }
  }

  /** The copy of these objects changed by other means (a push, a pull): guesses on them go. */
  forget(ids: Iterable<string>): void {
    if (this.guesses.size === 0) return;
    for (const id of ids) this.guesses.delete(id);
  }

  get size(): number {
    return this.guesses.size;
  }
}

function sameWrites(a: readonly Write[], b: readonly Write[]): boolean {
  if (a.length !== b.length) return false;
  return a.every(([id, v], i) => {
    const [id2, v2] = b[i] ?? [];
    return id === id2 && (v === null || v2 === null || v2 === undefined ? v === v2 : Buffer.from(v).equals(v2));
  });
}
