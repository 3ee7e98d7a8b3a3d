// The node's side of the wire: clients submit, pre-executors attach and return results.
import { TxError } from '../app/tx.js';
import type { HostPort, Transport } from '../transport.js';
import { listen, type Conn, type Server } from '../wire.js';
import { parseClientMessage, parsePreMessage, ProtocolError, type NodeToClient, type NodeToPre } from './messages.js';
import type { EmbeddedNode, OptimisticReply, PreExecutorLink } from './node.js';

export const PRE_EXECUTOR_ROLE = 'pre-executor:';
export const CLIENT_ROLE = 'client';

export interface ServeOptions {
  /** The Unix socket in the cluster directory, for members on this host. */
  path: string;
  /** Also accept clients and pre-executors over TCP here (port 0: any free one). */
  tcp?: HostPort;
  secret: Buffer;
  log?: (msg: string) => void;
  /** Called when a pre-executor attaches or leaves. */
  onPool?: (event: 'join' | 'leave', name: string) => void;
  /** The name of the primary's store in the cluster directory, for pre-executors that pull. */
  store?: string;
  /** How pulling pre-executors read that store (default `shm`), and where it is served (tcp, verbs). */
  storeTransport?: { transport: Transport; address: string | null };
}

/** The node's endpoints: `address` is the Unix socket, `tcpAddress` the TCP one if any. */
export interface NodeServer extends Server {
  readonly tcpAddress: string | null;
}

export async function serveNode(node: EmbeddedNode, opts: ServeOptions): Promise<NodeServer> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const onConnection = (conn: Conn) => {
    if (conn.role === CLIENT_ROLE) serveClient(node, conn, log);
    else if (conn.role.startsWith(PRE_EXECUTOR_ROLE)) attachPreExecutor(node, conn, log, opts);
    else {
      log(`${conn.peer}: unknown role ${JSON.stringify(conn.role)}, closing`);
      conn.close();
    }
  };
  const unix = await listen({ path: opts.path, secret: opts.secret, log, onConnection });
  let tcp: Server | null = null;
  try {
    if (opts.tcp) tcp = await listen({ ...opts.tcp, secret: opts.secret, log, onConnection });
  } catch (e) {
    await unix.close();
    throw e;
  }
  return {
    address: unix.address,
    tcpAddress: tcp?.address ?? null,
    close: async () => {
      await Promise.all([unix.close(), tcp?.close()]);
    },
  };
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
      const onOptimistic = m.optimistic
        ? (o: OptimisticReply) => reply({ t: 'optimistic', id: m.id, outcome: o.outcome, from: o.from })
        : undefined;
      node.submit(m.tx, onOptimistic).then(
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
  opts: ServeOptions,
): void {
  if (node.stateUpdate === 'pull' && opts.store === undefined) {
    log(`${conn.peer}: this node cannot serve pulling pre-executors (no store name); closing`);
    conn.close();
    return;
  }
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
    sendObjects: (objects) => send({ t: 'objects', objects: [...objects] }),
    sendFeedback: (feedback) => send({ t: 'feedback', feedback }),
  };
  try {
    node.addPreExecutor(link);
  } catch (e) {
    log(`${conn.peer}: ${e instanceof Error ? e.message : String(e)}; closing`);
    conn.close();
    return;
  }
  const pull = node.stateUpdate === 'pull';
  const served = opts.storeTransport ?? { transport: 'shm', address: null };
  send({
    t: 'config',
    stateUpdate: node.stateUpdate,
    store: pull ? (opts.store ?? null) : null,
    transport: served.transport,
    address: pull ? served.address : null,
    speculate: node.speculation,
  });
  opts.onPool?.('join', name);
  conn.onMessage(
    guard(conn, log, (raw) => {
      const m = parsePreMessage(raw);
      for (const [digest, table] of m.results) node.result(name, digest, table);
    }),
  );
  conn.onClose(() => {
    node.removePreExecutor(name);
    opts.onPool?.('leave', name);
  });
}

export { ProtocolError };
