// Every mistake a user must fix, in how they call the CLI or in their files, directories and
// host, is one line on stderr and exit code 2; a bug keeps its stack and exit code 1.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { report, UsageError } from '../ts/cli/errors.js';
import { RoleProcess, RoleStartError } from '../ts/process.js';
import { CLI, runCli, type Ran } from './helpers.js';

const RUN_MS = 15_000;
const run = (args: readonly string[]): Promise<Ran> => runCli(args, { timeoutMs: RUN_MS });

/** Exit code 2 and one `remora: ...` line naming the problem, perhaps a hint line; no stack. */
function expectOneLine(r: Ran, ...names: (string | RegExp)[]): void {
  const lines = r.stderr.trimEnd().split('\n');
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  expect(lines.length, r.stderr).toBeLessThanOrEqual(2);
  expect(lines[0]).toMatch(/^remora: /);
  for (const name of names) {
    if (typeof name === 'string') expect(lines[0]).toContain(name);
    else expect(lines[0]).toMatch(name);
  }
}

/** Waits for a running CLI child's `ready` line on stdout (its JSON, parsed); kills it if none comes in time. */
function ready(child: ChildProcess): Promise<unknown> {
  const lines = createInterface({ input: child.stdout ?? process.stdin });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no ready line within ${RUN_MS} ms; stderr:\n${stderr}`));
    }, RUN_MS);
    lines.on('line', (line) => {
      if (!line.startsWith('ready ')) return;
      clearTimeout(timer);
      resolve(JSON.parse(line.slice('ready '.length)));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited (${String(code)}) before ready; stderr:\n${stderr}`));
    });
  });
}

/** Stops a running CLI child with SIGTERM, as a service manager would (SIGKILL if that hangs); its exit code. */
function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_MS);
  return exited.finally(() => clearTimeout(timer));
}

describe('remora reports a user mistake in one line, exit 2', () => {
  let work = '';
  const dir = (name: string) => join(work, name);
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'remora-cli-errors-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const node = (...args: string[]) => ['start', 'node', '--dir', dir('node'), '--app', 'kv', '--pre-executors', '0', ...args];

  it('start node with a bad --pre-executors', async () => {
    expectOneLine(await run(['start', 'node', '--dir', dir('node'), '--app', 'kv', '--pre-executors', 'abc']), '--pre-executors', "'abc'");
  });

  it('start node with a bad --listen', async () => {
    expectOneLine(await run(node('--listen', 'nonsense')), '--listen', "'nonsense'");
  });

  it('start node with a bad --policy', async () => {
    expectOneLine(await run(node('--policy', 'nope')), '--policy', "'nope'");
  });

  it('start node with an unknown --app', async () => {
    expectOneLine(await run(['start', 'node', '--dir', dir('node'), '--app', 'nope']), 'app package nope is not installed here');
  });

  it('start node or a pre-executor with an app module that is broken', async () => {
    const broken = join(work, 'broken.mjs');
    writeFileSync(broken, "throw new Error('boom at import');\n");
    expectOneLine(await run(['start', 'node', '--dir', dir('broken'), '--app', broken]), /^remora: app module .*broken\.mjs failed to load: boom at import$/);
    const notApp = join(work, 'not-app.mjs');
    writeFileSync(notApp, 'export default 42;\n');
    expectOneLine(
      await run(['start', 'pre-executor', '--join', dir('broken'), '--app', notApp, '--name', 'x']),
      /^remora: app module .*not-app\.mjs: the default export is a number, not an app made by defineApp$/,
    );
  });

  it('start node without --dir, or with an unknown option', async () => {
    expectOneLine(await run(['start', 'node', '--app', 'kv']), '--dir is required');
    expectOneLine(await run(node('--bogus')), "'--bogus'");
  });

  it('start node on a port another process holds', async () => {
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      expectOneLine(await run(node('--listen', `127.0.0.1:${port}`)), `127.0.0.1:${port}`, 'already in use');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('start node in a cluster directory whose log another running node holds; join it with a wrong secret', async () => {
    const first = spawn(process.execPath, [CLI, ...node('--listen', '127.0.0.1:0')], { stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      const { address } = (await ready(first)) as { address: string };
      expectOneLine(await run(node()), 'locked', join(dir('node'), 'log'));
      const wrong = dir('wrong.secret');
      writeFileSync(wrong, randomBytes(32), { mode: 0o600 });
      expectOneLine(await run(['start', 'pre-executor', '--join', address, '--secret-file', wrong, '--app', 'kv', '--name', 'far']), 'handshake', address);
    } finally {
      expect(await stop(first)).toBe(0);
    }
  });

  it('start node in a cluster directory open to others', async () => {
    const open = dir('open');
    mkdirSync(open);
    chmodSync(open, 0o755);
    expectOneLine(await run(['start', 'node', '--dir', open, '--app', 'kv', '--pre-executors', '0']), open, /0755|permission/);
  });

  it('start heron with a missing or invalid cluster file', async () => {
    const missing = dir('missing.json');
    expectOneLine(await run(['start', 'heron', '--config', missing, '--dir', dir('heron')]), missing, /cannot read|no such file|ENOENT/);
    const bad = dir('bad.json');
    writeFileSync(bad, '{"app": "kv",');
    expectOneLine(await run(['start', 'heron', '--config', bad, '--dir', dir('heron')]), bad, /JSON/);
  });

  it('start pre-executor with a secret file that is not there', async () => {
    const secret = dir('no.secret');
    expectOneLine(await run(['start', 'pre-executor', '--join', '127.0.0.1:1', '--secret-file', secret, '--app', 'kv', '--name', 'x']), secret);
  });

  it('an unknown bench suite, command or start target', async () => {
    expectOneLine(await run(['bench', 'nosuch']), "'nosuch'");
    expectOneLine(await run(['frobnicate']), "unknown command 'frobnicate'");
    expectOneLine(await run(['start', 'nothing']), "'nothing'");
  });

  it("a role child's one-line reason reaches its parent, and is reported as one line", async () => {
    const [role = 'start', ...args] = node('--policy', 'nope');
    const started = RoleProcess.start(role, args, { readyTimeoutMs: RUN_MS });
    const e: unknown = await started.then(
      () => null,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(RoleStartError);
    const failed = e as RoleStartError;
    expect(failed.reason).toMatch(/^--policy must be one of .*'nope'$/);
    const r = report(failed);
    expect(r.exitCode).toBe(2);
    expect(r.text).toBe(`remora: start: ${failed.reason}\n`);
  });
});

describe('report', () => {
  it('keeps the stack of an unexpected failure, exit 1', () => {
    const r = report(new Error('boom'));
    expect(r.exitCode).toBe(1);
    expect(r.text).toMatch(/^remora: Error: boom\n\s+at /);
  });

  it('makes known system and native failures one line, exit 2', () => {
    const inUse = Object.assign(new Error('listen EADDRINUSE: address already in use 127.0.0.1:7'), {
      code: 'EADDRINUSE',
      syscall: 'listen',
      address: '127.0.0.1',
      port: 7,
    });
    expect(report(inUse)).toEqual({ exitCode: 2, text: 'remora: cannot listen on 127.0.0.1:7: address already in use\n' });
    expect(report(new Error('binding 127.0.0.1:7: Address already in use (os error 98)')).exitCode).toBe(2);
    expect(report(new Error("store 'primary' is owned by a live process")).text).toMatch(/^remora: store 'primary' is owned by another running process/);
    expect(report(new Error('outer', { cause: new UsageError('--x must be\nsomething') })).text).toBe(
      "remora: --x must be something\nrun 'remora help' for usage\n",
    );
  });
});
