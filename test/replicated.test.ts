// Replicated primaries on a JetStream stream, under faults (issue 14): two nodes follow one
// stream, clients fail over between them, and the test kills a pre-executor, a primary and the
// engine's leader, and cuts a primary off from the engine and heals it. Afterwards: every
// acknowledged transaction is in the stream exactly once, both nodes applied the same sequence
// to the same state (equal to sequential execution), the bank's money is conserved, and kv
// histories are linearizable (Porcupine).
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { decode } from '../ts/app/codec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import type { Transaction } from '../ts/app/tx.js';
import { kvApp, loadApp } from '../ts/apps/index.js';
import { RemoraClient } from '../ts/client.js';
import { haveGo, startNatsCluster, type NatsCluster } from '../ts/engine/nats.js';
import { HeronCluster } from '../ts/heron/cluster.js';
import { JetStreamSequencer } from '../ts/pipeline/jetstream-sequencer.js';
import type { Reply } from '../ts/pipeline/node.js';
import type { Sequenced } from '../ts/pipeline/sequencer.js';
import { RoleProcess } from '../ts/process.js';
import { CLIENT_SECRET_FILE, loadClientSecret, loadOrCreateSecret, SECRET_FILE } from '../ts/secret.js';
import { bankWorkload } from '../ts/workload.js';
import { tempCluster } from './helpers.js';
import { PartitionProxy } from './partition-proxy.js';

const GO = haveGo();
if (!GO) console.warn('replicated.test: skipped: `go` is not on PATH, so nats-server cannot be built');
const ROOT = join(import.meta.dirname, '..');
const CHECKER = join(ROOT, 'target', 'porcupine-kv-replicated');

interface NodeResult {
  digest: string;
  lastApplied: string;
  agreement: { published: number; agreed: number; disagreed: number; malformed: number };
}

/** Everything in `stream`, read by a fresh sequencer: the order every node applies. */
async function readStream(servers: string[], token: string, stream: string): Promise<Sequenced[]> {
  const s = await JetStreamSequencer.open({ servers, stream, token, name: 'audit' });
  const out: Sequenced[] = [];
  try {
    s.subscribe(0n, (batch) => void out.push(...batch));
    const last = await s.caughtUp();
    expect(BigInt(out.length)).toBe(last);
    return out;
  } finally {
    await s.close();
  }
}

describe.skipIf(!GO)('replicated primaries on JetStream, under faults', () => {
  let tmp: ReturnType<typeof tempCluster>;
  let engine: NatsCluster;
  const token = randomBytes(16).toString('hex');
  let tokenFile: string;
  let proxies: PartitionProxy[] = [];
  const children = new Set<RoleProcess>();

  beforeAll(async () => {
    tmp = tempCluster();
    tokenFile = join(tmp.dir, 'engine.token');
    writeFileSync(tokenFile, token, { mode: 0o600 });
    engine = await startNatsCluster({ dir: join(tmp.dir, 'engine'), token });
    proxies = await Promise.all(
      engine.urls.map((u) => {
        const { hostname, port } = new URL(u);
        return PartitionProxy.start({ host: hostname, port: Number(port) });
      }),
    );
    execFileSync('go', ['build', '-o', CHECKER, '.'], { cwd: join(ROOT, 'test', 'porcupine'), stdio: 'inherit', timeout: 180_000 });
  }, 240_000);

  afterAll(async () => {
    await Promise.all([...children].map((c) => c.stop(2000)));
    await Promise.all(proxies.map((p) => p.close()));
    await engine?.stop();
    tmp?.cleanup();
  });

  /** Two node directories sharing one cluster secret: clients and members trust both. */
  const nodeDirs = (name: string): [string, string] => {
    const [a, b] = [join(tmp.dir, `${name}-a`), join(tmp.dir, `${name}-b`)];
    loadOrCreateSecret(a);
    mkdirSync(b, { mode: 0o700 });
    for (const f of [SECRET_FILE, CLIENT_SECRET_FILE]) copyFileSync(join(a, f), join(b, f));
    return [a, b];
  };

  /** A node on `stream`: `a` reaches the engine through the partition proxies, `b` directly. */
  const startNode = async (
    dir: string,
    name: string,
    stream: string,
    app: string,
    viaProxy: boolean,
    port = 0,
    extra: string[] = [],
  ): Promise<{ node: RoleProcess; endpoint: { host: string; port: number } }> => {
    const servers = (viaProxy ? proxies.map((p) => p.url) : engine.urls).join(',');
    const node = await RoleProcess.start('node', [
      ...extra,
      ...['--dir', dir, '--app', app, '--pre-executors', '1', '--listen', `127.0.0.1:${port}`],
      ...['--sequencer', servers, '--stream', stream, '--sequencer-token-file', tokenFile, '--node-name', name, '--checkpoint-every', '400'],
    ]);
    children.add(node);
    const address = (node.readyInfo as { address: string }).address;
    const [host, p] = address.split(':');
    return { node, endpoint: { host: host ?? '127.0.0.1', port: Number(p) } };
  };
  const finish = async (node: RoleProcess): Promise<NodeResult> => {
    const r = (await node.finish()) as NodeResult;
    children.delete(node);
    return r;
  };
  const kill = async (node: RoleProcess): Promise<void> => {
    node.kill('SIGKILL');
    await node.exited;
    children.delete(node);
  };

  it('bank: kills and a partition lose nothing, apply nothing twice, conserve money, and the primaries agree', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`replicated bank test: seed ${seed}`);
    const work = bankWorkload({ accounts: 40, alpha: 0.8, seed });
    const txs: Transaction[] = [...work.setup, ...Array.from({ length: 2800 }, () => work.next())];
    const [dirA, dirB] = nodeDirs('bank');
    const a = await startNode(dirA, 'a', 'BANK', 'bank', true);
    let b = await startNode(dirB, 'b', 'BANK', 'bank', false);
    const joiner = await RoleProcess.start('start', ['pre-executor', '--join', dirA, '--app', 'bank', '--name', 'joiner']);
    children.add(joiner);
    const failovers: string[] = [];
    const client = await RemoraClient.connect({
      endpoints: [a.endpoint, b.endpoint],
      secret: loadClientSecret(dirA),
      giveUpMs: 60_000,
      replyTimeoutMs: 3000,
      onFailover: (to, resent) => failovers.push(`${JSON.stringify(to)} (${resent} resent)`),
    });
    // Faults, each once, when so many replies are in; run beside the submissions.
    const faults: Promise<unknown>[] = [];
    const at = new Map<number, () => Promise<unknown>>([
      [400, () => kill(joiner)],
      // The client's node is cut off from the engine: its replies stop, the client fails over.
      [800, async () => proxies.forEach((p) => p.partition())],
      [1300, async () => proxies.forEach((p) => p.heal())],
      [1700, () => kill(b.node)],
      [
        2100,
        async () => {
          const leader = await engine.leader('BANK');
          await engine.kill(leader);
          await engine.start(leader);
        },
      ],
      [2400, async () => (b = await startNode(dirB, 'b', 'BANK', 'bank', false, b.endpoint.port))],
    ]);
    const replies = new Map<number, Reply>();
    const inFlight = new Set<Promise<void>>();
    for (const [i, tx] of txs.entries()) {
      const p = client.submit(tx).then((r) => {
        replies.set(i, r);
        const fault = at.get(replies.size);
        if (fault) faults.push(fault());
      });
      const tracked = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      if (inFlight.size >= 32) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    await Promise.all(faults);
    client.close();
    console.log(`replicated bank test: failovers ${failovers.join(', ')}`);
    expect(replies.size).toBe(txs.length);
    expect(failovers.length).toBeGreaterThanOrEqual(2);

    const [ra, rb] = await Promise.all([finish(a.node), finish(b.node)]);
    const entries = await readStream(engine.urls, token, 'BANK');
    // Exactly once: every submitted transaction in the stream's sequence, none twice.
    const digests = new Set(entries.map((e) => e.tx.digest));
    expect(digests.size).toBe(entries.length);
    expect(entries.length).toBe(new Set(txs.map((t) => Buffer.from(t.body).toString('hex'))).size);
    const position = new Map(entries.map((e) => [e.tx.digest, e.ts]));
    for (const r of replies.values()) expect(r.ts >= 1n && r.ts <= BigInt(entries.length)).toBe(true);
    expect(new Set([...replies.values()].map((r) => r.ts)).size).toBe(position.size);
    // Both primaries applied the whole sequence to the same state, sequential execution's.
    const reference = executeSequentially(loadApp('bank'), entries, nativeFunctions).state;
    for (const r of [ra, rb]) {
      expect(r.lastApplied).toBe(String(entries.length));
      expect(r.digest).toBe(reference.digest());
      expect(r.agreement.disagreed).toBe(0);
    }
    expect(ra.agreement.agreed + rb.agreement.agreed).toBeGreaterThan(0);
    let total = 0;
    for (const [id, o] of reference.objects) if (id.startsWith('acct/') && o.value) total += (decode(o.value) as { balance: number }).balance;
    expect(total).toBe(work.minted);

    // Everything restarted: the engine's three servers killed and started again, then both
    // nodes, each from its newest checkpoint and the stream after it, to the same state.
    const servers = engine.urls.map((_, i) => i);
    for (const i of servers) await engine.kill(i);
    // Together: a lone server reports itself healthy only once JetStream has a quorum.
    await Promise.all(servers.map((i) => engine.start(i)));
    // a serves its store over tcp, so members elsewhere can copy its checkpoint.
    const again = await Promise.all([startNode(dirA, 'a', 'BANK', 'bank', true, 0, ['--transport', 'tcp']), startNode(dirB, 'b', 'BANK', 'bank', false)]);
    for (const n of again) expect((n.node.readyInfo as { started: string }).started).toMatch(/^from checkpoint at ts \d+ \+ \d+ replayed$/);
    // A third primary with an empty directory starts from a's checkpoint, copied over tcp.
    const dirC = join(tmp.dir, 'bank-c');
    mkdirSync(dirC, { mode: 0o700 });
    for (const f of [SECRET_FILE, CLIENT_SECRET_FILE]) copyFileSync(join(dirA, f), join(dirC, f));
    const peer = `${again[0]?.endpoint.host ?? ''}:${again[0]?.endpoint.port ?? 0}`;
    const c = await startNode(dirC, 'c', 'BANK', 'bank', false, 0, ['--bootstrap', peer]);
    again.push(c);
    expect(c.node.stderr).toMatch(/node: bootstrap: copied the checkpoint at ts \d+ \(\d+ bytes\) from /);
    expect((c.node.readyInfo as { started: string }).started).toMatch(/^from checkpoint at ts \d+ \+ \d+ replayed$/);
    // A pre-executor joining a from elsewhere (its TCP endpoint) is seeded the same way.
    const remoteJoiner = await RoleProcess.start('start', [
      'pre-executor',
      '--join',
      peer,
      '--secret-file',
      join(dirA, SECRET_FILE),
      '--app',
      'bank',
      '--name',
      'remote',
    ]);
    children.add(remoteJoiner);
    await expect.poll(() => remoteJoiner.stderr, { timeout: 10_000 }).toMatch(/pre-executor remote: copy seeded from checkpoint at ts \d+ \(\d+ objects\)/);
    await remoteJoiner.stop(2000);
    children.delete(remoteJoiner);
    for (const r of await Promise.all(again.map((n) => finish(n.node)))) {
      expect(r.lastApplied).toBe(String(entries.length));
      expect(r.digest).toBe(reference.digest());
    }
  }, 180_000);

  it('kv: histories across a primary killed and one cut off are linearizable (Porcupine)', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`replicated kv test: seed ${seed}`);
    const [dirA, dirB] = nodeDirs('kv');
    const a = await startNode(dirA, 'a', 'KV', 'kv', true);
    const b = await startNode(dirB, 'b', 'KV', 'kv', false);
    const secret = loadClientSecret(dirA);
    const t0 = process.hrtime.bigint();
    const micros = () => Number((process.hrtime.bigint() - t0) / 1000n);
    const history: { client: number; call: number; return: number; input: Record<string, string>; output: string | null; pending?: true }[] = [];
    let done = 0;
    const faults: Promise<unknown>[] = [];
    const onDone = (): void => {
      done++;
      if (done === 60) proxies.forEach((p) => p.partition());
      if (done === 120) proxies.forEach((p) => p.heal());
      if (done === 180) faults.push(kill(b.node));
    };
    const KEYS = ['a', 'b', 'c', 'd'];
    await Promise.all(
      Array.from({ length: 4 }, async (_, c) => {
        // Clients start on different nodes, so both serve and both fail over.
        const endpoints = c % 2 === 0 ? [a.endpoint, b.endpoint] : [b.endpoint, a.endpoint];
        const client = await RemoraClient.connect({ endpoints, secret, giveUpMs: 60_000, replyTimeoutMs: 3000 });
        let r = (seed ^ (c * 0x9e3779b9)) >>> 0;
        const next = () => (r = (Math.imul(r, 1664525) + 1013904223) >>> 0) / 2 ** 32;
        for (let i = 0; i < 60; i++) {
          const key = KEYS[Math.floor(next() * KEYS.length)] ?? 'a';
          const nonce = `${c}.${i}`;
          const value = c * 1000 + i;
          const put = next() < 0.5;
          const tx = put ? makeTx(kvApp, 'put', { key, value, nonce }) : makeTx(kvApp, 'get', { key, nonce });
          const input: Record<string, string> = put ? { op: 'put', key, value: JSON.stringify(value) } : { op: 'get', key };
          const call = micros();
          const reply = await client.submit(tx);
          const ret = micros();
          if (reply.outcome === null) history.push({ client: c, call, return: ret, input, output: null, pending: true });
          else if (reply.outcome.status !== 'ok') throw new Error(`op ${JSON.stringify(input)} aborted: ${reply.outcome.reason}`);
          else history.push({ client: c, call, return: ret, input, output: JSON.stringify(reply.outcome.result) });
          onDone();
        }
        client.close();
      }),
    );
    await Promise.all(faults);
    expect(history.length).toBe(240);
    const path = join(tmp.dir, 'kv-history.json');
    writeFileSync(path, JSON.stringify({ operations: history }));
    const check = spawnSync(CHECKER, [path], { encoding: 'utf8', timeout: 120_000 });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const ra = await finish(a.node);
    const entries = await readStream(engine.urls, token, 'KV');
    expect(new Set(entries.map((e) => e.tx.digest)).size).toBe(entries.length);
    expect(entries.length).toBe(240);
    expect(ra.lastApplied).toBe(String(entries.length));
    expect(ra.digest).toBe(executeSequentially(loadApp('kv'), entries, nativeFunctions).state.digest());
    expect(ra.agreement.disagreed).toBe(0);
  }, 180_000);

  it('heron: orders on the stream; a multi-partition history is linearizable and the replicas agree', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`replicated heron test: seed ${seed}`);
    const heron = await HeronCluster.start({
      dir: join(tmp.dir, 'heron'),
      app: 'kv',
      partitions: 2,
      replicas: 3,
      sequencer: { kind: 'jetstream', servers: engine.urls, stream: 'HERON', tokenFile },
    });
    const t0 = process.hrtime.bigint();
    const micros = () => Number((process.hrtime.bigint() - t0) / 1000n);
    const history: { client: number; call: number; return: number; input: Record<string, string>; output: string }[] = [];
    let multi = 0;
    try {
      await Promise.all(
        Array.from({ length: 3 }, async (_, c) => {
          let r = (seed ^ (c * 0x85ebca6b)) >>> 0;
          const next = () => (r = (Math.imul(r, 1664525) + 1013904223) >>> 0) / 2 ** 32;
          const key = () => ['a', 'b', 'c', 'd', 'e', 'f'][Math.floor(next() * 6)] ?? 'a';
          for (let i = 0; i < 20; i++) {
            const nonce = `${c}.${i}`;
            const value = c * 1000 + i;
            const pick = next();
            const [k, from, to] = [key(), key(), key()];
            const [tx, input]: [Transaction, Record<string, string>] =
              pick < 0.35
                ? [makeTx(kvApp, 'get', { key: k, nonce }), { op: 'get', key: k }]
                : pick < 0.7
                  ? [makeTx(kvApp, 'put', { key: k, value, nonce }), { op: 'put', key: k, value: JSON.stringify(value) }]
                  : [makeTx(kvApp, 'copy', { from, to, nonce }), { op: 'copy', from, to }];
            const call = micros();
            const reply = await heron.submit(tx);
            const ret = micros();
            if (reply.outcome.status !== 'ok') throw new Error(`op ${JSON.stringify(input)} aborted: ${reply.outcome.reason}`);
            if (reply.dest.length > 1) multi++;
            history.push({ client: c, call, return: ret, input, output: JSON.stringify(reply.outcome.result) });
          }
        }),
      );
    } finally {
      const summaries = await heron.close();
      expect(heron.divergences).toEqual([]);
      for (const h of [0, 1]) expect(new Set(summaries.filter((x) => x.partition === h).map((x) => x.digest)).size).toBe(1);
    }
    console.log(`replicated heron test: ${multi} multi-partition of ${history.length}`);
    const path = join(tmp.dir, 'heron-history.json');
    writeFileSync(path, JSON.stringify({ operations: history }));
    const check = spawnSync(CHECKER, [path], { encoding: 'utf8', timeout: 120_000 });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    // The order is the stream's: every operation in it once.
    const entries = await readStream(engine.urls, token, 'HERON');
    expect(entries.length).toBe(60);
    expect(new Set(entries.map((e) => e.tx.digest)).size).toBe(60);
  }, 180_000);
});
