// A client of a node: submits transactions over the node's socket and awaits final outcomes,
// optionally taking a pre-executor's outcome first as an optimistic reply.
import { encodeTxBytes, fitsTxBytes, type Transaction } from './app/tx.js';
import type { NodeToClient } from './pipeline/messages.js';
import type { OptimisticReply, Reply } from './pipeline/node.js';
import { CLIENT_ROLE } from './pipeline/server.js';
import { connect, type Conn } from './wire.js';

export type { OptimisticReply, Reply };

/** The two answers to one transaction (Fast-SSMR's optimistic and final replies). */
export interface Submission {
  /**
   * A pre-executor's outcome, before ordering is final: it may turn out wrong. Resolves with
   * null if the final reply came first (no pre-executor answered in time, or a duplicate).
   */
  optimistic: Promise<OptimisticReply | null>;
  /**
   * The primary's outcome, final. Its `optimistic` field says whether the optimistic reply,
   * if one was given, was the same (`confirmed`) or not (`wrong`); `none` if none was given.
   */
  final: Promise<Reply & { optimistic: NonNullable<Reply['optimistic']> }>;
}

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  onOptimistic?: (o: OptimisticReply) => void;
  /** What was sent, kept to resend it to another node after a failover. */
  msg: { t: 'submit'; id: number; tx: Uint8Array | Transaction; optimistic?: true };
  /** When it was last sent (ms, monotonic). */
  sent: number;
}

/** Where a node accepts clients: its Unix socket, or its TCP endpoint (`--listen`). */
export type Endpoint = { path: string } | { host: string; port: number };

export interface FailoverOptions {
  /** The nodes of one cluster (replicated primaries following the same log), tried in turn. */
  endpoints: readonly Endpoint[];
  secret: Buffer;
  /** How long to keep trying the endpoints after a connection is lost before failing what is pending (default 10 s). */
  giveUpMs?: number;
  /**
   * A node that holds a transaction this long without answering is taken for cut off (a node
   * partitioned from the log's engine keeps its clients but can order nothing): the client
   * fails over (default 5 s).
   */
  replyTimeoutMs?: number;
  /** Told of each failover, e.g. for a log line. */
  onFailover?: (to: Endpoint, resent: number) => void;
}

const RETRY_MS = 50;

export class RemoraClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private conn: Conn;
  private closed = false;
  /** Index in `failover.endpoints` of the node connected to. */
  private at = 0;
  private watchdog: NodeJS.Timeout | null = null;

  private constructor(
    conn: Conn,
    private readonly failover: FailoverOptions | null,
  ) {
    this.conn = conn;
    this.attach(conn);
    if (failover) {
      const limit = failover.replyTimeoutMs ?? 5000;
      this.watchdog = setInterval(() => this.checkStalled(limit), Math.max(10, limit / 4));
      this.watchdog.unref();
    }
  }

  /** Pending entries are in the order sent, so the first is the one waiting longest. */
  private checkStalled(limit: number): void {
    const oldest = this.pending.values().next();
    if (oldest.done || performance.now() - oldest.value.sent < limit) return;
    this.conn.fail(new Error(`no reply within ${limit} ms`));
  }

  private attach(conn: Conn): void {
    conn.onMessage((m) => this.answer(m as NodeToClient));
    conn.onClose((err) => {
      if (this.closed || conn !== this.conn) return;
      if (this.failover) {
        void this.failOver(err);
        return;
      }
      this.failAll(new Error(`connection to the node closed${err ? `: ${err.message}` : ''}`));
    });
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  /**
   * Connects over the node's Unix socket (`path`) or its TCP endpoint (`host`, `port`); or,
   * given `endpoints`, to the first that answers, failing over to the next when the connection
   * is lost and resending every transaction not yet answered. Resending is safe: the log
   * deduplicates by digest, and a node answers a duplicate with the first outcome.
   */
  static async connect(
    opts: ({ path: string } | { host: string; port: number } | Omit<FailoverOptions, 'secret'>) & { secret: Buffer },
  ): Promise<RemoraClient> {
    if (!('endpoints' in opts)) {
      const where = 'path' in opts ? { path: opts.path } : { host: opts.host, port: opts.port };
      return new RemoraClient(await connect({ ...where, secret: opts.secret, role: CLIENT_ROLE }), null);
    }
    if (opts.endpoints.length === 0) throw new Error('connect: endpoints is empty');
    const failover: FailoverOptions = { ...opts };
    const { conn, at } = await dialAny(failover, 0, Date.now() + (opts.giveUpMs ?? 10_000));
    const client = new RemoraClient(conn, failover);
    client.at = at;
    return client;
  }

  /** The endpoint connected to now, with failover (null without: it is the one given). */
  get endpoint(): Endpoint | null {
    return this.failover?.endpoints[this.at] ?? null;
  }

  private async failOver(err: Error | undefined): Promise<void> {
    const failover = this.failover;
    if (!failover) return;
    let next;
    try {
      next = await dialAny(failover, this.at + 1, Date.now() + (failover.giveUpMs ?? 10_000));
    } catch (e) {
      const why = err ? `: ${err.message}` : '';
      this.failAll(new Error(`connection to the node closed${why}, and no other node answered: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    if (this.closed) {
      next.conn.close();
      return;
    }
    this.conn = next.conn;
    this.at = next.at;
    this.attach(next.conn);
    const now = performance.now();
    for (const p of this.pending.values()) {
      p.sent = now;
      next.conn.send(p.msg);
    }
    const to = failover.endpoints[next.at];
    if (to) failover.onFailover?.(to, this.pending.size);
  }

  /** Resolves with the final outcome; rejects with the node's message if it refused the transaction. */
  submit(tx: Transaction | Uint8Array): Promise<Reply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const msg = { t: 'submit' as const, id, tx: wireTx(tx) };
      this.pending.set(id, { resolve, reject, msg, sent: performance.now() });
      this.conn.send(msg);
    });
  }

  /** Submits and asks for an optimistic reply too; see `Submission`. */
  submitOptimistic(tx: Transaction | Uint8Array): Submission {
    const id = this.nextId++;
    let early: ((o: OptimisticReply | null) => void) | undefined;
    const optimistic = new Promise<OptimisticReply | null>((resolve) => (early = resolve));
    const final = new Promise<Reply>((resolve, reject) => {
      const msg = { t: 'submit' as const, id, tx: wireTx(tx), optimistic: true as const };
      this.pending.set(id, {
        msg,
        sent: performance.now(),
        resolve: (r) => {
          early?.(null);
          resolve(r);
        },
        reject: (e) => {
          early?.(null);
          reject(e);
        },
        onOptimistic: (o) => early?.(o),
      });
      this.conn.send(msg);
    });
    return { optimistic, final: final.then((r) => ({ ...r, optimistic: r.optimistic ?? 'none' })) };
  }

  private answer(m: NodeToClient): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.t === 'optimistic') {
      p.onOptimistic?.({ outcome: m.outcome, from: m.from });
      return;
    }
    this.pending.delete(m.id);
    if (m.t === 'reply') {
      p.resolve({
        ts: m.ts,
        duplicate: m.duplicate,
        outcome: m.outcome,
        decision: m.decision,
        ...(m.optimistic !== undefined && { optimistic: m.optimistic }),
      });
    } else p.reject(new Error(m.error));
  }

  close(): void {
    this.closed = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.conn.close();
  }
}

/** The first endpoint from `from` on (round the list) that completes a handshake, retrying until `deadline`. */
async function dialAny(f: FailoverOptions, from: number, deadline: number): Promise<{ conn: Conn; at: number }> {
  let last: unknown = null;
  for (let k = 0; ; k++) {
    const at = (from + k) % f.endpoints.length;
    const e = f.endpoints[at];
    if (!e) throw new Error('connect: endpoints is empty');
    try {
      return { conn: await connect({ ...e, secret: f.secret, role: CLIENT_ROLE }), at };
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) throw last instanceof Error ? last : new Error(String(last));
    // A whole round refused: the nodes may be restarting, so wait a little before the next.
    if (at === (from + f.endpoints.length - 1) % f.endpoints.length) await new Promise((r) => setTimeout(r, RETRY_MS));
  }
}

/**
 * A transaction as the node reads it fastest: its `tx.v1` bytes (docs/binary-layouts.md),
 * which the node logs and hands to pre-executors as they are. Load generators may encode
 * ahead of time and pass the bytes.
 */
function wireTx(tx: Transaction | Uint8Array): Uint8Array | Transaction {
  // A malformed one goes as it is: the node's admission says what is wrong with it.
  return tx instanceof Uint8Array ? tx : fitsTxBytes(tx) ? encodeTxBytes(tx) : tx;
}
