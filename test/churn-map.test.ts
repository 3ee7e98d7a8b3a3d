// The churn-map map and set renew their `Map` as entries are deleted; whatever the renewals,
// they answer as a `Map` and a `Set` given the same operations would.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ChurnMap, ChurnSet } from '../ts/pipeline/churn-map.js';
import { xorshift } from './helpers.js';

describe('ChurnMap and ChurnSet', () => {
  it('answer as Map and Set through many renewals', () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`churn-map test: seed ${seed} (REMORA_SEED to replay)`);
    const next = xorshift(seed);
    const rand = (n: number): number => Math.floor(next() * n);
    const map = new ChurnMap<number>();
    const set = new ChurnSet();
    const refMap = new Map<string, number>();
    const refSet = new Set<string>();
    // Sizes grow and shrink, so renewals happen at many sizes (and with a walk in progress).
    for (let op = 0; op < 200_000; op++) {
      const span = op % 40_000 < 20_000 ? 2000 : 200;
      const key = `d${rand(span)}`;
      switch (rand(5)) {
        case 0:
        case 1:
          map.set(key, op);
          refMap.set(key, op);
          set.add(key);
          refSet.add(key);
          break;
        case 2:
        case 3:
          expect(map.delete(key)).toBe(refMap.delete(key));
          expect(set.delete(key)).toBe(refSet.delete(key));
          break;
        default:
          expect(map.get(key)).toBe(refMap.get(key));
          expect(map.has(key)).toBe(refMap.has(key));
          expect(set.has(key)).toBe(refSet.has(key));
      }
      expect(map.size).toBe(refMap.size);
      expect(set.size).toBe(refSet.size);
      if (op % 10_000 === 0) {
        // A walk sees the keys as they were when it started, in insertion order, while deletions renew the map.
        const before = [...refSet];
        const walked: string[] = [];
        for (const k of set) {
          walked.push(k);
          set.delete(k);
          refSet.delete(k);
        }
        expect(walked).toEqual(before);
        expect(set.size).toBe(0);
        expect(map.keys()).toEqual([...refMap.keys()]);
        expect(map.oldest()).toEqual(refMap.entries().next().value);
      }
    }
  });
});
