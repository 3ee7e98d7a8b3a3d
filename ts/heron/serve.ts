// Heron's launcher serves clients as a pipeline node does: the client role and its credential
// (derived from the cluster secret, so no client can open the replica role), the same submit
// messages, replies and per-client limits (pipeline/server.ts), on the launcher's socket and,
// if asked, over TCP. The launcher's answers are final; with pre-execution on, the outcome in
// the table a pool member returned goes first as the optimistic reply.
import { encode } from '../app/codec.js';
import type { Outcome } from '../app/exec.js';
import type { Transaction } from '../app/tx.js';
import type { OptimisticReply, Reply } from '../pipeline/node.js';
import { CLIENT_LIMITS, CLIENT_ROLE, serveClient, type ClientSubmitter, type ServeStats } from '../pipeline/server.js';
import { clientCredential } from '../secret.js';
import type { HostPort } from '../transport.js';
import { listen, type Conn, type Server } from '../wire.js';
import type { HeronReply } from './cluster.js';

/** Whom an optimistic reply names: the launcher's pool (the member is not told to clients). */
export const OPTIMISTIC_FROM = 'heron-launcher';

/** What the launcher does with a client's transaction. */
export type HeronSubmit = (tx: Transaction | Uint8Array, onOptimistic?: (outcome: Outcome) => void) => Promise<HeronReply>;

/** The cluster as the pipeline's client serving sees it: replies in the pipeline's shape. */
export function heronSubmitter(submit: HeronSubmit): ClientSubmitter {
  return {
    submit: async (raw: unknown, onOptimistic?: (o: OptimisticReply) => void): Promise<Reply> => {
      let sent: string | null = null;
      const early = onOptimistic
        ? (outcome: Outcome) => {
            sent = encode(outcome).toString('hex');
            onOptimistic({ outcome, from: OPTIMISTIC_FROM });
          }
        : undefined;
      // Admission (in `submit`) checks whatever the client sent.
      const r = await submit(raw as Transaction | Uint8Array, early);
      const reply: Reply = { ts: r.ts, duplicate: r.duplicate === true, outcome: r.outcome, decision: r.decision };
      if (onOptimistic) reply.optimistic = sent === null ? 'none' : sent === encode(r.outcome).toString('hex') ? 'confirmed' : 'wrong';
      return reply;
    },
  };
}

/** The launcher's client side: which connections it serves, and its TCP listener if any. */
export class HeronClients {
  readonly stats: ServeStats = { requests: 0, paused: 0, cutOff: 0 };
  private readonly submitter: ClientSubmitter;
  private serving = false;
  private tcp: Server | null = null;

  constructor(
    submit: HeronSubmit,
    private readonly log: (m: string) => void,
  ) {
    this.submitter = heronSubmitter(submit);
  }

  /** The credential of the client role, on any of the launcher's listeners. */
  static credential(secret: Buffer): Buffer {
    return clientCredential(secret);
  }

  static isClient(role: string): boolean {
    return role === CLIENT_ROLE;
  }

  /**
   * Serves one client connection. Until the cluster has started (every replica said hello, an
   * earlier run's log replayed), there is no order to put a transaction in: it is turned away.
   */
  accept(conn: Conn): void {
    if (!this.serving) {
      this.log(`heron: client at ${conn.peer}: the cluster is not serving clients (starting or closed); closing the connection`);
      conn.close();
      return;
    }
    serveClient(this.submitter, conn, this.log, CLIENT_LIMITS, this.stats);
  }

  /** Starts serving clients, also over TCP at `tcp` if given (port 0: any free one). */
  async open(secret: Buffer, tcp?: HostPort): Promise<void> {
    if (tcp) {
      const client = HeronClients.credential(secret);
      this.tcp = await listen({
        ...tcp,
        log: this.log,
        // Clients only: replicas are on the launcher's host, and use its Unix socket.
        secretFor: (role) => (role === CLIENT_ROLE ? client : undefined),
        onConnection: (conn) => this.accept(conn),
      });
    }
    this.serving = true;
  }

  /** `host:port` of the TCP listener, if there is one. */
  get tcpAddress(): string | null {
    return this.tcp?.address ?? null;
  }

  /** Stops taking clients; the connections of those taken close with the launcher's socket. */
  async close(): Promise<void> {
    this.serving = false;
    const tcp = this.tcp;
    this.tcp = null;
    await tcp?.close();
  }
}
