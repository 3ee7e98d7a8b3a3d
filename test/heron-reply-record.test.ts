// A replica's reply as a binary record (messages.ts, `encodeReplyRecord`): it decodes to what
// the replica sent, every malformed field is refused with a reason, and the launcher cuts off a
// connection that sends a malformed one while it keeps serving with the real replica.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { encode } from '../ts/app/codec.js';
import type { Outcome } from '../ts/app/exec.js';
import { kvApp } from '../ts/apps/kv.js';
import { HeronCluster } from '../ts/heron/cluster.js';
import {
  DEFAULT_RING_SPIN_MICROS,
  defaultRingSpinMicros,
  encodeOutcome,
  encodeReplyRecord,
  HERON_SOCKET,
  REPLICA_ROLE,
  type FromReplica,
  type Timing,
} from '../ts/heron/messages.js';
import { parseFromReplica, parseOutcomeBytes, ProtocolError } from '../ts/heron/parse.js';
import { loadOrCreateSecret } from '../ts/secret.js';
import { connect } from '../ts/wire.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-reply-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

type OutcomeMsg = Extract<FromReplica, { t: 'outcome' }>;
const timing: Timing = { phase2: 12.5, execute: 9, phase4: 30, delayed: 1, graceWaits: 2, graceMicros: 140.25, arrived: 1_000_000, sent: 1_000_087 };
const reply = (outcome: Outcome, t: Timing = timing): OutcomeMsg => ({
  t: 'outcome',
  ts: 2n ** 63n + 5n,
  outcome,
  partition: 1023,
  replica: 30,
  timing: t,
  decision: 'reexecuted',
});

function reason(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof ProtocolError) return e.message;
    throw e;
  }
  throw new Error('expected a ProtocolError');
}

/** A record with `edit` applied to a copy of its bytes. */
function edited(m: OutcomeMsg, edit: (b: Buffer) => void): Buffer {
  const b = Buffer.from(encodeReplyRecord(m));
  edit(b);
  return b;
}

describe('reply records', () => {
  it('decode to what the replica sent; the outcome is its canonical encoding', () => {
    for (const outcome of [
      { status: 'ok', result: { b: [1, 2n ** 60n, 'x'], a: null } },
      { status: 'aborted', reason: 'insufficient funds' },
    ] as Outcome[]) {
      const got = parseFromReplica(encodeReplyRecord(reply(outcome)));
      if (got.t !== 'outcome') throw new Error(`got ${got.t}`);
      const { bytes, ...rest } = got;
      expect(rest).toEqual({ t: 'outcome', ts: 2n ** 63n + 5n, partition: 1023, replica: 30, timing, decision: 'reexecuted' });
      expect(Buffer.from(bytes).equals(encode(outcome))).toBe(true);
      expect(parseOutcomeBytes(bytes)).toEqual(outcome);
    }
    // Absent stamps stay absent.
    const bare: Timing = { phase2: 1, execute: 2, phase4: 3, delayed: 0, graceWaits: 0, graceMicros: 0 };
    const got = parseFromReplica(encodeReplyRecord(reply({ status: 'ok', result: null }, bare)));
    expect(got.t === 'outcome' && got.timing).toEqual(bare);
  });

  it('a map-form reply (one carrying writes) gives the same bytes as the record', () => {
    const outcome: Outcome = { status: 'ok', result: { z: 1, a: 2 } };
    const m = reply(outcome);
    const fromMap = parseFromReplica({ ...m, writes: [['kv/k', new Uint8Array([1])]] });
    const fromRecord = parseFromReplica(encodeReplyRecord(m));
    if (fromMap.t !== 'outcome' || fromRecord.t !== 'outcome') throw new Error('not outcomes');
    expect(Buffer.from(fromMap.bytes).equals(Buffer.from(fromRecord.bytes))).toBe(true);
    expect(fromMap.outcome).toEqual(outcome);
  });

  it('refuses every malformed field with its reason', () => {
    const m = reply({ status: 'ok', result: 1 });
    const cases: [Buffer, string][] = [
      [encodeReplyRecord(m).subarray(0, 80), 'outcome record: 80 bytes, expected a 80-byte header and an outcome'],
      [edited(m, (b) => (b[0] = 7)), 'outcome record: layout 7, expected 82'],
      [edited(m, (b) => (b[1] = 3)), 'outcome record: decision 3 is not one of 0..2 (adopted, reexecuted, executed)'],
      [edited(m, (b) => b.writeUInt16LE(1024, 2)), 'outcome record: partition and replica must be counts below 1024 and 31'],
      [edited(m, (b) => b.writeUInt16LE(31, 4)), 'outcome record: partition and replica must be counts below 1024 and 31'],
      [edited(m, (b) => b.writeUInt16LE(4, 6)), 'outcome record: flags 4 has bits other than arrived (1) and sent (2)'],
      [edited(m, (b) => b.writeDoubleLE(-1, 16)), 'outcome record: timing.phase2 must be a non-negative number'],
      [edited(m, (b) => b.writeDoubleLE(NaN, 24)), 'outcome record: timing.execute must be a non-negative number'],
      [edited(m, (b) => b.writeDoubleLE(0.5, 40)), 'outcome record: timing.delayed must be a non-negative count'],
      [edited(m, (b) => b.writeDoubleLE(Infinity, 72)), 'outcome record: timing.sent must be a non-negative number'],
    ];
    for (const [frame, why] of cases) expect(reason(() => parseFromReplica(frame))).toBe(why);
    // An absent stamp's slot is not read.
    expect(parseFromReplica(edited(m, (b) => (b.writeUInt16LE(1, 6), b.writeDoubleLE(-1, 72)))).t).toBe('outcome');
    expect(reason(() => parseOutcomeBytes(encode({ status: 'fine' })))).toBe(
      "outcome record: outcome must be { status: 'ok', result } with an encodable result, or { status: 'aborted', reason }",
    );
    expect(reason(() => parseOutcomeBytes(new Uint8Array([0x93, 1])))).toMatch(/^outcome record: the outcome does not decode: /);
  });

  it('encodeOutcome is the codec encoding whatever the key order', () => {
    expect(encodeOutcome({ status: 'ok', result: { b: 1, a: [{ d: 1, c: 2 }] } }).equals(encode({ status: 'ok', result: { b: 1, a: [{ d: 1, c: 2 }] } }))).toBe(
      true,
    );
    expect(encodeOutcome({ status: 'aborted', reason: 'r' }).equals(encode({ status: 'aborted', reason: 'r' }))).toBe(true);
  });
});

describe('the ring reader spin a cluster gets by default', () => {
  it('spins only with a core for every process (launcher, replicas, pre-executors)', () => {
    expect([defaultRingSpinMicros(7, 2), defaultRingSpinMicros(7, 7), defaultRingSpinMicros(7, 8)]).toEqual([0, 0, DEFAULT_RING_SPIN_MICROS]);
  });
});

describe('the launcher and reply records', () => {
  it('cuts off a connection sending a malformed or unannounced record; the real replica keeps answering', async () => {
    const logged: string[] = [];
    const dir = join(work, 'records');
    const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 1, replicas: 1, log: (m) => logged.push(m) });
    try {
      const secret = loadOrCreateSecret(dir);
      const first = await cluster.submit(makeTx(kvApp, 'put', { key: 'k', value: 1, nonce: 'r.1' }));
      expect([first.ts, first.outcome, first.timing.sent !== undefined]).toEqual([1n, { status: 'ok', result: null }, true]);
      const sendAs = async (frame: unknown): Promise<void> => {
        const conn = await connect({ path: join(dir, HERON_SOCKET), secret, role: `${REPLICA_ROLE}:0.0`, log: () => undefined });
        const closed = new Promise<void>((resolve) => conn.onClose(() => resolve()));
        conn.onMessage(() => undefined);
        conn.send(frame);
        await closed;
      };
      const forged = { ...reply({ status: 'ok', result: 'forged' }), ts: 1n, partition: 0, replica: 0 };
      const cases: [unknown, string][] = [
        [encodeReplyRecord(forged).subarray(0, 10), 'outcome record: 10 bytes, expected a 80-byte header and an outcome'],
        [edited(forged, (b) => (b[1] = 9)), 'outcome record: decision 9 is not one of 0..2 (adopted, reexecuted, executed)'],
        [encodeReplyRecord(forged), 'the first message must be hello, got outcome'],
        [encodeReplyRecord({ ...forged, partition: 1 }), 'outcome names replica 1.0'],
      ];
      for (const [frame, why] of cases) {
        const at = logged.length;
        await sendAs(frame);
        expect(logged.slice(at).map((l) => l.replace(/ at .*?: /, ' at PEER: '))).toEqual([`heron: replica 0.0 at PEER: ${why}; closing the connection`]);
      }
      const after = await cluster.submit(makeTx(kvApp, 'get', { key: 'k', nonce: 'r.2' }));
      expect([after.ts, after.outcome, after.from]).toEqual([2n, { status: 'ok', result: 1 }, { partition: 0, replica: 0 }]);
    } finally {
      await cluster.close();
    }
    expect([cluster.outcomeMismatches, cluster.decisionMismatches, cluster.divergences]).toEqual([[], [], []]);
  }, 60_000);
});

describe('in-memory ordering across a restart of the launcher', () => {
  it('a fresh log starts at ts 1; a reopened one is replayed to the replicas first and numbering goes on', async () => {
    const dir = join(work, 'replay');
    const put = (value: number) => makeTx(kvApp, 'put', { key: 'k', value, nonce: `p.${value}` });
    const first = await HeronCluster.start({ dir, app: 'kv', partitions: 1, replicas: 1, ordering: 'memory', log: () => undefined });
    try {
      expect((await first.submit(put(1))).ts).toBe(1n);
      expect((await first.submit(put(2))).ts).toBe(2n);
    } finally {
      await first.close();
    }
    const again = await HeronCluster.start({ dir, app: 'kv', partitions: 1, replicas: 1, ordering: 'memory', log: () => undefined });
    try {
      const get = await again.submit(makeTx(kvApp, 'get', { key: 'k', nonce: 'g.1' }));
      expect([get.ts, get.outcome]).toEqual([3n, { status: 'ok', result: 2 }]);
      // A body ordered before the restart is still a duplicate.
      const dup = await again.submit(put(2));
      expect([dup.ts, dup.duplicate]).toEqual([2n, true]);
    } finally {
      await again.close();
    }
  }, 60_000);
});
