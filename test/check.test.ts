// `remora check`: passes the token example with the exact outcome counts its seed gives, and
// fails, in one line with exit code 2, an app whose command reads the clock, one without a
// workload, and one that diverges in a way the guard cannot see.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Outcome } from '../ts/app/exec.js';
import { loadAppModule } from '../ts/app/module.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { decodeTx, type DecodedTx, type Transaction } from '../ts/app/tx.js';
import { makeTx } from '../ts/app/app.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { RoleProcess } from '../ts/process.js';
import { runCli, tempCluster, type Ran } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TOKEN = fileURLToPath(new URL('../examples/token/token.mjs', import.meta.url));
const RUN_MS = 90_000;
const remora = (args: readonly string[], cwd = ROOT): Promise<Ran> => runCli(args, { cwd, timeoutMs: RUN_MS });

/** The one `remora: …` line a failed check ends with; its progress lines come before. */
function failure(r: { code: number | null; stderr: string }): string {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  const lines = r.stderr.trimEnd().split('\n');
  expect(
    lines.filter((l) => l.startsWith('remora: ')),
    r.stderr,
  ).toHaveLength(1);
  return lines.at(-1) ?? '';
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// Apps a user might write, in a directory with Remora installed (a link to this repository),
// importing it by name as their project would.
const APPS: Record<string, string> = {
  'clock.mjs': `
import { defineApp, makeTx } from 'remora';
const app = defineApp({
  name: 'clock',
  commands: {
    put(ctx, args) { ctx.write('k/' + args.key, args.value); return null; },
    stamp(ctx, args) { ctx.write('k/' + args.key, Date.now()); return null; },
  },
  objects: (_command, args) => ['k/' + args.key],
});
export default app;
export function* workload(seed) {
  for (let i = 0; ; i++) yield i % 10 === 9 ? makeTx(app, 'stamp', { key: i % 7 }) : makeTx(app, 'put', { key: i % 7, value: seed + i });
}
`,
  'no-workload.mjs': `
import { defineApp } from 'remora';
export default defineApp({ name: 'idle', commands: { noop: () => null }, objects: () => [] });
`,
  // process.pid is a value, not a call: the guard cannot see it, but it differs between members.
  'pid.mjs': `
import { defineApp, makeTx } from 'remora';
const app = defineApp({
  name: 'pid',
  commands: { note(ctx, args) { ctx.write('k/' + args.key, process.pid); return process.pid; } },
  objects: (_command, args) => ['k/' + args.key],
});
export default app;
export function* workload() { for (let i = 0; ; i++) yield makeTx(app, 'note', { key: i }); }
`,
};

describe('remora check', () => {
  let project = '';
  beforeAll(() => {
    project = mkdtempSync(join(tmpdir(), 'remora-project-'));
    mkdirSync(join(project, 'node_modules'));
    symlinkSync(ROOT, join(project, 'node_modules', 'remora'), 'dir');
    for (const [name, source] of Object.entries(APPS)) writeFileSync(join(project, name), source);
  });
  afterAll(() => {
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it('passes the token example, with the outcome counts sequential execution of its workload gives', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE() >>> 1);
    console.log(`check test: token workload seed ${seed} (REMORA_SEED to replay)`);
    const count = 1500;
    // What the check must find: the first `count` transactions, run one by one; a repeated
    // transaction is one transaction, answered with its first outcome.
    const { workload } = (await import(TOKEN)) as { workload: (seed: number) => Iterator<Transaction> };
    const it = workload(seed);
    const txs: DecodedTx[] = Array.from({ length: count }, () => decodeTx(it.next().value as Transaction));
    const unique = [...new Map(txs.map((tx) => [tx.digest, tx])).values()];
    const { app, digest } = await loadAppModule(TOKEN);
    const reference = executeSequentially(
      app,
      unique.map((tx, i) => ({ ts: BigInt(i + 1), tx })),
      nativeFunctions,
    );
    const outcomeOf = new Map(unique.map((tx, i) => [tx.digest, reference.outcomes.get(BigInt(i + 1)) as Outcome]));
    const committed = txs.filter((tx) => outcomeOf.get(tx.digest)?.status === 'ok').length;
    // The mix has both, so the counts below say something.
    expect(committed).toBeGreaterThan(0);
    expect(committed).toBeLessThan(count);

    const r = await remora(['check', '--app', 'examples/token/token.mjs', '--transactions', String(count), '--seed', String(seed)]);
    expect(r.code, r.stderr).toBe(0);
    const pctRe = '\\d+\\.\\d %';
    expect(r.stdout).toMatch(
      new RegExp(
        `^${escape(`remora check: ok: app token ${digest.slice(0, 12)}, seed ${seed}: 1,500 transactions (`)}` +
          `${escape(`${committed.toLocaleString('en-US')} committed, ${(count - committed).toLocaleString('en-US')} aborted, ${count - unique.length} duplicates) in `)}` +
          `\\d+\\.\\d s on 2 guarded pre-executors \\(adopted ${pctRe}, re-executed ${pctRe}, executed alone ${pctRe}\\); ` +
          `${escape('the guard saw no clock, randomness or I/O, and the state and every outcome equal sequential re-execution')}\n$`,
      ),
    );
    expect(r.stderr).toContain(`seed ${seed}`);
  });

  it('fails an app whose command reads the clock, naming the command and Date.now()', async () => {
    const line = failure(await remora(['check', '--app', './clock.mjs', '--seed', '1'], project));
    expect(line).toMatch(
      new RegExp(
        `^remora: check failed in (the primary|pre-executor pre-[12]): ${escape(
          'command stamp called Date.now(), which differs between members; commands may only use ctx, their arguments and pure computation (docs/apps.md)',
        )}$`,
      ),
    );
  });

  it('runs pre-executor processes under the guard when REMORA_DETERMINISM_GUARD=1 is in their environment', async () => {
    const tmp = tempCluster();
    const spec = join(project, 'clock.mjs');
    const cluster = await EmbeddedCluster.start({ dir: tmp.dir, app: spec, preExecutors: 0, localWhenAlone: false });
    let member: RoleProcess | null = null;
    try {
      // How `remora check` reaches its children: they inherit its environment.
      process.env['REMORA_DETERMINISM_GUARD'] = '1';
      try {
        member = await RoleProcess.start('start', ['pre-executor', '--join', tmp.dir, '--app', spec, '--name', 'g']);
      } finally {
        delete process.env['REMORA_DETERMINISM_GUARD'];
      }
      const { app } = await loadAppModule(spec);
      // This process has no guard: the primary executes the command itself once the member is gone.
      const reply = await cluster.node.submit(makeTx(app, 'stamp', { key: 1 } as never));
      expect(reply.outcome?.status).toBe('ok');
      expect(reply.decision).toBe('executed');
      const exit = await member.exited;
      // A command breaking determinism is the app's to fix: one line, the user-error exit code.
      expect(exit.code).toBe(2);
      expect(member.stderr).toContain('remora: command stamp called Date.now(), which differs between members');
      expect(member.stderr.split('\n')[0]).toBe(
        'pre-executor g: command stamp called Date.now(), which differs between members; ' +
          'commands may only use ctx, their arguments and pure computation (docs/apps.md); closing',
      );
    } finally {
      await member?.stop(2000);
      await cluster.close();
      tmp.cleanup();
    }
  });

  it('fails an app without a workload export, saying what to add', async () => {
    const line = failure(await remora(['check', '--app', './no-workload.mjs'], project));
    expect(line).toBe(
      'remora: app module ./no-workload.mjs has no workload export: remora check and remora bench app drive an app with ' +
        '`export function* workload(seed) { … }`, yielding signed transactions, set-up first (docs/apps.md)',
    );
  });

  it('fails an app that diverges where the guard cannot see, naming the transaction and both outcomes', async () => {
    const line = failure(await remora(['check', '--app', './pid.mjs', '--transactions', '200', '--seed', '1'], project));
    expect(line).toMatch(
      /^remora: divergence at transaction #\d+ \(ts \d+, note\): the cluster answered \{"status":"ok","result":\d+\}, sequential re-execution gives \{"status":"ok","result":\d+\}$/,
    );
  });
});
