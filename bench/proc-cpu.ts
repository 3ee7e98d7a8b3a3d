// CPU time of another process, from /proc/<pid>/stat (Linux): how the benches charge each
// pre-executor and load generator for its own work.
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc's utime and stime: 100 on every Linux this runs on. */
const TICKS = 100;

/** CPU seconds (user + system) process `pid` has used, or NaN if it cannot be read. */
export function processCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    return readStat(`/proc/${pid}/stat`).seconds;
  } catch {
    return NaN;
  }
}

/** A process's or thread's name and CPU seconds from its `stat` file; throws if unreadable. */
function readStat(path: string): { name: string; seconds: number } {
  const stat = readFileSync(path, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: count from its closing one.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), seconds: (Number(fields[11]) + Number(fields[12])) / TICKS };
}

/**
 * CPU seconds of each thread of this process by thread id, with its name: how `bench scale`
 * splits the node's CPU between its JavaScript thread, the runtime's helpers (the collector's
 * and compiler's, unnamed) and the core's named threads. Empty where /proc cannot be read.
 */
export function ownThreadsCpuSeconds(): Map<number, { name: string; seconds: number }> {
  const out = new Map<number, { name: string; seconds: number }>();
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      out.set(Number(tid), readStat(`/proc/self/task/${tid}/stat`));
    } catch {
      // The thread ended between the listing and the read: its time is not counted.
    }
  }
  return out;
}

/**
 * Microseconds per transaction by kind of thread between two readings: `main` (the
 * JavaScript thread), `runtime helpers` (every unnamed thread: V8's collector and compiler
 * workers, libuv's pool) and each named thread (the core's, e.g. the log's writer).
 */
export function threadsUsPerTx(
  before: Map<number, { name: string; seconds: number }>,
  after: Map<number, { name: string; seconds: number }>,
  txs: number,
): Record<string, number> {
  const out: Record<string, number> = {};
  // Threads the runtime starts keep the process's name; the core names its own.
  const unnamed = after.get(process.pid)?.name;
  for (const [tid, { name, seconds }] of after) {
    const kind = tid === process.pid ? 'main' : name === unnamed ? 'runtime helpers' : name;
    out[kind] = (out[kind] ?? 0) + seconds - (before.get(tid)?.seconds ?? 0);
  }
  for (const k of Object.keys(out)) out[k] = Math.round((((out[k] ?? 0) * 1e6) / Math.max(1, txs)) * 100) / 100;
  return out;
}
