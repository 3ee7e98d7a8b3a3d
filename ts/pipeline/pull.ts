// The pre-executor's side of the `pull` state update: before a batch executes, the current
// versions of its declared objects are read one-sidedly from the primary's store, and only the
// objects whose version differs from the copy's are installed.
import type { MemoryState } from '../app/state.js';
import type { DecodedTx } from '../app/tx.js';
import { RemoteStore, type ReadResult } from '../store.js';
import { formatHostPort, isWildcard, parseHostPort, type HostPort } from '../transport.js';
import type { NodeToPre } from './messages.js';
import type { Speculation } from './speculation.js';

/** Where current versions come from: the primary's store, read one-sidedly (`RemoteStore`). */
export interface VersionSource {
  read(ids: readonly string[]): Promise<ReadResult[]>;
}

export class Puller {
  /** Objects read from the primary. */
  pulled = 0;
  /** Of those, objects whose version differed from the copy's and were installed. */
  refreshed = 0;

  constructor(
    private readonly source: VersionSource,
    /** The pre-executor's copy, and its guesses (dropped for objects found changed). */
    private readonly pre: { readonly state: MemoryState; readonly speculation: Speculation | null },
  ) {}

  /** Refreshes the declared objects of `txs`; returns how many changed. */
  async refresh(txs: readonly DecodedTx[]): Promise<number> {
    const ids = [...new Set(txs.flatMap((tx) => tx.objects))];
    if (ids.length === 0) return 0;
    const found = await this.source.read(ids);
    const { state } = this.pre;
    const changed: string[] = [];
    found.forEach((r, i) => {
      const id = ids[i];
      if (id === undefined) return;
      const [version, value] = current(r);
      // A read of the object's newest version never finds one older than ours: the copy only
      // holds versions the primary wrote. Lagging cannot happen for `get`; treat it as absent.
      if (state.read(id).version === version) return;
      if (version === 0n) state.objects.delete(id);
      else state.objects.set(id, { version, value: value ?? undefined });
      changed.push(id);
    });
    this.pre.speculation?.forget(changed);
    this.pulled += ids.length;
    this.refreshed += changed.length;
    return changed.length;
  }
}

function current(r: ReadResult): [bigint, Uint8Array | null] {
  switch (r.status) {
    case 'value':
      return [r.version, r.value];
    case 'deleted':
      return [r.version, null];
    default:
      return [0n, null];
  }
}

/** Connects to the primary's store as the node's `config` says. */
export function connectStore(m: Extract<NodeToPre, { t: 'config' }>, opts: { dir?: string; node?: HostPort; secret: Buffer }): Promise<RemoteStore> {
  if (m.transport === 'shm') {
    if (m.store === null) throw new Error('the node asked to pull but named no store');
    if (opts.dir === undefined) {
      throw new Error('the node serves its store over shm, which reaches its own host only: start it with --transport tcp (or verbs) to pull across hosts');
    }
    return RemoteStore.connect({ dir: opts.dir, store: m.store, secret: opts.secret });
  }
  const served = m.address === null ? null : parseHostPort(m.address);
  if (served === null) throw new Error(`the node asked to pull over ${m.transport} but sent no valid address`);
  // A store served on every interface is reached at the host we reached the node at.
  if (isWildcard(served.host)) served.host = opts.node?.host ?? '127.0.0.1';
  return RemoteStore.connect({ transport: m.transport, address: formatHostPort(served), secret: opts.secret });
}
