// The byte helpers the node's paths write with (ts/bytes.ts) write what Buffer's own methods do.
import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import { putU64le } from '../ts/bytes.js';

describe('putU64le', () => {
  it('writes every u64 as writeBigUInt64LE does, exact halves and past 2^53 alike', () => {
    for (const n of [0n, 1n, 0xffff_ffffn, 0x1_0000_0000n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n, 123_456_789_012n]) {
      const want = Buffer.alloc(10);
      want.writeBigUInt64LE(n, 1);
      const got = Buffer.alloc(10);
      putU64le(got, 1, n);
      expect(got, String(n)).toEqual(want);
    }
  });

  it('refuses what is not a u64, as writeBigUInt64LE does', () => {
    expect(() => putU64le(Buffer.alloc(8), 0, -1n)).toThrow(RangeError);
    expect(() => putU64le(Buffer.alloc(8), 0, 2n ** 64n)).toThrow(RangeError);
  });
});
