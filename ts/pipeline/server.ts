// The node's side of the wire: clients submit, pre-executors attach and return results.
//
// Clients authenticate with the client credential, pre-executors and admission processes with
// the member credential (secret.ts), so no client can attach as either. Each client is held to
// a number of requests in flight and a number of reply bytes it has not read: past either, the
// node stops reading from it (backpressure), and a client whose unread replies still grow is
// cut off, so one client cannot take the node's memory or time from the others.
import { Buffer } from 'node:buffer';
import { TxError } from '../app/tx.js';
import { loadAppModule } from '../app/module.js';
import { clientCredential } from '../secret.js';
import type { HostPort, Transport } from '../transport.js';
import { stages } from '../stages.js';
import { listen, type Conn, type Server } from '../wire.js';
import { parseAdminMessage, parseClientMessage, ProtocolError, type NodeToAdmin, type NodeToClient, type SharedCheckpointInfo } from './messages.js';
import type { EmbeddedNode, OptimisticReply, Reply, SubmitDone } from './node.js';
import { attachMember } from './pool.js';
import { ADMISSION_ROLE } from './admission-frames.js';
import { attachAdmission } from './admission-link.js';
import { readSubmitFrame, SubmitFrame } from './client-frames.js';
import { replyFrame } from './reply-frames.js';
import type { NodeStatus } from './status.js';

export const PRE_EXECUTOR_ROLE = 'pre-executor:';
export const CLIENT_ROLE = 'client';
/** The operator's role (`remora upgrade`): holds the member credential, asks for upgrades. */
export const ADMIN_ROLE = 'admin';

export interface ServeOptions {
  /** The Unix socket in the cluster directory, for members on this host. */
  path: string;
  /** Also accept clients and pre-executors over TCP here (port 0: any free one). */
  tcp?: HostPort;
  /** The member credential; the client credential is derived from it. */
  secret: Buffer;
  log?: (msg: string) => void;
  /** Per-client limits (defaults in `CLIENT_LIMITS`). */
  clientLimits?: Partial<ClientLimits>;
  /** Called when a pre-executor attaches or leaves. */
  onPool?: (event: 'join' | 'leave', name: string) => void;
  /** The name of the primary's store in the cluster directory, for pre-executors that pull. */
  store?: string;
  /** How pulling pre-executors read that store (default `shm`), and where it is served (tcp, verbs). */
  storeTransport?: { transport: Transport; address: string | null };
  /** Where the node shares its newest checkpoint, told to members that ask (`admin` role). */
  sharedCheckpoint?: () => SharedCheckpointInfo | null;
  /** The node's status, answered to `{ t: 'status' }` on the admin role (`remora status`). */
  status?: () => NodeStatus;
}

export interface ClientLimits {
  /** Requests admitted and not yet answered, per client: past it, its socket is not read. */
  inFlight: number;
  /** Reply bytes queued for a client past which it is not read until it catches up. */
  pauseBytes: number;
  /** Reply bytes queued past which the client is disconnected. */
  maxUnreadBytes: number;
}

/** Above the high-water mark of Node's sockets (16 KiB on Node 20, 64 KiB on later ones). */
const MIN_PAUSE_BYTES = 64 * 1024;

export const CLIENT_LIMITS: ClientLimits = { inFlight: 4096, pauseBytes: 1 << 20, maxUnreadBytes: 16 << 20 };

/** What the listeners did with clients, for tests and metrics. */
export interface ServeStats {
  /** Requests read from clients. */
  requests: number;
  /** Times a client was paused (too many in flight, or replies unread). */
  paused: number;
  /** Clients cut off for not reading their replies. */
  cutOff: number;
}

/** The node's endpoints: `address` is the Unix socket, `tcpAddress` the TCP one if any. */
export interface NodeServer extends Server {
  readonly tcpAddress: string | null;
  readonly stats: ServeStats;
}

/** `CLIENT_LIMITS` with `given` over them, as a listener applies them. */
export function clientLimits(given: Partial<ClientLimits> | undefined): ClientLimits {
  const limits: ClientLimits = { ...CLIENT_LIMITS, ...given };
  // A paused client is resumed on 'drain', which a socket emits only after its queue passed
  // the high-water mark: a pause below the mark could never be lifted.
  limits.pauseBytes = Math.max(limits.pauseBytes, MIN_PAUSE_BYTES);
  return limits;
}

export async function serveNode(node: EmbeddedNode, opts: ServeOptions): Promise<NodeServer> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const limits = clientLimits(opts.clientLimits);
  const stats: ServeStats = { requests: 0, paused: 0, cutOff: 0 };
  const client = clientCredential(opts.secret);
  const secretFor = (role: string): Buffer | undefined =>
    role === CLIENT_ROLE ? client : role.startsWith(PRE_EXECUTOR_ROLE) || role.startsWith(ADMISSION_ROLE) || role === ADMIN_ROLE ? opts.secret : undefined;
  const onConnection = (conn: Conn) => {
    if (conn.role === CLIENT_ROLE) serveClient(node, conn, log, limits, stats);
    else if (conn.role.startsWith(PRE_EXECUTOR_ROLE)) attachPreExecutor(node, conn, log, opts);
    else if (conn.role.startsWith(ADMISSION_ROLE)) attachAdmission(node, conn, conn.role.slice(ADMISSION_ROLE.length) || conn.peer, log);
    else if (conn.role === ADMIN_ROLE) serveAdmin(node, conn, log, opts);
    else {
      log(`${conn.peer}: unknown role ${JSON.stringify(conn.role)}, closing`);
      conn.close();
    }
  };
  const unix = await listen({ path: opts.path, secretFor, log, onConnection });
  let tcp: Server | null = null;
  try {
    if (opts.tcp) tcp = await listen({ ...opts.tcp, secretFor, log, onConnection });
  } catch (e) {
    await unix.close();
    throw e;
  }
  return {
    address: unix.address,
    tcpAddress: tcp?.address ?? null,
    stats,
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

/** What serving clients needs of a node: Heron's launcher answers them too (heron/serve.ts). */
export interface ClientSubmitter {
  /** Admits `raw` (a `TxError` says why not) and resolves with its final reply. */
  submit(raw: unknown, onOptimistic?: (o: OptimisticReply) => void): Promise<Reply>;
  /**
   * As `submit`, calling `done` once, after it returns, with the error or the reply: what the
   * listener uses when there, as it spares a promise per request (`EmbeddedNode.submitWith`).
   */
  submitWith?(raw: unknown, done: SubmitDone, onOptimistic?: (o: OptimisticReply) => void): void;
  /**
   * As `submitWith` for `tx.v1` transactions read together, `done[i]` answering `txs[i]`:
   * one pass of admission for the batch (`EmbeddedNode.submitBatch`). The views in `txs` may
   * be of a read buffer: it copies what it keeps before returning.
   */
  submitBatch?(txs: readonly Uint8Array[], done: readonly SubmitDone[]): void;
}

/**
 * One client's connection: its submissions, parsed, go to `node`; replies come back in the
 * order they are ready, under `limits`.
 */
export function serveClient(node: ClientSubmitter, conn: Conn, log: (m: string) => void, limits: ClientLimits, stats: ServeStats): void {
  let inFlight = 0;
  let paused = false;
  const blocked = () => inFlight >= limits.inFlight || conn.buffered >= limits.pauseBytes;
  const reconsider = () => {
    if (blocked()) {
      if (!paused) stats.paused++;
      paused = true;
      conn.pause();
    } else if (paused) {
      paused = false;
      conn.resume();
    }
  };
  conn.onDrain(reconsider);
  conn.readWith(readSubmitFrame);
  /** Sends `m`, or the frame `replyFrame` wrote for it. */
  const reply = (m: NodeToClient | Buffer) => {
    const prev = stages.enter('replies');
    try {
      if (m instanceof Buffer) conn.sendFrame(m);
      else conn.send(m);
    } catch {
      return; // The client left before its answer: nothing to tell it.
    } finally {
      stages.leave(prev);
    }
    if (conn.buffered > limits.maxUnreadBytes) {
      stats.cutOff++;
      log(`client at ${conn.peer}: ${conn.buffered} bytes of replies unread; disconnecting it`);
      conn.fail(new Error(`over ${limits.maxUnreadBytes} bytes of replies unread`));
    }
  };
  const done = () => {
    inFlight--;
    reconsider();
  };
  // Submissions of one read, admitted together (`ClientSubmitter.submitBatch`).
  const submitBatch = node.submitBatch?.bind(node);
  let batchTxs: Uint8Array[] = [];
  let batchDone: SubmitDone[] = [];
  const admitBatch = () => {
    if (batchTxs.length === 0 || !submitBatch) return;
    const txs = batchTxs;
    const answers = batchDone;
    batchTxs = [];
    batchDone = [];
    try {
      // A read of one frame (a lone client's) takes the single path: one transaction gains
      // nothing from a batch's copy and call.
      const only = txs.length === 1 ? txs[0] : undefined;
      if (only !== undefined && node.submitWith) node.submitWith(Buffer.from(only), answers[0] as SubmitDone);
      else submitBatch(txs, answers);
    } catch (e) {
      // Each submission is answered apart, so this is the node's fault, not the client's:
      // the connection closes as for a broken protocol, and the node keeps serving the others.
      log(`client at ${conn.peer}: admitting a batch failed: ${e instanceof Error ? e.message : String(e)}; closing the connection`);
      conn.close();
    }
  };
  conn.onMessage(
    guard(conn, log, (raw) => {
      stats.requests++;
      // What the reader took is checked already; anything else is checked here.
      const m = raw instanceof SubmitFrame ? raw : parseClientMessage(raw);
      inFlight++;
      reconsider();
      const onOptimistic = m.optimistic ? (o: OptimisticReply) => reply({ t: 'optimistic', id: m.id, outcome: o.outcome, from: o.from }) : undefined;
      const answer = (e: unknown, r: Reply | null) => {
        if (r !== null) {
          const frame = r.optimistic === undefined ? replyFrame(m.id, r.ts, r.duplicate, r.outcome, r.decision) : undefined;
          if (frame !== undefined) reply(frame);
          else {
            // Spelled out, not spread: a literal of known shape.
            const out: NodeToClient = { t: 'reply', id: m.id, ts: r.ts, duplicate: r.duplicate, outcome: r.outcome, decision: r.decision };
            if (r.optimistic !== undefined) out.optimistic = r.optimistic;
            reply(out);
          }
        } else {
          if (!(e instanceof TxError)) log(`submit from ${conn.peer} failed: ${e instanceof Error ? e.message : String(e)}`);
          reply({ t: 'rejected', id: m.id, error: e instanceof Error ? e.message : String(e) });
        }
        done();
      };
      if (submitBatch && !onOptimistic && m.tx instanceof Uint8Array) {
        // Admitted with the rest of this read, once its frames are all taken.
        batchTxs.push(m.tx);
        batchDone.push(answer);
        if (batchTxs.length === 1) queueMicrotask(admitBatch);
        return;
      }
      // In the order sent: what this read batched goes first.
      admitBatch();
      const tx = m instanceof SubmitFrame ? m.ownTx() : m.tx;
      if (node.submitWith) node.submitWith(tx, answer, onOptimistic);
      else
        node.submit(tx, onOptimistic).then(
          (r) => answer(null, r),
          (e: unknown) => answer(e, null),
        );
    }),
  );
}

/** The operator asks for an upgrade; the answer says at which timestamp it became active. */
function serveAdmin(node: EmbeddedNode, conn: Conn, log: (m: string) => void, opts: ServeOptions): void {
  const answer = (m: NodeToAdmin) => {
    try {
      conn.send(m);
    } catch {
      // The operator left before the answer.
    }
  };
  conn.onMessage(
    guard(conn, log, (raw) => {
      const m = parseAdminMessage(raw);
      if (m.t === 'checkpoint') {
        answer({ t: 'checkpoint', at: opts.sharedCheckpoint?.() ?? null });
        return;
      }
      if (m.t === 'status') {
        answer(opts.status ? { t: 'status', status: opts.status() } : { t: 'failed', error: 'this node does not report its status' });
        return;
      }
      log(`admin at ${conn.peer}: upgrade to ${m.spec}`);
      loadAppModule(m.spec)
        .then((v) => node.upgrade(v).then((ts) => answer({ t: 'upgraded', ts, app: v.app.name, digest: v.digest })))
        .catch((e: unknown) => answer({ t: 'failed', error: e instanceof Error ? e.message : String(e) }));
    }),
  );
}

/**
 * A pre-executor joins the node's pool once its first message, `hello`, names the app it
 * loaded (pool.ts, `attachMember`): one running other code than the node's is refused with
 * both digests, and told why.
 */
function attachPreExecutor(node: EmbeddedNode, conn: Conn, log: (m: string) => void, opts: ServeOptions): void {
  if (node.stateUpdate === 'pull' && opts.store === undefined) {
    log(`${conn.peer}: this node cannot serve pulling pre-executors (no store name); closing`);
    conn.close();
    return;
  }
  const pull = node.stateUpdate === 'pull';
  const served = opts.storeTransport ?? { transport: 'shm', address: null };
  attachMember(node.pool, conn, conn.role.slice(PRE_EXECUTOR_ROLE.length) || conn.peer, {
    refuse: (name, app, digest) => node.refuseMember(name, app, digest),
    canonicalApp: (digest) => node.versions.all.find((v) => v.digest === digest)?.digest ?? digest,
    config: {
      t: 'config',
      stateUpdate: node.stateUpdate,
      store: pull ? (opts.store ?? null) : null,
      transport: served.transport,
      address: pull ? served.address : null,
      speculate: node.speculation,
    },
    log,
    ...(opts.onPool && { onPool: opts.onPool }),
  });
}

export { ProtocolError };
