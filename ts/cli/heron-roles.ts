// `remora start heron` (a cluster from its file) and the Heron replica role (started by
// `HeronCluster`, one process per partition replica).
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { HeronCluster, preExecutorsOf } from '../heron/cluster.js';
import { HeronConfigError, readHeronConfig } from '../heron/config.js';
import { DEFAULT_RING_SPIN_MICROS, HERON_SOCKET, ORDERINGS, type Ordering } from '../heron/messages.js';
import { runReplicaRole } from '../heron/replica-main.js';
import { serveRole } from '../process.js';
import { parseHostPort } from '../transport.js';
import { appOption, ConfigError, intOption, listenOption, required, transportOption } from './options.js';

/** A Heron cluster described by `--config FILE`, in `--dir DIR`, until SIGTERM or SIGINT. */
export function heronStartCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      dir: { type: 'string' },
      ordering: { type: 'string' },
      listen: { type: 'string' },
      'pre-executors': { type: 'string' },
      transport: { type: 'string' },
    },
  });
  const file = required(values.config, 'config');
  const listen = values.listen === undefined ? undefined : parseHostPort(listenOption(values.listen));
  const dir = required(values.dir, 'dir');
  let config;
  try {
    config = readHeronConfig(file);
  } catch (e) {
    throw fileError(e);
  }
  // `--ordering` overrides the file's `ordering`.
  if (values.ordering !== undefined) config = { ...config, ordering: orderingOption(values.ordering) };
  // `--pre-executors N` overrides the file's `preExecutors` (and `preExecution`'s default pool).
  const members = values['pre-executors'];
  if (members !== undefined) config = { ...config, preExecutors: intOption(members, 'pre-executors', 0, 0, 16) };
  // `--transport` overrides the file's `transport`.
  if (values.transport !== undefined) config = { ...config, transport: transportOption(values.transport) };
  return serveRole(async () => {
    const cluster = await HeronCluster.start({ dir, ...config, ...(listen && { listen }) }).catch((e: unknown) => {
      throw fileError(e);
    });
    process.stderr.write(`heron: clients may connect at ${join(dir, HERON_SOCKET)}${cluster.tcpAddress === null ? '' : ` and ${cluster.tcpAddress}`}\n`);
    return {
      info: {
        app: config.app,
        partitions: config.partitions,
        replicas: config.replicas,
        preExecution: preExecutorsOf(config) > 0,
        ...(config.preExecutors !== undefined && { preExecutors: config.preExecutors }),
        ordering: config.ordering ?? 'synced',
        // How replicas reach each other, when the file or `--transport` chose one.
        ...(config.transport !== undefined && { transport: config.transport }),
        // Where clients connect over TCP, with `--listen` only.
        ...(cluster.tcpAddress !== null && { address: cluster.tcpAddress }),
      },
      stop: async () => ({ replicas: await cluster.close(), divergences: cluster.divergences.length, decisionMismatches: cluster.decisionMismatches.length }),
    };
  });
}

/** A bad cluster file is the user's to fix, and its message says how: no usage, no stack. */
const fileError = (e: unknown): unknown => (e instanceof HeronConfigError ? new ConfigError(e.message) : e);

function orderingOption(v: string): Ordering {
  const o = ORDERINGS.find((x) => x === v);
  if (o === undefined) throw new ConfigError(`--ordering must be ${ORDERINGS.join(' or ')}, got ${JSON.stringify(v)}`);
  return o;
}

/** A timestamp flag (0 and up), for a restarted replica's `--rejoin-after`. */
function timestampOption(v: string, name: string): bigint {
  if (!/^\d{1,20}$/.test(v) || BigInt(v) >= 1n << 64n) throw new ConfigError(`--${name} must be a timestamp (0 to 2^64-1), got ${JSON.stringify(v)}`);
  return BigInt(v);
}

export function heronReplicaRole(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      app: { type: 'string' },
      partitions: { type: 'string' },
      replicas: { type: 'string' },
      partition: { type: 'string' },
      replica: { type: 'string' },
      'grace-ms': { type: 'string' },
      'transfer-bytes': { type: 'string' },
      'report-writes': { type: 'boolean' },
      'ring-spin-us': { type: 'string' },
      'rejoin-after': { type: 'string' },
      'remote-cache-entries': { type: 'string' },
      transport: { type: 'string' },
    },
  });
  const partitions = intOption(values.partitions, 'partitions', 1, 1, 1024);
  const replicas = intOption(values.replicas, 'replicas', 1, 1, 31);
  return runReplicaRole({
    dir: required(values.dir, 'dir'),
    app: appOption(values.app),
    partitions,
    replicas,
    partition: intOption(values.partition, 'partition', 0, 0, partitions - 1),
    replica: intOption(values.replica, 'replica', 0, 0, replicas - 1),
    graceMs: intOption(values['grace-ms'], 'grace-ms', 2, 0, 60_000),
    transferSlotBytes: intOption(values['transfer-bytes'], 'transfer-bytes', 1 << 20, 2, 1 << 30),
    reportWrites: values['report-writes'] === true,
    ringSpinMicros: intOption(values['ring-spin-us'], 'ring-spin-us', DEFAULT_RING_SPIN_MICROS, 0, 1_000_000),
    ...(values['rejoin-after'] !== undefined && { rejoinAfter: timestampOption(values['rejoin-after'], 'rejoin-after') }),
    ...(values['remote-cache-entries'] !== undefined && {
      remoteCacheEntries: intOption(values['remote-cache-entries'], 'remote-cache-entries', 4096, 0, 1 << 20),
    }),
    transport: transportOption(values.transport),
  });
}
