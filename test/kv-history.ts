// What the Heron linearizability tests share: the Porcupine checker (test/porcupine, built
// once per file, bounded), a seeded generator, the kv history's operation shape, and
// closed-loop clients of random get / put / copy operations over keys of both partitions, and
// the rejoin scenario's first step, which the shm and tcp tests both run.
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/kv.js';
import type { HeronCluster, Rejoin, StateTransfer } from '../ts/heron/cluster.js';
import type { ReplicaSummary } from '../ts/heron/replica.js';

const ROOT = join(import.meta.dirname, '..');
const CHECKER = join(ROOT, 'target', 'porcupine-kv');

/** Builds the checker; call from `beforeAll` (the first run fetches Porcupine through the Go module proxy). */
export function buildChecker(): void {
  execFileSync('go', ['build', '-o', CHECKER, '.'], { cwd: join(ROOT, 'test', 'porcupine'), stdio: 'inherit', timeout: 180_000 });
}

/** Runs the checker on `history`, written as `dir/name.json`. */
export function check(dir: string, name: string, history: unknown): { status: number | null; out: string } {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(history));
  const r = spawnSync(CHECKER, [path], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** mulberry32: a failing run replays from its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One operation of a history, as the checker reads it. */
export interface Op {
  client: number;
  call: number;
  return: number;
  input: Record<string, string>;
  output: string;
}

/** Keys of both partitions (kv hashes them: f, h, i, j are in partition 1 of 2). */
export const KEYS = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
export const micros = (): number => Number(process.hrtime.bigint() / 1000n);

/** One client's next operation: a get, a put or a copy (most copies cross partitions). */
export function nextOp(next: () => number, client: number, i: number): { tx: ReturnType<typeof makeTx>; input: Record<string, string> } {
  const key = () => KEYS[Math.floor(next() * KEYS.length)] ?? 'a';
  const value = client * 1000 + i;
  // Every operation distinct: the log treats an identical body as a retry of the first.
  const nonce = `${client}.${i}`;
  const pick = next();
  if (pick < 0.3) {
    const k = key();
    return { tx: makeTx(kvApp, 'get', { key: k, nonce }), input: { op: 'get', key: k } };
  }
  if (pick < 0.65) {
    const k = key();
    return { tx: makeTx(kvApp, 'put', { key: k, value, nonce }), input: { op: 'put', key: k, value: JSON.stringify(value) } };
  }
  const [f, t] = [key(), key()];
  return { tx: makeTx(kvApp, 'copy', { from: f, to: t, nonce }), input: { op: 'copy', from: f, to: t } };
}

/** How far every replica answered, against what it was delivered, as JSON (for failure messages). */
function progressOf(cluster: HeronCluster): string {
  return JSON.stringify(cluster.progress(), (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

/** How long one operation may go unanswered before the test fails saying where the replicas are. */
const ANSWER_BOUND_MS = 90_000;

/**
 * `tx`'s reply, or a failure after ANSWER_BOUND_MS naming the operation and how far every
 * replica answered: a stuck cluster fails the test with that, not with the test's timeout.
 */
export async function answered(cluster: HeronCluster, tx: ReturnType<typeof makeTx>, what: string): Promise<Awaited<ReturnType<HeronCluster['submit']>>> {
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what} unanswered after ${ANSWER_BOUND_MS} ms; answered/delivered: ${progressOf(cluster)}; rejoins: ${cluster.rejoins.length}`));
    }, ANSWER_BOUND_MS);
  });
  try {
    return await Promise.race([cluster.submit(tx), stuck]);
  } finally {
    clearTimeout(timer);
  }
}

/** Closed-loop clients, each going on while `more(i)` says so; `after(n)` sees progress. */
export async function runClients(
  cluster: HeronCluster,
  seed: number,
  clients: number,
  first: number,
  t0: number,
  more: (i: number) => boolean,
  after?: (done: number) => void,
): Promise<Op[]> {
  const history: Op[] = [];
  let done = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const client = first + c;
      const next = rng(seed * 31 + client);
      for (let i = 0; more(i); i++) {
        const { tx, input } = nextOp(next, client, i);
        const call = micros() - t0;
        const reply = await answered(cluster, tx, `client ${client}'s operation ${i} (${JSON.stringify(input)})`);
        const ret = micros() - t0;
        if (reply.outcome.status !== 'ok') throw new Error(`op ${JSON.stringify(input)} aborted: ${reply.outcome.reason}`);
        history.push({ client, call, return: ret, input, output: JSON.stringify(reply.outcome.result) });
        after?.(++done);
      }
    }),
  );
  return history;
}

/**
 * The rejoin scenario's first step, on a 2 × 3 cluster started with `restartReplicas`: 4 clients
 * load it, replica 1.2 is SIGKILLed after 20 operations, and the clients go on until it rejoined
 * (bounded: at most 150 operations each), their operations appended to `history`. Checks the
 * rejoin (it started empty, so everything it holds of partition 1 came in the shipment) and
 * returns it.
 */
export async function killAndRejoin(cluster: HeronCluster, seed: number, t0: number, history: Op[]): Promise<Rejoin | undefined> {
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
  // Together: an operation left unanswered fails the test at once, with its own message.
  const [ok, ops] = await Promise.all([rejoined, during]);
  expect(ok).toBe(true);
  history.push(...ops);
  expect(killed).toBe(true);
  const [rejoin] = cluster.rejoins;
  expect(rejoin).toMatchObject({ partition: 1, replica: 2 });
  expect(rejoin?.needed).toBeGreaterThan(0n);
  expect(rejoin?.ts).toBeGreaterThanOrEqual(rejoin?.needed ?? 0n);
  expect(rejoin?.objects).toBeGreaterThan(0);
  return rejoin;
}

/** A final read of every key, appended to `history` after everything else returned. */
export async function finalReads(cluster: HeronCluster, history: Op[], t0: number): Promise<void> {
  const tEnd = micros() - t0;
  for (const k of KEYS) {
    const reply = await answered(cluster, makeTx(kvApp, 'get', { key: k, nonce: 'final' }), `the final read of ${k}`);
    history.push({
      client: 99,
      call: tEnd,
      return: micros() - t0,
      input: { op: 'get', key: k },
      output: JSON.stringify(reply.outcome.status === 'ok' ? reply.outcome.result : 'aborted'),
    });
  }
}

/** Fails, saying how far each replica got, unless the replicas of `partitions` catch up within `timeoutMs`. */
export async function expectSettled(cluster: HeronCluster, logs: readonly string[], partitions: readonly number[], timeoutMs: number): Promise<void> {
  if (await cluster.settle(timeoutMs, partitions)) return;
  expect.fail(
    `partitions ${partitions.join(', ')} did not catch up within ${timeoutMs} ms; answered/delivered: ${progressOf(cluster)}; log:\n${logs.slice(-40).join('\n')}`,
  );
}

/**
 * The stopped replica's state transfer, within `timeoutMs`. If none came, fails saying how far
 * every replica answered and what the cluster logged, so a failure in CI shows where it stopped.
 */
export async function expectTransferOf(
  cluster: HeronCluster,
  logs: readonly string[],
  lagger: { partition: number; replica: number },
  timeoutMs: number,
): Promise<void> {
  if (await cluster.waitTransferOf(lagger.partition, lagger.replica, timeoutMs)) return;
  expect.fail(
    `no state transfer of ${lagger.partition}.${lagger.replica} within ${timeoutMs} ms; answered/delivered: ${progressOf(cluster)}; ` +
      `transfers: ${cluster.transfers.length}; log:\n${logs.slice(-40).join('\n')}`,
  );
}

/**
 * The replica a test stopped caught up by state transfer (its first transfer is returned);
 * every transfer the launcher recorded is counted by the replica that received it, and
 * served by at least one peer of its partition (more when a peer's shipment fell short and
 * the next was asked). Other replicas may have lagged too: on a host with fewer cores than
 * replicas one descheduled through two writes of an object it reads remotely is a lagger, as
 * Heron intends.
 */
export function expectTransfersCounted(
  cluster: HeronCluster,
  summaries: readonly ReplicaSummary[],
  lagger: { partition: number; replica: number },
  logs: readonly string[] = [],
): StateTransfer | undefined {
  const of = (partition: number, replica: number) => cluster.transfers.filter((t) => t.partition === partition && t.replica === replica);
  expect(of(lagger.partition, lagger.replica).length).toBeGreaterThanOrEqual(1);
  const seen = () =>
    `launcher recorded ${JSON.stringify(cluster.transfers, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}; log:\n${logs.slice(-40).join('\n')}`;
  for (const s of summaries) expect(s.transfers, `transfers counted by replica ${s.partition}.${s.replica}; ${seen()}`).toBe(of(s.partition, s.replica).length);
  for (const h of new Set(summaries.map((s) => s.partition))) {
    const served = summaries.filter((s) => s.partition === h).reduce((n, s) => n + s.served, 0);
    expect(served).toBeGreaterThanOrEqual(cluster.transfers.filter((t) => t.partition === h).length);
  }
  return of(lagger.partition, lagger.replica)[0];
}
