// The worked example (examples/token): loaded by path on a cluster with pre-executor processes,
// used by a client in another process, equal to sequential execution of its log; and a member
// running a modified copy of it refused with both digests.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadAppModule } from '../ts/app/module.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { CLI, runNode as runNodeWithin, tempCluster } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TOKEN = fileURLToPath(new URL('../examples/token/token.mjs', import.meta.url));
const CLIENT = fileURLToPath(new URL('../examples/token/client.mjs', import.meta.url));
const RUN_MS = 30_000;
const runNode = (args: readonly string[]) => runNodeWithin(args, { timeoutMs: RUN_MS });

/** What the example module exports besides the app (it is JavaScript: typed here). */
interface TokenModule {
  addressOf(publicKey: Uint8Array): string;
  demoKey(label: string): { publicKey: Uint8Array };
}

/**
 * A directory outside this repository that has Remora installed (a link to it), as a user's
 * project would: an app module there imports 'remora' by name.
 */
function projectWithRemora(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'remora-project-'));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(ROOT, join(dir, 'node_modules', 'remora'), 'dir');
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

describe('the token example', () => {
  let tmp: ReturnType<typeof tempCluster>;
  let cluster: EmbeddedCluster | null = null;
  const cleanups: (() => void)[] = [];
  beforeEach(() => {
    tmp = tempCluster();
  });
  afterEach(async () => {
    await cluster?.close();
    cluster = null;
    for (const c of cleanups.splice(0)) c();
    tmp.cleanup();
  });

  it('serves a client in another process with exact outcomes, and its state equals sequential execution of the log', async () => {
    cluster = await EmbeddedCluster.start({ dir: tmp.dir, app: TOKEN, preExecutors: 2 });
    expect(cluster.node.members).toEqual(['pre-1', 'pre-2']);
    const ran = await runNode([CLIENT, tmp.dir]);
    expect(ran.stderr).toBe('');
    expect(ran.code).toBe(0);
    const { addressOf, demoKey } = (await import(TOKEN)) as TokenModule;
    const issuer = addressOf(demoKey('issuer').publicKey);
    const steps: unknown[] = ran.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as unknown);
    const ok = (result: string | number) => ({ status: 'ok', result });
    const aborted = (reason: string) => ({ status: 'aborted', reason });
    expect(steps).toEqual([
      { step: 'create', ts: 1, duplicate: false, outcome: ok(issuer) },
      { step: 'issuer pays alice 300', ts: 2, duplicate: false, outcome: ok(700) },
      { step: 'alice pays bob 120', ts: 3, duplicate: false, outcome: ok(180) },
      { step: 'the same transfer resubmitted', ts: 3, duplicate: true, outcome: ok(180) },
      { step: 'a forged transfer to mallory', ts: 4, duplicate: false, outcome: aborted('bad signature') },
      { step: 'alice replays nonce 0', ts: 5, duplicate: false, outcome: aborted('stale nonce') },
      { step: 'alice overspends', ts: 6, duplicate: false, outcome: aborted('insufficient funds') },
      { step: 'balance of issuer', ts: 7, duplicate: false, outcome: ok(700) },
      { step: 'balance of alice', ts: 8, duplicate: false, outcome: ok(180) },
      { step: 'balance of bob', ts: 9, duplicate: false, outcome: ok(120) },
      { step: 'balance of mallory', ts: 10, duplicate: false, outcome: ok(0) },
    ]);
    // The resubmission was answered from the first; ten transactions were applied.
    expect(cluster.node.stats.applied).toBe(10);

    const digest = cluster.store.digest();
    await cluster.close();
    cluster = null;
    const entries = await readSequence(join(tmp.dir, 'log'));
    expect(entries.map((e) => e.tx.command)).toEqual([
      'create',
      'transfer',
      'transfer',
      'transfer',
      'transfer',
      'transfer',
      'balance',
      'balance',
      'balance',
      'balance',
    ]);
    const { app } = await loadAppModule(TOKEN);
    const reference = executeSequentially(app, entries, nativeFunctions);
    expect(reference.state.digest()).toBe(digest);
    const outcomes = steps.filter((s) => !(s as { duplicate: boolean }).duplicate).map((s) => (s as { outcome: unknown }).outcome);
    expect([...reference.outcomes.values()]).toEqual(outcomes);
  });

  it('refuses a pre-executor running a modified copy of the app, naming both digests', async () => {
    cluster = await EmbeddedCluster.start({ dir: tmp.dir, app: TOKEN, preExecutors: 0 });
    const project = projectWithRemora();
    cleanups.push(project.cleanup);
    const copy = join(project.dir, 'token.mjs');
    const source = readFileSync(TOKEN, 'utf8');
    const changed = source.replace("ctx.abort('insufficient funds')", "ctx.abort('not enough funds')");
    expect(changed).not.toBe(source);
    writeFileSync(copy, changed);
    const [ours, theirs] = await Promise.all([loadAppModule(TOKEN), loadAppModule(copy)]);
    expect(theirs.digest).not.toBe(ours.digest);

    const ran = await runNode([CLI, 'start', 'pre-executor', '--join', tmp.dir, '--app', copy, '--name', 'x']);
    expect(ran.code).toBe(2);
    expect(ran.stdout).toBe('');
    expect(ran.stderr).toBe(
      `remora: pre-executor x loaded app ${copy} with digest ${theirs.digest.slice(0, 12)}, ` +
        `but the node runs token ${ours.digest.slice(0, 12)} (${TOKEN}): start it with the same --app\n`,
    );
    expect(cluster.node.members).toEqual([]);
  });
});
