// Replicated primaries' agreement check: window hashes compared between nodes.
import { describe, expect, it } from 'vitest';
import { Agreement, type DigestChannel, type WindowDigest } from '../ts/pipeline/agreement.js';
import type { Applied } from '../ts/pipeline/applied.js';

/** Test double of the engine's publish/subscribe: every message reaches every node, in order. */
function testBus(): () => DigestChannel {
  const handlers: ((b: Uint8Array) => void)[] = [];
  return () => ({
    publish: (b) => handlers.forEach((h) => h(b)),
    onMessage: (h) => handlers.push(h),
  });
}

const applied = (ts: bigint, result = Number(ts)): Applied => ({
  ts,
  digest: ts.toString(16).padStart(64, '0'),
  outcome: { status: 'ok', result },
  decision: 'executed',
  preExecutor: null,
  writes: [],
  writeCount: 0,
  conflicts: [],
});
const range = (from: number, to: number, f = applied) => Array.from({ length: to - from + 1 }, (_, i) => f(BigInt(from + i)));

describe('agreement between replicated primaries', () => {
  it('agrees on equal windows, names the window that differs, and skips windows a node joined late', () => {
    const bus = testBus();
    const disagreements: [WindowDigest, WindowDigest][] = [];
    const a = new Agreement('a', bus(), { every: 100, onDisagree: (m, t) => disagreements.push([m, t]) });
    const b = new Agreement('b', bus(), { every: 100 });
    // c restarted from a checkpoint at 150: it missed the start of (100, 200], so it hashes
    // from the window ending at 300 on.
    const c = new Agreement('c', bus(), { every: 100 });
    a.record(range(1, 300));
    b.record(range(1, 120));
    b.record(range(121, 199).concat([applied(200n, -1)], range(201, 300)));
    c.record(range(151, 300));
    expect(a.stats.published).toBe(3);
    expect(c.stats.published).toBe(1);
    // a: b agrees on windows 100 and 300 and differs on 200; c agrees on 300.
    expect(a.stats).toMatchObject({ agreed: 3, disagreed: 1, malformed: 0 });
    expect(disagreements.map(([m, t]) => [m.end, t.node])).toEqual([[200n, 'b']]);
    expect(c.stats).toMatchObject({ agreed: 2, disagreed: 0 });
  });

  it('counts a malformed peer message and keeps comparing', () => {
    const bus = testBus();
    const a = new Agreement('a', bus(), { every: 10 });
    const raw = bus();
    raw.publish(Buffer.from([0xc1]));
    raw.publish(Buffer.from('not msgpack at all'));
    const b = new Agreement('b', bus(), { every: 10 });
    a.record(range(1, 10));
    b.record(range(1, 10));
    expect(a.stats.malformed).toBe(2);
    expect(a.stats.agreed).toBe(1);
  });
});
