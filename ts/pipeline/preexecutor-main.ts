// A pre-executor process: attaches to the node, executes what it is handed, returns tables.
import type { App } from '../app/app.js';
import type { Natives } from '../app/exec.js';
import { decodeTx, type DecodedTx } from '../app/tx.js';
import { connect, type Conn } from '../wire.js';
import { parseNodeToPre, type PreToNode } from './messages.js';
import { PreExecutor } from './preexecutor.js';
import { PRE_EXECUTOR_ROLE } from './server.js';

export interface PreExecutorProcess {
  readonly pre: PreExecutor;
  /** Resolves when the node closes the connection (or it breaks). */
  readonly closed: Promise<void>;
  close(): void;
}

export async function runPreExecutor(opts: {
  path: string;
  secret: Buffer;
  name: string;
  app: App;
  natives: Natives;
  log?: (m: string) => void;
  /** Called after each batch is executed, with its size and the time it took (ms), e.g. for metrics. */
  onBatch?: (txs: number, ms: number) => void;
}): Promise<PreExecutorProcess> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const conn: Conn = await connect({ path: opts.path, secret: opts.secret, role: PRE_EXECUTOR_ROLE + opts.name, log });
  const pre = new PreExecutor(opts.app, opts.natives);
  const closed = new Promise<void>((resolve) => conn.onClose(() => resolve()));
  conn.onMessage((raw) => {
    try {
      const m = parseNodeToPre(raw);
      if (m.t === 'effects') {
        pre.install(m.effects);
        return;
      }
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
      const t0 = performance.now();
      const msg: PreToNode = { t: 'results', results: pre.run(txs) };
      opts.onBatch?.(txs.length, performance.now() - t0);
      conn.send(msg);
    } catch (e) {
      log(`pre-executor ${opts.name}: ${e instanceof Error ? e.message : String(e)}; closing`);
      conn.close();
    }
  });
  return { pre, closed, close: () => conn.close() };
}
