// Applications as modules (docs/apps.md): `--app SPEC` names a built-in app, a file, or an
// installed package whose default export is a `defineApp` result. Every member of a cluster
// loads the app by the same spec and computes the app's digest: the module and every file it
// imports from its own package, so members running different code are told apart before they
// execute anything.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { App } from './app.js';

/** An app and what identifies its code. */
export interface LoadedApp {
  app: App;
  /** The spec as every member must be given it: a built-in name, an absolute path, or a package. */
  spec: string;
  /** Hex SHA-256 over the app's own source files (relative path and bytes, sorted). */
  digest: string;
  /** The module's other exports (e.g. `workload`, for `remora check`). */
  exports?: Readonly<Record<string, unknown>>;
}

/** A spec that does not give a usable application; the message says what to fix. */
export class AppLoadError extends Error {
  override name = 'AppLoadError';
}

const BUILTIN_MODULES: Record<string, string> = {
  bank: '../apps/builtin-bank.js',
  kv: '../apps/builtin-kv.js',
  work: '../apps/builtin-work.js',
  tpcc: '../apps/builtin-tpcc.js',
};

const isPath = (spec: string): boolean => spec.startsWith('.') || isAbsolute(spec) || /\.(m?js|cjs|ts)$/.test(spec);

/** Where `spec` lives, as a file. */
function locate(spec: string, cwd: string): { file: string; spec: string } {
  const builtin = Object.hasOwn(BUILTIN_MODULES, spec) ? BUILTIN_MODULES[spec] : undefined;
  if (builtin !== undefined) return { file: sourceFile(fileURLToPath(new URL(builtin, import.meta.url))), spec };
  if (isPath(spec)) {
    const file = resolve(cwd, spec);
    if (!existsSync(file)) throw new AppLoadError(`app module ${file} does not exist`);
    return { file, spec: file };
  }
  return { file: resolvePackage(spec, cwd), spec };
}

/** The entry file of an installed package, found from `cwd` the way Node finds `import 'name'`. */
function resolvePackage(name: string, cwd: string): string {
  if (!/^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i.test(name)) {
    throw new AppLoadError(`--app ${JSON.stringify(name)} is neither a built-in app (bank, kv), a path, nor a package name`);
  }
  for (let dir = resolve(cwd); ; dir = dirname(dir)) {
    const root = join(dir, 'node_modules', name);
    if (existsSync(join(root, 'package.json'))) return join(root, packageEntry(root));
    if (dirname(dir) === dir) break;
  }
  throw new AppLoadError(`app package ${name} is not installed here (looked in node_modules from ${cwd} up); npm install it, or give a path`);
}

function packageEntry(root: string): string {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { exports?: unknown; main?: unknown };
  let e: unknown = pkg.exports;
  if (typeof e === 'object' && e !== null && '.' in e) e = (e as Record<string, unknown>)['.'];
  while (typeof e === 'object' && e !== null) {
    const conditions = e as Record<string, unknown>;
    e = conditions['import'] ?? conditions['node'] ?? conditions['default'];
  }
  if (typeof e === 'string') return e;
  return typeof pkg.main === 'string' ? pkg.main : 'index.js';
}

/** `file`, or its TypeScript source when run from sources (tests), where imports name `.js`. */
function sourceFile(file: string): string {
  if (existsSync(file) || !file.endsWith('.js')) return file;
  const ts = `${file.slice(0, -3)}.ts`;
  return existsSync(ts) ? ts : file;
}

/** The directory of the nearest package.json above `file`: what counts as the app's own code. */
function packageRoot(file: string): string {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return dirname(file);
  }
}

// Static imports and re-exports, and dynamic imports of a literal: enough to follow an app's
// own relative imports. Anything else (a bare package, a computed path) is outside its package.
const IMPORT = /(?:\bimport|\bexport)\s[^'";]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

/** Hex SHA-256 over `entry` and every file of its package it imports, transitively. */
export function appDigest(entry: string): string {
  const root = packageRoot(entry);
  const seen = new Map<string, Buffer>();
  const queue = [entry];
  for (let file = queue.pop(); file !== undefined; file = queue.pop()) {
    if (seen.has(file) || !existsSync(file) || !statSync(file).isFile()) continue;
    const bytes = readFileSync(file);
    seen.set(file, bytes);
    for (const m of bytes.toString('utf8').matchAll(IMPORT)) {
      const spec = m[1] ?? m[2] ?? m[3] ?? '';
      if (!spec.startsWith('.')) continue;
      const target = sourceFile(resolve(dirname(file), spec));
      if (target === root || target.startsWith(root + sep)) queue.push(target);
    }
  }
  const h = createHash('sha256').update('remora.app.v1\0');
  for (const file of [...seen.keys()].sort()) {
    const bytes = seen.get(file) ?? Buffer.alloc(0);
    h.update(relative(root, file)).update('\0').update(String(bytes.length)).update('\0').update(bytes);
  }
  return h.digest('hex');
}

/**
 * A built-in app is Remora's own code: its identity is the package's name and version, which
 * is the same whether Remora runs from its compiled files or (in its own tests) its sources.
 */
function builtinDigest(name: string, file: string): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot(file), 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
  return createHash('sha256')
    .update(`remora.app.v1\0builtin:${name}:${String(pkg.name)}@${String(pkg.version)}`)
    .digest('hex');
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** Checks that `v` is an application; `where` names the module in errors. */
export function checkApp(v: unknown, where: string): App {
  if (v === undefined) throw new AppLoadError(`app module ${where} has no default export (export default defineApp({ … }))`);
  if (!isRecord(v)) throw new AppLoadError(`app module ${where}: the default export is a ${typeof v}, not an app made by defineApp`);
  if (typeof v['name'] !== 'string' || v['name'] === '') throw new AppLoadError(`app module ${where}: the app has no name`);
  if (!isRecord(v['commands'])) throw new AppLoadError(`app module ${where}: app ${v['name']} has no commands object`);
  for (const [name, fn] of Object.entries(v['commands'])) {
    if (name.startsWith('remora.')) throw new AppLoadError(`app module ${where}: command ${name}: names starting with "remora." are reserved for the node`);
    if (typeof fn !== 'function') throw new AppLoadError(`app module ${where}: command ${name} of app ${v['name']} is a ${typeof fn}, not a function`);
  }
  if (typeof v['objects'] !== 'function') throw new AppLoadError(`app module ${where}: app ${v['name']} has no objects(command, args) function`);
  if (v['partition'] !== undefined && typeof v['partition'] !== 'function') {
    throw new AppLoadError(`app module ${where}: app ${v['name']}'s partition is not a function`);
  }
  return v as unknown as App;
}

/** Loads the app `spec` names (relative paths from `cwd`); one clear `AppLoadError` if it cannot. */
export async function loadAppModule(spec: string, cwd = process.cwd()): Promise<LoadedApp> {
  if (typeof spec !== 'string' || spec === '') throw new AppLoadError('--app needs a built-in app name, a path or a package name');
  const where = locate(spec, cwd);
  let mod: unknown;
  try {
    mod = await import(pathToFileURL(where.file).href);
  } catch (e) {
    throw new AppLoadError(`app module ${where.spec} failed to load: ${e instanceof Error ? e.message : String(e)}`);
  }
  const app = checkApp(isRecord(mod) ? mod['default'] : undefined, where.spec);
  const builtin = Object.hasOwn(BUILTIN_MODULES, spec);
  return {
    app,
    spec: where.spec,
    digest: builtin ? builtinDigest(spec, where.file) : appDigest(where.file),
    exports: isRecord(mod) ? mod : {},
  };
}
