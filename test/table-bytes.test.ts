// The node reads the msgpack rest of most tables without the msgpack decoder (table-bytes.ts,
// `commonRest`). Whatever it reads that way must read the same through the decoder, and
// anything near it (one byte changed) must be read, or refused, exactly as the decoder does.
import { describe, expect, it } from 'vitest';
import type { LookupTable } from '../ts/app/exec.js';
import { decodeTableRest, decodeTableRestFully, encodeTable, tableShape, type TableRest } from '../ts/pipeline/table-bytes.js';
import { xorshift } from './helpers.js';

const table = (auth: (boolean | null)[], result: LookupTable['outcome']): LookupTable => ({
  reads: [['bank/1', 3n]],
  dynamic: [],
  speculative: [],
  writes: [['bank/1', Uint8Array.of(0x90)]],
  auth,
  precompiles: [],
  outcome: result,
});

/** The rest as read, or the error it was refused with. */
function read(how: typeof decodeTableRest, b: Buffer): TableRest | string {
  try {
    return how(b, tableShape(b));
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

describe('a table rest read without the msgpack decoder', () => {
  it('reads every one-byte result and every list of up to 15 authenticator results as the decoder does', () => {
    const seed = Number(process.env['REMORA_SEED'] ?? 7);
    console.log(`table rest test: seed ${seed} (REMORA_SEED to replay)`);
    const rand = xorshift(seed);
    const results: (null | boolean | number)[] = [null, true, false];
    for (let n = -32; n <= 127; n++) results.push(n);
    for (const result of results) {
      for (let n = 0; n <= 15; n++) {
        const auth = Array.from({ length: n }, () => [true, false, null][Math.floor(rand() * 3)] ?? null);
        const b = encodeTable(table(auth, { status: 'ok', result }));
        const rest = decodeTableRest(b, tableShape(b));
        expect(rest).toEqual({ dynamic: [], auth, precompiles: [], outcome: { status: 'ok', result } });
        expect(rest).toEqual(decodeTableRestFully(b, tableShape(b)));
      }
    }
  });

  it('reads or refuses every rest one byte away from a common one exactly as the decoder does', () => {
    const samples = [
      encodeTable(table([true, true], { status: 'ok', result: null })),
      encodeTable(table([], { status: 'ok', result: 5 })),
      encodeTable(table([null, false, true], { status: 'ok', result: -3 })),
    ];
    let compared = 0;
    for (const good of samples) {
      const restAt = tableShape(good).restAt;
      for (let at = restAt; at < good.length; at++) {
        for (let v = 0; v < 256; v++) {
          const b = Buffer.from(good);
          b[at] = v;
          expect(read(decodeTableRest, b), `byte ${at - restAt} of the rest set to ${v}`).toEqual(read(decodeTableRestFully, b));
          compared++;
        }
      }
      // Shorter and longer rests: the header's length no longer matches, both refuse alike.
      const cut = Buffer.from(good.subarray(0, good.length - 1));
      expect(read(decodeTableRest, cut)).toEqual(read(decodeTableRestFully, cut));
    }
    expect(compared).toBeGreaterThan(3 * 20 * 256);
  });

  it('leaves aborted outcomes, dynamic reads and pre-compiles to the decoder', () => {
    const aborted = encodeTable({ ...table([true], { status: 'aborted', reason: 'insufficient funds' }), writes: [] });
    expect(decodeTableRest(aborted, tableShape(aborted)).outcome).toEqual({ status: 'aborted', reason: 'insufficient funds' });
    const dynamic = encodeTable({ ...table([], { status: 'ok', result: 'x' }), dynamic: [['kv/a', 2n, null]], precompiles: [['sha256', Uint8Array.of(1)]] });
    expect(decodeTableRest(dynamic, tableShape(dynamic))).toEqual(decodeTableRestFully(dynamic, tableShape(dynamic)));
    expect(decodeTableRest(dynamic, tableShape(dynamic)).dynamic).toEqual([['kv/a', 2n, null]]);
  });
});
