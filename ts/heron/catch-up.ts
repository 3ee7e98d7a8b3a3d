// State transfer's lagger side (Heron, Algorithm 3): a replica that lags asks peers of its
// partition in turn for every object updated after its last applied timestamp, until one
// ships a prefix covering the transaction it could not execute.
import type { CaughtUpShipment, NativeTransfer } from '../binding.js';
import type { FromReplica } from './messages.js';

/** What the replica reports once caught up (`transferred`), less who it is. */
export type Transferred = Omit<Extract<FromReplica, { t: 'transferred' }>, 't' | 'partition' | 'replica'>;

/** What a replica applied: the state transfer ships and installs one of these. */
export interface Prefix {
  lastTs: bigint;
  applied: number;
  digest: string;
}

export interface CatchUpOptions {
  /** Give up (the replica fails) after this long without a covering shipment (default 30 s). */
  timeoutMs?: number;
  /** How long to wait for one peer's shipment before asking the next (default 2 s). */
  transferTimeoutMs?: number;
}

/**
 * How long the catch-up runs on the replica's thread before it moves to a native thread: the
 * replica executes nothing while it lags, and a shipment of a few MB installs within this,
 * with no thread hop or promise between request, install and resumption.
 */
const SYNC_BUDGET_MICROS = 25_000;

export class CatchUp {
  /** State transfers received. */
  transfers = 0;

  constructor(
    private readonly transfer: NativeTransfer,
    private readonly opts: CatchUpOptions,
  ) {}

  /**
   * Brings the store, holding `from`, to a peer's prefix covering `ts`, and returns that
   * prefix (timestamp, applied count, digest), which the replica adopts so digests keep
   * agreeing. One native call asks the peers in turn (those whose coordination entries show
   * `ts` executed first), installs each shipment as it lands and publishes every longer
   * prefix installed (one that falls short of `ts` is still a longer prefix; the next peer is
   * asked). `onPrefix` hears the prefix adopted. Resolves with what the replica reports:
   * `micros`, the whole catch-up as the replica pays it (the choice of peers, the way into and
   * out of the native call, whose first-run costs `rehearse` paid at start), and
   * `nativeMicros`, the transfer alone, from the first request going out to the covering
   * shipment installed. Rejects when no peer shipped a covering prefix in time.
   */
  async run(ts: bigint, why: string, from: Prefix, onPrefix: (p: Prefix) => void): Promise<Transferred> {
    const started = performance.now();
    const timeoutMs = this.opts.timeoutMs ?? 30_000;
    const perPeerMs = this.opts.transferTimeoutMs ?? 2000;
    const got = this.transfer.catchUpSync(ts, from.lastTs, why, timeoutMs, perPeerMs, SYNC_BUDGET_MICROS) ?? (await this.transfer.finishCatchUp());
    this.transfers++;
    return this.adopt(got, from, started, onPrefix);
  }

  /**
   * Goes into and out of a catch-up once, shipping nothing: `onPrefix` is handed the replica's
   * own prefix `at` back, which changes nothing. A replica calls it at start with the
   * `onPrefix` its catch-ups use, so that the first real one finds this code compiled and its
   * result's shape built (they cost a lagger's first catch-up 25-30 µs otherwise).
   */
  rehearse(at: Prefix, onPrefix: (p: Prefix) => void): Transferred {
    const started = performance.now();
    return this.adopt(this.transfer.rehearseCatchUp(at.lastTs, at.applied, at.digest), at, started, onPrefix);
  }

  private adopt(got: CaughtUpShipment, from: Prefix, started: number, onPrefix: (p: Prefix) => void): Transferred {
    onPrefix({ lastTs: got.upTo, applied: got.applied, digest: got.digest });
    const micros = Math.round((performance.now() - started) * 1000);
    return { from: got.from, since: from.lastTs, ts: got.upTo, objects: got.objects, bytes: got.bytes, micros, nativeMicros: Math.round(got.micros) };
  }
}
