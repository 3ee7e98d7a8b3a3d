// The submit frame's reader (ts/pipeline/client-frames.ts) answers only as the general path
// would: msgpack's decoder, the copy of byte strings, then `parseClientMessage`. For every frame
// it reads, that path must accept the frame with an equal message; a frame it leaves is the
// general path's to accept or refuse.
import { randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { parseClientMessage, type ClientToNode } from '../ts/pipeline/messages.js';
import { readSubmitFrame } from '../ts/pipeline/client-frames.js';
import { ownBytes } from '../ts/wire.js';
import { xorshift } from './helpers.js';

// As the wire packs and unpacks (ts/wire.ts).
const packr = new Packr({ useRecords: false, int64AsType: 'bigint' });

/** The general path: the message, or the error that closes the connection. */
function general(body: Buffer): ClientToNode | Error {
  try {
    const values: unknown[] = packr.unpackMultiple(body);
    if (values.length !== 1) return new Error('not one value');
    return parseClientMessage(ownBytes(values[0]));
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
}

/** A msgpack map of `entries` in this order, each key and value encoded by msgpack. */
function mapOf(entries: [string, unknown][], header: 'fixmap' | 'map16'): Buffer {
  const head = header === 'fixmap' ? Buffer.from([0x80 | entries.length]) : Buffer.from([0xde, 0, entries.length]);
  return Buffer.concat([head, ...entries.flatMap(([k, v]) => [packr.pack(k), packr.pack(v)])]);
}

/** `read` and the general path's message are equal (bytes compared as bytes: vitest's deep equality walks them one by one). */
function expectSame(read: ClientToNode | undefined, body: Buffer, what = ''): void {
  const want = general(body);
  if (want instanceof Error) throw new Error(`${what}: the reader took a frame the general path refuses: ${want.message}`);
  expect(read, what).toBeDefined();
  const { tx, ...rest } = read as ClientToNode;
  const { tx: wantTx, ...wantRest } = want;
  expect(rest, what).toEqual(wantRest);
  expect(Buffer.isBuffer(tx) && Buffer.isBuffer(wantTx) && tx.equals(wantTx), what).toBe(true);
}

describe('the submit frame reader', () => {
  it('reads what clients send exactly as the general path does', () => {
    for (const id of [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER]) {
      for (const size of [0, 1, 255, 256, 65_535, 65_536]) {
        for (const optimistic of [undefined, true, false]) {
          const tx = randomBytes(size);
          const body = packr.pack(optimistic === undefined ? { t: 'submit', id, tx } : { t: 'submit', id, tx, optimistic });
          const read = readSubmitFrame(body);
          expectSame(read, body, `id ${id}, ${size} bytes, optimistic ${optimistic}`);
          // A view of the frame until owned: the frame's buffer is the socket's read buffer.
          if (size > 0) {
            expect((read?.tx as Buffer).buffer).toBe(body.buffer);
            const own = read?.ownTx();
            expect(own?.buffer).not.toBe(body.buffer);
            expect(own?.equals(tx)).toBe(true);
          }
        }
      }
    }
  });

  it('reads ids in every integer encoding, and a float id that is an integer', () => {
    const tx = randomBytes(40);
    const ids: [string, unknown][] = [
      ['fixint', 7],
      ['uint8', Buffer.from([0xcc, 200])],
      ['uint16', Buffer.from([0xcd, 1, 0])],
      ['uint32', Buffer.from([0xce, 0, 1, 0, 0])],
      ['uint64', Buffer.from([0xcf, 0, 0, 0, 1, 0, 0, 0, 0])],
      ['float64', Buffer.from([0xcb, 0x40, 0x14, 0, 0, 0, 0, 0, 0])],
    ];
    for (const [name, id] of ids) {
      const idBytes = Buffer.isBuffer(id) ? id : packr.pack(id);
      const body = Buffer.concat([Buffer.from([0x83]), packr.pack('t'), packr.pack('submit'), packr.pack('id'), idBytes, packr.pack('tx'), packr.pack(tx)]);
      const read = readSubmitFrame(body);
      expectSame(read, body, name);
    }
  });

  it('leaves other shapes to the general path', () => {
    const tx = randomBytes(40);
    const left: [string, Buffer][] = [
      [
        'keys in another order',
        mapOf(
          [
            ['id', 1],
            ['t', 'submit'],
            ['tx', tx],
          ],
          'fixmap',
        ),
      ],
      [
        'tx as { body, auth }',
        mapOf(
          [
            ['t', 'submit'],
            ['id', 1],
            ['tx', { body: tx, auth: [] }],
          ],
          'fixmap',
        ),
      ],
      [
        'a negative id',
        mapOf(
          [
            ['t', 'submit'],
            ['id', -1],
            ['tx', tx],
          ],
          'fixmap',
        ),
      ],
      [
        'a fractional id',
        mapOf(
          [
            ['t', 'submit'],
            ['id', 1.5],
            ['tx', tx],
          ],
          'fixmap',
        ),
      ],
      [
        'an unsafe uint64 id',
        Buffer.concat([
          Buffer.from([0x83]),
          packr.pack('t'),
          packr.pack('submit'),
          packr.pack('id'),
          Buffer.from([0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0]),
          packr.pack('tx'),
          packr.pack(tx),
        ]),
      ],
      [
        'another message type',
        mapOf(
          [
            ['t', 'status'],
            ['id', 1],
            ['tx', tx],
          ],
          'fixmap',
        ),
      ],
      [
        'an extra key',
        mapOf(
          [
            ['t', 'submit'],
            ['id', 1],
            ['tx', tx],
            ['x', 1],
          ],
          'fixmap',
        ),
      ],
      [
        'optimistic not a boolean',
        mapOf(
          [
            ['t', 'submit'],
            ['id', 1],
            ['tx', tx],
            ['optimistic', 1],
          ],
          'fixmap',
        ),
      ],
      ['trailing bytes', Buffer.concat([packr.pack({ t: 'submit', id: 1, tx }), Buffer.from([0xc0])])],
      ['not a map', packr.pack(['submit', 1, tx])],
      ['empty', Buffer.alloc(0)],
    ];
    for (const [name, body] of left) expect(readSubmitFrame(body), name).toBeUndefined();
    // The general path still decides each: the extra key and the fractional id are its to refuse or take.
    expect(general(left[0]?.[1] ?? Buffer.alloc(0))).toEqual({ t: 'submit', id: 1, tx, optimistic: false });
    expect(general(left[3]?.[1] ?? Buffer.alloc(0))).toBeInstanceOf(Error);
  });

  it('never reads a damaged frame otherwise than the general path', () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`client-frames test: seed ${seed} (REMORA_SEED to replay)`);
    const next = xorshift(seed);
    const rand = (n: number): number => Math.floor(next() * n);
    let read = 0;
    for (let i = 0; i < 20_000; i++) {
      const size = [0, 3, 200, 300, 70_000][rand(5)] ?? 0;
      const msg =
        rand(2) === 0
          ? { t: 'submit', id: rand(2 ** 33), tx: randomBytes(size) }
          : { t: 'submit', id: rand(300), tx: randomBytes(size), optimistic: rand(2) === 0 };
      let body = Buffer.from(packr.pack(msg));
      switch (rand(4)) {
        case 0:
          body[rand(Math.min(body.length, 40))] = rand(256);
          break;
        case 1:
          body = body.subarray(0, rand(body.length));
          break;
        case 2:
          body = Buffer.concat([body, randomBytes(1 + rand(3))]);
          break;
        default: {
          const at = rand(body.length);
          body[at] = (body[at] ?? 0) ^ (1 << rand(8));
        }
      }
      const fast = readSubmitFrame(body);
      if (fast === undefined) continue;
      read++;
      expectSame(fast, body, `case ${i}`);
    }
    // Damage past the header (a flipped bit in the bytes, most of all) leaves frames readable.
    expect(read).toBeGreaterThan(1000);
  });
});
