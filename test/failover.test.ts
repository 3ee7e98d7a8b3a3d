// The client library's failover: a node killed mid-run, its clients resubmitting everything
// unanswered to the next node (here the same node restarted), no transaction lost or applied
// twice (DESIGN invariant 4), every submit answered.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import type { Transaction } from '../ts/app/tx.js';
import { loadApp } from '../ts/apps/index.js';
import { RemoraClient } from '../ts/client.js';
import { NODE_SOCKET } from '../ts/cluster.js';
import type { Reply } from '../ts/pipeline/node.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { RoleProcess } from '../ts/process.js';
import { loadClientSecret } from '../ts/secret.js';
import { kvWorkload } from '../ts/workload.js';
import { clusterPerTest } from './helpers.js';

const startNode = (dir: string) => RoleProcess.start('node', ['--dir', dir, '--app', 'kv', '--pre-executors', '1']);

describe('client failover', () => {
  const cluster = clusterPerTest();
  const children = cluster.children;

  it('resubmits what was in flight when the node died; every submit gets its one outcome', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`failover test: seed ${seed}`);
    const gen = kvWorkload({ keys: 100, hotKeys: 4, conflictRate: 0.3, dynamicRate: 0.1, seed });
    const txs: Transaction[] = Array.from({ length: 2000 }, () => {
      const n = gen.next();
      if (n.done) throw new Error('workload ended');
      return n.value;
    });
    const first = await startNode(cluster.dir);
    children.push(first);
    const failovers: number[] = [];
    const client = await RemoraClient.connect({
      endpoints: [{ path: join(cluster.dir, NODE_SOCKET) }],
      secret: loadClientSecret(cluster.dir),
      giveUpMs: 60_000,
      onFailover: (_, resent) => failovers.push(resent),
    });
    let restarted: Promise<RoleProcess> | null = null;
    const replies = new Map<number, Reply>();
    const inFlight = new Set<Promise<void>>();
    for (const [i, tx] of txs.entries()) {
      const p = client.submit(tx).then((r) => {
        replies.set(i, r);
        // Kill the node with many transactions in flight, and start it again at once.
        if (replies.size === 600 && !restarted) {
          first.kill('SIGKILL');
          restarted = first.exited.then(() => startNode(cluster.dir));
        }
      });
      const tracked = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      if (inFlight.size >= 128) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    expect(restarted).not.toBeNull();
    const second = await (restarted as unknown as Promise<RoleProcess>);
    children.push(second);
    expect(replies.size).toBe(txs.length);
    expect(failovers.length).toBe(1);
    expect(failovers[0]).toBeGreaterThan(0);
    client.close();
    const result = (await second.finish()) as { digest: string; lastApplied: string };
    children.splice(0);

    const entries = await readSequence(join(cluster.dir, 'log'));
    expect(new Set(entries.map((e) => e.tx.digest)).size).toBe(entries.length);
    const unique = new Set(txs.map((t) => Buffer.from(t.body).toString('hex'))).size;
    expect(entries.length).toBe(unique);
    // Each reply names the one position its transaction holds in the log.
    const at = new Map(entries.map((e) => [e.tx.digest, e.ts]));
    const tsOf = new Set([...replies.values()].map((r) => r.ts));
    for (const ts of tsOf) expect(ts >= 1n && ts <= BigInt(entries.length)).toBe(true);
    expect(tsOf.size).toBe(at.size);
    expect(result.lastApplied).toBe(String(entries.length));
    expect(result.digest).toBe(executeSequentially(loadApp('kv'), entries, nativeFunctions).state.digest());
  }, 120_000);
});
