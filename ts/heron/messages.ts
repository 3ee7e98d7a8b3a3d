// What the launcher (multicast side) and partition replicas say to each other over the wire.
import { Packr } from 'msgpackr';
import type { LookupTable, Outcome } from '../app/exec.js';
import type { Write } from '../app/state.js';
import type { Decision } from '../pipeline/merge.js';
import { decodeTx, splitTxBytes, type Authenticator, type DecodedTx } from '../app/tx.js';
import { parseTable } from './parse.js';

export const REPLICA_ROLE = 'heron-replica';
export const HERON_SOCKET = 'heron.sock';
/** Each replica creates its coordination region before anything else: region 0 everywhere. */
export const COORD_REGION = 0;
/** State-transfer memory comes next: the request region (1), then the landing region (2). */
export const TRANSFER_REGION = 1;

export const storeName = (partition: number, replica: number): string => `heron-p${partition}r${replica}`;

/** The launcher's store, holding the ordered stream's ring (its first region). */
export const RING_STORE = 'heron-launcher';
export const RING_REGION = 0;
/** Default bytes of records the ring holds. */
export const RING_BYTES = 16 << 20;

/**
 * When a transaction is handed to the replicas: `synced` once the log holds it on disk (it
 * survives anything the disk survives), `memory` as soon as it has its timestamp, the log
 * written and synced in the background (see docs/heron.md for what each survives).
 */
export type Ordering = 'synced' | 'memory';
export const ORDERINGS: readonly Ordering[] = ['synced', 'memory'];
/** A replica's ring reader spins this long after its last record before it sleeps (µs). */
export const DEFAULT_RING_SPIN_MICROS = 50;

/** One transaction as the multicast delivers it to a partition. */
export interface Delivered {
  ts: bigint;
  body: Uint8Array;
  auth: Authenticator[];
  dest: number[];
  /** The pre-executor's lookup table, the same for every destination (absent: none). */
  table?: LookupTable;
  /** The transaction decoded where it arrived (the ring path), so it is not decoded again. */
  tx?: DecodedTx;
  /** When the replica took it from the ring (µs of the host's monotonic clock). */
  arrived?: number;
}

// Tables hold bigint versions and bytes: the wire's msgpack settings.
const packr = new Packr({ useRecords: false, int64AsType: 'bigint', copyBuffers: true });

/** A ring record's payload: the `tx.v1` bytes, then the lookup table if there is one. */
/** Bytes a ring record takes: header, destinations, payload, aligned (crates/remora-heron/src/ring.rs). */
export function ringRecordBytes(dests: number, payloadBytes: number): number {
  const unaligned = 32 + Math.ceil((2 * dests) / 8) * 8 + payloadBytes;
  return Math.ceil(unaligned / 32) * 32;
}

export function encodeRingPayload(txBytes: Uint8Array, table: LookupTable | undefined): Buffer {
  return table ? Buffer.concat([txBytes, packr.pack(table)]) : Buffer.from(txBytes.buffer, txBytes.byteOffset, txBytes.byteLength);
}

/** The delivery a ring record holds, decoded once; throws naming `ts` if it does not decode. */
export function decodeRingRecord(ts: bigint, dest: number[], payload: Uint8Array): Delivered {
  try {
    const { end } = splitTxBytes(payload);
    const tx = decodeTx(payload.subarray(0, end));
    const d: Delivered = { ts, body: tx.body, auth: tx.auth, dest, tx };
    // The launcher's memory is input like any peer's: the table is checked before it is used.
    if (end < payload.length) d.table = parseTable(packr.unpack(payload.subarray(end)));
    return d;
  } catch (e) {
    throw new Error(`ring record ${ts} does not decode: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * Where a replica's peers are. Sent over `tcp`/`verbs` once every replica said hello (each
 * serves its store at an address of its own), and, over any transport, to every replica when a
 * restarted one says hello: `rejoined` is its entry index (partition * replicas + replica), so
 * peers attach to its new incarnation instead of writing into the dead one's memory.
 */
export interface PeersMessage {
  t: 'peers';
  /** Every replica's store address by entry index (`tcp`, `verbs`); null over `shm`. */
  addresses: string[] | null;
  /** The launcher's store, holding the ring (`tcp`, `verbs`); null over `shm`. */
  ring: string | null;
  rejoined: number | null;
}

export type ToReplica = { t: 'deliver'; txs: Delivered[] } | PeersMessage;

export type FromReplica =
  /**
   * `digest`: of the app the replica loaded (module.ts); it must be the launcher's.
   * `address`: where its store is served (`tcp`, `verbs`).
   */
  | { t: 'hello'; partition: number; replica: number; digest: string; address?: string }
  | {
      t: 'outcome';
      ts: bigint;
      outcome: Outcome;
      partition: number;
      replica: number;
      timing: Timing;
      decision: Decision;
      /** This partition's writes, when a pre-executor's copy follows them. */
      writes?: Write[];
    }
  | { t: 'digest'; partition: number; replica: number; applied: number; ts: bigint; digest: string }
  | { t: 'transferred'; partition: number; replica: number; from: number; since: bigint; ts: bigint; objects: number; bytes: number; micros: number };

/** Where a transaction's time at one replica went (microseconds). */
export interface Timing {
  phase2: number;
  execute: number;
  phase4: number;
  /** Coordination waits cut short by the grace limit (some replica was slower). */
  delayed: number;
  /** Waits that found a majority but not every replica (Heron's delayed transactions), and
   * how long they waited beyond the majority (µs). */
  graceWaits: number;
  graceMicros: number;
  /**
   * When the replica took the transaction from the ring and when it sent this reply, in µs of
   * the host's monotonic clock (every process on the host reads the same one): with the
   * launcher's own stamps they split "ordering" into its legs.
   */
  arrived?: number;
  sent?: number;
}

/** µs of the host's monotonic clock, comparable between the host's processes. */
export const monotonicMicros = (): number => Number(process.hrtime.bigint() / 1000n);
