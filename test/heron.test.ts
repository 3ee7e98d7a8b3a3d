// Heron partitions end to end: 2 partitions x 3 replicas of kv as child processes, concurrent
// clients mixing single- and multi-partition operations; every history is checked for
// linearizability by Porcupine (test/porcupine), and replicas of a partition must agree on
// their state digest. One run crashes a replica mid-run.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/kv.js';
import { HeronCluster } from '../ts/heron/cluster.js';
import { parseHeronConfig, readHeronConfig } from '../ts/heron/config.js';
import { RoleProcess } from '../ts/process.js';
import { destinations, hashPartition, partitionerOf } from '../ts/app/partition.js';
import { bankApp } from '../ts/apps/bank.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { buildChecker, check as checkIn, expectSettled, expectTransferOf, expectTransfersCounted, micros, rng, type Op } from './kv-history.js';

const ROOT = join(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'remora-heron-'));
const check = (name: string, history: unknown) => checkIn(work, name, history);

beforeAll(buildChecker, 200_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

const KEYS = ['a', 'b', 'c', 'd', 'e', 'f'];

/** Runs `clients` closed-loop clients of `opsEach` random kv operations; `after(n)` sees progress. */
async function runClients(
  cluster: HeronCluster,
  seed: number,
  clients: number,
  opsEach: number,
  after?: (done: number) => void,
  base = { t0: micros(), client: 0 },
) {
  const history: Op[] = [];
  let multi = 0;
  let done = 0;
  const t0 = base.t0;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const client = base.client + c;
      const next = rng(seed * 31 + client);
      const key = () => KEYS[Math.floor(next() * KEYS.length)] ?? 'a';
      for (let i = 0; i < opsEach; i++) {
        const value = client * 1000 + i;
        // Every operation distinct: the log treats an identical body as a retry of the first.
        const nonce = `${client}.${i}`;
        const args = <T extends object>(a: T) => ({ ...a, nonce });
        const pick = next();
        const [tx, input] =
          pick < 0.3
            ? (() => {
                const k = key();
                return [makeTx(kvApp, 'get', args({ key: k })), { op: 'get', key: k }] as const;
              })()
            : pick < 0.55
              ? (() => {
                  const k = key();
                  return [makeTx(kvApp, 'put', args({ key: k, value })), { op: 'put', key: k, value: JSON.stringify(value) }] as const;
                })()
              : pick < 0.85
                ? (() => {
                    const [f, t] = [key(), key()];
                    return [makeTx(kvApp, 'copy', args({ from: f, to: t })), { op: 'copy', from: f, to: t }] as const;
                  })()
                : (() => {
                    const k = key();
                    const expected = next() < 0.5 ? null : Math.floor(next() * clients) * 1000 + Math.floor(next() * opsEach);
                    return [
                      makeTx(kvApp, 'cas', args({ key: k, expected, value })),
                      { op: 'cas', key: k, expected: JSON.stringify(expected), value: JSON.stringify(value) },
                    ] as const;
                  })();
        const call = micros() - t0;
        const reply = await cluster.submit(tx);
        const ret = micros() - t0;
        if (reply.outcome.status !== 'ok') throw new Error(`op ${JSON.stringify(input)} aborted: ${reply.outcome.reason}`);
        if (reply.dest.length > 1) multi++;
        history.push({ client, call, return: ret, input, output: JSON.stringify(reply.outcome.result) });
        after?.(++done);
      }
    }),
  );
  return { history, multi };
}

function expectAgreement(summaries: Awaited<ReturnType<HeronCluster['close']>>, cluster: HeronCluster, partitions: number) {
  expect(cluster.divergences).toEqual([]);
  expect(cluster.outcomeMismatches).toEqual([]);
  for (let h = 0; h < partitions; h++) {
    const mine = summaries.filter((s) => s.partition === h);
    expect(mine.length).toBeGreaterThanOrEqual(2);
    expect(new Set(mine.map((s) => s.digest)).size).toBe(1);
    expect(new Set(mine.map((s) => s.applied)).size).toBe(1);
    // The periodic checkpoints compared along the way, too: one every 16 applied (the
    // replicas' default), so none in a partition that applied fewer (random keys can leave a
    // partition with 14 of 120 operations).
    const reports = cluster.digestReports(h);
    expect(reports.size).toBe(Math.floor((mine[0]?.applied ?? 0) / 16));
    for (const byReplica of reports.values()) expect(new Set(byReplica.values()).size).toBe(1);
  }
}

/** One operation by `client`, appended to `history` (times relative to `t0`). */
async function one(
  cluster: HeronCluster,
  history: Op[],
  t0: number,
  client: number,
  op: 'put' | 'copy',
  args: { key: string; value: number } | { from: string; to: string },
) {
  const nonce = `${client}.${history.length}`;
  const [tx, input] =
    'key' in args
      ? [makeTx(kvApp, 'put', { ...args, nonce }), { op, key: args.key, value: JSON.stringify(args.value) }]
      : [makeTx(kvApp, 'copy', { ...args, nonce }), { op, from: args.from, to: args.to }];
  const call = micros() - t0;
  const reply = await cluster.submit(tx);
  const ret = micros() - t0;
  if (reply.outcome.status !== 'ok') throw new Error(`op ${JSON.stringify(input)} aborted: ${reply.outcome.reason}`);
  history.push({ client, call, return: ret, input, output: JSON.stringify(reply.outcome.result) });
  return reply;
}

describe('partitioners', () => {
  it('spread kv keys by hash and bank accounts by number, and give destination sets', () => {
    const kv = partitionerOf(kvApp, 2);
    const parts = new Set(KEYS.map((k) => kv(`kv/${k}`)));
    expect(parts).toEqual(new Set([0, 1]));
    const bank = partitionerOf(bankApp({ mintAuthority: new Uint8Array(32) }), 4);
    expect([bank('acct/5'), bank('stamp/5'), bank('acct/8')]).toEqual([1, 1, 0]);
    expect(destinations(['acct/5', 'acct/8', 'stamp/5'], bank)).toEqual([0, 1]);
    expect(destinations([], bank)).toEqual([0]);
    expect(hashPartition('kv/a', 1)).toBe(0);
    expect(() => partitionerOf(kvApp, 0)).toThrow('partitions must be a positive integer, got 0');
  });
});

describe('porcupine checker', () => {
  it('rejects a stale multi-key read', () => {
    const bad = check('bad', {
      operations: [
        { client: 0, call: 0, return: 10, input: { op: 'put', key: 'a', value: '1' }, output: 'null' },
        { client: 1, call: 11, return: 20, input: { op: 'copy', from: 'a', to: 'b' }, output: 'null' },
      ],
    });
    expect(bad.status).toBe(1);
    expect(bad.out).toContain('VIOLATION: 2 operations are not linearizable');
  });
});

describe('cluster files', () => {
  it('refuse bad input with errors naming the key', () => {
    const bad = (text: string) => () => parseHeronConfig(text, 'c.json');
    expect(bad('{"app": "kv", "partitions": 2')).toThrow(/^c\.json: not JSON \(/);
    expect(bad('[1]')).toThrow('c.json: expected a JSON object');
    expect(bad('{"app": "kv", "partitions": 2, "replicas": 3, "replica": 1, "x": 0}')).toThrow(
      'c.json: unknown keys "replica", "x" (known: app, partitions, replicas, preExecution, preExecutors, graceMs, transferBytes, ordering, ringBytes, sequencer, restartReplicas, remoteCacheEntries, transport)',
    );
    expect(bad('{"app": "kv", "replicas": 3}')).toThrow('c.json: "partitions" is required');
    expect(bad('{"app": "kv", "partitions": 0, "replicas": 3}')).toThrow('c.json: "partitions" must be an integer from 1 to 1024, got 0');
    expect(bad('{"app": "kv", "partitions": 2, "replicas": 0}')).toThrow('c.json: "replicas" must be an integer from 1 to 31, got 0');
    expect(bad('{"app": "kv", "partitions": 1.5, "replicas": 3}')).toThrow('c.json: "partitions" must be an integer from 1 to 1024, got 1.5');
    expect(bad('{"app": 7, "partitions": 2, "replicas": 3}')).toThrow(
      'c.json: "app" must be a built-in app (bank, kv, work, tpcc), a module path or a package, got 7',
    );
    expect(bad('{"app": "kv", "partitions": 2, "replicas": 3, "preExecution": "yes"}')).toThrow('c.json: "preExecution" must be true or false, got "yes"');
    expect(bad('{"app": "kv", "partitions": 2, "replicas": 3, "graceMs": -1}')).toThrow('c.json: "graceMs" must be an integer from 0 to 60000, got -1');
    expect(bad('{"app": "kv", "partitions": 2, "replicas": 3, "ordering": "fast"}')).toThrow('c.json: "ordering" must be "synced" or "memory", got "fast"');
    expect(bad('{"app": "kv", "partitions": 2, "replicas": 3, "ringBytes": 100}')).toThrow(
      'c.json: "ringBytes" must be an integer from 4096 to 1073741824, got 100',
    );
    expect(bad('{"app": "kv", "partitions": 2, "replicas": 3, "sequencer": {"servers": ["http://h:4222"]}}')).toThrow(
      'c.json: "sequencer" "servers" must be a non-empty list of nats://HOST:PORT URLs, got ["http://h:4222"]',
    );
    expect(bad('{"app": "kv", "partitions": 2, "replicas": 3, "sequencer": {"servers": ["nats://h:4222"], "token": "x"}}')).toThrow(
      'c.json: "sequencer" has unknown keys "token"',
    );
    expect(bad('{"app": "kv", "partitions": 2, "replicas": 3, "ordering": "memory", "sequencer": {"servers": ["nats://h:4222"]}}')).toThrow(
      'c.json: "ordering": "memory" orders in the launcher, so it cannot be used with "sequencer"',
    );
    expect(parseHeronConfig('{"app": "kv", "partitions": 2, "replicas": 3, "sequencer": {"servers": ["nats://h:4222"], "stream": "H"}}', 'c.json')).toEqual({
      app: 'kv',
      partitions: 2,
      replicas: 3,
      sequencer: { kind: 'jetstream', servers: ['nats://h:4222'], stream: 'H' },
    });
    expect(() => readHeronConfig(join(work, 'absent.json'))).toThrow(`${join(work, 'absent.json')}: cannot read the cluster file (ENOENT`);
    expect(parseHeronConfig('{"app": "bank", "partitions": 4, "replicas": 1}', 'c.json')).toEqual({ app: 'bank', partitions: 4, replicas: 1 });
  });

  it('start a cluster: in process, and with `remora start heron`; a bad file exits 2', async () => {
    const file = join(work, 'cluster.json');
    writeFileSync(file, JSON.stringify({ app: 'kv', partitions: 2, replicas: 1, preExecution: true, graceMs: 1 }));
    const config = readHeronConfig(file);
    const cluster = await HeronCluster.start({ dir: join(work, 'from-file'), ...config });
    try {
      const put = await cluster.submit(makeTx(kvApp, 'put', { key: 'a', value: 1, nonce: 'f.1' }));
      const get = await cluster.submit(makeTx(kvApp, 'get', { key: 'a', nonce: 'f.2' }));
      expect([put.decision, get.decision, get.outcome]).toEqual(['adopted', 'adopted', { status: 'ok', result: 1 }]);
    } finally {
      const summaries = await cluster.close();
      expect(summaries.map((x) => `${x.partition}.${x.replica}`)).toEqual(['0.0', '1.0']);
    }

    // `--ordering` overrides the file.
    const proc = await RoleProcess.start('start', ['heron', '--config', file, '--dir', join(work, 'cli'), '--ordering', 'memory'], { readyTimeoutMs: 60_000 });
    expect(proc.readyInfo).toEqual({ app: 'kv', partitions: 2, replicas: 1, preExecution: true, ordering: 'memory' });
    const stopped = await proc.stop(10_000);
    expect(stopped.code).toBe(0);
    const result = stopped.result as { replicas: { partition: number }[]; divergences: number; decisionMismatches: number };
    expect([result.replicas.map((x) => x.partition), result.divergences, result.decisionMismatches]).toEqual([[0, 1], 0, 0]);

    writeFileSync(file, JSON.stringify({ app: 'kv', partitions: 0, replicas: 3 }));
    const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'ts', 'cli.js'), 'start', 'heron', '--config', file, '--dir', join(work, 'cli')], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${file}: "partitions" must be an integer from 1 to 1024, got 0`);
  }, 120_000);
});

describe('heron cluster (2 partitions x 3 replicas, kv)', () => {
  it('serves linearizable histories with multi-partition ops; replicas agree', async () => {
    const seed = Number(process.env['HERON_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron linearizability seed ${seed}`);
    const dir = join(work, 'run');
    const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 2, replicas: 3 });
    try {
      const { history, multi } = await runClients(cluster, seed, 4, 30);
      expect(history.length).toBe(120);
      console.log(`multi-partition operations: ${multi} of ${history.length}`);
      // About 10 expected (30 % copies, keys on either partition); at least one proves the
      // history holds coordinated operations. Requiring more made rare seeds fail (3 of 120).
      expect(multi).toBeGreaterThan(0);
      const r = check('run', { operations: history });
      expect(r.out).toContain('linearizable: 120 operations');
      expect(r.status).toBe(0);
    } finally {
      const summaries = await cluster.close();
      expect(summaries.length).toBe(6);
      expectAgreement(summaries, cluster, 2);
      expect(summaries.reduce((n, s) => n + s.remoteReads, 0)).toBeGreaterThan(0);
    }
  });

  it('with in-memory ordering: linearizable, replicas agree, and the log ends holding what was delivered', async () => {
    const seed = Number(process.env['HERON_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron in-memory ordering seed ${seed}`);
    const dir = join(work, 'memory');
    const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 2, replicas: 3, ordering: 'memory' });
    let submitted: bigint[] = [];
    try {
      const { history } = await runClients(cluster, seed, 4, 30);
      const r = check('memory', { operations: history });
      expect(r.out).toContain('linearizable: 120 operations');
      expect(r.status).toBe(0);
      // A duplicate body is answered with the first reply, not ordered again.
      const tx = makeTx(kvApp, 'put', { key: 'a', value: 7, nonce: 'dup' });
      const first = await cluster.submit(tx);
      const again = await cluster.submit(tx);
      expect(again.ts).toBe(first.ts);
      expect(first.ts).toBe(121n);
      submitted = [first.ts];
    } finally {
      const summaries = await cluster.close();
      expect(summaries.length).toBe(6);
      expectAgreement(summaries, cluster, 2);
    }
    // Every delivered transaction reached the log, in the order the replicas applied.
    const logged = await readSequence(join(dir, 'log'));
    expect(logged.map((x) => x.ts)).toEqual(Array.from({ length: 121 }, (_, i) => BigInt(i + 1)));
    expect(submitted).toEqual([121n]);
  });

  it('delivers over the socket to a replica that fell behind the ring; it agrees afterwards', async () => {
    const dir = join(work, 'ring-drop');
    const logs: string[] = [];
    // The smallest ring: about 25 puts fill it while a replica is stopped.
    const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 2, replicas: 3, ringBytes: 4096, log: (m) => logs.push(m) });
    const part = partitionerOf(kvApp, 2);
    const x = KEYS.find((k) => part(`kv/${k}`) === 0) ?? 'a';
    const y = KEYS.find((k) => part(`kv/${k}`) === 1) ?? 'b';
    const history: Op[] = [];
    const t0 = micros();
    let stopped = false;
    try {
      await one(cluster, history, t0, 0, 'put', { key: x, value: 1 });
      // A transaction larger than the ring is refused at admission, before ordering; the
      // cluster keeps serving everyone else.
      await expect(cluster.submit(makeTx(kvApp, 'put', { key: y, value: 'z'.repeat(5000) }))).rejects.toThrow(
        /^transaction of \d+ bytes does not fit the ordered stream's ring of 4096 bytes \(a record takes \d+\); give the cluster a larger ringBytes$/,
      );
      cluster.signal(0, 2, 'SIGSTOP');
      stopped = true;
      for (let i = 0; i < 60; i++) await one(cluster, history, t0, 0, 'put', { key: i % 2 === 0 ? x : y, value: 100 + i });
      expect(logs.some((m) => m.includes("replica 0.2 fell 100 ms behind the ordered stream's ring; delivering to it over its socket"))).toBe(true);
      cluster.signal(0, 2, 'SIGCONT');
      stopped = false;
      for (let i = 0; i < 20; i++) await one(cluster, history, t0, 0, 'put', { key: i % 2 === 0 ? x : y, value: 200 + i });
      expect(await cluster.settle(60_000)).toBe(true);
      const r = check('ring-drop', { operations: history });
      expect(r.out).toContain('linearizable: 81 operations');
    } finally {
      if (stopped) cluster.signal(0, 2, 'SIGCONT');
      const summaries = await cluster.close();
      expect(summaries.length).toBe(6);
      expectAgreement(summaries, cluster, 2);
    }
  });

  it('merges pre-executed transactions at every destination identically; linearizable, replicas agree', async () => {
    const seed = Number(process.env['HERON_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron pre-execution seed ${seed}`);
    const cluster = await HeronCluster.start({ dir: join(work, 'pre'), app: 'kv', partitions: 2, replicas: 3, preExecution: true });
    try {
      // One client first (the pre-executor's copy is current: adopted), then four at once
      // (their tables race each other's writes: some re-executed).
      const t0 = micros();
      const alone = await runClients(cluster, seed, 1, 20, undefined, { t0, client: 0 });
      const together = await runClients(cluster, seed + 1, 4, 25, undefined, { t0, client: 1 });
      const history = [...alone.history, ...together.history];
      // Multi-partition merges, deterministically: a copy across partitions pre-executed on a
      // current copy is adopted (its remote read validated one-sidedly); one pre-executed
      // before the put it reads was ordered is stale at both destinations and re-executed.
      const kvPart = partitionerOf(kvApp, 2);
      const from = KEYS.find((k) => kvPart(`kv/${k}`) === 0) ?? 'a';
      const to = KEYS.find((k) => kvPart(`kv/${k}`) === 1) ?? 'b';
      const timed = async (input: Op['input'], tx: ReturnType<typeof makeTx>) => {
        const call = micros() - t0;
        const reply = await cluster.submit(tx);
        if (reply.outcome.status !== 'ok') throw new Error(`op ${JSON.stringify(input)} aborted: ${reply.outcome.reason}`);
        history.push({ client: input['op'] === 'copy' ? 10 : 9, call, return: micros() - t0, input, output: JSON.stringify(reply.outcome.result) });
        return reply;
      };
      await timed({ op: 'put', key: from, value: '7001' }, makeTx(kvApp, 'put', { key: from, value: 7001, nonce: 'pre.1' }));
      const adopted = await timed({ op: 'copy', from, to }, makeTx(kvApp, 'copy', { from, to, nonce: 'pre.2' }));
      expect([adopted.dest, adopted.decision]).toEqual([[0, 1], 'adopted']);
      // Both are pre-executed inside `submit` before either is ordered.
      const [p, c] = await Promise.all([
        timed({ op: 'put', key: from, value: '7002' }, makeTx(kvApp, 'put', { key: from, value: 7002, nonce: 'pre.3' })),
        timed({ op: 'copy', from, to }, makeTx(kvApp, 'copy', { from, to, nonce: 'pre.4' })),
      ]);
      expect(p.ts).toBeLessThan(c.ts);
      expect([c.dest, c.decision]).toEqual([[0, 1], 'reexecuted']);
      expect(history.length).toBe(124);
      console.log(`multi-partition operations: ${alone.multi + together.multi + 2} of ${history.length}`);
      const r = check('pre', { operations: history });
      expect(r.out).toContain('linearizable: 124 operations');
      expect(r.status).toBe(0);
      // Every submission was pre-executed by a member of the pool, and its table carried.
      expect(cluster.poolStats().reduce((n, m) => n + m.executed, 0)).toBe(124);
      expect(cluster.tablesCarried).toBe(124);
    } finally {
      const summaries = await cluster.close();
      expect(summaries.length).toBe(6);
      expectAgreement(summaries, cluster, 2);
      expect(cluster.decisionMismatches).toEqual([]);
      for (let h = 0; h < 2; h++) {
        const mine = summaries.filter((s) => s.partition === h);
        console.log(`partition ${h}: adopted ${mine.map((s) => s.adopted).join('/')}, re-executed ${mine.map((s) => s.reexecuted).join('/')}`);
        // Replicas of a partition decided the same for every transaction, so the counts agree
        // (but for a replica the load left behind: what a state transfer brought it, it skipped).
        const steady = mine.filter((s) => s.transfers === 0);
        expect(steady.length).toBeGreaterThanOrEqual(2);
        expect(new Set(steady.map((s) => `${s.adopted}/${s.reexecuted}/${s.executed}`)).size).toBe(1);
        expect(steady[0]?.executed).toBe(0);
        expect(steady[0]?.adopted).toBeGreaterThan(0);
        expect(steady[0]?.reexecuted).toBeGreaterThan(0);
        expect((steady[0]?.adopted ?? 0) + (steady[0]?.reexecuted ?? 0)).toBe(steady[0]?.applied);
      }
    }
  });

  it('keeps serving with a replica SIGKILLed mid-run; nothing acknowledged is lost', async () => {
    const seed = Number(process.env['HERON_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron crash seed ${seed}`);
    const dir = join(work, 'crash');
    const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 2, replicas: 3 });
    let killed = false;
    try {
      const { history } = await runClients(cluster, seed, 4, 30, (done) => {
        if (done === 40 && !killed) {
          killed = true;
          cluster.signal(1, 2, 'SIGKILL');
        }
      });
      expect(killed).toBe(true);
      const r = check('crash', { operations: history });
      expect(r.out).toContain('linearizable: 120 operations');
      expect(r.status).toBe(0);
      // Every acknowledged put is in the final state or overwritten later: read every key and
      // check the history extended with these reads still linearizes.
      const t0 = history.reduce((m, o) => Math.max(m, o.return), 0);
      for (const k of KEYS) {
        const reply = await cluster.submit(makeTx(kvApp, 'get', { key: k, nonce: 'final' } as { key: string }));
        history.push({
          client: 99,
          call: t0 + 1,
          return: t0 + 2,
          input: { op: 'get', key: k },
          output: JSON.stringify(reply.outcome.status === 'ok' ? reply.outcome.result : 'aborted'),
        });
      }
      const final = check('crash-final', { operations: history });
      expect(final.status).toBe(0);
    } finally {
      const summaries = await cluster.close();
      expect(summaries.map((s) => `${s.partition}.${s.replica}`)).toEqual(['0.0', '0.1', '0.2', '1.0', '1.1']);
      expectAgreement(summaries, cluster, 2);
    }
  });

  it('catches a SIGSTOPped replica up by state transfer; it agrees with its peers afterwards', async () => {
    const seed = Number(process.env['HERON_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`heron lagger seed ${seed}`);
    const dir = join(work, 'lagger');
    const logs: string[] = [];
    const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 2, replicas: 3, log: (m) => logs.push(m) });
    const part = partitionerOf(kvApp, 2);
    // The lagger is replica 2 of the partition of key `x`; key `y` lives in the other one.
    const x = KEYS.find((k) => part(`kv/${k}`) === 0) ?? 'a';
    const y = KEYS.find((k) => part(`kv/${k}`) === 1) ?? 'b';
    const t0 = micros();
    const history: Op[] = [];
    let stopped = false;
    try {
      history.push(...(await runClients(cluster, seed, 4, 8, undefined, { t0, client: 0 })).history);
      cluster.signal(0, 2, 'SIGSTOP');
      stopped = true;
      // While it is stopped: a copy from the other partition into its own, then two writes of
      // the copied key, so both versions the lagger's remote read needs are overwritten.
      await one(cluster, history, t0, 90, 'copy', { from: y, to: x });
      await one(cluster, history, t0, 90, 'put', { key: y, value: 9001 });
      await one(cluster, history, t0, 90, 'put', { key: y, value: 9002 });
      history.push(...(await runClients(cluster, seed + 1, 4, 8, undefined, { t0, client: 10 })).history);
      // Every replica of the other partition wrote the copied key twice since the copy, so
      // the versions the lagger's remote read needs are gone at all of them, not only at the
      // ones that answered first: it must lag.
      await expectSettled(cluster, logs, [1], 60_000);
      cluster.signal(0, 2, 'SIGCONT');
      stopped = false;
      await expectTransferOf(cluster, logs, { partition: 0, replica: 2 }, 60_000);
      history.push(...(await runClients(cluster, seed + 2, 4, 8, undefined, { t0, client: 20 })).history);
      const transfer = cluster.transfers.find((t) => t.partition === 0 && t.replica === 2);
      expect([0, 1]).toContain(transfer?.from);
      expect(transfer && transfer.ts > transfer.since).toBe(true);
      console.log(`state transfers: ${JSON.stringify(cluster.transfers, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`);
      expect(history.length).toBe(99);
      const r = check('lagger', { operations: history });
      expect(r.out).toContain('linearizable: 99 operations');
      expect(r.status).toBe(0);
    } catch (e) {
      console.log(`heron lagger failed (seed ${seed}); the cluster's log:\n${logs.join('\n')}`);
      throw e;
    } finally {
      if (stopped) cluster.signal(0, 2, 'SIGCONT');
      const summaries = await cluster.close();
      expect(summaries.length).toBe(6);
      expectAgreement(summaries, cluster, 2);
      expectTransfersCounted(cluster, summaries, { partition: 0, replica: 2 }, logs);
    }
  });

  it('reads at another replica when the one it reads from is stopped mid-lookup', async () => {
    // Replica 1.2 starts its reads at 0.2 (its own index). It connects there on a first copy,
    // stops, and resumes to a copy of a key it never looked up, after 0.2 executed that copy
    // and stopped: the lookup at 0.2 gets no answer, and 1.2 must read at 0.0 or 0.1.
    const dir = join(work, 'silent-peer');
    const logs: string[] = [];
    const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 2, replicas: 3, log: (m) => logs.push(m) });
    const part = partitionerOf(kvApp, 2);
    const [x0, x1] = KEYS.filter((k) => part(`kv/${k}`) === 0);
    const y = KEYS.find((k) => part(`kv/${k}`) === 1);
    if (x0 === undefined || x1 === undefined || y === undefined) throw new Error('KEYS must hold two keys of partition 0 and one of 1');
    const t0 = micros();
    const history: Op[] = [];
    const stopped = new Set<string>();
    const stop = (h: number, q: number) => (cluster.signal(h, q, 'SIGSTOP'), stopped.add(`${h}.${q}`));
    const resume = (h: number, q: number) => (cluster.signal(h, q, 'SIGCONT'), stopped.delete(`${h}.${q}`));
    try {
      await one(cluster, history, t0, 0, 'put', { key: x1, value: 7 });
      await one(cluster, history, t0, 0, 'copy', { from: x0, to: y });
      await expectSettled(cluster, logs, [0, 1], 60_000);
      stop(1, 2);
      await one(cluster, history, t0, 0, 'copy', { from: x1, to: y });
      await expectSettled(cluster, logs, [0], 60_000);
      stop(0, 2);
      resume(1, 2);
      await expectSettled(cluster, logs, [1], 60_000);
      const reply = await one(cluster, history, t0, 0, 'copy', { from: x1, to: y });
      expect(reply.outcome.status).toBe('ok');
      resume(0, 2);
      await expectSettled(cluster, logs, [0, 1], 60_000);
    } catch (e) {
      console.log(`heron silent-peer test failed; the cluster's log:\n${logs.join('\n')}`);
      throw e;
    } finally {
      for (const r of stopped) {
        const [h, q] = r.split('.').map(Number);
        cluster.signal(h ?? 0, q ?? 0, 'SIGCONT');
      }
      const summaries = await cluster.close();
      expect(summaries.length).toBe(6);
      expectAgreement(summaries, cluster, 2);
    }
  });
});
