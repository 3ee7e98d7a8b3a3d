// Phase 4 off the reply path: a replica replies as soon as it has executed a multi-partition
// transaction, and until every destination has executed it too, writes no object a second
// time, so the other destinations still read its objects as of the transaction (Heron,
// Figure 3b; the store keeps two versions).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/kv.js';
import { PHASE_DELIVERED, PHASE_EXECUTED } from '../ts/heron/phases.js';
import { startPair } from './heron-pair.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-phase4-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A few turns of the event loop: what a replica could do at once, it has done. */
async function turns(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

describe('phase 4 waited for before a write that needs it, not before the reply', () => {
  it('replies before its peer executes, and overwrites nothing twice until the peer has read', async () => {
    const { a, b, keys, outcome, sent, delivered, close } = await startPair(work, 'phase4');
    const put = (ts: bigint, key: string, value: string) => delivered(ts, makeTx(kvApp, 'put', { key, value, nonce: Number(ts) }));
    try {
      const [x, y] = keys;
      // Entry 0 is replica 0.0's, as the replica of partition 1 sees it in its own region.
      const aAtB = () => b.coordinator.entries()[0];

      a.deliver([put(1n, x, 'v1')]);
      expect((await outcome(0, 1n)).outcome).toEqual({ status: 'ok', result: null });

      // 1.0 reaches ts 5 (phase 2) but has not executed it: 0.0 executes and replies anyway.
      const copy = delivered(5n, makeTx(kvApp, 'copy', { from: x, to: y, nonce: 5 }));
      expect(copy.dest).toEqual([0, 1]);
      b.arriving(5n, [0, 1]);
      a.deliver([copy]);
      const fromA = await outcome(0, 5n);
      expect(fromA.outcome).toEqual({ status: 'ok', result: 'v1' });
      expect(fromA.timing.phase4).toBe(0);
      expect(sent(1, 5n)).toBe(false);
      expect(aAtB()).toEqual({ ts: 5n, phase: PHASE_EXECUTED });

      // Two more writes of x would leave no version of it before ts 5 in 0.0's store (it keeps
      // two): 0.0 may apply the first while 1.0 may still read x for ts 5, not the second.
      a.deliver([put(7n, x, 'v7'), put(8n, x, 'v8')]);
      expect((await outcome(0, 7n)).timing.phase4).toBe(0);
      await turns();
      expect(sent(0, 8n)).toBe(false);
      expect(a.busy).toBe(true);
      expect(b.coordinator.entries()[1]).toEqual({ ts: 5n, phase: PHASE_DELIVERED });

      // 1.0 executes ts 5, reading x from 0.0 as of ts 5 (still there beside v7), then 0.0
      // goes on.
      b.deliver([copy]);
      const fromB = await outcome(1, 5n);
      expect(fromB.outcome).toEqual(fromA.outcome);
      const [seven, eight] = await Promise.all([outcome(0, 7n), outcome(0, 8n)]);
      expect(eight.timing.phase4).toBeGreaterThan(0);
      expect(seven.outcome).toEqual({ status: 'ok', result: null });
      expect(eight.outcome).toEqual({ status: 'ok', result: null });
      expect(a.summary().coordinations).toBe(2);

      // A multi-partition transaction next: its phase-2 wait covers what phase 4 owes (1.0's
      // entry at phase 2 of ts 10 is past phase 4 of ts 9), so there is one wait, not two.
      b.arriving(9n, [0, 1]);
      const there = delivered(9n, makeTx(kvApp, 'copy', { from: x, to: y, nonce: 9 }));
      const back = delivered(10n, makeTx(kvApp, 'copy', { from: y, to: x, nonce: 10 }));
      a.deliver([there, back, put(11n, x, 'v11')]);
      expect((await outcome(0, 9n)).outcome).toEqual({ status: 'ok', result: 'v8' });
      await turns();
      expect(sent(0, 10n)).toBe(false);
      b.deliver([there, back]);
      const [nineAtB, tenAtA, tenAtB] = await Promise.all([outcome(1, 9n), outcome(0, 10n), outcome(1, 10n)]);
      expect(nineAtB.outcome).toEqual({ status: 'ok', result: 'v8' });
      expect(tenAtA.outcome).toEqual({ status: 'ok', result: 'v8' });
      expect(tenAtB.outcome).toEqual(tenAtA.outcome);
      expect(tenAtA.timing.phase4).toBe(0);
      expect((await outcome(0, 11n)).outcome).toEqual({ status: 'ok', result: null });
      expect(a.summary().coordinations).toBe(5);
      expect(b.summary().transfers).toBe(0);
    } finally {
      await close();
    }
  });
});
