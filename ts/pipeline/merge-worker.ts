// A merge thread: loads the app the primary names and speculates on the runs it is sent
// (speculate.ts). It holds no state between requests, so a request answered by a restarted
// or a different thread gives the same tables.
import { parentPort } from 'node:worker_threads';
import type { App } from '../app/app.js';
import { loadAppModule } from '../app/module.js';
import { nativeFunctions } from '../app/natives.js';
import { encode } from '../app/codec.js';
import { decodeTx } from '../app/tx.js';
import { speculate, type Speculated, type SpeculationJob } from './speculate.js';

/** What the primary sends: the app version by spec and digest, and the jobs. */
export interface MergeRequest {
  id: number;
  spec: string;
  /** Empty: whatever `spec` loads (an app given as an object, in tests and built-ins). */
  digest: string;
  jobs: SpeculationJob[];
}

/**
 * A result crosses as its encoding: structured cloning would turn the codec's Buffers into
 * plain Uint8Arrays, and an outcome must be the very value the primary's own execution gives.
 */
export type WireSpeculated =
  | Speculated
  | {
      table: Omit<Extract<Speculated, { table: unknown }>['table'], 'outcome'>;
      counts: Extract<Speculated, { counts: unknown }>['counts'];
      result: Uint8Array;
    };

export type MergeResponse = { id: number; results: WireSpeculated[] } | { id: number; error: string };

const apps = new Map<string, Promise<App>>();

async function appFor(spec: string, digest: string): Promise<App> {
  const key = `${spec}\0${digest}`;
  let app = apps.get(key);
  if (!app) {
    app = loadAppModule(spec).then((loaded) => {
      // Other code would give other tables; the merge would catch some of it, not all.
      if (digest !== '' && loaded.digest !== digest) throw new Error(`app ${spec} loaded with digest ${loaded.digest}, the primary runs ${digest}`);
      return loaded.app;
    });
    apps.set(key, app);
  }
  return app;
}

async function answer(req: MergeRequest): Promise<MergeResponse> {
  try {
    const app = await appFor(req.spec, req.digest);
    const txs = req.jobs.map((j) => decodeTx(j.bytes));
    const results = speculate(
      app,
      nativeFunctions,
      txs,
      req.jobs.map((j) => j.state),
    );
    return {
      id: req.id,
      results: results.map((r): WireSpeculated => {
        if (!('table' in r) || r.table.outcome.status !== 'ok') return r;
        const { outcome, ...table } = r.table;
        return { table, counts: r.counts, result: encode(outcome.result) };
      }),
    };
  } catch (e) {
    return { id: req.id, error: e instanceof Error ? e.message : String(e) };
  }
}

const port = parentPort;
if (port) {
  port.on('message', (req: MergeRequest) => {
    void answer(req).then((res) => port.postMessage(res));
  });
}
