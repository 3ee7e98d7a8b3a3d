// The embedded cluster as processes: clients over the node's socket, pre-executor processes,
// bad input, and a node killed mid-run and restarted (DESIGN invariant 4, no loss).
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { encodeBody, type Transaction } from '../ts/app/tx.js';
import { loadApp } from '../ts/apps/index.js';
import { RemoraClient } from '../ts/client.js';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/index.js';
import { EmbeddedCluster, NODE_SOCKET } from '../ts/cluster.js';
import type { Reply } from '../ts/pipeline/node.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { RoleProcess } from '../ts/process.js';
import { loadClientSecret } from '../ts/secret.js';
import { connect } from '../ts/wire.js';
import { kvWorkload } from '../ts/workload.js';
import { clusterPerTest } from './helpers.js';

const startNode = (dir: string) => RoleProcess.start('node', ['--dir', dir, '--app', 'kv', '--pre-executors', '2']);

/** Submits `txs` keeping `window` outstanding; resolves with the replies that came back. */
async function submitAll(client: RemoraClient, txs: readonly Transaction[], window: number, onReply?: (n: number) => void) {
  const replies = new Map<number, Reply>();
  const errors: Error[] = [];
  const inFlight = new Set<Promise<void>>();
  for (const [i, tx] of txs.entries()) {
    const p: Promise<void> = client.submit(tx).then(
      (r) => {
        replies.set(i, r);
        onReply?.(replies.size);
      },
      (e: unknown) => {
        errors.push(e instanceof Error ? e : new Error(String(e)));
      },
    );
    const tracked = p.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
    if (inFlight.size >= window) await Promise.race(inFlight);
    if (errors.length > 0) break;
  }
  await Promise.all(inFlight);
  return { replies, errors };
}

describe('embedded cluster processes', () => {
  const cluster = clusterPerTest();
  const children = cluster.children;

  it('rejects bad input with clear errors, applies nothing, and keeps serving', async () => {
    const node = await startNode(cluster.dir);
    children.push(node);
    const secret = loadClientSecret(cluster.dir);
    const path = join(cluster.dir, NODE_SOCKET);
    await expect(connect({ path, secret: randomBytes(32), role: 'client' })).rejects.toThrow(/handshake .* failed/);
    const client = await RemoraClient.connect({ path, secret });
    const put = (key: string, value: string): Transaction => ({ body: encodeBody('put', { key, value }, [`kv/${key}`]), auth: [] });
    const cases: [Transaction | Record<string, unknown>, RegExp][] = [
      [{ body: Buffer.from([0x94, 0xac]), auth: [] }, /not valid msgpack/],
      [{ body: encodeBody('launch', {}, []), auth: [] }, /unknown command "launch" for app kv/],
      [{ body: encodeBody('put', { key: 'a', value: 'x'.repeat(70_000) }, ['kv/a']), auth: [] }, /over the limit/],
      [{ ...put('a', '1'), auth: [{ scheme: 'ed25519', publicKey: Buffer.alloc(31), signature: Buffer.alloc(64) }] }, /public key must be 32 bytes/],
      [{ body: 'hello', auth: [] }, /body must be bytes/],
    ];
    for (const [tx, message] of cases) await expect(client.submit(tx as Transaction)).rejects.toThrow(message);
    const ok = await client.submit(put('a', '1'));
    expect(ok.outcome).toEqual({ status: 'ok', result: null });
    expect(ok.ts).toBe(1n); // nothing before it was sequenced
    const read = await client.submit({ body: encodeBody('get', { key: 'a' }, ['kv/a']), auth: [] });
    expect(read.outcome).toEqual({ status: 'ok', result: '1' });
    client.close();
  });

  it('applies every sequenced transaction exactly once across SIGKILLs of a pre-executor and of the node', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`restart test: seed ${seed}`);
    const gen = kvWorkload({ keys: 200, hotKeys: 4, conflictRate: 0.3, dynamicRate: 0.1, seed });
    const txs: Transaction[] = Array.from({ length: 3000 }, () => {
      const n = gen.next();
      if (n.done) throw new Error('workload ended');
      return n.value;
    });
    const path = join(cluster.dir, NODE_SOCKET);

    const first = await startNode(cluster.dir);
    // A third pre-executor joins the running node; it is killed mid-run, before the node is.
    const joiner = await RoleProcess.start('start', ['pre-executor', '--join', cluster.dir, '--app', 'kv', '--name', 'joiner']);
    children.push(joiner);
    const secret = loadClientSecret(cluster.dir);
    let client = await RemoraClient.connect({ path, secret });
    // Kill the node once a third of the replies are in, with many transactions in flight.
    const before = await submitAll(client, txs, 128, (n) => {
      if (n === 500) joiner.kill('SIGKILL');
      if (n === 1000) first.kill('SIGKILL');
    });
    await first.exited;
    expect((await joiner.exited).signal).toBe('SIGKILL');
    expect(before.replies.size).toBeGreaterThanOrEqual(1000);
    expect(before.errors.length).toBeGreaterThan(0);

    const second = await startNode(cluster.dir);
    children.push(second);
    client = await RemoraClient.connect({ path, secret });
    // Resubmitting everything is safe: the sequencer answers known digests with their first ts.
    const after = await submitAll(client, txs, 128);
    expect(after.errors).toEqual([]);
    for (const [i, r] of before.replies) expect(after.replies.get(i)?.ts, `tx ${i}`).toBe(r.ts);
    client.close();
    const result = (await second.finish()) as { digest: string; lastApplied: string };
    children.pop();

    const entries = await readSequence(join(cluster.dir, 'log'));
    const digests = new Set(entries.map((e) => e.tx.digest));
    expect(digests.size).toBe(entries.length); // no transaction sequenced twice
    const unique = new Set(txs.map((t) => Buffer.from(t.body).toString('hex'))).size;
    expect(entries.length).toBe(unique); // none lost
    expect(result.lastApplied).toBe(String(entries.length));
    const reference = executeSequentially(loadApp('kv'), entries, nativeFunctions);
    expect(result.digest).toBe(reference.state.digest());
  });

  it('autoscales the pool from measured load and sends optimistic replies over the wire', async () => {
    const scaled: string[] = [];
    let onScale: (() => void) | null = null;
    // Push with an unreachable threshold keeps pre-executors' copies stale on purpose, so an
    // optimistic read after a write is wrong for sure. A long deadline: results always count.
    const node = await EmbeddedCluster.start({
      dir: cluster.dir,
      app: 'kv',
      preExecutors: 1,
      deadlineMs: 10_000,
      stateUpdate: 'push',
      push: { threshold: 1_000_000 },
      speculation: false,
      autoscale: { min: 1, max: 2, intervalMs: 100, patience: 2, highQueue: 2, lowQueue: 1 },
      onScale: (d, pool) => {
        scaled.push(`${d}:${pool}`);
        onScale?.();
      },
    });
    let digest = '';
    const waitScale = (n: number, what: string) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no autoscale ${what} within 60 s: ${scaled.join(', ')}`)), 60_000);
        onScale = () => {
          if (scaled.length < n) return;
          clearTimeout(timer);
          resolve();
        };
        onScale();
      });
    try {
      const client = await RemoraClient.connect({ path: join(cluster.dir, NODE_SOCKET), secret: loadClientSecret(cluster.dir) });
      const wrote = client.submitOptimistic(makeTx(kvApp, 'put', { key: 'a', value: 'one' }));
      expect(await wrote.optimistic).toEqual({ outcome: { status: 'ok', result: null }, from: 'pre-1' });
      expect((await wrote.final).optimistic).toBe('confirmed');
      const read = client.submitOptimistic(makeTx(kvApp, 'copy', { from: 'a', to: 'b' }));
      expect((await read.optimistic)?.outcome).toEqual({ status: 'ok', result: null });
      const final = await read.final;
      expect(final.outcome).toEqual({ status: 'ok', result: 'one' });
      expect(final.optimistic).toBe('wrong');

      // Load: 256 puts in flight until the pool grew; then none, until it shrank back.
      let stop = false;
      let n = 0;
      const load = Promise.all(
        Array.from({ length: 256 }, async () => {
          while (!stop) await client.submit(makeTx(kvApp, 'put', { key: `k${n % 1000}`, value: n++ }));
        }),
      );
      await waitScale(1, 'up');
      stop = true;
      await load;
      expect(scaled[0]).toBe('up:2');
      await waitScale(2, 'down');
      expect(scaled[1]).toBe('down:1');
      expect(node.poolSize).toBe(1);
      client.close();
    } finally {
      digest = node.store.digest();
      await node.close();
    }
    // Nothing was lost while the pool changed: the state equals sequential execution of the log.
    const entries = await readSequence(join(cluster.dir, 'log'));
    expect(node.node.lastApplied).toBe(BigInt(entries.length));
    expect(digest).toBe(executeSequentially(kvApp, entries, nativeFunctions).state.digest());
  });
});
