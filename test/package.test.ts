// What `npm install remora` gives someone without a Rust toolchain: the packed main package and
// this platform's addon package, installed into an empty project offline with no cargo or rustc
// on PATH, run the demo. The main tarball carries neither the addon nor the bench code. Bounded:
// at most 45 s to pack and 165 s to install and run.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
// The one target the project builds and tests on (package.json `napi.targets`).
const PLATFORM = 'linux-x64-gnu';
const ADDON = `remora.${PLATFORM}.node`;
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `cmd` in its own process group, killed with everything it started after `ms` or on exit. */
function run(cmd: string, args: readonly string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; ms: number }): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // The group has already exited.
      }
    };
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${opts.ms} ms]`;
      killGroup();
    }, opts.ms);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      killGroup();
      resolve({ code, stdout, stderr });
    });
  });
}

const tarList = async (tgz: string, cwd: string): Promise<string[]> => {
  const r = await run('tar', ['-tzf', tgz], { cwd, ms: 30_000 });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.split('\n').filter((l) => l !== '');
};

const tarManifest = async (tgz: string, cwd: string): Promise<Record<string, unknown>> => {
  const r = await run('tar', ['-xzOf', tgz, 'package/package.json'], { cwd, ms: 30_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
};

/** The first `name` on the current PATH, as npm and npx may live apart from node. */
function onPath(name: string): string {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir !== '' && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`${name} is not on PATH`);
}

/**
 * An environment whose PATH has node, npm, npx and sh but no Rust toolchain: a directory of
 * links to those, then /usr/bin and /bin only where they hold no cargo or rustc.
 */
function rustlessEnv(work: string): NodeJS.ProcessEnv {
  const bin = join(work, 'bin');
  mkdirSync(bin);
  const nodeDir = dirname(process.execPath);
  symlinkSync(process.execPath, join(bin, 'node'));
  for (const tool of ['npm', 'npx']) {
    symlinkSync(existsSync(join(nodeDir, tool)) ? join(nodeDir, tool) : onPath(tool), join(bin, tool));
  }
  symlinkSync('/bin/sh', join(bin, 'sh'));
  const system = ['/usr/bin', '/bin'].filter((d) => !['cargo', 'rustc'].some((t) => existsSync(join(d, t))));
  const env: NodeJS.ProcessEnv = { PATH: [bin, ...system].join(delimiter), HOME: process.env['HOME'] ?? work };
  // Under `npm test` the cache may be configured by environment; the install must use it.
  if (process.env['npm_config_cache'] !== undefined) env['npm_config_cache'] = process.env['npm_config_cache'];
  return env;
}

interface LockEntry {
  dev?: boolean;
  [field: string]: unknown;
}

/**
 * The project's lock: remora and its platform package from the tarballs, and remora's runtime
 * dependencies at the versions of this checkout's lock, whose tarballs the build's install put
 * in the npm cache. A lock is what lets npm install offline: resolving version ranges would
 * need registry metadata that installing from a lock never fetches.
 */
function projectLock(main: Record<string, unknown>, platform: Record<string, unknown>, mainTgz: string, platformTgz: string) {
  const ours = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const runtime = Object.entries(ours.packages).filter(([path, e]) => path !== '' && e.dev !== true);
  return {
    name: 'probe',
    lockfileVersion: 3,
    requires: true,
    packages: {
      '': { name: 'probe', dependencies: { remora: `file:${mainTgz}` } },
      'node_modules/remora': {
        version: main['version'],
        resolved: `file:${mainTgz}`,
        license: main['license'],
        dependencies: main['dependencies'],
        optionalDependencies: main['optionalDependencies'],
        bin: main['bin'],
        engines: main['engines'],
      },
      [`node_modules/remora-${PLATFORM}`]: {
        version: platform['version'],
        resolved: `file:${platformTgz}`,
        license: platform['license'],
        cpu: platform['cpu'],
        os: platform['os'],
        libc: platform['libc'],
        engines: platform['engines'],
        optional: true,
      },
      ...Object.fromEntries(runtime),
    },
  };
}

describe('the published packages', () => {
  let work = '';
  let mainTgz = '';
  let platformTgz = '';

  beforeAll(async () => {
    for (const built of ['dist/ts/cli.js', `ts/native/${ADDON}`]) {
      if (!existsSync(join(ROOT, built))) throw new Error(`${built} is missing: run \`npm run build\` first`);
    }
    work = mkdtempSync(join(tmpdir(), 'remora-package-'));
    const packed = await run(process.execPath, [join(ROOT, 'scripts', 'pack.mjs'), '--out', join(work, 'packs')], { cwd: ROOT, ms: 40_000 });
    expect(packed.code, packed.stderr).toBe(0);
    const tarballs = packed.stdout.trim().split('\n');
    expect(tarballs).toEqual([join(work, 'packs', `remora-${VERSION}.tgz`), join(work, 'packs', `remora-${PLATFORM}-${VERSION}.tgz`)]);
    [mainTgz = '', platformTgz = ''] = tarballs;
  }, 45_000);

  afterAll(() => {
    if (work !== '') rmSync(work, { recursive: true, force: true });
  });

  it('main package: the compiled TypeScript, no addon, no bench code; needs the platform package at its own version', async () => {
    const files = await tarList(mainTgz, work);
    expect(files).toContain('package/dist/ts/cli.js');
    expect(files).toContain('package/dist/ts/native/index.js');
    expect(files.filter((f) => f.endsWith('.node'))).toEqual([]);
    expect(files.filter((f) => !f.startsWith('package/dist/ts/')).sort()).toEqual(['package/LICENSE', 'package/README.md', 'package/package.json']);
    expect(files.filter((f) => f.startsWith('package/dist/bench/') || f.startsWith('package/bench/'))).toEqual([]);
    const main = await tarManifest(mainTgz, work);
    expect(main).toMatchObject({ name: 'remora', version: VERSION, optionalDependencies: { [`remora-${PLATFORM}`]: VERSION } });
    expect(Object.keys(main['optionalDependencies'] as object)).toEqual([`remora-${PLATFORM}`]);
    expect(main['private']).toBeUndefined();
  });

  it('platform package: only the addon, for linux x64 glibc, at the main package version', async () => {
    expect((await tarList(platformTgz, work)).sort()).toEqual(['package/LICENSE', 'package/README.md', 'package/package.json', `package/${ADDON}`]);
    const platform = await tarManifest(platformTgz, work);
    expect(platform).toMatchObject({ name: `remora-${PLATFORM}`, version: VERSION, os: ['linux'], cpu: ['x64'], libc: ['glibc'], main: ADDON });
  });

  it('installs offline with no Rust toolchain, runs both demos, and sends benchmarks to a checkout', async () => {
    const env = rustlessEnv(work);
    const rust = await run('sh', ['-c', 'command -v cargo || command -v rustc'], { cwd: work, env, ms: 10_000 });
    expect(rust.stdout, 'cargo or rustc is still on the PATH').toBe('');
    expect(rust.code).not.toBe(0);

    const project = join(work, 'project');
    mkdirSync(project);
    const main = await tarManifest(mainTgz, work);
    const platform = await tarManifest(platformTgz, work);
    writeFileSync(join(project, 'package.json'), `${JSON.stringify({ name: 'probe', private: true, dependencies: { remora: `file:${mainTgz}` } }, null, 2)}\n`);
    writeFileSync(join(project, 'package-lock.json'), `${JSON.stringify(projectLock(main, platform, mainTgz, platformTgz), null, 2)}\n`);
    const installed = await run('npm', ['ci', '--offline', '--no-audit', '--no-fund'], { cwd: project, env, ms: 40_000 });
    if (installed.code !== 0 && /ENOTCACHED|only-if-cached/.test(installed.stderr)) {
      throw new Error(`the npm cache lacks a runtime dependency of remora (run \`npm ci\` in the checkout with network to fill it):\n${installed.stderr}`);
    }
    expect(installed.code, installed.stderr).toBe(0);
    expect(existsSync(join(project, 'node_modules', `remora-${PLATFORM}`, ADDON))).toBe(true);
    expect(existsSync(join(project, 'node_modules', 'remora', 'dist', 'ts', 'native', ADDON))).toBe(false);

    const demo = await run('npx', ['--offline', 'remora', 'demo', '--seconds', '3'], { cwd: project, env, ms: 75_000 });
    expect(demo.code, demo.stderr).toBe(0);
    expect(demo.stdout).toMatch(/^remora demo: bank on an embedded cluster \(sequencer \+ primary \+ 2 pre-executors\)/m);
    expect(demo.stdout).toMatch(/^ {2}check {8}primary state equals sequential re-execution of all [\d,]+ logged transactions$/m);
    expect(demo.stdout).toMatch(/^ {2}result {7}ok$/m);

    // The one-sided demo's writer role and layout live in ts/, so it runs from the package too.
    const oneside = await run('npx', ['--offline', 'remora', 'demo-oneside', '--seconds', '1'], { cwd: project, env, ms: 30_000 });
    expect(oneside.code, oneside.stderr).toBe(0);
    expect(oneside.stdout).toMatch(/^ {2}result {5}ok$/m);

    const bench = await run('npx', ['--offline', 'remora', 'bench', 'merge', '--quick'], { cwd: project, env, ms: 15_000 });
    expect(bench.code, bench.stderr).toBe(2);
    expect(bench.stderr.split('\n')[0]).toBe('remora: this command runs from a source checkout: the published package leaves out the benchmark code it needs');
  }, 165_000);
});
