// Phase 2 announced as a transaction arrives (HeronReplica.arriving): only when the replica
// has applied everything before it, since the entry tells peers they may read its store as of
// just before that timestamp.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { admitTx } from '../ts/app/admit.js';
import { makeTx } from '../ts/app/app.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { destinations, partitionerOf } from '../ts/app/partition.js';
import { kvApp } from '../ts/apps/kv.js';
import type { Delivered, FromReplica } from '../ts/heron/messages.js';
import { PHASE_DELIVERED, PHASE_EXECUTED } from '../ts/heron/phases.js';
import { HeronReplica } from '../ts/heron/replica.js';
import { loadOrCreateSecret } from '../ts/secret.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-arrival-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

type OutcomeMsg = Extract<FromReplica, { t: 'outcome' }>;

/** One key per partition of two. */
function keys(): [string, string] {
  const part = partitionerOf(kvApp, 2);
  const found: string[] = [];
  for (let i = 0; found[0] === undefined || found[1] === undefined; i++) found[part(`kv/k${i}`)] ??= `k${i}`;
  return [found[0], found[1]];
}

describe('phase 2 announced on arrival', () => {
  it('is written to the peers only while nothing before the transaction is left to apply', async () => {
    const dir = join(work, 'arrival');
    const secret = loadOrCreateSecret(dir);
    const outcomes = new Map<string, (m: OutcomeMsg) => void>();
    const seen = new Map<string, OutcomeMsg>();
    const replicas = [0, 1].map((partition) =>
      HeronReplica.create({
        dir,
        secret,
        app: kvApp,
        natives: nativeFunctions,
        partitions: 2,
        replicas: 1,
        partition,
        replica: 0,
        graceMs: 2,
        timeoutMs: 20_000,
        transferSlotBytes: 1 << 16,
        // Both replicas run in this process: a wait on this thread would hold the other up.
        coordSpinMicros: 0,
        coordBudgetMicros: 0,
        send: (m) => {
          if (m.t !== 'outcome') return;
          const k = `${m.partition}@${m.ts}`;
          seen.set(k, m);
          outcomes.get(k)?.(m);
        },
      }),
    );
    const [a, b] = replicas as [HeronReplica, HeronReplica];
    const outcome = (partition: number, ts: bigint): Promise<OutcomeMsg> => {
      const k = `${partition}@${ts}`;
      return seen.has(k) ? Promise.resolve(seen.get(k) as OutcomeMsg) : new Promise((resolve) => outcomes.set(k, resolve));
    };
    try {
      await Promise.all(replicas.map((r) => r.connect(20_000)));
      // Entry 0 is replica 0.0's, as the replica of partition 1 sees it in its own region.
      const aAtB = () => b.coordinator.entries()[0];
      const [x, y] = keys();
      const copy = (ts: bigint, nonce: number): Delivered => {
        const tx = admitTx(kvApp, makeTx(kvApp, 'copy', { from: x, to: y, nonce }));
        return { ts, body: tx.body, auth: tx.auth, dest: destinations(tx.objects, partitionerOf(kvApp, 2)), tx };
      };

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
      await Promise.all(replicas.map((r) => r.close()));
    }
  });
});
