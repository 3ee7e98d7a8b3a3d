// Test plumbing: private cluster directories and owner processes driven over stdin.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach } from 'vitest';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import type { RoleProcess } from '../ts/process.js';
import { Store } from '../ts/store.js';

/** xorshift32 in [0, 1): a test's own choices, reproducible from the seed it printed. */
export function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

export function tempCluster(): { dir: string; secret: Buffer; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'remora-vitest-'));
  return { dir, secret: randomBytes(32), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Inside a `describe`: a fresh primary store (in a fresh cluster directory) for each test, closed after it. */
export function primaryStorePerTest(): { readonly store: NativePrimaryStore } {
  let cluster: ReturnType<typeof tempCluster> | null = null;
  let store: NativePrimaryStore | null = null;
  beforeEach(() => {
    cluster = tempCluster();
    store = new NativePrimaryStore(Store.create({ dir: cluster.dir, name: 'primary', secret: cluster.secret }));
  });
  afterEach(() => {
    store?.store.close();
    cluster?.cleanup();
    [store, cluster] = [null, null];
  });
  return {
    get store(): NativePrimaryStore {
      if (!store) throw new Error('primaryStorePerTest: used outside a test');
      return store;
    },
  };
}

/**
 * Inside a `describe`: a fresh cluster directory for each test, and the role processes the test
 * pushes on `children`, stopped (then the directory removed) after it.
 */
export function clusterPerTest(): { readonly dir: string; readonly children: RoleProcess[] } {
  let cluster: ReturnType<typeof tempCluster> | null = null;
  const children: RoleProcess[] = [];
  beforeEach(() => {
    cluster = tempCluster();
  });
  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => c.stop(2000)));
    cluster?.cleanup();
  });
  return {
    get dir() {
      if (cluster === null) throw new Error('clusterPerTest: no test is running');
      return cluster.dir;
    },
    children,
  };
}

/** A store owner in another process; `send` waits for its one-line reply. */
export class OwnerProcess {
  private readonly lines: AsyncIterator<string>;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    this.lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }

  static async start(dir: string, name: string, secret: Buffer): Promise<OwnerProcess> {
    const script = fileURLToPath(new URL('./fixtures/owner.mjs', import.meta.url));
    const child = spawn(process.execPath, [script, dir, name, secret.toString('hex')], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const owner = new OwnerProcess(child);
    const first = await owner.next();
    if (first !== 'ready') throw new Error(`owner did not start: ${first}\n${stderr}`);
    return owner;
  }

  private async next(): Promise<string> {
    const { value, done } = await this.lines.next();
    if (done) throw new Error('owner process exited');
    return value;
  }

  async send(line: string): Promise<string> {
    this.child.stdin.write(`${line}\n`);
    return this.next();
  }

  /** Ends the owner: closing stdin makes it close its store and exit; killed if it hangs. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = new Promise<number | null>((resolve) => this.child.once('exit', resolve));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }
}

/** What a finished child process left: its exit code and output. */
export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The compiled CLI, which the tests run as users would. */
export const CLI = fileURLToPath(new URL('../dist/ts/cli.js', import.meta.url));

/**
 * Runs `node ...args` to its end with stdin closed; a command that does start runs until it is
 * killed, and rejected, at `timeoutMs`: use it for commands that end on their own.
 */
export function runNode(args: readonly string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<Ran> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const child = spawn(process.execPath, [...args], { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.cwd && { cwd: opts.cwd }) });
  let [stdout, stderr] = ['', ''];
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`node ${args.join(' ')} still running after ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs `remora ...args` (the compiled CLI) to its end; see `runNode`. */
export const runCli = (args: readonly string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<Ran> => runNode([CLI, ...args], opts);
