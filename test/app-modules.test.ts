// Users' own applications (docs/apps.md): loaded from a path or a package by every member, told
// apart by digest, recorded in the log, and upgraded at a position of the log under load with
// the state still equal to sequential execution.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AppLoadError, loadAppModule } from '../ts/app/module.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { encodeBody, type Transaction } from '../ts/app/tx.js';
import { readAppHeader, versionsForLog } from '../ts/app/versions.js';
import { EmbeddedCluster, NODE_SOCKET } from '../ts/cluster.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { RoleProcess } from '../ts/process.js';
import { RemoraClient } from '../ts/client.js';

import { loadClientSecret } from '../ts/secret.js';
import { runCli, tempCluster, xorshift } from './helpers.js';

/** A counter app whose `add` multiplies by `factor`: two versions differ in one number. */
const counterSource = (factor: number, extra = '') => `${extra}
export default {
  name: 'counter',
  commands: {
    add(ctx, args) {
      const n = (ctx.read('c/' + args.key) ?? 0) + args.by * ${factor};
      ctx.write('c/' + args.key, n);
      return n;
    },
  },
  objects: (_command, args) => ['c/' + args.key],
};
`;

let serial = 0;
/** Each call a new transaction (`n` makes bodies differ), so none is deduplicated. */
const add = (key: string, by: number): Transaction => ({ body: encodeBody('add', { by, key, n: serial++ }, [`c/${key}`]), auth: [] });

describe('app modules', () => {
  let tmp: ReturnType<typeof tempCluster>;
  beforeEach(() => {
    tmp = tempCluster();
  });
  afterEach(() => tmp.cleanup());

  const file = (rel: string, text: string): string => {
    const path = join(tmp.dir, rel);
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, text);
    return path;
  };

  it('load a built-in, a path and an installed package; the digest covers the package files imported', async () => {
    expect((await loadAppModule('kv')).app.name).toBe('kv');
    const path = file('app/counter.mjs', counterSource(1, "import { tag } from './tag.mjs';"));
    file('app/tag.mjs', "export const tag = 'v1';");
    file('app/package.json', '{"name": "counter-app", "type": "module"}');
    const a = await loadAppModule(path);
    expect(a.app.name).toBe('counter');
    expect(a.spec).toBe(path);
    expect(a.digest).toMatch(/^[0-9a-f]{64}$/);
    // Relative to the working directory, the same module and digest.
    expect(await loadAppModule('./app/counter.mjs', tmp.dir)).toMatchObject({ spec: path, digest: a.digest });
    // A file it imports from its own package is part of its code; an unrelated one is not.
    file('app/unrelated.mjs', 'export const x = 1;');
    expect((await loadAppModule(path)).digest).toBe(a.digest);
    file('app/tag.mjs', "export const tag = 'v2';");
    expect((await loadAppModule(path)).digest).not.toBe(a.digest);
    // An installed package, found from the working directory like `import 'name'`.
    file('node_modules/my-counter/package.json', '{"name": "my-counter", "type": "module", "exports": {".": {"import": "./lib/app.mjs"}}}');
    file('node_modules/my-counter/lib/app.mjs', counterSource(3));
    const pkg = await loadAppModule('my-counter', join(tmp.dir, 'app'));
    expect(pkg).toMatchObject({ spec: 'my-counter' });
    expect(pkg.app.name).toBe('counter');
  });

  it('refuse bad modules with one clear error each', async () => {
    const cases: [string, string, RegExp][] = [
      ['none.mjs', 'export const app = 1;', /^app module .*none\.mjs has no default export \(export default defineApp\(\{ … \}\)\)$/],
      ['num.mjs', 'export default 42;', /^app module .*num\.mjs: the default export is a number, not an app made by defineApp$/],
      [
        'cmd.mjs',
        "export default { name: 'x', commands: { go: 'no' }, objects: () => [] };",
        /^app module .*cmd\.mjs: command go of app x is a string, not a function$/,
      ],
      ['throws.mjs', "throw new Error('boom at import');", /^app module .*throws\.mjs failed to load: boom at import$/],
      [
        'reserved.mjs',
        "export default { name: 'x', commands: { 'remora.upgrade': () => 1 }, objects: () => [] };",
        /command remora\.upgrade: names starting with "remora\." are reserved/,
      ],
      ['noobjects.mjs', "export default { name: 'x', commands: {} };", /app x has no objects\(command, args\) function$/],
    ];
    for (const [name, text, error] of cases) {
      const path = file(`bad/${name}`, text);
      const e = await loadAppModule(path).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(AppLoadError);
      expect((e as Error).message).toMatch(error);
    }
    await expect(loadAppModule(join(tmp.dir, 'missing.mjs'))).rejects.toThrow(/^app module .*missing\.mjs does not exist$/);
    await expect(loadAppModule('not-installed-anywhere', tmp.dir)).rejects.toThrow(/^app package not-installed-anywhere is not installed here/);
  });

  it('runs a path app on a cluster whose pre-executors load it; refuses a member with other code, naming both digests', async () => {
    const v1 = file('app/counter.mjs', counterSource(1));
    const other = file('other/counter.mjs', counterSource(5));
    const dir = join(tmp.dir, 'cluster');
    const cluster = await EmbeddedCluster.start({ dir, app: v1, preExecutors: 1, log: () => undefined });
    try {
      expect((await cluster.node.submit(add('a', 2))).outcome).toEqual({ status: 'ok', result: 2 });
      const refused = await RoleProcess.start('start', ['pre-executor', '--join', dir, '--app', other, '--name', 'stranger']).catch((e: unknown) => e);
      expect(String((refused as Error).message)).toMatch(
        /remora: pre-executor stranger loaded app .*other\/counter\.mjs with digest [0-9a-f]{12}, but the node runs counter [0-9a-f]{12} \(.*app\/counter\.mjs\): start it with the same --app/,
      );
      expect(cluster.node.members).toEqual(['pre-1']);
      expect(readAppHeader(join(dir, 'log'))).toEqual([{ after: '0', spec: v1, digest: (await loadAppModule(v1)).digest }]);
    } finally {
      await cluster.close();
    }
    // The log remembers its code: a restart with other code is refused unless it is an upgrade.
    await expect(EmbeddedCluster.start({ dir, app: other, preExecutors: 0 })).rejects.toThrow(
      /^this cluster's log was written by app counter [0-9a-f]{12} \(.*\), but .*other\/counter\.mjs has digest [0-9a-f]{12}: the code differs; to run the new code from the next position of the log, start with --upgrade$/,
    );
    const upgraded = await EmbeddedCluster.start({ dir, app: other, preExecutors: 0, upgrade: true, log: () => undefined });
    try {
      // The first add ran with v1 (×1) before; from the upgrade on, ×5.
      expect((await upgraded.node.submit(add('a', 1))).outcome).toEqual({ status: 'ok', result: 7 });
      expect(readAppHeader(join(dir, 'log'))?.map((e) => e.spec)).toEqual([v1, other]);
    } finally {
      await upgraded.close();
    }
  });

  it('upgrades a running node from the command line; a module that does not load changes nothing', async () => {
    const v1 = file('v1/counter.mjs', counterSource(1));
    const v2 = file('v2/counter.mjs', counterSource(100));
    const broken = file('v3/counter.mjs', "throw new Error('not today');");
    const dir = join(tmp.dir, 'cluster');
    const node = await RoleProcess.start('start', ['node', '--dir', dir, '--app', v1, '--pre-executors', '1']);
    try {
      const client = await RemoraClient.connect({ path: join(dir, NODE_SOCKET), secret: loadClientSecret(dir) });
      expect((await client.submit(add('a', 1))).outcome).toEqual({ status: 'ok', result: 1 });
      const failed = await runCli(['upgrade', '--dir', dir, '--app', broken]);
      expect(failed.code).toBe(2);
      expect(failed.stderr).toMatch(/^remora: upgrade to .*v3\/counter\.mjs failed: app module .*v3\/counter\.mjs failed to load: not today\n$/);
      expect((await client.submit(add('a', 1))).outcome).toEqual({ status: 'ok', result: 2 });
      const done = await runCli(['upgrade', '--dir', dir, '--app', v2]);
      expect(done.code).toBe(0);
      expect(done.stdout).toMatch(/^upgraded to counter [0-9a-f]{12} \(.*v2\/counter\.mjs\): active after 3\n$/);
      expect((await client.submit(add('a', 1))).outcome).toEqual({ status: 'ok', result: 102 });
    } finally {
      await node.stop(5000);
    }
    expect(readAppHeader(join(dir, 'log'))?.map((e) => [e.after, e.spec])).toEqual([
      ['0', v1],
      ['3', v2],
    ]);
  });

  it('upgrades under load at one position of the log: every transaction runs with the version active at its timestamp', async () => {
    const seed = Number(process.env['UPGRADE_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`app upgrade seed ${seed} (UPGRADE_SEED to replay)`);
    const rand = xorshift(seed);
    const v1 = file('v1/counter.mjs', counterSource(1));
    const v2 = file('v2/counter.mjs', counterSource(10));
    const dir = join(tmp.dir, 'cluster');
    const cluster = await EmbeddedCluster.start({ dir, app: v1, preExecutors: 2, log: () => undefined });
    const outcomes = new Map<bigint, unknown>();
    let upgradeTs = 0n;
    try {
      const load = async (n: number) => {
        const inFlight: Promise<void>[] = [];
        for (let i = 0; i < n; i++) {
          const key = `k${Math.floor(rand() * 20)}`;
          inFlight.push(cluster.node.submit(add(key, 1 + Math.floor(rand() * 3))).then((r) => void outcomes.set(r.ts, r.outcome)));
          if (inFlight.length >= 64) await Promise.all(inFlight.splice(0));
        }
        await Promise.all(inFlight);
      };
      // The upgrade is sequenced while transactions are in flight on both sides of it.
      const [, up] = await Promise.all([load(3000), load(200).then(() => cluster.upgrade(v2)), load(3000)]);
      upgradeTs = up.ts;
      expect(up.version.spec).toBe(v2);
      await load(500);
      expect(cluster.node.versions.all.map((v) => [v.spec, v.after])).toEqual([
        [v1, 0n],
        [v2, upgradeTs],
      ]);
    } finally {
      await cluster.close();
    }
    const entries = await readSequence(join(dir, 'log'));
    const upgradeEntry = entries.find((e) => e.tx.command === 'remora.upgrade');
    expect(upgradeEntry?.ts).toBe(upgradeTs);
    const before = entries.filter((e) => e.ts < upgradeTs).length;
    const after = entries.filter((e) => e.ts > upgradeTs).length;
    expect(before).toBeGreaterThan(0);
    expect(after).toBeGreaterThan(0);
    // The reference executor, given the versions the log's header names, agrees on everything.
    const v2Loaded = await loadAppModule(v2);
    const { versions } = await versionsForLog(join(dir, 'log'), v2Loaded, {});
    const reference = executeSequentially(versions, entries, nativeFunctions);
    for (const [ts, outcome] of outcomes) expect(reference.outcomes.get(ts)).toEqual(outcome);
    // A restart replays with both versions and reaches the same state.
    const restarted = await EmbeddedCluster.start({ dir, app: v2, preExecutors: 0, log: () => undefined });
    try {
      await restarted.replayed();
      expect(restarted.store.digest()).toBe(reference.state.digest());
    } finally {
      await restarted.close();
    }
  });
});
