// The embedded cluster on one host: this process runs admission, the sequencer and the
// primary; each pre-executor is a child process attached over the node's socket.
import { join } from 'node:path';
import type { App } from './app/app.js';
import { nativeFunctions } from './app/natives.js';
import { loadApp } from './apps/index.js';
import { createRegistry, NodeMetrics, serveMetrics, type MetricsServer } from './metrics.js';
import { EmbeddedNode, type NodeOptions } from './pipeline/node.js';
import type { Policy } from './pipeline/scheduler.js';
import { EmbeddedSequencer } from './pipeline/sequencer.js';
import { serveNode } from './pipeline/server.js';
import { NativePrimaryStore } from './pipeline/store-adapter.js';
import { RoleProcess } from './process.js';
import { loadOrCreateSecret } from './secret.js';
import { Store } from './store.js';
import type { Server } from './wire.js';

export interface ClusterOptions {
  /** Cluster directory: the log, the primary's regions, the socket and the secret live here. */
  dir: string;
  /** A built-in application name (`bank`, `kv`). */
  app: string;
  preExecutors: number;
  /** Deadline for a pre-execution result, from delivery (default 50 ms). */
  deadlineMs?: number;
  /** How admission picks a pre-executor (default `load`). */
  policy?: Policy;
  onApplied?: NodeOptions['onApplied'];
  /** Serve Prometheus metrics of the node on this port of 127.0.0.1 (0: any free one); none if undefined. */
  metricsPort?: number;
  log?: (m: string) => void;
}

export const NODE_SOCKET = 'node.sock';

export class EmbeddedCluster {
  private closed = false;

  private constructor(
    readonly app: App,
    readonly node: EmbeddedNode,
    readonly store: NativePrimaryStore,
    private readonly sequencer: EmbeddedSequencer,
    private readonly server: Server,
    readonly children: RoleProcess[],
    private readonly metrics: MetricsServer | null,
  ) {}

  /** The port serving `GET /metrics`, or null when `metricsPort` was not given. */
  get metricsPort(): number | null {
    return this.metrics?.port ?? null;
  }

  /**
   * Starts the node (replaying the whole log into a fresh primary store, so a restart after a
   * crash applies every sequenced transaction exactly once) and the pre-executor processes.
   */
  static async start(opts: ClusterOptions): Promise<EmbeddedCluster> {
    const app = loadApp(opts.app);
    const secret = loadOrCreateSecret(opts.dir);
    const sequencer = new EmbeddedSequencer(join(opts.dir, 'log'));
    const store = new NativePrimaryStore(Store.create({ dir: opts.dir, name: 'primary', secret }));
    const registry = opts.metricsPort === undefined ? null : createRegistry();
    const metrics = registry && new NodeMetrics(registry);
    const [hooks, onApplied] = [metrics?.hooks, opts.onApplied];
    const node = new EmbeddedNode(app, nativeFunctions, sequencer, store, {
      deadlineMs: opts.deadlineMs ?? 50,
      policy: opts.policy ?? 'load',
      ...hooks,
      ...(onApplied && {
        onApplied: hooks
          ? (batch) => {
              hooks.onApplied(batch);
              onApplied(batch);
            }
          : onApplied,
      }),
    });
    metrics?.attach(node, () => sequencer.lastTs);
    const joined = new Set<string>();
    let onJoin: (() => void) | null = null;
    const server = await serveNode(node, {
      path: join(opts.dir, NODE_SOCKET),
      secret,
      ...(opts.log ? { log: opts.log } : {}),
      onPool: (event, name) => {
        if (event === 'join') joined.add(name);
        onJoin?.();
      },
    });
    node.start(0n);
    const children: RoleProcess[] = [];
    let metricsServer: MetricsServer | null = null;
    try {
      if (registry && opts.metricsPort !== undefined) metricsServer = await serveMetrics(registry, { port: opts.metricsPort });
      for (let i = 1; i <= opts.preExecutors; i++) {
        children.push(await RoleProcess.start('pre-executor', ['--dir', opts.dir, '--app', opts.app, '--name', `pre-${i}`]));
      }
      // A child is ready once connected; its link is attached once the node saw the handshake.
      await new Promise<void>((resolve) => {
        onJoin = () => joined.size >= opts.preExecutors && resolve();
        onJoin();
      });
    } catch (e) {
      await metricsServer?.close();
      await Promise.all(children.map((c) => c.stop(1000)));
      await server.close();
      await sequencer.close();
      store.store.close();
      throw e;
    }
    return new EmbeddedCluster(app, node, store, sequencer, server, children, metricsServer);
  }

  /** Stops the pre-executors, then the node; the log stays on disk for the next start. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.metrics?.close();
    await Promise.all(this.children.map((c) => c.stop(2000)));
    await this.server.close();
    await this.sequencer.close();
    this.store.store.close();
  }
}
