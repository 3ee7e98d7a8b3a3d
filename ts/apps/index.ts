// The built-in applications, by the names the CLI and cluster options use.
import { createHash } from 'node:crypto';
import type { App } from '../app/app.js';
import { bankApp, keyPairFromSeed, type KeyPair } from './bank.js';
import { kvApp } from './kv.js';
import { workApp } from './work.js';
import { tpccApp } from './tpcc.js';

export { accountId, bankApp, keyPairFromSeed, stampId, type Account, type BankApp, type BankConfig, type KeyPair } from './bank.js';
export { kvApp, kvId, MAX_KEY_BYTES, type KvApp } from './kv.js';
export { crunchDigest, WORK_MAX_OBJECTS, WORK_MAX_ROUNDS, workApp, workId, type Counter, type WorkApp } from './work.js';
export { tpccApp, type TpccApp } from './tpcc.js';
export { formatConsistency, memorySnapshot, tpccConsistency, type Snapshot, type TpccCondition } from './tpcc-check.js';
export { TPCC_DEFAULT_SCALE, TPCC_MIX, TpccMix, tpccLoad, tpccWorkload, type TpccKind, type TpccScale } from './tpcc-workload.js';

/**
 * The mint authority of the built-in `bank`: derived from a fixed, public seed so a cluster's
 * processes and its load generators agree on it without configuration. FOR DEMOS AND BENCHES
 * ONLY: anyone can compute this private key and mint at will.
 */
export const DEMO_MINT_AUTHORITY: KeyPair = keyPairFromSeed(
  createHash('sha256').update('remora demo mint authority: public, never use for real money').digest(),
);

export const builtinApps = {
  bank: bankApp({ mintAuthority: DEMO_MINT_AUTHORITY.publicKey }),
  kv: kvApp,
  work: workApp,
  tpcc: tpccApp,
} as const satisfies Record<string, App>;

export type BuiltinAppName = keyof typeof builtinApps;

/** The built-in application called `name`; throws naming the known ones otherwise. */
export function loadApp(name: string): App {
  if (!Object.hasOwn(builtinApps, name)) {
    throw new Error(`unknown app ${JSON.stringify(name)}: the built-in apps are ${Object.keys(builtinApps).join(', ')}`);
  }
  return builtinApps[name as BuiltinAppName];
}
