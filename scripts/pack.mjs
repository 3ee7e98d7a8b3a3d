// The tarballs a release publishes, the napi-rs way: one package per `napi.targets` entry
// holding only that target's addon (npm/<platform>/package.json: name, os, cpu, libc, main),
// and the main package from the built dist/ts with no addon and no bench code, whose
// optionalDependencies name every platform package at exactly its own version, as
// `napi prepublish` would write them. The committed package.json leaves them out (see
// docs/deployment.md): in a checkout the addon is built from source, and naming an unpublished
// package there makes `npm ci` reject the lock file.
//
//   node scripts/pack.mjs [--out DIR] [--addons DIR]
//
// --addons: where the `remora.<platform>.node` files are (default ts/native, the local build; a
// release collects every target's build there first). --out: where the tarballs go (default
// target/npm). Prints the tarballs' paths, the main package first. Nothing in the tree changes.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readNapiConfig } from '@napi-rs/cli';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { out: { type: 'string' }, addons: { type: 'string' } } });
const out = resolve(values.out ?? join(root, 'target', 'npm'));
const addons = resolve(values.addons ?? join(root, 'ts', 'native'));

class PackError extends Error {}
const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'));

/** `npm pack` of a staged directory into `out`; the tarball's path. */
function pack(dir) {
  const json = execFileSync('npm', ['pack', '--json', '--pack-destination', out], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  return join(out, JSON.parse(json)[0].filename);
}

/**
 * Packs everything; the tarballs' paths, the main package first. Takes napi-rs's own reading of
 * the `napi` field, so the targets and names are the ones `napi build` uses.
 */
function main({ targets, binaryName, packageName, packageJson }) {
  if (!existsSync(join(root, 'dist', 'ts', 'cli.js'))) throw new PackError('dist/ts is not built: run `npm run build` first');
  mkdirSync(out, { recursive: true });
  const stage = mkdtempSync(join(tmpdir(), 'remora-pack-'));
  try {
    const optionalDependencies = {};
    const platformTarballs = [];
    for (const target of targets) {
      const platform = target.platformArchABI;
      const dir = join(root, 'npm', platform);
      if (!existsSync(join(dir, 'package.json'))) {
        throw new PackError(`no npm/${platform}/package.json for target ${target.triple}: run \`npx napi create-npm-dirs\``);
      }
      const pkg = readJson(join(dir, 'package.json'));
      const name = `${packageName}-${platform}`;
      const addon = `${binaryName}.${platform}.node`;
      if (pkg.name !== name || pkg.main !== addon) throw new PackError(`npm/${platform}/package.json must be named ${name} with main ${addon}`);
      // The loader takes whatever platform package is installed; only equal versions are known
      // to match the JavaScript that calls them.
      if (pkg.version !== packageJson.version) {
        throw new PackError(`npm/${platform}/package.json is version ${pkg.version} but the main package is ${packageJson.version}; they move in lockstep`);
      }
      const built = join(addons, addon);
      if (!existsSync(built)) throw new PackError(`no ${addon} in ${addons}: build it for ${target.triple}, or pass --addons DIR`);
      const staged = join(stage, platform);
      cpSync(dir, staged, { recursive: true });
      cpSync(built, join(staged, addon));
      cpSync(join(root, 'LICENSE'), join(staged, 'LICENSE'));
      platformTarballs.push(pack(staged));
      optionalDependencies[name] = packageJson.version;
    }

    const main = join(stage, packageName);
    mkdirSync(main);
    for (const f of ['README.md', 'LICENSE']) cpSync(join(root, f), join(main, f));
    // The addon comes from the platform package; `files` excludes it too, this keeps the stage honest.
    cpSync(join(root, 'dist', 'ts'), join(main, 'dist', 'ts'), { recursive: true, filter: (p) => !p.endsWith('.node') });
    const manifest = { ...packageJson, optionalDependencies: { ...packageJson.optionalDependencies, ...optionalDependencies } };
    // `private` keeps `npm publish` from shipping the checkout itself, whose manifest lacks the
    // platform packages; the packed manifest is the one to publish.
    delete manifest.private;
    writeFileSync(join(main, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    return [pack(main), ...platformTarballs];
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

try {
  const tarballs = main(await readNapiConfig(join(root, 'package.json')));
  process.stdout.write(`${tarballs.join('\n')}\n`);
} catch (e) {
  if (!(e instanceof PackError)) throw e;
  process.stderr.write(`pack: ${e.message}\n`);
  process.exitCode = 1;
}
