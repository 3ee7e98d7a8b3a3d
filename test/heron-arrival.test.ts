// Phase 2 announced as a transaction arrives (HeronReplica.arriving): only when the replica
// has applied everything before it, since the entry tells peers they may read its store as of
// just before that timestamp.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/kv.js';
import { PHASE_DELIVERED, PHASE_EXECUTED } from '../ts/heron/phases.js';
import { startPair } from './heron-pair.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-arrival-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('phase 2 announced on arrival', () => {
  it('is written to the peers only while nothing before the transaction is left to apply', async () => {
    const { a, b, keys, outcome, delivered, close } = await startPair(work, 'arrival');
    try {
      // Entry 0 is replica 0.0's, as the replica of partition 1 sees it in its own region.
      const aAtB = () => b.coordinator.entries()[0];
      const [x, y] = keys;
      const copy = (ts: bigint, nonce: number) => delivered(ts, makeTx(kvApp, 'copy', { from: x, to: y, nonce }));

      a.arriving(3n, [0, 1]);
      expect(aAtB()).toEqual({ ts: 3n, phase: PHASE_DELIVERED });
      // Single-partition transactions coordinate with nobody.
      a.arriving(4n, [0]);
      expect(aAtB()).toEqual({ ts: 3n, phase: PHASE_DELIVERED });

      // 0.0 takes ts 5 and waits in phase 2 for 1.0, which has not got it yet: 0.0 is busy,
      // so a later arrival must not announce (ts 5 is not applied).
      const five = copy(5n, 1);
      expect(five.dest).toEqual([0, 1]);
      a.deliver([five]);
      expect(a.busy).toBe(true);
      a.arriving(6n, [0, 1]);
      expect(aAtB()).toEqual({ ts: 5n, phase: PHASE_DELIVERED });

      b.deliver([five]);
      const [fromA, fromB] = await Promise.all([outcome(0, 5n), outcome(1, 5n)]);
      expect(fromA.outcome).toEqual(fromB.outcome);
      await a.drained();
      expect(aAtB()).toEqual({ ts: 5n, phase: PHASE_EXECUTED });
      // Applied through 5: an arrival at or before it says nothing new.
      a.arriving(5n, [0, 1]);
      expect(aAtB()).toEqual({ ts: 5n, phase: PHASE_EXECUTED });
      // Idle again: the next arrival is announced, and its turn finds the peer's entry there.
      a.arriving(6n, [0, 1]);
      expect(aAtB()).toEqual({ ts: 6n, phase: PHASE_DELIVERED });
    } finally {
      await close();
    }
  });
});
