// The pipeline's child-process roles: a pre-executor, and a whole node (for kill-and-restart tests).
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { admissionRole } from './admission-role.js';
import { heronStartCommand } from './heron-roles.js';
import { installDeterminismGuard } from '../app/guard.js';
import { nativeFunctions } from '../app/natives.js';
import { loadAppModule } from '../app/module.js';
import { EmbeddedCluster, NODE_SOCKET } from '../cluster.js';
import { parseSequencerUrls, type SequencerChoice } from '../pipeline/open-sequencer.js';
import { CHECKPOINTS_DIR, DEFAULT_CHECKPOINT_EVERY, seedFromCheckpoint } from '../pipeline/checkpoints.js';
import { bootstrapFrom, copiedCheckpoint } from './peer-seed.js';
import { createRegistry, PreExecutorMetrics, serveMetrics } from '../metrics.js';
import { runPreExecutor } from '../pipeline/preexecutor-main.js';
import { DELEGATION_DEFAULTS, type DelegationOptions } from '../pipeline/delegation.js';
import type { PreExecutor } from '../pipeline/preexecutor.js';
import { serveRole } from '../process.js';
import { loadOrCreateSecret, readSecretFile } from '../secret.js';
import { asError } from '../errors.js';
import { parseHostPort, type HostPort } from '../transport.js';
import { appOption, intOption, listenOption, metricsPortOption, policyOption, required, stateUpdateOption, transportOption, UsageError } from './options.js';

/**
 * A pre-executor joining a running node: `--join DIR` on the node's host (its socket, secret and,
 * for `shm` pulls, store are in the directory), or `--join HOST:PORT --secret-file FILE` from
 * anywhere. The embedded launcher starts its own the same way (with `--exit-with-stdin`, so they
 * die with it). It leaves on SIGINT/SIGTERM, at the end of stdin under that flag, or when the
 * node lets it go.
 */
export function preExecutorRole(argv: string[]) {
  // Set by `remora check` for the processes it starts: a command that reaches for a clock or
  // randomness fails where it runs, naming itself, instead of making members diverge silently.
  if (process.env['REMORA_DETERMINISM_GUARD'] === '1') installDeterminismGuard();
  const { values } = parseArgs({
    args: argv,
    options: {
      join: { type: 'string' },
      dir: { type: 'string' },
      app: { type: 'string' },
      name: { type: 'string' },
      'secret-file': { type: 'string' },
      'metrics-port': { type: 'string' },
    },
  });
  // `--dir` is the older spelling of `--join DIR`.
  const target = joinOption(required(values.join ?? values.dir, 'join'));
  const name = required(values.name, 'name');
  const spec = appOption(values.app);
  const metricsPort = metricsPortOption(values['metrics-port']);
  const secretFile = values['secret-file'];
  const secret = secretFile !== undefined ? readSecretFile(secretFile) : 'dir' in target ? loadOrCreateSecret(target.dir) : null;
  if (!secret) {
    throw new UsageError("--join HOST:PORT needs --secret-file FILE (a copy of the cluster directory's cluster.secret)");
  }
  return serveRole(async () => {
    const registry = metricsPort === undefined ? null : createRegistry();
    const metrics = registry && new PreExecutorMetrics(registry);
    const server = registry && (await serveMetrics(registry, { port: metricsPort ?? 0 }));
    if (server) process.stderr.write(`pre-executor: metrics at http://127.0.0.1:${server.port}/metrics\n`);
    const app = await loadAppModule(spec);
    // The node's newest checkpoint seeds the copy before the node attaches this member and
    // hands it work: fewer misses than starting from nothing. On the node's host it is read
    // from the node's directory; from elsewhere it is copied over the node's store transport.
    const say = (m: string) => process.stderr.write(`pre-executor ${name}: ${m}\n`);
    const from = 'dir' in target ? join(target.dir, CHECKPOINTS_DIR) : await copiedCheckpoint(target.node, secret, say);
    const seed = (pre: PreExecutor): void => {
      if (from === null) return;
      const seeded = seedFromCheckpoint(from, pre.state, say);
      if (seeded) say(`copy seeded from checkpoint at ts ${seeded.ts} (${seeded.objects} objects)`);
      if (!('dir' in target)) rmSync(from, { recursive: true, force: true });
    };
    const p = await runPreExecutor({
      ...('dir' in target ? { path: join(target.dir, NODE_SOCKET), dir: target.dir } : { node: target.node }),
      secret,
      name,
      app,
      natives: nativeFunctions,
      seed,
      ...(metrics && { onBatch: metrics.onBatch }),
    });
    metrics?.attach(p.pre);
    return {
      failed: p.closed.then(() => {
        const e = p.error();
        throw e === null || e === undefined ? new Error('the node closed the connection') : asError(e);
      }),
      stop: async () => {
        p.close();
        await server?.close();
        const [puller, remote] = [p.puller(), p.remote()];
        const pull = puller && remote && { transport: remote.transport, pulled: puller.pulled, refreshed: puller.refreshed, reads: remote.stats().reads };
        return { executed: p.pre.executed, ...(pull && { pull }) };
      },
    };
  });
}

/** `--delegate-backlog N [--lease-ms N] [--lease-objects N]`: delegation on (docs/primary.md), else off. */
function delegationOptions(backlog: string | undefined, leaseMs: string | undefined, objects: string | undefined): DelegationOptions | null {
  if (backlog === undefined) {
    if (leaseMs !== undefined || objects !== undefined)
      throw new UsageError('--lease-ms and --lease-objects need --delegate-backlog N, which turns delegation on');
    return null;
  }
  return {
    backlog: intOption(backlog, 'delegate-backlog', DELEGATION_DEFAULTS.backlog, 1, 1_000_000),
    leaseMs: intOption(leaseMs, 'lease-ms', DELEGATION_DEFAULTS.leaseMs, 1, 600_000),
    maxObjects: intOption(objects, 'lease-objects', DELEGATION_DEFAULTS.maxObjects, 1, 100_000),
  };
}

/** An embedded node with its pre-executors (`remora start node`); tests kill and restart it. */
export function nodeRole(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      app: { type: 'string' },
      'pre-executors': { type: 'string' },
      admissions: { type: 'string' },
      'deadline-ms': { type: 'string' },
      policy: { type: 'string' },
      'state-update': { type: 'string' },
      transport: { type: 'string' },
      listen: { type: 'string' },
      autoscale: { type: 'string' },
      'metrics-port': { type: 'string' },
      upgrade: { type: 'boolean' },
      'checkpoint-every': { type: 'string' },
      sequencer: { type: 'string' },
      stream: { type: 'string' },
      'sequencer-token-file': { type: 'string' },
      'node-name': { type: 'string' },
      bootstrap: { type: 'string' },
      'merge-threads': { type: 'string' },
      'delegate-backlog': { type: 'string' },
      'lease-ms': { type: 'string' },
      'lease-objects': { type: 'string' },
    },
  });
  const delegation = delegationOptions(values['delegate-backlog'], values['lease-ms'], values['lease-objects']);
  const bootstrap = values.bootstrap === undefined ? null : bootstrapOption(values.bootstrap);
  const sequencer = sequencerOption(values.sequencer, values.stream, values['sequencer-token-file']);
  const autoscale = autoscaleOption(values.autoscale);
  const metricsPort = metricsPortOption(values['metrics-port']);
  const options = {
    dir: required(values.dir, 'dir'),
    app: appOption(values.app),
    upgrade: values.upgrade ?? false,
    preExecutors: intOption(values['pre-executors'], 'pre-executors', 2, 0, 64),
    admissions: intOption(values.admissions, 'admissions', 0, 0, 16),
    deadlineMs: intOption(values['deadline-ms'], 'deadline-ms', 50, 0, 60_000),
    policy: policyOption(values.policy),
    stateUpdate: stateUpdateOption(values['state-update']),
    transport: transportOption(values.transport),
    ...(values.listen !== undefined && { listen: listenOption(values.listen) }),
    ...(autoscale && { autoscale }),
    ...(metricsPort !== undefined && { metricsPort }),
    checkpointEvery: intOption(values['checkpoint-every'], 'checkpoint-every', DEFAULT_CHECKPOINT_EVERY, 0, 1_000_000_000),
    ...(sequencer && { sequencer }),
    ...(values['node-name'] !== undefined && { nodeName: values['node-name'] }),
    mergeThreads: intOption(values['merge-threads'], 'merge-threads', 1, 1, 64),
    ...(delegation && { delegation }),
  };
  if (bootstrap && !sequencer)
    throw new UsageError("--bootstrap needs --sequencer nats://...: only nodes following one stream can start from each other's checkpoints");
  return serveRole(async () => {
    if (bootstrap) await bootstrapFrom(bootstrap, options.dir);
    const cluster = await EmbeddedCluster.start(options);
    // `ready` means the state is complete: everything logged before the start is applied.
    const started = await Promise.race([cluster.replayed(), cluster.node.failed]);
    const from = started.checkpoint
      ? `from checkpoint at ts ${started.checkpoint.ts} + ${started.replayed} replayed`
      : `from the log: ${started.replayed} replayed`;
    process.stderr.write(`node: started ${from}\n`);
    if (cluster.address !== null) process.stderr.write(`node: clients and pre-executors may join at ${cluster.address}\n`);
    for (const socket of cluster.admissionSockets) process.stderr.write(`node: clients may also submit through the admission process at ${socket}\n`);
    if (cluster.metricsPort !== null) process.stderr.write(`node: metrics at http://127.0.0.1:${cluster.metricsPort}/metrics\n`);
    return {
      info: { address: cluster.address, storeAddress: cluster.storeAddress, started: from, lastApplied: String(cluster.node.lastApplied) },
      stop: async () => {
        // Replicated primaries first apply what the stream holds, so stopped nodes compare.
        if (sequencer) await Promise.race([cluster.settled(), new Promise((r) => setTimeout(r, SETTLE_MS).unref())]);
        const result = {
          digest: cluster.store.digest(),
          lastApplied: String(cluster.node.lastApplied),
          stats: cluster.node.stats,
          checkpoints: cluster.checkpoints && { ...cluster.checkpoints, lastTs: String(cluster.checkpoints.lastTs) },
          ...(cluster.agreementStats && { agreement: cluster.agreementStats }),
        };
        await cluster.close();
        return result;
      },
    };
  });
}

/** `--bootstrap HOST:PORT`: a peer node (its `--listen`) on the same stream. */
function bootstrapOption(raw: string): HostPort {
  const hp = parseHostPort(raw);
  if (hp === null) throw new UsageError(`--bootstrap must be HOST:PORT (a peer node's --listen), got '${raw}'`);
  return hp;
}

/** How long a stopping replicated primary waits to apply the stream's end before it reports. */
const SETTLE_MS = 10_000;

/** `--sequencer embedded|nats://HOST:PORT,...` with its `--stream` and token file. */
function sequencerOption(raw: string | undefined, stream: string | undefined, tokenFile: string | undefined): SequencerChoice | null {
  let servers: string[] | null;
  try {
    servers = raw === undefined ? null : parseSequencerUrls(raw);
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  if (servers === null) {
    if (stream !== undefined || tokenFile !== undefined) throw new UsageError('--stream and --sequencer-token-file need --sequencer nats://...');
    return null;
  }
  if (stream !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(stream))
    throw new UsageError(`--stream must be 1 to 64 letters, digits, '-' or '_', got '${stream}'`);
  return { kind: 'jetstream', servers, ...(stream !== undefined && { stream }), ...(tokenFile !== undefined && { tokenFile }) };
}

/** `--join DIR` or `--join HOST:PORT`: an existing directory wins over a name that looks like an address. */
function joinOption(raw: string): { dir: string } | { node: HostPort } {
  const node = parseHostPort(raw);
  if (node === null || isDirectory(raw)) return { dir: raw };
  return { node };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** `--autoscale MIN..MAX`: grow and shrink the pool between these sizes. */
function autoscaleOption(raw: string | undefined): { min: number; max: number } | undefined {
  if (raw === undefined) return undefined;
  const m = /^(\d+)\.\.(\d+)$/.exec(raw);
  const [min, max] = [Number(m?.[1]), Number(m?.[2])];
  if (!m || min > max || max > 64) throw new UsageError(`--autoscale must be MIN..MAX with 0 <= MIN <= MAX <= 64, got '${raw}'`);
  return { min, max };
}

/** `remora start node ...`, `remora start pre-executor --join DIR ...` or `remora start admission --join DIR ...`. */
export function startCommand(argv: string[]): Promise<number> {
  const [what, ...rest] = argv;
  if (what === 'node') return nodeRole(rest);
  if (what === 'pre-executor') return preExecutorRole(rest);
  if (what === 'admission') return admissionRole(rest);
  if (what === 'heron') return heronStartCommand(rest);
  throw new UsageError(`start what? expected 'node', 'pre-executor', 'admission' or 'heron', got ${what === undefined ? 'nothing' : `'${what}'`}`);
}
