// `remora bench heron --app tpcc` end to end at its smallest: every configuration runs (latency
// at 2 x 3 memory and synced, 1 x 1; throughput at 1, 2, 4 partitions x 1, 3 replicas), each
// throughput run passes the consistency check, and the JSON holds every named metric. No
// timing is asserted: speed is measured in bench/, not tested. The load generators and
// replicas run the compiled CLI (dist/).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PAPER, runHeronTpcc, TPCC_REQUIRED_METRICS } from '../bench/heron-tpcc.js';
import { runCli, tempCluster } from './helpers.js';

// Fixed: the mix is drawn from it, so the latency run's multi-partition New-Orders are too.
const SEED = 7;

describe('bench heron --app tpcc', () => {
  it('runs every configuration and writes well-formed JSON with every named metric and a passing consistency check', async () => {
    const tmp = tempCluster();
    try {
      const out = join(tmp.dir, 'heron-tpcc.json');
      expect(await runHeronTpcc({ quick: true, out, seed: SEED, newOrders: 60, windowSeconds: 1 })).toBe(0);
      const json = JSON.parse(readFileSync(out, 'utf8')) as {
        suite: string;
        machine: { cores: number; cpu_model: string };
        settings: { seed: number; window_seconds: number };
        metrics: Record<string, unknown>;
        paper: Record<string, number>;
        consistency: Record<string, string[]>;
      };
      expect(json.suite).toBe('heron-tpcc');
      expect(json.machine.cores).toBeGreaterThan(0);
      expect(json.settings).toMatchObject({ seed: SEED, window_seconds: 1 });
      const missing = TPCC_REQUIRED_METRICS.filter((k) => typeof json.metrics[k] !== 'number' || !Number.isFinite(json.metrics[k]));
      expect(missing).toEqual([]);
      for (const v of Object.values(json.metrics)) expect(Number.isFinite(v)).toBe(true);
      expect(json.metrics['tpcc_neworder_count']).toBe(60);
      expect(json.metrics['tpcc_neworder_multi_count']).toBeGreaterThan(0);
      // One partition: no New-Order spans two, so no multi-partition figure rather than a zero.
      expect(json.metrics['tpcc_neworder_p1_r1_multi_count']).toBe(0);
      expect(json.metrics).not.toHaveProperty('tpcc_neworder_p1_r1_multi_p50_us');
      for (const p of [1, 2, 4]) {
        for (const r of [1, 3]) {
          const tag = `p${p}_r${r}`;
          expect(json.metrics[`tpcc_tps_${tag}`], tag).toBeGreaterThan(0);
          expect(json.metrics[`tpcc_consistency_ok_${tag}`], tag).toBe(1);
          expect(json.metrics[`tpcc_duplicates_${tag}`], tag).toBe(0);
          expect(json.metrics[`tpcc_replica_cpu_us_per_tx_${tag}`], tag).toBeGreaterThan(0);
          const checked = (json.consistency[tag] ?? []).map((l) => /^condition (\d) .*: ok on (\d+) (warehouses|districts)$/.exec(l)?.slice(1));
          // Condition 3 applies only to districts with undelivered orders, which Delivery may empty.
          const c3 = Number(checked[2]?.[1]);
          expect(c3, tag).toBeLessThanOrEqual(10 * p);
          expect(checked).toEqual([
            ['1', String(p), 'warehouses'],
            ['2', String(10 * p), 'districts'],
            ['3', String(c3), 'districts'],
            ['4', String(10 * p), 'districts'],
          ]);
        }
      }
      expect(json.paper).toEqual({ ...PAPER });
      expect(json.paper['paper_tpcc_tps_p4_r3']).toBe(92_808);
      const svg = readFileSync(join(tmp.dir, 'heron-tpcc.svg'), 'utf8');
      expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
      expect(svg.match(/<svg /g)).toHaveLength(3);
      expect(existsSync(`${out}.tmp`)).toBe(false);
    } finally {
      tmp.cleanup();
    }
  }, 300_000);

  it('refuses an app other than kv or tpcc, and --only with tpcc, in one line', async () => {
    const other = await runCli(['bench', 'heron', '--app', 'bank'], { timeoutMs: 15_000 });
    expect(other.code).toBe(2);
    expect(other.stderr.split('\n')[0]).toBe('remora: --app must be kv or tpcc, got "bank"');
    const only = await runCli(['bench', 'heron', '--app', 'tpcc', '--only', 'transfer'], { timeoutMs: 15_000 });
    expect(only.code).toBe(2);
    expect(only.stderr.split('\n')[0]).toBe('remora: --only applies to bench heron without --app tpcc');
  }, 30_000);
});
