// A pre-executor process: attaches to the node, executes what it is handed, returns tables.
import type { App } from '../app/app.js';
import type { Natives } from '../app/exec.js';
import { decodeTx, type DecodedTx } from '../app/tx.js';
import type { RemoteStore } from '../store.js';
import type { HostPort } from '../transport.js';
import { connect, type Conn } from '../wire.js';
import { parseNodeToPre, type PreToNode } from './messages.js';
import { PreExecutor } from './preexecutor.js';
import { connectStore, Puller } from './pull.js';
import { PRE_EXECUTOR_ROLE } from './server.js';

export interface PreExecutorProcess {
  readonly pre: PreExecutor;
  /** Set once the node asked for the `pull` state update. */
  readonly puller: () => Puller | null;
  /** The connection to the primary's store a puller reads through. */
  readonly remote: () => RemoteStore | null;
  /** Resolves when the node closes the connection (or it breaks). */
  readonly closed: Promise<void>;
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
  app: App;
  natives: Natives;
  log?: (m: string) => void;
  /** Called after each batch is executed, with its size and the time it took (ms), e.g. for metrics. */
  onBatch?: (txs: number, ms: number) => void;
}): Promise<PreExecutorProcess> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const where = opts.path !== undefined ? { path: opts.path } : { ...opts.node };
  const conn: Conn = await connect({ ...where, secret: opts.secret, role: PRE_EXECUTOR_ROLE + opts.name, log });
  const pre = new PreExecutor(opts.app, opts.natives);
  const closed = new Promise<void>((resolve) => conn.onClose(() => resolve()));
  let puller: Puller | null = null;
  let remote: RemoteStore | null = null;
  // With `pull`, a batch waits for its reads, and later batches queue behind it.
  let pulling = false;
  let queue: Promise<void> = Promise.resolve();
  const fail = (e: unknown) => {
    log(`pre-executor ${opts.name}: ${e instanceof Error ? e.message : String(e)}; closing`);
    conn.close();
  };

  const execute = async (txs: DecodedTx[]) => {
    const t0 = performance.now();
    if (puller) await puller.refresh(txs);
    const msg: PreToNode = { t: 'results', results: pre.run(txs) };
    opts.onBatch?.(txs.length, performance.now() - t0);
    conn.send(msg);
  };

  conn.onMessage((raw) => {
    try {
      const m = parseNodeToPre(raw);
      switch (m.t) {
        case 'config':
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
        case 'effects':
          pre.install(m.effects);
          return;
        case 'objects':
          pre.installObjects(m.objects);
          return;
        case 'feedback':
          pre.feedback = m.feedback;
          return;
        case 'exec': {
          const txs: DecodedTx[] = [];
          for (const t of m.txs) {
            try {
              txs.push(decodeTx(t));
            } catch (e) {
              // Admission checked it; a transaction we cannot decode is simply not pre-executed
              // (the primary executes it at its deadline).
              log(`pre-executor ${opts.name}: skipping a transaction: ${e instanceof Error ? e.message : String(e)}`);
            }
          }
          if (pulling) queue = queue.then(() => execute(txs)).catch(fail);
          else void execute(txs).catch(fail);
          return;
        }
      }
    } catch (e) {
      fail(e);
    }
  });
  return { pre, puller: () => puller, remote: () => remote, closed, close: () => conn.close() };
}
