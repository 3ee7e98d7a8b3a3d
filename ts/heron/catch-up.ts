// State transfer's lagger side (Heron, Algorithm 3): a replica that lags asks peers of its
// partition in turn for every object updated after its last applied timestamp, until one
// ships a prefix covering the transaction it could not execute.
import type { NativeCoordinator, NativeTransfer } from '../binding.js';
import type { FromReplica } from './messages.js';
import { PHASE_EXECUTED } from './phases.js';

/** What the replica reports once caught up (`transferred`), less who it is. */
export type Transferred = Omit<Extract<FromReplica, { t: 'transferred' }>, 't' | 'partition' | 'replica'>;

/** What a replica applied: the state transfer ships and installs one of these. */
export interface Prefix {
  lastTs: bigint;
  applied: number;
  digest: string;
}

export interface CatchUpOptions {
  partition: number;
  replicas: number;
  replica: number;
  /** Give up (the replica fails) after this long without a covering shipment (default 30 s). */
  timeoutMs?: number;
  /** How long to wait for one peer's shipment before asking the next (default 2 s). */
  transferTimeoutMs?: number;
}

const nowMicros = (): number => Number(process.hrtime.bigint() / 1000n);

export class CatchUp {
  /** State transfers received. */
  transfers = 0;

  constructor(
    private readonly transfer: NativeTransfer,
    private readonly coordinator: NativeCoordinator,
    private readonly opts: CatchUpOptions,
  ) {}

  /**
   * Brings the store, holding `from`, to a peer's prefix covering `ts`, and returns that
   * prefix (timestamp, applied count, digest), which the replica adopts so digests keep
   * agreeing. Each shipment is installed natively, chunk by chunk, before its wait resolves;
   * one that falls short of `ts` is still adopted (it is a longer prefix) and the next peer
   * is asked. `onPrefix` hears every prefix adopted, the last one included. Resolves with what
   * the replica reports; rejects when no peer shipped a covering prefix in time.
   */
  async run(ts: bigint, why: string, from: Prefix, onPrefix: (p: Prefix) => void): Promise<Transferred> {
    const since = from.lastTs;
    let at = from;
    const started = nowMicros();
    const timeoutMs = this.opts.timeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    const tried: string[] = [];
    let [objects, bytes] = [0, 0];
    while (Date.now() < deadline) {
      for (const server of this.servers(ts)) {
        let got: Awaited<ReturnType<NativeTransfer['receive']>>;
        try {
          const number = this.transfer.request(server, at.lastTs);
          got = await this.transfer.receive(server, number, this.opts.transferTimeoutMs ?? 2000);
        } catch (e) {
          tried.push(`${server}: ${e instanceof Error ? e.message : String(e)}`);
          continue;
        }
        if (got === null) {
          tried.push(`${server}: no shipment in time`);
          continue;
        }
        objects += got.objects;
        bytes += got.bytes;
        // Installed already: the store holds the server's state as of `upTo`, a prefix at
        // least as long as ours, even when it does not reach `ts` yet.
        if (got.upTo > at.lastTs) {
          at = { lastTs: got.upTo, applied: got.applied, digest: got.digest };
          this.transfer.publish(at.lastTs, at.applied, at.digest);
          onPrefix(at);
        }
        if (got.upTo < ts) {
          tried.push(`${server}: shipped only up to ${got.upTo}`);
          continue;
        }
        this.transfers++;
        return { from: server, since, ts: got.upTo, objects, bytes, micros: nowMicros() - started };
      }
    }
    throw new Error(`transaction ${ts}: lagging (${why}) and no peer shipped state within ${timeoutMs} ms (${tried.join('; ')})`);
  }

  /** Peers to ask, in order: those whose entry shows `ts` executed first, from our right. */
  private servers(ts: bigint): number[] {
    const { partition, replicas, replica } = this.opts;
    let entries: ReturnType<NativeCoordinator['entries']> = [];
    try {
      entries = this.coordinator.entries();
    } catch {
      // An entry stayed torn (its writer is descheduled mid-store): the order is only a hint.
    }
    const order = Array.from({ length: replicas - 1 }, (_, k) => (replica + 1 + k) % replicas);
    const done = (q: number) => {
      const e = entries[partition * replicas + q];
      return e !== undefined && (e.ts > ts || (e.ts === ts && e.phase >= PHASE_EXECUTED));
    };
    return [...order.filter(done), ...order.filter((q) => !done(q))];
  }
}
