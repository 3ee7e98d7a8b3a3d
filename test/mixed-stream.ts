// Transaction streams for merge tests that check against the reference executor.
import { expect } from 'vitest';
import type { App } from '../ts/app/app.js';
import type { Outcome } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { decodeTx, type DecodedTx } from '../ts/app/tx.js';
import type { Applied } from '../ts/pipeline/primary.js';
import { bankBench, kvWorkload } from '../ts/workload.js';

/** For comparing outcomes as JSON: bigints written out. */
export const jsonable = (_: string, v: unknown): unknown => (typeof v === 'bigint' ? `${v}n` : v);

/** A mixed stream: signed bank transfers (30 % to hot accounts), or kv with undeclared reads. */
export function mixedStream(app: 'bank' | 'kv', seed: number, count: number): DecodedTx[] {
  if (app === 'bank') {
    const b = bankBench({ transfers: count, conflictRate: 0.3, seed, accounts: 64 });
    return [...b.setup, ...b.transfers].map((t) => decodeTx(t));
  }
  const kv = kvWorkload({ keys: 200, hotKeys: 4, conflictRate: 0.3, dynamicRate: 0.2, seed });
  return Array.from({ length: count }, () => decodeTx(kv.next().value));
}

/**
 * Holds what a primary applied from `txs` (timestamps 1, 2, … in order) to sequential
 * execution: the same state digest, an equal outcome for every transaction, each applied once.
 */
export function expectSequential(app: App, txs: readonly DecodedTx[], stateDigest: string, applied: readonly Applied[]): void {
  const reference = executeSequentially(
    app,
    txs.map((tx, k) => ({ ts: BigInt(k + 1), tx })),
    nativeFunctions,
  );
  expect(stateDigest).toBe(reference.state.digest());
  const differing = applied.filter((a) => JSON.stringify(a.outcome, jsonable) !== JSON.stringify(reference.outcomes.get(a.ts), jsonable));
  expect(differing.map((a) => ({ ts: a.ts, primary: a.outcome, reference: reference.outcomes.get(a.ts) as Outcome }))).toEqual([]);
  expect(applied.length).toBe(txs.length);
}
