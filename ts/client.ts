// A client of a node: submits transactions over the node's socket and awaits final outcomes.
import type { Transaction } from './app/tx.js';
import type { NodeToClient } from './pipeline/messages.js';
import type { Reply } from './pipeline/node.js';
import { CLIENT_ROLE } from './pipeline/server.js';
import { connect, type Conn } from './wire.js';

export class RemoraClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();

  private constructor(private readonly conn: Conn) {
    conn.onMessage((m) => this.answer(m as NodeToClient));
    conn.onClose((err) => {
      const e = new Error(`connection to the node closed${err ? `: ${err.message}` : ''}`);
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    });
  }

  static async connect(opts: { path: string; secret: Buffer }): Promise<RemoraClient> {
    return new RemoraClient(await connect({ path: opts.path, secret: opts.secret, role: CLIENT_ROLE }));
  }

  /** Resolves with the final outcome; rejects with the node's message if it refused the transaction. */
  submit(tx: Transaction): Promise<Reply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.conn.send({ t: 'submit', id, tx });
    });
  }

  private answer(m: NodeToClient): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (m.t === 'reply') p.resolve({ ts: m.ts, duplicate: m.duplicate, outcome: m.outcome, decision: m.decision });
    else p.reject(new Error(m.error));
  }

  close(): void {
    this.conn.close();
  }
}
