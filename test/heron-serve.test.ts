// Heron's launcher serves clients as a pipeline node does: RemoraClient on the launcher's
// socket and over TCP (`listen`, `remora start heron --listen`), the pipeline's replies, the
// client credential opening the client role only, and a malformed frame costing its sender
// the connection and nobody else anything.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { encodeBody } from '../ts/app/tx.js';
import { kvApp, kvId } from '../ts/apps/kv.js';
import { RemoraClient } from '../ts/client.js';
import { HeronCluster } from '../ts/heron/cluster.js';
import { HERON_SOCKET, REPLICA_ROLE } from '../ts/heron/messages.js';
import { partitionerOf } from '../ts/app/partition.js';
import { OPTIMISTIC_FROM } from '../ts/heron/serve.js';
import { CLIENT_ROLE } from '../ts/pipeline/server.js';
import { RoleProcess } from '../ts/process.js';
import { loadClientSecret } from '../ts/secret.js';
import { parseHostPort } from '../ts/transport.js';
import { connect } from '../ts/wire.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-serve-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Two keys of different partitions (of 2), so a copy between them is multi-partition. */
function keysApart(): [string, string] {
  const part = partitionerOf(kvApp, 2);
  const keys = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
  const k0 = keys.find((k) => part(kvId(k)) === 0);
  const k1 = keys.find((k) => part(kvId(k)) === 1);
  if (k0 === undefined || k1 === undefined) throw new Error('no keys in both partitions');
  return [k0, k1];
}

const hostPort = (address: string | null | undefined): { host: string; port: number } => {
  const hp = parseHostPort(address ?? '');
  if (hp === null) throw new Error(`not HOST:PORT: ${String(address)}`);
  return hp;
};

const ok = (result: unknown) => ({ status: 'ok', result });

describe('clients of an in-process Heron cluster', () => {
  it('submit over the socket and TCP, get final and optimistic replies, duplicates and refusals', async () => {
    const dir = join(work, 'in-process');
    const logged: string[] = [];
    const cluster = await HeronCluster.start({
      dir,
      app: 'kv',
      partitions: 2,
      replicas: 1,
      preExecution: true,
      listen: { host: '127.0.0.1', port: 0 },
      log: (m) => logged.push(m),
    });
    const clients: RemoraClient[] = [];
    try {
      const secret = loadClientSecret(dir);
      const local = await RemoraClient.connect({ path: join(dir, HERON_SOCKET), secret });
      clients.push(local);
      const [from, to] = keysApart();
      const put = makeTx(kvApp, 'put', { key: from, value: 5, nonce: 's.1' });
      expect(await local.submit(put)).toMatchObject({ ts: 1n, duplicate: false, outcome: ok(null) });
      // Multi-partition: both partitions order it and coordinate; the copy's value comes back.
      expect(await local.submit(makeTx(kvApp, 'copy', { from, to, nonce: 's.2' }))).toMatchObject({ ts: 2n, duplicate: false, outcome: ok(5) });
      // The same transaction again: the first's reply, flagged, not ordered again.
      expect(await local.submit(put)).toMatchObject({ ts: 1n, duplicate: true, outcome: ok(null) });
      // Refused at admission, with the reason; nothing ordered.
      await expect(local.submit({ body: encodeBody('drop', { key: to }, [kvId(to)]), auth: [] })).rejects.toThrow('unknown command "drop" for app kv');

      // Over TCP, from the listener `listen` opened. With pre-execution the launcher's outcome
      // comes first, and the final reply says it held (the pre-executor's copy is current once
      // every replica answered).
      expect(await cluster.settle()).toBe(true);
      const remote = await RemoraClient.connect({ ...hostPort(cluster.tcpAddress), secret });
      clients.push(remote);
      const s = remote.submitOptimistic(makeTx(kvApp, 'get', { key: to, nonce: 's.3' }));
      expect(await s.optimistic).toEqual({ outcome: ok(5), from: OPTIMISTIC_FROM });
      expect(await s.final).toEqual({ ts: 3n, duplicate: false, outcome: ok(5), decision: 'adopted', optimistic: 'confirmed' });
      expect(cluster.clients.stats.requests).toBe(5);
    } finally {
      for (const c of clients) c.close();
      await cluster.close();
    }
    expect([cluster.outcomeMismatches, cluster.decisionMismatches, cluster.divergences]).toEqual([[], [], []]);
  }, 60_000);

  it('refuse the replica role to the client credential, and cut off only a client that sends a malformed frame', async () => {
    const dir = join(work, 'hostile');
    const logged: string[] = [];
    const cluster = await HeronCluster.start({
      dir,
      app: 'kv',
      partitions: 1,
      replicas: 1,
      listen: { host: '127.0.0.1', port: 0 },
      log: (m) => logged.push(m),
    });
    let client: RemoraClient | null = null;
    try {
      const secret = loadClientSecret(dir);
      const path = join(dir, HERON_SOCKET);
      client = await RemoraClient.connect({ path, secret });
      expect(await client.submit(makeTx(kvApp, 'put', { key: 'k', value: 1, nonce: 'h.1' }))).toMatchObject({ ts: 1n, outcome: ok(null) });
      // The client credential opens no member role, on either listener.
      const tcp = hostPort(cluster.tcpAddress);
      for (const where of [{ path }, tcp]) {
        for (const role of [`${REPLICA_ROLE}:0.0`, 'admin']) {
          await expect(connect({ ...where, secret, role, log: () => undefined })).rejects.toThrow();
        }
      }
      // Nor does the member credential open a replica role over TCP: replicas are local.
      await expect(connect({ ...tcp, secret: Buffer.alloc(32, 7), role: `${REPLICA_ROLE}:0.0`, log: () => undefined })).rejects.toThrow();

      // Malformed client frames: each sender is cut off with the reason logged.
      const cases: [frame: unknown, reason: string][] = [
        [{ t: 'submit', id: 'one', tx: new Uint8Array(1) }, 'submit id must be a safe integer'],
        [{ t: 'hello', partition: 0, replica: 0, digest: 'ab'.repeat(32) }, 'expected a submit message, got a message of type "hello"'],
        [7, 'expected a submit message, got number'],
      ];
      for (const [frame, reason] of cases) {
        const at = logged.length;
        const conn = await connect({ path, secret, role: CLIENT_ROLE, log: () => undefined });
        const closed = new Promise<void>((resolve) => conn.onClose(() => resolve()));
        conn.onMessage(() => undefined);
        conn.send(frame);
        await closed;
        expect(logged.slice(at).map((l) => l.replace(/ at .*?: /, ' at PEER: '))).toEqual([`client at PEER: ${reason}; closing the connection`]);
      }
      // A malformed transaction in a well-formed frame is refused to its sender, who stays connected.
      const raw = await connect({ path, secret, role: CLIENT_ROLE, log: () => undefined });
      const answer = new Promise<unknown>((resolve) => raw.onMessage(resolve));
      raw.send({ t: 'submit', id: 9, tx: { body: 'not bytes', auth: [] } });
      expect(await answer).toEqual({ t: 'rejected', id: 9, error: 'transaction body must be bytes' });
      raw.close();

      // Everyone else is still served, in order.
      expect(await client.submit(makeTx(kvApp, 'get', { key: 'k', nonce: 'h.2' }))).toEqual({ ts: 2n, duplicate: false, outcome: ok(1), decision: 'executed' });
    } finally {
      client?.close();
      await cluster.close();
    }
  }, 60_000);
});

describe('clients of `remora start heron --listen`', () => {
  it('connect over TCP with the client credential and get the right outcomes', async () => {
    const dir = join(work, 'process');
    const file = join(work, 'process.json');
    writeFileSync(file, JSON.stringify({ app: 'kv', partitions: 2, replicas: 1 }));
    const proc = await RoleProcess.start('start', ['heron', '--config', file, '--dir', dir, '--listen', '127.0.0.1:0'], { readyTimeoutMs: 60_000 });
    let client: RemoraClient | null = null;
    try {
      const info = proc.readyInfo as { address?: string };
      client = await RemoraClient.connect({ ...hostPort(info.address), secret: loadClientSecret(dir) });
      const [from, to] = keysApart();
      expect(await client.submit(makeTx(kvApp, 'put', { key: from, value: 'x', nonce: 'p.1' }))).toEqual({
        ts: 1n,
        duplicate: false,
        outcome: ok(null),
        decision: 'executed',
      });
      expect(await client.submit(makeTx(kvApp, 'copy', { from, to, nonce: 'p.2' }))).toEqual({
        ts: 2n,
        duplicate: false,
        outcome: ok('x'),
        decision: 'executed',
      });
      expect(await client.submit(makeTx(kvApp, 'get', { key: to, nonce: 'p.3' }))).toEqual({
        ts: 3n,
        duplicate: false,
        outcome: ok('x'),
        decision: 'executed',
      });
    } finally {
      client?.close();
      const stopped = await proc.stop(10_000);
      expect(stopped.code).toBe(0);
    }
    expect(proc.stderr).toContain(`heron: clients may connect at ${join(dir, HERON_SOCKET)} and 127.0.0.1:`);
  }, 60_000);
});
