// The `heron-replica` role: one replica process, attached to the launcher's socket, serving
// until stdin ends. It prints `ready` once its store exists and it reached every peer.
// Transactions arrive through the launcher's ring, read one-sidedly; the socket carries the
// replies, and deliveries only if the ring dropped this replica for falling behind.
import { closeSync, existsSync, fstatSync, linkSync, mkdirSync, openSync, readdirSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { nativeFunctions } from '../app/natives.js';
import { loadAppModule } from '../app/module.js';
import { serveRole } from '../process.js';
import { loadOrCreateSecret } from '../secret.js';
import { connect } from '../wire.js';
import { NativeRingReader } from '../binding.js';
import { COORD_REGION, decodeRingRecord, monotonicMicros, HERON_SOCKET, REPLICA_ROLE, RING_REGION, RING_STORE, storeName, type FromReplica } from './messages.js';
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
  /**
   * A restart after a crash (`--rejoin-after TS`): the replica starts empty and catches up by
   * state transfer to at least TS, the last transaction addressed to its partition before the
   * launcher took it back into the ring; the ring gives it everything after.
   */
  rejoinAfter?: bigint;
  /** Remote objects kept by version (`--remote-cache-entries`; default 4096, 0 = off). */
  remoteCacheEntries?: number;
}

/** Where a region's size class is in its header (remora-core `region.rs`): all ones for a raw region. */
const CLASS_WORD = 24;
const RAW_REGION = 0xffff_ffff_ffff_ffffn;
const PAGE = 4096;

/**
 * Before a restarted replica creates its store afresh (which unlinks the dead incarnation's
 * region files): peers attached to those files keep their mappings, and nothing fails to tell
 * them the files are dead. So (1) every slot region is zeroed, so a peer's one-sided read of an
 * object there finds its slot gone, asks the dead owner, fails and attaches again; (2) the
 * coordination region is kept under `STORE.prev-N/`, where peers' announcements still land, for
 * the new incarnation to copy from (`mirrorStale`). Returns every such directory kept so far.
 */
function retireDeadIncarnation(dir: string, store: string): string[] {
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
  const coord = `region-${String(COORD_REGION).padStart(6, '0')}`;
  const prefix = `${store}.prev-`;
  const kept = () => readdirSync(dir).filter((n) => n.startsWith(prefix) && /^\d+$/.test(n.slice(prefix.length)));
  if (names.includes(coord)) {
    const n = kept().reduce((m, d) => Math.max(m, Number(d.slice(prefix.length))), 0) + 1;
    const keep = join(dir, `${prefix}${n}`);
    mkdirSync(keep, { mode: 0o700 });
    linkSync(join(storeDir, coord), join(keep, coord));
  }
  return kept().map((d) => join(dir, d));
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
    const stale = a.rejoinAfter === undefined ? [] : retireDeadIncarnation(a.dir, storeName(a.partition, a.replica));
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
      ...(a.remoteCacheEntries !== undefined && { remoteCacheEntries: a.remoteCacheEntries }),
      send: (m) => send(m),
    });
    if (stale.length > 0) replica.mirrorStale(stale);
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
    // Before the first record is applied: the ring holds only what came after the launcher
    // took this replica back; the rest is in the peers' state.
    if (a.rejoinAfter !== undefined) void replica.rejoin(a.rejoinAfter).catch(() => undefined);
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
