// `remora start admission`: an admission process in front of a running node (docs/pipeline.md,
// "Admission processes"). Clients connect to it as they would to the node.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadAppModule } from '../app/module.js';
import { admissionSocket, NODE_SOCKET } from '../cluster.js';
import { runAdmission } from '../pipeline/admission.js';
import { serveRole } from '../process.js';
import { loadOrCreateSecret, readSecretFile } from '../secret.js';
import { parseHostPort } from '../transport.js';
import { admissionMetrics, createRegistry, serveMetrics, type MetricsServer } from '../metrics.js';
import { appOption, listenOption, metricsPortOption, required, UsageError } from './options.js';

/**
 * `--join DIR` on the node's host (its socket and secret are in the directory; clients then
 * connect to `DIR/admission-NAME.sock`), or `--join HOST:PORT --secret-file FILE --socket PATH`
 * from anywhere. `--listen HOST:PORT` also serves clients over TCP; `--metrics-port N` serves its
 * Prometheus metrics (docs/metrics.md).
 */
export function admissionRole(argv: string[]): Promise<never> {
  const { values } = parseArgs({
    args: argv,
    options: {
      join: { type: 'string' },
      app: { type: 'string' },
      name: { type: 'string' },
      'secret-file': { type: 'string' },
      socket: { type: 'string' },
      listen: { type: 'string' },
      'metrics-port': { type: 'string' },
    },
  });
  const join_ = required(values.join, 'join');
  const name = required(values.name, 'name');
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new UsageError(`--name must be 1 to 64 letters, digits, '-' or '_', got '${name}'`);
  const spec = appOption(values.app);
  const remote = parseHostPort(join_);
  const secretFile = values['secret-file'];
  const secret = secretFile !== undefined ? readSecretFile(secretFile) : remote === null ? loadOrCreateSecret(join_) : null;
  if (!secret) throw new UsageError("--join HOST:PORT needs --secret-file FILE (a copy of the cluster directory's cluster.secret)");
  const socket = values.socket ?? (remote === null ? join(join_, admissionSocket(name)) : null);
  if (socket === null) throw new UsageError('--join HOST:PORT needs --socket PATH: where this process serves clients on its host');
  const tcp = values.listen === undefined ? undefined : parseHostPort(listenOption(values.listen));
  const metricsPort = metricsPortOption(values['metrics-port']);
  return serveRole(async () => {
    const app = await loadAppModule(spec);
    const a = await runAdmission({
      node: remote ?? { path: join(join_, NODE_SOCKET) },
      secret,
      name,
      app,
      path: socket,
      ...(tcp && { tcp }),
      log: (m) => process.stderr.write(`admission ${name}: ${m}\n`),
    });
    process.stderr.write(`admission ${name}: clients may connect at ${a.address}${a.tcpAddress ? ` and ${a.tcpAddress}` : ''}\n`);
    let metrics: MetricsServer | null = null;
    if (metricsPort !== undefined) {
      const registry = createRegistry();
      admissionMetrics(registry, { serving: a.stats, front: a.front });
      metrics = await serveMetrics(registry, { port: metricsPort });
      process.stderr.write(`admission ${name}: metrics at http://127.0.0.1:${metrics.port}/metrics\n`);
    }
    return {
      info: { address: a.address, tcpAddress: a.tcpAddress },
      failed: a.ended.then((e) => {
        throw new Error(`the node's connection ended: ${e.message}`);
      }),
      stop: async () => {
        await metrics?.close();
        await a.close();
        return { requests: a.stats.requests, paused: a.stats.paused, cutOff: a.stats.cutOff };
      },
    };
  });
}
