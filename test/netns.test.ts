// Across hosts without RDMA: a node in one network namespace, a pre-executor and a client in
// another, joined by a veth pair. The pre-executor joins by address with a secret file (no shared
// cluster directory is used for anything but the test's own checks) and pulls state over `tcp`.
// The same scenario also runs on loopback, without namespaces, wherever root is missing.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { loadApp } from '../ts/apps/index.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { RoleProcess } from '../ts/process.js';
import { CLIENT_SECRET_FILE, SECRET_FILE } from '../ts/secret.js';
import { parseHostPort } from '../ts/transport.js';
import { NetnsPair, netnsUnavailable } from '../bench/netns.js';
import { tempCluster } from './helpers.js';

const STEP_MS = 30_000;
const CLIENT_MS = 150_000;
const TXS = 3000;
const CLIENT = fileURLToPath(new URL('./fixtures/kv-client.mjs', import.meta.url));

interface ClientSummary {
  submitted: number;
  ok: number;
  notOk: unknown[];
  errors: string[];
}

/** Runs the fixture client (under `prefix`), killed if it outlives `CLIENT_MS`. */
function runClient(prefix: readonly string[], address: string, secretFile: string, seed: number): Promise<ClientSummary> {
  const hp = parseHostPort(address);
  if (!hp) throw new Error(`bad node address ${address}`);
  const [cmd = process.execPath, ...rest] = [...prefix, process.execPath];
  const child = spawn(cmd, [...rest, CLIENT, hp.host, String(hp.port), secretFile, String(TXS), String(seed)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8192)));
  return new Promise((resolve, reject) => {
    let summary: ClientSummary | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), CLIENT_MS);
    createInterface({ input: child.stdout }).on('line', (line) => {
      summary = JSON.parse(line) as ClientSummary;
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0 && summary) resolve(summary);
      else reject(new Error(`client ended with ${code ?? signal}${summary ? '' : ', no summary'}; stderr:\n${stderr}`));
    });
  });
}

interface NodeResult {
  digest: string;
  lastApplied: string;
}
interface PreResult {
  executed: number;
  pull?: { transport: string; pulled: number; refreshed: number; reads: number };
}

describe('a cluster across hosts over tcp', () => {
  let cluster: ReturnType<typeof tempCluster>;
  const children: RoleProcess[] = [];
  let pair: NetnsPair | null = null;

  beforeEach(() => {
    cluster = tempCluster();
  });
  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => c.stop(2000)));
    await pair?.destroy();
    pair = null;
    cluster.cleanup();
  });

  /**
   * Node under `nodePrefix` listening on `host`; pre-executor and client under `peerPrefix`,
   * dialling `dial` (the host itself unless it is a wildcard).
   */
  async function scenario(host: string, dial: string, nodePrefix: readonly string[], peerPrefix: readonly string[]): Promise<void> {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`netns test: seed ${seed}, node at ${host}`);
    const node = await RoleProcess.start(
      'start',
      [
        'node',
        '--dir',
        cluster.dir,
        '--app',
        'kv',
        '--pre-executors',
        '0',
        '--deadline-ms',
        '1000',
        '--state-update',
        'pull',
        '--transport',
        'tcp',
        '--listen',
        `${host}:0`,
      ],
      { prefix: nodePrefix, readyTimeoutMs: STEP_MS },
    );
    children.push(node);
    const info = node.readyInfo as { address: string; storeAddress: string };
    const [bound, store] = [parseHostPort(info.address), parseHostPort(info.storeAddress)];
    expect([bound?.host, store?.host]).toEqual([host, host]);
    // A store served on a wildcard host is reached at the host the pre-executor dialled.
    const address = `${dial}:${bound?.port}`;
    const secretFile = join(cluster.dir, SECRET_FILE);
    const pre = await RoleProcess.start('start', ['pre-executor', '--join', address, '--secret-file', secretFile, '--app', 'kv', '--name', 'remote-1'], {
      prefix: peerPrefix,
      readyTimeoutMs: STEP_MS,
    });
    children.push(pre);

    const summary = await runClient(peerPrefix, address, join(cluster.dir, CLIENT_SECRET_FILE), seed);
    expect(summary.errors).toEqual([]);
    expect(summary.notOk).toEqual([]);
    expect(summary.ok).toBe(TXS);

    const preResult = (await pre.finish(2000)) as PreResult;
    children.splice(children.indexOf(pre), 1);
    const nodeResult = (await node.finish(5000)) as NodeResult;
    children.splice(children.indexOf(node), 1);
    console.log(JSON.stringify({ preResult, nodeResult }));
    expect(preResult.executed).toBeGreaterThan(0);
    expect(preResult.pull?.transport).toBe('tcp');
    expect(preResult.pull?.pulled).toBeGreaterThan(0);
    expect(preResult.pull?.reads).toBeGreaterThan(0);

    const entries = await readSequence(join(cluster.dir, 'log'));
    expect(new Set(entries.map((e) => e.tx.digest)).size).toBe(entries.length);
    expect(nodeResult.lastApplied).toBe(String(entries.length));
    const reference = executeSequentially(loadApp('kv'), entries, nativeFunctions);
    expect(nodeResult.digest).toBe(reference.state.digest());
  }

  it('runs a node on every interface, a pre-executor pulling over tcp, and a client, on loopback', async () => {
    await scenario('0.0.0.0', '127.0.0.1', [], []);
  }, 240_000);

  it('refuses bad flags, a wrong secret and shm pulls across hosts with clear errors', async () => {
    const start = (args: string[]) => RoleProcess.start('start', args, { readyTimeoutMs: STEP_MS });
    const base = ['--dir', cluster.dir, '--app', 'kv', '--pre-executors', '0', '--state-update', 'pull'];
    await expect(start(['node', ...base, '--transport', 'carrier-pigeon'])).rejects.toThrow("--transport must be one of shm, tcp, verbs, got 'carrier-pigeon'");
    await expect(start(['node', ...base, '--listen', 'nowhere'])).rejects.toThrow("--listen must be HOST:PORT, got 'nowhere'");
    await expect(start(['pre-executor', '--join', '127.0.0.1:9', '--app', 'kv', '--name', 'x'])).rejects.toThrow(
      "--join HOST:PORT needs --secret-file FILE (a copy of the cluster directory's cluster.secret)",
    );
    // This host has no RDMA device unless the node starts: then there is no error to show.
    const verbs = await start(['node', ...base, '--transport', 'verbs']).then(
      (n) => n,
      (e: unknown) => e as Error,
    );
    if (verbs instanceof RoleProcess) await verbs.stop(2000);
    else expect(verbs.message).toMatch(/verbs transport: no RDMA device available/);

    // A node whose store is served over shm only cannot feed a pre-executor joining by address.
    const node = await start(['node', ...base, '--listen', '127.0.0.1:0']);
    children.push(node);
    const { address } = node.readyInfo as { address: string };
    const secretFile = join(cluster.dir, SECRET_FILE);
    const wrong = join(cluster.dir, 'wrong.secret');
    writeFileSync(wrong, randomBytes(32), { mode: 0o600 });
    const joinArgs = ['pre-executor', '--join', address, '--app', 'kv', '--name', 'far'];
    await expect(start([...joinArgs, '--secret-file', wrong])).rejects.toThrow(/handshake with 127\.0\.0\.1:\d+ failed/);
    const pre = await start([...joinArgs, '--secret-file', secretFile]);
    children.push(pre);
    expect((await pre.exited).code).toBe(1);
    expect(pre.stderr).toContain(
      'the node serves its store over shm, which reaches its own host only: start it with --transport tcp (or verbs) to pull across hosts',
    );
  }, 120_000);

  const skip = netnsUnavailable();
  if (skip !== null) console.log(`netns test skipped: ${skip}`);
  it.skipIf(skip !== null)(
    'runs them in two network namespaces joined by a veth pair',
    async () => {
      pair = new NetnsPair();
      await pair.create();
      await scenario(pair.addrA, pair.addrA, pair.exec(pair.a), pair.exec(pair.b));
    },
    240_000,
  );
});
