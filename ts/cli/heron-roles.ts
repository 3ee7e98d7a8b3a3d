// The Heron replica role (started by `HeronCluster`, one process per partition replica).
import { parseArgs } from 'node:util';
import { runReplicaRole } from '../heron/replica-main.js';
import { intOption, required } from './options.js';

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
    },
  });
  const partitions = intOption(values.partitions, 'partitions', 1, 1, 1024);
  const replicas = intOption(values.replicas, 'replicas', 1, 1, 31);
  return runReplicaRole({
    dir: required(values.dir, 'dir'),
    app: required(values.app, 'app'),
    partitions,
    replicas,
    partition: intOption(values.partition, 'partition', 0, 0, partitions - 1),
    replica: intOption(values.replica, 'replica', 0, 0, replicas - 1),
    graceMs: intOption(values['grace-ms'], 'grace-ms', 2, 0, 60_000),
    transferSlotBytes: intOption(values['transfer-bytes'], 'transfer-bytes', 8 << 20, 1, 1 << 30),
    reportWrites: values['report-writes'] === true,
  });
}
