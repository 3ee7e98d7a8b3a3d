// The checks that turn a Heron peer's frames into messages: what replicas tell the launcher,
// what the launcher delivers to a replica, and the lookup tables either carries. Every field is
// checked before anything acts on it; a frame that fails is a protocol error, and the connection
// that sent it is closed (`guarded`) while the process keeps serving everyone else.
import { decode, type Data } from '../app/codec.js';
import type { LookupTable, Outcome } from '../app/exec.js';
import type { Write } from '../app/state.js';
import { decodeTx, LIMITS } from '../app/tx.js';
import { ProtocolError } from '../pipeline/messages.js';
import type { Conn } from '../wire.js';
import { parseHostPort } from '../transport.js';
import {
  DECISIONS,
  encodeOutcome,
  keptOutcome,
  REPLICA_ROLE,
  REPLY_HEADER_BYTES,
  REPLY_LAYOUT,
  TIMING_FIELDS,
  type Delivered,
  type OutcomeReceived,
  type Received,
  type Timing,
  type ToReplica,
} from './messages.js';

export { ProtocolError };

/** Most partitions and replicas a cluster may have (HeronCluster.start checks the same). */
const MAX_PARTITIONS = 1024;
const MAX_REPLICAS = 31;
/** Nesting an outcome's result may have: the codec's own limit. */
const MAX_DEPTH = 64;

function fail(what: string): never {
  throw new ProtocolError(what);
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;
const isTs = (v: unknown): v is bigint => typeof v === 'bigint' && v >= 0n;
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isMicros = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const isText = (v: unknown, max: number): v is string => typeof v === 'string' && v.length <= max;
const isId = (v: unknown): v is string => isText(v, LIMITS.idBytes);
const isHexDigest = (v: unknown): v is string => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
const isAddress = (v: unknown): v is string => isText(v, 300) && parseHostPort(v) !== null;

/** What the peer sent, named without serialising it or calling anything on it. */
function describe(m: unknown): string {
  if (isObj(m)) return `a message of type ${typeof m['t'] === 'string' ? JSON.stringify(m['t'].slice(0, 32)) : typeof m['t']}`;
  if (m instanceof Uint8Array) return 'bytes';
  return Array.isArray(m) ? 'an array' : typeof m;
}

/** Whether `v` is a value the codec encodes: what an outcome's result may be. */
function isData(v: unknown, depth = 0): v is Data {
  if (depth > MAX_DEPTH) return false;
  if (v === null || typeof v === 'boolean' || typeof v === 'bigint' || typeof v === 'string' || v instanceof Uint8Array) return true;
  if (typeof v === 'number') return Number.isFinite(v);
  if (Array.isArray(v)) return v.every((x) => isData(x, depth + 1));
  if (typeof v !== 'object') return false;
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return false;
  return Object.values(v).every((x) => isData(x, depth + 1));
}

function parseOutcome(v: unknown, where: string): Outcome {
  if (isObj(v) && v['status'] === 'ok' && 'result' in v && isData(v['result'])) return { status: 'ok', result: v['result'] };
  if (isObj(v) && v['status'] === 'aborted' && isText(v['reason'], 64 * 1024)) return { status: 'aborted', reason: v['reason'] };
  fail(`${where}: outcome must be { status: 'ok', result } with an encodable result, or { status: 'aborted', reason }`);
}

const tuples = (v: unknown, ok: (t: unknown[]) => boolean): boolean => Array.isArray(v) && v.every((t) => Array.isArray(t) && ok(t));
const isValue = (v: unknown): v is Uint8Array | null => v === null || isBytes(v);

function parseWrites(v: unknown, where: string): Write[] {
  if (!tuples(v, (t) => t.length === 2 && isId(t[0]) && isValue(t[1]))) fail(`${where}: writes must be [id, bytes | null] pairs`);
  return v as Write[];
}

/** A pre-executor's table as a delivery carries it (msgpack: the ring's payload or a socket frame). */
export function parseTable(v: unknown, where = 'lookup table'): LookupTable {
  if (!isObj(v)) fail(`${where} must be a map, got ${describe(v)}`);
  const { reads, dynamic, speculative, auth, precompiles } = v;
  if (!tuples(reads, (t) => t.length === 2 && isId(t[0]) && isTs(t[1]))) fail(`${where}: reads must be [id, version] pairs`);
  if (!tuples(dynamic, (t) => t.length === 3 && isId(t[0]) && isTs(t[1]) && isValue(t[2])))
    fail(`${where}: dynamic must be [id, version, bytes | null] triples`);
  if (!tuples(speculative, (t) => t.length === 2 && isId(t[0]) && isValue(t[1]))) fail(`${where}: speculative must be [id, bytes | null] pairs`);
  const writes = parseWrites(v['writes'], where);
  if (!Array.isArray(auth) || !auth.every((a) => a === null || typeof a === 'boolean')) fail(`${where}: auth must be booleans or nulls`);
  if (!tuples(precompiles, (t) => t.length === 2 && isText(t[0], 128) && isBytes(t[1]))) fail(`${where}: precompiles must be [input digest, bytes] pairs`);
  return {
    reads: reads as LookupTable['reads'],
    dynamic: dynamic as LookupTable['dynamic'],
    speculative: speculative as LookupTable['speculative'],
    writes,
    auth: auth as LookupTable['auth'],
    precompiles: precompiles as LookupTable['precompiles'],
    outcome: parseOutcome(v['outcome'], where),
  };
}

function parseTiming(v: unknown): Timing {
  if (!isObj(v)) fail('outcome: timing must be a map');
  const out: Timing = { phase2: 0, execute: 0, phase4: 0, delayed: 0, graceWaits: 0, graceMicros: 0 };
  for (const k of ['phase2', 'execute', 'phase4', 'graceMicros'] as const) {
    const x = v[k];
    if (!isMicros(x)) fail(`outcome: timing.${k} must be a non-negative number`);
    out[k] = x;
  }
  for (const k of ['delayed', 'graceWaits'] as const) {
    const x = v[k];
    if (!isCount(x)) fail(`outcome: timing.${k} must be a count`);
    out[k] = x;
  }
  for (const k of ['arrived', 'sent'] as const) {
    const x = v[k];
    if (x === undefined) continue;
    if (!isMicros(x)) fail(`outcome: timing.${k} must be a non-negative number`);
    out[k] = x;
  }
  return out;
}

/** The sender's place, which every replica message names. */
function place(m: Obj, what: string): { partition: number; replica: number } {
  const { partition, replica } = m;
  if (!isCount(partition) || partition >= MAX_PARTITIONS || !isCount(replica) || replica >= MAX_REPLICAS) {
    fail(`${what}: partition and replica must be counts below ${MAX_PARTITIONS} and ${MAX_REPLICAS}`);
  }
  return { partition, replica };
}

/**
 * An outcome's canonical bytes as a reply record carries them, checked: what a map-form reply's
 * `outcome` must be.
 */
export function parseOutcomeBytes(bytes: Uint8Array): Outcome {
  // Most replies carry one of the outcomes kept encoded: no decoding to tell which.
  const kept = keptOutcome(bytes);
  if (kept !== undefined) return kept;
  let v: unknown;
  try {
    v = decode(bytes);
  } catch (e) {
    fail(`outcome record: the outcome does not decode: ${e instanceof Error ? e.message : String(e)}`);
  }
  return parseOutcome(v, 'outcome record');
}

/**
 * A reply record (messages.ts, `encodeReplyRecord`): every header field is checked here; the
 * outcome's bytes when the launcher first needs them (`parseOutcomeBytes`), which is for every
 * reply whose bytes are not those of one already checked.
 */
function parseReplyRecord(b: Uint8Array): OutcomeReceived {
  if (b.length <= REPLY_HEADER_BYTES) fail(`outcome record: ${b.length} bytes, expected a ${REPLY_HEADER_BYTES}-byte header and an outcome`);
  if (b[0] !== REPLY_LAYOUT) fail(`outcome record: layout ${b[0]}, expected ${REPLY_LAYOUT}`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const decision = DECISIONS[b[1] ?? DECISIONS.length];
  if (decision === undefined) fail(`outcome record: decision ${b[1]} is not one of 0..${DECISIONS.length - 1} (${DECISIONS.join(', ')})`);
  const partition = v.getUint16(2, true);
  const replica = v.getUint16(4, true);
  if (partition >= MAX_PARTITIONS || replica >= MAX_REPLICAS)
    fail(`outcome record: partition and replica must be counts below ${MAX_PARTITIONS} and ${MAX_REPLICAS}`);
  const flags = v.getUint16(6, true);
  if (flags > 3) fail(`outcome record: flags ${flags} has bits other than arrived (1) and sent (2)`);
  const timing: Timing = { phase2: 0, execute: 0, phase4: 0, delayed: 0, graceWaits: 0, graceMicros: 0 };
  for (let i = 0; i < TIMING_FIELDS.length; i++) {
    const k = TIMING_FIELDS[i];
    if (k === undefined) continue;
    const x = v.getFloat64(16 + 8 * i, true);
    if (k === 'arrived' || k === 'sent') {
      if ((flags & (k === 'arrived' ? 1 : 2)) === 0) continue;
    }
    if (k === 'delayed' || k === 'graceWaits' ? !isCount(x) : !isMicros(x))
      fail(`outcome record: timing.${k} must be a non-negative ${k === 'delayed' || k === 'graceWaits' ? 'count' : 'number'}`);
    timing[k] = x;
  }
  return { t: 'outcome', ts: v.getBigUint64(8, true), bytes: b.subarray(REPLY_HEADER_BYTES), partition, replica, timing, decision };
}

/** A replica's message to the launcher: a reply record, or a map. */
export function parseFromReplica(m: unknown): Received {
  if (m instanceof Uint8Array) return parseReplyRecord(m);
  if (!isObj(m)) fail(`expected a replica message, got ${describe(m)}`);
  switch (m['t']) {
    case 'hello': {
      const at = place(m, 'hello');
      if (!isHexDigest(m['digest'])) fail('hello: digest must be 64 hex digits');
      const address = m['address'];
      if (address !== undefined && !isAddress(address)) fail('hello: address must be host:port');
      return { t: 'hello', ...at, digest: m['digest'], ...(address !== undefined && { address }) };
    }
    case 'outcome': {
      const at = place(m, 'outcome');
      if (!isTs(m['ts'])) fail('outcome: ts must be a non-negative 64-bit integer');
      const decision = DECISIONS.find((d) => d === m['decision']);
      if (decision === undefined) fail(`outcome: decision must be one of ${DECISIONS.join(', ')}`);
      const outcome = parseOutcome(m['outcome'], 'outcome');
      const msg: OutcomeReceived = { t: 'outcome', ts: m['ts'], bytes: encodeOutcome(outcome), outcome, ...at, timing: parseTiming(m['timing']), decision };
      if (m['writes'] !== undefined) msg.writes = parseWrites(m['writes'], 'outcome');
      return msg;
    }
    case 'digest': {
      const at = place(m, 'digest');
      if (!isCount(m['applied']) || !isTs(m['ts']) || !isHexDigest(m['digest']))
        fail('digest: applied must be a count, ts a 64-bit integer, digest 64 hex digits');
      return { t: 'digest', ...at, applied: m['applied'], ts: m['ts'], digest: m['digest'] };
    }
    case 'transferred': {
      const at = place(m, 'transferred');
      const { from, since, ts, objects, bytes, micros, nativeMicros } = m;
      if (
        !isCount(from) ||
        from >= MAX_REPLICAS ||
        !isTs(since) ||
        !isTs(ts) ||
        !isCount(objects) ||
        !isCount(bytes) ||
        !isMicros(micros) ||
        !isMicros(nativeMicros)
      ) {
        fail('transferred: from must be a replica, since and ts 64-bit integers, objects, bytes, micros and nativeMicros counts');
      }
      return { t: 'transferred', ...at, from, since, ts, objects, bytes, micros, nativeMicros };
    }
    default:
      fail(`expected hello, outcome, digest or transferred, got ${describe(m)}`);
  }
}

/** One delivery over the socket; its transaction is decoded here, once. */
function parseDelivered(v: unknown, i: number): Delivered {
  const where = `deliver: transaction ${i}`;
  if (!isObj(v)) fail(`${where} must be a map`);
  const { ts, body, auth, dest } = v;
  if (!isTs(ts)) fail(`${where}: ts must be a non-negative 64-bit integer`);
  if (!Array.isArray(dest) || dest.length === 0 || dest.length > MAX_PARTITIONS || !dest.every((h) => isCount(h) && h < MAX_PARTITIONS)) {
    fail(`${where}: dest must be partition numbers`);
  }
  let tx;
  try {
    tx = decodeTx({ body, auth });
  } catch (e) {
    fail(`${where} (ts ${ts}) does not decode: ${e instanceof Error ? e.message : String(e)}`);
  }
  const d: Delivered = { ts, body: tx.body, auth: tx.auth, dest: dest as number[], tx };
  if (v['table'] !== undefined) d.table = parseTable(v['table'], `${where}: table`);
  return d;
}

/** The launcher's message to a replica. */
export function parseToReplica(m: unknown): ToReplica {
  if (isObj(m) && m['t'] === 'peers') {
    const { addresses, ring, rejoined } = m;
    if (addresses !== null && !(Array.isArray(addresses) && addresses.length <= MAX_PARTITIONS * MAX_REPLICAS && addresses.every(isAddress))) {
      fail('peers: addresses must be null or a list of host:port');
    }
    if (ring !== null && !isAddress(ring)) fail('peers: ring must be null or host:port');
    if (rejoined !== null && !(isCount(rejoined) && rejoined < MAX_PARTITIONS * MAX_REPLICAS)) fail('peers: rejoined must be null or an entry index');
    return { t: 'peers', addresses, ring, rejoined };
  }
  if (!isObj(m) || m['t'] !== 'deliver') fail(`expected a deliver or peers message, got ${describe(m)}`);
  const txs = m['txs'];
  if (!Array.isArray(txs)) fail('deliver: txs must be an array');
  return { t: 'deliver', txs: txs.map(parseDelivered) };
}

/** The place a replica's role names (`heron-replica:<partition>.<replica>`), inside the cluster's size. */
export function replicaOfRole(role: string, partitions: number, replicas: number): { partition: number; replica: number } {
  const m = /^(\d{1,4})\.(\d{1,2})$/.exec(role.startsWith(`${REPLICA_ROLE}:`) ? role.slice(REPLICA_ROLE.length + 1) : '');
  const partition = Number(m?.[1] ?? NaN);
  const replica = Number(m?.[2] ?? NaN);
  if (!(partition < partitions) || !(replica < replicas)) {
    fail(`role ${JSON.stringify(role.slice(0, 64))} names no replica of this cluster of ${partitions} × ${replicas}`);
  }
  return { partition, replica };
}

/**
 * Hands each frame to `handle` checked; a frame that fails (a protocol error, or anything else
 * `handle` throws) closes the connection with the reason logged, and changes nothing else.
 */
export function guarded(conn: Conn, log: (m: string) => void, what: string, handle: (m: unknown) => void): (m: unknown) => void {
  return (m) => {
    try {
      handle(m);
    } catch (e) {
      log(`${what} at ${conn.peer}: ${e instanceof Error ? e.message : String(e)}; closing the connection`);
      conn.close();
    }
  };
}
