// Load generators in their own processes against an embedded cluster, and the compute-bound
// `work` app: every transaction sent is accounted for, and the cluster's state is the one
// sequential re-execution of its log gives.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decode } from '../ts/app/codec.js';
import { execute, type Outcome } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { MemoryState } from '../ts/app/state.js';
import { decodeTx, encodeBody } from '../ts/app/tx.js';
import { makeTx } from '../ts/app/app.js';
import { accountId, type Account, type Counter, workApp, workId, WORK_MAX_ROUNDS } from '../ts/apps/index.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { quantiles, split, startLoadGenerators, type LoadGenerators, type LoadResults } from '../ts/loadgen.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { RoleStartError } from '../ts/process.js';
import { bankWorkload } from '../ts/workload.js';
import { CLI, tempCluster } from './helpers.js';

/**
 * Runs `remora loadgen` by hand, as a person or another parent would: waits for `ready`, then
 * writes `go` (or, with `go` false, just closes stdin) and returns the parsed `result` line.
 */
async function loadgenByHand(args: string[], go: boolean): Promise<{ code: number | null; result: Record<string, unknown> }> {
  const child = spawn(process.execPath, [CLI, 'loadgen', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  let result: Record<string, unknown> = {};
  for await (const line of createInterface({ input: child.stdout })) {
    if (line.startsWith('ready ')) {
      if (go) child.stdin.write('go\n');
      else child.stdin.end();
    } else if (line.startsWith('result ')) result = JSON.parse(line.slice('result '.length)) as Record<string, unknown>;
  }
  const code = await exited;
  clearTimeout(timer);
  return { code, result };
}

const valueOf = <T>(state: MemoryState, id: string): T | undefined => {
  const v = state.read(id).value;
  return v === undefined ? undefined : (decode(v) as T);
};

/** The invariants every run must keep, whatever the load; `warmup`: answers each generator leaves out of its latencies. */
function expectAccountedFor(r: LoadResults, warmup = 0): void {
  expect(r.committed + r.aborted + r.rejected).toBe(r.sent);
  expect(r.unanswered).toBe(0);
  expect(r.latenciesNs.length).toBe(r.sent - warmup * r.generators.length);
  for (const g of r.generators) {
    expect(g.committed + g.aborted + g.rejected + g.unanswered).toBe(g.sent);
    expect(g.cpuUs).toBeGreaterThan(0);
  }
  const q = r.latencyUs;
  expect(q).not.toBeNull();
  if (q === null) return;
  expect(q.p50).toBeGreaterThan(0);
  expect(q.p50).toBeLessThanOrEqual(q.p90);
  expect(q.p90).toBeLessThanOrEqual(q.p99);
  expect(q.p99).toBeLessThanOrEqual(q.p999);
  // In µs, as the quantiles are: ns / 1000 is monotonic, where (ns / 1000) * 1000 is not ns.
  expect(q.p999).toBeLessThanOrEqual((r.latenciesNs[r.latenciesNs.length - 1] ?? 0) / 1000);
}

describe('load generator processes', () => {
  let tmp: ReturnType<typeof tempCluster>;
  let cluster: EmbeddedCluster | null = null;
  let gens: LoadGenerators | null = null;
  beforeEach(() => {
    tmp = tempCluster();
  });
  afterEach(async () => {
    await gens?.close();
    await cluster?.close();
    [gens, cluster] = [null, null];
    tmp.cleanup();
  });

  it('two closed-loop bank generators: every transfer answered, none aborted, state equals sequential re-execution', async () => {
    const seed = 41;
    const accounts = 24;
    const started = await EmbeddedCluster.start({ dir: tmp.dir, app: 'bank', preExecutors: 1 });
    cluster = started;
    const setup = bankWorkload({ accounts, alpha: 1, seed });
    const replies = await Promise.all(setup.setup.map((tx) => started.node.submit(tx)));
    expect(replies.every((r) => r?.outcome?.status === 'ok')).toBe(true);

    gens = await startLoadGenerators({
      dir: tmp.dir,
      count: 2,
      // α 1 on 24 accounts: a few hot senders each with long nonce chains, sent by 16 clients
      // at once. Zero aborts means every chain reached the log in order.
      workload: { app: 'bank', accounts, alpha: 1, seed },
      mode: { kind: 'closed', clients: 16 },
      transactions: 600,
      // Bounds, not pacing: the run ends when the transactions do, long before.
      seconds: 30,
      drainSeconds: 5,
      // Left out of the latencies only: every other count below still covers all 600.
      warmup: 50,
    });
    expect(gens.seeds).toEqual([seed, seed + 1]);
    expect(gens.prepared).toEqual([300, 300]);
    gens.go();
    const r = await gens.results();
    expectAccountedFor(r, 50);
    expect(r.sent).toBe(600);
    expect(r.ranOut).toBe(true);
    expect(r.rejected).toBe(0);
    expect(r.generators.map((g) => g.abortReasons)).toEqual([{}, {}]);
    expect(r.committed).toBe(600);

    const digest = cluster.store.digest();
    const app = cluster.app;
    await cluster.close();
    const entries = await readSequence(join(tmp.dir, 'log'));
    expect(entries).toHaveLength(setup.setup.length + 600);
    // Disjoint senders: generator g sent only from accounts a with a mod 2 = g.
    const transfers = entries.slice(setup.setup.length).map((e) => e.tx.args as { from: number; nonce: number });
    expect(new Set(transfers.map((t) => t.from % 2))).toEqual(new Set([0, 1]));
    const reference = executeSequentially(app, entries, nativeFunctions);
    expect(reference.state.digest()).toBe(digest);
    expect([...reference.outcomes.values()].every((o) => o.status === 'ok')).toBe(true);
    let total = 0;
    for (let a = 0; a < accounts; a++) total += valueOf<Account>(reference.state, accountId(a))?.balance ?? 0;
    expect(total).toBe(setup.minted);
  });

  it('work app: open-loop generators and direct clients get what the reference executor computes', async () => {
    cluster = await EmbeddedCluster.start({ dir: tmp.dir, app: 'work', preExecutors: 1, listen: '127.0.0.1:0' });
    gens = await startLoadGenerators({
      dir: tmp.dir,
      count: 2,
      workload: { app: 'work', objects: 8, alpha: 0.5, rounds: 2000, seed: 5 },
      // 100 each, due over half a second: the rate, not the replies, paces them.
      mode: { kind: 'open', rate: 400 },
      transactions: 200,
      seconds: 30,
      drainSeconds: 5,
    });
    gens.go();
    const r = await gens.results();
    expectAccountedFor(r);
    expect(r.sent).toBe(200);
    expect(r.committed).toBe(200);
    expect(r.elapsed).toBeGreaterThanOrEqual(0.2);

    // Direct submissions, whose answers are compared one by one with the reference's.
    const node = cluster.node;
    const answered = new Map<bigint, Outcome | null>();
    for (const args of [
      { objects: [0, 1], rounds: 5000, tag: 1 },
      { objects: [7], rounds: 0, tag: 2 },
      { objects: [1, 3], rounds: 1, tag: 3 },
    ]) {
      const reply = await node.submit(makeTx(workApp, 'crunch', args));
      answered.set(reply.ts, reply.outcome);
    }
    const bad = await node.submit(makeTx(workApp, 'crunch', { objects: [2, 2], rounds: 10 }));
    expect(bad.outcome).toEqual({ status: 'aborted', reason: 'objects must be distinct' });

    // The stdin protocol: `go` starts a generator; stdin closed before it, it sends nothing.
    // Over TCP this time, with the client credential as a node on another host would hand it out.
    const address = cluster.address ?? '';
    const args = [
      '--node',
      address,
      '--secret-file',
      join(tmp.dir, 'client.secret'),
      '--app',
      'work',
      '--objects',
      '8',
      '--rounds',
      '10',
      '--seed',
      '99',
      '--clients',
      '4',
      '--transactions',
      '20',
    ];
    const byHand = await loadgenByHand(args, true);
    expect(byHand.code).toBe(0);
    expect(byHand.result).toMatchObject({ seed: 99, sent: 20, committed: 20, aborted: 0, rejected: 0, unanswered: 0, ranOut: true });
    const stopped = await loadgenByHand(args, false);
    expect(stopped.code).toBe(0);
    expect(stopped.result).toMatchObject({ seed: 99, sent: 0 });

    const digest = cluster.store.digest();
    const app = cluster.app;
    await cluster.close();
    const entries = await readSequence(join(tmp.dir, 'log'));
    expect(entries).toHaveLength(224);
    const reference = executeSequentially(app, entries, nativeFunctions);
    expect(reference.state.digest()).toBe(digest);
    for (const [ts, outcome] of answered) {
      expect(outcome?.status).toBe('ok');
      expect(reference.outcomes.get(ts)).toEqual(outcome);
    }
    // Each committed crunch counted once in each counter it named.
    const touched = entries
      .filter((e) => reference.outcomes.get(e.ts)?.status === 'ok')
      .reduce((n, e) => n + (e.tx.args as { objects: number[] }).objects.length, 0);
    let counted = 0;
    for (let o = 0; o < 8; o++) counted += valueOf<Counter>(reference.state, workId(o))?.n ?? 0;
    expect(counted).toBe(touched);
  });

  it('a generator that cannot reach the node does not start, and says why', async () => {
    const start = startLoadGenerators({
      dir: tmp.dir,
      count: 1,
      workload: { app: 'work', objects: 4, alpha: 0, rounds: 1, seed: 1 },
      mode: { kind: 'closed', clients: 1 },
      transactions: 1,
      seconds: 1,
    });
    await expect(start).rejects.toBeInstanceOf(RoleStartError);
    await expect(start).rejects.toMatchObject({ reason: expect.stringMatching(/client\.secret/) });
  });
});

describe('the work app', () => {
  const run = (args: unknown, state = new MemoryState()) => {
    const body = encodeBody('crunch', args as never, workApp.objects('crunch', args));
    return execute(workApp, decodeTx({ body, auth: [] }), state, nativeFunctions).table;
  };

  it('aborts bad arguments with the reason, writing nothing', () => {
    const cases: [unknown, RegExp][] = [
      [5, /arguments must be a map/],
      [{ rounds: 1 }, /objects must be an array of 1 to 2 counter numbers/],
      [{ objects: [], rounds: 1 }, /objects must be an array of 1 to 2/],
      [{ objects: [1, 2, 3], rounds: 1 }, /objects must be an array of 1 to 2/],
      [{ objects: [1, -1], rounds: 1 }, /objects must be integers from 0 to 4294967295/],
      [{ objects: [1.5], rounds: 1 }, /objects must be integers/],
      [{ objects: [2 ** 32], rounds: 1 }, /objects must be integers/],
      [{ objects: ['1'], rounds: 1 }, /objects must be integers/],
      [{ objects: [3, 3], rounds: 1 }, /objects must be distinct/],
      [{ objects: [3] }, /rounds must be an integer from 0 to 10000000/],
      [{ objects: [3], rounds: -1 }, /rounds must be an integer/],
      [{ objects: [3], rounds: 0.5 }, /rounds must be an integer/],
      [{ objects: [3], rounds: '10' }, /rounds must be an integer/],
      [{ objects: [3], rounds: WORK_MAX_ROUNDS + 1 }, /rounds must be an integer from 0 to 10000000/],
      [{ objects: [3], rounds: 1, tag: -1 }, /tag must be a non-negative safe integer/],
    ];
    for (const [args, reason] of cases) {
      const t = run(args);
      expect(t.outcome.status, JSON.stringify(args)).toBe('aborted');
      expect(t.outcome.status === 'aborted' ? t.outcome.reason : '').toMatch(reason);
      expect(t.writes).toEqual([]);
    }
  });

  it('is deterministic, and its digest depends on the rounds, the arguments and the values read', () => {
    const digestOf = (args: unknown, state?: MemoryState) => {
      const t = run(args, state);
      expect(t.outcome.status).toBe('ok');
      return t.outcome.status === 'ok' ? t.outcome.result : null;
    };
    const base = { objects: [4, 9], rounds: 1000, tag: 7 };
    const d = digestOf(base);
    expect(typeof d).toBe('number');
    expect(digestOf(base)).toBe(d);
    const others = [
      digestOf({ ...base, rounds: 999 }),
      digestOf({ ...base, tag: 8 }),
      digestOf({ ...base, objects: [4, 10] }),
      digestOf({ ...base, objects: [4] }),
    ];
    expect(new Set([d, ...others]).size).toBe(5);
    // After one crunch, the same transaction reads other values and gives another digest.
    const state = new MemoryState();
    const first = run(base, state);
    state.apply(first.writes, 1n);
    expect(valueOf<Counter>(state, workId(4))).toEqual({ n: 1, h: d });
    expect(valueOf<Counter>(state, workId(9))).toEqual({ n: 1, h: d });
    const second = digestOf(base, state);
    expect(second).not.toBe(d);
  });
});

describe('latency quantiles', () => {
  it('are nearest-rank over all samples, in µs', () => {
    const ns = Float64Array.from({ length: 1000 }, (_, i) => (i + 1) * 1000);
    expect(quantiles(ns)).toEqual({ p50: 500, p90: 900, p99: 990, p999: 999 });
    expect(quantiles(new Float64Array(0))).toBeNull();
    expect(split(10, 3)).toEqual([4, 3, 3]);
  });
});
