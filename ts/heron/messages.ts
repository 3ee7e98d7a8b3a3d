// What the launcher (multicast side) and partition replicas say to each other over the wire.
import type { LookupTable, Outcome } from '../app/exec.js';
import type { Write } from '../app/state.js';
import type { Decision } from '../pipeline/merge.js';
import type { Authenticator } from '../app/tx.js';

export const REPLICA_ROLE = 'heron-replica';
export const HERON_SOCKET = 'heron.sock';
/** Each replica creates its coordination region before anything else: region 0 everywhere. */
export const COORD_REGION = 0;
/** State-transfer memory comes next: the request region (1), then the landing region (2). */
export const TRANSFER_REGION = 1;

export const storeName = (partition: number, replica: number): string => `heron-p${partition}r${replica}`;

/** One transaction as the multicast delivers it to a partition. */
export interface Delivered {
  ts: bigint;
  body: Uint8Array;
  auth: Authenticator[];
  dest: number[];
  /** The pre-executor's lookup table, the same for every destination (absent: none). */
  table?: LookupTable;
}

export type ToReplica = { t: 'deliver'; txs: Delivered[] };

export type FromReplica =
  /** `digest`: of the app the replica loaded (module.ts); it must be the launcher's. */
  | { t: 'hello'; partition: number; replica: number; digest: string }
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
}
