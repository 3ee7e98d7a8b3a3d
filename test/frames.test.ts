// The frame decoder against random chunking: whatever the socket's reads cut (inside a header,
// inside a body, several frames at once), the bodies come out whole, in order, and nothing else.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeFrame, FrameDecoder, FrameError } from '../ts/frames.js';
import { xorshift } from './helpers.js';

describe('FrameDecoder', () => {
  it('gives back every body whole and in order, however the stream is cut', () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`frame decoder test: seed ${seed} (REMORA_SEED to replay)`);
    const next = xorshift(seed);
    const rand = (n: number): number => Math.floor(next() * n);
    for (let round = 0; round < 200; round++) {
      // Empty bodies, bodies shorter than a header and longer than a chunk.
      const bodies = Array.from({ length: 1 + rand(20) }, (_, i) => Buffer.alloc(rand(4) === 0 ? rand(4) : rand(3000), (round + i) & 0xff));
      const stream = Buffer.concat(bodies.map((b) => encodeFrame(b)));
      const d = new FrameDecoder(1 << 20);
      const out: Buffer[] = [];
      for (let at = 0; at < stream.length;) {
        const n = 1 + rand(rand(2) === 0 ? 7 : 4096);
        d.push(stream.subarray(at, at + n));
        at += n;
        for (let body = d.next(); body !== undefined; body = d.next()) out.push(Buffer.from(body));
      }
      expect(out, `round ${round}`).toEqual(bodies);
      expect(d.next()).toBeUndefined();
    }
  });

  it('refuses a header over the limit before keeping its body, and says why', () => {
    const d = new FrameDecoder(100);
    d.push(encodeFrame(Buffer.alloc(10, 1)));
    const big = encodeFrame(Buffer.alloc(101));
    d.push(big.subarray(0, 2));
    expect(d.next()?.length).toBe(10);
    expect(d.next()).toBeUndefined();
    d.push(big.subarray(2, 6));
    expect(() => d.next()).toThrow(new FrameError('frame of 101 bytes exceeds the limit of 100 bytes'));
  });
});
