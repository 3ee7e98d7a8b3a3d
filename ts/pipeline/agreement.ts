// Replicated primaries check that they agree: each hashes what it applied in every window of
// `every` timestamps (timestamp, transaction digest, outcome), publishes the hash, and compares
// it with its peers' for the same window. Windows are fixed by timestamp, so nodes that started
// at different points (a restart from a checkpoint) still compare the windows they both saw.
import { createHash, type Hash } from 'node:crypto';
import { decode, encode } from '../app/codec.js';
import type { Applied } from './applied.js';

/** One node's hash of one window: timestamps `(end - every, end]`. */
export interface WindowDigest {
  node: string;
  end: bigint;
  digest: string;
}

/** How window digests travel between nodes (the replicated log's engine carries them). */
export interface DigestChannel {
  publish(bytes: Uint8Array): void;
  /** Every message published by any node, this one's included or not. */
  onMessage(handler: (bytes: Uint8Array) => void): void;
}

export interface AgreementStats {
  /** Windows this node hashed and published. */
  published: number;
  /** Peer windows compared with this node's: equal, and not. */
  agreed: number;
  disagreed: number;
  /** Peer messages that did not decode. */
  malformed: number;
}

/** Windows remembered for comparison, ours and peers'. */
const KEEP = 256;

export class Agreement {
  readonly stats: AgreementStats = { published: 0, agreed: 0, disagreed: 0, malformed: 0 };
  private hash: Hash | null = null;
  private windowStart = 0n;
  private readonly mine = new Map<bigint, string>();
  private readonly theirs = new Map<bigint, WindowDigest[]>();

  constructor(
    private readonly node: string,
    private readonly channel: DigestChannel,
    private readonly opts: { every?: number; onDisagree?: (mine: WindowDigest, theirs: WindowDigest) => void } = {},
  ) {
    channel.onMessage((bytes) => this.received(bytes));
  }

  private get every(): bigint {
    return BigInt(this.opts.every ?? 1000);
  }

  /** Feeds what the primary applied, in order. */
  record(batch: readonly Applied[]): void {
    const word = Buffer.alloc(8);
    for (const a of batch) {
      const start = ((a.ts - 1n) / this.every) * this.every;
      // A window this node did not see from its start (it began after it) is not hashed.
      if (this.hash === null || start !== this.windowStart) this.hash = a.ts === start + 1n ? createHash('sha256') : null;
      this.windowStart = start;
      if (this.hash === null) continue;
      word.writeBigUInt64LE(a.ts);
      this.hash.update(word).update(Buffer.from(a.digest, 'hex')).update(encode(a.outcome));
      if (a.ts === start + this.every) {
        this.closeWindow(a.ts, this.hash.digest('hex'));
        this.hash = null;
      }
    }
  }

  private closeWindow(end: bigint, digest: string): void {
    this.mine.set(end, digest);
    trim(this.mine);
    this.stats.published++;
    this.channel.publish(encode({ node: this.node, end, digest }));
    for (const w of this.theirs.get(end) ?? []) this.compare(w);
    this.theirs.delete(end);
  }

  private received(bytes: Uint8Array): void {
    let w: WindowDigest;
    try {
      w = parseWindow(decode(bytes));
    } catch {
      this.stats.malformed++;
      return;
    }
    if (w.node === this.node) return;
    if (this.mine.has(w.end)) this.compare(w);
    else {
      const list = this.theirs.get(w.end) ?? [];
      list.push(w);
      this.theirs.set(w.end, list);
      trim(this.theirs);
    }
  }

  private compare(w: WindowDigest): void {
    const mine = this.mine.get(w.end);
    if (mine === undefined) return;
    if (mine === w.digest) {
      this.stats.agreed++;
      return;
    }
    this.stats.disagreed++;
    this.opts.onDisagree?.({ node: this.node, end: w.end, digest: mine }, w);
  }
}

function trim<V>(m: Map<bigint, V>): void {
  for (const k of m.keys()) {
    if (m.size <= KEEP) break;
    m.delete(k);
  }
}

function parseWindow(v: unknown): WindowDigest {
  if (typeof v !== 'object' || v === null) throw new Error('not a map');
  const { node, end, digest } = v as Record<string, unknown>;
  const endTs = typeof end === 'bigint' ? end : typeof end === 'number' && Number.isSafeInteger(end) ? BigInt(end) : null;
  if (typeof node !== 'string' || node.length > 256 || endTs === null || endTs <= 0n) throw new Error('bad window');
  if (typeof digest !== 'string' || !/^[0-9a-f]{64}$/.test(digest)) throw new Error('bad digest');
  return { node, end: endTs, digest };
}
