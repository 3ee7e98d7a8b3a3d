// Heron's trust boundary: a transaction may write only inside its destination set, the
// partitions that ordered it. A crafted body declaring fewer objects than its command writes is
// refused at admission; an app whose command writes an object it does not declare is aborted
// at every replica of every destination, with nothing written anywhere; cluster files refuse
// sizes that tolerate no crash for their cost, or that one host cannot run.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { admitTx } from '../ts/app/admit.js';
import { defineApp, makeTx, type Ctx } from '../ts/app/app.js';
import { encode } from '../ts/app/codec.js';
import { execute, type LookupTable, type Outcome, type Versioned } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { decodeTx, encodeBody, TxError, type Transaction } from '../ts/app/tx.js';
import { kvApp, kvId } from '../ts/apps/kv.js';
import { HeronCluster } from '../ts/heron/cluster.js';
import { HeronConfigError, parseHeronConfig } from '../ts/heron/config.js';
import { DIGEST_ZERO, nextDigest } from '../ts/heron/digest.js';
import { HERON_SOCKET, REPLICA_ROLE, type Delivered, type FromReplica } from '../ts/heron/messages.js';
import { parseFromReplica, parseTable, parseToReplica, ProtocolError } from '../ts/heron/parse.js';
import { destinations, partitionerOf } from '../ts/app/partition.js';
import { HeronReplica, type ReplicaSummary } from '../ts/heron/replica.js';
import type { Decision } from '../ts/pipeline/merge.js';
import { RoleProcess } from '../ts/process.js';
import { loadOrCreateSecret } from '../ts/secret.js';
import { connect } from '../ts/wire.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-trust-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const ONE_REPLICA_WARNING =
  'heron: WARNING: 1 replica per partition tolerates no crash: if a replica process dies, its partition stops; use 3 replicas (f=1) to survive one crash';

/** The message of what `f` throws (or rejects with), if it is a `cls`; anything else fails. */
async function thrown(f: () => unknown, cls: new (...a: never[]) => Error): Promise<string> {
  let result: unknown;
  try {
    result = await f();
  } catch (e) {
    if (e instanceof cls) return e.message;
    throw new Error(`expected a ${cls.name}, got ${String(e)}`);
  }
  const shown = JSON.stringify(result, (_, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)) ?? String(result);
  throw new Error(`expected a ${cls.name}, got a result: ${shown.slice(0, 300)}`);
}

describe('admission at the launcher', () => {
  it('refuses a body whose declared objects leave out what its command writes; nothing is sequenced', async () => {
    const logged: string[] = [];
    const cluster = await HeronCluster.start({ dir: join(work, 'admit'), app: 'kv', partitions: 2, replicas: 1, log: (m) => logged.push(m) });
    let summaries: ReplicaSummary[] = [];
    try {
      const part = partitionerOf(kvApp, 2);
      const keys = ['a', 'b', 'c', 'd', 'e', 'f'];
      const from = keys.find((k) => part(kvId(k)) === 0) ?? 'a';
      const to = keys.find((k) => part(kvId(k)) === 1) ?? 'b';
      // The attack: a copy into partition 1 declaring only its source, so that only partition 0
      // would order it and partition 1's write would be dropped while the outcome says ok.
      const crafted: Transaction = { body: encodeBody('copy', { from, nonce: 'x.1', to }, [kvId(from)]), auth: [] };
      expect(await thrown(() => cluster.submit(crafted), TxError)).toBe(
        `declared objects ["kv/${from}"] differ from what kv.copy touches (["kv/${from}","kv/${to}"]); build the body with the app's objects()`,
      );
      const unknown: Transaction = { body: encodeBody('drop', { key: to }, [kvId(to)]), auth: [] };
      expect(await thrown(() => cluster.submit(unknown), TxError)).toBe('unknown command "drop" for app kv');
      // Neither reached the log: the first transaction that does gets timestamp 1.
      const put = await cluster.submit(makeTx(kvApp, 'put', { key: from, value: 5, nonce: 'x.2' }));
      expect([put.ts, put.outcome]).toEqual([1n, { status: 'ok', result: null }]);
      const get = await cluster.submit(makeTx(kvApp, 'get', { key: to, nonce: 'x.3' }));
      expect([get.ts, get.outcome]).toEqual([2n, { status: 'ok', result: null }]);
    } finally {
      summaries = await cluster.close();
    }
    expect(summaries.map((s) => [s.partition, s.applied])).toEqual([
      [0, 1],
      [1, 1],
    ]);
    expect(cluster.outcomeMismatches).toEqual([]);
    // A cluster of one replica per partition starts, and says once what that costs.
    expect(logged).toEqual([ONE_REPLICA_WARNING]);
  }, 60_000);
});

/** Object `o/<n>`; it lives in partition n mod the partition count. */
const oid = (n: number): string => `o/${n}`;

/**
 * A double of an application with a bug: `spill` writes `also` besides its `keys`, and
 * objects() names only the keys, so admission (which must trust objects()) routes it to the
 * keys' partitions alone.
 */
const leakyDouble = defineApp({
  name: 'leaky-double',
  commands: {
    put(ctx: Ctx, args: { key: number; value: number }): null {
      ctx.write(oid(args.key), args.value);
      return null;
    },
    spill(ctx: Ctx, args: { keys: number[]; also: number; nonce: string }): number {
      const n = (ctx.read<number>(oid(args.keys[0] ?? 0)) ?? 0) + 1;
      for (const k of args.keys) ctx.write(oid(k), n);
      ctx.write(oid(args.also), n);
      return n;
    },
  },
  objects(command, args): string[] {
    const a = args as { key?: number; keys?: number[] };
    return command === 'put' ? [oid(a.key ?? 0)] : (a.keys ?? []).map(oid);
  },
  partition: (id, partitions) => Number(id.slice(2)) % partitions,
});

type OutcomeMsg = Extract<FromReplica, { t: 'outcome' }>;

describe('replicas contain writes to their destinations', () => {
  it('abort a transaction writing outside them at every replica of every destination; nothing is written', async () => {
    const P = 3;
    const R = 3;
    const dir = join(work, 'leaky');
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
              app: leakyDouble,
              natives: nativeFunctions,
              partitions: P,
              replicas: R,
              partition: h,
              replica: q,
              graceMs: 2,
              timeoutMs: 20_000,
              transferSlotBytes: 1 << 16,
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
        const k = at(h, q, ts);
        const known = seen.get(k);
        if (known) return known;
        let timer: NodeJS.Timeout | undefined;
        try {
          return await Promise.race([
            new Promise<OutcomeMsg>((resolve) => waiting.set(k, resolve)),
            failed,
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`no outcome from replica ${h}.${q} for ts ${ts} within 20 s`)), 20_000);
            }),
          ]);
        } finally {
          clearTimeout(timer);
        }
      };

      const part = partitionerOf(leakyDouble, P);
      const state = new Map<string, Versioned>();
      /** A pre-executor's table for `tx`, run against `view` (the state it believes current). */
      const tableFor = (tx: Transaction, view: ReadonlyMap<string, Versioned>): LookupTable =>
        execute(leakyDouble, decodeTx(tx), { read: (id) => view.get(id) ?? { version: 0n, value: undefined } }, nativeFunctions).table;
      const delivery = (ts: bigint, tx: Transaction, table?: LookupTable): Delivered => {
        const decoded = admitTx(leakyDouble, tx);
        return { ts, body: decoded.body, auth: decoded.auth, dest: destinations(decoded.objects, part), ...(table ? { table } : {}) };
      };
      /**
       * Delivers to every replica of every destination. A multi-partition one goes to replicas 0
       * and 1 of each first (a majority everywhere), then to replica 2: this process has one
       * libuv pool (4 threads unless UV_THREADPOOL_SIZE says otherwise), and each coordination wait
       * holds one until it sees a majority.
       */
      const deliver = async (d: Delivered): Promise<void> => {
        const rounds = d.dest.length === 1 ? [[0, 1, 2]] : [[0, 1], [2]];
        for (const qs of rounds) {
          for (const h of d.dest) for (const q of qs) replica(h, q).deliver([d]);
          await Promise.all(d.dest.flatMap((h) => qs.map((q) => outcomeOf(h, q, d.ts))));
        }
      };

      const spill = (keys: number[], also: number, nonce: string) => makeTx(leakyDouble, 'spill', { keys, also, nonce });
      // Admission cannot see the bug: the declared objects are what objects() says.
      expect(admitTx(leakyDouble, spill([0, 1], 2, 'probe')).objects).toEqual(['o/0', 'o/1']);
      expect([part('o/0'), part('o/1'), part('o/2'), part('o/4'), part('o/5'), part('o/7')]).toEqual([0, 1, 2, 1, 2, 1]);

      await deliver(delivery(1n, makeTx(leakyDouble, 'put', { key: 0, value: 10 })));
      await deliver(delivery(2n, makeTx(leakyDouble, 'put', { key: 1, value: 20 })));
      state.set('o/0', { version: 1n, value: encode(10) });
      state.set('o/1', { version: 2n, value: encode(20) });
      // Single-partition: executed; with a current table (adopted); with a stale one (re-executed).
      await deliver(delivery(3n, spill([0], 1, 's3')));
      const s4 = spill([0], 4, 's4');
      await deliver(delivery(4n, s4, tableFor(s4, state)));
      const s5 = spill([0], 7, 's5');
      await deliver(delivery(5n, s5, tableFor(s5, new Map())));
      // Multi-partition, partitions 0 and 1, writing into partition 2: executed, then adopted.
      await deliver(delivery(6n, spill([0, 1], 2, 's6')));
      const s7 = spill([0, 1], 5, 's7');
      await deliver(delivery(7n, s7, tableFor(s7, state)));
      // Replicas go on after the aborts.
      await deliver(delivery(8n, makeTx(leakyDouble, 'put', { key: 0, value: 11 })));

      const outside = (id: string, dest: string): Outcome => ({
        status: 'aborted',
        reason: `writes ${id} of partition ${part(id)}, which is not among its destinations [${dest}]: the app's objects() must declare it`,
      });
      const ok: Outcome = { status: 'ok', result: null };
      const expected: [bigint, number[], Outcome, Decision][] = [
        [1n, [0], ok, 'executed'],
        [2n, [1], ok, 'executed'],
        [3n, [0], outside('o/1', '0'), 'executed'],
        [4n, [0], outside('o/4', '0'), 'adopted'],
        [5n, [0], outside('o/7', '0'), 'reexecuted'],
        [6n, [0, 1], outside('o/2', '0, 1'), 'executed'],
        [7n, [0, 1], outside('o/5', '0, 1'), 'adopted'],
        [8n, [0], ok, 'executed'],
      ];
      for (const [ts, dest, outcome, decision] of expected) {
        for (const h of dest) {
          for (let q = 0; q < R; q++) {
            const m = await outcomeOf(h, q, ts);
            expect({ ts, h, q, outcome: m.outcome, decision: m.decision }).toEqual({ ts, h, q, outcome, decision });
          }
        }
      }
      expect(seen.size).toBe(expected.reduce((n, [, dest]) => n + dest.length * R, 0));

      // No replica of any partition holds a write of an aborted transaction, in or out of its
      // destinations; each holds exactly its own partition's puts.
      const ids = ['o/0', 'o/1', 'o/2', 'o/4', 'o/5', 'o/7'];
      const final = new Map<string, readonly [bigint, number]>([
        ['o/0', [8n, 11]],
        ['o/1', [2n, 20]],
      ]);
      for (let h = 0; h < P; h++) {
        for (let q = 0; q < R; q++) {
          const want = ids.map((id) => {
            const v = final.get(id);
            return part(id) === h && v ? { status: 'value', version: v[0], value: encode(v[1]) } : { status: 'absent' };
          });
          expect({ h, q, found: replica(h, q).store.get(ids) }).toEqual({ h, q, found: want });
        }
      }

      for (const r of replicas.splice(0)) summaries.push(await r.close());
      const chain = (steps: [bigint, [string, Uint8Array | null][]][]) => steps.reduce((d, [ts, w]) => nextDigest(d, ts, w), DIGEST_ZERO);
      const digest0 = chain([
        [1n, [['o/0', encode(10)]]],
        [3n, []],
        [4n, []],
        [5n, []],
        [6n, []],
        [7n, []],
        [8n, [['o/0', encode(11)]]],
      ]);
      const digest1 = chain([
        [2n, [['o/1', encode(20)]]],
        [6n, []],
        [7n, []],
      ]);
      const want = (h: number, applied: number, digest: string, adopted: number, reexecuted: number, executed: number) =>
        Array.from({ length: R }, (_, q) => ({ partition: h, replica: q, applied, digest, adopted, reexecuted, executed }));
      expect(
        summaries.map(({ partition, replica: q, applied, digest, adopted, reexecuted, executed }) => ({
          partition,
          replica: q,
          applied,
          digest,
          adopted,
          reexecuted,
          executed,
        })),
      ).toEqual([...want(0, 7, digest0, 2, 1, 4), ...want(1, 3, digest1, 1, 0, 2), ...want(2, 0, DIGEST_ZERO, 0, 0, 0)]);
    } finally {
      for (const r of replicas) await r.close().catch(() => undefined);
    }
  }, 90_000);
});

describe('cluster sizes', () => {
  const parse = (partitions: number, replicas: number) => () => parseHeronConfig(JSON.stringify({ app: 'kv', partitions, replicas }), 'c.json');
  const OVER_7 =
    'over the limit of 7: all replicas run on this one host, so more than 7 (f=3) add processes and coordination writes, not tolerance of independent failures; use 3, 5 or 7';
  const processes = (p: number, r: number) =>
    `"partitions" × "replicas" is ${p} × ${r} = ${p * r} replica processes, over the limit of 64: every replica is its own process on this host (a Node runtime, a store, a coordination wait on its own thread); lower "partitions" or "replicas"`;

  it('refuse even replica counts, more than 7 replicas and more than 64 replica processes', async () => {
    expect(await thrown(parse(2, 2), HeronConfigError)).toBe('c.json: "replicas" is 2: 2 replicas tolerate no more crashes than 1; use 3 (f=1)');
    expect(await thrown(parse(2, 4), HeronConfigError)).toBe('c.json: "replicas" is 4: 4 replicas tolerate no more crashes than 3; use 5 (f=2)');
    expect(await thrown(parse(1, 9), HeronConfigError)).toBe(`c.json: "replicas" is 9, ${OVER_7}`);
    expect(await thrown(parse(1024, 31), HeronConfigError)).toBe(`c.json: "replicas" is 31, ${OVER_7}; ${processes(1024, 31)}`);
    expect(await thrown(parse(22, 3), HeronConfigError)).toBe(`c.json: ${processes(22, 3)}`);
    expect(await thrown(parse(33, 2), HeronConfigError)).toBe(
      `c.json: "replicas" is 2: 2 replicas tolerate no more crashes than 1; use 3 (f=1); ${processes(33, 2)}`,
    );
    // The largest that pass, and one replica (which warns when the cluster starts).
    for (const [p, r] of [
      [21, 3],
      [9, 7],
      [64, 1],
      [1, 1],
    ] as const)
      expect(parse(p, r)()).toEqual({ app: 'kv', partitions: p, replicas: r });

    // In code, the same rules, before anything is created. Sizes that stay cheap should the
    // rules ever stop being applied here: a cluster that starts is closed again.
    const dir = join(work, 'never');
    const start = (partitions: number, replicas: number) => () =>
      HeronCluster.start({ dir, app: 'kv', partitions, replicas }).then(async (c) => {
        await c.close();
        return `started ${partitions} × ${replicas}`;
      });
    expect(await thrown(start(2, 2), RangeError)).toBe('heron: "replicas" is 2: 2 replicas tolerate no more crashes than 1; use 3 (f=1)');
    expect(await thrown(start(1, 9), RangeError)).toBe(`heron: "replicas" is 9, ${OVER_7}`);
    expect(existsSync(dir)).toBe(false);
  }, 60_000);

  it('start one replica per partition from a file with the warning on stderr, once', async () => {
    const file = join(work, 'one.json');
    writeFileSync(file, JSON.stringify({ app: 'kv', partitions: 1, replicas: 1 }));
    const proc = await RoleProcess.start('start', ['heron', '--config', file, '--dir', join(work, 'one')], { readyTimeoutMs: 60_000 });
    const stopped = await proc.stop(10_000);
    expect(stopped.code).toBe(0);
    expect(proc.stderr.split('\n').filter((l) => l === ONE_REPLICA_WARNING)).toEqual([ONE_REPLICA_WARNING]);
  }, 60_000);
});

describe('malformed frames on the launcher socket', () => {
  const timing = { phase2: 0, execute: 1, phase4: 0, delayed: 0, graceWaits: 0, graceMicros: 0 };
  const ok: Outcome = { status: 'ok', result: null };
  const hex = 'ab'.repeat(32);

  it('cut off the member connection that sent them, with the reason logged; the cluster keeps serving', async () => {
    const logged: string[] = [];
    const dir = join(work, 'frames');
    const cluster = await HeronCluster.start({ dir, app: 'kv', partitions: 1, replicas: 1, log: (m) => logged.push(m) });
    let summaries: ReplicaSummary[] = [];
    try {
      const secret = loadOrCreateSecret(dir);
      const before = await cluster.submit(makeTx(kvApp, 'put', { key: 'k', value: 1, nonce: 'f.1' }));
      expect([before.ts, before.outcome]).toEqual([1n, ok]);
      /** Connects as `role` with the member credential, sends `frame`, and resolves once the launcher hung up. */
      const sendAs = async (role: string, frame: unknown): Promise<void> => {
        const conn = await connect({ path: join(dir, HERON_SOCKET), secret, role, log: () => undefined });
        const closed = new Promise<void>((resolve) => conn.onClose(() => resolve()));
        conn.onMessage(() => undefined);
        conn.send(frame);
        await closed;
      };
      const role = `${REPLICA_ROLE}:0.0`;
      const cases: [frame: unknown, reason: string][] = [
        [42, 'expected a replica message, got number'],
        [[1, 2], 'expected a replica message, got an array'],
        [{ t: 'deliver', txs: [] }, 'expected hello, outcome, digest or transferred, got a message of type "deliver"'],
        [{ t: 'hello', partition: 0, replica: 0, digest: 'x' }, 'hello: digest must be 64 hex digits'],
        [{ t: 'hello', partition: -1, replica: 0, digest: hex }, 'hello: partition and replica must be counts below 1024 and 31'],
        [{ t: 'outcome', ts: '2', outcome: ok, partition: 0, replica: 0, timing, decision: 'executed' }, 'outcome: ts must be a non-negative 64-bit integer'],
        [
          { t: 'outcome', ts: 2n, outcome: ok, partition: 0, replica: 0, timing, decision: 'guessed' },
          'outcome: decision must be one of adopted, reexecuted, executed',
        ],
        [
          { t: 'outcome', ts: 2n, outcome: { status: 'fine' }, partition: 0, replica: 0, timing, decision: 'executed' },
          "outcome: outcome must be { status: 'ok', result } with an encodable result, or { status: 'aborted', reason }",
        ],
        [
          { t: 'outcome', ts: 2n, outcome: ok, partition: 0, replica: 0, timing: { ...timing, delayed: 0.5 }, decision: 'executed' },
          'outcome: timing.delayed must be a count',
        ],
        [
          { t: 'outcome', ts: 2n, outcome: ok, partition: 0, replica: 0, timing, decision: 'executed', writes: [['kv/k', 5]] },
          'outcome: writes must be [id, bytes | null] pairs',
        ],
        [
          { t: 'digest', partition: 0, replica: 0, applied: -1, ts: 1n, digest: hex },
          'digest: applied must be a count, ts a 64-bit integer, digest 64 hex digits',
        ],
        [
          { t: 'transferred', partition: 0, replica: 0, from: 1, since: 0n, ts: 1n, objects: 1, bytes: 1 },
          'transferred: from must be a replica, since and ts 64-bit integers, objects, bytes, micros and nativeMicros counts',
        ],
        // Well-formed, but out of turn or for another replica.
        [
          { t: 'outcome', ts: 1n, outcome: { status: 'ok', result: 'forged' }, partition: 0, replica: 0, timing, decision: 'executed' },
          'the first message must be hello, got outcome',
        ],
        [{ t: 'hello', partition: 0, replica: 1, digest: hex }, 'hello names replica 0.1'],
        [{ t: 'hello', partition: 0, replica: 0, digest: hex }, 'that replica is already connected'],
      ];
      for (const [frame, reason] of cases) {
        const at = logged.length;
        await sendAs(role, frame);
        expect(logged.slice(at).map((l) => l.replace(/ at .*?: /, ' at PEER: '))).toEqual([`heron: replica 0.0 at PEER: ${reason}; closing the connection`]);
      }
      // A role naming no replica of this cluster is refused before any frame is read.
      const at = logged.length;
      await sendAs(`${REPLICA_ROLE}:3.0`, { t: 'hello', partition: 3, replica: 0, digest: hex });
      expect(logged.slice(at).map((l) => l.replace(/: .*?: role/, ': PEER: role'))).toEqual([
        'heron: PEER: role "heron-replica:3.0" names no replica of this cluster of 1 × 1; closing the connection',
      ]);

      // Nothing changed: the real replica still answers, in order, and nothing forged was taken.
      const after = await cluster.submit(makeTx(kvApp, 'get', { key: 'k', nonce: 'f.2' }));
      expect([after.ts, after.outcome, after.from]).toEqual([2n, { status: 'ok', result: 1 }, { partition: 0, replica: 0 }]);
    } finally {
      summaries = await cluster.close();
    }
    expect(summaries.map((s) => [s.partition, s.replica, s.applied])).toEqual([[0, 0, 2]]);
    expect([cluster.outcomeMismatches, cluster.decisionMismatches, cluster.divergences, cluster.transfers]).toEqual([[], [], [], []]);
  }, 60_000);

  it('a replica checks each delivery and table before it is queued', async () => {
    const put = makeTx(kvApp, 'put', { key: 'k', value: 1, nonce: 'd.1' });
    const reason = (f: () => unknown) => thrown(f, ProtocolError);
    expect(await reason(() => parseToReplica({ t: 'hello' }))).toBe('expected a deliver or peers message, got a message of type "hello"');
    expect(await reason(() => parseToReplica({ t: 'peers', addresses: ['nowhere'], ring: null, rejoined: null }))).toBe(
      'peers: addresses must be null or a list of host:port',
    );
    expect(await reason(() => parseToReplica({ t: 'peers', addresses: null, ring: 7, rejoined: null }))).toBe('peers: ring must be null or host:port');
    expect(await reason(() => parseToReplica({ t: 'peers', addresses: null, ring: null, rejoined: -1 }))).toBe(
      'peers: rejoined must be null or an entry index',
    );
    expect(parseToReplica({ t: 'peers', addresses: ['127.0.0.1:4000'], ring: '127.0.0.1:4001', rejoined: 0 })).toEqual({
      t: 'peers',
      addresses: ['127.0.0.1:4000'],
      ring: '127.0.0.1:4001',
      rejoined: 0,
    });
    expect(await reason(() => parseFromReplica({ t: 'hello', partition: 0, replica: 0, digest: hex, address: 'x' }))).toBe('hello: address must be host:port');
    expect(await reason(() => parseToReplica({ t: 'deliver', txs: {} }))).toBe('deliver: txs must be an array');
    expect(await reason(() => parseToReplica({ t: 'deliver', txs: [{ ts: -1n, body: put.body, auth: [], dest: [0] }] }))).toBe(
      'deliver: transaction 0: ts must be a non-negative 64-bit integer',
    );
    expect(await reason(() => parseToReplica({ t: 'deliver', txs: [{ ts: 1n, body: put.body, auth: [], dest: [] }] }))).toBe(
      'deliver: transaction 0: dest must be partition numbers',
    );
    expect(await reason(() => parseToReplica({ t: 'deliver', txs: [{ ts: 1n, body: 'put', auth: [], dest: [0] }] }))).toBe(
      'deliver: transaction 0 (ts 1) does not decode: transaction body must be bytes',
    );
    const table: LookupTable = {
      reads: [['kv/k', 3n]],
      dynamic: [],
      speculative: [],
      writes: [['kv/k', encode(1)]],
      auth: [],
      precompiles: [],
      outcome: { status: 'ok', result: null },
    };
    expect(
      await reason(() => parseToReplica({ t: 'deliver', txs: [{ ts: 1n, body: put.body, auth: [], dest: [0], table: { ...table, reads: [['kv/k', 3]] } }] })),
    ).toBe('deliver: transaction 0: table: reads must be [id, version] pairs');
    expect(await reason(() => parseTable({ ...table, outcome: { status: 'ok', result: new Date(0) } }))).toBe(
      "lookup table: outcome must be { status: 'ok', result } with an encodable result, or { status: 'aborted', reason }",
    );
    // A good one comes back decoded, its table intact.
    const delivered = parseToReplica({ t: 'deliver', txs: [{ ts: 1n, body: put.body, auth: [], dest: [0], table }] });
    const [d] = delivered.t === 'deliver' ? delivered.txs : [];
    expect([d?.ts, d?.dest, d?.tx?.objects, d?.table]).toEqual([1n, [0], ['kv/k'], table]);
    expect(parseFromReplica({ t: 'digest', partition: 0, replica: 2, applied: 5, ts: 9n, digest: hex })).toEqual({
      t: 'digest',
      partition: 0,
      replica: 2,
      applied: 5,
      ts: 9n,
      digest: hex,
    });
  });
});
