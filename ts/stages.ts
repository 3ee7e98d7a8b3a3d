// Where a process's CPU goes, by stage of the pipeline. The node's JavaScript runs on one
// thread, so the time between entering a stage and leaving it (minus the stages nested in it)
// is that thread's work for the stage. What no stage covers — garbage collection is counted
// apart, native threads (the log's appends), the event loop itself — is the process's CPU
// time (getrusage: every thread) minus the stages, reported as `other`. On a core the node
// shares, a stage's time also holds the moments it was descheduled: pin the node to measure.
import { PerformanceObserver } from 'node:perf_hooks';

export const STAGES = ['receive', 'admission', 'sequencing', 'dispatch', 'state-update', 'tables', 'merge', 'store', 'replies', 'gc'] as const;
export type Stage = (typeof STAGES)[number];

export interface StageTotals {
  /** Seconds per stage since the process started counting. */
  stages: Record<Stage, number>;
  /** CPU seconds of the whole process, every thread (user + system). */
  cpu: number;
}

/** What `enter` returns when the stage was already running: `leave` then does nothing. */
const SAME: unique symbol = Symbol('same stage');
export type Entered = Stage | null | typeof SAME;

class StageClock {
  private readonly ms = Object.fromEntries(STAGES.map((s) => [s, 0])) as Record<Stage, number>;
  private current: Stage | null = null;
  private since = 0;
  private gc: PerformanceObserver | null = null;

  /** Runs `fn` as stage `s`; a stage entered inside it is counted there, not here. */
  time<T>(s: Stage, fn: () => T): T {
    const prev = this.enter(s);
    try {
      return fn();
    } finally {
      this.leave(prev);
    }
  }

  /**
   * Enters `s`; give what it returns to `leave`. For stages that do not fit one call. Entering
   * the stage already running costs nothing (no clock read): a loop over a batch enters its
   * stage once, and what it calls per transaction may enter it again for free.
   */
  enter(s: Stage): Entered {
    if (this.current === s) return SAME;
    const now = performance.now();
    const prev = this.current;
    if (prev !== null) this.ms[prev] += now - this.since;
    this.current = s;
    this.since = now;
    return prev;
  }

  leave(prev: Entered): void {
    if (prev === SAME) return;
    const now = performance.now();
    if (this.current !== null) this.ms[this.current] += now - this.since;
    this.current = prev;
    this.since = now;
  }

  /** Starts counting garbage collection (once per process; costs an observer callback per GC). */
  watchGc(): void {
    if (this.gc) return;
    this.gc = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) this.ms.gc += e.duration;
    });
    this.gc.observe({ entryTypes: ['gc'] });
  }

  totals(): StageTotals {
    const cpu = process.cpuUsage();
    return {
      stages: Object.fromEntries(STAGES.map((s) => [s, this.ms[s] / 1000])) as Record<Stage, number>,
      cpu: (cpu.user + cpu.system) / 1e6,
    };
  }
}

/** This process's clock: stages are process-wide, as the CPU they share is. */
export const stages = new StageClock();

/** Per-transaction microseconds between two totals: each stage, `other`, and the whole process. */
export function perTransaction(a: StageTotals, b: StageTotals, txs: number): Record<Stage | 'other' | 'total', number> {
  const per = (s: number) => (txs > 0 ? (s * 1e6) / txs : NaN);
  const out = {} as Record<Stage | 'other' | 'total', number>;
  let staged = 0;
  for (const s of STAGES) {
    const d = b.stages[s] - a.stages[s];
    staged += d;
    out[s] = per(d);
  }
  out.total = per(b.cpu - a.cpu);
  out.other = per(Math.max(0, b.cpu - a.cpu - staged));
  return out;
}
