// CPU time of another process, from /proc/<pid>/stat (Linux): how the benches charge each
// pre-executor and load generator for its own work.
import { readFileSync } from 'node:fs';

/** Clock ticks per second of /proc's utime and stime: 100 on every Linux this runs on. */
const TICKS = 100;

/** CPU seconds (user + system) process `pid` has used, or NaN if it cannot be read. */
export function processCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS;
  } catch {
    return NaN;
  }
}
