// Two in-process Heron replicas of `kv`, one per partition of two, that tests drive by hand:
// deliveries, arrivals and the outcomes each replica sends. Not a test file of its own.
import { join } from 'node:path';
import { admitTx } from '../ts/app/admit.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { destinations, partitionerOf } from '../ts/app/partition.js';
import { kvApp } from '../ts/apps/kv.js';
import type { Delivered, FromReplica } from '../ts/heron/messages.js';
import { HeronReplica } from '../ts/heron/replica.js';
import { loadOrCreateSecret } from '../ts/secret.js';

export type OutcomeMsg = Extract<FromReplica, { t: 'outcome' }>;

export interface ReplicaPair {
  a: HeronReplica;
  b: HeronReplica;
  /** One key per partition: [partition 0's, partition 1's]. */
  keys: [string, string];
  /** The outcome replica `partition` sent for `ts` (at once if it was sent already). */
  outcome(partition: number, ts: bigint): Promise<OutcomeMsg>;
  /** Whether replica `partition` has sent its outcome for `ts`. */
  sent(partition: number, ts: bigint): boolean;
  /** A transaction as the ring would deliver it at `ts`. */
  delivered(ts: bigint, raw: Parameters<typeof admitTx>[1]): Delivered;
  close(): Promise<void>;
}

/** Starts and connects the pair in `dir` (under `work`). */
export async function startPair(work: string, dir: string): Promise<ReplicaPair> {
  const at = join(work, dir);
  const secret = loadOrCreateSecret(at);
  const waiting = new Map<string, (m: OutcomeMsg) => void>();
  const seen = new Map<string, OutcomeMsg>();
  const replicas = [0, 1].map((partition) =>
    HeronReplica.create({
      dir: at,
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
        waiting.get(k)?.(m);
      },
    }),
  );
  const [a, b] = replicas as [HeronReplica, HeronReplica];
  const close = async () => {
    await Promise.all(replicas.map((r) => r.close()));
  };
  try {
    await Promise.all(replicas.map((r) => r.connect(20_000)));
  } catch (e) {
    await close();
    throw e;
  }
  const part = partitionerOf(kvApp, 2);
  const found: string[] = [];
  for (let i = 0; found[0] === undefined || found[1] === undefined; i++) found[part(`kv/k${i}`)] ??= `k${i}`;
  return {
    a,
    b,
    keys: [found[0], found[1]],
    outcome: (partition, ts) => {
      const k = `${partition}@${ts}`;
      const m = seen.get(k);
      return m ? Promise.resolve(m) : new Promise((resolve) => waiting.set(k, resolve));
    },
    sent: (partition, ts) => seen.has(`${partition}@${ts}`),
    delivered: (ts, raw) => {
      const tx = admitTx(kvApp, raw);
      return { ts, body: tx.body, auth: tx.auth, dest: destinations(tx.objects, part), tx };
    },
    close,
  };
}
