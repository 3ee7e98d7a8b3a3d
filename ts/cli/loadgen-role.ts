// `remora loadgen` (hidden): one load generator process (ts/loadgen.ts says why they exist).
//
// Protocol with its parent (a variant of process.ts's): it connects, builds and signs its
// transactions, prints `ready {"seed", "transactions", "prepareMs"}`, and waits for the start
// signal: a line `go` on stdin, or SIGUSR2 (what `startLoadGenerators` sends, since RoleProcess
// cannot write to a child's stdin). It then runs until its time limit or its transactions run
// out, prints `result <json>` (a GeneratorResult) and exits 0 on its own. The end of stdin asks it
// to stop early: before the start it exits with an empty result, during the run it stops
// sending and reports what was answered. Unlike the serving roles it reads stdin with or without
// `--exit-with-stdin`: a generator is only ever a launcher's child, and stdin is its control line.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { RemoraClient } from '../client.js';
import { NODE_SOCKET } from '../cluster.js';
import { encodeTxBytes } from '../app/tx.js';
import { GO_SIGNAL, generatorTransactions, runLoad, type GeneratorResult, type LoadMode, type LoadWorkload } from '../loadgen.js';
import { CLIENT_SECRET_FILE, readSecretFile } from '../secret.js';
import { parseHostPort } from '../transport.js';
import { WORK_MAX_ROUNDS } from '../apps/index.js';
import { intOption, required, UsageError } from './options.js';

function numberOption(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be a number from ${min} to ${max}, got '${raw}'`);
  }
  return n;
}

function workloadOption(v: Record<string, string | undefined>): LoadWorkload {
  const seed = intOption(v['seed'], 'seed', 0, 0, Number.MAX_SAFE_INTEGER - 1024);
  const objects = intOption(v['objects'], 'objects', 1000, 1, 10_000_000);
  const alpha = numberOption(v['alpha'], 'alpha', 0.8, 0, 5);
  const app = required(v['app'], 'app');
  switch (app) {
    case 'bank':
      return { app, accounts: objects, alpha, seed };
    case 'work':
      return { app, objects, alpha, rounds: intOption(v['rounds'], 'rounds', 10_000, 0, WORK_MAX_ROUNDS), seed };
    case 'kv':
      return {
        app,
        keys: objects,
        hotKeys: intOption(v['hot-keys'], 'hot-keys', 4, 0, 1_000_000),
        conflictRate: numberOption(v['conflict-rate'], 'conflict-rate', 0.1, 0, 1),
        dynamicRate: numberOption(v['dynamic-rate'], 'dynamic-rate', 0.05, 0, 1),
        seed,
      };
    default:
      throw new UsageError(`--app must be bank, kv or work for a load generator, got '${app}'`);
  }
}

function modeOption(v: Record<string, string | undefined>): LoadMode {
  const mode = v['mode'] ?? 'closed';
  if (mode === 'closed') return { kind: 'closed', clients: intOption(v['clients'], 'clients', 64, 1, 100_000) };
  if (mode === 'open') return { kind: 'open', rate: numberOption(required(v['rate'], 'rate'), 'rate', 0, 0.001, 10_000_000) };
  throw new UsageError(`--mode must be closed or open, got '${mode}'`);
}

/** The node's socket (or `--socket`) and the client credential, from `--dir`; or `--node` with `--secret-file`. */
function endpointOption(v: Record<string, string | undefined>): Parameters<typeof RemoraClient.connect>[0] {
  const node = v['node'];
  if (node !== undefined) {
    const hp = parseHostPort(node);
    if (hp === null) throw new UsageError(`--node must be HOST:PORT, got '${node}'`);
    return { ...hp, secret: readSecretFile(required(v['secret-file'], 'secret-file')) };
  }
  const dir = required(v['dir'], 'dir');
  // `--socket`: another client socket of the cluster, an admission process's.
  return { path: v['socket'] ?? join(dir, NODE_SOCKET), secret: readSecretFile(join(dir, CLIENT_SECRET_FILE)) };
}

/** Resolves with 'go' at the start signal, 'stop' when stdin ends first; `onEnd` hears a later end. */
export function startSignal(onEnd: () => void): Promise<'go' | 'stop'> {
  return new Promise((resolve) => {
    let started = false;
    const go = () => {
      if (started) return;
      started = true;
      resolve('go');
    };
    process.on(GO_SIGNAL, go);
    const lines = createInterface({ input: process.stdin });
    lines.on('line', (line) => {
      if (line.trim() === 'go') go();
    });
    lines.on('close', () => {
      if (started) onEnd();
      else {
        started = true;
        resolve('stop');
      }
    });
  });
}

export async function loadgenRole(argv: string[]): Promise<never> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      node: { type: 'string' },
      socket: { type: 'string' },
      'secret-file': { type: 'string' },
      app: { type: 'string' },
      objects: { type: 'string' },
      alpha: { type: 'string' },
      rounds: { type: 'string' },
      'hot-keys': { type: 'string' },
      'conflict-rate': { type: 'string' },
      'dynamic-rate': { type: 'string' },
      seed: { type: 'string' },
      index: { type: 'string' },
      of: { type: 'string' },
      mode: { type: 'string' },
      clients: { type: 'string' },
      rate: { type: 'string' },
      transactions: { type: 'string' },
      seconds: { type: 'string' },
      'drain-seconds': { type: 'string' },
      warmup: { type: 'string' },
      latencies: { type: 'string' },
    },
  });
  const workload = workloadOption(values);
  const mode = modeOption(values);
  const of = intOption(values.of, 'of', 1, 1, 1024);
  const index = intOption(values.index, 'index', 0, 0, of - 1);
  if (workload.app === 'bank' && workload.accounts < of) throw new UsageError(`--of ${of} bank generators need at least ${of} accounts`);
  const transactions = intOption(values.transactions, 'transactions', 10_000, 0, 100_000_000);
  const seconds = numberOption(values.seconds, 'seconds', 10, 0, 86_400);
  const drainSeconds = numberOption(values['drain-seconds'], 'drain-seconds', 10, 0, 3_600);
  const warmup = intOption(values.warmup, 'warmup', 0, 0, 100_000_000);
  const endpoint = endpointOption(values);

  // The signal handler goes in first: a parent may signal as soon as it reads `ready`.
  let stop: () => void = () => undefined;
  const signal = startSignal(() => stop());
  const client = await RemoraClient.connect(endpoint);
  const seed = workload.seed + index;
  process.stderr.write(`loadgen ${index + 1}/${of}: ${workload.app}, seed ${seed}, ${transactions} transactions\n`);
  const t0 = performance.now();
  // Encoded as the node reads them (tx.v1) ahead of the window too, like the signing.
  const txs = generatorTransactions(workload, index, of, transactions).map(encodeTxBytes);
  const prepareMs = Math.round(performance.now() - t0);
  process.stdout.write(`ready ${JSON.stringify({ seed, transactions: txs.length, prepareMs })}\n`);

  let result: GeneratorResult;
  let latencies: Float64Array = new Float64Array(0);
  if ((await signal) === 'go') {
    ({ result, latenciesNs: latencies } = await runLoad((tx) => client.submit(tx), txs, {
      mode,
      seconds,
      drainSeconds,
      warmup,
      seed,
      onStop: (s) => (stop = s),
    }));
  } else {
    const now = Date.now();
    const none = { sent: 0, committed: 0, aborted: 0, rejected: 0, unanswered: 0, duplicates: 0, elapsed: 0 };
    result = { seed, ...none, startMs: now, endMs: now, cpuUs: 0, ranOut: false, latencyUs: null, abortReasons: {}, rejectReasons: {}, error: null };
  }
  client.close();
  if (values.latencies !== undefined) writeFileSync(values.latencies, new Uint8Array(latencies.buffer, latencies.byteOffset, latencies.byteLength));
  // Pipes to the parent are written synchronously on Linux, so exiting right after is safe.
  process.stdout.write(`result ${JSON.stringify(result)}\n`);
  process.exit(0);
}
