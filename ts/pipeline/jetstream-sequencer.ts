// The replicated sequencer: NATS JetStream as the log (docs/sequencer.md).
//
// Many transactions ride in one stream message; their order is (stream sequence, index in the
// message). Every node reads the whole stream and assigns timestamps itself: a dense counter
// over the transactions it delivers, skipping any whose digest was delivered within the last
// `dedupWindow` timestamps. Because that rule looks only at the stream and at timestamps,
// every node, and every restart from a resume point, decides the same.
import { randomBytes } from 'node:crypto';
import { DeliverPolicy, jetstream, type ConsumerMessages, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { DecodedTx } from '../app/tx.js';
import { decodeMessage, decodeResumePoint, encodeMessage, encodeResumePoint, MESSAGE_HEADER, TX_HEADER } from './jetstream-layout.js';
import { ensureStream, managerOf, message, TRANSIENT } from './jetstream-stream.js';
import type { Accepted, Sequenced, Sequencer } from './sequencer.js';

export { decodeMessage } from './jetstream-layout.js';

export interface JetStreamSequencerOptions {
  /** NATS URLs of the cluster: all of them (servers with `no_advertise`, as docs/deployment.md has it, name no others). */
  servers: string[];
  /** Stream name (default `REMORA`); its one subject is `<stream>.log`. */
  stream?: string;
  /** Replicas of the stream when this call creates it (default 3). */
  replicas?: number;
  /** Most transactions in one message (default 1000). */
  batchMax?: number;
  /** Publishes awaiting their ack at once (default 8). */
  inFlight?: number;
  /** A digest delivered within this many timestamps is a duplicate (default 1,000,000). Same on every node. */
  dedupWindow?: number;
  /** `resumePoint(ts)` of a sequencer on the same stream: `subscribe(ts, ...)` then resumes after `ts`. */
  resume?: Uint8Array;
  /** Prefix of this instance's message ids and its connection name (a random suffix keeps instances apart). */
  name?: string;
  /** How long one message may be retried before its submits are rejected (default 60 s). */
  publishTimeoutMs?: number;
  /** The engine's client token (`authorization { token }` in the servers' config), if it asks for one. */
  token?: string;
  log?: (m: string) => void;
}

/** Publish/subscribe beside the log, on the same connection: traffic that needs no order. */
export interface SideChannel {
  publish(bytes: Uint8Array): void;
  onMessage(handler: (bytes: Uint8Array) => void): void;
}

/** Largest message this sequencer writes: under the server's default max_payload with room for headers. */
const MESSAGE_BYTES = (1 << 20) - 4096;
const BATCH_ENDS_KEPT = 1024;
const ACK_TIMEOUT_MS = 5_000;
/** Messages the consumer buffers ahead of delivery (each at most 1 MiB). */
const CONSUMER_MAX_MESSAGES = 32;
/** Pull requests expire, and heartbeats come, quickly: a dead server is noticed in seconds. */
const CONSUMER_EXPIRES_MS = 5_000;
const CONSUMER_HEARTBEAT_MS = 1_000;
/** Seconds without progress, while the stream holds more, before the consumer is replaced. */
const STALL_TICKS = 3;

interface Pending {
  tx: DecodedTx;
  resolve: (a: Accepted) => void;
  reject: (e: unknown) => void;
}

/** One message this instance publishes, until its submits are settled. */
interface Outgoing {
  id: string;
  payload: Buffer;
  pending: Pending[];
  /** Stream sequence JetStream acknowledged it at. */
  ackSeq: number | null;
  /** Each transaction's outcome once delivered here. */
  results: Accepted[] | null;
  settled: boolean;
}

interface BatchEnd {
  ts: number;
  seq: number;
  /** Transactions of the message at `seq` consumed up to this batch end. */
  index: number;
}

export class JetStreamSequencer implements Sequencer {
  private readonly subject: string;
  private readonly batchMax: number;
  private readonly inFlight: number;
  private readonly window: number;
  private readonly publishTimeoutMs: number;
  private readonly log: (m: string) => void;
  private readonly instance: string;
  private readonly messageBytes: number;
  private counter = 0;

  private queue: Pending[] = [];
  private publishing = 0;
  private publishScheduled = false;
  private readonly outgoing = new Map<string, Outgoing>();
  private readonly bySeq = new Map<number, Outgoing>();
  private settledWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];

  // Delivery state: what the node decided up to `processedSeq`.
  private ts = 0;
  private processedSeq = 0;
  /** Transactions of message `processedSeq + 1` already consumed (a resume point mid-message). */
  private skip = 0;
  private readonly firstTs = new Map<string, number>();
  /** Digests by timestamp from `histBase`: the window, plus what the remembered batch ends need. */
  private hist: string[] = [];
  private histHead = 0;
  private histBase = 1;
  private batchEnds: BatchEnd[] = [];
  private readonly resumeTs: number | null;

  private subscribed = false;
  /** Ends the current consumer session (a new one starts from `processedSeq + 1`). */
  private endSession: ((why: string) => void) | null = null;
  private inProcess = false;
  private consumer: ConsumerMessages | null = null;
  private delivering: Promise<void> | null = null;
  private deliveryFailed = false;
  private caughtUpSeq: Promise<number> | null = null;
  private progressWaiters: (() => void)[] = [];
  private closed = false;
  private closing: Promise<void> | null = null;
  /** Messages published, and transactions in them: the group commit's batch is their ratio. */
  messages = 0;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    opts: JetStreamSequencerOptions,
  ) {
    this.subject = `${stream}.log`;
    this.batchMax = opts.batchMax ?? 1000;
    this.inFlight = opts.inFlight ?? 8;
    this.window = opts.dedupWindow ?? 1_000_000;
    this.publishTimeoutMs = opts.publishTimeoutMs ?? 60_000;
    this.log = opts.log ?? (() => undefined);
    this.instance = `${opts.name ?? 'remora'}-${randomBytes(8).toString('hex')}`;
    this.messageBytes = Math.min(MESSAGE_BYTES, nc.info?.max_payload ? nc.info.max_payload - 4096 : MESSAGE_BYTES);
    if (opts.resume === undefined) {
      this.resumeTs = null;
    } else {
      const r = decodeResumePoint(opts.resume, this.window);
      this.resumeTs = r.ts;
      this.ts = r.ts;
      this.processedSeq = r.seq - 1;
      this.skip = r.index;
      this.histBase = r.ts - r.digests.length + 1;
      r.digests.forEach((d, i) => this.firstTs.set(d, this.histBase + i));
      this.hist = r.digests;
      this.batchEnds.push({ ts: r.ts, seq: r.seq, index: r.index });
    }
  }

  /** Connects, creates the stream if it is absent (same configuration: no change) and checks it if present. */
  static async open(opts: JetStreamSequencerOptions): Promise<JetStreamSequencer> {
    checkOptions(opts);
    const stream = opts.stream ?? 'REMORA';
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: opts.servers,
        name: opts.name ?? 'remora-sequencer',
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        ...(opts.token !== undefined && { token: opts.token }),
      });
    } catch (e) {
      throw new Error(`JetStream sequencer: cannot connect to ${opts.servers.join(', ')}: ${message(e)}`);
    }
    try {
      const js = jetstream(nc);
      const jsm = await managerOf(nc);
      await ensureStream(jsm, stream, opts.replicas ?? 3);
      return new JetStreamSequencer(nc, js, jsm, stream, opts);
    } catch (e) {
      await nc.close();
      throw e;
    }
  }

  /**
   * Publish/subscribe on `<stream>.<name>`, outside the log: what replicated primaries tell
   * each other (agreement digests). Messages from any publisher may arrive; check them.
   */
  channel(name: string): SideChannel {
    const subject = `${this.stream}.${name}`;
    return {
      publish: (bytes) => {
        if (!this.nc.isClosed()) this.nc.publish(subject, bytes);
      },
      onMessage: (handler) => {
        this.nc.subscribe(subject, {
          callback: (err, msg) => {
            if (err === null) handler(msg.data);
          },
        });
      },
    };
  }

  /** Newest timestamp delivered here. */
  get lastTs(): bigint {
    return BigInt(this.ts);
  }

  /**
   * Resolves once the message holding `tx` is acknowledged by JetStream (stored and synced on
   * a majority) and delivered by this instance's own subscription, which alone knows its
   * timestamp: without `subscribe`, submits never resolve.
   */
  submit(tx: DecodedTx): Promise<Accepted> {
    if (this.closed) return Promise.reject(new Error('sequencer is closed'));
    if (TX_HEADER + tx.bytes.length + MESSAGE_HEADER > this.messageBytes) {
      return Promise.reject(new Error(`transaction of ${tx.bytes.length} bytes does not fit a JetStream message of ${this.messageBytes}`));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ tx, resolve, reject });
      this.schedulePublish();
    });
  }

  private schedulePublish(): void {
    if (this.publishScheduled) return;
    this.publishScheduled = true;
    // Everything submitted in this turn of the event loop goes out together.
    setImmediate(() => {
      this.publishScheduled = false;
      this.publishMore();
    });
  }

  private publishMore(): void {
    while (this.queue.length > 0 && this.publishing < this.inFlight) {
      const out = this.nextMessage();
      this.publishing++;
      void this.publishOne(out).finally(() => {
        this.publishing--;
        this.publishMore();
        if (this.publishing === 0 && this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
    }
  }

  /** Packs queued transactions into one message: up to `batchMax` of them and `messageBytes`. */
  private nextMessage(): Outgoing {
    let n = 0;
    let bytes = MESSAGE_HEADER;
    for (const p of this.queue) {
      const size = TX_HEADER + p.tx.bytes.length;
      if (n === this.batchMax || (n > 0 && bytes + size > this.messageBytes)) break;
      bytes += size;
      n++;
    }
    const pending = this.queue.splice(0, n);
    const payload = encodeMessage(
      pending.map((p) => p.tx),
      bytes,
    );
    const out: Outgoing = { id: `${this.instance}-${++this.counter}`, payload, pending, ackSeq: null, results: null, settled: false };
    this.outgoing.set(out.id, out);
    this.messages++;
    return out;
  }

  /** Publishes until acknowledged, retrying under the same message id so JetStream keeps one copy. */
  private async publishOne(out: Outgoing): Promise<void> {
    const deadline = Date.now() + this.publishTimeoutMs;
    let backoff = 50;
    for (let attempt = 1; ; attempt++) {
      try {
        const ack = await this.js.publish(this.subject, out.payload, {
          msgID: out.id,
          timeout: Math.max(100, Math.min(ACK_TIMEOUT_MS, deadline - Date.now())),
        });
        if (ack.stream !== this.stream) throw new Error(`acknowledged by stream ${ack.stream}, not ${this.stream}`);
        out.ackSeq = ack.seq;
        if (out.results !== null) this.settle(out, null);
        else if (ack.seq <= this.processedSeq) this.settle(out, collision(out, ack.seq));
        else this.bySeq.set(ack.seq, out);
        return;
      } catch (e) {
        if (out.settled) return;
        if (out.results !== null) {
          // Delivered here, so it is in the stream: only its ack was lost.
          this.settle(out, null);
          return;
        }
        if (this.nc.isClosed() || Date.now() + backoff > deadline) {
          this.settle(
            out,
            new Error(
              `JetStream did not acknowledge message ${out.id} (${out.pending.length} transactions) after ${attempt} attempts: ${message(e)}; ` +
                'its transactions may or may not be in the log, and resubmitting them is safe',
            ),
          );
          return;
        }
        if (attempt === 1) this.log(`JetStream sequencer: publish of ${out.id} failed (${message(e)}), retrying`);
        await new Promise((resolve) => setTimeout(resolve, backoff));
        backoff = Math.min(1000, backoff * 2);
      }
    }
  }

  private settle(out: Outgoing, error: Error | null): void {
    if (out.settled) return;
    out.settled = true;
    this.outgoing.delete(out.id);
    if (out.ackSeq !== null) this.bySeq.delete(out.ackSeq);
    const results = out.results;
    if (error === null && results !== null && results.length === out.pending.length) out.pending.forEach((p, i) => p.resolve(results[i] as Accepted));
    else
      for (const p of out.pending)
        p.reject(error ?? new Error(`message ${out.id} was delivered with ${results?.length ?? 0} outcomes for ${out.pending.length} transactions`));
    if (this.outgoing.size === 0) for (const w of this.settledWaiters.splice(0)) w();
  }

  subscribe(afterTs: bigint, deliver: (batch: Sequenced[]) => Promise<void> | void, onError?: (e: unknown) => void): void {
    if (this.subscribed) throw new Error('sequencer already has a subscriber');
    if (this.closed) throw new Error('sequencer is closed');
    if (afterTs !== BigInt(this.resumeTs ?? 0)) {
      throw new Error(
        this.resumeTs === null
          ? `JetStream sequencer: subscribing after ts ${afterTs} needs that point's resume point (open with { resume: resumePoint(${afterTs}) })`
          : `JetStream sequencer: opened to resume after ts ${this.resumeTs}, asked to subscribe after ts ${afterTs}`,
      );
    }
    this.subscribed = true;
    void this.watchConnection();
    const fail = onError ?? ((e: unknown) => console.error(`sequencer: delivery stopped: ${message(e)}`));
    this.caughtUpSeq = this.jsm.streams.info(this.stream).then((i) => i.state.last_seq);
    // caughtUp() reports a failure to learn the stream's end; this keeps it from being unhandled meanwhile.
    this.caughtUpSeq.catch(() => undefined);
    this.delivering = this.deliverLoop(deliver).then(
      () => this.wakeProgress(),
      (e: unknown) => {
        this.deliveryFailed = true;
        this.wakeProgress();
        // close() no longer waits for deliveries that will not come.
        for (const w of this.settledWaiters.splice(0)) w();
        if (!this.closed) fail(e);
      },
    );
  }

  /**
   * Reads the stream from `processedSeq + 1` through an ordered consumer, in sessions: when the
   * consumer stops hearing from its server (its server died, say), the session ends and a new
   * consumer starts where processing stands, rather than waiting for the client's own recovery.
   */
  private async deliverLoop(deliver: (batch: Sequenced[]) => Promise<void> | void): Promise<void> {
    let failures = 0;
    while (!this.closed) {
      let messages: ConsumerMessages;
      try {
        const consumer = await this.js.consumers.get(this.stream, {
          filter_subjects: this.subject,
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: this.processedSeq + 1,
        });
        messages = await consumer.consume({ max_messages: CONSUMER_MAX_MESSAGES, expires: CONSUMER_EXPIRES_MS, idle_heartbeat: CONSUMER_HEARTBEAT_MS });
      } catch (e) {
        // During a failover the stream may not answer for a few seconds; anything else is for good.
        if (!TRANSIENT.test(message(e)) || ++failures > 60) throw new Error(`JetStream sequencer: cannot read stream ${this.stream}: ${message(e)}`);
        this.log(`JetStream sequencer: reading stream ${this.stream} from ${this.processedSeq + 1} failed (${message(e)}), retrying`);
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * 2 ** failures)));
        continue;
      }
      failures = 0;
      this.consumer = messages;
      let stalled: string | null = null;
      this.endSession = (why) => {
        stalled ??= why;
        void messages.close();
      };
      void this.watch(messages);
      const watchdog = this.watchdog();
      try {
        if (this.closed) break;
        for await (const m of messages) {
          if (this.closed || stalled !== null) break;
          this.inProcess = true;
          await this.process(m.seq, m.data, m.headers?.get('Nats-Msg-Id') ?? '', deliver);
          this.inProcess = false;
        }
      } finally {
        clearInterval(watchdog);
        this.endSession = null;
        await messages.close();
      }
      if (stalled !== null) this.log(`JetStream sequencer: ${String(stalled)}; reading stream ${this.stream} again from ${this.processedSeq + 1}`);
      else if (!this.closed) throw new Error(`JetStream sequencer: the consumer of stream ${this.stream} ended (was the stream deleted?)`);
    }
  }

  /** Reports what the consumer goes through, and ends the session once heartbeats stop coming. */
  private async watch(messages: ConsumerMessages): Promise<void> {
    for await (const s of messages.status()) {
      if (s.type === 'next' || s.type === 'heartbeat' || s.type === 'debug' || s.type === 'flow_control' || s.type === 'discard') continue;
      this.log(`JetStream sequencer: consumer ${JSON.stringify(s)}`);
      if (s.type === 'heartbeats_missed') this.endSession?.('consumer heartbeats missed');
    }
  }

  /** After a reconnect the consumer may have lived on the server that went away: start a new one. */
  private async watchConnection(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === 'reconnect') this.endSession?.(`reconnected to ${s.server}`);
    }
  }

  /**
   * Ends a session that makes no progress while the stream holds more: however the consumer got
   * stuck (a client recovery that never finishes, say), reading resumes within seconds.
   */
  private watchdog(): NodeJS.Timeout {
    let seen = this.processedSeq;
    let idleTicks = 0;
    let asking = false;
    const timer = setInterval(() => {
      if (this.inProcess || this.processedSeq !== seen || asking) {
        seen = this.processedSeq;
        idleTicks = 0;
        return;
      }
      asking = true;
      this.jsm.streams
        .info(this.stream)
        .then((i) => {
          idleTicks = i.state.last_seq > this.processedSeq && this.processedSeq === seen ? idleTicks + 1 : 0;
          if (idleTicks >= STALL_TICKS) this.endSession?.(`no progress for ${STALL_TICKS} s while the stream holds up to ${i.state.last_seq}`);
        })
        .catch(() => undefined)
        .finally(() => (asking = false));
    }, 1000);
    timer.unref();
    return timer;
  }

  /** Decides timestamps for one message, delivers them, then settles this instance's submits in it. */
  private async process(seq: number, data: Uint8Array, msgId: string, deliver: (batch: Sequenced[]) => Promise<void> | void): Promise<void> {
    if (seq !== this.processedSeq + 1) {
      throw new Error(
        `JetStream stream ${this.stream} jumped from sequence ${this.processedSeq} to ${seq}: messages were removed, so timestamps can no longer be decided as other nodes did`,
      );
    }
    const payload = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const own = this.outgoing.get(msgId);
    // Our own message, byte for byte: its transactions were decoded when they were admitted here.
    const mine = own !== undefined && own.payload.equals(payload) ? own : null;
    const { digests, txs } = mine ? { digests: mine.pending.map((p) => p.tx.digest), txs: mine.pending.map((p) => p.tx) } : decodeMessage(payload, seq);
    if (this.skip > digests.length) throw new Error(`resume point is at transaction ${this.skip} of stream message ${seq}, which holds ${digests.length}`);
    const results: Accepted[] = [];
    const batch: Sequenced[] = [];
    for (let i = this.skip; i < digests.length; i++) {
      const digest = digests[i] ?? '';
      const first = this.firstTs.get(digest);
      if (first !== undefined) {
        results.push({ ts: BigInt(first), duplicate: true });
        continue;
      }
      const ts = ++this.ts;
      this.firstTs.set(digest, ts);
      this.hist.push(digest);
      if (ts > this.window) {
        const old = this.digestAt(ts - this.window);
        if (old !== undefined && this.firstTs.get(old) === ts - this.window) this.firstTs.delete(old);
      }
      const tx = txs[i];
      if (tx === undefined) throw new Error(`stream message ${seq} lost transaction ${i}`);
      batch.push({ ts: BigInt(ts), tx });
      results.push({ ts: BigInt(ts), duplicate: false });
    }
    // Remembered before delivery: a checkpoint taken as the batch is applied asks for it.
    if (batch.length > 0) this.rememberBatchEnd({ ts: this.ts, seq, index: digests.length });
    if (batch.length > 0) await deliver(batch);
    this.skip = 0;
    this.processedSeq = seq;
    if (mine) {
      mine.results = results;
      if (mine.ackSeq !== null) this.settle(mine, null);
    }
    const acked = this.bySeq.get(seq);
    if (acked !== undefined && acked !== mine) this.settle(acked, collision(acked, seq));
    this.wakeProgress();
  }

  private digestAt(ts: number): string | undefined {
    return this.hist[this.histHead + ts - this.histBase];
  }

  private rememberBatchEnd(end: BatchEnd): void {
    this.batchEnds.push(end);
    if (this.batchEnds.length > BATCH_ENDS_KEPT * 2) this.batchEnds = this.batchEnds.slice(-BATCH_ENDS_KEPT);
    const oldest = this.batchEnds.length > BATCH_ENDS_KEPT ? this.batchEnds[this.batchEnds.length - BATCH_ENDS_KEPT] : this.batchEnds[0];
    // Keep the digests the window needs now and those the oldest remembered batch end needs.
    const floor = Math.min(oldest?.ts ?? this.ts, this.ts) - this.window + 1;
    const drop = floor - this.histBase;
    if (drop > 0) {
      this.histHead += drop;
      this.histBase += drop;
      if (this.histHead > 65_536 && this.histHead * 2 > this.hist.length) {
        this.hist = this.hist.slice(this.histHead);
        this.histHead = 0;
      }
    }
  }

  private wakeProgress(): void {
    for (const w of this.progressWaiters.splice(0)) w();
  }

  caughtUp(): Promise<bigint> {
    const target = this.caughtUpSeq;
    if (target === null) return Promise.reject(new Error('JetStream sequencer: caughtUp() before subscribe()'));
    return this.deliveredThrough(target);
  }

  /** Resolves with the last timestamp once everything the stream holds now is delivered here. */
  caughtUpNow(): Promise<bigint> {
    if (this.caughtUpSeq === null) return Promise.reject(new Error('JetStream sequencer: caughtUpNow() before subscribe()'));
    return this.deliveredThrough(this.jsm.streams.info(this.stream).then((i) => i.state.last_seq));
  }

  private deliveredThrough(target: Promise<number>): Promise<bigint> {
    return target.then(
      (seq) =>
        new Promise<bigint>((resolve, reject) => {
          const check = (): void => {
            if (this.processedSeq >= seq) resolve(BigInt(this.ts));
            else if (this.deliveryFailed || this.closed) reject(new Error('sequencer stopped delivering before catching up'));
            else this.progressWaiters.push(check);
          };
          check();
        }),
      (e: unknown) => {
        throw new Error(`JetStream sequencer: cannot read the end of stream ${this.stream}: ${message(e)}`);
      },
    );
  }

  resumePoint(ts: bigint): Uint8Array | null {
    const t = Number(ts);
    const end = this.batchEnds.find((b) => b.ts === t);
    const keep = Math.min(t, this.window);
    const from = t - keep + 1;
    if (end === undefined || from < this.histBase) return null;
    return encodeResumePoint({ seq: end.seq, index: end.index, ts: t }, keep, (i) => this.digestAt(from + i) ?? '');
  }

  /** Waits for published messages to be acknowledged and, while delivery runs, delivered; then disconnects. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    // Queued submits still go out and in-flight ones get their acks: close drains rather than drops.
    this.publishMore();
    await new Promise<void>((resolve) => {
      if (this.publishing === 0 && this.queue.length === 0) resolve();
      else this.idleWaiters.push(resolve);
    });
    // Acked messages settle their submits once delivered here, if delivery runs; bounded.
    if (this.subscribed && !this.deliveryFailed && this.outgoing.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.settledWaiters.push(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, this.publishTimeoutMs))),
      ]);
      clearTimeout(timer);
    }
    this.closed = true;
    await this.consumer?.close();
    await this.delivering;
    for (const out of [...this.outgoing.values()]) {
      this.settle(
        out,
        new Error(`sequencer closed before message ${out.id} was delivered here: its transactions may be in the log, and resubmitting them is safe`),
      );
    }
    for (const p of this.queue.splice(0)) p.reject(new Error('sequencer is closed'));
    await this.nc.close();
  }
}

function collision(out: Outgoing, seq: number): Error {
  return new Error(
    `JetStream stream holds another message at sequence ${seq} under message id ${out.id}; its transactions are not in the log, and resubmitting them is safe`,
  );
}

function checkOptions(o: JetStreamSequencerOptions): void {
  if (!Array.isArray(o.servers) || o.servers.length === 0) throw new Error('JetStream sequencer: servers must list at least one NATS URL');
  const count = (name: string, v: number | undefined, min: number, max: number) => {
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max))
      throw new Error(`JetStream sequencer: ${name} must be an integer in ${min}..${max}, got ${v}`);
  };
  count('replicas', o.replicas, 1, 5);
  count('batchMax', o.batchMax, 1, 100_000);
  count('inFlight', o.inFlight, 1, 1024);
  count('dedupWindow', o.dedupWindow, 1, 100_000_000);
  count('publishTimeoutMs', o.publishTimeoutMs, 1, 3_600_000);
  if (o.stream !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(o.stream))
    throw new Error(`JetStream sequencer: stream name must be 1-64 of A-Z a-z 0-9 _ -, got ${JSON.stringify(o.stream)}`);
}
