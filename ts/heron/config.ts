// A Heron cluster described in a JSON file (`remora start heron --config FILE`). Validated
// whole before anything starts, so a typo is an error naming the key, not a silent default.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { builtinApps } from '../apps/index.js';
import type { HeronOptions } from './cluster.js';
import { ORDERINGS } from './messages.js';
import { TRANSPORTS } from '../transport.js';

/** Everything a cluster file may say; the directory is given where the cluster starts. */
export type HeronConfig = Omit<HeronOptions, 'dir' | 'log'>;

/** `"sequencer"` in a cluster file: a JetStream stream to order on, instead of the embedded log. */
interface SequencerEntry {
  servers: string[];
  stream?: string;
  tokenFile?: string;
}

/** A cluster file that cannot be used; the message names the file and what is wrong. */
export class HeronConfigError extends Error {}

interface IntKey {
  kind: 'int';
  min: number;
  max: number;
}

const KEYS: Record<string, { required: boolean; type: 'app' | 'boolean' | 'ordering' | 'sequencer' | 'transport' | IntKey }> = {
  app: { required: true, type: 'app' },
  partitions: { required: true, type: { kind: 'int', min: 1, max: 1024 } },
  replicas: { required: true, type: { kind: 'int', min: 1, max: 31 } },
  preExecution: { required: false, type: 'boolean' },
  preExecutors: { required: false, type: { kind: 'int', min: 0, max: 16 } },
  graceMs: { required: false, type: { kind: 'int', min: 0, max: 60_000 } },
  transferBytes: { required: false, type: { kind: 'int', min: 2, max: 1 << 30 } },
  ordering: { required: false, type: 'ordering' },
  ringBytes: { required: false, type: { kind: 'int', min: 4096, max: 1 << 30 } },
  sequencer: { required: false, type: 'sequencer' },
  restartReplicas: { required: false, type: 'boolean' },
  remoteCacheEntries: { required: false, type: { kind: 'int', min: 0, max: 1 << 20 } },
  transport: { required: false, type: 'transport' },
};

/** Most replicas per partition (f = 3). */
export const MAX_REPLICAS = 7;
/** Most replica processes (partitions × replicas) one cluster may start. */
export const MAX_REPLICA_PROCESSES = 64;

/** What is wrong with a cluster's size, and what merely deserves a warning. */
export interface SizeCheck {
  /** One line per problem, each naming its key and the fix; the cluster must not start. */
  errors: string[];
  warnings: string[];
}

/**
 * The sizes a cluster of 2f+1 replicas per partition, all on this host, can use. Shared by
 * cluster files and `HeronCluster.start`, so code and files accept exactly the same clusters.
 */
export function checkClusterSize(partitions: number, replicas: number): SizeCheck {
  const errors: string[] = [];
  const warnings: string[] = [];
  if (replicas > MAX_REPLICAS) {
    // Independent failures are what replication buys; replicas sharing one host do not fail
    // independently, so past f = 3 more of them only cost.
    errors.push(
      `"replicas" is ${replicas}, over the limit of ${MAX_REPLICAS}: all replicas run on this one host, so more than ${MAX_REPLICAS} (f=${(MAX_REPLICAS - 1) / 2}) add processes and coordination writes, not tolerance of independent failures; use 3, 5 or 7`,
    );
  } else if (replicas % 2 === 0) {
    // A majority of 2f+2 is f+2: the extra replica is waited for and tolerates nothing more.
    errors.push(`"replicas" is ${replicas}: ${replicas} replicas tolerate no more crashes than ${replicas - 1}; use ${replicas + 1} (f=${replicas / 2})`);
  }
  if (partitions * replicas > MAX_REPLICA_PROCESSES) {
    errors.push(
      `"partitions" × "replicas" is ${partitions} × ${replicas} = ${partitions * replicas} replica processes, over the limit of ${MAX_REPLICA_PROCESSES}: every replica is its own process on this host (a Node runtime, a store, a coordination wait on its own thread); lower "partitions" or "replicas"`,
    );
  }
  if (replicas === 1) {
    warnings.push(
      'heron: WARNING: 1 replica per partition tolerates no crash: if a replica process dies, its partition stops; use 3 replicas (f=1) to survive one crash',
    );
  }
  return { errors, warnings };
}

/**
 * Parses and validates a cluster file's text; `source` names it in errors. A size that only
 * deserves a warning (one replica) is accepted: `HeronCluster.start` prints the warning.
 */
export function parseHeronConfig(text: string, source: string): HeronConfig {
  const fail = (why: string): never => {
    throw new HeronConfigError(`${source}: ${why}`);
  };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    fail(`not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail('expected a JSON object');
  const obj = raw as Record<string, unknown>;
  const known = Object.keys(KEYS);
  const unknown = Object.keys(obj).filter((k) => !Object.hasOwn(KEYS, k));
  if (unknown.length > 0) fail(`unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')} (known: ${known.join(', ')})`);
  for (const [key, spec] of Object.entries(KEYS)) {
    const v = obj[key];
    if (v === undefined) {
      if (spec.required) fail(`"${key}" is required`);
      continue;
    }
    const t = spec.type;
    if (t === 'app') {
      if (typeof v !== 'string' || v.trim() === '') {
        fail(`"app" must be a built-in app (${Object.keys(builtinApps).join(', ')}), a module path or a package, got ${JSON.stringify(v)}`);
      }
    } else if (t === 'ordering') {
      if (!ORDERINGS.some((o) => o === v)) fail(`"ordering" must be ${ORDERINGS.map((o) => JSON.stringify(o)).join(' or ')}, got ${JSON.stringify(v)}`);
    } else if (t === 'transport') {
      if (!TRANSPORTS.some((o) => o === v)) fail(`"transport" must be ${TRANSPORTS.map((o) => JSON.stringify(o)).join(', ')}, got ${JSON.stringify(v)}`);
    } else if (t === 'sequencer') {
      const why = sequencerProblem(v);
      if (why !== null) fail(`"sequencer" ${why}`);
    } else if (t === 'boolean') {
      if (typeof v !== 'boolean') fail(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
    } else if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < t.min || v > t.max) {
      fail(`"${key}" must be an integer from ${t.min} to ${t.max}, got ${JSON.stringify(v)}`);
    }
  }
  const { sequencer, ...rest } = obj as unknown as Omit<HeronConfig, 'sequencer'> & { sequencer?: SequencerEntry };
  const config: HeronConfig = { ...rest, ...(sequencer && { sequencer: { kind: 'jetstream' as const, ...sequencer } }) };
  if (sequencer && config.ordering === 'memory') fail('"ordering": "memory" orders in the launcher, so it cannot be used with "sequencer"');
  const size = checkClusterSize(config.partitions, config.replicas);
  if (size.errors.length > 0) fail(size.errors.join('; '));
  return config;
}

/** Why `v` is not a `"sequencer"` entry, or null. */
function sequencerProblem(v: unknown): string | null {
  const shape = 'must be {"servers": ["nats://HOST:PORT", ...], "stream"?: NAME, "tokenFile"?: FILE}';
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return shape;
  const e = v as Record<string, unknown>;
  const extra = Object.keys(e).filter((k) => !['servers', 'stream', 'tokenFile'].includes(k));
  if (extra.length > 0) return `has unknown keys ${extra.map((k) => JSON.stringify(k)).join(', ')}: it ${shape}`;
  const servers = e['servers'];
  if (!Array.isArray(servers) || servers.length === 0 || !servers.every((u) => typeof u === 'string' && /^(nats|tls):\/\/[^\s/@]+:\d{1,5}$/.test(u))) {
    return `"servers" must be a non-empty list of nats://HOST:PORT URLs, got ${JSON.stringify(servers)}`;
  }
  if (e['stream'] !== undefined && (typeof e['stream'] !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(e['stream'])))
    return `"stream" must be 1 to 64 letters, digits, '-' or '_', got ${JSON.stringify(e['stream'])}`;
  if (e['tokenFile'] !== undefined && (typeof e['tokenFile'] !== 'string' || e['tokenFile'] === ''))
    return `"tokenFile" must be a file name, got ${JSON.stringify(e['tokenFile'])}`;
  return null;
}

/** Reads and validates a cluster file. */
export function readHeronConfig(path: string): HeronConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new HeronConfigError(`${path}: cannot read the cluster file (${e instanceof Error ? e.message : String(e)})`);
  }
  const config = parseHeronConfig(text, path);
  // A path in a cluster file means a path from the file, wherever the cluster starts.
  const fromFile = (p: string) => resolve(dirname(path), p);
  const seq = config.sequencer;
  return {
    ...config,
    ...(config.app.startsWith('.') && { app: fromFile(config.app) }),
    ...(seq?.kind === 'jetstream' && seq.tokenFile !== undefined && { sequencer: { ...seq, tokenFile: fromFile(seq.tokenFile) } }),
  };
}
