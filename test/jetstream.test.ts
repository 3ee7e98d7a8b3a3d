// The replicated sequencer on a 3-node JetStream cluster on loopback: agreement between
// instances, dedup across instances and restarts, a leader killed mid-load, malformed input.
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { decodeTx, type DecodedTx } from '../ts/app/tx.js';
import { kvApp } from '../ts/apps/kv.js';
import { buildNatsServer, haveGo, startNatsCluster, type NatsCluster } from '../ts/engine/nats.js';
import { decodeMessage, JetStreamSequencer } from '../ts/pipeline/jetstream-sequencer.js';
import { TRANSIENT } from '../ts/pipeline/jetstream-stream.js';
import type { Accepted, Sequenced } from '../ts/pipeline/sequencer.js';
import { tempCluster, xorshift } from './helpers.js';

const GO = haveGo();
if (!GO) console.warn('jetstream.test: skipped: `go` is not on PATH, so nats-server cannot be built');

let nonce = 0;
const seed = Number(process.env['REMORA_TEST_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
console.log(`jetstream.test: seed ${seed}`);
const tx = (tag: string): DecodedTx => decodeTx(makeTx(kvApp, 'put', { key: `k${nonce % 97}`, value: `${tag}-${nonce++}` }));

/** Records what a subscriber delivered, and lets a test wait for a count without sleeping. */
function collector() {
  const seen: { ts: bigint; digest: string }[] = [];
  const batchEnds: bigint[] = [];
  let waiters: { n: number; resolve: () => void }[] = [];
  const deliver = (batch: Sequenced[]): void => {
    for (const s of batch) seen.push({ ts: s.ts, digest: s.tx.digest });
    const last = batch[batch.length - 1];
    if (last) batchEnds.push(last.ts);
    waiters = waiters.filter((w) => (seen.length >= w.n ? (w.resolve(), false) : true));
  };
  const reached = (n: number) => new Promise<void>((resolve) => (seen.length >= n ? resolve() : waiters.push({ n, resolve })));
  return { seen, batchEnds, deliver, reached };
}

/** `p`, or a failure saying where things stood if it takes longer than `ms`. */
async function bounded<T>(p: Promise<T>, ms: number, state: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`not done within ${ms / 1000} s: ${state()}`)), ms)));
  try {
    return await Promise.race([p, expired]);
  } finally {
    clearTimeout(timer);
  }
}

function expectDense(seen: readonly { ts: bigint; digest: string }[]): void {
  seen.forEach((s, i) => {
    if (s.ts !== BigInt(i + 1)) expect.fail(`timestamp ${s.ts} at position ${i}, expected ${i + 1}`);
  });
  expect(new Set(seen.map((s) => s.digest)).size).toBe(seen.length);
}

describe.skipIf(!GO)('JetStreamSequencer on a 3-node cluster', () => {
  let tmp: ReturnType<typeof tempCluster>;
  let cluster: NatsCluster;
  const open: JetStreamSequencer[] = [];
  const sequencer = async (stream: string, extra: Partial<Parameters<typeof JetStreamSequencer.open>[0]> = {}) => {
    const s = await JetStreamSequencer.open({ servers: cluster.urls, stream, ...extra });
    open.push(s);
    return s;
  };

  beforeAll(async () => {
    buildNatsServer((m) => console.log(m));
    tmp = tempCluster();
    cluster = await startNatsCluster({ dir: tmp.dir, log: (m) => console.log(m) });
  }, 300_000);

  afterAll(async () => {
    try {
      // A sequencer still waiting on deliveries must not keep the servers and files around.
      await bounded(Promise.allSettled(open.map((s) => s.close())), 20_000, () => 'closing sequencers');
    } finally {
      await cluster?.stop();
      tmp?.cleanup();
    }
  }, 60_000);

  it('two instances deliver the identical dense sequence; a tx through both is delivered once', async () => {
    const a = await sequencer('AGREE');
    const b = await sequencer('AGREE');
    const ca = collector();
    const cb = collector();
    a.subscribe(0n, ca.deliver);
    b.subscribe(0n, cb.deliver);
    const rand = xorshift(seed);
    const submits: { tx: DecodedTx; done: Promise<Accepted> }[] = [];
    // Interleaved bursts of random size through either instance.
    for (let sent = 0; sent < 6000;) {
      const n = 1 + Math.floor(rand() * 300);
      const via = rand() < 0.5 ? a : b;
      for (let i = 0; i < n; i++, sent++) {
        const t = tx('agree');
        submits.push({ tx: t, done: via.submit(t) });
      }
      if (rand() < 0.3) await Promise.resolve();
    }
    const twice = tx('twice');
    const [ra, rb] = await Promise.all([a.submit(twice), b.submit(twice)]);
    const accepted = await Promise.all(submits.map((s) => s.done));
    expect(accepted.every((r) => !r.duplicate)).toBe(true);
    expect([ra.duplicate, rb.duplicate].sort()).toEqual([false, true]);
    expect(ra.ts).toBe(rb.ts);

    const total = submits.length + 1;
    await Promise.all([ca.reached(total), cb.reached(total)]);
    expect(ca.seen.length).toBe(total);
    expect(cb.seen).toEqual(ca.seen);
    expectDense(ca.seen);
    const tsOf = new Map(ca.seen.map((s) => [s.digest, s.ts]));
    submits.forEach((s, i) => expect(tsOf.get(s.tx.digest)).toBe(accepted[i]?.ts));
    expect(tsOf.get(twice.digest)).toBe(ra.ts);
    expect(a.messages + b.messages).toBeLessThan(total / 5); // transactions were grouped into messages
    expect(await a.caughtUp()).toBeGreaterThanOrEqual(0n);

    // Resume: a third instance from the first's resume point at a batch end in the middle.
    const mid = ca.batchEnds[Math.floor(ca.batchEnds.length / 2)] ?? 0n;
    const point = a.resumePoint(mid);
    expect(point).not.toBeNull();
    const ends = new Set(ca.batchEnds);
    const notAnEnd = [...Array(total).keys()].map((i) => BigInt(i + 1)).find((t) => !ends.has(t)) ?? 0n;
    expect(a.resumePoint(notAnEnd)).toBeNull();
    const c = await sequencer('AGREE', { resume: point ?? new Uint8Array() });
    expect(() => c.subscribe(0n, () => undefined)).toThrow(/opened to resume after ts/);
    const cc = collector();
    c.subscribe(mid, cc.deliver);
    expect(await c.caughtUp()).toBe(BigInt(total));
    expect(cc.seen).toEqual(ca.seen.slice(Number(mid)));
    // A transaction delivered before the resume point is still known to the resumed instance.
    const early = submits.find((s) => s.tx.digest === ca.seen[0]?.digest);
    expect(early).toBeDefined();
    expect(await c.submit(early?.tx ?? twice)).toEqual({ ts: 1n, duplicate: true });
    expect(await c.submit(tx('fresh'))).toEqual({ ts: BigInt(total + 1), duplicate: false });
    await Promise.all([ca.reached(total + 1), cb.reached(total + 1)]);
    expect(ca.seen.length).toBe(total + 1);
    expect(cb.seen).toEqual(ca.seen);
  }, 180_000);

  it('a small dedup window forgets old digests the same way on every instance and after a resume', async () => {
    const opts = { dedupWindow: 50, batchMax: 7 };
    const a = await sequencer('WINDOW', opts);
    const b = await sequencer('WINDOW', opts);
    const ca = collector();
    const cb = collector();
    a.subscribe(0n, ca.deliver);
    b.subscribe(0n, cb.deliver);
    const txs = Array.from({ length: 200 }, () => tx('window'));
    for (let i = 0; i < txs.length; i += 20) await Promise.all(txs.slice(i, i + 20).map((t, j) => ((i + j) % 2 ? a : b).submit(t)));
    await ca.reached(200);
    const byDigest = new Map(txs.map((t) => [t.digest, t]));
    const at = (ts: number) => byDigest.get(ca.seen[ts - 1]?.digest ?? '') as DecodedTx;
    // Timestamp 1 is 200 back: out of the window, so it is sequenced anew.
    expect(await a.submit(at(1))).toEqual({ ts: 201n, duplicate: false });
    // Timestamp 172 is 29 back: inside it.
    expect(await b.submit(at(172))).toEqual({ ts: 172n, duplicate: true });
    await cb.reached(201);
    expect(cb.seen).toEqual(ca.seen);
    expectDense(ca.seen.slice(0, 200));

    // Resume from an early batch end: the window there (ts 1..end) decides as it did.
    const end = ca.batchEnds[3] ?? 0n;
    const point = a.resumePoint(end);
    expect(point?.length).toBe(25 + 32 * Math.min(Number(end), 50));
    const c = await sequencer('WINDOW', { ...opts, resume: point ?? new Uint8Array() });
    const cc = collector();
    c.subscribe(end, cc.deliver);
    await c.caughtUp();
    expect(cc.seen).toEqual(ca.seen.slice(Number(end)));
    await expect(
      sequencer('WINDOW', { dedupWindow: 60, resume: a.resumePoint(ca.batchEnds[ca.batchEnds.length - 1] ?? 0n) ?? new Uint8Array() }),
    ).rejects.toThrow(/holds 50 digests, a dedup window of 60 at ts 201 needs 60 \(was it made with another dedupWindow\?\)/);
  });

  it('refuses to subscribe mid-log without a resume point, and rejects a damaged resume point', async () => {
    const s = await sequencer('AGREE');
    expect(() => s.subscribe(5n, () => undefined)).toThrow(/needs that point's resume point/);
    await expect(sequencer('AGREE', { resume: new Uint8Array([2, 0, 0]) })).rejects.toThrow(/resume point is invalid: 3 bytes/);
    const blob = new Uint8Array(25 + 32);
    blob[0] = 1;
    blob[1] = 1; // seq 1
    blob[13] = 1; // ts 1
    blob[21] = 2; // 2 digests, but ts 1 allows one
    await expect(sequencer('AGREE', { resume: blob })).rejects.toThrow(/holds 2 digests, a dedup window of 1000000 at ts 1 needs 1/);
  });

  it('every acked transaction is delivered once when the stream leader is killed mid-load', async () => {
    const a = await sequencer('KILL', { log: (m) => console.log(`a: ${m}`) });
    const b = await sequencer('KILL', { log: (m) => console.log(`b: ${m}`) });
    const ca = collector();
    const cb = collector();
    a.subscribe(0n, ca.deliver);
    b.subscribe(0n, cb.deliver);
    const total = 20_000;
    const txs = Array.from({ length: total }, () => tx('kill'));
    let acked = 0;
    let retries = 0;
    const submitWithRetry = async (via: JetStreamSequencer, t: DecodedTx): Promise<Accepted> => {
      for (let attempt = 0; ; attempt++) {
        try {
          const r = await via.submit(t);
          acked++;
          return r;
        } catch (e) {
          retries++;
          if (attempt >= 5) throw e;
        }
      }
    };
    const leader = await cluster.leader('KILL');
    const killed = (async () => {
      await new Promise<void>((resolve) => {
        const check = () => (acked >= total / 5 ? resolve() : setImmediate(check));
        check();
      });
      console.log(`killing stream leader n${leader} after ${acked} acked`);
      await cluster.kill(leader);
    })();
    // 16 closed-loop submitters per instance.
    const lanes = Array.from({ length: 32 }, async (_, lane) => {
      const via = lane % 2 === 0 ? a : b;
      const out: Accepted[] = [];
      for (let i = lane; i < total; i += 32) out.push(await submitWithRetry(via, txs[i] as DecodedTx));
      return out;
    });
    const state = () => `acked ${acked}, delivered a ${ca.seen.length} b ${cb.seen.length}, messages a ${a.messages} b ${b.messages}`;
    const results = (await bounded(Promise.all(lanes), 120_000, state)).flat();
    await killed;
    console.log(`kill test: ${results.length} acked, ${retries} retries, ${a.messages + b.messages} messages`);
    const fresh = results.filter((r) => !r.duplicate).length;
    expect(fresh).toBe(total);
    await bounded(Promise.all([ca.reached(total), cb.reached(total)]), 60_000, state);
    expect(ca.seen.length).toBe(total);
    expectDense(ca.seen);
    expect(cb.seen).toEqual(ca.seen);
    expect(new Set(ca.seen.map((s) => s.digest))).toEqual(new Set(txs.map((t) => t.digest)));

    await cluster.start(leader);
    // The restarted node serves the stream again: a late submit goes through with it back.
    expect(await a.submit(tx('after-restart'))).toEqual({ ts: BigInt(total + 1), duplicate: false });

    // Every server killed and started again: a new instance reads the same order from the stores.
    await Promise.all([0, 1, 2].map((i) => cluster.kill(i)));
    await Promise.all([0, 1, 2].map((i) => cluster.start(i)));
    const d = await sequencer('KILL');
    const cd = collector();
    d.subscribe(0n, cd.deliver);
    expect(await d.caughtUp()).toBe(BigInt(total + 1));
    expect(cd.seen).toEqual(ca.seen);
  }, 240_000);

  it('stops delivery with a clear error on a malformed message, and the process keeps running', async () => {
    const s = await sequencer('BAD');
    const c = collector();
    const failed = new Promise<unknown>((resolve) => s.subscribe(0n, c.deliver, resolve));
    expect(await s.submit(tx('good'))).toEqual({ ts: 1n, duplicate: false });
    const nc = await connect({ servers: cluster.urls });
    try {
      const { jetstream } = await import('@nats-io/jetstream');
      await jetstream(nc).publish('BAD.log', new Uint8Array([1, 5, 0, 0, 0, 9, 9]));
    } finally {
      await nc.close();
    }
    const error = await failed;
    // The publish is acked, but delivery here stopped before it: close settles it, saying so.
    const late = s.submit(tx('late'));
    await s.close();
    await expect(late).rejects.toThrow(
      /sequencer closed before message .* was delivered here: its transactions may be in the log, and resubmitting them is safe/,
    );
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toBe('JetStream stream message 2 is malformed: it claims 5 transactions in 7 bytes');
    expect(c.seen.map((x) => x.ts)).toEqual([1n]);
    await expect(s.caughtUp()).resolves.toBe(1n);
  });
});

describe.skipIf(!GO)('JetStreamSequencer on one node', () => {
  let tmp: ReturnType<typeof tempCluster>;
  let cluster: NatsCluster;

  beforeAll(async () => {
    tmp = tempCluster();
    cluster = await startNatsCluster({ dir: tmp.dir, nodes: 1 });
  }, 300_000);

  afterAll(async () => {
    await cluster?.stop();
    tmp?.cleanup();
  }, 60_000);

  it('close drains queued submits; a publish nobody acknowledges rejects its submits', async () => {
    const s = await JetStreamSequencer.open({ servers: cluster.urls, stream: 'ONE', replicas: 1, publishTimeoutMs: 1500 });
    s.subscribe(0n, () => undefined);
    const queued = [s.submit(tx('q1')), s.submit(tx('q2'))];
    const closing = s.close();
    expect(await Promise.all(queued)).toEqual([
      { ts: 1n, duplicate: false },
      { ts: 2n, duplicate: false },
    ]);
    await closing;
    await s.close(); // idempotent
    await expect(s.submit(tx('after'))).rejects.toThrow('sequencer is closed');

    const t = await JetStreamSequencer.open({ servers: cluster.urls, stream: 'ONE', replicas: 1, publishTimeoutMs: 1500 });
    await expect(JetStreamSequencer.open({ servers: cluster.urls, stream: 'ONE', replicas: 3 })).rejects.toThrow(
      /stream ONE exists but cannot be the log: it has 1 replicas, not 3/,
    );
    await cluster.kill(0);
    await expect(t.submit(tx('lost'))).rejects.toThrow(
      /JetStream did not acknowledge message .* \(1 transactions\) after \d+ attempts: .*resubmitting them is safe/,
    );
    await cluster.start(0);
    await t.close();
  }, 60_000);
});

describe('JetStream set-up errors', () => {
  it('retries what a cluster outlives, and only that', () => {
    // As the servers word them: a stream created before the meta leader heard from every peer.
    for (const m of ['no suitable peers for placement, peer offline', 'JetStream system temporarily unavailable', 'TIMEOUT', 'no responders'])
      expect(TRANSIENT.test(m), m).toBe(true);
    for (const m of ['stream name already in use with a different configuration', 'insufficient resources', 'maximum number of streams reached'])
      expect(TRANSIENT.test(m), m).toBe(false);
  });
});

describe('JetStream message layout', () => {
  const good = (txs: DecodedTx[]): Buffer => {
    const parts = txs.map((t) => {
      const h = Buffer.alloc(36);
      h.write(t.digest, 0, 32, 'hex');
      h.writeUInt32LE(t.bytes.length, 32);
      return Buffer.concat([h, t.bytes]);
    });
    const head = Buffer.alloc(5);
    head[0] = 1;
    head.writeUInt32LE(txs.length, 1);
    return Buffer.concat([head, ...parts]);
  };

  it('round-trips transactions with their digests', () => {
    const txs = [tx('a'), tx('b')];
    const d = decodeMessage(good(txs), 7);
    expect(d.digests).toEqual(txs.map((t) => t.digest));
    expect(d.txs.map((t) => t.bytes)).toEqual(txs.map((t) => t.bytes));
  });

  it('names what is wrong with a damaged message', () => {
    const t = tx('c');
    const m = good([t]);
    const wrongDigest = Buffer.from(m);
    wrongDigest[5] = (wrongDigest[5] ?? 0) ^ 1;
    const cases: [Buffer, RegExp][] = [
      [Buffer.from([1, 0]), /2 bytes, shorter than its header/],
      [Buffer.concat([Buffer.from([2]), m.subarray(1)]), /layout 2, expected 1/],
      [Buffer.from([1, 0, 0, 0, 0]), /holds no transactions/],
      [m.subarray(0, m.length - 1), /transaction 0 claims \d+ bytes, \d+ remain/],
      [Buffer.concat([m, Buffer.from([0])]), /1 bytes after its last transaction/],
      [wrongDigest, /transaction 0 has digest [0-9a-f]{64}, the message says/],
    ];
    for (const [bytes, re] of cases) expect(() => decodeMessage(bytes, 3)).toThrow(re);
    const badTx = Buffer.from(m);
    badTx[5 + 36] = 9; // the tx.v1 layout byte
    expect(() => decodeMessage(badTx, 3)).toThrow(/stream message 3 is malformed: transaction 0 does not decode: transaction bytes have layout 9/);
  });
});
