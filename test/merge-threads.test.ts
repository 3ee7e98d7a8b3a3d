// The multi-core merge (issue: the overloaded primary): the state and every outcome equal the
// reference executor's at every thread count, conflicts and dynamic reads included, and a
// merge thread that cannot execute costs nothing but its share.
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { App } from '../ts/app/app.js';
import { nativeFunctions } from '../ts/app/natives.js';
import type { DecodedTx } from '../ts/app/tx.js';
import { AppVersions } from '../ts/app/versions.js';
import { builtinApps } from '../ts/apps/index.js';
import { MergeThreads } from '../ts/pipeline/merge-threads.js';
import { Primary, type Applied } from '../ts/pipeline/primary.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { Store } from '../ts/store.js';
import { tempCluster, xorshift } from './helpers.js';
import { expectSequential, mixedStream } from './mixed-stream.js';

describe('multi-core merge', () => {
  let cluster: ReturnType<typeof tempCluster>;
  beforeEach(() => {
    cluster = tempCluster();
  });
  afterEach(() => cluster.cleanup());

  async function run(app: App, versions: AppVersions, txs: readonly DecodedTx[], threads: MergeThreads | undefined, seed: number) {
    const store = new NativePrimaryStore(
      Store.create({ dir: cluster.dir, name: `primary-${threads?.threads ?? 1}-${randomBytes(3).toString('hex')}`, secret: cluster.secret }),
    );
    const applied: Applied[] = [];
    const primary = new Primary(versions, store, nativeFunctions, { deadlineMs: 0, onApplied: (b) => applied.push(...b), ...(threads && { threads }) });
    const rand = xorshift(seed);
    let ts = 0n;
    for (let i = 0; i < txs.length;) {
      // Batches of every size, so runs of every length reach the threads.
      const size = 1 + Math.floor(rand() * 300);
      await primary.deliver(txs.slice(i, i + size).map((tx) => ({ ts: ++ts, tx })));
      i += size;
    }
    const digest = store.digest();
    store.store.close();
    expectSequential(app, txs, digest, applied);
    expect(applied.every((a) => a.decision === 'executed')).toBe(true);
    return primary.stats;
  }

  for (const appName of ['bank', 'kv'] as const) {
    it.each([1, 2, 4])(`${appName}: equals sequential execution with %i merge threads`, async (n) => {
      const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
      console.log(`multi-core merge: ${appName}, ${n} threads, seed ${seed} (REMORA_SEED to replay)`);
      const app = builtinApps[appName];
      const txs = mixedStream(appName, seed, 3_000);
      const threads = n > 1 ? new MergeThreads(n, nativeFunctions) : undefined;
      try {
        const stats = await run(app, new AppVersions({ app, spec: appName, digest: '' }), txs, threads, seed);
        if (threads) {
          // Both paths of the in-order merge ran: tables kept, and tables found stale by an
          // earlier transaction of the batch (hot accounts, undeclared reads) executed again.
          expect(stats.speculationsKept).toBeGreaterThan(0);
          expect(stats.speculated).toBeGreaterThan(stats.speculationsKept);
          expect(threads.stats.failed).toBe(0);
        } else expect(stats.speculated).toBe(0);
      } finally {
        await threads?.close();
      }
    });
  }

  it('executes a failed thread share on the primary, with the reason logged', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`multi-core merge, failing thread: seed ${seed}`);
    const app = builtinApps.bank;
    const logged: string[] = [];
    const threads = new MergeThreads(2, nativeFunctions, (m) => logged.push(m));
    try {
      // The threads load the app by spec and refuse code other than the primary's.
      const stats = await run(app, new AppVersions({ app, spec: 'bank', digest: 'not-the-digest-bank-loads' }), mixedStream('bank', seed, 500), threads, seed);
      expect(threads.stats.failed).toBeGreaterThan(0);
      expect(stats.speculated).toBeGreaterThan(0);
      expect(logged).toHaveLength(1);
      expect(logged[0]).toMatch(
        /^primary: a merge thread could not execute \d+ transactions \(executed in order instead\): merge-1: app bank loaded with digest [0-9a-f]+, the primary runs not-the-digest-bank-loads$/,
      );
    } finally {
      await threads.close();
    }
  });
});
