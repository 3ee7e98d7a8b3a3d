// The Grafana dashboard shipped in docs/grafana: every series it queries is one the node
// exports, and every node metric is on some panel, so a renamed metric breaks this test and
// not an operator's dashboard.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createRegistry, NodeMetrics } from '../ts/metrics.js';

interface Panel {
  title: string;
  targets: { expr: string }[];
}

const dashboard = JSON.parse(readFileSync(new URL('../docs/grafana/remora-node.json', import.meta.url), 'utf8')) as { uid: string; panels: Panel[] };

describe('Grafana dashboard', () => {
  const registry = createRegistry();
  new NodeMetrics(registry);
  const exported = new Set(registry.getMetricsAsArray().map((m) => m.name));
  const queried = new Set(
    dashboard.panels.flatMap((p) =>
      p.targets.flatMap((t) => [...t.expr.matchAll(/\b(remora_[a-z0-9_]+|process_[a-z0-9_]+)/g)].map((m) => (m[1] ?? '').replace(/_(bucket|sum|count)$/, ''))),
    ),
  );

  it('queries only series the node exports', () => {
    expect([...queried].filter((name) => !exported.has(name))).toEqual([]);
  });

  it('shows every node metric', () => {
    const node = [...exported].filter((name) => name.startsWith('remora_'));
    expect(node.length).toBeGreaterThan(15);
    expect(node.filter((name) => !queried.has(name))).toEqual([]);
  });

  it('has a query on every panel and unique panel titles', () => {
    expect(dashboard.uid).toBe('remora-node');
    expect(dashboard.panels.filter((p) => p.targets.length === 0).map((p) => p.title)).toEqual([]);
    expect(new Set(dashboard.panels.map((p) => p.title)).size).toBe(dashboard.panels.length);
  });
});
