// The `heron-replica` role: one replica process, attached to the launcher's socket, serving
// until stdin ends. It prints `ready` once its store exists and it reached every peer.
import { join } from 'node:path';
import { nativeFunctions } from '../app/natives.js';
import { loadAppModule } from '../app/module.js';
import { serveRole } from '../process.js';
import { loadOrCreateSecret } from '../secret.js';
import { connect } from '../wire.js';
import { HERON_SOCKET, REPLICA_ROLE, type FromReplica, type ToReplica } from './messages.js';
import { HeronReplica } from './replica.js';

export interface ReplicaArgs {
  dir: string;
  app: string;
  partitions: number;
  replicas: number;
  partition: number;
  replica: number;
  graceMs: number;
  transferSlotBytes: number;
  reportWrites: boolean;
}

export function runReplicaRole(a: ReplicaArgs): Promise<never> {
  return serveRole(async () => {
    const secret = loadOrCreateSecret(a.dir);
    const loaded = await loadAppModule(a.app);
    let send: (m: FromReplica) => void = () => undefined;
    const replica = HeronReplica.create({
      dir: a.dir,
      secret,
      app: loaded.app,
      natives: nativeFunctions,
      partitions: a.partitions,
      replicas: a.replicas,
      partition: a.partition,
      replica: a.replica,
      graceMs: a.graceMs,
      transferSlotBytes: a.transferSlotBytes,
      reportWrites: a.reportWrites,
      send: (m) => send(m),
    });
    await replica.connect();
    const conn = await connect({ path: join(a.dir, HERON_SOCKET), secret, role: `${REPLICA_ROLE}:${a.partition}.${a.replica}` });
    send = (m) => {
      conn.send(m);
    };
    const closed = new Promise<never>((_, reject) => conn.onClose(() => reject(new Error('the launcher closed the connection'))));
    conn.onMessage((raw) => {
      const m = raw as ToReplica;
      if (m.t === 'deliver') replica.deliver(m.txs);
    });
    send({ t: 'hello', partition: a.partition, replica: a.replica, digest: loaded.digest });
    return {
      failed: Promise.race([replica.failed, closed]),
      stop: async () => {
        const summary = await replica.close();
        conn.close();
        return summary;
      },
    };
  });
}
