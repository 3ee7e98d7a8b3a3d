// Prometheus metrics: an in-process node fed to NodeMetrics, a pre-executor fed to
// PreExecutorMetrics, both scraped over HTTP; and the cluster's metrics endpoint.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { nativeFunctions } from '../ts/app/natives.js';
import type { DecodedTx, Transaction } from '../ts/app/tx.js';
import { kvApp } from '../ts/apps/index.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { createRegistry, NodeMetrics, PreExecutorMetrics, serveMetrics, type MetricsServer } from '../ts/metrics.js';
import { EmbeddedNode, type PreExecutorLink, type Reply } from '../ts/pipeline/node.js';
import { PreExecutor, type Feedback } from '../ts/pipeline/preexecutor.js';
import type { PushedObject } from '../ts/pipeline/state-update.js';
import { EmbeddedSequencer } from '../ts/pipeline/sequencer.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { Store } from '../ts/store.js';
import { tempCluster } from './helpers.js';
import { decodeEffects } from '../ts/pipeline/records.js';

/** A real pre-executor answering promptly through the event loop, timed for its metrics. */
class PromptLink implements PreExecutorLink {
  readonly pre = new PreExecutor(kvApp, nativeFunctions);

  constructor(
    readonly name: string,
    private readonly node: EmbeddedNode,
    private readonly onBatch: (txs: number, ms: number) => void,
  ) {}

  send(txs: readonly DecodedTx[]): void {
    const t0 = performance.now();
    const results = this.pre.run(txs);
    this.onBatch(txs.length, performance.now() - t0);
    setImmediate(() => {
      for (const [digest, table] of results) this.node.result(this.name, digest, table);
      this.returned += results.length;
      if (this.returned >= this.until.n) this.until.resolve();
    });
  }

  /** Results handed back to the node so far, and a wait for a count of them. */
  returned = 0;
  private until: { n: number; resolve: () => void } = { n: Infinity, resolve: () => undefined };
  returnedAtLeast(n: number): Promise<void> {
    return this.returned >= n ? Promise.resolve() : new Promise((resolve) => (this.until = { n, resolve }));
  }

  sendEffects(bytes: Buffer): void {
    const effects = decodeEffects(bytes);
    this.pre.install(effects);
  }

  sendObjects(objects: readonly PushedObject[]): void {
    this.pre.installObjects(objects);
  }

  sendFeedback(feedback: Feedback): void {
    this.pre.feedback = feedback;
  }
}

/** Samples of a text exposition, keyed `name` or `name{labels}` as printed. */
function parseExposition(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) samples.set(m[1], Number(m[2]));
  }
  return samples;
}

async function scrape(port: number): Promise<{ type: string | null; samples: Map<string, number> }> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(res.status).toBe(200);
  return { type: res.headers.get('content-type'), samples: parseExposition(await res.text()) };
}

function sample(samples: Map<string, number>, key: string): number {
  const v = samples.get(key);
  if (v === undefined) throw new Error(`no sample ${key} in the exposition`);
  return v;
}

describe('metrics', () => {
  let dir: ReturnType<typeof tempCluster>;
  const servers: MetricsServer[] = [];
  beforeEach(() => {
    dir = tempCluster();
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
    dir.cleanup();
  });

  it('counts what an in-process node applied and serves it over HTTP', async () => {
    const nodeRegistry = createRegistry();
    const preRegistry = createRegistry();
    const nodeMetrics = new NodeMetrics(nodeRegistry);
    const preMetrics = new PreExecutorMetrics(preRegistry);
    const sequencer = new EmbeddedSequencer(`${dir.dir}/log`);
    const store = new NativePrimaryStore(Store.create({ dir: dir.dir, name: 'primary', secret: dir.secret }));
    const node = new EmbeddedNode(kvApp, nativeFunctions, sequencer, store, { deadlineMs: 1000, localWhenAlone: false, ...nodeMetrics.hooks });
    nodeMetrics.attach(node, () => sequencer.lastTs);
    const link = new PromptLink('p1', node, preMetrics.onBatch);
    node.addPreExecutor(link);
    preMetrics.attach(link.pre);
    node.start();
    const nodeServer = await serveMetrics(nodeRegistry, { port: 0 });
    const preServer = await serveMetrics(preRegistry, { port: 0 });
    servers.push(nodeServer, preServer);

    // 150 puts and 50 reads (follow, copying into a key of their own) over 40 keys, so some
    // results go stale; all distinct. And 20 puts whose key is too long: those abort.
    const ok: Transaction[] = Array.from({ length: 200 }, (_, i) =>
      i % 4 === 3 ? makeTx(kvApp, 'follow', { key: `k/${i % 40}`, into: `r/${i}` }) : makeTx(kvApp, 'put', { key: `k/${i % 40}`, value: i }),
    );
    const bad: Transaction[] = Array.from({ length: 20 }, (_, i) => makeTx(kvApp, 'put', { key: `${'x'.repeat(90)}${i}`, value: null }));
    const replies: Reply[] = await Promise.all([...ok, ...bad].map((tx) => node.submit(tx)));
    // A duplicate, answered from memory: submitted and timed, not applied again. It was still
    // handed to the pre-executor (admission does so before sequencing): wait for that result.
    const again = await node.submit(ok[0]);
    expect(again.duplicate).toBe(true);
    const applied = 220;
    const submits = 221;
    await link.returnedAtLeast(submits);
    expect(replies.filter((r) => r.outcome?.status === 'aborted')).toHaveLength(20);

    const { type, samples } = await scrape(nodeServer.port);
    expect(type).toMatch(/^text\/plain; version=0\.0\.4/);
    const stats = node.stats;
    const byDecision = {
      adopted: sample(samples, 'remora_transactions_applied_total{decision="adopted"}'),
      reexecuted: sample(samples, 'remora_transactions_applied_total{decision="reexecuted"}'),
      executed: sample(samples, 'remora_transactions_applied_total{decision="executed"}'),
    };
    expect(byDecision.adopted + byDecision.reexecuted + byDecision.executed).toBe(applied);
    expect(byDecision).toEqual({ adopted: stats.adopted, reexecuted: stats.reexecuted, executed: stats.executed });
    expect(byDecision.adopted).toBeGreaterThan(0);
    expect(sample(samples, 'remora_transactions_aborted_total')).toBe(20);
    expect(sample(samples, 'remora_submit_latency_seconds_count')).toBe(submits);
    expect(sample(samples, 'remora_submit_latency_seconds_bucket{le="+Inf"}')).toBe(submits);
    expect(sample(samples, 'remora_submit_latency_seconds_sum')).toBeGreaterThan(0);
    // Every submit was sequenced (the duplicate too: the sequencer is what recognised it).
    expect(sample(samples, 'remora_sequence_latency_seconds_count')).toBe(submits);
    const batches = sample(samples, 'remora_merge_batch_seconds_count');
    expect(sample(samples, 'remora_merge_wait_seconds_count')).toBe(batches);
    expect(batches).toBeGreaterThanOrEqual(1);
    expect(batches).toBeLessThanOrEqual(applied);
    expect(sample(samples, 'remora_adoption_ratio')).toBeCloseTo(stats.adopted / applied, 10);
    expect(sample(samples, 'remora_preexecutor_pool_size')).toBe(1);
    expect(sample(samples, 'remora_preexecutor_outstanding{preexecutor="p1"}')).toBe(0);
    // The duplicate's result counts only if it came back before the sequencer recognised the
    // duplicate; after that nobody owes it, and the node drops it (a result is taken only while owed).
    expect(sample(samples, 'remora_preexecutor_executed_total{preexecutor="p1"}') + node.unowedResults).toBe(submits);
    expect(sample(samples, 'remora_preexecutor_misses_total{preexecutor="p1"}')).toBe(stats.reexecuted);
    expect(sample(samples, 'remora_hot_objects')).toBe(node.feedback.hot().size);
    expect(sample(samples, 'remora_optimistic_replies_total{verdict="sent"}')).toBe(0);
    expect(sample(samples, 'remora_native_signature_verifies_total')).toBe(stats.nativeVerifies);
    // Every transaction was handed out (localWhenAlone off): none was executed ahead of the log.
    expect(sample(samples, 'remora_primary_executed_ahead_total')).toBe(0);
    expect(sample(samples, 'remora_primary_executions_ahead_kept_total')).toBe(0);
    expect(sample(samples, 'remora_signatures_from_tables_total')).toBe(stats.authFromTables);
    expect(sample(samples, 'remora_sequencer_last_ts')).toBe(applied);
    expect(samples.has('process_cpu_user_seconds_total')).toBe(true);

    // Counters mirrored at scrape time do not count twice.
    const second = await scrape(nodeServer.port);
    expect(sample(second.samples, 'remora_preexecutor_executed_total{preexecutor="p1"}')).toBe(submits - node.unowedResults);

    const pre = (await scrape(preServer.port)).samples;
    expect(sample(pre, 'remora_preexec_transactions_total')).toBe(submits);
    expect(sample(pre, 'remora_preexec_batch_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(sample(pre, 'remora_preexec_applied_ts')).toBe(Number(link.pre.appliedTs));
    expect(link.pre.appliedTs).toBeGreaterThan(0n);
    // Separate registries: the pre-executor's holds none of the node's metrics.
    expect(pre.has('remora_transactions_aborted_total')).toBe(false);

    await sequencer.close();
    store.store.close();
  });

  it('answers 404 off /metrics, and close() frees the port', async () => {
    const registry = createRegistry();
    const server = await serveMetrics(registry, { port: 0 });
    const port = server.port;
    expect(port).toBeGreaterThan(0);
    for (const path of ['/', '/metricsx', '/other']) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      expect(res.status).toBe(404);
      await res.text();
    }
    expect((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status).toBe(404);
    // A kept-alive connection must not hold close() up.
    await scrape(port);
    await server.close();
    await expect(fetch(`http://127.0.0.1:${port}/metrics`)).rejects.toThrow();
    const again = await serveMetrics(registry, { port });
    expect(again.port).toBe(port);
    await again.close();
  });

  it('serves the cluster node metrics on metricsPort and stops with the cluster', async () => {
    const none = await EmbeddedCluster.start({ dir: `${dir.dir}/plain`, app: 'kv', preExecutors: 0, deadlineMs: 0 });
    expect(none.metricsPort).toBeNull();
    await none.close();

    const cluster = await EmbeddedCluster.start({ dir: dir.dir, app: 'kv', preExecutors: 0, deadlineMs: 0, metricsPort: 0 });
    const port = cluster.metricsPort;
    if (port === null) throw new Error('no metrics port');
    try {
      await Promise.all(Array.from({ length: 10 }, (_, i) => cluster.node.submit(makeTx(kvApp, 'put', { key: `c/${i}`, value: i }))));
      const { samples } = await scrape(port);
      expect(sample(samples, 'remora_transactions_applied_total{decision="executed"}')).toBe(10);
      expect(sample(samples, 'remora_transactions_applied_total{decision="adopted"}')).toBe(0);
      expect(sample(samples, 'remora_submit_latency_seconds_count')).toBe(10);
      expect(sample(samples, 'remora_preexecutor_pool_size')).toBe(0);
      expect(sample(samples, 'remora_sequencer_last_ts')).toBe(10);
    } finally {
      await cluster.close();
    }
    await expect(fetch(`http://127.0.0.1:${port}/metrics`)).rejects.toThrow();
  });
});
