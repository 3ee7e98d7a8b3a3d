// The log's cost per sync, with and without zeros written ahead of its records
// (`preallocate`, docs/sequencer.md): appends of one record the size a loaded node writes,
// each awaited before the next, so every append is one write and one fdatasync. CPU is the
// whole process (the log's writer thread included), per append; wall time is from the call to
// the resolve. The two settings run as interleaved pairs in the same process and directory.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { SequencerLog } from '../ts/log.js';

const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/** 64 transactions of 172 bytes: about the 11 KB record a node appends under load. */
const TXS = 64;
const TX_BYTES = 172;

interface Side {
  cpu: number;
  wall: number;
}

async function appendAll(dir: string, preallocate: number, appends: number, first: number): Promise<Side> {
  const log = SequencerLog.open(dir, { preallocate });
  try {
    const walls = new Float64Array(appends);
    const cpu0 = process.cpuUsage();
    for (let a = 0; a < appends; a++) {
      const batch = Array.from({ length: TXS }, (_, i) => {
        const digest = Buffer.alloc(32);
        digest.writeUInt32LE(first + a, 0);
        digest.writeUInt32LE(i, 4);
        return { digest, bytes: Buffer.alloc(TX_BYTES, i) };
      });
      const t0 = performance.now();
      await log.append(batch);
      walls[a] = (performance.now() - t0) * 1000;
    }
    const cpu = process.cpuUsage(cpu0);
    // Building each batch is in the CPU figure too; it is the same on both sides.
    return { cpu: (cpu.user + cpu.system) / appends, wall: median([...walls]) };
  } finally {
    log.close();
  }
}

/** `log_sync_*`: per append of one ~11 KB record, growing the file vs into zeros written ahead. */
export async function benchLogSync(opts: { quick: boolean; dir: string; log: (m: string) => void }): Promise<Record<string, number>> {
  const appends = opts.quick ? 500 : 2000;
  const pairs = 3;
  const grow: Side[] = [];
  const ahead: Side[] = [];
  for (let p = 0; p < pairs; p++) {
    for (const [preallocate, into] of [
      [0, grow],
      [4 << 20, ahead],
    ] as const) {
      const dir = mkdtempSync(join(opts.dir, 'log-sync-'));
      try {
        into.push(await appendAll(dir, preallocate, appends, p * appends));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  const m: Record<string, number> = {
    log_sync_cpu_us_grow: round(median(grow.map((s) => s.cpu))),
    log_sync_cpu_us_ahead: round(median(ahead.map((s) => s.cpu))),
    log_sync_wall_p50_us_grow: round(median(grow.map((s) => s.wall))),
    log_sync_wall_p50_us_ahead: round(median(ahead.map((s) => s.wall))),
  };
  m['log_sync_cpu_ratio'] = round((m['log_sync_cpu_us_grow'] ?? NaN) / (m['log_sync_cpu_us_ahead'] ?? NaN), 2);
  opts.log(
    `log sync, ${appends} appends of ${TXS} × ${TX_BYTES} B, ${pairs} interleaved pairs: CPU ${m['log_sync_cpu_us_grow']} µs growing the file, ${m['log_sync_cpu_us_ahead']} µs into zeros written ahead; wall p50 ${m['log_sync_wall_p50_us_grow']} / ${m['log_sync_wall_p50_us_ahead']} µs`,
  );
  return m;
}
