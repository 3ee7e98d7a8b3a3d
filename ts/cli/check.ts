// `remora check --app SPEC`: runs an app's own workload on a private embedded cluster whose
// every process has the determinism guard installed, then re-executes the log sequentially
// and compares. One line says the app passed, or what broke: a command that reached for a
// clock, randomness or I/O (named), or the first transaction whose outcome differs.
//
// The guard catches what a command calls; the comparison catches what it cannot see (state
// kept between calls in module variables, iteration over something that differs between
// processes), as far as this workload reaches.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { App } from '../app/app.js';
import { encode } from '../app/codec.js';
import type { Outcome } from '../app/exec.js';
import { installDeterminismGuard, NondeterminismError } from '../app/guard.js';
import { nativeFunctions } from '../app/natives.js';
import { executeSequentially } from '../app/reference.js';
import type { Transaction } from '../app/tx.js';
import { EmbeddedCluster } from '../cluster.js';
import type { Reply } from '../pipeline/node.js';
import { readSequence, type Sequenced } from '../pipeline/sequencer.js';
import { atExit, type RoleProcess } from '../process.js';
import { loadAppUnderLoad, nextTransaction } from './app-workload.js';
import { ConfigError } from './errors.js';
import { appOption, intOption } from './options.js';

/** The app failed the check; the message is the verdict (exit code 2, one line). */
export class CheckFailed extends ConfigError {
  override name = 'CheckFailed';
}

export interface CheckOptions {
  spec: string;
  seed: number;
  /** Stop after this many transactions… */
  transactions: number;
  /** …or this many seconds of load, whichever comes first. */
  seconds: number;
  preExecutors: number;
  /** Progress, for a person (default stderr). */
  say?: (line: string) => void;
}

export interface CheckResult {
  app: string;
  digest: string;
  submitted: number;
  committed: number;
  aborted: number;
  duplicates: number;
  logged: number;
  seconds: number;
  decisions: { adopted: number; reexecuted: number; executed: number };
  /** The one-line verdict. */
  verdict: string;
}

/** Transactions in flight at once: enough to keep two pre-executors busy and conflicting. */
const WINDOW = 64;
/** With no reply for this long, the cluster is stuck: a bug worth its own report. */
const STALL_MS = 30_000;
/** The guard's message (guard.ts), as a pre-executor logs it before it closes. */
const GUARD_MESSAGE = /(command .+? called .+?, which differs between members;.*?\(docs\/apps\.md\))/;

const fmt = (n: number) => n.toLocaleString('en-US');
const pct = (a: number, b: number) => `${b === 0 ? '0.0' : ((100 * a) / b).toFixed(1)} %`;

/** Bytes as hex and bigints as decimal, so an outcome fits in one line of JSON. */
const show = (o: Outcome | null): string =>
  JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));

export async function runCheck(o: CheckOptions): Promise<CheckResult> {
  const say = o.say ?? ((line: string) => process.stderr.write(`${line}\n`));
  // Here for the primary and the reference executor; through the environment for the
  // pre-executor processes (pipeline-roles.ts), which inherit it.
  installDeterminismGuard();
  process.env['REMORA_DETERMINISM_GUARD'] = '1';
  const { loaded, source, workload } = await loadAppUnderLoad(o.spec);
  const name = loaded.app.name;
  say(
    `check: app ${name} ${loaded.digest.slice(0, 12)} (${o.spec}) driven by ${source}, seed ${o.seed}: up to ` +
      `${fmt(o.transactions)} transactions or ${o.seconds} s on ${o.preExecutors} pre-executors, every process under the determinism guard`,
  );

  let failWith: (e: Error) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => (failWith = reject));
  failed.catch(() => undefined);
  let failure: Error | null = null;
  const fail = (e: Error) => {
    failure ??= e;
    failWith(failure);
  };
  const dir = mkdtempSync(join(tmpdir(), 'remora-check-'));
  const removeDir = atExit(() => rmSync(dir, { recursive: true, force: true }));
  let cluster: EmbeddedCluster | null = null;
  let closing = false;
  try {
    // Every command runs on the members under the guard, even one submitted alone.
    cluster = await EmbeddedCluster.start({ dir, app: o.spec, preExecutors: o.preExecutors, localWhenAlone: false });
    // The primary applies the log in the background: a command breaking the guard stops it.
    cluster.node.failed.catch((e: unknown) => {
      if (e instanceof NondeterminismError) fail(new CheckFailed(`check failed in the primary: ${e.message}`));
      else fail(e instanceof Error ? e : new Error(String(e)));
    });
    for (const [member, child] of cluster.children) {
      void child.exited.then((e) => {
        if (!closing) fail(memberFailure(member, child, `exited (${e.signal ?? `code ${String(e.code)}`})`));
      });
    }
    const it = workload(o.seed);
    const replies: { index: number; reply: Reply }[] = [];
    const started = performance.now();
    const end = started + o.seconds * 1000;
    let lastReply = started;
    const stall = setInterval(() => {
      if (performance.now() - lastReply > STALL_MS) fail(new Error(`check: no transaction was applied for ${STALL_MS / 1000} s; the cluster is stuck`));
    }, 1000);
    stall.unref();
    const inFlight = new Set<Promise<void>>();
    let submitted = 0;
    try {
      while (submitted < o.transactions && performance.now() < end && failure === null) {
        const tx: Transaction | null = nextTransaction(it, source, submitted);
        if (tx === null) break;
        const index = submitted++;
        // Submitted from this one loop, so the log holds them in the order generated, the
        // order a workload's nonces assume.
        const p: Promise<void> = cluster.node.submit(tx).then(
          (reply) => {
            lastReply = performance.now();
            replies.push({ index, reply });
          },
          (e: unknown) => fail(new CheckFailed(`${source}: transaction #${index} was refused: ${e instanceof Error ? e.message : String(e)}`)),
        );
        const tracked = p.finally(() => inFlight.delete(tracked));
        inFlight.add(tracked);
        if (inFlight.size >= WINDOW) await Promise.race([Promise.race(inFlight), failed]);
      }
      await Promise.race([Promise.all(inFlight), failed]);
    } finally {
      clearInterval(stall);
    }
    if (submitted === 0) throw new CheckFailed(`${source} yielded no transactions`);
    const seconds = (performance.now() - started) / 1000;
    const stats = { ...cluster.node.stats };
    const lastApplied = cluster.node.lastApplied;
    const digest = cluster.store.digest();
    closing = true;
    await cluster.close();

    say(`check: re-executing the ${fmt(Number(lastApplied))} logged transactions sequentially…`);
    const entries = await readSequence(join(dir, 'log'));
    const reference = reexecute(loaded.app, entries);
    if (BigInt(entries.length) !== lastApplied) {
      // Not the app's doing: the engine lost or repeated a transaction.
      throw new Error(`check: the log holds ${entries.length} transactions but the primary applied ${lastApplied}`);
    }
    const commands = new Map(entries.map((e) => [e.ts, e.tx.command]));
    let [committed, aborted, duplicates] = [0, 0, 0];
    for (const { index, reply } of replies.sort((a, b) => a.index - b.index)) {
      if (reply.duplicate) duplicates++;
      if (reply.outcome === null) continue;
      if (reply.outcome.status === 'ok') committed++;
      else aborted++;
      const expected = reference.outcomes.get(reply.ts) ?? null;
      if (expected === null || !encode(expected).equals(encode(reply.outcome))) {
        throw new CheckFailed(
          `divergence at transaction #${index} (ts ${reply.ts}, ${commands.get(reply.ts) ?? '?'}): the cluster answered ${show(reply.outcome)}, ` +
            `sequential re-execution gives ${show(expected)}`,
        );
      }
    }
    const sequential = reference.state.digest();
    if (sequential !== digest) {
      throw new CheckFailed(
        `divergence: the primary's state (digest ${digest.slice(0, 12)}) differs from sequential re-execution of the ` +
          `${entries.length} logged transactions (digest ${sequential.slice(0, 12)}), though every outcome agreed`,
      );
    }
    const decisions = { adopted: stats.adopted, reexecuted: stats.reexecuted, executed: stats.executed };
    const verdict =
      `remora check: ok: app ${name} ${loaded.digest.slice(0, 12)}, seed ${o.seed}: ${fmt(submitted)} transactions ` +
      `(${fmt(committed)} committed, ${fmt(aborted)} aborted, ${fmt(duplicates)} duplicates) in ${seconds.toFixed(1)} s on ` +
      `${o.preExecutors} guarded pre-executors (adopted ${pct(decisions.adopted, stats.applied)}, re-executed ` +
      `${pct(decisions.reexecuted, stats.applied)}, executed alone ${pct(decisions.executed, stats.applied)}); ` +
      'the guard saw no clock, randomness or I/O, and the state and every outcome equal sequential re-execution';
    return { app: name, digest: loaded.digest, submitted, committed, aborted, duplicates, logged: entries.length, seconds, decisions, verdict };
  } finally {
    closing = true;
    // After a failure the node may be stuck mid-batch: what matters then is the verdict.
    await cluster?.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    removeDir();
  }
}

function reexecute(app: App, entries: Sequenced[]): ReturnType<typeof executeSequentially> {
  try {
    return executeSequentially(app, entries, nativeFunctions);
  } catch (e) {
    if (e instanceof Error && e.name === 'NondeterminismError') throw new CheckFailed(`check failed in sequential re-execution: ${e.message}`);
    throw e;
  }
}

/** Why a pre-executor left mid-check: the guard's message when that was it. */
function memberFailure(member: string, child: RoleProcess, how: string): Error {
  const guard = GUARD_MESSAGE.exec(child.stderr);
  if (guard?.[1] !== undefined) return new CheckFailed(`check failed in pre-executor ${member}: ${guard[1]}`);
  return new Error(`pre-executor ${member} ${how} during the check; its stderr:\n${child.stderr.trim()}`);
}

/** `remora check --app SPEC [--transactions N] [--seconds N] [--seed N]`. */
export async function checkCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      app: { type: 'string' },
      transactions: { type: 'string' },
      seconds: { type: 'string' },
      seed: { type: 'string' },
      'pre-executors': { type: 'string' },
    },
  });
  // Only --seconds given: run for that long.
  const onlySeconds = values.seconds !== undefined && values.transactions === undefined;
  const result = await runCheck({
    spec: appOption(values.app),
    transactions: intOption(values.transactions, 'transactions', onlySeconds ? Number.MAX_SAFE_INTEGER : 10_000, 1, Number.MAX_SAFE_INTEGER),
    seconds: intOption(values.seconds, 'seconds', 60, 1, 86_400),
    seed: intOption(values.seed, 'seed', Math.floor(Math.random() * 2 ** 31), 0, 2 ** 31 - 1),
    preExecutors: intOption(values['pre-executors'], 'pre-executors', 2, 0, 16),
  });
  process.stdout.write(`${result.verdict}\n`);
  return 0;
}
