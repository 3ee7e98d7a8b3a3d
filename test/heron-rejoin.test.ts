// A crashed Heron replica rejoins: 2 partitions x 3 replicas of kv as child processes under
// concurrent clients; replica 1.2 is SIGKILLed mid-run and restarted by the launcher, starts
// empty, catches up by state transfer while the clients go on, and serves again: once replica
// 1.1 is SIGKILLed too, partition 1 can only make progress with 1.2 in its majority; 1.1 is then
// restarted by hand. Peers re-attach to a restarted replica's new coordination region when the
// launcher tells them it restarted. The whole history must be linearizable (Porcupine, test/porcupine) and
// the replicas of each partition must end equal.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/kv.js';
import { HeronCluster } from '../ts/heron/cluster.js';
import { parseHeronConfig } from '../ts/heron/config.js';

import { buildChecker, check as checkIn, finalReads, killAndRejoin, micros, runClients, type Op } from './kv-history.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-rejoin-'));
const check = (name: string, history: unknown) => checkIn(work, name, history);

beforeAll(buildChecker, 200_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A cluster log that can be waited on: `next(re)` resolves with the first line matching it (bounded). */
function watchedLog(): { log: (m: string) => void; lines: string[]; next: (re: RegExp, timeoutMs: number) => Promise<string> } {
  const lines: string[] = [];
  let waiters: { re: RegExp; resolve: (m: string) => void }[] = [];
  return {
    lines,
    log: (m) => {
      lines.push(m);
      const hit = waiters.filter((w) => w.re.test(m));
      waiters = waiters.filter((w) => !w.re.test(m));
      for (const w of hit) w.resolve(m);
    },
    next: (re, timeoutMs) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no log line matching ${re} within ${timeoutMs} ms; got:\n${lines.join('\n')}`)), timeoutMs);
        waiters.push({
          re,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
        });
      }),
  };
}

describe('heron rejoin', () => {
  it('restarts a replica at most 3 times a minute, then gives up and says so', async () => {
    const dir = join(work, 'budget');
    const watched = watchedLog();
    const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 2, replicas: 3, restartReplicas: true, log: watched.log });
    try {
      // Idle: each restart catches up from nothing (a peer ships its empty prefix).
      for (let n = 1; n <= 3; n++) {
        cluster.signal(0, 1, 'SIGKILL');
        expect(await cluster.waitRejoins(n, 60_000)).toBe(true);
        expect(cluster.rejoins[n - 1]).toMatchObject({ partition: 0, replica: 1, needed: 0n, ts: 0n });
      }
      const gaveUp = watched.next(/not restarting/, 30_000);
      cluster.signal(0, 1, 'SIGKILL');
      expect(await gaveUp).toBe('heron: replica 0.1 exited 4 times within a minute; not restarting it again (restartReplica restarts it by hand)');
      // The partition still serves with its majority.
      const reply = await cluster.submit(makeTx(kvApp, 'put', { key: 'a', value: 1, nonce: 'budget' }));
      expect(reply.outcome.status).toBe('ok');
    } finally {
      const summaries = await cluster.close();
      expect(summaries.map((s) => `${s.partition}.${s.replica}`)).toEqual(['0.0', '0.2', '1.0', '1.1', '1.2']);
    }
    // Peers re-attach to a restarted replica's new coordination region: nothing of the dead
    // incarnations' is kept.
    expect(readdirSync(dir).filter((n) => n.includes('.prev-'))).toEqual([]);
  }, 240_000);

  it('takes restartReplicas from a cluster file, as a boolean only', () => {
    const file = (extra: object) => JSON.stringify({ app: 'kv', partitions: 2, replicas: 3, ...extra });
    expect(parseHeronConfig(file({ restartReplicas: true }), 'c.json').restartReplicas).toBe(true);
    expect(parseHeronConfig(file({}), 'c.json').restartReplicas).toBeUndefined();
    expect(() => parseHeronConfig(file({ restartReplicas: 'yes' }), 'c.json')).toThrow('c.json: "restartReplicas" must be true or false, got "yes"');
  });

  it('restarts a SIGKILLed replica, which catches up by state transfer under load and then carries its partition', async () => {
    const seed = Number(process.env['HERON_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron rejoin seed ${seed}`);
    const dir = join(work, 'rejoin');
    const logged: string[] = [];
    const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 2, replicas: 3, restartReplicas: true, log: (m) => logged.push(m) });
    const t0 = micros();
    const history: Op[] = [];
    let summaries: Awaited<ReturnType<HeronCluster['close']>> = [];
    try {
      // 1. Load; replica 1.2 is killed, restarted, and catches up from empty (kv-history.ts).
      await killAndRejoin(cluster, seed, t0, history);
      expect(logged.some((m) => /replica 1\.2 exited \(SIGKILL\)/.test(m))).toBe(true);
      // The restarted process is the one running now; its dead incarnation's coordination
      // file is not kept (peers re-attached to the new one).
      expect(readdirSync(dir).filter((n) => n.includes('.prev-'))).toEqual([]);

      // 2. Replica 1.1 dies for good: partition 1 is 1.0 and the rejoined 1.2.
      cluster.restartReplicas = false;
      cluster.signal(1, 1, 'SIGKILL');
      history.push(...(await runClients(cluster, seed + 1, 4, 10, t0, (i) => i < 15)));

      // 3. By hand: a running replica is not restarted; the dead 1.1 is, and rejoins (from
      // 1.0 or from the rejoined 1.2) while nothing else runs.
      await expect(cluster.restartReplica(0, 0)).rejects.toThrow(/^replica 0\.0 is running \(pid \d+\): only a replica that exited can be restarted$/);
      const again = await cluster.restartReplica(1, 1);
      expect(again).toMatchObject({ partition: 1, replica: 1 });
      expect(again.ts).toBe(again.needed);
      expect(cluster.rejoins).toHaveLength(2);
      history.push(...(await runClients(cluster, seed + 2, 4, 20, t0, (i) => i < 8)));

      // 4. A final read of every key, then the whole history must linearize.
      await finalReads(cluster, history, t0);
      const r = check('rejoin', { operations: history });
      expect(r.out).toContain(`linearizable: ${history.length} operations`);
      expect(r.status).toBe(0);
    } catch (e) {
      console.log(`heron rejoin failed (seed ${seed}); the cluster's log:\n${logged.join('\n')}`);
      throw e;
    } finally {
      summaries = await cluster.close();
    }
    expect(summaries.map((s) => `${s.partition}.${s.replica}`)).toEqual(['0.0', '0.1', '0.2', '1.0', '1.1', '1.2']);
    expect(cluster.divergences).toEqual([]);
    expect(cluster.outcomeMismatches).toEqual([]);
    const [p10, p11, p12] = [0, 1, 2].map((q) => summaries.find((s) => s.partition === 1 && s.replica === q));
    for (const rejoined of [p11, p12]) {
      // The rejoin, and any catch-up of a lagger since (a remote read finding only newer versions).
      expect(rejoined?.transfers).toBeGreaterThanOrEqual(1);
      expect(rejoined?.digest).toBe(p10?.digest);
      expect(rejoined?.applied).toBe(p10?.applied);
      expect(rejoined?.lastTs).toBe(p10?.lastTs);
    }
    // It coordinated multi-partition transactions after rejoining (partition 1 needed it).
    expect(p12?.coordinations).toBeGreaterThan(0);
    const p0 = summaries.filter((s) => s.partition === 0);
    expect(new Set(p0.map((s) => s.digest)).size).toBe(1);
  }, 240_000);
});
