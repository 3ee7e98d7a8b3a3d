// A crashed Heron replica rejoins: 2 partitions x 3 replicas of kv as child processes under
// concurrent clients; replica 1.2 is SIGKILLed mid-run and restarted by the launcher, starts
// empty, catches up by state transfer while the clients go on, and serves again: once replica
// 1.1 is SIGKILLed too, partition 1 can only make progress with 1.2 in its majority; 1.1 is then
// restarted by hand. Peers re-attach to a restarted replica's new coordination region when the
// launcher tells them it restarted. The whole history must be linearizable (Porcupine, test/porcupine) and
// the replicas of each partition must end equal.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/kv.js';
import { HeronCluster } from '../ts/heron/cluster.js';
import { parseHeronConfig } from '../ts/heron/config.js';

const ROOT = join(import.meta.dirname, '..');
const CHECKER = join(ROOT, 'target', 'porcupine-kv');
const work = mkdtempSync(join(tmpdir(), 'remora-heron-rejoin-'));

beforeAll(() => {
  // The first run fetches Porcupine through the Go module proxy: bounded.
  execFileSync('go', ['build', '-o', CHECKER, '.'], { cwd: join(ROOT, 'test', 'porcupine'), stdio: 'inherit', timeout: 180_000 });
}, 200_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

function check(name: string, history: unknown): { status: number | null; out: string } {
  const path = join(work, `${name}.json`);
  writeFileSync(path, JSON.stringify(history));
  const r = spawnSync(CHECKER, [path], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** mulberry32: a failing run replays from its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Op {
  client: number;
  call: number;
  return: number;
  input: Record<string, string>;
  output: string;
}

// Four of these keys are in partition 1 (f, h, i, j), six in partition 0.
const KEYS = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
const micros = (): number => Number(process.hrtime.bigint() / 1000n);

/**
 * Closed-loop clients of random kv operations (a third of them copies, most across
 * partitions), each going on while `more(i)` says so. `after(n)` sees progress.
 */
async function runClients(cluster: HeronCluster, seed: number, clients: number, first: number, t0: number, more: (i: number) => boolean, after?: (done: number) => void): Promise<Op[]> {
  const history: Op[] = [];
  let done = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const client = first + c;
      const next = rng(seed * 31 + client);
      const key = () => KEYS[Math.floor(next() * KEYS.length)] ?? 'a';
      for (let i = 0; more(i); i++) {
        const value = client * 1000 + i;
        // Every operation distinct: the log treats an identical body as a retry of the first.
        const nonce = `${client}.${i}`;
        const pick = next();
        let tx;
        let input: Record<string, string>;
        if (pick < 0.3) {
          const k = key();
          [tx, input] = [makeTx(kvApp, 'get', { key: k, nonce }), { op: 'get', key: k }];
        } else if (pick < 0.65) {
          const k = key();
          [tx, input] = [makeTx(kvApp, 'put', { key: k, value, nonce }), { op: 'put', key: k, value: JSON.stringify(value) }];
        } else {
          const [f, t] = [key(), key()];
          [tx, input] = [makeTx(kvApp, 'copy', { from: f, to: t, nonce }), { op: 'copy', from: f, to: t }];
        }
        const call = micros() - t0;
        const reply = await cluster.submit(tx);
        const ret = micros() - t0;
        if (reply.outcome.status !== 'ok') throw new Error(`op ${JSON.stringify(input)} aborted: ${reply.outcome.reason}`);
        history.push({ client, call, return: ret, input, output: JSON.stringify(reply.outcome.result) });
        after?.(++done);
      }
    }),
  );
  return history;
}

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
      // 1. Load; replica 1.2 is killed after 20 operations. The clients go on until it rejoined
      // (bounded: at most 150 operations each).
      let killed = false;
      let rejoinedAt = -1;
      const rejoined = cluster.waitRejoins(1, 90_000).then((ok) => {
        rejoinedAt = history.length;
        return ok;
      });
      const during = runClients(
        cluster,
        seed,
        4,
        0,
        t0,
        (i) => i < 150 && (rejoinedAt < 0 || i < 12),
        (done) => {
          if (done === 20 && !killed) {
            killed = true;
            cluster.signal(1, 2, 'SIGKILL');
          }
        },
      );
      expect(await rejoined).toBe(true);
      history.push(...(await during));
      expect(killed).toBe(true);
      const [rejoin] = cluster.rejoins;
      expect(rejoin).toMatchObject({ partition: 1, replica: 2 });
      expect(rejoin?.ts).toBeGreaterThanOrEqual(rejoin?.needed ?? 0n);
      expect(rejoin?.needed).toBeGreaterThan(0n);
      // It started empty: everything it holds of partition 1 came in the shipment.
      expect(rejoin?.objects).toBeGreaterThan(0);
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
      const tEnd = micros() - t0;
      for (const k of KEYS) {
        const reply = await cluster.submit(makeTx(kvApp, 'get', { key: k, nonce: 'final' }));
        history.push({ client: 99, call: tEnd, return: micros() - t0, input: { op: 'get', key: k }, output: JSON.stringify(reply.outcome.status === 'ok' ? reply.outcome.result : 'aborted') });
      }
      const r = check('rejoin', { operations: history });
      expect(r.out).toContain(`linearizable: ${history.length} operations`);
      expect(r.status).toBe(0);
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
