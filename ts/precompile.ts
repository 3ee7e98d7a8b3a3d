// The TypeScript face of the pre-compiled functions (crate remora-precompile). One registry per
// process: its counters count every native call made through these functions.
import {
  precompileBatch as nativeBatch,
  precompileCall,
  precompileCounters as nativeCounters,
  precompileInputDigest as nativeInputDigest,
  resetPrecompileCounters as nativeReset,
  verifyEd25519Batch as nativeVerify,
} from './binding.js';
import type { PrecompileCounters } from './binding.js';

export type { PrecompileCounters };

/** SHA-256 of the input: 32 bytes. */
export const SHA256 = 'sha256';
/** Strict ed25519 verification of public key (32 B) ‖ signature (64 B) ‖ message: one byte, 1 or 0. */
export const ED25519_VERIFY = 'ed25519.verify';

export interface PrecompileCall {
  name: string;
  input: Uint8Array;
}

export type PrecompileResult = { output: Buffer } | { error: string };

export interface Ed25519Item {
  publicKey: Uint8Array;
  message: Uint8Array;
  signature: Uint8Array;
}

/** Calls function `name`; an unknown name or malformed input throws. */
export function precompile(name: string, input: Uint8Array): Buffer {
  return precompileCall(name, input);
}

/** One result per call, in order; a failing call gives `{ error }` and does not affect the others. */
export function precompileBatch(calls: readonly PrecompileCall[]): PrecompileResult[] {
  if (!Array.isArray(calls satisfies unknown)) throw new TypeError('precompileBatch(calls) must be an array');
  return nativeBatch([...calls]).map((r) => {
    if (r.output !== undefined) return { output: r.output };
    if (r.error !== undefined) return { error: r.error };
    throw new Error('native precompileBatch returned neither output nor error');
  });
}

/** Strictly verifies each signature in one native call; malformed keys or signatures are `false`. */
export function verifyEd25519Batch(items: readonly Ed25519Item[]): boolean[] {
  if (!Array.isArray(items satisfies unknown)) throw new TypeError('verifyEd25519Batch(items) must be an array');
  return nativeVerify([...items]);
}

/** Native calls made since the process started or the last reset. */
export function precompileCounters(): PrecompileCounters {
  return nativeCounters();
}

export function resetPrecompileCounters(): void {
  nativeReset();
}

/** The key under which a call's result is recorded in a lookup table (32 bytes). */
export function precompileInputDigest(name: string, input: Uint8Array): Buffer {
  return nativeInputDigest(name, input);
}
