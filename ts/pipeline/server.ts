// The node's side of the wire: clients submit, pre-executors attach and return results.
import { TxError } from '../app/tx.js';
import { listen, type Conn, type Server } from '../wire.js';
import { parseClientMessage, parsePreMessage, ProtocolError, type NodeToClient, type NodeToPre } from './messages.js';
import type { EmbeddedNode, PreExecutorLink } from './node.js';

export const PRE_EXECUTOR_ROLE = 'pre-executor:';
export const CLIENT_ROLE = 'client';

export interface ServeOptions {
  path: string;
  secret: Buffer;
  log?: (msg: string) => void;
  /** Called when a pre-executor attaches or leaves. */
  onPool?: (event: 'join' | 'leave', name: string) => void;
}

export function serveNode(node: EmbeddedNode, opts: ServeOptions): Promise<Server> {
  const log = opts.log ?? ((m: string) => console.error(m));
  return listen({
    path: opts.path,
    secret: opts.secret,
    log,
    onConnection: (conn) => {
      if (conn.role === CLIENT_ROLE) serveClient(node, conn, log);
      else if (conn.role.startsWith(PRE_EXECUTOR_ROLE)) attachPreExecutor(node, conn, log, opts.onPool);
      else {
        log(`${conn.peer}: unknown role ${JSON.stringify(conn.role)}, closing`);
        conn.close();
      }
    },
  });
}

/** Closes a connection whose peer broke the protocol; everyone else keeps being served. */
function guard(conn: Conn, log: (m: string) => void, handle: (m: unknown) => void): (m: unknown) => void {
  return (m) => {
    try {
      handle(m);
    } catch (e) {
      log(`${conn.role} at ${conn.peer}: ${e instanceof Error ? e.message : String(e)}; closing the connection`);
      conn.close();
    }
  };
}

function serveClient(node: EmbeddedNode, conn: Conn, log: (m: string) => void): void {
  const reply = (m: NodeToClient) => {
    try {
      conn.send(m);
    } catch {
      // The client left before its answer: nothing to tell it.
    }
  };
  conn.onMessage(
    guard(conn, log, (raw) => {
      const m = parseClientMessage(raw);
      node.submit(m.tx).then(
        (r) => reply({ t: 'reply', id: m.id, ...r }),
        (e: unknown) => {
          if (!(e instanceof TxError)) log(`submit from ${conn.peer} failed: ${e instanceof Error ? e.message : String(e)}`);
          reply({ t: 'rejected', id: m.id, error: e instanceof Error ? e.message : String(e) });
        },
      );
    }),
  );
}

function attachPreExecutor(
  node: EmbeddedNode,
  conn: Conn,
  log: (m: string) => void,
  onPool?: (event: 'join' | 'leave', name: string) => void,
): void {
  const name = conn.role.slice(PRE_EXECUTOR_ROLE.length) || conn.peer;
  const send = (m: NodeToPre) => {
    try {
      conn.send(m);
    } catch {
      // Closing: the node detaches this link on close, and the deadline covers what it owed.
    }
  };
  const link: PreExecutorLink = {
    name,
    send: (txs) => send({ t: 'exec', txs: txs.map((tx) => ({ body: tx.body, auth: tx.auth })) }),
    sendEffects: (effects) => send({ t: 'effects', effects: [...effects] }),
  };
  try {
    node.addPreExecutor(link);
  } catch (e) {
    log(`${conn.peer}: ${e instanceof Error ? e.message : String(e)}; closing`);
    conn.close();
    return;
  }
  onPool?.('join', name);
  conn.onMessage(
    guard(conn, log, (raw) => {
      const m = parsePreMessage(raw);
      for (const [digest, table] of m.results) node.result(name, digest, table);
    }),
  );
  conn.onClose(() => {
    node.removePreExecutor(name);
    onPool?.('leave', name);
  });
}

export { ProtocolError };
