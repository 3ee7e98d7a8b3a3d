// The load `remora check` and `remora bench app` drive an app with: the app module's named
// export `workload(seed)`, an iterator of transactions (set-up first, then the steady mix)
// that the same seed replays byte for byte (docs/apps.md, "Checking an app"). The built-in
// apps have theirs in workload.ts.
import { loadAppModule, type LoadedApp } from '../app/module.js';
import type { Transaction } from '../app/tx.js';
import { bankWorkload, kvWorkload } from '../workload.js';
import { ConfigError } from './errors.js';

export type WorkloadFn = (seed: number) => Iterator<Transaction>;

export interface AppUnderLoad {
  loaded: LoadedApp;
  /** Where the load comes from, for messages: the module's export or a built-in generator. */
  source: string;
  workload: WorkloadFn;
}

const BUILTIN_WORKLOADS: Record<string, WorkloadFn> = {
  *bank(seed) {
    const w = bankWorkload({ accounts: 1000, alpha: 0.8, seed });
    yield* w.setup;
    for (;;) yield w.next();
  },
  kv: (seed) => kvWorkload({ keys: 1000, hotKeys: 4, conflictRate: 0.1, dynamicRate: 0.05, seed }),
};

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** Loads the app `spec` names and its `workload` export; a ConfigError says what is missing. */
export async function loadAppUnderLoad(spec: string, cwd = process.cwd()): Promise<AppUnderLoad> {
  const loaded = await loadAppModule(spec, cwd);
  const builtin = Object.hasOwn(BUILTIN_WORKLOADS, spec) ? BUILTIN_WORKLOADS[spec] : undefined;
  if (builtin) return { loaded, source: `the built-in ${spec} workload`, workload: builtin };
  const fn = loaded.exports?.['workload'];
  if (typeof fn !== 'function') {
    throw new ConfigError(
      `app module ${spec} has no workload export: remora check and remora bench app drive an app with ` +
        '`export function* workload(seed) { … }`, yielding signed transactions, set-up first (docs/apps.md)',
    );
  }
  const source = `workload(seed) of ${spec}`;
  return { loaded, source, workload: (seed) => iteratorOf(source, (fn as (seed: number) => unknown)(seed)) };
}

/** What `workload(seed)` returned, as an iterator: a generator, an iterator or an iterable. */
function iteratorOf(source: string, r: unknown): Iterator<Transaction> {
  if (isRecord(r) && typeof r['next'] === 'function') return r as unknown as Iterator<Transaction>;
  if (isRecord(r) && typeof (r as Partial<Iterable<Transaction>>)[Symbol.iterator] === 'function') {
    return (r as unknown as Iterable<Transaction>)[Symbol.iterator]();
  }
  throw new ConfigError(`${source} returned ${r === null ? 'null' : typeof r}, not an iterator of transactions`);
}

/** The next `count` transactions of `it` (fewer if it ends), each checked to be one. */
export function take(it: Iterator<Transaction>, count: number, source: string, from = 0): Transaction[] {
  const out: Transaction[] = [];
  while (out.length < count) {
    const n = nextTransaction(it, source, from + out.length);
    if (n === null) break;
    out.push(n);
  }
  return out;
}

/** The next transaction of `it`, or null when it ended; a ConfigError names a bad one. */
export function nextTransaction(it: Iterator<Transaction>, source: string, index: number): Transaction | null {
  let n: IteratorResult<Transaction>;
  try {
    n = it.next();
  } catch (e) {
    throw new ConfigError(`${source} threw at transaction #${index}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (n.done) return null;
  const tx: unknown = n.value;
  if (!isRecord(tx) || !(tx['body'] instanceof Uint8Array) || !Array.isArray(tx['auth'])) {
    throw new ConfigError(`${source} yielded something other than a transaction at #${index} (expected { body, auth }, e.g. from makeTx)`);
  }
  return tx as unknown as Transaction;
}
