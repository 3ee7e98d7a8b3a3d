// The launcher keeps the replies and first outcomes of the last `recentReplies` transactions,
// not of every one: a replica answering an older transaction is counted as having answered,
// not taken for a first answer, and a duplicate of one is refused as no longer kept.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/kv.js';
import { HeronCluster } from '../ts/heron/cluster.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-outcomes-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the launcher keeps recent outcomes only', () => {
  it('refuses a recentReplies that is not a positive integer, before starting anything', async () => {
    await expect(HeronCluster.start({ dir: join(work, 'bad'), app: 'kv', partitions: 1, replicas: 1, recentReplies: 0 })).rejects.toThrow(
      'recentReplies must be a positive integer, got 0',
    );
  });

  it('counts a late replica answering a forgotten transaction, and refuses a duplicate of it', async () => {
    const cluster = await HeronCluster.start({ dir: join(work, 'late'), app: 'kv', partitions: 1, replicas: 3, recentReplies: 4, log: () => undefined });
    const puts = Array.from({ length: 10 }, (_, i) => makeTx(kvApp, 'put', { key: `k${i % 3}`, value: i, nonce: `late.${i}` }));
    let stopped = false;
    try {
      // Replica 2 answers nothing while the others answer all ten: the first six leave the
      // launcher's memory before replica 2 answers them.
      cluster.signal(0, 2, 'SIGSTOP');
      stopped = true;
      for (const tx of puts) expect((await cluster.submit(tx)).outcome).toEqual({ status: 'ok', result: null });
      cluster.signal(0, 2, 'SIGCONT');
      stopped = false;
      expect(await cluster.settle(60_000)).toBe(true);
      // Nothing else piled up: a late answer taken for a first one would be held as an early
      // reply for a submitter that never comes.
      expect(cluster.kept()).toEqual({ replies: 4, outcomes: 4, early: 0 });
      // Its late answers were not first answers: had they been taken for ones, the first put's
      // reply would be kept again and its duplicate answered with it.
      await expect(cluster.submit(puts[0] as (typeof puts)[number])).rejects.toThrow(/^transaction is a duplicate of ts \d+, whose reply is no longer kept$/);
      const again = await cluster.submit(puts[9] as (typeof puts)[number]);
      expect([again.duplicate, again.outcome]).toEqual([true, { status: 'ok', result: null }]);
    } finally {
      if (stopped) cluster.signal(0, 2, 'SIGCONT');
      await cluster.close();
    }
    expect(cluster.outcomeMismatches).toEqual([]);
    expect(cluster.decisionMismatches).toEqual([]);
    expect(cluster.divergences).toEqual([]);
  }, 120_000);
});
