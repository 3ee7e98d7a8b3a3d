// The pre-compiled functions through the TypeScript API, checked against node:crypto.
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  ED25519_VERIFY,
  SHA256,
  precompile,
  precompileBatch,
  precompileCounters,
  precompileInputDigest,
  resetPrecompileCounters,
  verifyEd25519Batch,
} from '../ts/precompile.js';

function keyPair() {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const { x } = publicKey.export({ format: 'jwk' });
  if (x === undefined) throw new Error('ed25519 JWK without x');
  const raw = Buffer.from(x, 'base64url');
  expect(raw.length).toBe(32);
  return { publicKey: raw, sign: (msg: Buffer) => sign(null, msg, privateKey) };
}

describe('precompile', () => {
  // The registry is process-wide: every test starts from zero.
  beforeEach(() => resetPrecompileCounters());

  it('computes sha256 of "abc" as the FIPS vector', () => {
    expect(precompile(SHA256, Buffer.from('abc')).toString('hex')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(precompile(SHA256, new Uint8Array(0))).toEqual(createHash('sha256').update('').digest());
  });

  it('verifies node:crypto ed25519 signatures and rejects a flipped bit', () => {
    const key = keyPair();
    const message = Buffer.from('transfer 10 to bob');
    const signature = key.sign(message);
    const flipped = Buffer.from(signature);
    flipped[0] = (flipped[0] ?? 0) ^ 0x01;
    expect(
      verifyEd25519Batch([
        { publicKey: key.publicKey, message, signature },
        { publicKey: key.publicKey, message, signature: flipped },
        { publicKey: key.publicKey, message: Buffer.from('transfer 99 to bob'), signature },
        { publicKey: key.publicKey.subarray(0, 31), message, signature }, // malformed: false, not an error
      ]),
    ).toEqual([true, false, false, false]);
    // The same check through the named function: public key ‖ signature ‖ message.
    expect(precompile(ED25519_VERIFY, Buffer.concat([key.publicKey, signature, message]))).toEqual(Buffer.from([1]));
    expect(precompile(ED25519_VERIFY, Buffer.concat([key.publicKey, flipped, message]))).toEqual(Buffer.from([0]));
  });

  it('counts exactly the native calls made', () => {
    const key = keyPair();
    const message = Buffer.from('m');
    const item = { publicKey: key.publicKey, message, signature: key.sign(message) };
    expect(precompileCounters()).toEqual({ sha256: 0, ed25519Verify: 0, total: 0 });
    verifyEd25519Batch([item, item, item]);
    expect(precompileCounters()).toEqual({ sha256: 0, ed25519Verify: 3, total: 3 });
    precompile(SHA256, message);
    verifyEd25519Batch([]);
    precompileInputDigest(ED25519_VERIFY, message); // a key, not a call
    expect(() => precompile('sha3', message)).toThrow(); // reached no function: not counted
    expect(precompileCounters()).toEqual({ sha256: 1, ed25519Verify: 3, total: 4 });
    resetPrecompileCounters();
    expect(precompileCounters().total).toBe(0);
  });

  it("reports an unknown name or malformed input with the crate's message", () => {
    expect(() => precompile('sha3', Buffer.from('abc'))).toThrow('unknown pre-compiled function "sha3"');
    expect(() => precompile(ED25519_VERIFY, Buffer.alloc(95))).toThrow(/malformed input for ed25519.verify: expected at least 96 bytes .* got 95/);
    expect(
      precompileBatch([
        { name: SHA256, input: Buffer.from('abc') },
        { name: 'nope', input: Buffer.alloc(0) },
        { name: ED25519_VERIFY, input: Buffer.alloc(96) },
      ]),
    ).toEqual([{ output: createHash('sha256').update('abc').digest() }, { error: 'unknown pre-compiled function "nope"' }, { output: Buffer.from([0]) }]);
  });

  it('gives input digests that separate names and inputs', () => {
    const a = precompileInputDigest(SHA256, Buffer.from('abc'));
    expect(a.toString('hex')).toBe('2e5966badfd5675e6e911f1f304229e8d1e979a0d400efb29e9103cd33bccd04');
    expect(precompileInputDigest(ED25519_VERIFY, Buffer.from('abc'))).not.toEqual(a);
    expect(precompileInputDigest('ab', Buffer.from('c'))).not.toEqual(precompileInputDigest('a', Buffer.from('bc')));
  });
});
