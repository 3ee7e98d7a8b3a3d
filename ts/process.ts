// Both ends of the role protocol the CLI uses to run a store owner in a second process.
//
// A role child prints `ready` (or `ready <json>`, what it wants its parent to know, such as the
// address it bound) on stdout once it serves, and stops on SIGTERM or SIGINT: it then prints
// `result <json>` and exits 0.
//
// A launcher also wants its children to die with it, in any way it dies (even SIGKILL), so it
// starts them with `remora --exit-with-stdin <role> ...`: such a child also treats the end of
// its stdin as the request to stop, and the kernel closes that pipe when the parent dies.
// Without the flag, as a person, systemd or a container runtime starts it, stdin means nothing
// (it may be closed, /dev/null or a terminal) and only a signal stops the process. Readiness and
// exit are events, never guessed with sleeps.
//
// A child that cannot start for a reason its user must fix (an option, a file, a port in use)
// prints one line `remora: <why>` on stderr and exits with USER_ERROR_EXIT, as the CLI does
// for a person: its parent then rejects with that line as the reason, not the child's stack.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

// The compiled CLI sits next to this module (dist/ts/cli.js), wherever the package lives.
// Tests import the TypeScript sources (ts/process.ts); their children run the compiled CLI.
const CLI = fileURLToPath(import.meta.url.endsWith('.ts') ? new URL('../dist/ts/cli.js', import.meta.url) : new URL('./cli.js', import.meta.url));

/** The exit code of a process that failed for something its user must fix; 1 is a bug's. */
export const USER_ERROR_EXIT = 2;

/**
 * The CLI's first argument, before the command, from a launcher that ties the child's life to
 * its own: the end of stdin then stops the child as SIGTERM would.
 */
export const EXIT_WITH_STDIN = '--exit-with-stdin';

let stdinEndStops = false;

/** The CLI's arguments without a leading EXIT_WITH_STDIN, which serveRole then honours. */
export function takeLifetimeFlag(argv: readonly string[]): string[] {
  if (argv[0] !== EXIT_WITH_STDIN) return [...argv];
  stdinEndStops = true;
  return argv.slice(1);
}

/** Keep this much of a child's stderr: enough to explain a failure, bounded for chatty ones. */
const STDERR_TAIL = 16 * 1024;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartOptions {
  /** How long the child may take to print `ready` (default 30 s). */
  readyTimeoutMs?: number;
  /**
   * A command the child runs under, e.g. `['ip', 'netns', 'exec', 'ns1']`: it must exec the
   * rest of its arguments in place, so signals and stdin reach the role itself.
   */
  prefix?: readonly string[];
}

export interface Stopped extends Exit {
  /** The child's `result` line, parsed; undefined if it printed none. */
  result: unknown;
  stderr: string;
}

// Children still running, and cleanups to run however this process ends.
const live = new Set<RoleProcess>();
const cleanups = new Set<() => void>();
let hooked = false;
// Set while serveRole serves: the first SIGINT/SIGTERM then asks the role to stop cleanly
// (store closed, children stopped, exit 0) instead of exiting at once; a second one does exit.
let stopRole: (() => void) | null = null;

function hookProcessExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
    for (const cleanup of cleanups) {
      try {
        cleanup();
      } catch {
        // Best effort: one failing cleanup must not keep the others from running.
      }
    }
  });
  // A handler replaces Node's default of dying without running 'exit' handlers, so the
  // children and temporary directories go with us; exit codes follow the shell convention.
  const signals: [NodeJS.Signals, number][] = [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ];
  for (const [signal, code] of signals) {
    process.on(signal, () => {
      const stop = signal === 'SIGHUP' ? null : stopRole;
      stopRole = null;
      process.stderr.write(`\nremora: ${signal}, stopping${stop ? '' : ' now'}\n`);
      if (stop) stop();
      else process.exit(code);
    });
  }
}

/** Runs `cleanup` when this process exits, even on SIGINT; returns a function to cancel it. */
export function atExit(cleanup: () => void): () => void {
  hookProcessExit();
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

function describeExit(e: Exit): string {
  return e.signal === null ? `exit code ${String(e.code)}` : `signal ${e.signal}`;
}

/** A role child that did not become ready. */
export class RoleStartError extends Error {
  constructor(
    message: string,
    readonly role: string,
    /** The child's one-line complaint when it exited with USER_ERROR_EXIT, else null. */
    readonly reason: string | null,
  ) {
    super(message);
  }
}

/** The last `remora: <why>` line of a child's stderr: what the user must fix. */
function userErrorLine(stderr: string): string | null {
  const lines = stderr.split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /^remora: (.+)$/.exec(lines[i]?.trim() ?? '');
    if (m?.[1] !== undefined) return m[1];
  }
  return null;
}

/** A child Node process running one CLI role (`node cli.js <role> ...args`). */
export class RoleProcess {
  /** stdout lines after `ready`. */
  readonly lines: string[] = [];
  /** The JSON after `ready`, parsed; undefined if there was none. */
  readyInfo: unknown = undefined;
  /** Settles when the child has exited and its output is drained. */
  readonly exited: Promise<Exit>;
  private exit: Exit | null = null;
  private stderrTail = '';

  private constructor(
    readonly role: string,
    private readonly child: ChildProcessWithoutNullStreams,
  ) {
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_TAIL);
    });
    // A child that exits first makes our writes (or end) fail with EPIPE; its exit is what
    // matters, and that is reported through `exited`.
    child.stdin.on('error', () => undefined);
    this.exited = new Promise((resolve) => {
      const done = (e: Exit) => {
        if (this.exit !== null) return;
        this.exit = e;
        live.delete(this);
        resolve(e);
      };
      // 'close' rather than 'exit': it waits for stdout/stderr to be drained.
      child.once('close', (code, signal) => done({ code, signal }));
      child.once('error', (err) => {
        this.stderrTail += `\n${err.message}`;
        if (child.pid === undefined) done({ code: null, signal: null });
      });
    });
  }

  /**
   * Starts `role` and resolves once it printed `ready`; rejects (child killed) otherwise, with
   * a RoleStartError.
   */
  static async start(role: string, args: readonly string[], opts: StartOptions = {}): Promise<RoleProcess> {
    hookProcessExit();
    const [command = process.execPath, ...rest] = [...(opts.prefix ?? []), process.execPath];
    const child = spawn(command, [...rest, CLI, EXIT_WITH_STDIN, role, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const proc = new RoleProcess(role, child);
    live.add(proc);
    try {
      await proc.waitReady(opts.readyTimeoutMs ?? 30_000);
    } catch (e) {
      proc.kill('SIGKILL');
      await proc.exited;
      throw e;
    }
    return proc;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Null while the child runs. */
  get exitStatus(): Exit | null {
    return this.exit;
  }

  get stderr(): string {
    return this.stderrTail;
  }

  private waitReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let ready = false;
      const fail = (why: string, reason: string | null = null) => {
        clearTimeout(timer);
        const err = this.stderrTail.trim();
        reject(new RoleStartError(`${this.role} child ${why}${err ? `; its stderr:\n${err}` : ' (no stderr)'}`, this.role, reason));
      };
      const timer = setTimeout(() => fail(`did not print 'ready' within ${timeoutMs} ms`), timeoutMs);
      createInterface({ input: this.child.stdout }).on('line', (line) => {
        const m = ready ? null : /^ready(?: (.*))?$/.exec(line.trim());
        if (m) {
          ready = true;
          clearTimeout(timer);
          try {
            if (m[1] !== undefined) this.readyInfo = JSON.parse(m[1]) as unknown;
            resolve();
          } catch (e) {
            const why = `${this.role} child printed a malformed ready line: ${e instanceof Error ? e.message : String(e)}`;
            reject(new RoleStartError(why, this.role, null));
          }
        } else if (ready) {
          this.lines.push(line);
        }
      });
      void this.exited.then((e) => {
        const reason = e.code === USER_ERROR_EXIT ? userErrorLine(this.stderrTail) : null;
        if (!ready) fail(`exited (${describeExit(e)}) before it was ready`, reason);
      });
    });
  }

  kill(signal: NodeJS.Signals): void {
    if (this.exit === null) this.child.kill(signal);
  }

  /** The parsed `result <json>` line the child printed, if any. */
  result(): unknown {
    for (let i = this.lines.length - 1; i >= 0; i--) {
      const line = this.lines[i];
      if (line?.startsWith('result ')) return JSON.parse(line.slice('result '.length)) as unknown;
    }
    return undefined;
  }

  /**
   * Asks the child to stop by closing its stdin; SIGTERM after `graceMs`, SIGKILL after twice
   * that, so a stuck child cannot hold its parent forever.
   */
  async stop(graceMs = 5_000): Promise<Stopped> {
    if (this.exit === null) {
      this.child.stdin.end();
      const term = setTimeout(() => this.kill('SIGTERM'), graceMs);
      const kill = setTimeout(() => this.kill('SIGKILL'), 2 * graceMs);
      await this.exited;
      clearTimeout(term);
      clearTimeout(kill);
    }
    const e = await this.exited;
    return { ...e, result: this.result(), stderr: this.stderrTail };
  }

  /** Stops the child and insists that it exited cleanly with a result. */
  async finish(graceMs?: number): Promise<unknown> {
    const s = await this.stop(graceMs);
    if (s.code !== 0 || s.result === undefined) {
      const err = s.stderr.trim();
      throw new Error(
        `${this.role} child ended badly (${describeExit(s)}${s.result === undefined ? ', no result' : ''})` + (err ? `; its stderr:\n${err}` : ''),
      );
    }
    return s.result;
  }
}

/** What a running role offers its parent. */
export interface Role {
  /** Stops the work; the value becomes the `result` line (JSON). */
  stop(): unknown;
  /** Rejects if the role fails on its own while serving. */
  failed?: Promise<never>;
  /** Printed as JSON on the `ready` line, e.g. the addresses the role bound. */
  info?: unknown;
}

/**
 * Runs this process as a role: `start`, print `ready`, serve until SIGTERM or SIGINT (or, under a
 * launcher's EXIT_WITH_STDIN, the end of stdin), print `result <json>` and exit 0. Exits
 * explicitly because a native worker (e.g. the stress writer) may still be running and has no
 * other way to be stopped.
 *
 * If the role fails, the returned promise rejects and the caller must report the error and
 * exit explicitly too: only the caller (the CLI) knows whether it is the user's to fix, and so
 * whether it deserves one line and USER_ERROR_EXIT or a stack trace.
 */
export async function serveRole(start: () => Promise<Role> | Role): Promise<never> {
  hookProcessExit();
  // Not reading stdin, nothing else need hold the event loop (a role may only connect out and
  // be idle): without this timer such a process would end the moment it has nothing to do.
  const keepAlive = setInterval(() => undefined, 2 ** 30);
  const stopRequested = new Promise<void>((resolve) => {
    stopRole = resolve;
    if (stdinEndStops) {
      process.stdin.on('end', resolve);
      process.stdin.on('error', () => resolve());
      process.stdin.resume();
    }
  });
  const role = await start();
  process.stdout.write(role.info === undefined ? 'ready\n' : `ready ${JSON.stringify(role.info)}\n`);
  await Promise.race([stopRequested, role.failed ?? stopRequested]);
  // Already stopping: a signal now means "stop at once".
  stopRole = null;
  const result = await role.stop();
  clearInterval(keepAlive);
  // Pipes to the parent are written synchronously on Linux, so exiting right after is safe.
  process.stdout.write(`result ${JSON.stringify(result)}\n`);
  process.exit(0);
}
