// The embedded sequencer: the durable log, group-committed, delivering in timestamp order.
import { Buffer } from 'node:buffer';
import { decode } from '../app/codec.js';
import { decodeTx, type DecodedTx } from '../app/tx.js';
import { asError } from '../errors.js';
import { SequencerLog } from '../log.js';
import { stages } from '../stages.js';
import { writeDigest } from './records.js';
import type { Flight } from './in-flight.js';

/** A transaction with its place in the order. */
export interface Sequenced {
  ts: bigint;
  tx: DecodedTx;
  /** The node's entry for it (in-flight.ts), when delivered as the node admitted it: no lookup by digest. */
  flight?: Flight | undefined;
}

export interface Accepted {
  ts: bigint;
  /** The digest was sequenced before: `ts` is the first one, and it is not delivered again. */
  duplicate: boolean;
}

/**
 * Orders transactions. `submit` resolves once the transaction is durable; `subscribe` delivers
 * every transaction after `afterTs` exactly once, in timestamp order, one batch at a time (the
 * next batch waits for `deliver` to finish).
 */
export interface Sequencer {
  submit(tx: DecodedTx): Promise<Accepted>;
  /** `onError`: delivery stopped for good because `deliver` (or reading the log) failed. */
  subscribe(afterTs: bigint, deliver: (batch: Sequenced[]) => Promise<void> | void, onError?: (e: unknown) => void): void;
  /**
   * Resolves with the last timestamp once everything the log held when `subscribe` was called
   * is delivered: a node that restarted is complete from then on.
   */
  caughtUp(): Promise<bigint>;
  /**
   * What a sequencer of the same kind, opened anew, needs to resume delivery after `ts` (the
   * end of a batch it delivered), kept in a checkpoint beside the state at `ts`; null if it no
   * longer remembers that point. Empty where the log alone suffices (the embedded one).
   */
  resumePoint(ts: bigint): Uint8Array | null;
  close(): Promise<void>;
}

/**
 * A submission waiting for its place in the log, answered by a call instead of a promise: the
 * node submits thousands a second, and a promise each (with its reactions and jobs) is work
 * for the collector that one object is not. Neither method may throw.
 */
export interface SequencingTicket {
  readonly tx: DecodedTx;
  /** Carried to the subscriber with the transaction (`Sequenced.flight`). */
  readonly flight?: Flight | undefined;
  /** Its place in the order (`duplicate`: as `Accepted` says), given apart: no object per transaction. */
  accepted(ts: bigint, duplicate: boolean): void;
  failed(e: unknown): void;
}

/** A ticket whose answer settles a promise: what `submit` hands the log. */
class PromisedTicket implements SequencingTicket {
  constructor(
    readonly tx: DecodedTx,
    private readonly resolve: (a: Accepted) => void,
    readonly failed: (e: unknown) => void,
  ) {}

  accepted(ts: bigint, duplicate: boolean): void {
    this.resolve({ ts, duplicate });
  }
}

const READ_BATCH = 1024;
/** Most transactions per append: under load the log writes one chunk while the next is built. */
const CHUNK = 8192;
/**
 * Appends in flight at most. The log writes them in the order they were made, on a thread of
 * its own, and what queues while it syncs goes into its next write: more in flight costs no
 * extra syncs.
 */
const IN_FLIGHT = 8;

export class EmbeddedSequencer implements Sequencer {
  private readonly log: SequencerLog;
  private pending: SequencingTicket[] = [];
  private inFlight = 0;
  /** Settles once every append made so far is handled, in the order they were made. */
  private handled: Promise<void> = Promise.resolve();
  /** Appended entries not yet delivered, in order; anything older is re-read from the log. */
  private live: Sequenced[] = [];
  private delivered = 0n;
  private deliver: ((batch: Sequenced[]) => Promise<void> | void) | null = null;
  private onDeliveryError: (e: unknown) => void = (e) => console.error(`sequencer: delivery stopped: ${e instanceof Error ? e.message : String(e)}`);
  private deliveryFailed = false;
  private pumping: Promise<void> | null = null;
  private failure: unknown = null;
  private closed = false;
  /** Appends made to the log, of one chunk at most each; appends that queue while the log syncs share its next write and sync. */
  appends = 0;

  /**
   * The newest timestamp whose append this thread has handled (or the log held when opened).
   * Delivery goes up to it, not to the log's own last timestamp: the log's writer thread
   * moves that on before the append's results reach this thread, and delivering up to it
   * would read back from the file every entry `live` is about to hold.
   */
  private handledTs: bigint;

  constructor(dir: string, opts: { dedupWindow?: number } = {}) {
    this.log = SequencerLog.open(dir, opts.dedupWindow === undefined ? {} : { dedupWindow: opts.dedupWindow });
    this.handledTs = this.log.lastTs();
  }

  get lastTs(): bigint {
    return this.log.lastTs();
  }

  /** Resolves when this transaction and every one submitted with it is durable. */
  submit(tx: DecodedTx): Promise<Accepted> {
    if (this.closed) return Promise.reject(new Error('sequencer is closed'));
    if (this.failure !== null) return Promise.reject(asError(this.failure));
    return new Promise((resolve, reject) => this.enqueue(new PromisedTicket(tx, resolve, reject)));
  }

  /**
   * As `submit`, answering `ticket` once `ticket.tx` is durable (or failed). A refusal is
   * answered on a later microtask, as `submit`'s rejected promise would be. With `hold`, the
   * ticket waits for the next `appendHeld` (or append): a batch of submissions goes out in one
   * append, not as its first transaction alone and then the rest.
   */
  enqueue(ticket: SequencingTicket, hold = false): void {
    if (this.closed || this.failure !== null) {
      const e = this.closed ? new Error('sequencer is closed') : asError(this.failure);
      queueMicrotask(() => ticket.failed(e));
      return;
    }
    this.pending.push(ticket);
    if (!hold) this.startAppends();
  }

  /** Starts the append of what `enqueue` held, if none is running (it then goes with the next). */
  appendHeld(): void {
    this.startAppends();
  }

  /**
   * Group commit: everything submitted while an append runs goes into the next one. Once a
   * full chunk waits, it goes out before the running append is durable, so the log writes and
   * syncs one while this thread builds the next and resolves the last.
   */
  private startAppends(): void {
    while (this.failure === null && this.pending.length > 0 && (this.inFlight === 0 || (this.inFlight < IN_FLIGHT && this.pending.length >= CHUNK))) {
      const batch = this.pending.length <= CHUNK ? this.pending : this.pending.splice(0, CHUNK);
      if (batch === this.pending) this.pending = [];
      this.inFlight++;
      this.appends++;
      let appended: ReturnType<SequencerLog['appendFlat']>;
      try {
        appended = stages.time('sequencing', () => this.appendBatch(batch));
      } catch (e) {
        appended = Promise.reject(asError(e));
      }
      this.handled = this.finishAppend(batch, appended, this.handled);
    }
  }

  private appendBatch(batch: readonly SequencingTicket[]): ReturnType<SequencerLog['appendFlat']> {
    // Digests as bytes: copied where they came as bytes (forwarded), decoded from hex otherwise.
    const digests = Buffer.allocUnsafe(32 * batch.length);
    const ends = new Uint32Array(batch.length);
    let end = 0;
    batch.forEach(({ tx }, i) => {
      if (tx.copyDigest?.(digests, 32 * i) !== true) writeDigest(digests, 32 * i, tx.digest);
      end += tx.bytes.length;
      ends[i] = end;
    });
    const bytes = Buffer.allocUnsafe(end);
    batch.forEach((p, i) => bytes.set(p.tx.bytes, i === 0 ? 0 : ends[i - 1]));
    return this.log.appendFlat(digests, bytes, ends);
  }

  /** Resolves `batch` once it is durable and every earlier append is handled; never rejects. */
  private async finishAppend(batch: readonly SequencingTicket[], appended: ReturnType<SequencerLog['appendFlat']>, previous: Promise<void>): Promise<void> {
    let results: Awaited<typeof appended> | null = null;
    let error: unknown = null;
    try {
      results = await appended;
    } catch (e) {
      error = e;
    }
    await previous;
    this.inFlight--;
    try {
      if (results === null) throw error;
      const done = results;
      // New entries' timestamps rise through the batch and a duplicate's is an earlier one,
      // so the newest is the last new entry's: found without reading every timestamp.
      for (let i = done.duplicate.length - 1; i >= 0; i--) {
        if (done.duplicate[i] === 1) continue;
        const ts = done.ts[i];
        if (ts !== undefined && ts > this.handledTs) this.handledTs = ts;
        break;
      }
      // The next append goes out before this batch's submitters hear back.
      this.startAppends();
      // Only a subscriber takes entries out of `live`; without one, a later subscriber reads
      // them from the log, and holding them here would grow without bound.
      const keep = this.deliver !== null && !this.deliveryFailed;
      stages.time('sequencing', () =>
        batch.forEach((p, i) => {
          const ts = done.ts[i];
          if (ts === undefined) throw new Error('sequencer log returned fewer results than transactions');
          const duplicate = done.duplicate[i] === 1;
          if (keep && !duplicate) this.live.push({ ts, tx: p.tx, flight: p.flight });
          p.accepted(ts, duplicate);
        }),
      );
      this.pump();
    } catch (e) {
      // The log refuses appends after a failed write or sync; so do we, loudly. Appends
      // already in flight resolve if they were written (they are durable) and reject if not.
      this.failure ??= e;
      for (const p of [...batch, ...this.pending]) p.failed(e);
      this.pending = [];
    }
  }

  subscribe(afterTs: bigint, deliver: (batch: Sequenced[]) => Promise<void> | void, onError?: (e: unknown) => void): void {
    if (this.deliver) throw new Error('sequencer already has a subscriber');
    this.deliver = deliver;
    this.caughtUpTo = this.log.lastTs();
    if (onError) this.onDeliveryError = onError;
    this.delivered = afterTs;
    this.pump();
  }

  private pump(): void {
    if (!this.deliver || this.pumping || this.deliveryFailed) return;
    this.pumping = this.pumpLoop().then(
      () => {
        this.pumping = null;
        if (!this.closed && this.delivered < this.handledTs) this.pump();
      },
      (e: unknown) => {
        // The same batch would fail the same way again: delivery stops, and says so once.
        this.pumping = null;
        this.deliveryFailed = true;
        this.onDeliveryError(e);
        for (const w of this.caughtUpWaiters.splice(0)) w();
      },
    );
  }

  private caughtUpTo = 0n;

  caughtUp(): Promise<bigint> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.delivered >= this.caughtUpTo) resolve(this.caughtUpTo);
        else if (this.deliveryFailed || this.closed) reject(new Error('sequencer stopped delivering before catching up'));
        else this.caughtUpWaiters.push(check);
      };
      check();
    });
  }

  private caughtUpWaiters: (() => void)[] = [];

  /** The log holds every timestamp, so resuming needs nothing more than `ts` itself. */
  resumePoint(): Uint8Array {
    return new Uint8Array(0);
  }

  private async pumpLoop(): Promise<void> {
    const deliver = this.deliver;
    if (!deliver) return;
    while (!this.closed && this.delivered < this.handledTs) {
      while (this.live.length > 0 && (this.live[0]?.ts ?? 0n) <= this.delivered) this.live.shift();
      let batch: Sequenced[];
      if (this.live[0]?.ts === this.delivered + 1n) {
        batch = this.live;
        this.live = [];
      } else {
        // Replay after a restart, or a subscriber that started behind: read the log.
        const entries = await this.log.readBatch(this.delivered + 1n, READ_BATCH);
        batch = entries.map((e) => ({ ts: e.ts, tx: decodeLogged(e.bytes, e.ts) }));
      }
      if (batch.length === 0) return;
      await deliver(batch);
      this.delivered = batch[batch.length - 1]?.ts ?? this.delivered;
      const waiters = this.caughtUpWaiters;
      this.caughtUpWaiters = [];
      for (const w of waiters) w();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    // Handling an append can start the next one (submits made before close still go out).
    while (this.inFlight > 0) await this.handled;
    await this.pumping;
    this.log.close();
  }
}

function decodeLogged(bytes: Uint8Array, ts: bigint): DecodedTx {
  try {
    // Logs written before transactions were logged as `tx.v1` hold a msgpack map instead,
    // whose first byte can never be the layout byte 1.
    return decodeTx(bytes[0] === 1 ? bytes : decode(bytes));
  } catch (e) {
    // Only admitted transactions are logged, so this is damage or a version mismatch.
    throw new Error(`sequencer log entry ${ts} does not decode: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Every transaction a (closed) log holds, in order: for audits and the reference executor. */
export async function readSequence(dir: string): Promise<Sequenced[]> {
  const log = SequencerLog.open(dir);
  try {
    const out: Sequenced[] = [];
    for (;;) {
      const batch = await log.readBatch(BigInt(out.length + 1), READ_BATCH);
      if (batch.length === 0) return out;
      for (const e of batch) out.push({ ts: e.ts, tx: decodeLogged(e.bytes, e.ts) });
    }
  } finally {
    log.close();
  }
}
