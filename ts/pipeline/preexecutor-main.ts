// A pre-executor process: attaches to the node, executes what it is handed, returns tables.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Natives } from '../app/exec.js';
import { flatFrame, readFlatMap } from '../flat-frames.js';
import { HERON_SOCKET } from '../heron/messages.js';
import { loadAppModule, type LoadedApp } from '../app/module.js';
import { decodeTx, type DecodedTx } from '../app/tx.js';
import type { RemoteStore } from '../store.js';
import type { HostPort } from '../transport.js';
import { connect, type Conn } from '../wire.js';
import { parseNodeToPre, type PreToNode } from './messages.js';
import { PreExecutor } from './preexecutor.js';
import { encodeResults, splitTxs } from './records.js';
import { encodeTable } from './table-bytes.js';
import { connectStore, Puller } from './pull.js';
import { PRE_EXECUTOR_ROLE } from './server.js';

/** The node would not take this pre-executor; the message is the node's reason. */
export class MemberRefused extends Error {
  override name = 'MemberRefused';
}

export interface PreExecutorProcess {
  readonly pre: PreExecutor;
  /** Set once the node asked for the `pull` state update. */
  readonly puller: () => Puller | null;
  /** The connection to the primary's store a puller reads through. */
  readonly remote: () => RemoteStore | null;
  /** What made this pre-executor stop on its own (e.g. a command breaking determinism), if anything. */
  readonly error: () => unknown;
  /** Resolves when the node closes the connection (or it breaks); with the node's reason if it refused this member. */
  readonly closed: Promise<string | null>;
  close(): void;
}

export async function runPreExecutor(opts: {
  /** The node's Unix socket (same host), or else its TCP endpoint. */
  path?: string;
  node?: HostPort;
  /** The cluster directory, where the primary's store lives (needed to pull over shm). */
  dir?: string;
  secret: Buffer;
  name: string;
  app: LoadedApp;
  natives: Natives;
  log?: (m: string) => void;
  /** Called after each batch is executed, with its size and the time it took (ms), e.g. for metrics. */
  onBatch?: (txs: number, ms: number) => void;
  /** Fills the copy (e.g. from a checkpoint) before the node hears from this member. */
  seed?: (pre: PreExecutor) => void;
}): Promise<PreExecutorProcess> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const where = opts.path !== undefined ? { path: heronSocketInstead(opts.path, opts.dir) } : { ...opts.node };
  const conn: Conn = await connect({ ...where, secret: opts.secret, role: PRE_EXECUTOR_ROLE + opts.name, log });
  const pre = new PreExecutor(opts.app.app, opts.natives);
  // Before `hello`: the node attaches a member, and hands it work, only once it has said hello.
  opts.seed?.(pre);
  let refused: string | null = null;
  let admitted: () => void = () => undefined;
  const closed = new Promise<string | null>((resolve) => conn.onClose(() => resolve(refused)));
  // Versions loaded ahead of their upgrade, by digest.
  const versions = new Map<string, LoadedApp>([[opts.app.digest, opts.app]]);
  conn.send({ t: 'hello', app: opts.app.spec, digest: opts.app.digest } satisfies PreToNode);
  let puller: Puller | null = null;
  let remote: RemoteStore | null = null;
  // With `pull`, a batch waits for its reads, and later batches queue behind it.
  let pulling = false;
  let queue: Promise<void> = Promise.resolve();
  let error: unknown;
  const fail = (e: unknown) => {
    error ??= e;
    log(`pre-executor ${opts.name}: ${e instanceof Error ? e.message : String(e)}; closing`);
    conn.close();
  };

  const execute = async (txs: DecodedTx[]) => {
    const t0 = performance.now();
    if (puller) await puller.refresh(txs);
    const tables = encodeResults(pre.run(txs).map(([digest, table]) => [digest, encodeTable(table)]));
    opts.onBatch?.(txs.length, performance.now() - t0);
    conn.sendFrame(flatFrame({ t: 'results', tables }));
  };

  conn.readWith(readFlatMap);
  conn.onMessage((raw) => {
    try {
      const m = parseNodeToPre(raw);
      switch (m.t) {
        case 'config':
          admitted();
          pre.speculate(m.speculate);
          if (m.stateUpdate === 'pull' && !pulling) {
            pulling = true;
            queue = queue
              .then(async () => {
                remote = await connectStore(m, opts);
                puller = new Puller(remote, pre);
              })
              .catch(fail);
          }
          return;
        case 'refused':
          refused = m.reason;
          return;
        case 'load':
          // In order with the batches around it: everything handed before the upgrade message
          // still runs with the version that was active.
          queue = queue
            .then(async () => {
              const v = await loadAppModule(m.spec);
              versions.set(v.digest, v);
              conn.send({ t: 'loaded', digest: v.digest } satisfies PreToNode);
            })
            .catch((e: unknown) => {
              conn.send({ t: 'load-failed', reason: e instanceof Error ? e.message : String(e) } satisfies PreToNode);
            });
          return;
        case 'upgrade': {
          const digest = m.digest;
          queue = queue.then(() => {
            const v = versions.get(digest);
            if (!v) throw new Error(`the node activated app ${digest.slice(0, 12)}, which this pre-executor never loaded`);
            pre.app = v.app;
          });
          queue.catch(fail);
          return;
        }
        case 'effects':
          pre.install(m.effects);
          return;
        case 'objects':
          // In order with the batches sent before them: a delegate is sent a lease's
          // authoritative versions, then the transactions to run on them (docs/primary.md).
          queue = queue.then(() => pre.installObjects(m.objects)).catch(fail);
          return;
        case 'feedback':
          pre.feedback = m.feedback;
          return;
        case 'exec': {
          const txs: DecodedTx[] = [];
          for (const t of splitTxsOrNone(m.txs, (e) => log(`pre-executor ${opts.name}: skipping a batch: ${e}`))) {
            try {
              txs.push(decodeTx(t));
            } catch (e) {
              // Admission checked it; a transaction we cannot decode is simply not pre-executed
              // (the primary executes it at its deadline).
              log(`pre-executor ${opts.name}: skipping a transaction: ${e instanceof Error ? e.message : String(e)}`);
            }
          }
          queue = queue.then(() => execute(txs)).catch(fail);
          return;
        }
      }
    } catch (e) {
      fail(e);
    }
  });
  // Attached once the node sent its config; refused, it says why before closing.
  await new Promise<void>((resolve, reject) => {
    admitted = resolve;
    void closed.then((reason) =>
      reject(reason === null ? new Error(`the node at ${conn.peer} closed the connection before attaching this pre-executor`) : new MemberRefused(reason)),
    );
  });
  return { pre, puller: () => puller, remote: () => remote, error: () => error, closed, close: () => conn.close() };
}

/** The batch's transactions; none (and a log line) if its framing is broken. */
function splitTxsOrNone(b: Buffer, log: (e: string) => void): Buffer[] {
  try {
    return splitTxs(b);
  } catch (e) {
    log(e instanceof Error ? e.message : String(e));
    return [];
  }
}

/**
 * A Heron launcher takes pool members on its own socket: joining its directory means that
 * socket when the directory has no node's socket.
 */
function heronSocketInstead(path: string, dir: string | undefined): string {
  if (dir === undefined || existsSync(path)) return path;
  const heron = join(dir, HERON_SOCKET);
  return existsSync(heron) ? heron : path;
}
