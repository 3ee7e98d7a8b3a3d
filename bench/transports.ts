// `remora bench transports`: what a one-sided read costs over each transport. On this host:
// `shm` and `tcp` over loopback (and `verbs` when an RDMA device is present), raw reads of
// 64 B / 1 KB / 4 KB and validated object reads. From the soft-RoCE rig (test/rig, when its
// results file exists): `verbs` between two VMs next to perftest's ib_read_lat/ib_read_bw in
// the same VMs, so our RDMA path is measured against the reference on the same link.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { TRANSPORT_BENCH_SIZES } from '../ts/cli/transport-roles.js';
import { benchTransport, type Latency, type TransportLatency } from './native.js';
import { RoleProcess } from '../ts/process.js';
import { describeMachine } from './machine.js';
import { NetnsPair, netnsUnavailable } from './netns.js';
import { sizeLabel } from '../ts/cli/oneside-layout.js';

export const TRANSPORT_SIZES = TRANSPORT_BENCH_SIZES;

export interface TransportsOptions {
  quick: boolean;
  out: string;
  /** The rig's results (`npm run test:rig` writes them). */
  rig: string;
}

type Metrics = Record<string, number>;

const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
const stage = (what: string) => process.stderr.write(`» ${what}\n`);

function record(m: Metrics, transport: string, rows: TransportLatency[]): void {
  for (const r of rows) {
    const l = sizeLabel(r.size);
    m[`${transport}_read_${l}_p50_us`] = round(r.readP50Ns / 1e3);
    m[`${transport}_read_${l}_p99_us`] = round(r.readP99Ns / 1e3);
    m[`${transport}_read_${l}_ops_per_s`] = Math.round(r.readOpsPerS);
    m[`${transport}_read_${l}_mb_per_s`] = round((r.readOpsPerS * r.size) / 1e6);
    m[`${transport}_get_${l}_p50_us`] = round(r.getP50Ns / 1e3);
    m[`${transport}_get_${l}_p99_us`] = round(r.getP99Ns / 1e3);
    m[`${transport}_get_${l}_ops_per_s`] = Math.round(r.getOpsPerS);
  }
}

/**
 * `tcp` between two network namespaces joined by a veth pair: the owner in one, the reader in
 * the other, each a process of its own. Validated reads only (the owner's objects, one by one).
 */
async function acrossNamespaces(m: Metrics, iterations: number): Promise<string> {
  const why = netnsUnavailable();
  if (why !== null) return `tcp across namespaces skipped: ${why}`;
  const pair = new NetnsPair();
  const dir = mkdtempSync(join(tmpdir(), 'remora-bench-netns-'));
  const secretFile = join(dir, 'cluster.secret');
  writeFileSync(secretFile, randomBytes(32), { mode: 0o600 });
  let owner: RoleProcess | null = null;
  try {
    await pair.create();
    const common = ['--transport', 'tcp', '--secret-file', secretFile];
    owner = await RoleProcess.start('transport-owner', ['--listen', `${pair.addrA}:0`, ...common], { prefix: pair.exec(pair.a) });
    const { address } = owner.readyInfo as { address: string };
    const reader = await RoleProcess.start('transport-reader', ['--address', address, '--iterations', String(iterations), ...common], {
      prefix: pair.exec(pair.b),
      readyTimeoutMs: 120_000,
    });
    const rows = (await reader.finish()) as (Latency & { size: number })[];
    for (const r of rows) {
      const l = sizeLabel(r.size);
      m[`tcp_netns_get_${l}_p50_us`] = round(r.p50Ns / 1e3);
      m[`tcp_netns_get_${l}_p99_us`] = round(r.p99Ns / 1e3);
      m[`tcp_netns_get_${l}_ops_per_s`] = Math.round(1e9 / r.meanNs);
    }
    return `tcp across namespaces: owner in ${pair.addrA}, reader in ${pair.addrB}, over a veth pair`;
  } finally {
    await owner?.stop(2000);
    await pair.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The rig's numbers: verbs (and tcp) between the VMs, perftest, the link counters. */
function rigMetrics(path: string): { metrics: Metrics; settings: unknown } | undefined {
  if (!existsSync(path)) return undefined;
  const rig = JSON.parse(readFileSync(path, 'utf8')) as {
    metrics: Record<string, unknown>;
    settings: unknown;
    failures?: string[];
  };
  if (rig.failures?.length) throw new Error(`${path} records a failed rig run: ${rig.failures.join('; ')}`);
  const metrics: Metrics = {};
  for (const [k, v] of Object.entries(rig.metrics)) if (typeof v === 'number') metrics[k] = v;
  const ours = metrics['verbs_read_64B_p50_us'];
  const ref = metrics['perftest_read_lat_p50_us'];
  if (ours !== undefined && ref !== undefined && ref > 0) {
    metrics['verbs_vs_perftest_read_64B_p50_ratio'] = round(ours / ref);
  }
  return { metrics, settings: rig.settings };
}

function table(m: Metrics, transports: string[]): string {
  const lines = ['transport      size   read p50 µs  read p99 µs    reads/s   get p50 µs'];
  for (const t of transports) {
    for (const size of TRANSPORT_SIZES) {
      const l = sizeLabel(size);
      const p50 = m[`${t}_read_${l}_p50_us`];
      if (p50 === undefined) continue;
      lines.push(
        `${t.padEnd(13)} ${l.padStart(5)} ${String(p50).padStart(12)} ${String(m[`${t}_read_${l}_p99_us`] ?? '-').padStart(12)}` +
          ` ${String(m[`${t}_read_${l}_ops_per_s`] ?? '-').padStart(10)} ${String(m[`${t}_get_${l}_p50_us`] ?? '-').padStart(12)}`,
      );
    }
  }
  for (const size of TRANSPORT_SIZES) {
    const l = sizeLabel(size);
    const p50 = m[`tcp_netns_get_${l}_p50_us`];
    if (p50 !== undefined) {
      lines.push(
        `${'tcp (netns)'.padEnd(13)} ${l.padStart(5)} ${'-'.padStart(12)} ${'-'.padStart(12)} ${String(m[`tcp_netns_get_${l}_ops_per_s`] ?? '-').padStart(10)} ${String(p50).padStart(12)}`,
      );
    }
  }
  for (const size of TRANSPORT_SIZES) {
    const l = sizeLabel(size);
    const p50 = m[`perftest_read_lat_${l}_p50_us`];
    if (p50 !== undefined) {
      lines.push(
        `${'perftest (rig)'.padEnd(13)} ${l.padStart(5)} ${String(p50).padStart(12)} ${String(m[`perftest_read_lat_${l}_p99_us`] ?? '-').padStart(12)}`,
      );
    }
  }
  return lines.join('\n');
}

export async function runTransports(opts: TransportsOptions): Promise<number> {
  const iterations = opts.quick ? 2_000 : 20_000;
  const metrics: Metrics = {};
  const ran: string[] = [];
  const notes = [
    'read: a raw read of exactly size bytes at an object (what perftest ib_read_lat measures)',
    'get: a validated read of the object (its whole slot, checksummed)',
    'host transports: store and peer in one process; tcp over 127.0.0.1',
  ];
  for (const transport of ['shm', 'tcp', 'verbs']) {
    stage(`${transport}: ${iterations} reads of each size`);
    try {
      record(metrics, transport, await benchTransport(transport, [...TRANSPORT_SIZES], iterations));
      ran.push(transport);
    } catch (e) {
      if (transport !== 'verbs') throw e;
      notes.push(`verbs on this host: ${(e as Error).message}`);
      stage(`verbs skipped on this host: ${(e as Error).message}`);
    }
  }
  stage(`tcp across network namespaces: ${iterations} reads of each size`);
  notes.push(await acrossNamespaces(metrics, iterations));
  const rig = rigMetrics(opts.rig);
  if (rig) {
    stage(`rig results from ${opts.rig}`);
    for (const [k, v] of Object.entries(rig.metrics)) {
      // The rig's verbs/tcp numbers are between two VMs: keep them apart from the host's.
      const key = /^(verbs|tcp_vm)_/.test(k) && !k.startsWith('verbs_vs_') ? `rig_${k}` : k;
      metrics[key] = v;
    }
    const ours = rig.metrics['verbs_read_64B_p50_us'];
    if (ours !== undefined) metrics['verbs_read_64B_p50_us'] = ours;
    ran.push('rig_verbs', 'rig_tcp_vm');
  } else {
    notes.push(`no rig results at ${opts.rig}: run \`npm run test:rig\` for verbs and perftest numbers`);
  }
  const result = {
    suite: 'transports',
    machine: describeMachine(),
    settings: { quick: opts.quick, sizes: TRANSPORT_SIZES, iterations, rig: rig?.settings ?? null, notes },
    metrics,
  };
  mkdirSync(dirname(opts.out), { recursive: true });
  writeFileSync(`${opts.out}.tmp`, `${JSON.stringify(result, null, 2)}\n`);
  renameSync(`${opts.out}.tmp`, opts.out);
  process.stdout.write(`${table(metrics, ran)}\n`);
  if (metrics['verbs_vs_perftest_read_64B_p50_ratio'] !== undefined) {
    process.stdout.write(
      `verbs 64 B read p50 ${metrics['verbs_read_64B_p50_us']} µs vs perftest ${metrics['perftest_read_lat_p50_us']} µs` +
        ` (ratio ${metrics['verbs_vs_perftest_read_64B_p50_ratio']})\n`,
    );
  }
  process.stdout.write(`results: ${opts.out}\n`);
  return 0;
}
