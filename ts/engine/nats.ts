// A NATS JetStream cluster on loopback for the replicated sequencer's tests, benchmark and
// fault tests: the server is built from the Go module pinned in tools/nats-server (so its
// version and checksums are the project's), one config file per node, readiness read from
// each server's monitoring endpoint.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { atExit } from '../process.js';

/** The server version tools/nats-server/go.mod pins; a binary reporting another is rebuilt. */
export const NATS_SERVER_VERSION = 'v2.15.2';

const MODULE = 'github.com/nats-io/nats-server/v2';
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 10_000;
const POLL_MS = 50;

/** The repository root: the directory above this module holding tools/nats-server (sources or dist). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'tools', 'nats-server', 'go.mod'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('nats: tools/nats-server/go.mod not found above this module: the server is built from the source tree');
    dir = up;
  }
}

/** Whether `go` is on PATH: the tests skip (saying so) without it. */
export function haveGo(): boolean {
  return spawnSync('go', ['version'], { stdio: 'ignore' }).status === 0;
}

/**
 * Builds nats-server into target/nats/ unless the binary there is newer than the module's
 * go.mod and go.sum and reports the pinned version. Returns its path.
 */
export function buildNatsServer(log: (m: string) => void = () => undefined): string {
  const root = repoRoot();
  const moduleDir = join(root, 'tools', 'nats-server');
  const out = join(root, 'target', 'nats', 'nats-server');
  if (isCurrent(out, [join(moduleDir, 'go.mod'), join(moduleDir, 'go.sum')])) return out;
  mkdirSync(dirname(out), { recursive: true });
  log(`nats: building nats-server ${NATS_SERVER_VERSION} with go`);
  // -mod=readonly: a go.sum that does not cover the module fails the build instead of changing it.
  const run = spawnSync('go', ['build', '-mod=readonly', '-o', out, MODULE], { cwd: moduleDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (run.error) throw new Error(`nats: cannot run go (is it installed and on PATH?): ${run.error.message}`);
  if (run.status !== 0) throw new Error(`nats: go build of ${MODULE} failed:\n${run.stderr.trim()}`);
  return out;
}

function haveSetpriv(): boolean {
  return process.platform === 'linux' && spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;
}

function isCurrent(binary: string, sources: string[]): boolean {
  if (!existsSync(binary)) return false;
  const built = statSync(binary).mtimeMs;
  if (sources.some((s) => statSync(s).mtimeMs > built)) return false;
  const v = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  return v.status === 0 && v.stdout.includes(NATS_SERVER_VERSION);
}

/** `n` distinct free loopback ports (held open together so none is handed out twice). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const a = s.address();
    if (a === null || typeof a === 'string') throw new Error('nats: loopback listener has no port');
    return a.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

export interface NatsClusterOptions {
  /** Where each node keeps its config, store and log (`n0/`, `n1/`, ...). */
  dir: string;
  /** Nodes (default 3); 1 gives a single server without a cluster block. */
  nodes?: number;
  /** A token clients must present (`authorization { token }`); none if undefined. */
  token?: string;
  log?: (m: string) => void;
}

export interface NatsCluster {
  /** Client URLs, one per node, `nats://127.0.0.1:PORT`. */
  urls: string[];
  /** Server names, `n0`, `n1`, ...: what `leader` and JetStream's cluster info name. */
  names: string[];
  /** SIGKILLs node `i` and waits for it to be gone; its store stays. */
  kill(i: number): Promise<void>;
  /** Starts node `i` again with its store and waits until it is healthy. */
  start(i: number): Promise<void>;
  /** The index of the node leading `stream`, waiting (bounded) for one to be elected. */
  leader(stream: string): Promise<number>;
  /** Process ids of the running servers (benches charge them their CPU). */
  pids(): number[];
  /** Stops every node (SIGTERM, SIGKILL after a bound). Idempotent. */
  stop(): Promise<void>;
}

interface Node {
  name: string;
  dir: string;
  config: string;
  monitor: number;
  child: ChildProcess | null;
  exited: Promise<void>;
}

function configText(o: { name: string; dir: string; client: number; monitor: number; route: number; routes: number[]; token?: string }): string {
  // JSON strings are valid NATS config strings, so paths need no escaping of their own.
  const cluster =
    o.routes.length > 1
      ? // no_advertise: clients use the URLs they were given, never ones learnt from the servers.
        `cluster {\n  name: remora\n  listen: 127.0.0.1:${o.route}\n  no_advertise: true\n  routes: [\n${o.routes.map((p) => `    nats-route://127.0.0.1:${p}`).join('\n')}\n  ]\n}\n`
      : '';
  return (
    `server_name: ${o.name}\n` +
    `listen: 127.0.0.1:${o.client}\n` +
    `http: 127.0.0.1:${o.monitor}\n` +
    `log_file: ${JSON.stringify(join(o.dir, 'server.log'))}\n` +
    // An ack then means written and fsynced (on a majority, for a replicated stream).
    `jetstream {\n  store_dir: ${JSON.stringify(join(o.dir, 'store'))}\n  sync_interval: always\n}\n` +
    (o.token === undefined ? '' : `authorization {\n  token: ${JSON.stringify(o.token)}\n}\n`) +
    cluster
  );
}

async function httpGet(port: number, path: string): Promise<{ status: number; body: string } | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2000) });
    return { status: res.status, body: await res.text() };
  } catch {
    return null;
  }
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a value, or throws `what` after `timeoutMs`. */
async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | null>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`nats: ${what} within ${timeoutMs / 1000} s`);
    await pause(POLL_MS);
  }
}

/** Starts a JetStream cluster on loopback and resolves once every node reports itself healthy. */
export async function startNatsCluster(opts: NatsClusterOptions): Promise<NatsCluster> {
  const count = opts.nodes ?? 3;
  if (!Number.isInteger(count) || count < 1 || count > 9) throw new Error(`nats: nodes must be 1..9, got ${count}`);
  const log = opts.log ?? (() => undefined);
  const binary = buildNatsServer(log);
  const ports = await freePorts(3 * count);
  const at = (i: number, k: number) => ports[3 * i + k] ?? 0;
  const routes = Array.from({ length: count }, (_, i) => at(i, 2));
  const nodes: Node[] = Array.from({ length: count }, (_, i) => {
    const name = `n${i}`;
    const dir = join(opts.dir, name);
    mkdirSync(dir, { recursive: true });
    const config = join(dir, 'server.conf');
    writeFileSync(
      config,
      configText({ name, dir, client: at(i, 0), monitor: at(i, 1), route: at(i, 2), routes, ...(opts.token !== undefined && { token: opts.token }) }),
      { mode: 0o600 },
    );
    return { name, dir, config, monitor: at(i, 1), child: null, exited: Promise.resolve() };
  });
  let stopped = false;

  // Where util-linux's setpriv is present, a server dies with the process that started it, even
  // one killed with SIGKILL (it execs in place, so signals and the pid are the server's own).
  const prefix = haveSetpriv() ? ['setpriv', '--pdeathsig', 'SIGKILL', '--'] : [];
  const spawnNode = (node: Node): void => {
    const [command = binary, ...args] = [...prefix, binary, '-c', node.config];
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4096)));
    node.child = child;
    node.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        if (node.child === child) node.child = null;
        if (!stopped && signal !== 'SIGKILL') log(`nats: ${node.name} exited (${signal ?? `code ${String(code)}`})${stderr ? `: ${stderr.trim()}` : ''}`);
        resolve();
      }),
    );
  };
  const healthy = async (node: Node): Promise<void> => {
    await until(`${node.name} did not become healthy (see ${join(node.dir, 'server.log')})`, READY_TIMEOUT_MS, async () => {
      if (node.child === null) throw new Error(`nats: ${node.name} exited while starting (see ${join(node.dir, 'server.log')})`);
      const r = await httpGet(node.monitor, '/healthz');
      return r?.status === 200 ? true : null;
    });
  };
  const killNode = async (node: Node, signal: NodeJS.Signals): Promise<void> => {
    const child = node.child;
    if (child === null) return;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await node.exited;
    clearTimeout(timer);
  };
  const cancelExit = atExit(() => {
    for (const n of nodes) n.child?.kill('SIGKILL');
  });
  const nodeAt = (i: number): Node => {
    const n = nodes[i];
    if (n === undefined) throw new Error(`nats: no node ${i} (cluster has ${count})`);
    return n;
  };

  const stop = async (): Promise<void> => {
    stopped = true;
    await Promise.all(nodes.map((n) => killNode(n, 'SIGTERM')));
    cancelExit();
  };
  try {
    for (const n of nodes) spawnNode(n);
    await Promise.all(nodes.map(healthy));
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    urls: nodes.map((_, i) => `nats://127.0.0.1:${at(i, 0)}`),
    names: nodes.map((n) => n.name),
    kill: (i) => killNode(nodeAt(i), 'SIGKILL'),
    start: async (i) => {
      const node = nodeAt(i);
      if (stopped) throw new Error('nats: cluster is stopped');
      if (node.child !== null) throw new Error(`nats: ${node.name} is running`);
      spawnNode(node);
      await healthy(node);
    },
    leader: (stream) =>
      until(`no leader for stream ${stream}`, READY_TIMEOUT_MS, async () => {
        for (const node of nodes) {
          if (node.child === null) continue;
          const r = await httpGet(node.monitor, '/jsz?streams=true');
          const leader = r?.status === 200 ? streamLeader(r.body, stream) : null;
          const i = leader === null ? -1 : nodes.findIndex((n) => n.name === leader && n.child !== null);
          if (i >= 0) return i;
        }
        return null;
      }),
    pids: () => nodes.flatMap((n) => (n.child?.pid === undefined ? [] : [n.child.pid])),
    stop,
  };
}

/** The leader's server name of `stream` in a `/jsz?streams=true` answer, if it names one. */
function streamLeader(body: string, stream: string): string | null {
  let jsz: unknown;
  try {
    jsz = JSON.parse(body);
  } catch {
    return null;
  }
  const accounts = (jsz as { account_details?: unknown }).account_details;
  if (!Array.isArray(accounts)) return null;
  for (const a of accounts) {
    const streams = (a as { stream_detail?: unknown }).stream_detail;
    if (!Array.isArray(streams)) continue;
    for (const s of streams) {
      const { name, cluster } = s as { name?: unknown; cluster?: { leader?: unknown } };
      if (name === stream && typeof cluster?.leader === 'string' && cluster.leader !== '') return cluster.leader;
    }
  }
  return null;
}
