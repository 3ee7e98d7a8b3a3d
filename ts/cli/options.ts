// Command-line option parsing shared by the commands and the roles. Every option is checked
// before a role starts serving, so a mistake is a UsageError rather than a failed start.
import { DEFAULT_POLICY, POLICIES, type Policy } from '../pipeline/scheduler.js';
import { STATE_UPDATES, type StateUpdate } from '../pipeline/state-update.js';
import { parseHostPort, TRANSPORTS, type Transport } from '../transport.js';
import { ConfigError, UsageError } from './errors.js';

export { ConfigError, UsageError };

export function intOption(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got '${raw}'`);
  }
  return n;
}

export function seedOption(raw: string | undefined): bigint | undefined {
  if (raw === undefined) return undefined;
  try {
    const n = BigInt(raw);
    if (n >= 0n && n < 1n << 64n) return n;
  } catch {
    // Not an integer: reported below.
  }
  throw new UsageError(`--seed must be an unsigned 64-bit integer, got '${raw}'`);
}

/** `--metrics-port`: undefined when absent (no endpoint), 0 for any free port. */
export const metricsPortOption = (raw: string | undefined): number | undefined =>
  raw === undefined ? undefined : intOption(raw, 'metrics-port', 0, 0, 65_535);

export function required(raw: string | undefined, name: string): string {
  if (raw === undefined) throw new UsageError(`--${name} is required`);
  return raw;
}

/** `--policy`: one of the scheduler's policies (default: the scheduler's). */
export function policyOption(raw: string | undefined): Policy {
  if (raw === undefined) return DEFAULT_POLICY;
  const policy = POLICIES.find((p) => p === raw);
  if (!policy) throw new UsageError(`--policy must be one of ${POLICIES.join(', ')}, got '${raw}'`);
  return policy;
}

/** `--state-update`: how pre-executors' copies follow the primary (default `broadcast`). */
export function stateUpdateOption(raw: string | undefined): StateUpdate {
  if (raw === undefined) return 'broadcast';
  const mode = STATE_UPDATES.find((m) => m === raw);
  if (!mode) throw new UsageError(`--state-update must be one of ${STATE_UPDATES.join(', ')}, got '${raw}'`);
  return mode;
}

/** `--transport`: how pulling pre-executors read the primary's store (default `shm`). */
export function transportOption(raw: string | undefined): Transport {
  if (raw === undefined) return 'shm';
  const t = TRANSPORTS.find((m) => m === raw);
  if (!t) throw new UsageError(`--transport must be one of ${TRANSPORTS.join(', ')}, got '${raw}'`);
  return t;
}

/** `--app`: the name of a built-in app, checked here so a typo is a usage error. */
/** `--app SPEC`: a built-in app, a path or a package; whether it loads is found when it is loaded. */
export function appOption(raw: string | undefined): string {
  const spec = required(raw, 'app');
  if (spec.trim() === '') throw new UsageError('--app must name a built-in app (bank, kv), a module path or a package');
  return spec;
}

/** `--listen HOST:PORT`, checked here so a typo is a usage error. */
export function listenOption(raw: string): string {
  if (parseHostPort(raw) === null) throw new UsageError(`--listen must be HOST:PORT, got '${raw}'`);
  return raw;
}
