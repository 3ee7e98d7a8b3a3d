// The outcome bytes a replica replies with are compared byte for byte across replicas: the
// ones `encodeOutcome` keeps encoded (null, true, false results) must be exactly the codec's.
import { describe, expect, it } from 'vitest';
import { encode } from '../ts/app/codec.js';
import type { Outcome } from '../ts/app/exec.js';
import { encodeOutcome, encodeReplyRecord, keptOutcome, REPLY_HEADER_BYTES } from '../ts/heron/messages.js';
import { parseOutcomeBytes } from '../ts/heron/parse.js';

const outcomes: Outcome[] = [
  { status: 'ok', result: null },
  { status: 'ok', result: true },
  { status: 'ok', result: false },
  { status: 'ok', result: 0 },
  { status: 'ok', result: 'null' },
  { status: 'ok', result: [null] },
  { status: 'aborted', reason: 'no such key' },
];

describe('outcome bytes', () => {
  it('are the canonical encoding, kept or not, and decode back', () => {
    for (const o of outcomes) {
      const bytes = encodeOutcome(o);
      expect(bytes.equals(encode(o))).toBe(true);
      expect(parseOutcomeBytes(bytes)).toEqual(o);
    }
  });

  it('kept ones are not shared with the reply records built from them', () => {
    const o: Outcome = { status: 'ok', result: null };
    const timing = { phase2: 0, execute: 1, phase4: 0, delayed: 0, graceWaits: 0, graceMicros: 0 };
    const record = encodeReplyRecord({ t: 'outcome', ts: 1n, outcome: o, partition: 0, replica: 0, timing, decision: 'executed' });
    record.fill(0xff, REPLY_HEADER_BYTES);
    expect(encodeOutcome(o).equals(encode(o))).toBe(true);
  });

  it('kept ones are told from their bytes as fresh outcomes; others are left to decoding', () => {
    const first = keptOutcome(encode({ result: null, status: 'ok' }));
    expect(first).toEqual({ status: 'ok', result: null });
    if (first?.status === 'ok') first.result = 'changed';
    expect(keptOutcome(encode({ result: null, status: 'ok' }))).toEqual({ status: 'ok', result: null });
    expect(keptOutcome(encode({ result: false, status: 'ok' }))).toEqual({ status: 'ok', result: false });
    for (const v of [
      { result: 0, status: 'ok' },
      { result: null, status: 'okay' },
      { reason: 'x', status: 'aborted' },
    ])
      expect(keptOutcome(encode(v))).toBeUndefined();
    expect(keptOutcome(new Uint8Array(0))).toBeUndefined();
  });
});
