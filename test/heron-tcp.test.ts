// Heron over the `tcp` transport, end to end: every replica serves its store on 127.0.0.1 and
// the launcher serves the ring's store; coordination, state transfer, remote reads and the ring
// go over TCP. A 2 × 3 kv cluster under concurrent clients loses replica 1.2 (SIGKILL), which
// is restarted at a new address and rejoins by state transfer over tcp while the load goes on;
// then 1.1 is killed, so partition 1's majority needs the rejoined 1.2. The history must be
// linearizable (Porcupine, test/porcupine) and the survivors must agree. A replica SIGSTOPped
// over tcp holds nobody up and catches up by state transfer over tcp. A sequential seeded
// workload gives the same replies and digests over tcp as over shm.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/kv.js';
import { HeronCluster, type HeronOptions } from '../ts/heron/cluster.js';
import { parseHeronConfig } from '../ts/heron/config.js';
import { partitionerOf } from '../ts/app/partition.js';
import type { ReplicaSummary } from '../ts/heron/replica.js';
import { RoleProcess } from '../ts/process.js';

import {
  buildChecker,
  check as checkIn,
  finalReads,
  KEYS,
  killAndRejoin,
  expectTransferOf,
  expectTransfersCounted,
  micros,
  nextOp,
  rng,
  runClients,
  type Op,
} from './kv-history.js';

const ROOT = join(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'remora-heron-tcp-'));
const check = (name: string, history: unknown) => checkIn(work, name, history);

beforeAll(buildChecker, 200_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

const isLoopback = (a: string | undefined | null): boolean => a !== undefined && a !== null && /^127\.0\.0\.1:\d+$/.test(a);
const place = (s: ReplicaSummary): string => `${s.partition}.${s.replica}`;

describe('heron over tcp', () => {
  it('takes transport from a cluster file and checks it', () => {
    const file = (extra: object) => JSON.stringify({ app: 'kv', partitions: 2, replicas: 3, ...extra });
    expect(parseHeronConfig(file({ transport: 'tcp' }), 'c.json').transport).toBe('tcp');
    expect(parseHeronConfig(file({}), 'c.json').transport).toBeUndefined();
    expect(() => parseHeronConfig(file({ transport: 'udp' }), 'c.json')).toThrow('c.json: "transport" must be "shm", "tcp", "verbs", got "udp"');
  });

  it('starts over tcp with `remora start heron --transport tcp`; another name exits 2', async () => {
    const file = join(work, 'cluster.json');
    writeFileSync(file, JSON.stringify({ app: 'kv', partitions: 2, replicas: 1 }));
    const proc = await RoleProcess.start('start', ['heron', '--config', file, '--dir', join(work, 'cli'), '--transport', 'tcp'], { readyTimeoutMs: 60_000 });
    expect(proc.readyInfo).toEqual({ app: 'kv', partitions: 2, replicas: 1, preExecution: false, ordering: 'synced', transport: 'tcp' });
    const stopped = await proc.stop(10_000);
    expect(stopped.code).toBe(0);
    const result = stopped.result as { replicas: { partition: number }[]; divergences: number };
    expect([result.replicas.map((x) => x.partition), result.divergences]).toEqual([[0, 1], 0]);
    const r = spawnSync(
      process.execPath,
      [join(ROOT, 'dist', 'ts', 'cli.js'), 'start', 'heron', '--config', file, '--dir', join(work, 'cli'), '--transport', 'udp'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--transport must be one of shm, tcp, verbs, got 'udp'");
  }, 120_000);

  it('gives the same replies and digests over tcp as over shm for a seeded sequential workload', async () => {
    const seed = Number(process.env['HERON_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron tcp-vs-shm seed ${seed}`);
    const run = async (transport: HeronOptions['transport'], name: string) => {
      const cluster = await HeronCluster.start({ dir: join(work, name), app: 'kv', partitions: 2, replicas: 3, transport });
      const replies: string[] = [];
      let summaries: ReplicaSummary[] = [];
      try {
        const next = rng(seed);
        // One client, one operation at a time: the order, hence every timestamp, is the workload's.
        for (let i = 0; i < 60; i++) {
          const { tx } = nextOp(next, 0, i);
          const reply = await cluster.submit(tx);
          replies.push(`${reply.ts}:${JSON.stringify(reply.outcome)}`);
        }
        if (transport === 'tcp') {
          const at = cluster.storeAddresses;
          expect(at.replicas).toHaveLength(6);
          expect(at.replicas.every(isLoopback)).toBe(true);
          expect(new Set(at.replicas).size).toBe(6);
          expect(isLoopback(at.ring)).toBe(true);
        }
      } finally {
        summaries = await cluster.close();
      }
      expect(cluster.divergences).toEqual([]);
      expect(cluster.outcomeMismatches).toEqual([]);
      return { replies, summaries };
    };
    const shm = await run('shm', 'same-shm');
    const tcp = await run('tcp', 'same-tcp');
    expect(tcp.replies).toEqual(shm.replies);
    expect(tcp.summaries.map(place)).toEqual(['0.0', '0.1', '0.2', '1.0', '1.1', '1.2']);
    const final = (r: { summaries: ReplicaSummary[] }) => r.summaries.map((s) => [place(s), s.digest, s.applied, s.lastTs]);
    expect(final(tcp)).toEqual(final(shm));
    // Multi-partition copies read remote objects over tcp.
    expect(tcp.summaries.reduce((n, s) => n + s.remoteReads, 0)).toBeGreaterThan(0);
  }, 180_000);

  it('rejoins a SIGKILLed replica by state transfer over tcp under load, which then carries its partition', async () => {
    const seed = Number(process.env['HERON_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron tcp rejoin seed ${seed}`);
    const logged: string[] = [];
    const cluster = await HeronCluster.start({
      dir: join(work, 'rejoin'),
      app: 'kv',
      partitions: 2,
      replicas: 3,
      transport: 'tcp',
      restartReplicas: true,
      log: (m) => logged.push(m),
    });
    const t0 = micros();
    const history: Op[] = [];
    let summaries: ReplicaSummary[] = [];
    try {
      const before = cluster.storeAddresses.replicas[5];
      // 1. Load; replica 1.2 is killed, restarted, and catches up from empty over tcp
      // (kv-history.ts).
      await killAndRejoin(cluster, seed, t0, history);
      // The new incarnation serves its store at an address of its own, which peers were told.
      const after = cluster.storeAddresses.replicas[5];
      expect(isLoopback(after)).toBe(true);
      console.log(`replica 1.2 served at ${String(before)}, then at ${String(after)}`);

      // 2. Replica 1.1 dies for good: partition 1 is 1.0 and the rejoined 1.2, which must
      // coordinate (over tcp) for anything of partition 1 to complete.
      cluster.restartReplicas = false;
      cluster.signal(1, 1, 'SIGKILL');
      history.push(...(await runClients(cluster, seed + 1, 4, 10, t0, (i) => i < 15)));

      // 3. A final read of every key, then the whole history must linearize.
      await finalReads(cluster, history, t0);
      const r = check('tcp-rejoin', { operations: history });
      expect(r.out).toContain(`linearizable: ${history.length} operations`);
      expect(r.status).toBe(0);
    } catch (e) {
      console.log(`heron tcp rejoin failed (seed ${seed}); the cluster's log:\n${logged.join('\n')}`);
      throw e;
    } finally {
      summaries = await cluster.close();
    }
    expect(summaries.map(place)).toEqual(['0.0', '0.1', '0.2', '1.0', '1.2']);
    expect(cluster.divergences).toEqual([]);
    expect(cluster.outcomeMismatches).toEqual([]);
    expect(logged.some((m) => /replica 1\.2 exited \(SIGKILL\)/.test(m))).toBe(true);
    const p10 = summaries.find((s) => place(s) === '1.0');
    const p12 = summaries.find((s) => place(s) === '1.2');
    expect(p12?.transfers).toBeGreaterThanOrEqual(1);
    expect([p12?.digest, p12?.applied, p12?.lastTs]).toEqual([p10?.digest, p10?.applied, p10?.lastTs]);
    // It coordinated multi-partition transactions after rejoining (partition 1 needed it).
    expect(p12?.coordinations).toBeGreaterThan(0);
    const p0 = summaries.filter((s) => s.partition === 0);
    expect(new Set(p0.map((s) => s.digest)).size).toBe(1);
    expect(new Set(p0.map((s) => s.applied)).size).toBe(1);
  }, 240_000);

  it('goes on while a replica is SIGSTOPped over tcp, which then catches up by state transfer over tcp', async () => {
    const seed = Number(process.env['HERON_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron tcp lagger seed ${seed}`);
    const logs: string[] = [];
    const cluster = await HeronCluster.start({ dir: join(work, 'lagger'), app: 'kv', partitions: 2, replicas: 3, transport: 'tcp', log: (m) => logs.push(m) });
    const part = partitionerOf(kvApp, 2);
    // The lagger is replica 2 of the partition of key `x`; key `y` lives in the other one.
    const x = KEYS.find((k) => part(`kv/${k}`) === 0) ?? 'a';
    const y = KEYS.find((k) => part(`kv/${k}`) === 1) ?? 'b';
    const t0 = micros();
    const history: Op[] = [];
    const one = async (input: Record<string, string>, tx: ReturnType<typeof makeTx>) => {
      const call = micros() - t0;
      const reply = await cluster.submit(tx);
      history.push({
        client: 90,
        call,
        return: micros() - t0,
        input,
        output: JSON.stringify(reply.outcome.status === 'ok' ? reply.outcome.result : 'aborted'),
      });
    };
    let stopped = false;
    let summaries: ReplicaSummary[] = [];
    try {
      history.push(...(await runClients(cluster, seed, 4, 0, t0, (i) => i < 5)));
      cluster.signal(0, 2, 'SIGSTOP');
      stopped = true;
      // While it is stopped: a copy from the other partition into its own, then two writes of
      // the copied key, so both versions its remote read needs are overwritten. Its peers
      // write their entries to it over tcp and get no answer: that must not hold them up.
      await one({ op: 'copy', from: y, to: x }, makeTx(kvApp, 'copy', { from: y, to: x, nonce: 'l.1' }));
      await one({ op: 'put', key: y, value: '9001' }, makeTx(kvApp, 'put', { key: y, value: 9001, nonce: 'l.2' }));
      await one({ op: 'put', key: y, value: '9002' }, makeTx(kvApp, 'put', { key: y, value: 9002, nonce: 'l.3' }));
      history.push(...(await runClients(cluster, seed + 1, 4, 10, t0, (i) => i < 5)));
      // Every replica of the other partition wrote the copied key twice since the copy, so
      // the versions the lagger's remote read needs are gone at all of them, not only at the
      // ones that answered first: it must lag.
      expect(await cluster.settle(60_000, [1])).toBe(true);
      cluster.signal(0, 2, 'SIGCONT');
      stopped = false;
      await expectTransferOf(cluster, logs, { partition: 0, replica: 2 }, 60_000);
      history.push(...(await runClients(cluster, seed + 2, 4, 20, t0, (i) => i < 5)));
      const transfer = cluster.transfers.find((t) => t.partition === 0 && t.replica === 2);
      expect(transfer && transfer.ts > transfer.since).toBe(true);
      await finalReads(cluster, history, t0);
      const r = check('tcp-lagger', { operations: history });
      expect(r.out).toContain(`linearizable: ${history.length} operations`);
      expect(r.status).toBe(0);
    } finally {
      if (stopped) cluster.signal(0, 2, 'SIGCONT');
      summaries = await cluster.close();
    }
    expect(summaries.map(place)).toEqual(['0.0', '0.1', '0.2', '1.0', '1.1', '1.2']);
    expect(cluster.divergences).toEqual([]);
    expect(cluster.outcomeMismatches).toEqual([]);
    for (const h of [0, 1]) {
      const mine = summaries.filter((s) => s.partition === h);
      expect(new Set(mine.map((s) => `${s.digest}/${s.applied}/${s.lastTs}`)).size).toBe(1);
    }
    expectTransfersCounted(cluster, summaries, { partition: 0, replica: 2 }, logs);
  }, 180_000);
});
