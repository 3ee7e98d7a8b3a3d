// The canonical encoding encodes a value whose maps are already in order without copying it;
// the bytes must be exactly those of sorting a copy first, or a signature or digest made
// before the change would no longer match.
import { randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { encode } from '../ts/app/codec.js';
import { xorshift } from './helpers.js';

const reference = new Packr({ useRecords: false, int64AsType: 'bigint', mapsAsObjects: true, variableMapSize: true });
const sortedCopy = (v: unknown): unknown => {
  if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map(sortedCopy);
  const o: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) o[k] = sortedCopy((v as Record<string, unknown>)[k]);
  return o;
};

// Index-like keys ('9', '10') sit first in any object, in numeric order: the subtle case.
const KEYS = ['a', 'b', 'B', '10', '9', '0', '1', 'zz', 'é', 'a1', '4294967295', '4294967294', '01', '-1', '', ' '];

describe('canonical encoding', () => {
  it('gives the bytes of a sorted copy for random nested values', () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`codec property test: seed ${seed} (REMORA_SEED to replay)`);
    const rand = xorshift(seed);
    const value = (depth: number): unknown => {
      const r = rand();
      if (depth > 3 || r < 0.3) return r < 0.15 ? Math.floor(rand() * 1e6) : r < 0.25 ? 'text' : Buffer.from([1, 2]);
      if (r < 0.5) return Array.from({ length: Math.floor(rand() * 4) }, () => value(depth + 1));
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rand() * 6); i > 0; i--) o[KEYS[Math.floor(rand() * KEYS.length)] ?? 'a'] = value(depth + 1);
      return o;
    };
    for (let i = 0; i < 50_000; i++) {
      const v = value(0);
      expect(encode(v).equals(reference.pack(sortedCopy(v))), JSON.stringify(v)).toBe(true);
    }
  });

  it('still refuses what it cannot encode canonically', () => {
    expect(() => encode({ a: undefined })).toThrow(/undefined cannot be encoded/);
    expect(() => encode({ b: 1, a: Number.NaN })).toThrow(/non-finite number/);
    expect(() => encode([new Date(0)])).toThrow(/Date cannot be encoded/);
  });
});
