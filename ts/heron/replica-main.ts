// The `heron-replica` role: one replica process, attached to the launcher's socket, serving
// until stdin ends. It prints `ready` once its store exists and it reached every peer.
// Transactions arrive through the launcher's ring, read one-sidedly; the socket carries the
// replies, and deliveries only if the ring dropped this replica for falling behind.
import { join } from 'node:path';
import { nativeFunctions } from '../app/natives.js';
import { loadAppModule } from '../app/module.js';
import { serveRole } from '../process.js';
import { loadOrCreateSecret } from '../secret.js';
import { connect } from '../wire.js';
import { NativeRingReader } from '../binding.js';
import { decodeRingRecord, monotonicMicros, HERON_SOCKET, REPLICA_ROLE, RING_REGION, RING_STORE, type FromReplica } from './messages.js';
import { guarded, parseToReplica } from './parse.js';
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
  /** How long the ring reader spins before sleeping on its doorbell (µs). */
  ringSpinMicros: number;
}

/** Records taken from the ring per hand-over to the replica. */
const RING_BATCH = 256;
/** A wait for ring records ends this often, to notice a stop. */
const RING_WAIT_MS = 50;
/**
 * How long the replica's own thread waits for the next record before handing the wait to the
 * pool: a closed-loop client's next request comes within it, and a replica has nothing else
 * to do meanwhile (its socket carries only replies out; transfer requests wait on the pool).
 */
const RING_SYNC_WAIT_MICROS = 2000;

/**
 * Hands the ring's records to the replica as they come, until `stopping()`. Resolves when the
 * ring dropped this replica (it fell behind: the launcher delivers over the socket instead);
 * rejects on a malformed record.
 */
async function pumpRing(reader: NativeRingReader, replica: HeronReplica, spinMicros: number, stopping: () => boolean, log: (m: string) => void): Promise<void> {
  while (!stopping()) {
    let got;
    try {
      got = reader.poll(RING_BATCH);
      if (got.length === 0) {
        // Let the last reply leave (the socket uncorks on the next tick) and anything queued
        // run. A transaction still being applied waits on the event loop (a pool task: a
        // coordination outlasting its budget, a first lookup of a remote object): blocking this
        // thread now would hold it up, so wait for it to finish instead.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (replica.busy) {
          await replica.drained();
          continue;
        }
        // Idle: wait on this thread for a while: one wake-up, not a pool hop, per record.
        got = reader.waitSync(RING_BATCH, spinMicros, RING_SYNC_WAIT_MICROS);
      }
      // Idle longer: wait on a pool thread, so the event loop serves the socket meanwhile.
      if (got.length === 0) got = await reader.wait(RING_BATCH, 0, RING_WAIT_MS);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      if (!/fell behind the ring/.test(msg)) throw e;
      log(`heron replica: ${msg}; taking deliveries over the socket`);
      return;
    }
    if (got.length > 0) {
      const arrived = monotonicMicros();
      replica.deliver(got.map((r) => ({ ...decodeRingRecord(r.ts, r.dest, r.payload), arrived })));
    }
  }
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
    // First, before the ring can hand over anything to answer: the launcher takes nothing else first.
    send({ t: 'hello', partition: a.partition, replica: a.replica, digest: loaded.digest });
    const closed = new Promise<never>((_, reject) => conn.onClose(() => reject(new Error('the launcher closed the connection'))));
    const reader = NativeRingReader.attach({ dir: a.dir, store: RING_STORE, region: RING_REGION, consumer: a.partition * a.replicas + a.replica });
    let stopping = false;
    const pumping = pumpRing(reader, replica, a.ringSpinMicros, () => stopping, (m) => console.error(m));
    const pumpFailed = pumping.then(() => new Promise<never>(() => undefined));
    // The launcher is a member, but its frames are still checked: a malformed one closes the
    // connection (so this replica stops, saying why) before anything reaches the replica.
    conn.onMessage(
      guarded(conn, (m) => console.error(m), 'heron replica: the launcher', (raw) => {
        replica.deliver(parseToReplica(raw).txs);
      }),
    );
    return {
      failed: Promise.race([replica.failed, closed, pumpFailed]),
      stop: async () => {
        stopping = true;
        await pumping.catch(() => undefined);
        const summary = await replica.close();
        conn.close();
        return summary;
      },
    };
  });
}
