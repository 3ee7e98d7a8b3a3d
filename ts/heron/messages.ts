// What the launcher (multicast side) and partition replicas say to each other over the wire.
import { availableParallelism } from 'node:os';
import { Packr } from 'msgpackr';
import { encode } from '../app/codec.js';
import type { LookupTable, Outcome } from '../app/exec.js';
import type { Write } from '../app/state.js';
import type { Decision } from '../pipeline/merge.js';
import { splitTxBytes, type Authenticator, type DecodedTx } from '../app/tx.js';
import { parseTable } from './parse.js';
import { decodeAdmittedTx } from './ring-tx.js';

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

/**
 * The spin a cluster of `processes` (launcher, replicas, pre-executors) gets by default on a
 * host of `cores`: a spinning reader only saves its wake-up if it has a core to itself; with
 * fewer cores it takes one from the launcher or a peer that has the next step to do (profiled
 * on 2 cores, 2 × 3, one closed-loop client: the 50 µs spin was a quarter of each replica's
 * CPU, and no leg got faster for it).
 */
export function defaultRingSpinMicros(processes: number, cores = availableParallelism()): number {
  return cores > processes ? DEFAULT_RING_SPIN_MICROS : 0;
}

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

/**
 * The delivery a ring record holds, decoded once (taken from the ring at `arrived`, if given);
 * throws naming `ts` if it does not decode.
 */
export function decodeRingRecord(ts: bigint, dest: number[], payload: Uint8Array, arrived?: number): Delivered {
  try {
    const { end } = splitTxBytes(payload);
    // Admitted by the launcher: checked as ring-tx.ts says, not re-encoded.
    const tx = decodeAdmittedTx(payload.subarray(0, end));
    const d: Delivered = { ts, body: tx.body, auth: tx.auth, dest, tx };
    if (arrived !== undefined) d.arrived = arrived;
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
  | {
      t: 'transferred';
      partition: number;
      /** The lagger, and the peer that shipped. */
      replica: number;
      from: number;
      /** The lagger had applied up to `since`; it resumed after `ts`. */
      since: bigint;
      ts: bigint;
      objects: number;
      bytes: number;
      /** The lagger's whole catch-up, timed around its one call: choosing peers, the transfer, adopting the prefix. */
      micros: number;
      /** The transfer alone, timed natively: from the first request going out to the covering shipment installed. */
      nativeMicros: number;
    };

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

/**
 * An outcome as the launcher takes it: `bytes` are the outcome's canonical encoding, compared
 * byte for byte across replicas; `outcome` is it decoded, when the message carried it so (the
 * launcher decodes `bytes` only for the first reply, or one that differs).
 */
export interface OutcomeReceived {
  t: 'outcome';
  ts: bigint;
  bytes: Uint8Array;
  outcome?: Outcome;
  partition: number;
  replica: number;
  timing: Timing;
  decision: Decision;
  writes?: Write[];
}

/** A replica's message as the launcher takes it. */
export type Received = Exclude<FromReplica, { t: 'outcome' }> | OutcomeReceived;

/**
 * The reply without writes (every reply unless a pre-executor pool follows the writes) goes as
 * one binary frame rather than a msgpack map: the launcher gets three per request, and a map's
 * keys cost more to encode and decode than the rest of the reply. Little-endian:
 * [0] REPLY_LAYOUT, [1] decision (index in DECISIONS), [2] u16 partition, [4] u16 replica,
 * [6] u16 flags (bit 0: `arrived` present, bit 1: `sent` present), [8] u64 ts, [16..80) f64
 * phase2, execute, phase4, delayed, graceWaits, graceMicros, arrived, sent; then the outcome's
 * canonical encoding (app/codec.ts) to the end.
 */
export const REPLY_LAYOUT = 0x52;
export const REPLY_HEADER_BYTES = 80;
export const DECISIONS: readonly Decision[] = ['adopted', 'reexecuted', 'executed'];
export const TIMING_FIELDS = ['phase2', 'execute', 'phase4', 'delayed', 'graceWaits', 'graceMicros', 'arrived', 'sent'] as const;

/** The canonical bytes of the outcomes most commands give (a write's `null`, a check's boolean), encoded once. */
const OK_NULL = encode({ result: null, status: 'ok' });
const OK_TRUE = encode({ result: true, status: 'ok' });
const OK_FALSE = encode({ result: false, status: 'ok' });

/**
 * An outcome's canonical bytes (its keys given in order: `encode` then makes no sorted copy).
 * The common ones come encoded already (a reply's encoding was a seventh of a replica's
 * `apply` in a profile of single puts); callers must not write into what they get.
 */
export function encodeOutcome(o: Outcome): Buffer {
  if (o.status !== 'ok') return encode({ reason: o.reason, status: o.status });
  const r = o.result;
  return r === null ? OK_NULL : r === true ? OK_TRUE : r === false ? OK_FALSE : encode({ result: r, status: o.status });
}

/** The outcome `bytes` encode if they are one of those kept encoded (a fresh object), else undefined. */
export function keptOutcome(bytes: Uint8Array): Outcome | undefined {
  if (bytes.length !== OK_NULL.length && bytes.length !== OK_TRUE.length && bytes.length !== OK_FALSE.length) return undefined;
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.equals(OK_NULL)) return { status: 'ok', result: null };
  if (b.equals(OK_TRUE)) return { status: 'ok', result: true };
  if (b.equals(OK_FALSE)) return { status: 'ok', result: false };
  return undefined;
}

/** The frame of an outcome reply without writes (layout above). */
export function encodeReplyRecord(m: Extract<FromReplica, { t: 'outcome' }>): Buffer {
  const outcome = encodeOutcome(m.outcome);
  const b = Buffer.allocUnsafe(REPLY_HEADER_BYTES + outcome.length);
  const t = m.timing;
  b[0] = REPLY_LAYOUT;
  b[1] = DECISIONS.indexOf(m.decision);
  b.writeUInt16LE(m.partition, 2);
  b.writeUInt16LE(m.replica, 4);
  b.writeUInt16LE((t.arrived !== undefined ? 1 : 0) | (t.sent !== undefined ? 2 : 0), 6);
  b.writeBigUInt64LE(m.ts, 8);
  b.writeDoubleLE(t.phase2, 16);
  b.writeDoubleLE(t.execute, 24);
  b.writeDoubleLE(t.phase4, 32);
  b.writeDoubleLE(t.delayed, 40);
  b.writeDoubleLE(t.graceWaits, 48);
  b.writeDoubleLE(t.graceMicros, 56);
  b.writeDoubleLE(t.arrived ?? 0, 64);
  b.writeDoubleLE(t.sent ?? 0, 72);
  outcome.copy(b, REPLY_HEADER_BYTES);
  return b;
}

/** µs of the host's monotonic clock, comparable between the host's processes. */
export const monotonicMicros = (): number => Number(process.hrtime.bigint() / 1000n);
