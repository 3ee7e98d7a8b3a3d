// The whole test suite, in the order that fails fastest: formatting and lints, the Rust tests
// (unit, cross-process stress, the loom model), then the TypeScript checks and vitest.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args, env = {}) => {
  console.error(`» ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
};

run('cargo', ['fmt', '--all', '--check']);
run('cargo', ['clippy', '--workspace', '--all-targets', '--release', '--', '-D', 'warnings']);
run('cargo', ['test', '--workspace', '--release']);
// loom needs its own cfg, hence its own target directory (keeps the main build cached).
run('cargo', ['test', '-p', 'remora-core', '--release', '--test', 'loom_slot'], {
  RUSTFLAGS: '--cfg loom',
  CARGO_TARGET_DIR: join(root, 'target', 'loom'),
});
run('npx', ['eslint', '.']);
run('npx', ['prettier', '--check', '.']);
run('npx', ['tsc', '--noEmit', '-p', 'tsconfig.json']);
run('npx', ['vitest', 'run']);
