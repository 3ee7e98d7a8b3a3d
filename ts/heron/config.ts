// A Heron cluster described in a JSON file (`remora start heron --config FILE`). Validated
// whole before anything starts, so a typo is an error naming the key, not a silent default.
import { readFileSync } from 'node:fs';
import { builtinApps } from '../apps/index.js';
import type { HeronOptions } from './cluster.js';

/** Everything a cluster file may say; the directory is given where the cluster starts. */
export type HeronConfig = Omit<HeronOptions, 'dir' | 'log'>;

/** A cluster file that cannot be used; the message names the file and what is wrong. */
export class HeronConfigError extends Error {}

interface IntKey {
  kind: 'int';
  min: number;
  max: number;
}

const KEYS: Record<string, { required: boolean; type: 'app' | 'boolean' | IntKey }> = {
  app: { required: true, type: 'app' },
  partitions: { required: true, type: { kind: 'int', min: 1, max: 1024 } },
  replicas: { required: true, type: { kind: 'int', min: 1, max: 31 } },
  preExecution: { required: false, type: 'boolean' },
  graceMs: { required: false, type: { kind: 'int', min: 0, max: 60_000 } },
  transferBytes: { required: false, type: { kind: 'int', min: 1, max: 1 << 30 } },
};

/** Parses and validates a cluster file's text; `source` names it in errors. */
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
      if (typeof v !== 'string' || !Object.hasOwn(builtinApps, v)) {
        fail(`"app" must be one of ${Object.keys(builtinApps).join(', ')}, got ${JSON.stringify(v)}`);
      }
    } else if (t === 'boolean') {
      if (typeof v !== 'boolean') fail(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
    } else if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < t.min || v > t.max) {
      fail(`"${key}" must be an integer from ${t.min} to ${t.max}, got ${JSON.stringify(v)}`);
    }
  }
  return obj as unknown as HeronConfig;
}

/** Reads and validates a cluster file. */
export function readHeronConfig(path: string): HeronConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new HeronConfigError(`${path}: cannot read the cluster file (${e instanceof Error ? e.message : String(e)})`);
  }
  return parseHeronConfig(text, path);
}
