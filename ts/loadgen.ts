// Load generators in processes of their own (`remora loadgen`, a hidden role), so that the CPU
// of the node's process is the node's: building and signing a bank transfer costs ~45 µs,
// about what the node spends on it, so clients in the node's process hide half of its cost.
//
// A generator connects to the node as a client, builds and signs every transaction it will send
// before the timed window (a bounded count), prints `ready`, and waits for the start signal. It
// then runs closed-loop (N clients, each submitting the next transaction when its last one is
// answered) or open-loop (a target rate, submitting on schedule whatever the replies, latency
// counted from the scheduled time), until its time limit or its transactions run out, and prints
// `result <json>`.
//
// Several generators share one load: generator i gets seed + i, its share of the clients (or the
// rate) and of the transactions. Transactions are submitted over one connection in the order they
// were generated, which the node keeps, so a bank sender's nonces arrive in order; bank
// generators send from disjoint accounts (a mod count = i) for the same reason, while receivers
// are drawn from all of them.
//
// Latency quantiles over all generators are computed from every latency, not from per-generator
// quantiles (which do not combine): each generator writes its raw latencies (float64 ns, host
// byte order) to a file the parent names in the cluster directory, and the parent merges, sorts
// and removes them. 8 bytes a transaction, next to the ~500 a pre-signed transaction takes.
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Transaction } from './app/tx.js';
import type { Reply } from './client.js';
import { RoleProcess } from './process.js';
import { bankWorkload, kvWorkload, workWorkload } from './workload.js';

export interface BankLoad {
  app: 'bank';
  accounts: number;
  /** Zipf skew of senders (within a generator's share) and receivers (among all accounts). */
  alpha: number;
  /** The owners' keys come from this seed, as in the set-up that opened the accounts. */
  seed: number;
}

export interface WorkLoad {
  app: 'work';
  objects: number;
  alpha: number;
  /** Mixing rounds per `crunch`. */
  rounds: number;
  seed: number;
}

export interface KvLoad {
  app: 'kv';
  keys: number;
  /** Defaults as in `remora check --app kv`: 4 hot keys, 10 % conflicts, 5 % dynamic reads. */
  hotKeys?: number;
  conflictRate?: number;
  dynamicRate?: number;
  seed: number;
}

/** What the generators send; bank needs its set-up (`bankWorkload(…).setup`) applied first. */
export type LoadWorkload = BankLoad | WorkLoad | KvLoad;

/** Closed loop: `clients` outstanding at all times. Open loop: `rate` submissions a second. */
export type LoadMode = { kind: 'closed'; clients: number } | { kind: 'open'; rate: number };

/** Latency quantiles in µs. */
export interface LatencyQuantiles {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
}

/** What happened to the transactions sent. */
export interface LoadCounts {
  sent: number;
  committed: number;
  aborted: number;
  /** Refused by the node (an error reply, or the connection lost). */
  rejected: number;
  /** Sent but not answered within the drain time after sending stopped. */
  unanswered: number;
  /** Replies marked as duplicates (counted in committed or aborted too). */
  duplicates: number;
}

/** What one generator did, as its `result` line reports it. */
export interface GeneratorResult extends LoadCounts {
  /** The seed its transactions were drawn from: the load's seed + its index. */
  seed: number;
  /** Seconds from the start signal to its last answer. */
  elapsed: number;
  /** Wall clock (Date.now()) at the start signal and at the last answer, to align generators. */
  startMs: number;
  endMs: number;
  /** CPU time (user + system, µs) this generator's process spent over its run: the clients' cost. */
  cpuUs: number;
  /** Its transactions, not its time limit, ended the run: it had too few for the window. */
  ranOut: boolean;
  /** Null if nothing was answered. */
  latencyUs: LatencyQuantiles | null;
  /** Counts by abort reason, and by rejection message (at most `MAX_REASONS` each). */
  abortReasons: Record<string, number>;
  rejectReasons: Record<string, number>;
  /** Why it stopped early (the connection lost), else null. */
  error: string | null;
}

/** A generator's result before it sent anything. */
export function emptyGeneratorResult(seed: number, startMs: number, endMs: number): GeneratorResult {
  return {
    seed,
    sent: 0,
    committed: 0,
    aborted: 0,
    rejected: 0,
    unanswered: 0,
    duplicates: 0,
    elapsed: 0,
    startMs,
    endMs,
    cpuUs: 0,
    ranOut: false,
    latencyUs: null,
    abortReasons: {},
    rejectReasons: {},
    error: null,
  };
}

/** All generators together. */
export interface LoadResults extends LoadCounts {
  generators: GeneratorResult[];
  /** CPU time (µs) of all generator processes over their runs. */
  cpuUs: number;
  /** Seconds from the first generator's start to the last one's last answer (wall clock). */
  elapsed: number;
  startMs: number;
  endMs: number;
  /** Some generator ran out of transactions before its time limit. */
  ranOut: boolean;
  /** Over every answered transaction of every generator; null if none was answered. */
  latencyUs: LatencyQuantiles | null;
  /** Every latency (ns), sorted. */
  latenciesNs: Float64Array;
}

/** Distinct reasons kept per kind: enough to see what went wrong, bounded for odd ones. */
export const MAX_REASONS = 16;

/** Nearest-rank quantiles (µs) of `sortedNs`, or null if it is empty. */
export function quantiles(sortedNs: Float64Array): LatencyQuantiles | null {
  if (sortedNs.length === 0) return null;
  const at = (q: number) => (sortedNs[Math.min(sortedNs.length - 1, Math.max(0, Math.ceil(q * sortedNs.length) - 1))] ?? NaN) / 1000;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999) };
}

/** `count` split into `parts` integers that differ by at most one, the larger first. */
export function split(count: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(count / parts) + (i < count % parts ? 1 : 0));
}

/**
 * The transactions generator `index` of `of` sends: its own stream (seed + index) and, for the
 * bank, its own senders. Deterministic, so a run can be replayed from the seed it printed.
 */
export function generatorTransactions(workload: LoadWorkload, index: number, of: number, count: number): Transaction[] {
  const seed = workload.seed + index;
  const take = (next: () => Transaction) => Array.from({ length: count }, next);
  switch (workload.app) {
    case 'bank': {
      const w = bankWorkload({ accounts: workload.accounts, alpha: workload.alpha, seed, keySeed: workload.seed, senders: { index, of } });
      return take(() => w.next());
    }
    case 'work': {
      const w = workWorkload({ objects: workload.objects, alpha: workload.alpha, rounds: workload.rounds, seed });
      return take(() => w.next());
    }
    case 'kv': {
      const w = kvWorkload({
        keys: workload.keys,
        hotKeys: workload.hotKeys ?? 4,
        conflictRate: workload.conflictRate ?? 0.1,
        dynamicRate: workload.dynamicRate ?? 0.05,
        seed,
      });
      return take(() => w.next().value);
    }
  }
}

export interface RunOptions {
  mode: LoadMode;
  /** Time limit from the start, in seconds. */
  seconds: number;
  /** How long to wait for answers once sending stopped (default 10 s). */
  drainSeconds?: number;
  /**
   * Answers left out of the latencies (default 0): the first ones run code the node and its
   * members have not optimised yet. They still count in every other figure.
   */
  warmup?: number;
  seed: number;
  /** Called with a function that ends sending early (the parent asked to stop). */
  onStop?: (stop: () => void) => void;
}

/**
 * Sends `txs` in order through `submit` and measures each answer; the loop both the generator
 * role and in-process callers run. Resolves when every transaction sent is answered (or the
 * drain time is over), with the result and the raw latencies (ns, in order of answer). `T` is
 * whatever `submit` takes: transactions, or their bytes encoded ahead of the window.
 */
export function runLoad<T>(
  submit: (tx: T) => Promise<Reply>,
  txs: readonly T[],
  o: RunOptions,
): Promise<{ result: GeneratorResult; latenciesNs: Float64Array }> {
  const latencies = new Float64Array(txs.length);
  const r = emptyGeneratorResult(o.seed, Date.now(), 0);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + o.seconds * 1000;
  let answered = 0;
  let inFlight = 0;
  let stopped = false;
  let sendingOver = false;
  let finished = false;
  let lastAnswer = t0;
  // The time limit, the next open-loop tick, and the drain deadline.
  const timers: { end?: NodeJS.Timeout; tick?: NodeJS.Timeout; drain?: NodeJS.Timeout } = {};
  let finish: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    finish = () => {
      finished = true;
      resolve();
    };
  });

  const tally = (into: Record<string, number>, reason: string) => {
    const key = Object.hasOwn(into, reason) || Object.keys(into).length < MAX_REASONS ? reason : '(other)';
    into[key] = (into[key] ?? 0) + 1;
  };
  const canSend = () => !stopped && r.sent < txs.length && performance.now() < end;
  // Open loop sends what is due in the window: only a count short of that runs out.
  const short = o.mode.kind === 'open' ? txs.length < Math.ceil(o.seconds * o.mode.rate) : true;
  const over = () => {
    if (!sendingOver) {
      sendingOver = true;
      r.ranOut = short && r.sent === txs.length && performance.now() < end;
      // Answers still owed get a bounded wait: a stuck node must not hold the generator forever.
      timers.drain = setTimeout(finish, (o.drainSeconds ?? 10) * 1000);
    }
    if (inFlight === 0) finish();
  };
  const answer = (from: number) => {
    const now = performance.now();
    latencies[answered++] = (now - from) * 1e6;
    lastAnswer = now;
    inFlight--;
  };
  const send = (from: number, then: () => void) => {
    const tx = txs[r.sent];
    if (tx === undefined) return;
    r.sent++;
    inFlight++;
    let p: Promise<Reply>;
    try {
      p = submit(tx);
    } catch (e) {
      p = Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    p.then(
      (reply) => {
        // Past the drain time, the result is out: a late answer changes nothing.
        if (finished) return;
        answer(from);
        if (reply.duplicate) r.duplicates++;
        if (reply.outcome?.status === 'ok') r.committed++;
        else {
          r.aborted++;
          const missing = reply.duplicate ? 'duplicate whose outcome is forgotten' : 'reply without an outcome';
          tally(r.abortReasons, reply.outcome?.status === 'aborted' ? reply.outcome.reason : missing);
        }
        then();
      },
      (e: unknown) => {
        if (finished) return;
        answer(from);
        r.rejected++;
        const message = e instanceof Error ? e.message : String(e);
        tally(r.rejectReasons, message);
        // Every later submission would fail the same way.
        if (message.startsWith('connection to the node closed')) {
          r.error ??= message;
          stopped = true;
        }
        then();
      },
    );
  };

  if (o.mode.kind === 'closed') {
    // Each answer sends the next transaction in generation order, as one of `clients` loops would.
    const next = () => {
      if (canSend()) send(performance.now(), next);
      else over();
    };
    for (let c = 0; c < o.mode.clients && canSend(); c++) send(performance.now(), next);
    if (inFlight === 0) over();
    // Sending ends at the time limit even if no answer comes to notice it.
    timers.end = setTimeout(over, Math.max(0, end - performance.now()));
  } else {
    const interval = 1000 / o.mode.rate;
    // Transaction k is due at t0 + k·interval; those due before the time limit are sent.
    const slots = Math.min(txs.length, Math.ceil(o.seconds * o.mode.rate));
    const afterAnswer = () => {
      if (sendingOver && inFlight === 0) finish();
    };
    const tick = () => {
      if (stopped) return over();
      const due = Math.min(slots, Math.floor((performance.now() - t0) / interval) + 1);
      while (r.sent < due && !stopped) send(t0 + r.sent * interval, afterAnswer);
      if (r.sent >= slots || stopped) return over();
      timers.tick = setTimeout(tick, Math.max(0, t0 + r.sent * interval - performance.now()));
    };
    tick();
  }
  o.onStop?.(() => {
    stopped = true;
    over();
  });

  return done.then(() => {
    for (const t of [timers.end, timers.tick, timers.drain]) clearTimeout(t);
    const cpu = process.cpuUsage(cpu0);
    r.cpuUs = cpu.user + cpu.system;
    r.unanswered = inFlight;
    r.elapsed = (lastAnswer - t0) / 1000;
    r.endMs = r.startMs + Math.round(lastAnswer - t0);
    const sorted = latencies.slice(Math.min(answered, o.warmup ?? 0), answered);
    r.latencyUs = quantiles(sorted.slice().sort());
    return { result: r, latenciesNs: sorted };
  });
}

export interface LoadGeneratorOptions {
  /** The cluster directory: its `node.sock` and `client.secret`, and where latencies are left. */
  dir: string;
  /** Connect over TCP instead (the node's `--listen`), with a copy of `client.secret`. */
  tcp?: { address: string; secretFile: string };
  /**
   * Client sockets to use instead of the node's (admission processes', `admissionSockets`):
   * generator `i` connects to `sockets[i % sockets.length]`.
   */
  sockets?: readonly string[];
  /** Generator processes. */
  count: number;
  workload: LoadWorkload;
  /** For all generators together: the clients or the rate are split among them. */
  mode: LoadMode;
  /** Transactions built before the window, all generators together. */
  transactions: number;
  /** Time limit of the window. */
  seconds: number;
  /** How long generators wait for answers once sending stopped (default 10 s). */
  drainSeconds?: number;
  /** Answers each generator leaves out of its latencies, its first ones (default 0). */
  warmup?: number;
  /** How long a generator may take to connect and sign (default 10 min). */
  readyTimeoutMs?: number;
  /** A command generators run under, e.g. `['taskset', '-c', '1']` to pin them (benchmarks). */
  prefix?: readonly string[];
}

/** Generators that are ready: `go` starts them all, `results` waits for them to finish. */
export interface LoadGenerators {
  /** Each generator's seed (the load's seed + its index). */
  readonly seeds: readonly number[];
  /** Transactions each generator prepared. */
  readonly prepared: readonly number[];
  /** How long each took to build and sign them (ms). */
  readonly prepareMs: readonly number[];
  /** Starts every generator (a signal each: near-simultaneous). */
  go(): void;
  /** Resolves when every generator has exited: the end of the window, before any merging. */
  finished(): Promise<void>;
  /** Waits for every generator to finish, then merges what they did. */
  results(): Promise<LoadResults>;
  /** Ends any generator still running (without its result) and removes its files. */
  close(): Promise<void>;
}

/** Arguments of the `loadgen` role for generator `index`. */
export function loadgenArgs(o: LoadGeneratorOptions, index: number, latencies: string): string[] {
  const w = o.workload;
  const socket = o.sockets?.length ? o.sockets[index % o.sockets.length] : undefined;
  const where = o.tcp ? ['--node', o.tcp.address, '--secret-file', o.tcp.secretFile] : ['--dir', o.dir, ...(socket === undefined ? [] : ['--socket', socket])];
  const what =
    w.app === 'bank'
      ? ['--objects', String(w.accounts), '--alpha', String(w.alpha)]
      : w.app === 'work'
        ? ['--objects', String(w.objects), '--alpha', String(w.alpha), '--rounds', String(w.rounds)]
        : [
            '--objects',
            String(w.keys),
            ...(w.hotKeys === undefined ? [] : ['--hot-keys', String(w.hotKeys)]),
            ...(w.conflictRate === undefined ? [] : ['--conflict-rate', String(w.conflictRate)]),
            ...(w.dynamicRate === undefined ? [] : ['--dynamic-rate', String(w.dynamicRate)]),
          ];
  const mode =
    o.mode.kind === 'closed'
      ? ['--mode', 'closed', '--clients', String(split(o.mode.clients, o.count)[index])]
      : ['--mode', 'open', '--rate', String(o.mode.rate / o.count)];
  return [
    ...where,
    '--app',
    w.app,
    ...what,
    '--seed',
    String(w.seed),
    '--index',
    String(index),
    '--of',
    String(o.count),
    ...mode,
    '--transactions',
    String(split(o.transactions, o.count)[index]),
    '--seconds',
    String(o.seconds),
    ...(o.drainSeconds === undefined ? [] : ['--drain-seconds', String(o.drainSeconds)]),
    ...(o.warmup === undefined ? [] : ['--warmup', String(o.warmup)]),
    '--latencies',
    latencies,
  ];
}

/** The start signal: RoleProcess offers no way to write to a child's stdin, a signal it can send. */
export const GO_SIGNAL = 'SIGUSR2';

/** Starts `count` generator processes and resolves once all are ready (signed, connected). */
export async function startLoadGenerators(o: LoadGeneratorOptions): Promise<LoadGenerators> {
  if (!Number.isSafeInteger(o.count) || o.count < 1) throw new RangeError(`count must be a positive integer, got ${o.count}`);
  if (o.mode.kind === 'closed' && o.mode.clients < o.count) {
    throw new RangeError(`${o.mode.clients} clients cannot be split over ${o.count} generators`);
  }
  if (o.workload.app === 'bank' && o.workload.accounts < o.count) {
    throw new RangeError(`${o.count} bank generators need at least as many accounts (disjoint senders), got ${o.workload.accounts}`);
  }
  // Unique per call, so two sets of generators on one directory never share a file.
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const files = Array.from({ length: o.count }, (_, i) => join(o.dir, `loadgen-${tag}-${i}.latencies`));
  const removeFiles = () => files.forEach((f) => rmSync(f, { force: true }));
  const started = await Promise.allSettled(
    files.map((file, i) =>
      RoleProcess.start('loadgen', loadgenArgs(o, i, file), { readyTimeoutMs: o.readyTimeoutMs ?? 600_000, ...(o.prefix && { prefix: o.prefix }) }),
    ),
  );
  const procs = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const abandon = async (e: unknown): Promise<never> => {
    await Promise.all(procs.map((p) => p.stop(2000)));
    removeFiles();
    throw e;
  };
  const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) return abandon(failed.reason);
  let info: { seed: number; transactions: number; prepareMs: number }[];
  try {
    info = procs.map((p) => readyInfo(p.readyInfo));
  } catch (e) {
    return abandon(e);
  }

  return {
    seeds: info.map((i) => i.seed),
    prepared: info.map((i) => i.transactions),
    prepareMs: info.map((i) => i.prepareMs),
    go() {
      for (const p of procs) p.kill(GO_SIGNAL);
    },
    async finished() {
      await Promise.all(procs.map((p) => p.exited));
    },
    async results() {
      try {
        // A generator ends by itself; `finish` then only collects its result and exit code.
        const generators = await Promise.all(
          procs.map(async (p) => {
            await p.exited;
            return checkResult(await p.finish());
          }),
        );
        const parts = files.map(readLatencies);
        const all = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
        let at = 0;
        for (const p of parts) {
          all.set(p, at);
          at += p.length;
        }
        return merge(generators, all.sort());
      } finally {
        removeFiles();
      }
    },
    async close() {
      await Promise.all(procs.map((p) => p.stop(2000)));
      removeFiles();
    },
  };
}

function merge(generators: GeneratorResult[], latenciesNs: Float64Array): LoadResults {
  const sum = (f: (g: GeneratorResult) => number) => generators.reduce((n, g) => n + f(g), 0);
  const startMs = Math.min(...generators.map((g) => g.startMs));
  const endMs = Math.max(...generators.map((g) => g.endMs));
  return {
    generators,
    sent: sum((g) => g.sent),
    committed: sum((g) => g.committed),
    aborted: sum((g) => g.aborted),
    rejected: sum((g) => g.rejected),
    unanswered: sum((g) => g.unanswered),
    duplicates: sum((g) => g.duplicates),
    cpuUs: sum((g) => g.cpuUs),
    elapsed: (endMs - startMs) / 1000,
    startMs,
    endMs,
    ranOut: generators.some((g) => g.ranOut),
    latencyUs: quantiles(latenciesNs),
    latenciesNs,
  };
}

function readLatencies(file: string): Float64Array {
  const b = readFileSync(file);
  // Copied out: a Buffer's offset in its pool need not be a multiple of 8.
  return new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

function readyInfo(v: unknown): { seed: number; transactions: number; prepareMs: number } {
  if (!isRecord(v) || typeof v['seed'] !== 'number' || typeof v['transactions'] !== 'number' || typeof v['prepareMs'] !== 'number') {
    throw new Error(`loadgen child's ready line lacks its seed, transaction count or preparation time: ${JSON.stringify(v)}`);
  }
  return { seed: v['seed'], transactions: v['transactions'], prepareMs: v['prepareMs'] };
}

const COUNTS = ['seed', 'sent', 'committed', 'aborted', 'rejected', 'unanswered', 'duplicates', 'elapsed', 'startMs', 'endMs'] as const;

function checkResult(v: unknown): GeneratorResult {
  if (!isRecord(v) || !COUNTS.every((k) => typeof v[k] === 'number')) {
    throw new Error(`loadgen child printed a result without its counts: ${JSON.stringify(v)}`);
  }
  return v as unknown as GeneratorResult;
}
