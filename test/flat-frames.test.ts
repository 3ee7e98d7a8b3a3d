// Frames written and read by hand (ts/flat-frames.ts) must be what msgpack's decoder reads:
// a peer may decode them either way, and a frame the reader does not take falls to the decoder.
import { Buffer } from 'node:buffer';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { BytesParts, flatFrame, readFlatMap, type FlatValue } from '../ts/flat-frames.js';
import { ownBytes } from '../ts/wire.js';

// As the wire's decoder is configured.
const packr = new Packr({ useRecords: false, int64AsType: 'bigint' });
const decoded = (body: Buffer): unknown => ownBytes(packr.unpack(body));
const bodyOf = (frame: Buffer): Buffer => {
  expect(frame.readUInt32BE(0)).toBe(frame.length - 4);
  return frame.subarray(4);
};

describe('flat frames', () => {
  it('writes msgpack that the decoder reads as the fields, and reads it back the same', () => {
    const fields: Record<string, FlatValue> = {
      t: 'exec',
      first: 0,
      small: 127,
      u8: 255,
      u16: 65535,
      u32: 0xffffffff,
      long: 'x'.repeat(200),
      empty: Buffer.alloc(0),
      b8: Buffer.alloc(255, 1),
      b16: Buffer.alloc(256, 2),
      b32: Buffer.alloc(70_000, 3),
      parts: new BytesParts([Buffer.from('ab'), Buffer.alloc(0), Buffer.from('cd')]),
    };
    const body = bodyOf(flatFrame(fields));
    const want = { ...fields, parts: Buffer.from('abcd') };
    expect(decoded(body)).toEqual(want);
    expect(readFlatMap(body)).toEqual(want);
  });

  it("reads what msgpack's packer writes for the same maps", () => {
    const m = { t: 'results', tables: Buffer.from([1, 2, 3]), n: 300, from: 'p1' };
    const body = packr.pack(m);
    expect(readFlatMap(body)).toEqual(decoded(body));
  });

  it('copies byte strings out of the frame', () => {
    const body = bodyOf(flatFrame({ t: 'effects', effects: Buffer.from([9, 9]) }));
    const m = readFlatMap(body);
    body.fill(0);
    expect(m?.['effects']).toEqual(Buffer.from([9, 9]));
  });

  it('leaves every other shape to the decoder', () => {
    const others: [string, unknown][] = [
      ['a nested map', { t: 'config', limits: { a: 1 } }],
      ['an array', { t: 'x', list: [1] }],
      ['a negative number', { t: 'x', n: -1 }],
      ['a float', { t: 'x', n: 1.5 }],
      ['a 64-bit integer', { t: 'x', n: 2n ** 40n }],
      ['a non-ASCII string', { t: 'x', s: 'é' }],
      ['a non-ASCII key', { t: 'x', é: 1 }],
      ['a boolean', { t: 'x', b: true }],
      ['null', { t: 'x', v: null }],
      ['a top-level array', ['t', 'x']],
    ];
    for (const [what, value] of others) expect(readFlatMap(packr.pack(value)), what).toBeUndefined();
    const proto = Buffer.from([0x81, 0xa9, ...Buffer.from('__proto__'), 0x01]);
    expect(readFlatMap(proto)).toBeUndefined();
    const good = bodyOf(flatFrame({ t: 'answers', answers: Buffer.alloc(40, 7), first: 70_000 }));
    expect(readFlatMap(Buffer.concat([good, Buffer.from([0xc0])])), 'trailing bytes').toBeUndefined();
    for (let n = 0; n < good.length; n++) expect(readFlatMap(good.subarray(0, n)), `cut at ${n}`).toBeUndefined();
  });

  it('refuses fields it cannot write', () => {
    expect(() => flatFrame({ é: 1 })).toThrow(/key "é" is not ASCII/);
    expect(() => flatFrame({ t: 'x', n: -1 })).toThrow(/n = -1 is not a u32/);
    expect(() => flatFrame({ t: 'x', s: 'é' })).toThrow(/the string of s is not ASCII/);
    expect(() => flatFrame(Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, i])))).toThrow(/at most 15 fields/);
  });

  it('agrees with the decoder on random maps', () => {
    const seed = Number(process.env.SEED ?? Date.now() % 1_000_000);
    console.log(`flat frames: seed ${seed}`);
    let state = seed;
    const rand = (n: number) => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state % n;
    };
    for (let round = 0; round < 300; round++) {
      const fields: Record<string, FlatValue> = {};
      for (let f = rand(15); f >= 0; f--) {
        const key = `k${rand(20)}`;
        const kind = rand(4);
        fields[key] =
          kind === 0
            ? ([0, 1, 127, 128, 255, 256, 65535, 65536, 0xffffffff][rand(9)] as number)
            : kind === 1
              ? 'abc'.repeat(rand(60))
              : kind === 2
                ? Buffer.alloc([0, 1, 255, 256, 65535, 65536][rand(6)] as number, rand(256))
                : new BytesParts([Buffer.alloc(rand(300), 1), Buffer.alloc(rand(300), 2)]);
      }
      const body = bodyOf(flatFrame(fields));
      expect(readFlatMap(body)).toEqual(decoded(body));
      // And the same map as the packer writes it (a peer that still sends it so).
      const packed = packr.pack(decoded(body));
      expect(readFlatMap(packed)).toEqual(decoded(packed));
    }
  });
});
