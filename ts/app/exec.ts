// Executing one transaction while recording its lookup table (DESIGN "Core concepts").
//
// Pre-executors, the primary and the reference executor all run commands through `execute`,
// so they cannot disagree on semantics; they differ only in the state they read and in the
// hints (a pre-executor's table) that let the primary skip work it can trust.
import type { App, Ctx } from './app.js';
import { decode, encode, type Data } from './codec.js';
import { NondeterminismError, runCommand } from './guard.js';
import type { DecodedTx } from './tx.js';

/** An object as a state holds it. Version 0 and no value: never written. */
export interface Versioned {
  version: bigint;
  /** Undefined when absent or deleted. */
  value: Uint8Array | undefined;
  /**
   * A pre-executor's guess of a value a transaction not yet applied will write (its own earlier
   * result): there is no version yet, so the table records the value instead.
   */
  speculative?: boolean;
}

/** The state a transaction reads. Reads must be answered synchronously. */
export interface StateSource {
  read(id: string): Versioned;
}

export type Outcome = { status: 'ok'; result: Data } | { status: 'aborted'; reason: string };

/** What one execution saw and did: the lookup table of seed 000. */
export interface LookupTable {
  /** Every object read from the state (not the transaction's own writes), with its version. */
  reads: [id: string, version: bigint][];
  /** Reads of objects the transaction did not declare, with the value seen (null: none). */
  dynamic: [id: string, version: bigint, value: Uint8Array | null][];
  /** Reads answered by a speculative value (see `Versioned.speculative`): checked by value. */
  speculative: [id: string, value: Uint8Array | null][];
  /** Final value of every object written, null for a delete; empty when aborted. */
  writes: [id: string, value: Uint8Array | null][];
  /** Per authenticator of the transaction: the verification result, or null if not checked. */
  auth: (boolean | null)[];
  /** Pre-compiled calls: input digest and output. */
  precompiles: [inputDigest: string, output: Uint8Array][];
  outcome: Outcome;
}

/** The native functions execution calls; `natives.ts` gives the real ones. */
export interface Natives {
  verifyEd25519Batch(items: { publicKey: Uint8Array; message: Uint8Array; signature: Uint8Array }[]): boolean[];
  precompile(name: string, input: Uint8Array): Uint8Array;
  inputDigest(name: string, input: Uint8Array): string;
}

/** What a re-execution may take from a pre-executor's table instead of redoing it. */
export interface Hints {
  auth?: readonly (boolean | null)[];
  precompiles?: ReadonlyMap<string, Uint8Array>;
  /** Undeclared objects as the pre-executor read them; used where the version is still current. */
  dynamic?: ReadonlyMap<string, { version: bigint; value: Uint8Array | null }>;
}

export function hintsFrom(table: LookupTable): Hints {
  return {
    auth: table.auth,
    precompiles: new Map(table.precompiles),
    dynamic: new Map(table.dynamic.map(([id, version, value]) => [id, { version, value }])),
  };
}

/** Work the natives did for one execution, and what hints saved. */
export interface ExecCounts {
  verified: number;
  authFromHints: number;
  precompiled: number;
  precompilesReused: number;
  dynamicFromHints: number;
}

/** Largest encoded object value (the native store's largest size class). */
export const MAX_VALUE_BYTES = 1 << 20;

/**
 * A command's abort. Not an Error on purpose: an abort is an outcome, not a failure, so it
 * carries no stack, and an app's own `catch (e) { if (e instanceof Error) … }` lets it through.
 */
class Abort {
  constructor(readonly reason: string) {}
}

/** Pre-verifies every authenticator of `txs` in one native call (pre-executors batch this). */
export function verifyAll(natives: Natives, txs: readonly DecodedTx[]): (boolean | null)[][] {
  const items = txs.flatMap((tx) => tx.auth.map((a) => ({ publicKey: a.publicKey, message: tx.body, signature: a.signature })));
  const results = items.length > 0 ? natives.verifyEd25519Batch(items) : [];
  let next = 0;
  return txs.map((tx) => tx.auth.map(() => results[next++] ?? false));
}

export function execute(app: App, tx: DecodedTx, state: StateSource, natives: Natives, hints: Hints = {}): { table: LookupTable; counts: ExecCounts } {
  const counts: ExecCounts = { verified: 0, authFromHints: 0, precompiled: 0, precompilesReused: 0, dynamicFromHints: 0 };
  const declared = new Set(tx.objects);
  const seen = new Map<string, Versioned>();
  const reads: [string, bigint][] = [];
  const dynamic: [string, bigint, Uint8Array | null][] = [];
  const speculative: [string, Uint8Array | null][] = [];
  const writes = new Map<string, Uint8Array | null>();
  const auth: (boolean | null)[] = tx.auth.map(() => null);
  const asked: boolean[] = tx.auth.map(() => false);
  const precompiles: [string, Uint8Array][] = [];

  const fetch = (id: string): Versioned => {
    const hit = seen.get(id);
    if (hit) return hit;
    let v: Versioned | undefined;
    const hinted = declared.has(id) ? undefined : hints.dynamic?.get(id);
    if (hinted && state.read(id).version === hinted.version) {
      // The store read above is only a version check for a local store; over a transport the
      // value is what costs, and the table already holds it.
      v = { version: hinted.version, value: hinted.value ?? undefined };
      counts.dynamicFromHints++;
    } else {
      v = state.read(id);
    }
    seen.set(id, v);
    if (v.speculative) speculative.push([id, v.value ?? null]);
    else {
      reads.push([id, v.version]);
      if (!declared.has(id)) dynamic.push([id, v.version, v.value ?? null]);
    }
    return v;
  };

  const ctx: Ctx = {
    read<T>(id: string): T | undefined {
      checkObjectId(id);
      const own = writes.get(id);
      if (own !== undefined) return own === null ? undefined : (decode(own) as T);
      const v = fetch(id);
      return v.value === undefined ? undefined : (decode(v.value) as T);
    },
    write(id, value) {
      checkObjectId(id);
      const bytes = encode(value);
      // The store's largest value; refusing here makes it the command's abort, identical at
      // every member, rather than a failure of the primary's store write.
      if (bytes.length > MAX_VALUE_BYTES) {
        // eslint-disable-next-line @typescript-eslint/only-throw-error -- see Abort
        throw new Abort(`value for ${id} is ${bytes.length} bytes, over the limit of ${MAX_VALUE_BYTES}`);
      }
      writes.set(id, bytes);
    },
    delete(id) {
      checkObjectId(id);
      writes.set(id, null);
    },
    authenticate(publicKey) {
      let ok = false;
      tx.auth.forEach((a, i) => {
        if (ok || !Buffer.from(a.publicKey).equals(Buffer.from(publicKey))) return;
        asked[i] = true;
        let r = auth[i] ?? null;
        if (r === null) {
          const h = hints.auth?.[i];
          if (typeof h === 'boolean') {
            r = h;
            counts.authFromHints++;
          } else {
            r = natives.verifyEd25519Batch([{ publicKey: a.publicKey, message: tx.body, signature: a.signature }])[0] ?? false;
            counts.verified++;
          }
          auth[i] = r;
        }
        ok = r;
      });
      return ok;
    },
    precompile(name, input) {
      const digest = natives.inputDigest(name, input);
      let out = hints.precompiles?.get(digest);
      if (out) counts.precompilesReused++;
      else {
        out = natives.precompile(name, input);
        counts.precompiled++;
      }
      precompiles.push([digest, out]);
      return out;
    },
    abort(reason) {
      // eslint-disable-next-line @typescript-eslint/only-throw-error -- see Abort
      throw new Abort(String(reason));
    },
  };

  let outcome: Outcome;
  const command = Object.hasOwn(app.commands, tx.command) ? app.commands[tx.command] : undefined;
  if (!command) {
    outcome = { status: 'aborted', reason: `unknown command ${JSON.stringify(tx.command)} for app ${app.name}` };
  } else {
    try {
      const run = command as (ctx: Ctx, args: unknown) => unknown;
      const result = (runCommand(tx.command, () => run(ctx, tx.args)) ?? null) as Data;
      encode(result); // a result that cannot travel is the command's error, found here
      outcome = unusedAuthenticator(tx, asked, auth) ?? { status: 'ok', result };
    } catch (e) {
      // A command that reached for a clock or I/O is a bug in the app, not an outcome.
      if (e instanceof NondeterminismError) throw e;
      // Errors thrown by command code are deterministic too (same inputs, same code), so they
      // are outcomes like any abort, not failures of the engine.
      const reason = e instanceof Abort ? e.reason : `command failed: ${e instanceof Error ? e.message : String(e)}`;
      outcome = { status: 'aborted', reason };
    }
  }
  const table: LookupTable = {
    reads,
    dynamic,
    speculative,
    writes: outcome.status === 'ok' ? [...writes] : [],
    auth,
    precompiles,
    outcome,
  };
  return { table, counts };
}

/**
 * A transaction commits only if every authenticator it carries was asked for by the command and
 * verified (docs/security.md): otherwise a third party could add its own signature, or a junk
 * one, to someone's signed transaction and have it run again under a new digest.
 */
function unusedAuthenticator(tx: DecodedTx, asked: readonly boolean[], auth: readonly (boolean | null)[]): Outcome | undefined {
  for (let i = 0; i < tx.auth.length; i++) {
    const key = Buffer.from(tx.auth[i]?.publicKey ?? [])
      .toString('hex')
      .slice(0, 16);
    if (!asked[i]) return { status: 'aborted', reason: `authenticator ${i} (key ${key}…) was not asked for by ${tx.command}` };
    if (auth[i] !== true) return { status: 'aborted', reason: `authenticator ${i} (key ${key}…) does not verify` };
  }
  return undefined;
}

function checkObjectId(id: unknown): void {
  if (typeof id !== 'string' || id.length === 0 || Buffer.byteLength(id) > 88) {
    throw new TypeError(`object id must be a non-empty string of at most 88 bytes, got ${JSON.stringify(id)}`);
  }
}
