// Everything a fresh clone needs before it runs: npm dependencies, the native addon (built from
// source with cargo), and the TypeScript. Each step is skipped when its output is current.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, renameSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => {
  console.error(`» ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
};
const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);

// `npm install` rather than `npm ci`: npm omits other platforms' optional packages from the
// lock file and `npm ci` then rejects the lock as out of sync (npm/cli#9846). With a lock that
// satisfies package.json, `npm install` installs exactly the locked versions.
if (mtime(join(root, 'package-lock.json')) > mtime(join(root, 'node_modules', '.package-lock.json'))) {
  run('npm', ['install', '--no-audit', '--no-fund']);
}

run('npx', [
  'napi', 'build', '--platform', '--release',
  '--manifest-path', 'bindings/node/Cargo.toml', '--package', 'remora-node',
  '--output-dir', 'ts/native', '--esm', '--js', 'index.js', '--dts', 'index.d.ts',
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
