// When the embedded launcher adds or retires pre-executors. The decision uses only what is
// measured: how much work the pool owes (queue depth), how often the primary had to execute
// alone because no result came in time, and how much pre-execution it threw away.

export interface AutoscaleOptions {
  /** Fewest pre-executors (default 1). */
  min?: number;
  /** Most pre-executors (default 4). */
  max?: number;
  /** Time between samples (default 500 ms). */
  intervalMs?: number;
  /** Results owed per pre-executor above which the pool grows (default 64). */
  highQueue?: number;
  /** Results owed per pre-executor below which the pool may shrink (default 8). */
  lowQueue?: number;
  /** Share of applied transactions executed alone (no result by the deadline) above which the pool grows (default 0.2). */
  highAlone?: number;
  /** Share re-executed above which pre-execution is mostly wasted and the pool may shrink (default 0.9). */
  highReexecuted?: number;
  /** Consecutive samples that must agree before acting (default 3). */
  patience?: number;
}

/** One interval's measurements. */
export interface LoadSample {
  /** Pre-executors being handed work. */
  pool: number;
  /** Results they owe now. */
  outstanding: number;
  /** Transactions applied in the interval, and how: */
  applied: number;
  executedAlone: number;
  reexecuted: number;
}

export type ScaleDecision = 'up' | 'down' | 'hold';

export class Autoscaler {
  readonly min: number;
  readonly max: number;
  readonly intervalMs: number;
  private readonly o: Required<Omit<AutoscaleOptions, 'min' | 'max' | 'intervalMs'>>;
  private streak: { want: ScaleDecision; n: number } = { want: 'hold', n: 0 };

  constructor(opts: AutoscaleOptions = {}) {
    this.min = opts.min ?? 1;
    this.max = opts.max ?? 4;
    this.intervalMs = opts.intervalMs ?? 500;
    this.o = {
      highQueue: opts.highQueue ?? 64,
      lowQueue: opts.lowQueue ?? 8,
      highAlone: opts.highAlone ?? 0.2,
      highReexecuted: opts.highReexecuted ?? 0.9,
      patience: opts.patience ?? 3,
    };
    if (!Number.isSafeInteger(this.min) || this.min < 0 || !Number.isSafeInteger(this.max) || this.max < this.min) {
      throw new RangeError(`autoscale needs 0 <= min <= max, got min ${this.min}, max ${this.max}`);
    }
    if (!(this.o.lowQueue < this.o.highQueue)) throw new RangeError('autoscale lowQueue must be below highQueue');
    if (!Number.isSafeInteger(this.o.patience) || this.o.patience < 1) throw new RangeError('autoscale patience must be a positive integer');
    if (!(this.intervalMs > 0)) throw new RangeError('autoscale intervalMs must be positive');
  }

  /** What the sample asks for, acted on only after `patience` samples in a row agree. */
  decide(s: LoadSample): ScaleDecision {
    const want = this.want(s);
    this.streak = want === this.streak.want ? { want, n: this.streak.n + 1 } : { want, n: 1 };
    if (want === 'hold' || this.streak.n < this.o.patience) return 'hold';
    this.streak = { want: 'hold', n: 0 };
    return want;
  }

  private want(s: LoadSample): ScaleDecision {
    if (s.pool < this.min) return 'up';
    if (s.pool > this.max) return 'down';
    const perMember = s.pool === 0 ? Infinity : s.outstanding / s.pool;
    const alone = s.applied === 0 ? 0 : s.executedAlone / s.applied;
    const reexecuted = s.applied === 0 ? 0 : s.reexecuted / s.applied;
    if (s.pool < this.max && s.applied > 0 && (perMember > this.o.highQueue || alone > this.o.highAlone)) return 'up';
    if (s.pool > this.min && (reexecuted > this.o.highReexecuted || (perMember < this.o.lowQueue && alone <= this.o.highAlone / 2))) {
      return 'down';
    }
    return 'hold';
  }
}
