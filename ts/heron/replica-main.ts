// The `heron-replica` role: one replica process, attached to the launcher's socket, serving
// until stdin ends. It prints `ready` once its store exists and it reached every peer.
// Transactions arrive through the launcher's ring, read one-sidedly; the socket carries the
// replies, and deliveries only if the ring dropped this replica for falling behind.
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { nativeFunctions } from '../app/natives.js';
import { loadAppModule } from '../app/module.js';
import { serveRole } from '../process.js';
import { loadOrCreateSecret } from '../secret.js';
import type { Transport } from '../transport.js';
import { connect } from '../wire.js';
import { NativeRingReader } from '../binding.js';
import {
  decodeRingRecord,
  encodeReplyRecord,
  monotonicMicros,
  HERON_SOCKET,
  REPLICA_ROLE,
  RING_REGION,
  RING_STORE,
  storeName,
  type FromReplica,
  type PeersMessage,
} from './messages.js';
import { guarded, parseToReplica } from './parse.js';
import { unpackRingBatch } from './ring-batch.js';
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
  /**
   * A restart after a crash (`--rejoin-after TS`): the replica starts empty and catches up by
   * state transfer to at least TS, the last transaction addressed to its partition before the
   * launcher took it back into the ring; the ring gives it everything after.
   */
  rejoinAfter?: bigint;
  /** Remote objects kept by version (`--remote-cache-entries`; default 4096, 0 = off). */
  remoteCacheEntries?: number;
  /** How peers and the ring are reached (`--transport`; default `shm`). */
  transport?: Transport;
}

/** How long a replica over the network waits for the launcher to say where its peers are. */
const PEERS_TIMEOUT_MS = 60_000;

/** Where a region's size class is in its header (remora-core `region.rs`): all ones for a raw region. */
const CLASS_WORD = 24;
const RAW_REGION = 0xffff_ffff_ffff_ffffn;
const PAGE = 4096;

/**
 * Before a restarted replica creates its store afresh over `shm` (which unlinks the dead
 * incarnation's region files): peers attached to those files keep their mappings, and nothing
 * fails to tell them the files are dead. So every slot region is zeroed: a peer's one-sided
 * read of an object there finds its slot gone, asks the dead owner, fails and attaches again.
 * (Coordination and state transfer attach again when the launcher says the replica restarted.)
 */
function retireDeadIncarnation(dir: string, store: string): void {
  const storeDir = join(dir, store);
  const names = existsSync(storeDir) ? readdirSync(storeDir) : [];
  const zeros = Buffer.alloc(1 << 20);
  const header = Buffer.alloc(8);
  for (const name of names) {
    if (!/^region-\d{6}$/.test(name)) continue;
    const fd = openSync(join(storeDir, name), 'r+');
    try {
      if (readSync(fd, header, 0, 8, CLASS_WORD) !== 8 || header.readBigUInt64LE(0) === RAW_REGION) continue;
      const size = fstatSync(fd).size;
      for (let at = PAGE; at < size; at += zeros.length) writeSync(fd, zeros, 0, Math.min(zeros.length, size - at), at);
    } finally {
      closeSync(fd);
    }
  }
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
    let packed;
    try {
      packed = reader.poll(RING_BATCH);
      if (packed.length === 0) {
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
        packed = reader.waitSync(RING_BATCH, spinMicros, RING_SYNC_WAIT_MICROS);
      }
      // Idle longer: wait on a pool thread, so the event loop serves the socket meanwhile.
      if (packed.length === 0) packed = await reader.wait(RING_BATCH, 0, RING_WAIT_MS);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      if (!/fell behind the ring/.test(msg)) throw e;
      log(`heron replica: ${msg}; taking deliveries over the socket`);
      return;
    }
    if (packed.length > 0) {
      const arrived = monotonicMicros();
      const got = unpackRingBatch(packed);
      const first = got[0];
      if (first) replica.arriving(first.ts, first.dest);
      replica.deliver(got.map((r) => decodeRingRecord(r.ts, r.dest, r.payload, arrived)));
    }
  }
}

export function runReplicaRole(a: ReplicaArgs): Promise<never> {
  return serveRole(async () => {
    const secret = loadOrCreateSecret(a.dir);
    const loaded = await loadAppModule(a.app);
    const transport = a.transport ?? 'shm';
    if (a.rejoinAfter !== undefined && transport === 'shm') retireDeadIncarnation(a.dir, storeName(a.partition, a.replica));
    let send: (m: FromReplica) => void = () => undefined;
    const replica = HeronReplica.create({
      dir: a.dir,
      secret,
      transport,
      app: loaded.app,
      natives: nativeFunctions,
      partitions: a.partitions,
      replicas: a.replicas,
      partition: a.partition,
      replica: a.replica,
      graceMs: a.graceMs,
      transferSlotBytes: a.transferSlotBytes,
      reportWrites: a.reportWrites,
      ...(a.remoteCacheEntries !== undefined && { remoteCacheEntries: a.remoteCacheEntries }),
      send: (m) => send(m),
    });
    // Over the network the store is served before hello, which carries its address; peers
    // are attached once the launcher says where they are. On one host they are there already.
    const address = transport === 'shm' ? undefined : replica.store.serve({ transport, listen: '127.0.0.1:0' });
    if (transport === 'shm') await replica.connect();
    const conn = await connect({ path: join(a.dir, HERON_SOCKET), secret, role: `${REPLICA_ROLE}:${a.partition}.${a.replica}` });
    // A reply goes as a record (messages.ts), unless it carries writes for the pool. The reply
    // to the last transaction queued leaves at once: waiting for the end of the turn put this
    // replica's bookkeeping (publishing its prefix, settling the run, the next look at the
    // ring) on the client's path. Earlier ones of a batch wait to share its write.
    send = (m) => {
      conn.send(m.t === 'outcome' && m.writes === undefined ? encodeReplyRecord(m) : m);
      if (m.t === 'outcome' && replica.lastQueued) conn.flush();
    };
    const closed = new Promise<never>((_, reject) => conn.onClose(() => reject(new Error('the launcher closed the connection'))));
    closed.catch(() => undefined);
    let peersCame: (m: PeersMessage) => void = () => undefined;
    const firstPeers = new Promise<PeersMessage>((resolve) => {
      peersCame = resolve;
    });
    // The launcher is a member, but its frames are still checked: a malformed one closes the
    // connection (so this replica stops, saying why) before anything reaches the replica.
    conn.onMessage(
      guarded(
        conn,
        (m) => console.error(m),
        'heron replica: the launcher',
        (raw) => {
          const m = parseToReplica(raw);
          if (m.t === 'deliver') {
            replica.deliver(m.txs);
            return;
          }
          replica.peersAt(m.addresses, m.rejoined);
          peersCame(m);
        },
      ),
    );
    // First, before the ring can hand over anything to answer: the launcher takes nothing else first.
    send({ t: 'hello', partition: a.partition, replica: a.replica, digest: loaded.digest, ...(address !== undefined && { address }) });
    let ring: string | null = null;
    if (transport !== 'shm') {
      let timer: NodeJS.Timeout | undefined;
      const peers = await Promise.race([
        firstPeers,
        closed,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`the launcher did not say where the peers are within ${PEERS_TIMEOUT_MS} ms`)), PEERS_TIMEOUT_MS);
        }),
      ]).finally(() => clearTimeout(timer));
      if (peers.ring === null || peers.addresses === null) throw new Error(`the launcher sent no addresses for a ${transport} cluster`);
      ring = peers.ring;
      await replica.connect();
    }
    const consumer = a.partition * a.replicas + a.replica;
    const reader =
      ring === null
        ? NativeRingReader.attach({ dir: a.dir, store: RING_STORE, region: RING_REGION, consumer })
        : NativeRingReader.attach({ transport, address: ring, secret: Buffer.from(secret), dir: a.dir, store: RING_STORE, region: RING_REGION, consumer });
    let stopping = false;
    // Before the first record is applied: the ring holds only what came after the launcher
    // took this replica back; the rest is in the peers' state.
    if (a.rejoinAfter !== undefined) void replica.rejoin(a.rejoinAfter).catch(() => undefined);
    const pumping = pumpRing(
      reader,
      replica,
      a.ringSpinMicros,
      () => stopping,
      (m) => console.error(m),
    );
    const pumpFailed = pumping.then(() => new Promise<never>(() => undefined));
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
