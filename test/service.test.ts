// `remora start node` and `remora start heron` run as services: started with stdin closed (as
// systemd and container runtimes do) they serve until SIGTERM or SIGINT, then stop their child
// processes, close their stores and exit 0; a node's log reopens with its state. A launcher's
// children (started with --exit-with-stdin) still die with their parent.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { encodeBody, type Transaction } from '../ts/app/tx.js';
import { kvApp } from '../ts/apps/kv.js';
import { RemoraClient } from '../ts/client.js';
import { NODE_SOCKET } from '../ts/cluster.js';
import { HERON_SOCKET } from '../ts/heron/messages.js';
import { EXIT_WITH_STDIN, RoleProcess } from '../ts/process.js';
import { loadClientSecret } from '../ts/secret.js';
import { CLI, tempCluster } from './helpers.js';

/** Bounds every wait on a child: its start, its replies, its stop. */
const STEP_MS = 30_000;

const put = (key: string, value: string): Transaction => ({ body: encodeBody('put', { key, value }, [`kv/${key}`]), auth: [] });
const get = (key: string): Transaction => ({ body: encodeBody('get', { key }, [`kv/${key}`]), auth: [] });

interface NodeReady {
  lastApplied: string;
}

interface NodeResult {
  lastApplied: string;
}

interface HeronResult {
  replicas: unknown[];
  divergences: number;
}

/** A `remora start ...` process spawned as a user or a service manager would, not by a launcher. */
class ServiceProcess<Ready = NodeReady, Result = NodeResult> {
  readonly ready: Promise<Ready>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly lines: string[] = [];
  private stderr = '';

  constructor(readonly child: ChildProcess) {
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    const lines = child.stdout ? createInterface({ input: child.stdout }) : null;
    lines?.on('line', (line) => this.lines.push(line));
    this.exited = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`no ready line within ${STEP_MS} ms; stderr:\n${this.stderr}`));
      }, STEP_MS);
      lines?.on('line', (line) => {
        if (!line.startsWith('ready ')) return;
        clearTimeout(timer);
        resolve(JSON.parse(line.slice('ready '.length)) as Ready);
      });
      void this.exited.then((e) => {
        clearTimeout(timer);
        reject(new Error(`exited (${JSON.stringify(e)}) before ready; stderr:\n${this.stderr}`));
      });
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends `signal` and waits (bounded) for the exit; the parsed `result` line. */
  async stopWith(signal: NodeJS.Signals): Promise<{ code: number | null; result: Result | undefined; stderr: string }> {
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), STEP_MS);
    const { code } = await this.exited.finally(() => clearTimeout(timer));
    const line = this.lines.filter((l) => l.startsWith('result ')).pop();
    return { code, result: line === undefined ? undefined : (JSON.parse(line.slice('result '.length)) as Result), stderr: this.stderr };
  }
}

/** Pids of the processes whose command line names `dir`: a node's pre-executors, for one. */
function processesNaming(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const args = readFileSync(join('/proc', entry, 'cmdline'), 'utf8').split('\0');
      if (args.includes(dir)) pids.push(Number(entry));
    } catch {
      // It exited while we looked.
    }
  }
  return pids;
}

describe('remora start node as a service', () => {
  let cluster: ReturnType<typeof tempCluster> | null = null;
  const services: { running: boolean; stopWith: (signal: NodeJS.Signals) => Promise<unknown> }[] = [];
  const launched: RoleProcess[] = [];
  const nodeDir = () => join(cluster?.dir ?? '', 'node');
  beforeEach(() => {
    cluster = tempCluster();
  });
  afterEach(async () => {
    for (const s of services.splice(0)) if (s.running) await s.stopWith('SIGKILL');
    await Promise.all(launched.splice(0).map((p) => p.stop(2000)));
    cluster?.cleanup();
  });

  const startNode = (stdin: 'ignore' | 'pipe') => {
    const args = [CLI, 'start', 'node', '--dir', nodeDir(), '--app', 'kv', '--pre-executors', '1'];
    const s = new ServiceProcess(spawn(process.execPath, args, { stdio: [stdin, 'pipe', 'pipe'] }));
    services.push(s);
    return s;
  };

  const connect = () => RemoraClient.connect({ path: join(nodeDir(), NODE_SOCKET), secret: loadClientSecret(nodeDir()), giveUpMs: STEP_MS });

  it('serves with stdin closed until SIGTERM, exits 0, and its log reopens with the state', async () => {
    // stdin 'ignore' is /dev/null, as systemd's StandardInput=null: it ends at the first read.
    const first = startNode('ignore');
    expect((await first.ready).lastApplied).toBe('0');
    const client = await connect();
    const replies = [];
    for (let i = 0; i < 5; i++) replies.push(await client.submit(put(`k${i}`, `v${i}`)));
    client.close();
    // Real replies after `ready` prove the node outlived the end of its stdin.
    expect(replies.map((r) => [r.ts, r.outcome])).toEqual([1n, 2n, 3n, 4n, 5n].map((ts) => [ts, { status: 'ok', result: null }]));
    expect(first.running).toBe(true);
    expect(processesNaming(nodeDir()).length, 'the node and its pre-executor').toBe(2);

    const stopped = await first.stopWith('SIGTERM');
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.result?.lastApplied).toBe('5');
    expect(stopped.stderr).toContain('remora: SIGTERM, stopping\n');
    // The node stopped its pre-executor before exiting, rather than leaving it behind.
    expect(processesNaming(nodeDir())).toEqual([]);

    // Again with a stdin pipe its parent closes at once: still only a signal stops it.
    const second = startNode('pipe');
    second.child.stdin?.end();
    expect((await second.ready).lastApplied).toBe('5');
    const again = await connect();
    const read = await again.submit(get('k3'));
    const written = await again.submit(put('k5', 'v5'));
    again.close();
    expect([read.outcome, written.ts]).toEqual([{ status: 'ok', result: 'v3' }, 7n]);
    expect(second.running).toBe(true);
    const interrupted = await second.stopWith('SIGINT');
    expect(interrupted.code, interrupted.stderr).toBe(0);
    expect(interrupted.result?.lastApplied).toBe('7');
    expect(processesNaming(nodeDir())).toEqual([]);
  });

  it('serves a Heron cluster with stdin closed until SIGTERM, then stops its replicas and pre-executor and exits 0', async () => {
    const dir = join(cluster?.dir ?? '', 'heron');
    const file = join(cluster?.dir ?? '', 'heron.json');
    writeFileSync(file, JSON.stringify({ app: 'kv', partitions: 1, replicas: 1, preExecutors: 1 }));
    const args = [CLI, 'start', 'heron', '--config', file, '--dir', dir];
    const heron = new ServiceProcess<unknown, HeronResult>(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    services.push(heron);
    await heron.ready;
    const client = await RemoraClient.connect({ path: join(dir, HERON_SOCKET), secret: loadClientSecret(dir), giveUpMs: STEP_MS });
    const reply = await client.submit(makeTx(kvApp, 'put', { key: 'a', value: 'x', nonce: 'service.1' }));
    client.close();
    expect([reply.ts, reply.outcome]).toEqual([1n, { status: 'ok', result: null }]);
    expect(heron.running).toBe(true);
    // The launcher, its replica and its pre-executor.
    expect(processesNaming(dir).length).toBe(3);
    const stopped = await heron.stopWith('SIGTERM');
    expect(stopped.code, stopped.stderr).toBe(0);
    expect([stopped.result?.replicas.length, stopped.result?.divergences]).toEqual([1, 0]);
    expect(processesNaming(dir)).toEqual([]);
  });

  it("a launcher's child stops at the end of its stdin, and its own children die with it", async () => {
    // The launcher's way: RoleProcess passes --exit-with-stdin, so stop() (closing stdin) ends it.
    const node = await RoleProcess.start('start', ['node', '--dir', nodeDir(), '--app', 'kv', '--pre-executors', '1']);
    launched.push(node);
    const others = processesNaming(nodeDir()).filter((pid) => pid !== node.pid);
    expect(others.length, 'the pre-executor').toBe(1);
    const [pre = 0] = others;
    // The node started its pre-executor the same way, so it dies with the node however the
    // node dies: the kernel closes the pipe when the node is SIGKILLed.
    expect(readFileSync(join('/proc', String(pre), 'cmdline'), 'utf8').split('\0')).toContain(EXIT_WITH_STDIN);
    node.kill('SIGKILL');
    expect((await node.exited).signal).toBe('SIGKILL');
    await gone(pre);

    const restarted = await RoleProcess.start('start', ['node', '--dir', nodeDir(), '--app', 'kv', '--pre-executors', '0']);
    launched.push(restarted);
    const stopped = await restarted.stop(STEP_MS);
    expect([stopped.code, (stopped.result as NodeResult).lastApplied]).toEqual([0, '0']);
    // Stopped by the end of its stdin, not by stop()'s SIGTERM fallback.
    expect(stopped.stderr).not.toContain('SIGTERM');
  });
});

/**
 * Waits (bounded) until `pid` is gone. Not a parent of that process, this one cannot wait for it
 * to exit, so it looks again every few milliseconds until the deadline.
 */
async function gone(pid: number): Promise<void> {
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    let state: string | undefined;
    try {
      const stat = readFileSync(join('/proc', String(pid), 'stat'), 'utf8');
      state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    } catch {
      return;
    }
    // A zombie (exited, not yet reaped by its new parent) is gone for our purpose.
    if (state === 'Z') return;
    if (Date.now() > deadline) throw new Error(`process ${pid} still running ${STEP_MS} ms after its parent was killed`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
