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
}

export class RemoraClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  private constructor(private readonly conn: Conn) {
    conn.onMessage((m) => this.answer(m as NodeToClient));
    conn.onClose((err) => {
      const e = new Error(`connection to the node closed${err ? `: ${err.message}` : ''}`);
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    });
  }

  /** Connects over the node's Unix socket (`path`) or its TCP endpoint (`host`, `port`). */
  static async connect(opts: { path: string; secret: Buffer } | { host: string; port: number; secret: Buffer }): Promise<RemoraClient> {
    const where = 'path' in opts ? { path: opts.path } : { host: opts.host, port: opts.port };
    return new RemoraClient(await connect({ ...where, secret: opts.secret, role: CLIENT_ROLE }));
  }

  /** Resolves with the final outcome; rejects with the node's message if it refused the transaction. */
  submit(tx: Transaction | Uint8Array): Promise<Reply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.conn.send({ t: 'submit', id, tx: wireTx(tx) });
    });
  }

  /** Submits and asks for an optimistic reply too; see `Submission`. */
  submitOptimistic(tx: Transaction | Uint8Array): Submission {
    const id = this.nextId++;
    let early: ((o: OptimisticReply | null) => void) | undefined;
    const optimistic = new Promise<OptimisticReply | null>((resolve) => (early = resolve));
    const final = new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, {
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
      this.conn.send({ t: 'submit', id, tx: wireTx(tx), optimistic: true });
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
    this.conn.close();
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
