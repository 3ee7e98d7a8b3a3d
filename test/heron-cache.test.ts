// Remote objects cached by version at a Heron replica: a read reuses the value held when the
// version `get_before(T)` chooses is the one held (checked one-sidedly, no value copied), and
// reads the value otherwise. Checked against a store directly (exact counters), and through
// replicas of two partitions on a random workload of cross-partition copies from hot keys
// (exact replies and final state against a serial execution, with the cache on and off).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { admitTx } from '../ts/app/admit.js';
import { makeTx } from '../ts/app/app.js';
import { encode, type Data } from '../ts/app/codec.js';
import type { Outcome } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { kvApp, kvId } from '../ts/apps/kv.js';
import type { Delivered, FromReplica } from '../ts/heron/messages.js';
import { destinations, partitionerOf } from '../ts/app/partition.js';
import { RemoteCache, VersionedRemote } from '../ts/heron/remote-cache.js';
import { HeronReplica, type ReplicaSummary } from '../ts/heron/replica.js';
import { loadOrCreateSecret } from '../ts/secret.js';
import { Store } from '../ts/store.js';
import { rng } from './kv-history.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-cache-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const bytes = (s: string): Buffer => Buffer.from(s, 'utf8');

describe('remote reads through the version cache', () => {
  it('reuse a held version only while it is the one chosen; count hits, misses and stale reads', async () => {
    const dir = join(work, 'direct');
    const secret = loadOrCreateSecret(dir);
    const owner = Store.create({ dir, name: 'owner', secret });
    try {
      owner.set([{ id: 'x', value: bytes('ten'), version: 10 }]);
      owner.set([{ id: 'x', value: bytes('twenty'), version: 20 }]);
      owner.set([{ id: 'gone', value: bytes('was'), version: 5 }]);
      owner.delete([{ id: 'gone', version: 7 }]);
      const r = await VersionedRemote.connect({ dir, store: 'owner', secret });
      await r.resolve(['x', 'gone', 'nobody']);

      // Version-only reads: exact timestamps and lengths, tombstones, lagging.
      expect(r.versions(['x', 'gone', 'nobody'])).toEqual([
        { status: 'value', version: 20n, length: 6 },
        { status: 'deleted', version: 7n },
        { status: 'absent' },
      ]);
      expect(r.versions(['x', 'x', 'gone'], 20n)).toEqual([
        { status: 'value', version: 10n, length: 3 },
        { status: 'value', version: 10n, length: 3 },
        { status: 'deleted', version: 7n },
      ]);
      expect(r.versions(['gone'], 7n)).toEqual([{ status: 'value', version: 5n, length: 3 }]);
      expect(r.versions(['x', 'gone'], 5n)).toEqual([{ status: 'lagging' }, { status: 'lagging' }]);

      const cache = new RemoteCache(2);
      const counts = () => ({ ...cache.counters });
      expect(r.readBefore(['x', 'gone', 'nobody'], 21n, cache)).toEqual([
        { status: 'value', version: 20n, value: bytes('twenty') },
        { status: 'deleted', version: 7n },
        { status: 'absent' },
      ]);
      expect(counts()).toEqual({ hits: 0, misses: 2, stale: 0, prefetched: 0 });
      expect(r.readBefore(['x', 'gone'], 100n, cache)).toEqual([
        { status: 'value', version: 20n, value: bytes('twenty') },
        { status: 'deleted', version: 7n },
      ]);
      expect(counts()).toEqual({ hits: 2, misses: 2, stale: 0, prefetched: 0 });
      // An earlier bound chooses the older version: never the held one.
      expect(r.readBefore(['x'], 20n, cache)).toEqual([{ status: 'value', version: 10n, value: bytes('ten') }]);
      expect(counts()).toEqual({ hits: 2, misses: 2, stale: 1, prefetched: 0 });
      // Overwritten: the next read returns the new value and counts the held one stale.
      owner.set([{ id: 'x', value: bytes('thirty'), version: 30 }]);
      expect(r.readBefore(['x'], 31n, cache)).toEqual([{ status: 'value', version: 30n, value: bytes('thirty') }]);
      expect(counts()).toEqual({ hits: 2, misses: 2, stale: 2, prefetched: 0 });
      expect(r.readBefore(['x'], 31n, cache)).toEqual([{ status: 'value', version: 30n, value: bytes('thirty') }]);
      expect(counts()).toEqual({ hits: 3, misses: 2, stale: 2, prefetched: 0 });
      // A lagging answer changes nothing: the caller asks another replica.
      expect(r.readBefore(['x'], 15n, cache)).toEqual([{ status: 'lagging' }]);
      expect(counts()).toEqual({ hits: 3, misses: 2, stale: 2, prefetched: 0 });
      expect(cache.peek('x')?.ts).toBe(30n);

      // Bounded, second chance: `x` and `gone` were both used since they came in, so each is
      // passed over once, then the oldest (`x`) goes; read again, it is a miss.
      owner.set([{ id: 'y', value: bytes('why'), version: 40 }]);
      await r.resolve(['y']);
      r.readBefore(['y'], 41n, cache);
      expect([cache.size, cache.peek('x'), cache.peek('gone')?.ts, cache.peek('y')?.ts]).toEqual([2, undefined, 7n, 40n]);
      expect(r.readBefore(['x'], 41n, cache)).toEqual([{ status: 'value', version: 30n, value: bytes('thirty') }]);
      expect(counts()).toEqual({ hits: 3, misses: 4, stale: 2, prefetched: 0 });
      // Then `gone`, unused since its second chance and now the oldest, makes room for `x`.
      expect([cache.peek('gone'), cache.peek('y')?.ts, cache.peek('x')?.ts]).toEqual([undefined, 40n, 30n]);

      // Prefetch fills what is not held, with the newest version; a read then hits it.
      const fresh = new RemoteCache(8);
      expect(r.prefetch(['x', 'y', 'nobody'], fresh)).toBe(2);
      expect(r.readBefore(['x', 'y'], 50n, fresh)).toEqual([
        { status: 'value', version: 30n, value: bytes('thirty') },
        { status: 'value', version: 40n, value: bytes('why') },
      ]);
      expect(fresh.counters).toEqual({ hits: 2, misses: 0, stale: 0, prefetched: 2 });

      // Off: the same answers, nothing held or counted.
      const off = new RemoteCache(0);
      for (const bound of [31n, 31n, 20n, 15n]) {
        expect(r.readBefore(['x', 'gone', 'y'], bound, off)).toEqual(r.readBefore(['x', 'gone', 'y'], bound, new RemoteCache(4)));
      }
      expect(r.prefetch(['x'], off)).toBe(0);
      expect({ ...off.counters, size: off.size }).toEqual({ hits: 0, misses: 0, stale: 0, prefetched: 0, size: 0 });
    } finally {
      owner.close();
    }
  });
});

type OutcomeMsg = Extract<FromReplica, { t: 'outcome' }>;

interface Run {
  outcomes: Map<bigint, Outcome>;
  /** Each replica's final value of every key, as encoded bytes (or 'deleted' / 'absent'). */
  states: Map<string, Map<string, string>>;
  summaries: ReplicaSummary[];
}

/**
 * Two partitions of `R` replicas in this process, fed transactions one at a time (each to
 * every replica of its destinations), with the cache holding `entries`.
 */
async function runWorkload(name: string, R: number, entries: number, txs: { command: 'put' | 'copy' | 'delete'; args: Record<string, Data> }[]): Promise<Run> {
  const P = 2;
  const dir = join(work, name);
  const secret = loadOrCreateSecret(dir);
  const seen = new Map<string, OutcomeMsg>();
  const waiting = new Map<string, (m: OutcomeMsg) => void>();
  const at = (h: number, q: number, ts: bigint) => `${h}.${q}@${ts}`;
  const replicas: HeronReplica[] = [];
  const summaries: ReplicaSummary[] = [];
  try {
    for (let h = 0; h < P; h++) {
      for (let q = 0; q < R; q++) {
        replicas.push(
          HeronReplica.create({
            dir,
            secret,
            app: kvApp,
            natives: nativeFunctions,
            partitions: P,
            replicas: R,
            partition: h,
            replica: q,
            graceMs: 2,
            timeoutMs: 20_000,
            transferSlotBytes: 1 << 16,
            remoteCacheEntries: entries,
            // Peers run in this process: waiting on this thread would only hold them up.
            coordSpinMicros: 0,
            coordBudgetMicros: 0,
            send: (m) => {
              if (m.t !== 'outcome') return;
              const k = at(m.partition, m.replica, m.ts);
              seen.set(k, m);
              waiting.get(k)?.(m);
            },
          }),
        );
      }
    }
    await Promise.all(replicas.map((r) => r.connect(20_000)));
    const failed = Promise.race(replicas.map((r) => r.failed));
    failed.catch(() => undefined);
    const replica = (h: number, q: number): HeronReplica => {
      const r = replicas[h * R + q];
      if (!r) throw new Error(`no replica ${h}.${q}`);
      return r;
    };
    const outcomeOf = async (h: number, q: number, ts: bigint): Promise<OutcomeMsg> => {
      const known = seen.get(at(h, q, ts));
      if (known) return known;
      let timer: NodeJS.Timeout | undefined;
      try {
        return await Promise.race([
          new Promise<OutcomeMsg>((resolve) => waiting.set(at(h, q, ts), resolve)),
          failed,
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no outcome from replica ${h}.${q} for ts ${ts} within 20 s`)), 20_000);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    };
    const part = partitionerOf(kvApp, P);
    const outcomes = new Map<bigint, Outcome>();
    let ts = 0n;
    for (const { command, args } of txs) {
      ts++;
      const decoded = admitTx(kvApp, makeTx(kvApp, command, args as never));
      const d: Delivered = { ts, body: decoded.body, auth: decoded.auth, dest: destinations(decoded.objects, part), tx: decoded };
      // A majority of each destination first, then the rest: each coordination wait holds one
      // of this process's libuv pool threads until it sees a majority.
      const rounds = R === 1 ? [[0]] : [[0, 1], [2]];
      for (const qs of rounds) {
        for (const h of d.dest) for (const q of qs) replica(h, q).deliver([d]);
        await Promise.all(d.dest.flatMap((h) => qs.map((q) => outcomeOf(h, q, d.ts))));
      }
      const first = await outcomeOf(d.dest[0] ?? 0, 0, ts);
      for (const h of d.dest) for (let q = 0; q < R; q++) expect((await outcomeOf(h, q, ts)).outcome).toEqual(first.outcome);
      outcomes.set(ts, first.outcome);
    }
    const keys = [...new Set(txs.flatMap((t) => Object.values(t.args).filter((v): v is string => typeof v === 'string' && !v.startsWith('v'))))];
    const states = new Map<string, Map<string, string>>();
    for (let h = 0; h < P; h++) {
      for (let q = 0; q < R; q++) {
        const own = keys.filter((k) => part(kvId(k)) === h);
        const found = replica(h, q).store.get(own.map(kvId));
        states.set(
          `${h}.${q}`,
          new Map(
            own.map((k, i) => {
              const r = found[i];
              return [k, r?.status === 'value' ? r.value.toString('hex') : (r?.status ?? 'absent')];
            }),
          ),
        );
      }
    }
    return { outcomes, states, summaries };
  } finally {
    for (const r of replicas) summaries.push(await r.close());
  }
}

/** What a serial execution gives: each reply, and the final value of every key. */
function serial(txs: { command: 'put' | 'copy' | 'delete'; args: Record<string, Data> }[]): {
  outcomes: Map<bigint, Outcome>;
  state: Map<string, Data | undefined>;
} {
  const state = new Map<string, Data | undefined>();
  const outcomes = new Map<bigint, Outcome>();
  // The store deletes only what it holds: a key never written stays absent, not a tombstone.
  const del = (key: string) => {
    if (state.has(key)) state.set(key, undefined);
  };
  txs.forEach(({ command, args }, i) => {
    const ts = BigInt(i + 1);
    if (command === 'put') {
      state.set(String(args['key']), args['value']);
      outcomes.set(ts, { status: 'ok', result: null });
    } else if (command === 'delete') {
      del(String(args['key']));
      outcomes.set(ts, { status: 'ok', result: null });
    } else {
      const v = state.get(String(args['from']));
      if (v === undefined) del(String(args['to']));
      else state.set(String(args['to']), v);
      outcomes.set(ts, { status: 'ok', result: v ?? null });
    }
  });
  return { outcomes, state };
}

describe('a Heron replica caching remote objects', () => {
  const part = partitionerOf(kvApp, 2);
  const named = (h: number, prefix: string, n: number): string[] => {
    const out: string[] = [];
    for (let i = 0; out.length < n; i++) if (part(kvId(`${prefix}${i}`)) === h) out.push(`${prefix}${i}`);
    return out;
  };
  // Hot keys in each partition, copied into keys of the other.
  const hot = [named(0, 'hot', 1)[0] ?? '', named(1, 'hot', 1)[0] ?? ''];
  const sinks = [named(1, 'sink', 4), named(0, 'sink', 4)];

  const workload = (seed: number, n: number) => {
    const rnd = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
    // First, a fixed prefix: the hot key of partition 1 read twice, overwritten, read again.
    const h1 = hot[1] ?? '';
    const txs: { command: 'put' | 'copy' | 'delete'; args: Record<string, Data> }[] = [
      { command: 'put', args: { key: h1, value: 'v1' } },
      { command: 'copy', args: { from: h1, to: sinks[1]?.[0] ?? '' } },
      { command: 'copy', args: { from: h1, to: sinks[1]?.[1] ?? '' } },
      { command: 'put', args: { key: h1, value: 'v2' } },
      { command: 'copy', args: { from: h1, to: sinks[1]?.[2] ?? '' } },
    ];
    for (let i = 0; i < n; i++) {
      const h = rnd() < 0.5 ? 0 : 1;
      const from = hot[h] ?? '';
      const r = rnd();
      if (r < 0.7) txs.push({ command: 'copy', args: { from, to: pick(sinks[h] ?? []) } });
      else if (r < 0.88) txs.push({ command: 'put', args: { key: from, value: `v${Math.floor(rnd() * 1e6)}` } });
      else if (r < 0.94) txs.push({ command: 'delete', args: { key: from } });
      else txs.push({ command: 'put', args: { key: pick(sinks[h] ?? []), value: `v${i}` } });
    }
    return txs;
  };

  const check = (run: Run, txs: ReturnType<typeof workload>, R: number): void => {
    const expected = serial(txs);
    expect(run.outcomes).toEqual(expected.outcomes);
    // The prefix: the copy after the overwrite replied with the new value, not the held one.
    expect(run.outcomes.get(5n)).toEqual({ status: 'ok', result: 'v2' });
    for (let h = 0; h < 2; h++) {
      for (let q = 0; q < R; q++) {
        const state = run.states.get(`${h}.${q}`);
        for (const [k, got] of state ?? []) {
          const v = expected.state.get(k);
          const want = expected.state.has(k) ? (v === undefined ? 'deleted' : encode(v).toString('hex')) : 'absent';
          expect({ replica: `${h}.${q}`, key: k, got }).toEqual({ replica: `${h}.${q}`, key: k, got: want });
        }
      }
    }
    // Digests agree within each partition.
    for (let h = 0; h < 2; h++) {
      const digests = run.summaries.filter((s) => s.partition === h).map((s) => s.digest);
      expect(new Set(digests).size).toBe(1);
    }
  };

  for (const R of [1, 3]) {
    it(`gives a serial execution's replies and state with the cache on and off (2 partitions × ${R})`, async () => {
      const seed = Number(process.env['HERON_CACHE_SEED'] ?? Date.now() % 1_000_000);
      console.log(`heron-cache seed ${seed} (HERON_CACHE_SEED=${seed} replays it)`);
      const txs = workload(seed, R === 1 ? 80 : 40);
      const on = await runWorkload(`on-${R}-${seed}`, R, 4096, txs);
      check(on, txs, R);
      const sum = (f: (s: ReplicaSummary) => number) => on.summaries.reduce((n, s) => n + f(s), 0);
      const counted = {
        hits: sum((s) => s.cacheHits),
        misses: sum((s) => s.cacheMisses),
        stale: sum((s) => s.cacheStale),
        prefetched: sum((s) => s.cachePrefetched),
      };
      console.log(`cache on: ${JSON.stringify(counted)}`);
      expect(counted.hits).toBeGreaterThan(0);
      // The hot key of partition 1 was overwritten after it was held (the prefix): at least one stale read.
      expect(counted.stale).toBeGreaterThan(0);

      const off = await runWorkload(`off-${R}-${seed}`, R, 0, txs);
      check(off, txs, R);
      expect(off.outcomes).toEqual(on.outcomes);
      expect(off.summaries.map((s) => s.digest)).toEqual(on.summaries.map((s) => s.digest));
      for (const s of off.summaries) expect([s.cacheHits, s.cacheMisses, s.cacheStale, s.cachePrefetched]).toEqual([0, 0, 0, 0]);
    }, 120_000);
  }
});
