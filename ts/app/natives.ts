// The real natives execution calls: the Rust pre-compiled functions, batched where it counts.
import type { Natives } from './exec.js';
import { precompile, precompileInputDigest, verifyEd25519Batch } from '../precompile.js';

export const nativeFunctions: Natives = {
  verifyEd25519Batch: (items) => verifyEd25519Batch(items),
  precompile: (name, input) => precompile(name, Buffer.from(input.buffer, input.byteOffset, input.byteLength)),
  inputDigest: (name, input) => precompileInputDigest(name, Buffer.from(input.buffer, input.byteOffset, input.byteLength)).toString('hex'),
};
