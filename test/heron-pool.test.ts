// Heron with a pool of pre-executor processes on the launcher's socket: every submission is
// pre-executed by a member the pipeline's scheduler picks, its table carried in the delivery;
// replicas' write reports keep the members' copies current. Results must equal a serial
// execution of the log's order, with or without a member dying mid-run.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { encode } from '../ts/app/codec.js';
import { execute, type Outcome } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { MemoryState } from '../ts/app/state.js';
import { decodeTx } from '../ts/app/tx.js';
import { kvApp, kvId } from '../ts/apps/kv.js';
import { HeronCluster, type HeronOptions } from '../ts/heron/cluster.js';
import { parseHeronConfig } from '../ts/heron/config.js';
import { partitionerOf } from '../ts/app/partition.js';
import type { ReplicaSummary } from '../ts/heron/replica.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { RoleProcess } from '../ts/process.js';
import { rng } from './kv-history.js';

const CLI = join(import.meta.dirname, '..', 'dist', 'ts', 'cli.js');
const work = mkdtempSync(join(tmpdir(), 'remora-heron-pool-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const KEYS = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];

/**
 * Closed-loop clients of random puts, copies (some across partitions) and gets, each operation
 * distinct (a nonce); `after(n)` sees progress. Resolves with every reply's outcome by ts.
 */
async function runClients(
  cluster: HeronCluster,
  seed: number,
  clients: number,
  opsEach: number,
  after?: (done: number) => void,
): Promise<Map<bigint, Outcome>> {
  const outcomes = new Map<bigint, Outcome>();
  let done = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const next = rng(seed * 31 + c);
      const key = () => KEYS[Math.floor(next() * KEYS.length)] ?? 'a';
      for (let i = 0; i < opsEach; i++) {
        const nonce = `${seed}.${c}.${i}`;
        const pick = next();
        const tx =
          pick < 0.4
            ? makeTx(kvApp, 'put', { key: key(), value: c * 1000 + i, nonce })
            : pick < 0.8
              ? makeTx(kvApp, 'copy', { from: key(), to: key(), nonce })
              : makeTx(kvApp, 'get', { key: key(), nonce });
        const r = await cluster.submit(tx);
        expect(r.duplicate).toBeUndefined();
        outcomes.set(r.ts, r.outcome);
        after?.(++done);
      }
    }),
  );
  return outcomes;
}

/** Every key's value, read through the cluster. */
async function finalValues(cluster: HeronCluster): Promise<Map<string, Outcome>> {
  const final = new Map<string, Outcome>();
  for (const k of KEYS) final.set(k, (await cluster.submit(makeTx(kvApp, 'get', { key: k, nonce: 'final' }))).outcome);
  return final;
}

/**
 * The log's order executed serially (once the cluster closed it): every reply's outcome must
 * be the serial one at its ts, and every key's final value the serial one.
 */
async function expectSerial(dir: string, outcomes: Map<bigint, Outcome>, final: Map<string, Outcome>): Promise<void> {
  const entries = await readSequence(join(dir, 'log'));
  expect(entries.length).toBe(outcomes.size + KEYS.length);
  const state = new MemoryState();
  for (const { ts, tx } of entries) {
    const { table } = execute(kvApp, tx, state, nativeFunctions);
    state.apply(table.writes, ts);
    const got = outcomes.get(ts);
    if (got !== undefined) expect(encode(got).equals(encode(table.outcome)), `outcome at ts ${ts}`).toBe(true);
  }
  for (const k of KEYS) {
    const expected = execute(kvApp, decodeTx(makeTx(kvApp, 'get', { key: k, nonce: 'serial' })), state, nativeFunctions).table.outcome;
    expect(final.get(k), `key ${k}`).toEqual(expected);
  }
}

/** Replicas of a partition agree; each partition adopted some tables. */
function expectAgreementAndAdoption(summaries: ReplicaSummary[], partitions: number): void {
  for (let h = 0; h < partitions; h++) {
    const mine = summaries.filter((s) => s.partition === h);
    expect(mine.length).toBe(3);
    expect(new Set(mine.map((s) => s.digest)).size, `partition ${h} digests`).toBe(1);
    console.log(
      `partition ${h}: adopted ${mine.map((s) => s.adopted).join('/')}, re-executed ${mine.map((s) => s.reexecuted).join('/')}, executed ${mine.map((s) => s.executed).join('/')}`,
    );
    expect(mine[0]?.adopted, `partition ${h} adopted`).toBeGreaterThan(0);
  }
}

/** Runs a 2×3 cluster with two members; after it closed, checks replies and state against serial execution. */
async function withCluster(
  name: string,
  opts: Partial<HeronOptions>,
  run: (cluster: HeronCluster) => Promise<Map<bigint, Outcome>>,
): Promise<ReplicaSummary[]> {
  const dir = join(work, name);
  const logged: string[] = [];
  const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 2, replicas: 3, preExecutors: 2, log: (m) => logged.push(m), ...opts });
  let summaries: ReplicaSummary[] = [];
  let outcomes = new Map<bigint, Outcome>();
  let final = new Map<string, Outcome>();
  try {
    outcomes = await run(cluster);
    final = await finalValues(cluster);
  } finally {
    summaries = await cluster.close();
  }
  if (logged.length > 0) console.log(logged.join('\n'));
  await expectSerial(dir, outcomes, final);
  expect(cluster.divergences).toEqual([]);
  expect(cluster.outcomeMismatches).toEqual([]);
  expect(cluster.decisionMismatches).toEqual([]);
  return summaries;
}

describe('heron with a pool of pre-executors (2 partitions x 3 replicas, kv)', () => {
  it('two members pre-execute; results equal serial execution, both partitions adopt', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron pool seed ${seed} (REMORA_SEED to replay)`);
    const summaries = await withCluster('pool', {}, async (cluster) => {
      expect(
        cluster
          .poolStats()
          .map((m) => m.name)
          .sort(),
      ).toEqual(['pre-1', 'pre-2']);
      const kv = partitionerOf(kvApp, 2);
      expect(new Set(KEYS.map((k) => kv(kvId(k)))).size).toBe(2);
      // One client first (copies current: mostly adopted), then four at once (racing).
      const outcomes = await runClients(cluster, seed, 1, 30);
      for (const [ts, o] of await runClients(cluster, seed + 1, 4, 30)) outcomes.set(ts, o);
      const stats = cluster.poolStats();
      console.log(`pool: ${stats.map((m) => `${m.name} executed ${m.executed}`).join(', ')}`);
      for (const m of stats) expect(m.executed, `${m.name} executed`).toBeGreaterThan(0);
      return outcomes;
    });
    expectAgreementAndAdoption(summaries, 2);
  }, 120_000);

  it('a member killed mid-run costs nothing: every reply comes, state equals serial execution', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron pool kill seed ${seed} (REMORA_SEED to replay)`);
    const summaries = await withCluster('pool-kill', { ordering: 'memory' }, async (cluster) => {
      let killed = false;
      const outcomes = await runClients(cluster, seed, 4, 40, (done) => {
        if (done === 40 && !killed) {
          killed = true;
          cluster.signalPreExecutor('pre-1', 'SIGKILL');
        }
      });
      expect(killed).toBe(true);
      expect(outcomes.size).toBe(160);
      // The dead member left the pool; the other kept pre-executing.
      const stats = cluster.poolStats();
      expect(stats.map((m) => m.name)).toEqual(['pre-2']);
      expect(stats[0]?.executed).toBeGreaterThan(0);
      return outcomes;
    });
    expectAgreementAndAdoption(summaries, 2);
  }, 120_000);

  it('takes the pool size from the cluster file and `--pre-executors`, refusing sizes out of range', async () => {
    expect(parseHeronConfig('{"app": "kv", "partitions": 2, "replicas": 3, "preExecutors": 3}', 'c.json')).toEqual({
      app: 'kv',
      partitions: 2,
      replicas: 3,
      preExecutors: 3,
    });
    expect(() => parseHeronConfig('{"app": "kv", "partitions": 2, "replicas": 3, "preExecutors": 17}', 'c.json')).toThrow(
      'c.json: "preExecutors" must be an integer from 0 to 16, got 17',
    );
    await expect(HeronCluster.start({ dir: join(work, 'bad'), app: 'kv', partitions: 1, replicas: 1, preExecutors: -1 })).rejects.toThrow(
      'preExecutors must be an integer from 0 to 16, got -1',
    );
    const file = join(work, 'pool.json');
    writeFileSync(file, JSON.stringify({ app: 'kv', partitions: 1, replicas: 1 }));
    const bad = spawnSync(process.execPath, [CLI, 'start', 'heron', '--config', file, '--dir', join(work, 'cli-bad'), '--pre-executors', '17'], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect([bad.status, bad.stderr]).toEqual([2, expect.stringContaining("--pre-executors must be an integer from 0 to 16, got '17'")]);
    const proc = await RoleProcess.start('start', ['heron', '--config', file, '--dir', join(work, 'cli'), '--pre-executors', '1'], { readyTimeoutMs: 60_000 });
    try {
      expect(proc.readyInfo).toEqual({ app: 'kv', partitions: 1, replicas: 1, preExecution: true, preExecutors: 1, ordering: 'synced' });
      // A member running other code is refused on the launcher's socket, told both digests.
      const other = spawnSync(process.execPath, [CLI, 'start', 'pre-executor', '--join', join(work, 'cli'), '--app', 'bank', '--name', 'odd'], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(other.status).not.toBe(0);
      expect(other.stderr).toMatch(
        /pre-executor odd loaded app bank with digest [0-9a-f]{12}, but the launcher runs kv [0-9a-f]{12} \(kv\): start it with the same --app/,
      );
    } finally {
      expect((await proc.stop(10_000)).code).toBe(0);
    }
  }, 60_000);
});
