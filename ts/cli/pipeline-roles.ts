// The pipeline's child-process roles: a pre-executor, and a whole node (for kill-and-restart tests).
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { nativeFunctions } from '../app/natives.js';
import { loadApp } from '../apps/index.js';
import { EmbeddedCluster, NODE_SOCKET } from '../cluster.js';
import { createRegistry, PreExecutorMetrics, serveMetrics } from '../metrics.js';
import { runPreExecutor } from '../pipeline/preexecutor-main.js';
import { serveRole } from '../process.js';
import { loadOrCreateSecret } from '../secret.js';
import { intOption, metricsPortOption, required } from './options.js';

/** A pre-executor of an embedded cluster (see cluster.ts). */
export function preExecutorRole(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: { dir: { type: 'string' }, app: { type: 'string' }, name: { type: 'string' }, 'metrics-port': { type: 'string' } },
  });
  const dir = required(values.dir, 'dir');
  const metricsPort = metricsPortOption(values['metrics-port']);
  return serveRole(async () => {
    const registry = metricsPort === undefined ? null : createRegistry();
    const metrics = registry && new PreExecutorMetrics(registry);
    const server = registry && (await serveMetrics(registry, { port: metricsPort ?? 0 }));
    if (server) process.stderr.write(`pre-executor: metrics at http://127.0.0.1:${server.port}/metrics\n`);
    const p = await runPreExecutor({
      path: join(dir, NODE_SOCKET),
      secret: loadOrCreateSecret(dir),
      name: required(values.name, 'name'),
      app: loadApp(required(values.app, 'app')),
      natives: nativeFunctions,
      ...(metrics && { onBatch: metrics.onBatch }),
    });
    metrics?.attach(p.pre);
    return {
      failed: p.closed.then(() => Promise.reject(new Error('the node closed the connection'))),
      stop: async () => {
        p.close();
        await server?.close();
        return { executed: p.pre.executed };
      },
    };
  });
}

/** An embedded node with its pre-executors, as a process a test can kill and restart. */
export function nodeRole(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      app: { type: 'string' },
      'pre-executors': { type: 'string' },
      'deadline-ms': { type: 'string' },
      'metrics-port': { type: 'string' },
    },
  });
  const metricsPort = metricsPortOption(values['metrics-port']);
  return serveRole(async () => {
    const cluster = await EmbeddedCluster.start({
      dir: required(values.dir, 'dir'),
      app: required(values.app, 'app'),
      preExecutors: intOption(values['pre-executors'], 'pre-executors', 2, 0, 64),
      deadlineMs: intOption(values['deadline-ms'], 'deadline-ms', 50, 0, 60_000),
      ...(metricsPort !== undefined && { metricsPort }),
    });
    if (cluster.metricsPort !== null) process.stderr.write(`node: metrics at http://127.0.0.1:${cluster.metricsPort}/metrics\n`);
    return {
      stop: async () => {
        const result = { digest: cluster.store.digest(), lastApplied: String(cluster.node.lastApplied), stats: cluster.node.stats };
        await cluster.close();
        return result;
      },
    };
  });
}
