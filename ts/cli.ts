#!/usr/bin/env node
// The `remora` command: the demos, the benchmarks, and the hidden roles their child
// processes run. Each command lives in its own module; this one parses and dispatches.
import './runtime-flags.js';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { HeronPart } from '../bench/heron.js';
import { checkCommand } from './cli/check.js';
import { report } from './cli/errors.js';
import { heronReplicaRole } from './cli/heron-roles.js';
import { loadgenRole } from './cli/loadgen-role.js';
import { appOption, intOption, metricsPortOption, policyOption, seedOption, stateUpdateOption, transportOption, UsageError } from './cli/options.js';
import { admissionRole } from './cli/admission-role.js';
import { nodeRole, preExecutorRole, startCommand } from './cli/pipeline-roles.js';
import { upgradeCommand } from './cli/upgrade.js';
import { takeLifetimeFlag } from './process.js';
import { statusCommand } from './cli/status.js';
import { transportOwnerRole, transportReaderRole } from './cli/transport-roles.js';

// The published package leaves out bench/ (docs/deployment.md), so everything that imports it
// loads on first use: an installed `remora` runs every other command, and these say where
// they run instead of failing at start-up.
const isMissingBench = (e: unknown): boolean =>
  (e as NodeJS.ErrnoException | undefined)?.code === 'ERR_MODULE_NOT_FOUND' && /^Cannot find module '[^']*[\\/]bench[\\/]/.test((e as Error).message);
function fromBench<A extends unknown[], R>(load: () => Promise<(...args: A) => Promise<R>>): (...args: A) => Promise<R> {
  return async (...args) => {
    const run = await load().catch((e: unknown) => {
      if (isMissingBench(e)) throw new UsageError('this command runs from a source checkout: the published package leaves out the benchmark code it needs');
      throw e;
    });
    return await run(...args);
  };
}
const runAppBench = fromBench(async () => (await import('../bench/app.js')).runAppBench);
const runElastic = fromBench(async () => (await import('../bench/elastic.js')).runElastic);
const runHeron = fromBench(async () => (await import('../bench/heron.js')).runHeron);
const runHeronTpcc = fromBench(async () => (await import('../bench/heron-tpcc.js')).runHeronTpcc);
const heronTpccLoadgenRole = fromBench(async () => (await import('../bench/heron-tpcc.js')).heronTpccLoadgenRole);
const runMerge = fromBench(async () => (await import('../bench/merge.js')).runMerge);
const runPrimaryBench = fromBench(async () => (await import('../bench/primary.js')).runPrimaryBench);
const runOneside = fromBench(async () => (await import('../bench/oneside.js')).runOneside);
const runScale = fromBench(async () => (await import('../bench/scale.js')).runScale);
const runSequencerBench = fromBench(async () => (await import('../bench/sequencer.js')).runSequencerBench);
const runTransports = fromBench(async () => (await import('../bench/transports.js')).runTransports);
// bench/heron's list of parts, held here so that validating --only loads nothing; the
// `satisfies` fails to compile when the two lists differ either way.
const HERON_PARTS = Object.keys({ coordination: 0, breakdown: 0, transfer: 0 } satisfies Record<HeronPart, 0>) as HeronPart[];
import { demoOneside } from './cli/demo-oneside.js';
import { benchWriterRole, demoWriterRole, stressWriterRole } from './cli/writers.js';
import { demoLoadOptions, runDemo as runBankDemo } from './demo.js';

const USAGE = `Usage:
  remora demo [options]           an embedded cluster runs the bank app, then checks itself
      --app A                     bank, or work (compute-bound: --rounds of mixing a transaction) (default bank)
      --rounds N                  work: mixing rounds per transaction (default 10000)
      --seconds N                 how long to run the load (default 10)
      --accounts N                bank accounts, or work counters (default 1000)
      --alpha A                   Zipf skew of the accounts chosen (default 0.8; 0 = uniform)
      --clients N                 closed-loop clients, split over the generators (default 256)
      --generators N              load-generator processes the clients run in (default 1)
      --rate N                    open loop at N tx/s over all generators, instead of closed-loop clients
      --transactions N            built and signed before the window (default 12000 a second, or rate × seconds)
      --pre-executors N           pre-executor processes (default 2)
      --admissions N              admission processes the generators submit through (default 0: the node)
      --deadline-ms N             primary's wait for a pre-execution result (default 50)
      --policy P                  scheduling: round-robin, load, load+affinity, load+affinity+hot (default load+affinity+hot)
      --state-update S            how pre-executors stay fresh: broadcast, push, pull (default broadcast)
      --seed N                    workload seed (default random; printed)
      --dir DIR                   cluster directory (default: a temporary one, removed after)
      --metrics-port N            serve Prometheus metrics at http://127.0.0.1:N/metrics (0: any free port),
                                  and readiness at /ready (200, or 503 with the reason)
  remora start node --dir DIR --app APP [options]
                                  a node (admission, sequencer, primary) and its pre-executors; runs until
                                  SIGINT/SIGTERM, whatever its stdin (closed under systemd or in a
                                  container: docs/deployment.md), then closes its store and exits 0
      --pre-executors N           pre-executor processes to start (default 2)
      --admissions N              admission processes to start (default 0), clients at DIR/admission-adm-K.sock
      --autoscale MIN..MAX        grow and shrink the pool from measured load
      --policy P, --state-update S, --deadline-ms N, --metrics-port N   as for demo
      --listen HOST:PORT          also accept clients and pre-executors over TCP there
      --upgrade                   the log was written by other code than --app: run the new code from the
                                  next position of the log (docs/apps.md) instead of refusing to start
      --transport T               how pulling pre-executors read the primary's store: shm (this host),
                                  tcp or verbs (served on the --listen host) (default shm)
      --checkpoint-every N        checkpoint the primary's store every N applied transactions (default
                                  50000; 0: never); a start installs the newest and replays the log after it
      --sequencer URLS            follow a NATS JetStream stream instead of the embedded log: the engine's
                                  servers as nats://HOST:PORT,...; nodes on one stream are replicated
                                  primaries (docs/deployment.md) (default embedded)
      --stream NAME               the stream (default REMORA)
      --sequencer-token-file F    the engine's client token, if its servers ask for one
      --node-name NAME            this node's name among replicated primaries (default host:dir)
      --merge-threads N           threads the primary's merge uses, its own included (default 1): more
                                  execute transactions without a table ahead of the in-order merge
                                  (docs/primary.md)
      --delegate-backlog N        delegation when overwhelmed (docs/primary.md; default off): once N
                                  transactions are ordered and not applied, lease the hot objects to
                                  the least-loaded pre-executor, which executes theirs in order
      --lease-ms N                how long a lease holds (default 500)
      --lease-objects N           hot objects a lease covers at most (default 64)
      --bootstrap HOST:PORT       start from a peer primary's newest checkpoint (its --listen; copied over
                                  its store transport, so start the peer with --transport tcp) when newer
                                  than this node's own
  remora start pre-executor --join DIR --app APP --name NAME [--metrics-port N]
                                  one more pre-executor for the node running in cluster directory DIR
  remora start pre-executor --join HOST:PORT --secret-file FILE --app APP --name NAME
                                  the same from any host: the node's --listen address, and a copy of
                                  DIR/cluster.secret
  remora start admission --join DIR --app APP --name NAME [--listen HOST:PORT] [--metrics-port N]
                                  an admission process for the node in DIR: clients connect to
                                  DIR/admission-NAME.sock (or --listen) instead of the node, and their
                                  framing, checks and replies run here, not on the node (docs/pipeline.md)
  remora start admission --join HOST:PORT --secret-file FILE --socket PATH --app APP --name NAME
                                  the same from any host
  remora start heron --config FILE --dir DIR [--listen HOST:PORT] [--pre-executors N] [--transport shm|tcp]
                                  a Heron cluster (partitions of replicas) described by a JSON file:
                                  {"app": "kv", "partitions": 2, "replicas": 3, "preExecutors": 2}
                                  (optional: preExecution, graceMs, transferBytes, ordering, ringBytes,
                                  sequencer, restartReplicas, remoteCacheEntries, transport); see
                                  docs/heron.md. Clients (RemoraClient, DIR/client.secret) connect to
                                  DIR/heron.sock, and to --listen HOST:PORT if given; --pre-executors and
                                  --transport override the file
  remora upgrade --dir DIR --app APP
                                  a running node activates another version of its app at the next position
                                  of its log; its pre-executors load it first (docs/apps.md)
  remora upgrade --node HOST:PORT --secret-file FILE --app APP
                                  the same from another host (the node's --listen, a copy of cluster.secret)
  remora status DIR [--json]      what a running node is doing: ready or why not, applied and ordered
                                  timestamps and the lag, adopted/re-executed/executed shares, the pool;
                                  exit code 3 when not ready
  remora status --node HOST:PORT --secret-file FILE [--json]
                                  the same from another host
  remora check --app APP [options]
                                  runs the app's workload(seed) export on an embedded cluster with every
                                  process under the determinism guard, then re-executes the log
                                  sequentially and compares state and outcomes (docs/apps.md)
      --transactions N            stop after N transactions (default 10000; unbounded with only --seconds)
      --seconds N                 stop after N seconds (default 60)
      --seed N                    workload seed (default random; printed)
      --pre-executors N           pre-executor processes (default 2)
  remora demo-oneside [options]   a writer process updates objects; this one reads them one-sidedly
      --seconds N                 how long to read (default 10)
      --rate N                    writer's writes per second (default 20000)
      --objects N                 objects written (default 1000)
      --size BYTES                value size, at least 32 (default 256)
      --dir DIR                   cluster directory (default: a temporary one, removed after)
  remora bench oneside [options]  one-sided read latency vs memcpy, JS reads, writes, torn-read stress
      --quick                     short run (under a minute on 2 cores)
      --out FILE                  JSON results (default bench/results/oneside.json)
      --seed N                    stress writer seed (default random; printed)
  remora bench scale [options]    node CPU per transaction adopted vs executed (by stage), native adoption,
                                  durable sequencer, pinned runs and a capacity model, latency below saturation
      --quick, --seed N
      --out FILE                  JSON results (default bench/results/scale.json; model plot next to it)
  remora bench merge [options]    primary throughput merging vs executing; end to end by pool size
      --quick                     short run
      --out FILE                  JSON results (default bench/results/merge.json)
      --seed N                    workload seed (default random; printed)
  remora bench primary [options]  the overloaded primary: merge throughput with 1 and 2 merge threads at
                                  0, 10 and 50 % conflicts, no pre-executors (docs/primary.md)
      --quick, --seed N
      --out FILE                  JSON results (default bench/results/primary.json; chart next to it)
  remora bench elastic [options]  scheduling policies and state updates by adoption, primary CPU and
                                  throughput (bank, Zipf α 0, 0.8, 1.2); the pool following a load step
      --quick                     short run
      --out FILE                  JSON results (default bench/results/elastic.json; plots next to it)
      --seed N                    workload seed (default random; printed)
  remora bench transports [options]  read latency/throughput over shm, tcp, verbs; rig's perftest
      --quick                     short run
      --out FILE                  JSON results (default bench/results/transports.json)
      --rig FILE                  soft-RoCE rig results to include (default target/rig/results.json)
  remora bench app --app APP [options]
                                  the app's workload(seed) end to end with 0, 1 and 2 pre-executors:
                                  throughput, p50/p99 latency, node CPU per transaction
      --quick                     short run
      --out FILE                  JSON results (default bench/results/app-NAME.json)
      --seed N                    workload seed (default random; printed)
  remora bench heron [options]    Heron partitions: coordination latency, latency breakdown, delayed
                                  waits with and without grace, state-transfer time
      --quick                     short run
      --out FILE                  JSON results (default bench/results/heron.json; plots next to it)
      --only PART                 one part alone, its metrics only, no plots: coordination,
                                  breakdown or transfer
      --transport T               shm (default) or tcp between the replicas of the coordination runs
      --app tpcc                  TPC-C instead: New-Order latency split (cf. Heron Fig. 6) and the mix's
                                  throughput at 1, 2, 4 partitions x 1, 3 replicas with the consistency
                                  check (default out bench/results/heron-tpcc.json; --seed N)
  remora bench sequencer [options]  embedded vs replicated (NATS JetStream, 3 nodes on loopback) sequencer,
                                  durable acks, batches of 1, 100 and 1000: tx/s and p50/p99 submit latency
      --quick                     short run
      --out FILE                  JSON results (default bench/results/sequencer.json)
  remora help                     this text
  remora --exit-with-stdin start ...
                                  for launchers: what it starts also stops, as on SIGTERM, when its stdin
                                  ends, so it dies with the parent holding the pipe (docs/deployment.md)

Exit status: 0 done; 2 a mistake to fix, told in one line on stderr; 1 a failure, with its stack.
`;

async function pipelineDemo(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string' },
      accounts: { type: 'string' },
      alpha: { type: 'string' },
      clients: { type: 'string' },
      'pre-executors': { type: 'string' },
      admissions: { type: 'string' },
      'deadline-ms': { type: 'string' },
      policy: { type: 'string' },
      'state-update': { type: 'string' },
      seed: { type: 'string' },
      dir: { type: 'string' },
      'metrics-port': { type: 'string' },
      app: { type: 'string' },
      rounds: { type: 'string' },
      generators: { type: 'string' },
      transactions: { type: 'string' },
      rate: { type: 'string' },
    },
  });
  const metricsPort = metricsPortOption(values['metrics-port']);
  const alpha = values.alpha === undefined ? 0.8 : Number(values.alpha);
  if (!(alpha >= 0 && alpha <= 5)) throw new UsageError(`--alpha must be a number from 0 to 5, got '${values.alpha}'`);
  return runBankDemo({
    seconds: intOption(values.seconds, 'seconds', 10, 1, 86_400),
    accounts: intOption(values.accounts, 'accounts', 1000, 2, 1_000_000),
    alpha,
    concurrency: intOption(values.clients, 'clients', 256, 1, 100_000),
    preExecutors: intOption(values['pre-executors'], 'pre-executors', 2, 0, 64),
    admissions: intOption(values.admissions, 'admissions', 0, 0, 16),
    deadlineMs: intOption(values['deadline-ms'], 'deadline-ms', 50, 0, 60_000),
    policy: policyOption(values.policy),
    stateUpdate: stateUpdateOption(values['state-update']),
    seed: intOption(values.seed, 'seed', Math.floor(Math.random() * 2 ** 31), 0, 2 ** 31 - 1),
    ...(values.dir === undefined ? {} : { dir: values.dir }),
    ...(metricsPort !== undefined && { metricsPort }),
    ...demoLoadOptions(values),
  });
}

/** What every suite takes: `--quick`, `--out FILE` (default bench/results/SUITE.json), `--seed N`. */
function suiteArgs(suite: string, argv: string[]): { quick: boolean; out: string; seed: string | undefined } {
  const { values } = parseArgs({
    args: argv,
    options: { quick: { type: 'boolean' }, out: { type: 'string' }, seed: { type: 'string' } },
  });
  return { quick: values.quick ?? false, out: values.out ?? join('bench', 'results', `${suite}.json`), seed: values.seed };
}

/** A workload seed: the one given, else a random one (the suite prints it). */
const workloadSeed = (raw: string | undefined) => intOption(raw, 'seed', Math.floor(Math.random() * 2 ** 31), 0, 2 ** 31 - 1);

const suites: Record<string, (argv: string[]) => Promise<number>> = {
  oneside: (argv) => {
    const { seed, ...a } = suiteArgs('oneside', argv);
    const stressSeed = seedOption(seed);
    return runOneside({ ...a, ...(stressSeed === undefined ? {} : { seed: stressSeed }) });
  },
  merge: (argv) => {
    const { seed, ...a } = suiteArgs('merge', argv);
    return runMerge({ ...a, seed: workloadSeed(seed) });
  },
  primary: (argv) => {
    const { seed, ...a } = suiteArgs('primary', argv);
    return runPrimaryBench({ ...a, seed: workloadSeed(seed) });
  },
  elastic: (argv) => {
    const { seed, ...a } = suiteArgs('elastic', argv);
    return runElastic({ ...a, seed: workloadSeed(seed) });
  },
  transports: (argv) => {
    const { values } = parseArgs({
      args: argv,
      options: { quick: { type: 'boolean' }, out: { type: 'string' }, rig: { type: 'string' } },
    });
    return runTransports({
      quick: values.quick ?? false,
      out: values.out ?? join('bench', 'results', 'transports.json'),
      rig: values.rig ?? join('target', 'rig', 'results.json'),
    });
  },
  app: (argv) => {
    const { values } = parseArgs({
      args: argv,
      options: { app: { type: 'string' }, quick: { type: 'boolean' }, out: { type: 'string' }, seed: { type: 'string' } },
    });
    return runAppBench({
      spec: appOption(values.app),
      quick: values.quick ?? false,
      ...(values.out !== undefined && { out: values.out }),
      seed: workloadSeed(values.seed),
    });
  },
  scale: (argv) => {
    const { seed, ...a } = suiteArgs('scale', argv);
    return runScale({ ...a, seed: workloadSeed(seed) });
  },
  heron: (argv) => {
    const { values } = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean' },
        out: { type: 'string' },
        only: { type: 'string' },
        app: { type: 'string' },
        seed: { type: 'string' },
        transport: { type: 'string' },
      },
    });
    if (values.app !== undefined && values.app !== 'kv') {
      if (values.transport !== undefined) throw new UsageError('--transport applies to bench heron without --app tpcc');
      if (values.app !== 'tpcc') throw new UsageError(`--app must be kv or tpcc, got ${JSON.stringify(values.app)}`);
      if (values.only !== undefined) throw new UsageError('--only applies to bench heron without --app tpcc');
      return runHeronTpcc({ quick: values.quick ?? false, out: values.out ?? join('bench', 'results', 'heron-tpcc.json'), seed: workloadSeed(values.seed) });
    }
    if (values.seed !== undefined) throw new UsageError('--seed applies to bench heron --app tpcc');
    const only = values.only === undefined ? undefined : HERON_PARTS.find((p) => p === values.only);
    if (values.only !== undefined && only === undefined) throw new UsageError(`--only must be ${HERON_PARTS.join(', ')}, got ${JSON.stringify(values.only)}`);
    return runHeron({
      quick: values.quick ?? false,
      out: values.out ?? join('bench', 'results', 'heron.json'),
      ...(only ? { only } : {}),
      ...(values.transport !== undefined && { transport: transportOption(values.transport) }),
    });
  },
  sequencer: (argv) => {
    const { values } = parseArgs({ args: argv, options: { quick: { type: 'boolean' }, out: { type: 'string' } } });
    return runSequencerBench({ quick: values.quick ?? false, out: values.out ?? join('bench', 'results', 'sequencer.json') });
  },
};

function bench(argv: string[]): Promise<number> {
  const [suite, ...rest] = argv;
  const run = suite !== undefined && Object.hasOwn(suites, suite) ? suites[suite] : undefined;
  if (run === undefined) {
    const known = Object.keys(suites).join(', ');
    throw new UsageError(suite === undefined ? `bench needs a suite: ${known}` : `unknown bench suite '${suite}' (known: ${known})`);
  }
  return run(rest);
}

const commands: Record<string, (argv: string[]) => Promise<number>> = {
  demo: pipelineDemo,
  'demo-oneside': demoOneside,
  bench,
  check: checkCommand,
  upgrade: upgradeCommand,
  status: statusCommand,
  start: startCommand,
  help: () => {
    process.stdout.write(USAGE);
    return Promise.resolve(0);
  },
  // Hidden: the child processes the commands above start (see process.ts).
  'demo-writer': demoWriterRole,
  'bench-writer': benchWriterRole,
  'stress-writer': stressWriterRole,
  'transport-owner': transportOwnerRole,
  'transport-reader': transportReaderRole,
  'pre-executor': preExecutorRole,
  admission: admissionRole,
  node: nodeRole,
  'heron-replica': heronReplicaRole,
  'heron-tpcc-loadgen': heronTpccLoadgenRole,
  loadgen: loadgenRole,
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = takeLifetimeFlag(argv);
  if (name === undefined || name === '--help' || name === '-h') return commands['help']?.([]) ?? 0;
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (command === undefined) throw new UsageError(`unknown command '${name}'`);
  return command(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const { exitCode, text } = report(e);
    process.stderr.write(text);
    // Explicitly: a role that failed may still read stdin and may leave a native worker running,
    // and a parent waits for the exit to learn why (stderr to a pipe is written synchronously).
    process.exit(exitCode);
  },
);
