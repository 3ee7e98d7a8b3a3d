// Checkpoints (docs/checkpoints.md): the store's state as of a point in a file, the newest
// valid one installed on start, then only the log's tail replayed; `ready` once it is applied.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decode } from '../ts/app/codec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import type { Transaction } from '../ts/app/tx.js';
import { MemoryState } from '../ts/app/state.js';
import { AppVersions } from '../ts/app/versions.js';
import { loadApp } from '../ts/apps/index.js';
import { RemoraClient } from '../ts/client.js';
import { NODE_SOCKET } from '../ts/cluster.js';
import {
  Checkpointer,
  CHECKPOINTS_DIR,
  checkpointFile,
  decodeMeta,
  encodeMeta,
  listCheckpoints,
  restoreLatest,
  seedFromCheckpoint,
  type CheckpointTarget,
  versionMismatch,
} from '../ts/pipeline/checkpoints.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { RoleProcess } from '../ts/process.js';
import { loadClientSecret } from '../ts/secret.js';
import { readCheckpointHeader, Store } from '../ts/store.js';
import { bankWorkload } from '../ts/workload.js';
import { clusterPerTest, tempCluster } from './helpers.js';

const versionsOf = (digest: string): AppVersions => new AppVersions({ app: loadApp('kv'), spec: 'kv', digest });
const meta = (digest: string) => encodeMeta({ format: 1, resume: new Uint8Array(0), versions: [{ after: 0n, spec: 'kv', digest }] });

describe('checkpoint files', () => {
  let cluster: ReturnType<typeof tempCluster>;
  const stores: Store[] = [];
  beforeEach(() => {
    cluster = tempCluster();
  });
  afterEach(() => {
    for (const s of stores.splice(0)) s.close();
    cluster.cleanup();
  });
  const store = (name: string): Store => {
    const s = Store.create({ dir: cluster.dir, name, secret: cluster.secret });
    stores.push(s);
    return s;
  };

  it('restores the newest valid file, passing over a torn one and one taken with other code', async () => {
    const a = store('a');
    const dir = join(cluster.dir, CHECKPOINTS_DIR);
    mkdirSync(dir);
    a.set([{ id: 'x', value: Buffer.from('1'), version: 1n }]);
    a.set([{ id: 'y', value: Buffer.from('2'), version: 2n }]);
    expect(await a.checkpoint(checkpointFile(dir, 2n), 2n, meta('d1'))).toEqual({ records: 2, bytes: expect.any(Number) as number, gone: 0 });
    a.set([{ id: 'x', value: Buffer.from('3'), version: 3n }]);
    a.delete([{ id: 'y', version: 4n }]);
    await a.checkpointHeld(checkpointFile(dir, 4n), 4n, meta('d1'));
    a.set([{ id: 'z', value: Buffer.from('5'), version: 5n }]);
    await a.checkpoint(checkpointFile(dir, 5n), 5n, meta('other'));
    expect(readCheckpointHeader(checkpointFile(dir, 4n))).toMatchObject({ format: 1, ts: 4n, records: 2 });

    // The newest is from other code; the one before is torn: the oldest is installed.
    const torn = checkpointFile(dir, 4n);
    truncateSync(torn, statSync(torn).size - 1);
    const logged: string[] = [];
    const b = store('b');
    const r = restoreLatest(dir, b, versionsOf('d1'), (m) => logged.push(m));
    expect(r).toMatchObject({ ts: 2n, records: 2, path: checkpointFile(dir, 2n) });
    expect(logged).toHaveLength(2);
    expect(logged[0]).toMatch(/00000000000000000005\.ckpt skipped: it was taken with app other after ts 0, the log's header has d1 after ts 0/);
    expect(logged[1]).toMatch(/00000000000000000004\.ckpt skipped: .*(torn)/);
    expect(b.get(['x', 'y', 'z'])).toEqual([
      { status: 'value', version: 1n, value: Buffer.from('1') },
      { status: 'value', version: 2n, value: Buffer.from('2') },
      { status: 'absent' },
    ]);
    // A store that holds anything is refused, naming why.
    expect(() => b.restore(checkpointFile(dir, 2n))).toThrow(/already holds 2 objects; a checkpoint is restored into an empty store only/);
    // A damaged record body is found before anything is installed.
    const bytes = readFileSync(checkpointFile(dir, 2n));
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
    writeFileSync(checkpointFile(dir, 2n), bytes);
    const c = store('c');
    expect(restoreLatest(dir, c, versionsOf('d1'), () => undefined)).toBeNull();
    expect(c.stats().objects).toBe(0);
  });

  it('seeds a copy kept in memory from the newest readable checkpoint, keeping what it holds newer', async () => {
    const a = store('a');
    const dir = join(cluster.dir, CHECKPOINTS_DIR);
    mkdirSync(dir);
    a.set([
      { id: 'x', value: Buffer.from('1'), version: 1n },
      { id: 'y', value: Buffer.from('2'), version: 2n },
      { id: 'é', value: Buffer.alloc(0), version: 3n },
    ]);
    a.delete([{ id: 'y', version: 4n }]);
    await a.checkpoint(checkpointFile(dir, 4n), 4n, meta('d'));
    writeFileSync(checkpointFile(dir, 9n), 'not a checkpoint');
    const copy = new MemoryState();
    copy.apply([['x', Buffer.from('newer')]], 6n);
    const logged: string[] = [];
    expect(seedFromCheckpoint(dir, copy, (m) => logged.push(m))).toEqual({ ts: 4n, objects: 3, path: checkpointFile(dir, 4n) });
    expect(logged).toEqual([expect.stringMatching(/00000000000000000009\.ckpt skipped: .*shorter than a header \(torn\)/) as string]);
    expect([...copy.objects.entries()].sort()).toEqual([
      ['x', { version: 6n, value: Buffer.from('newer') }],
      ['y', { version: 4n, value: undefined }],
      ['é', { version: 3n, value: Buffer.alloc(0) }],
    ]);
    expect(seedFromCheckpoint(join(cluster.dir, 'none'), copy)).toBeNull();
  });

  it('accepts a checkpoint only if the log ran the same app versions up to its point', () => {
    const kv = loadApp('kv');
    const log = new AppVersions({ app: kv, spec: 'kv', digest: 'v0' });
    log.activate({ app: kv, spec: 'kv2', digest: 'v1' }, 10n);
    log.activate({ app: kv, spec: 'kv3', digest: 'v2' }, 50n);
    const taken = [
      { after: 0n, spec: 'kv', digest: 'v0' },
      { after: 10n, spec: 'kv2', digest: 'v1' },
    ];
    // A version activated at or after the point changed nothing the checkpoint holds.
    expect(versionMismatch(20n, taken, log)).toBeNull();
    expect(versionMismatch(50n, taken, log)).toBeNull();
    expect(versionMismatch(51n, taken, log)).toBe("it was taken with 2 app versions up to ts 51, the log's header has 3");
    expect(
      versionMismatch(
        20n,
        [
          { after: 0n, spec: 'kv', digest: 'v0' },
          { after: 10n, spec: 'x', digest: 'other' },
        ],
        log,
      ),
    ).toBe("it was taken with app other after ts 10, the log's header has v1 after ts 10");
    const meta = encodeMeta({ format: 1, resume: Uint8Array.of(1, 2), versions: taken });
    expect(decodeMeta(meta)).toEqual({ format: 1, resume: Uint8Array.of(1, 2), versions: taken });
    expect(() => decodeMeta(Uint8Array.of(0xc0))).toThrow(/not a map/);
  });

  it('retries an export whose state was overwritten once, then takes one under one lock hold', async () => {
    const dir = join(cluster.dir, CHECKPOINTS_DIR);
    const calls: string[] = [];
    let gone = 2;
    const write = (how: string) => (path: string, ts: bigint) => {
      calls.push(`${how}@${ts}`);
      if (gone-- > 0) return Promise.resolve({ records: 0, bytes: 0, gone: 3 });
      writeFileSync(path, 'x');
      return Promise.resolve({ records: 7, bytes: 1, gone: 0 });
    };
    const target: CheckpointTarget = { checkpoint: write('chunked'), checkpointHeld: write('held') };
    const logged: string[] = [];
    const cp = new Checkpointer({
      dir,
      store: target,
      every: 10,
      resumePoint: () => new Uint8Array(0),
      versions: () => versionsOf('d'),
      log: (m) => logged.push(m),
    });
    const settle = () => new Promise((r) => setImmediate(r));
    cp.applied(4n, 4); // not yet due
    cp.applied(10n, 6);
    await settle();
    cp.applied(12n, 2); // due at once: the retry
    await settle();
    cp.applied(13n, 1); // gone again: held
    await settle();
    expect(calls).toEqual(['chunked@10', 'chunked@12', 'held@13']);
    expect(cp.stats).toMatchObject({ taken: 1, lastTs: 13n, records: 7, gone: 2, held: 1, failed: 0 });
    expect(logged).toHaveLength(2);
    // Two are kept: the newest and one to fall back to.
    for (const [ts, n] of [
      [20n, 10],
      [30n, 10],
      [40n, 10],
    ] as const) {
      cp.applied(ts, n);
      await settle();
    }
    expect(listCheckpoints(dir).map((c) => c.ts)).toEqual([40n, 30n]);
    await cp.close();
  });
});

/** Submits `txs` keeping `window` in flight; stops counting at the first error (the node died). */
async function submitAll(client: RemoraClient, txs: readonly Transaction[], window: number, onReply: (n: number) => void): Promise<number> {
  let replies = 0;
  let failed = false;
  const inFlight = new Set<Promise<void>>();
  for (const tx of txs) {
    if (failed) break;
    const p: Promise<void> = client.submit(tx).then(
      () => onReply(++replies),
      () => {
        failed = true;
      },
    );
    const tracked = p.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
    if (inFlight.size >= window) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  return replies;
}

interface ReadyInfo {
  started: string;
  lastApplied: string;
}

describe('a node restarted after SIGKILL', () => {
  const cluster = clusterPerTest();
  const children = cluster.children;

  // Restarts run no pre-executor: `ready` would then come at once if it did not wait for the tail.
  const startNode = async (preExecutors = 0): Promise<RoleProcess> => {
    const node = await RoleProcess.start(
      'node',
      ['--dir', cluster.dir, '--app', 'bank', '--pre-executors', String(preExecutors), '--checkpoint-every', '300'],
      {
        readyTimeoutMs: 60_000,
      },
    );
    children.push(node);
    return node;
  };
  const finish = async (node: RoleProcess): Promise<{ digest: string; lastApplied: string }> => {
    const r = (await node.finish()) as { digest: string; lastApplied: string };
    children.splice(children.indexOf(node), 1);
    return r;
  };

  it('starts from its newest checkpoint plus the log tail, equal to sequential execution, and falls back past a torn one', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`checkpoint restart test: seed ${seed}`);
    const work = bankWorkload({ accounts: 40, alpha: 0.8, seed });
    const txs = [...work.setup, ...Array.from({ length: 2400 }, () => work.next())];
    const dir = join(cluster.dir, CHECKPOINTS_DIR);
    const logDir = join(cluster.dir, 'log');

    const first = await startNode(1);
    const client = await RemoraClient.connect({ path: join(cluster.dir, NODE_SOCKET), secret: loadClientSecret(cluster.dir) });
    await submitAll(client, txs, 64, (n) => {
      if (n === 1800) first.kill('SIGKILL');
    });
    client.close();
    expect((await first.exited).signal).toBe('SIGKILL');
    children.splice(children.indexOf(first), 1);

    const entries = await readSequence(logDir);
    const last = BigInt(entries.length);
    const reference = executeSequentially(loadApp('bank'), entries, nativeFunctions).state;
    // The money supply is conserved by the reference; equal digests carry that to the node.
    let total = 0;
    for (const [id, o] of reference.objects) {
      if (id.startsWith('acct/') && o.value) total += (decode(o.value) as { balance: number }).balance;
    }
    expect(total).toBe(work.minted);
    const taken = listCheckpoints(dir);
    expect(taken.length).toBeGreaterThanOrEqual(1);
    const newest = taken[0]?.ts ?? 0n;
    expect(newest).toBeGreaterThanOrEqual(300n);

    const second = await startNode();
    const ready = second.readyInfo as ReadyInfo;
    console.log(`killed at ts ${last}; checkpoints at ${taken.map((c) => c.ts).join(', ')}; restarted ${ready.started}`);
    // Ready only once the whole log as it was at start is applied.
    expect(BigInt(ready.lastApplied)).toBeGreaterThanOrEqual(last);
    expect(ready.started).toBe(`from checkpoint at ts ${newest} + ${last - newest} replayed`);
    // A pre-executor joining on the node's host starts from the newest checkpoint.
    const joiner = await RoleProcess.start('start', ['pre-executor', '--join', cluster.dir, '--app', 'bank', '--name', 'joiner']);
    children.push(joiner);
    await expect.poll(() => joiner.stderr, { timeout: 10_000 }).toMatch(/pre-executor joiner: copy seeded from checkpoint at ts \d+ \(\d+ objects\)/);
    await joiner.stop(2000);
    children.splice(children.indexOf(joiner), 1);
    const after = await finish(second);
    expect(after.lastApplied).toBe(String(last));
    expect(after.digest).toBe(reference.digest());

    // Tear the newest checkpoint: the next start passes over it, says why, and uses the older.
    const files = listCheckpoints(dir);
    expect(files.length).toBe(2);
    const [torn, older] = files as [{ ts: bigint; path: string }, { ts: bigint; path: string }];
    truncateSync(torn.path, Math.floor(statSync(torn.path).size / 2));
    const third = await startNode();
    expect((third.readyInfo as ReadyInfo).started).toBe(`from checkpoint at ts ${older.ts} + ${last - older.ts} replayed`);
    expect(third.stderr).toContain(`checkpoint ${torn.path} skipped:`);
    expect(third.stderr).toMatch(/\(torn\)/);
    const again = await finish(third);
    expect(again.digest).toBe(reference.digest());
    expect(again.lastApplied).toBe(String(last));
  });
});
