// Everything a fresh clone needs before it runs: npm dependencies, the native addon (built from
// source with cargo), and the TypeScript. Each step is skipped when its output is current.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => {
  console.error(`» ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
};
const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);

// Exactly the locked versions, and the committed lock stays byte-identical: `npm ci` when npm
// judges the lock in sync with package.json, else `npm install --no-save`, which installs from
// the lock without writing it. The fallback is for a host where npm rejects a lock written
// elsewhere (npm/cli#9846: an optional package npm cannot fetch there). The platform packages
// are not in package.json (docs/deployment.md), so our own addon never puts the lock out of sync.
const lockFile = join(root, 'package-lock.json');
if (mtime(lockFile) > mtime(join(root, 'node_modules', '.package-lock.json'))) {
  const lock = readFileSync(lockFile);
  const flags = ['--no-audit', '--no-fund'];
  const inSync = spawnSync('npm', ['ci', '--dry-run', '--ignore-scripts', ...flags], { cwd: root, stdio: 'ignore' }).status === 0;
  if (!inSync) console.error('» npm ci rejects package-lock.json here; installing from it without rewriting it');
  run('npm', inSync ? ['ci', ...flags] : ['install', '--no-save', ...flags]);
  if (!readFileSync(lockFile).equals(lock)) throw new Error('npm rewrote package-lock.json; the build must leave it as committed');
}

run('npx', [
  'napi',
  'build',
  '--platform',
  '--release',
  '--manifest-path',
  'bindings/node/Cargo.toml',
  '--package',
  'remora-node',
  '--output-dir',
  'ts/native',
  '--esm',
  '--js',
  'index.js',
  '--dts',
  'index.d.ts',
]);
run('npx', ['tsc', '-p', 'tsconfig.build.json']);

// The compiled loader looks for the addon next to itself.
const native = join(root, 'ts', 'native');
const out = join(root, 'dist', 'ts', 'native');
mkdirSync(out, { recursive: true });
// Copied beside, then renamed into place: a process that has the addon loaded keeps its
// mapping of the old file, where overwriting it in place would crash that process.
for (const f of readdirSync(native)) {
  cpSync(join(native, f), join(out, `.${f}.tmp`));
  renameSync(join(out, `.${f}.tmp`), join(out, f));
}
