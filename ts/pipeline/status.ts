// What `remora status` and `GET /ready` say about a running node: one snapshot, built from the
// node's own counters, answered on the admin role and checked field by field by whoever reads
// it (a status from another version of the node must fail loudly, not print half of itself).
import type { EmbeddedNode } from './node.js';

export interface MemberStatus {
  name: string;
  executed: number;
  outstanding: number;
  retiring: boolean;
}

/** An admission process attached to the node (docs/pipeline.md, "Admission processes"). */
export interface AdmissionStatus {
  name: string;
  /** Transactions it forwarded, and of those the ones not answered yet. */
  forwarded: number;
  waiting: number;
}

export interface NodeStatus {
  app: string;
  digest: string;
  /** Serving: caught up with the log since it started, and not failed. */
  ready: boolean;
  /** Why not, when not ready. */
  reason: string | null;
  /** Last timestamp the primary applied, and the last one the log ordered. */
  applied: bigint;
  ordered: bigint;
  /** Ordered but not yet applied. */
  lag: bigint;
  transactions: { applied: number; adopted: number; reexecuted: number; executed: number };
  pool: MemberStatus[];
  admissions: AdmissionStatus[];
  uptimeSeconds: number;
}

/** What the node does not know itself: the log's end and whether it has caught up. */
export interface StatusSource {
  ordered(): bigint;
  readiness(): { ready: boolean; reason: string | null };
  startedAt: number;
}

export function nodeStatus(node: EmbeddedNode, source: StatusSource): NodeStatus {
  const applied = node.lastApplied;
  const ordered = source.ordered();
  const s = node.stats;
  const { ready, reason } = source.readiness();
  return {
    app: node.versions.active.app.name,
    digest: node.versions.active.digest,
    ready,
    reason,
    applied,
    ordered,
    lag: ordered > applied ? ordered - applied : 0n,
    transactions: { applied: s.applied, adopted: s.adopted, reexecuted: s.reexecuted, executed: s.executed },
    pool: node.poolStats().map((m) => ({ name: m.name, executed: m.executed, outstanding: m.outstanding, retiring: m.retiring })),
    admissions: [...node.admissions].map(([name, a]) => ({ name, forwarded: a.forwarded, waiting: a.waiting })),
    uptimeSeconds: Math.round((performance.now() - source.startedAt) / 100) / 10,
  };
}

export class StatusError extends Error {
  override name = 'StatusError';
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const count = (v: unknown, what: string): number => {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new StatusError(`status: ${what} must be a count, got ${String(v)}`);
  return v;
};
const ts = (v: unknown, what: string): bigint => {
  // Encoders differ: a small timestamp may arrive as a number.
  const b = typeof v === 'number' && Number.isSafeInteger(v) ? BigInt(v) : v;
  if (typeof b !== 'bigint' || b < 0n) throw new StatusError(`status: ${what} must be a timestamp, got ${String(v)}`);
  return b;
};
const text = (v: unknown, what: string): string => {
  if (typeof v !== 'string' || v.length > 4096) throw new StatusError(`status: ${what} must be a string`);
  return v;
};

/** A node's status as received: every field checked. */
export function parseNodeStatus(v: unknown): NodeStatus {
  if (!isObj(v)) throw new StatusError('status: expected an object');
  const t = v['transactions'];
  if (!isObj(t)) throw new StatusError('status: transactions missing');
  const pool = v['pool'];
  if (!Array.isArray(pool)) throw new StatusError('status: pool must be a list');
  // Absent from a node older than admission processes: it has none.
  const admissions = v['admissions'] ?? [];
  if (!Array.isArray(admissions)) throw new StatusError('status: admissions must be a list');
  const uptime = v['uptimeSeconds'];
  if (typeof uptime !== 'number' || !(uptime >= 0)) throw new StatusError('status: uptimeSeconds must be a number');
  if (typeof v['ready'] !== 'boolean') throw new StatusError('status: ready must be a boolean');
  const reason = v['reason'];
  return {
    app: text(v['app'], 'app'),
    digest: text(v['digest'], 'digest'),
    ready: v['ready'],
    reason: reason === null ? null : text(reason, 'reason'),
    applied: ts(v['applied'], 'applied'),
    ordered: ts(v['ordered'], 'ordered'),
    lag: ts(v['lag'], 'lag'),
    transactions: {
      applied: count(t['applied'], 'transactions.applied'),
      adopted: count(t['adopted'], 'transactions.adopted'),
      reexecuted: count(t['reexecuted'], 'transactions.reexecuted'),
      executed: count(t['executed'], 'transactions.executed'),
    },
    pool: pool.map((m, i) => {
      if (!isObj(m) || typeof m['retiring'] !== 'boolean') throw new StatusError(`status: pool[${i}] is not a member`);
      return {
        name: text(m['name'], `pool[${i}].name`),
        executed: count(m['executed'], `pool[${i}].executed`),
        outstanding: count(m['outstanding'], `pool[${i}].outstanding`),
        retiring: m['retiring'],
      };
    }),
    admissions: admissions.map((a, i) => {
      if (!isObj(a)) throw new StatusError(`status: admissions[${i}] is not an admission process`);
      return {
        name: text(a['name'], `admissions[${i}].name`),
        forwarded: count(a['forwarded'], `admissions[${i}].forwarded`),
        waiting: count(a['waiting'], `admissions[${i}].waiting`),
      };
    }),
    uptimeSeconds: uptime,
  };
}

const share = (n: number, of: number) => (of === 0 ? '-' : `${((100 * n) / of).toFixed(1)} %`);

/** The text `remora status` prints. */
export function formatStatus(s: NodeStatus): string {
  const t = s.transactions;
  const lines = [
    `node: ${s.ready ? 'ready' : `not ready (${s.reason ?? 'unknown'})`}, up ${s.uptimeSeconds} s, app ${s.app} ${s.digest.slice(0, 12)}`,
    `log: applied ${s.applied} of ${s.ordered} ordered (lag ${s.lag})`,
    `transactions: ${t.applied} applied since start: ${share(t.adopted, t.applied)} adopted, ${share(t.reexecuted, t.applied)} re-executed, ${share(t.executed, t.applied)} executed by the primary`,
    `pool: ${s.pool.length} pre-executor${s.pool.length === 1 ? '' : 's'}`,
    ...s.pool.map((m) => `  ${m.name}: ${m.executed} executed, ${m.outstanding} outstanding${m.retiring ? ', retiring' : ''}`),
    ...(s.admissions.length === 0
      ? []
      : [
          `admission: ${s.admissions.length} process${s.admissions.length === 1 ? '' : 'es'}`,
          ...s.admissions.map((a) => `  ${a.name}: ${a.forwarded} forwarded, ${a.waiting} waiting for the node`),
        ]),
  ];
  return `${lines.join('\n')}\n`;
}
