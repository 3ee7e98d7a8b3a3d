// Messages between cluster members, and the checks that turn a peer's bytes into them. A
// message that fails a check is a protocol error: the connection that sent it is closed.
import { Buffer } from 'node:buffer';
import type { Outcome } from '../app/exec.js';
import type { Transaction } from '../app/tx.js';
import type { Decision } from './merge.js';
import type { Effect, Feedback } from './preexecutor.js';
import { decodeEffects, frameResults, RecordError, type ResultBatch } from './records.js';
import { STATE_UPDATES, type PushedObject, type StateUpdate } from './state-update.js';
import { isTransport, type Transport } from '../transport.js';
import type { NodeStatus } from './status.js';

/** `optimistic`: also send the pre-executor's outcome as soon as it is known. */
/** `tx`: its `tx.v1` bytes (docs/binary-layouts.md), or `{ body, auth }`; admission checks either. */
export type ClientToNode = { t: 'submit'; id: number; tx: Transaction | Uint8Array; optimistic?: boolean };
export type NodeToClient =
  | {
      t: 'reply';
      id: number;
      ts: bigint;
      duplicate: boolean;
      outcome: Outcome | null;
      decision: Decision | null;
      optimistic?: OptimisticCheck;
    }
  | { t: 'optimistic'; id: number; outcome: Outcome; from: string }
  | { t: 'rejected'; id: number; error: string };

/** The operator's requests (`remora upgrade`) and the node's answers. */
export type AdminToNode = { t: 'upgrade'; spec: string } | { t: 'checkpoint' } | { t: 'status' };
export type NodeToAdmin =
  | { t: 'upgraded'; ts: bigint; app: string; digest: string }
  | { t: 'failed'; error: string }
  | { t: 'checkpoint'; at: SharedCheckpointInfo | null }
  | { t: 'status'; status: NodeStatus };

/** Where a node shares its newest checkpoint, for members to copy one-sidedly (docs/checkpoints.md). */
export interface SharedCheckpointInfo {
  ts: bigint;
  /** The store holding it, and how it is served: shm (the node's host only), tcp or verbs. */
  store: string;
  transport: 'shm' | 'tcp' | 'verbs';
  address: string | null;
  region: number;
  bytes: number;
  generation: number;
}

/** How the final outcome compares with the optimistic one the client was sent, if any. */
export type OptimisticCheck = 'confirmed' | 'wrong' | 'none';

export type NodeToPre =
  | {
      t: 'config';
      stateUpdate: StateUpdate;
      /** `pull`: the primary's store, its transport, and (tcp, verbs) the address serving it. */
      store: string | null;
      transport: Transport;
      address: string | null;
      /** Whether to read its own results not yet applied (speculation.ts). */
      speculate: boolean;
    }
  /** Transactions to execute: their `tx.v1` bytes, one after another. */
  | { t: 'exec'; txs: Buffer }
  /** The node will not take this member (its app differs); it should stop, saying why. */
  | { t: 'refused'; reason: string }
  /** Load this app version ahead of its upgrade, and answer `loaded`. */
  | { t: 'load'; spec: string; digest: string }
  /** The version `digest` is active: what is handed from here on runs with it. */
  | { t: 'upgrade'; digest: string }
  | { t: 'effects'; effects: Effect[] }
  | { t: 'objects'; objects: PushedObject[] }
  | { t: 'feedback'; feedback: Feedback };
/** What the node sends: effects travel as effects.v1 bytes, decoded by `parseNodeToPre`. */
export type NodeToPreSent = Exclude<NodeToPre, { t: 'effects' }> | { t: 'effects'; effects: Buffer };

export type PreToNode =
  /** results.v1 bytes; the tables in them are checked by the node's intake (node.ts). */
  | { t: 'results'; results: ResultBatch }
  /** The first message of a member: the app it loaded. */
  | { t: 'hello'; app: string; digest: string }
  /** Answer to `load`: the digest of what it loaded, or why it could not. */
  | { t: 'loaded'; digest: string }
  | { t: 'load-failed'; reason: string };

export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

function fail(what: string): never {
  throw new ProtocolError(what);
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;
const isTs = (v: unknown): v is bigint => typeof v === 'bigint' && v >= 0n;

export function parseClientMessage(m: unknown): ClientToNode {
  if (!isObj(m) || m['t'] !== 'submit') fail(`expected a submit message, got ${describe(m)}`);
  // Encoders differ on safe integers: msgpackr writes float64, others uint64 (a bigint here).
  const rawId = m['id'];
  const id = typeof rawId === 'bigint' && rawId >= BigInt(Number.MIN_SAFE_INTEGER) && rawId <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(rawId) : rawId;
  if (typeof id !== 'number' || !Number.isSafeInteger(id)) fail('submit id must be a safe integer');
  if (m['optimistic'] !== undefined && typeof m['optimistic'] !== 'boolean') fail('submit optimistic must be a boolean');
  // The transaction is checked by admission.
  return { t: 'submit', id, tx: m['tx'] as Transaction | Uint8Array, optimistic: m['optimistic'] === true };
}

const isText = (v: unknown, max = 4096): v is string => typeof v === 'string' && v.length <= max;

export function parseAdminMessage(m: unknown): AdminToNode {
  if (isObj(m) && m['t'] === 'upgrade' && isText(m['spec'])) return { t: 'upgrade', spec: m['spec'] };
  if (isObj(m) && m['t'] === 'checkpoint') return { t: 'checkpoint' };
  if (isObj(m) && m['t'] === 'status') return { t: 'status' };
  fail(`expected an upgrade, checkpoint or status request, got ${describe(m)}`);
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** A node's answer to `{ t: 'checkpoint' }`. */
export function parseSharedCheckpoint(m: unknown): SharedCheckpointInfo | null {
  if (!isObj(m) || m['t'] !== 'checkpoint') fail(`expected a checkpoint answer, got ${describe(m)}`);
  const at = m['at'];
  if (at === null) return null;
  if (!isObj(at)) fail('checkpoint answer: "at" must be a map or null');
  const { ts, store, transport, address, region, bytes, generation } = at;
  if (!isTs(ts) || !isText(store, 255) || (transport !== 'shm' && transport !== 'tcp' && transport !== 'verbs'))
    fail('checkpoint answer: bad ts, store or transport');
  if (!(address === null || isText(address, 255)) || !isCount(region) || !isCount(bytes) || !isCount(generation))
    fail('checkpoint answer: bad address, region, bytes or generation');
  return { ts, store, transport, address, region, bytes, generation };
}

export function parseNodeToPre(m: unknown): NodeToPre {
  const txs = isObj(m) ? m['txs'] : undefined;
  if (isObj(m) && m['t'] === 'exec' && isBytes(txs)) return { t: 'exec', txs: asBuffer(txs) };
  if (isObj(m) && m['t'] === 'refused' && isText(m['reason'])) return { t: 'refused', reason: m['reason'] };
  if (isObj(m) && m['t'] === 'load' && isText(m['spec']) && isText(m['digest'], 64)) return { t: 'load', spec: m['spec'], digest: m['digest'] };
  if (isObj(m) && m['t'] === 'upgrade' && isText(m['digest'], 64)) return { t: 'upgrade', digest: m['digest'] };
  const effects = isObj(m) ? m['effects'] : undefined;
  if (isObj(m) && m['t'] === 'effects' && isBytes(effects)) return { t: 'effects', effects: recorded(() => decodeEffects(asBuffer(effects))) };
  if (isObj(m) && m['t'] === 'objects' && Array.isArray(m['objects'])) {
    for (const o of m['objects']) {
      if (!Array.isArray(o) || typeof o[0] !== 'string' || !isTs(o[1]) || !(o[2] === null || isBytes(o[2]))) {
        fail('malformed pushed object');
      }
    }
    return { t: 'objects', objects: m['objects'] as PushedObject[] };
  }
  if (isObj(m) && m['t'] === 'config') {
    const stateUpdate = STATE_UPDATES.find((s) => s === m['stateUpdate']);
    const store = m['store'];
    if (!stateUpdate || !(store === null || typeof store === 'string')) fail('malformed config');
    // Absent fields: a node from before transports and speculation were chosen per cluster.
    const transport = m['transport'] ?? 'shm';
    const address = m['address'] ?? null;
    const speculate = m['speculate'] ?? true;
    if (!isTransport(transport) || !(address === null || typeof address === 'string') || typeof speculate !== 'boolean') {
      fail('malformed config');
    }
    return { t: 'config', stateUpdate, store, transport, address, speculate };
  }
  if (isObj(m) && m['t'] === 'feedback' && isObj(m['feedback'])) {
    const f = m['feedback'];
    const count = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
    if (!count(f['misses']) || !count(f['pushes']) || !Array.isArray(f['hot']) || !f['hot'].every((h) => typeof h === 'string')) {
      fail('malformed feedback');
    }
    return { t: 'feedback', feedback: { misses: f['misses'] as number, pushes: f['pushes'] as number, hot: f['hot'] } };
  }
  fail(`expected config, exec, effects, objects or feedback, got ${describe(m)}`);
}

export function parsePreMessage(m: unknown): PreToNode {
  if (isObj(m) && m['t'] === 'hello' && isText(m['app'], 256) && isText(m['digest'], 64)) return { t: 'hello', app: m['app'], digest: m['digest'] };
  if (isObj(m) && m['t'] === 'loaded' && isText(m['digest'], 64)) return { t: 'loaded', digest: m['digest'] };
  if (isObj(m) && m['t'] === 'load-failed' && isText(m['reason'])) return { t: 'load-failed', reason: m['reason'] };
  const tables = isObj(m) ? m['tables'] : undefined;
  if (!isObj(m) || m['t'] !== 'results' || !isBytes(tables)) fail(`expected hello, results or loaded, got ${describe(m)}`);
  return { t: 'results', results: recorded(() => frameResults(asBuffer(tables))) };
}

const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/** A record batch's framing error is the peer's protocol error. */
function recorded<T>(decode: () => T): T {
  try {
    return decode();
  } catch (e) {
    if (e instanceof RecordError) fail(e.message);
    throw e;
  }
}

function describe(m: unknown): string {
  // `t` is whatever the peer sent: name it without serialising or calling anything on it.
  if (isObj(m)) return `a message of type ${typeof m['t'] === 'string' ? JSON.stringify(m['t'].slice(0, 32)) : typeof m['t']}`;
  return Array.isArray(m) ? 'an array' : typeof m;
}
