// The reply frame's writer (ts/pipeline/reply-frames.ts) must write exactly the bytes the wire's
// msgpack encoder writes for the same reply, so clients decode it as before; whatever it does
// not know, it leaves to the encoder.
import { randomBytes } from 'node:crypto';
import { Packr, RESERVE_START_SPACE } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import type { Data } from '../ts/app/codec.js';
import type { Outcome } from '../ts/app/exec.js';
import type { Decision } from '../ts/pipeline/merge.js';
import { replyFrame } from '../ts/pipeline/reply-frames.js';
import { encodeTable, receiveTable } from '../ts/pipeline/table-bytes.js';
import { xorshift } from './helpers.js';

// As the wire packs (ts/wire.ts).
const packr = new Packr({ useRecords: false, int64AsType: 'bigint' });

/** The frame `Conn.send` writes for this reply. */
function viaEncoder(id: number, ts: bigint, duplicate: boolean, outcome: Outcome | null, decision: Decision | null): Buffer {
  const frame = packr.pack({ t: 'reply', id, ts, duplicate, outcome, decision }, RESERVE_START_SPACE | 4);
  frame.writeUInt32BE(frame.length - 4, 0);
  return Buffer.from(frame);
}

/** The outcome an adopted table with this result carries: the shared object, when the result is one byte. */
function adoptedOutcome(result: Data): Outcome {
  const table = { reads: [], dynamic: [], speculative: [], writes: [], auth: [true], precompiles: [], outcome: { status: 'ok' as const, result } };
  return receiveTable(encodeTable(table)).rest.outcome;
}

const ONE_BYTE_RESULTS: Data[] = [null, true, false, 0, 1, 31, 32, 127, -1, -32];
const DECISIONS: (Decision | null)[] = ['adopted', 'reexecuted', 'executed', null];
const IDS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1];
const TSS = [0n, 1n, 255n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n - 1n];

describe('reply frames', () => {
  it('writes the bytes the encoder writes, at every size boundary of id and ts', () => {
    let written = 0;
    for (const result of ONE_BYTE_RESULTS) {
      const outcome = adoptedOutcome(result);
      for (const decision of DECISIONS)
        for (const id of IDS)
          for (const ts of TSS)
            for (const duplicate of [false, true]) {
              const frame = replyFrame(id, ts, duplicate, outcome, decision);
              expect(frame, `${String(result)} ${decision} ${id} ${ts}`).toEqual(viaEncoder(id, ts, duplicate, outcome, decision));
              written++;
            }
    }
    expect(written).toBe(ONE_BYTE_RESULTS.length * DECISIONS.length * IDS.length * TSS.length * 2);
  });

  it('writes the bytes the encoder writes for random replies', () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`reply frames: seed ${seed} (REMORA_SEED to replay)`);
    const next = xorshift(seed);
    const rand = (n: number): number => Math.floor(next() * n);
    const outcomes = ONE_BYTE_RESULTS.map(adoptedOutcome);
    for (let i = 0; i < 5000; i++) {
      const id = rand(2) === 0 ? rand(300) : rand(2 ** 32);
      const ts = BigInt(rand(2 ** 21)) * BigInt(rand(2 ** 32)) + BigInt(rand(2 ** 32));
      const outcome = outcomes[rand(outcomes.length)] as Outcome;
      const decision = DECISIONS[rand(DECISIONS.length)] as Decision | null;
      const duplicate = rand(2) === 1;
      expect(replyFrame(id, ts, duplicate, outcome, decision)).toEqual(viaEncoder(id, ts, duplicate, outcome, decision));
    }
  });

  it('leaves to the encoder what it does not know', () => {
    const shared = adoptedOutcome(null);
    // An equal outcome that is not the shared object: an executed transaction's own.
    expect(replyFrame(1, 5n, false, { status: 'ok', result: null }, 'executed')).toBeUndefined();
    // Results of more than one byte, aborted outcomes, no outcome.
    expect(replyFrame(1, 5n, false, adoptedOutcome(1000), 'adopted')).toBeUndefined();
    expect(replyFrame(1, 5n, false, adoptedOutcome('done'), 'adopted')).toBeUndefined();
    expect(replyFrame(1, 5n, false, { status: 'aborted', reason: 'no' }, 'executed')).toBeUndefined();
    expect(replyFrame(1, 5n, true, null, null)).toBeUndefined();
    // Ids the encoder writes otherwise (negative, past 32 bits, fractional), timestamps past 2^53.
    for (const id of [-1, 2 ** 32, 1.5]) expect(replyFrame(id, 5n, false, shared, 'adopted'), String(id)).toBeUndefined();
    expect(replyFrame(1, 2n ** 53n, false, shared, 'adopted')).toBeUndefined();
    expect(replyFrame(1, -1n, false, shared, 'adopted')).toBeUndefined();
    expect(replyFrame(1, 5n, false, shared, 'other' as Decision)).toBeUndefined();
  });
});
