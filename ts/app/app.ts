// The application API: an application is a set of named, deterministic commands over objects.
import { sign, type KeyObject } from 'node:crypto';
import type { Data } from './codec.js';
import { encodeBody, type Authenticator, type Transaction } from './tx.js';

/**
 * What a command may do. Everything it learns comes through here, so pre-execution can record
 * it and the primary can check it; there is deliberately no clock and no randomness.
 */
export interface Ctx {
  /** The object's value, or undefined if it does not exist. Recorded with its version. */
  read<T = unknown>(id: string): T | undefined;
  write(id: string, value: Data): void;
  delete(id: string): void;
  /** True iff the transaction carries a valid ed25519 signature by `publicKey` over its body. */
  authenticate(publicKey: Uint8Array): boolean;
  /** Calls a pre-compiled native function (`sha256`, `ed25519.verify`). */
  precompile(name: string, input: Uint8Array): Uint8Array;
  /** Ends the transaction: nothing it wrote is applied, and the outcome carries `reason`. */
  abort(reason: string): never;
}

// `never` arguments make any command assignable here (parameters are contravariant), so the
// constraint accepts every command while `ArgsOf` still recovers each one's own type.
export type Command = (ctx: Ctx, args: never) => unknown;

export interface App<C extends Record<string, Command> = Record<string, Command>> {
  readonly name: string;
  readonly commands: C;
  /** The object ids a command will touch, as far as its arguments tell (routing, destinations). */
  objects(command: keyof C & string, args: unknown): string[];
  /**
   * The partition (0 ≤ result < partitions) holding object `id`, for partitioned execution;
   * a hash of the id when absent (see `partition.ts`). Must be a pure function of its
   * arguments: every member computes destinations and ownership with it.
   */
  partition?(id: string, partitions: number): number;
}

export type CommandName<A extends App> = keyof A['commands'] & string;
export type ArgsOf<A extends App, K extends CommandName<A>> = Parameters<A['commands'][K]>[1];

/** Defines an application; the identity function that makes its command types flow. */
export function defineApp<C extends Record<string, Command>>(app: App<C>): App<C> {
  return app;
}

/**
 * Builds a transaction for `command` with its declared objects, signed by `signers` (ed25519
 * private keys) over the body bytes.
 */
export function makeTx<A extends App, K extends CommandName<A>>(
  app: A,
  command: K,
  args: ArgsOf<A, K> & Data,
  signers: readonly { publicKey: Uint8Array; privateKey: KeyObject }[] = [],
): Transaction {
  const body = encodeBody(command, args, app.objects(command, args));
  // Sorted by key: admission accepts one order only (tx.ts).
  const auth: Authenticator[] = signers
    .map((s): Authenticator => ({ scheme: 'ed25519', publicKey: s.publicKey, signature: sign(null, body, s.privateKey) }))
    .sort((a, b) => Buffer.compare(a.publicKey, b.publicKey));
  return { body, auth };
}
