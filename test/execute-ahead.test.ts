// A lone transaction executes at admission, while the log syncs it (`Primary.executeAhead`):
// the state and every outcome still equal the reference executor's when other transactions
// are applied in between (the ahead execution is then stale and executed again), and a lone
// submission through the node is answered from its ahead execution.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { decodeTx } from '../ts/app/tx.js';
import { builtinApps } from '../ts/apps/index.js';
import { EmbeddedNode } from '../ts/pipeline/node.js';
import { Primary, type Applied } from '../ts/pipeline/primary.js';
import { EmbeddedSequencer } from '../ts/pipeline/sequencer.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { Store } from '../ts/store.js';
import { bankBench } from '../ts/workload.js';
import { tempCluster, xorshift } from './helpers.js';
import { expectSequential, jsonable, mixedStream } from './mixed-stream.js';

describe('execution ahead of the log', () => {
  let cluster: ReturnType<typeof tempCluster>;
  beforeEach(() => {
    cluster = tempCluster();
  });
  afterEach(() => cluster.cleanup());

  for (const appName of ['bank', 'kv'] as const) {
    it(`${appName}: executions ahead, current or stale, give the sequential state and outcomes`, async () => {
      const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
      console.log(`execution ahead: ${appName}, seed ${seed} (REMORA_SEED to replay)`);
      const app = builtinApps[appName];
      const txs = mixedStream(appName, seed, 2_000);
      const store = new NativePrimaryStore(Store.create({ dir: cluster.dir, name: `ahead-${appName}`, secret: cluster.secret }));
      const applied: Applied[] = [];
      const primary = new Primary(app, store, nativeFunctions, { deadlineMs: 0, onApplied: (b) => applied.push(...b) });
      const rand = xorshift(seed);
      let ts = 0n;
      for (let i = 0; i < txs.length;) {
        const size = 1 + Math.floor(rand() * 8);
        const batch = txs.slice(i, i + size);
        // Executed ahead against the state before this batch: the first of the batch sees
        // the state it is ordered on, later ones may read what an earlier one writes.
        for (const tx of batch) if (rand() < 0.7) primary.executeAhead(tx);
        await primary.deliver(batch.map((tx) => ({ ts: ++ts, tx })));
        i += size;
      }
      const digest = store.digest();
      store.store.close();
      expectSequential(app, txs, digest, applied);
      expect(applied.every((a) => a.decision === 'executed')).toBe(true);
      // Both sides of the merge rule ran: kept as executed, and found stale and executed again.
      expect(primary.stats.executionsAheadKept).toBeGreaterThan(0);
      expect(primary.stats.executionsAheadKept).toBeLessThan(primary.stats.executedAhead);
    });
  }

  it('an execution ahead whose transaction is never ordered is dropped when it is forgotten', () => {
    const app = builtinApps.bank;
    const [tx] = mixedStream('bank', 7, 1);
    if (!tx) throw new Error('no transaction');
    const store = new NativePrimaryStore(Store.create({ dir: cluster.dir, name: 'ahead-forget', secret: cluster.secret }));
    const primary = new Primary(app, store, nativeFunctions, { deadlineMs: 0, onApplied: () => undefined });
    primary.executeAhead(tx);
    expect(primary.pendingAhead).toBe(1);
    primary.forget(tx.digest);
    expect(primary.pendingAhead).toBe(0);
    store.store.close();
  });

  it('a lone submission is answered from the execution made while the log synced it', async () => {
    const app = builtinApps.bank;
    const sequencer = new EmbeddedSequencer(join(cluster.dir, 'log'));
    const store = new NativePrimaryStore(Store.create({ dir: cluster.dir, name: 'primary', secret: cluster.secret }));
    const node = new EmbeddedNode(app, nativeFunctions, sequencer, store, { deadlineMs: 50 });
    node.start();
    const b = bankBench({ transfers: 5, conflictRate: 0, seed: 3, accounts: 16 });
    const replies = [];
    // One at a time: each is alone when admitted.
    for (const tx of [...b.setup, ...b.transfers]) replies.push(await node.submit(tx));
    const reference = executeSequentially(
      app,
      [...b.setup, ...b.transfers].map((t, k) => ({ ts: BigInt(k + 1), tx: decodeTx(t) })),
      nativeFunctions,
    );
    expect(replies.map((r) => JSON.stringify(r.outcome, jsonable))).toEqual(replies.map((r) => JSON.stringify(reference.outcomes.get(r.ts), jsonable)));
    expect(node.stats.executedAhead).toBe(replies.length);
    expect(node.stats.executionsAheadKept).toBe(replies.length);
    expect(node.primary.pendingAhead).toBe(0);
    await sequencer.close();
    store.store.close();
  });
});
