// Operating a node: `remora status` over the admin role, and readiness at GET /ready beside
// the metrics. Both must tell the truth about a running node, and refuse what is not theirs.
import { describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { kvApp } from '../ts/apps/index.js';
import { RemoraClient } from '../ts/client.js';
import { askNode } from '../ts/cli/admin.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { parseNodeStatus, StatusError } from '../ts/pipeline/status.js';
import { loadClientSecret } from '../ts/secret.js';
import { CLI, clusterPerTest, runNode } from './helpers.js';

describe('node status and readiness', () => {
  const dir = clusterPerTest();

  it('reports applied, ordered, lag, decisions, the pool and admission, in text, JSON and at /ready', async () => {
    const cluster = await EmbeddedCluster.start({ dir: dir.dir, app: 'kv', preExecutors: 1, admissions: 1, deadlineMs: 0, metricsPort: 0 });
    const port = cluster.metricsPort;
    if (port === null) throw new Error('no metrics port');
    try {
      await cluster.replayed();
      await Promise.all(Array.from({ length: 20 }, (_, i) => cluster.node.submit(makeTx(kvApp, 'put', { key: `s/${i}`, value: i }))));
      const [socket] = cluster.admissionSockets;
      if (socket === undefined) throw new Error('one admission process was asked for');
      const client = await RemoraClient.connect({ path: socket, secret: loadClientSecret(dir.dir) });
      await Promise.all(Array.from({ length: 5 }, (_, i) => client.submit(makeTx(kvApp, 'put', { key: `a/${i}`, value: i }))));
      client.close();

      const ready = await fetch(`http://127.0.0.1:${port}/ready`);
      expect(ready.status).toBe(200);
      expect(await ready.text()).toBe('ready\n');

      const answer = await askNode({ dir: dir.dir }, { t: 'status' });
      if (answer.t !== 'status') throw new Error(`answered ${answer.t}`);
      const s = parseNodeStatus(answer.status);
      expect(s.ready).toBe(true);
      expect(s.reason).toBeNull();
      expect(s.app).toBe('kv');
      expect(s.applied).toBe(25n);
      expect(s.ordered).toBe(25n);
      expect(s.lag).toBe(0n);
      expect(s.transactions.applied).toBe(25);
      expect(s.transactions.adopted + s.transactions.reexecuted + s.transactions.executed).toBe(25);
      expect(s.pool.map((m) => m.name)).toEqual(['pre-1']);
      expect(s.admissions).toEqual([{ name: 'adm-1', forwarded: 5, waiting: 0 }]);

      // The command as an operator runs it, in another process.
      const text = await runNode([CLI, 'status', dir.dir]);
      expect(text.stderr).toBe('');
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(
        /^node: ready, up [\d.]+ s, app kv [0-9a-f]{12}\nlog: applied 25 of 25 ordered \(lag 0\)\ntransactions: 25 applied since start: /,
      );
      expect(text.stdout).toContain('pool: 1 pre-executor\n  pre-1: ');
      expect(text.stdout).toContain('admission: 1 process\n  adm-1: 5 forwarded, 0 waiting for the node\n');
      const json = await runNode([CLI, 'status', '--dir', dir.dir, '--json']);
      expect(json.code).toBe(0);
      expect(JSON.parse(json.stdout)).toMatchObject({ ready: true, applied: '25', ordered: '25', lag: '0', transactions: { applied: 25 } });
    } finally {
      await cluster.close();
    }
    // Stopped: nothing answers at all.
    await expect(fetch(`http://127.0.0.1:${port}/ready`)).rejects.toThrow();
    const gone = await runNode([CLI, 'status', dir.dir]);
    expect(gone.code).not.toBe(0);
  });

  it('says not ready, with the reason, while stopping', async () => {
    const cluster = await EmbeddedCluster.start({ dir: dir.dir, app: 'kv', preExecutors: 0, deadlineMs: 0 });
    await cluster.replayed();
    expect(cluster.readiness()).toEqual({ ready: true, reason: null });
    const closing = cluster.close();
    expect(cluster.readiness()).toEqual({ ready: false, reason: 'stopping' });
    await closing;
  });

  it('refuses a status that lacks or mistypes a field, naming it', () => {
    const good = {
      app: 'kv',
      digest: 'ab',
      ready: true,
      reason: null,
      applied: 3n,
      ordered: 4n,
      lag: 1n,
      transactions: { applied: 3, adopted: 1, reexecuted: 1, executed: 1 },
      pool: [{ name: 'pre-1', executed: 2, outstanding: 0, retiring: false }],
      uptimeSeconds: 1.5,
    };
    expect(parseNodeStatus(good).lag).toBe(1n);
    // A node from before admission processes says nothing of them: it has none.
    expect(parseNodeStatus(good).admissions).toEqual([]);
    expect(parseNodeStatus({ ...good, admissions: [{ name: 'adm-1', forwarded: 3, waiting: 1 }] }).admissions).toEqual([
      { name: 'adm-1', forwarded: 3, waiting: 1 },
    ]);
    expect(() => parseNodeStatus({ ...good, admissions: [{ name: 'adm-1', forwarded: -1, waiting: 0 }] })).toThrow(
      new StatusError('status: admissions[0].forwarded must be a count, got -1'),
    );
    expect(() => parseNodeStatus({ ...good, applied: -1 })).toThrow(new StatusError('status: applied must be a timestamp, got -1'));
    expect(() => parseNodeStatus({ ...good, transactions: { ...good.transactions, adopted: 1.5 } })).toThrow(
      new StatusError('status: transactions.adopted must be a count, got 1.5'),
    );
    expect(() => parseNodeStatus({ ...good, pool: [{ name: 'x' }] })).toThrow(new StatusError('status: pool[0] is not a member'));
    expect(() => parseNodeStatus([])).toThrow(new StatusError('status: expected an object'));
  });
});
