// A replica's coordination (Heron, Algorithm 2, phases 2 and 4): announce the phase for a
// timestamp, wait for a majority of every destination partition (then a grace for the rest),
// and count how the waits went.
import type { NativeCoordinator } from '../binding.js';
import type { Timing } from './messages.js';

/** `coordinateSync`'s statuses and where its replica bitmaps start (see the binding). */
const COORD_PENDING = 0;
const COORD_COMPLETE = 1;
const COORD_MASKS = 5;

export interface PhaseWaitOptions {
  replicas: number;
  /** Wait for the rest after a majority (default 2 ms). */
  graceMs?: number;
  /** A coordination without a majority by then fails the replica (default 30 s). */
  timeoutMs?: number;
  /** A coordination checks the entries this long before it sleeps (default 30 µs). */
  coordSpinMicros?: number;
  /** A coordination waits on the replica's own thread this long, then on the pool (default 5 ms). */
  coordBudgetMicros?: number;
}

export class PhaseWaits {
  /** Coordination waits; those cut short by the grace limit; those that found a majority but not everyone, and their time beyond it (µs). */
  coordinations = 0;
  delayed = 0;
  graceWaits = 0;
  graceMicros = 0;
  /** `coordinateSync`'s result numbers, reused across waits. */
  private out = new Float64Array(COORD_MASKS + 2);

  constructor(
    private readonly coordinator: NativeCoordinator,
    private readonly opts: PhaseWaitOptions,
  ) {}

  /**
   * Replicas (per involved partition, in `dest` order) that reached the phase, or a promise of
   * them if the wait outlasted the budget. The wait runs on this thread for up to the budget (a
   * spin, then a futex sleep until a peer announces): the replica has nothing else to do before
   * this transaction is coordinated, and a pool hop costs more than the whole wait in the
   * common case. Longer waits go on on the pool (`finish`), so
   * the process stays responsive through a slow peer or a timeout. `announce` false: the
   * phase was announced before (`NativeCoordinator.announce`), and only the wait is left.
   */
  wait(ts: bigint, phase: number, dest: number[], timing: Timing, announce = true): number[][] | Promise<number[][]> {
    const { graceMs = 2, timeoutMs = 30_000, coordSpinMicros = 30, coordBudgetMicros = 5000 } = this.opts;
    if (this.out.length < COORD_MASKS + dest.length) this.out = new Float64Array(COORD_MASKS + dest.length);
    const status = this.coordinator.coordinateSync(
      ts,
      phase,
      Uint32Array.from(dest),
      graceMs,
      timeoutMs,
      coordSpinMicros,
      coordBudgetMicros,
      this.out,
      announce,
    );
    // Not a promise when the wait ended here: awaiting one would put the rest of the
    // transaction behind whatever else this turn of the event loop still runs.
    if (status === COORD_PENDING) return this.coordinator.finish().then((r) => this.count(r, dest, timing));
    return this.count(this.out, dest, timing);
  }

  private count(r: Float64Array, dest: number[], timing: Timing): number[][] {
    this.coordinations++;
    const [complete, majorityMicros, waitedMicros] = [r[0] === COORD_COMPLETE, r[1] ?? 0, r[2] ?? 0];
    if (!complete) {
      timing.delayed++;
      this.delayed++;
    }
    if (!complete || waitedMicros > majorityMicros) {
      const beyond = waitedMicros - majorityMicros;
      timing.graceWaits++;
      timing.graceMicros += beyond;
      this.graceWaits++;
      this.graceMicros += beyond;
    }
    const replicas: number[][] = [];
    for (let i = 0; i < dest.length; i++) {
      const mask = r[COORD_MASKS + i] ?? 0;
      const got: number[] = [];
      for (let q = 0; q < this.opts.replicas; q++) if ((mask >>> q) & 1) got.push(q);
      replicas.push(got);
    }
    return replicas;
  }
}
