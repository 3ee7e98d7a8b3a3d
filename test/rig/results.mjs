// Reads the two VMs' serial logs, checks that every step passed and that RDMA traffic crossed
// the link, and writes the numbers as JSON ({suite, machine, settings, metrics}). Exits
// non-zero, saying why, on any failure.
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, hostname } from 'node:os';

const [serverLog, clientLog, out] = process.argv.slice(2);
const server = readFileSync(serverLog, 'utf8').split(/\r?\n/);
const client = readFileSync(clientLog, 'utf8').split(/\r?\n/);
const failures = [];
const metrics = {};

const tagged = (lines, tag) => lines.filter((l) => l.startsWith(tag)).map((l) => JSON.parse(l.slice(l.indexOf('{'))));

for (const l of [...server, ...client]) if (l.startsWith('RIG-FAIL')) failures.push(l);
const done = client.find((l) => l.startsWith('RIG-DONE'));
if (done !== 'RIG-DONE rc=0') failures.push(`client finished with: ${done ?? 'no RIG-DONE line'}`);
if (!client.includes('RIG-CONFORMANCE ok')) failures.push('conformance suite on verbs did not pass');
if (!client.includes('RIG-HERON-TRANSFER ok')) failures.push('heron state transfer over verbs did not pass');

// perftest: the data line after each "RIG-PERFTEST <tool> <size>" marker.
let tool = null;
for (const l of client) {
  const mark = /^RIG-PERFTEST (\S+) (\d+)/.exec(l);
  if (mark) {
    tool = { name: mark[1], size: Number(mark[2]) };
    continue;
  }
  if (!tool) continue;
  const nums = l.trim().split(/\s+/).map(Number);
  if (nums.length < 4 || nums.some(Number.isNaN) || nums[0] !== tool.size) continue;
  const label = tool.size >= 1024 ? `${tool.size / 1024}KB` : `${tool.size}B`;
  if (tool.name === 'ib_read_lat' && nums.length >= 8) {
    // #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%
    metrics[`perftest_read_lat_${label}_p50_us`] = nums[4];
    metrics[`perftest_read_lat_${label}_p99_us`] = nums[7];
  } else if (tool.name === 'ib_read_bw') {
    // #bytes #iterations BW-peak BW-average MsgRate
    metrics[`perftest_read_bw_${label}_mb_per_s`] = nums[3];
  }
  tool = null;
}
if (metrics.perftest_read_lat_64B_p50_us === undefined) failures.push('no ib_read_lat result');
else metrics.perftest_read_lat_p50_us = metrics.perftest_read_lat_64B_p50_us;

const [check] = tagged(client, 'RIG-RESULT check');
const [bench] = tagged(client, 'RIG-RESULT bench');
if (!check) failures.push('no result from the verbs checks');
else if (check.stress_violations !== 0) failures.push('torn reads accepted');
if (!bench) failures.push('no result from the verbs bench');
Object.assign(metrics, check ?? {}, bench ?? {});
if (bench && metrics.perftest_read_lat_p50_us) {
  metrics.verbs_vs_perftest_read_64B_p50_ratio = Math.round((bench.verbs_read_64B_p50_us / metrics.perftest_read_lat_p50_us) * 100) / 100;
}

// Proof that reads crossed the link: rxe counted packets on both sides, and eth0 carried at
// least as many. The last counters line of each side covers the whole run.
const last = (lines, role) => tagged(lines, `RIG-COUNTERS ${role}`).at(-1);
const sc = last(server, 'server');
const cc = last(client, 'client');
if (!sc || !cc) failures.push('missing counters');
else {
  for (const [side, c] of [
    ['server', sc],
    ['client', cc],
  ]) {
    for (const [k, v] of Object.entries(c)) metrics[`${side}_${k}`] = v;
    if (!(c.rxe_sent_pkts > 0 && c.rxe_rcvd_pkts > 0)) failures.push(`${side}: rxe0 counted no RDMA packets`);
    if (c.eth0_tx_packets < c.rxe_sent_pkts || c.eth0_rx_packets < c.rxe_rcvd_pkts) failures.push(`${side}: eth0 carried fewer packets than rxe0 counted`);
  }
}

const result = {
  suite: 'transports-rig',
  machine: { host: hostname(), cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown' },
  settings: {
    vms: 2,
    vcpus_per_vm: 1,
    accel: 'tcg',
    link: 'qemu dgram on 127.0.0.1, virtio-net',
    rdma: 'soft-RoCE (rdma_rxe) on eth0',
  },
  metrics,
  failures,
};
writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
for (const [k, v] of Object.entries(metrics)) console.log(`${k.padEnd(44)} ${v}`);
if (failures.length) {
  console.error(`rig: FAILED:\n  ${failures.join('\n  ')}`);
  process.exit(1);
}
console.log(`rig: ok; results in ${out}`);
