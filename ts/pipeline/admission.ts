// An admission process (docs/pipeline.md, "Admission processes"): it serves clients as the
// node does (the same handshake, frames, limits and replies), checks what they submit against
// the app, and forwards what passes to the node in batches. The node hands those on without
// checking them again and answers each; the answers go back to the clients from here. As many
// run as the clients need, so a client's framing, checks and reply cost the node nothing.
import { Buffer } from 'node:buffer';
import { admitEach, admitTx } from '../app/admit.js';
import type { App } from '../app/app.js';
import type { LoadedApp } from '../app/module.js';
import { TxError, type DecodedTx } from '../app/tx.js';
import { asError } from '../errors.js';
import { flatFrame, readFlatMap } from '../flat-frames.js';
import { clientCredential } from '../secret.js';
import { stages } from '../stages.js';
import type { HostPort } from '../transport.js';
import { connect, listen, type Conn, type Server } from '../wire.js';
import { ADMISSION_ROLE, admitMessage, forwardedBytes, MAX_FORWARDED, MESSAGE_BYTES, parseNodeToAdmission, readAnswers } from './admission-frames.js';
import type { OptimisticReply, Reply, SubmitDone } from './node.js';
import { CLIENT_ROLE, clientLimits, serveClient, type ClientLimits, type ClientSubmitter, type ServeStats } from './server.js';

/**
 * Checks and forwards for the clients served here; `submitBatch` is what the listener calls.
 * Each forwarded transaction waits, under its number, for the node's answer.
 */
export class AdmissionFront implements ClientSubmitter {
  private next = 0;
  private readonly waiting = new Map<number, SubmitDone>();
  private queued: DecodedTx[] = [];
  private queuedDone: SubmitDone[] = [];
  private lostWith: Error | null = null;
  /** Transactions sent to the node, submissions refused by the checks here, answers the node gave. */
  forwarded = 0;
  refused = 0;
  answered = 0;

  constructor(
    private readonly app: App,
    private readonly node: Pick<Conn, 'sendFrame'>,
  ) {}

  /** Forwarded and not yet answered. */
  get inFlight(): number {
    return this.waiting.size + this.queued.length;
  }

  submit(raw: unknown, onOptimistic?: (o: OptimisticReply) => void): Promise<Reply> {
    return new Promise((resolve, reject) => this.submitWith(raw, (e, r) => (e === null ? resolve(r as Reply) : reject(e)), onOptimistic));
  }

  submitWith(raw: unknown, done: SubmitDone, onOptimistic?: (o: OptimisticReply) => void): void {
    const prev = stages.enter('admission');
    try {
      // The pre-executor's outcome reaches the node alone: such a client submits there.
      if (onOptimistic) throw new TxError('optimistic replies are not served by an admission process: submit to the node');
      this.forward(admitTx(this.app, raw), done);
    } catch (e) {
      this.refused++;
      const error = asError(e);
      queueMicrotask(() => done(error, null));
    } finally {
      stages.leave(prev);
    }
  }

  submitBatch(txs: readonly Uint8Array[], done: readonly SubmitDone[]): void {
    const prev = stages.enter('admission');
    try {
      let forwarded = 0;
      admitEach(this.app, txs, done, (tx, d) => {
        forwarded++;
        this.forward(tx, d);
      });
      this.refused += txs.length - forwarded;
    } finally {
      stages.leave(prev);
    }
  }

  private forward(tx: DecodedTx, done: SubmitDone): void {
    const lost = this.lostWith;
    if (lost !== null) {
      queueMicrotask(() => done(lost, null));
      return;
    }
    this.queued.push(tx);
    this.queuedDone.push(done);
    if (this.queued.length === 1) queueMicrotask(this.flush);
  }

  /** What this turn admitted goes to the node together. */
  private readonly flush = (): void => {
    const txs = this.queued;
    const done = this.queuedDone;
    this.queued = [];
    this.queuedDone = [];
    for (let from = 0; from < txs.length;) {
      let to = from;
      let bytes = 0;
      while (to < txs.length && to - from < MAX_FORWARDED && (to === from || bytes < MESSAGE_BYTES)) bytes += forwardedBytes(txs[to++] as DecodedTx);
      const chunk = txs.slice(from, to);
      const first = this.next;
      this.next = (this.next + chunk.length) >>> 0;
      this.forwarded += chunk.length;
      chunk.forEach((_, i) => this.waiting.set((first + i) >>> 0, done[from + i] as SubmitDone));
      from = to;
      try {
        this.node.sendFrame(flatFrame(admitMessage(first, chunk)));
      } catch (e) {
        this.lost(asError(e));
        return;
      }
    }
  };

  /** An `answers.v1` buffer from the node. */
  answers(b: Buffer): void {
    const prev = stages.enter('replies');
    try {
      readAnswers(b, (a) => {
        const done = this.waiting.get(a.id);
        if (done === undefined) return;
        this.waiting.delete(a.id);
        this.answered++;
        if ('reply' in a) done(null, a.reply);
        else done(a.txError ? new TxError(a.error) : new Error(a.error), null);
      });
    } finally {
      stages.leave(prev);
    }
  }

  /** The node is gone: whatever waits for it is answered with `reason`, and nothing more is taken. */
  lost(reason: Error): void {
    this.lostWith ??= new Error(`the node's connection was lost: ${reason.message}`);
    const waiting = [...this.waiting.values(), ...this.queuedDone];
    this.waiting.clear();
    this.queued = [];
    this.queuedDone = [];
    const error = this.lostWith;
    for (const done of waiting) done(error, null);
  }
}

export interface AdmissionOptions {
  /** The node: its Unix socket, or its `--listen` address. */
  node: { path: string } | HostPort;
  /** The member credential (the client credential is derived from it). */
  secret: Buffer;
  name: string;
  /** The app, as loaded with the node's `--app`. */
  app: LoadedApp;
  /** Where clients connect: a Unix socket, and TCP too if given. */
  path: string;
  tcp?: HostPort;
  clientLimits?: Partial<ClientLimits>;
  log?: (m: string) => void;
  /** How long to wait for the node's answer to the hello (default 10 s). */
  joinTimeoutMs?: number;
}

export interface AdmissionProcess {
  readonly address: string;
  readonly tcpAddress: string | null;
  readonly stats: ServeStats;
  readonly front: AdmissionFront;
  /** Resolves with why it stopped serving, once the node's connection ends. */
  readonly ended: Promise<Error>;
  close(): Promise<void>;
}

/** Joins the node as `admission:<name>`, then serves clients; rejects if the node refuses it. */
export async function runAdmission(opts: AdmissionOptions): Promise<AdmissionProcess> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const conn = await connect({ ...opts.node, role: `${ADMISSION_ROLE}${opts.name}`, secret: opts.secret, log });
  const front = new AdmissionFront(opts.app.app, conn);
  let ended!: (e: Error) => void;
  const endedP = new Promise<Error>((resolve) => (ended = resolve));
  let welcomed!: (refusal: string | null) => void;
  const joined = new Promise<string | null>((resolve) => (welcomed = resolve));
  conn.onClose((e) => {
    const reason = e ?? new Error('the node closed the connection');
    welcomed(`the node closed the connection: ${reason.message}`);
    front.lost(reason);
    ended(reason);
  });
  conn.readWith(readFlatMap);
  conn.onMessage((raw) => {
    try {
      const m = parseNodeToAdmission(raw);
      if (m.t === 'answers') front.answers(m.answers);
      else if (m.t === 'welcome') welcomed(null);
      else {
        log(`admission ${opts.name}: the node refused it: ${m.reason}`);
        welcomed(m.reason);
      }
    } catch (e) {
      log(`admission ${opts.name}: from the node: ${asError(e).message}; closing`);
      conn.close();
    }
  });
  conn.send({ t: 'hello', app: opts.app.app.name, digest: opts.app.digest });
  const timeout = opts.joinTimeoutMs ?? 10_000;
  let timer: NodeJS.Timeout | undefined;
  const refusal = await Promise.race([
    joined,
    new Promise<string>((resolve) => (timer = setTimeout(() => resolve(`no answer from the node within ${timeout} ms`), timeout))),
  ]);
  clearTimeout(timer);
  if (refusal !== null) {
    conn.close();
    throw new Error(`admission ${opts.name} could not join the node: ${refusal}`);
  }

  const limits = clientLimits(opts.clientLimits);
  const stats: ServeStats = { requests: 0, paused: 0, cutOff: 0 };
  const client = clientCredential(opts.secret);
  const onConnection = (c: Conn) => {
    if (c.role === CLIENT_ROLE) serveClient(front, c, log, limits, stats);
    else {
      log(`${c.peer}: an admission process serves clients only, not ${JSON.stringify(c.role)}; closing`);
      c.close();
    }
  };
  const secretFor = (role: string) => (role === CLIENT_ROLE ? client : undefined);
  const servers: Server[] = [await listen({ path: opts.path, secretFor, log, onConnection })];
  try {
    if (opts.tcp) servers.push(await listen({ ...opts.tcp, secretFor, log, onConnection }));
  } catch (e) {
    await Promise.all(servers.map((s) => s.close()));
    conn.close();
    throw e;
  }
  return {
    address: servers[0]?.address ?? opts.path,
    tcpAddress: servers[1]?.address ?? null,
    stats,
    front,
    ended: endedP,
    close: async () => {
      await Promise.all(servers.map((s) => s.close()));
      conn.close();
    },
  };
}
