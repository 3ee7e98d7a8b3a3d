// Elastic pre-execution: state updates by push and by one-sided pull, optimistic replies,
// graceful retirement, and the autoscaling decision.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { decodeTx, type DecodedTx, type Transaction } from '../ts/app/tx.js';
import { kvApp } from '../ts/apps/index.js';
import { kvId } from '../ts/apps/kv.js';
import { MemoryState } from '../ts/app/state.js';
import { Autoscaler } from '../ts/pipeline/autoscaler.js';
import { EmbeddedNode, type NodeOptions, type OptimisticReply, type PreExecutorLink } from '../ts/pipeline/node.js';
import { PreExecutor, type Effect, type Feedback } from '../ts/pipeline/preexecutor.js';
import type { Applied } from '../ts/pipeline/primary.js';
import { Puller } from '../ts/pipeline/pull.js';
import { Speculation } from '../ts/pipeline/speculation.js';
import { EmbeddedSequencer } from '../ts/pipeline/sequencer.js';
import { MissPush, type PushedObject } from '../ts/pipeline/state-update.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { RemoteStore, Store } from '../ts/store.js';
import { tempCluster } from './helpers.js';
import { decodeEffects } from '../ts/pipeline/records.js';

/**
 * Test double around a real `PreExecutor` in this process: answers through the event loop and
 * records what the node sent it. `followsEffects: false` keeps its copy stale on purpose;
 * `speculate: false` keeps it from reading its own earlier results.
 */
class RecordingLink implements PreExecutorLink {
  readonly pre: PreExecutor;
  readonly handed: string[] = [];
  readonly pushed: PushedObject[][] = [];
  readonly effects: Effect[] = [];
  /** What the node sent, in order: `exec` for transactions, `effects` for a state update. */
  readonly sent: ('exec' | 'effects')[] = [];
  /** Called after each state update installed. */
  onEffects: () => void = () => undefined;
  private readonly followsEffects: boolean;

  constructor(
    readonly name: string,
    private readonly node: EmbeddedNode,
    opts: { followsEffects?: boolean; speculate?: boolean } = {},
  ) {
    this.followsEffects = opts.followsEffects ?? true;
    this.pre = new PreExecutor(kvApp, nativeFunctions, { speculate: opts.speculate ?? true });
  }

  send(txs: readonly DecodedTx[]): void {
    this.handed.push(...txs.map((t) => t.digest));
    this.sent.push('exec');
    const results = this.pre.run(txs);
    setImmediate(() => {
      for (const [digest, table] of results) this.node.result(this.name, digest, table);
    });
  }

  sendEffects(bytes: Buffer): void {
    const effects = decodeEffects(bytes);
    this.effects.push(...effects);
    this.sent.push('effects');
    if (this.followsEffects) this.pre.install(effects);
    this.onEffects();
  }

  sendObjects(objects: readonly PushedObject[]): void {
    this.pushed.push([...objects]);
    this.pre.installObjects(objects);
  }

  sendFeedback(feedback: Feedback): void {
    this.pre.feedback = feedback;
  }
}

const put = (key: string, value: string): Transaction => makeTx(kvApp, 'put', { key, value });
const copy = (from: string, to: string): Transaction => makeTx(kvApp, 'copy', { from, to });

describe('elastic pre-execution', () => {
  let cluster: ReturnType<typeof tempCluster>;
  let sequencer: EmbeddedSequencer;
  let store: NativePrimaryStore;
  const applied: Applied[] = [];

  function startNode(opts: Partial<NodeOptions>): EmbeddedNode {
    sequencer = new EmbeddedSequencer(`${cluster.dir}/log`);
    store = new NativePrimaryStore(Store.create({ dir: cluster.dir, name: 'primary', secret: cluster.secret }));
    // A long deadline: every result the node waits for must really arrive.
    return new EmbeddedNode(kvApp, nativeFunctions, sequencer, store, {
      deadlineMs: 30_000,
      // What is tested here is pre-execution: every transaction is handed out, even one alone.
      localWhenAlone: false,
      onApplied: (b) => applied.push(...b),
      ...opts,
    });
  }

  beforeEach(() => {
    cluster = tempCluster();
    applied.length = 0;
  });
  afterEach(async () => {
    await sequencer.close();
    store.store.close();
    cluster.cleanup();
  });

  it('push: an object is pushed exactly when its misses reach the threshold, then followed', async () => {
    const node = startNode({ stateUpdate: 'push', push: { threshold: 2 } });
    const link = new RecordingLink('p1', node, { speculate: false });
    node.addPreExecutor(link);
    node.start();

    await node.submit(put('a', 'one'));
    // Under push nothing is broadcast: the pre-executor still sees `a` absent.
    expect(link.effects).toEqual([]);
    const first = await node.submit(copy('a', 'r1'));
    expect(first.decision).toBe('reexecuted');
    expect(node.push?.misses('p1', kvId('a'))).toBe(1);
    expect(link.pushed).toEqual([]);
    const second = await node.submit(copy('a', 'r2'));
    expect(second.decision).toBe('reexecuted');
    // The second miss reaches the threshold: `a` is pushed at its current version, once.
    const aTs = applied[0]?.ts ?? 0n;
    expect(link.pushed).toHaveLength(1);
    expect(link.pushed[0]?.map(([id, version]) => [id, version])).toEqual([[kvId('a'), aTs]]);
    expect(node.push?.pushes('p1')).toBe(1);
    expect((await node.submit(copy('a', 'r3'))).decision).toBe('adopted');

    // From now on `a`'s writes are forwarded, and only those.
    await node.submit(put('a', 'two'));
    await node.submit(put('b', 'other'));
    expect(link.effects.flatMap(([, writes]) => writes.map(([id]) => id))).toEqual([kvId('a')]);
    const after = await node.submit(copy('a', 'r4'));
    expect(after.decision).toBe('adopted');
    expect(after.outcome).toEqual({ status: 'ok', result: 'two' });
    expect(link.pushed).toHaveLength(1);
  });

  it('push bookkeeping: misses count per pre-executor and object, below the threshold nothing moves', () => {
    const push = new MissPush({ threshold: 3 });
    push.add('p1');
    push.add('p2');
    const miss = (pre: string, ...conflicts: string[]): Applied => ({
      ts: 1n,
      digest: 'd',
      outcome: { status: 'ok', result: null },
      decision: 'reexecuted',
      preExecutor: pre,
      writes: [],
      writeCount: 0,
      conflicts,
    });
    expect([...push.record([miss('p1', 'x'), miss('p1', 'x'), miss('p2', 'x', 'y')])]).toEqual([]);
    expect(push.misses('p1', 'x')).toBe(2);
    expect([...push.record([miss('p1', 'x', 'y')])]).toEqual([['p1', ['x']]]);
    // Followed objects no longer count, and adopted or alone-executed results never do.
    expect([...push.record([miss('p1', 'x'), { ...miss('p2', 'x'), decision: 'adopted' }])]).toEqual([]);
    expect(
      push.filter('p1', [
        [
          5n,
          [
            ['x', null],
            ['y', null],
          ],
          'd5',
        ],
      ]),
    ).toEqual([[5n, [['x', null]], 'd5']]);
    expect(push.filter('p2', [[5n, [['x', null]], 'd5']])).toEqual([]);
    expect(() => new MissPush({ threshold: 0 })).toThrow(/threshold must be a positive integer/);
  });

  it('pull: reads the inputs one-sidedly and refreshes only the objects that changed', async () => {
    const owner = Store.create({ dir: cluster.dir, name: 'primary', secret: cluster.secret });
    sequencer = new EmbeddedSequencer(`${cluster.dir}/log`);
    store = new NativePrimaryStore(owner);
    store.write([
      [kvId('a'), 1n, Buffer.from('a1')],
      [kvId('b'), 1n, Buffer.from('b1')],
      [kvId('c'), 2n, Buffer.from('c2')],
    ]);
    const remote = await RemoteStore.connect({ dir: cluster.dir, store: 'primary', secret: cluster.secret });
    const pre = new PreExecutor(kvApp, nativeFunctions);
    const puller = new Puller(remote, pre);
    const batch = ['a', 'b', 'c', 'never'].map((k) => decodeTx(copy(k, `to-${k}`)));

    // Declared objects: a, b, c, never and the four copy targets; three exist.
    expect(await puller.refresh(batch)).toBe(3);
    expect(puller.pulled).toBe(8);
    const a = pre.state.objects.get(kvId('a'));
    expect(pre.state.read(kvId('c'))).toEqual({ version: 2n, value: Buffer.from('c2') });

    store.write([
      [kvId('b'), 3n, Buffer.from('b3')],
      [kvId('c'), 4n, null],
    ]);
    expect(await puller.refresh(batch)).toBe(2);
    expect(puller.refreshed).toBe(5);
    // `a` did not change: the very same entry stays.
    expect(pre.state.objects.get(kvId('a'))).toBe(a);
    expect(pre.state.read(kvId('b'))).toEqual({ version: 3n, value: Buffer.from('b3') });
    expect(pre.state.read(kvId('c'))).toEqual({ version: 4n, value: undefined });
    expect(await puller.refresh(batch)).toBe(0);
  });

  it('optimistic replies: a stale pre-executor answer is reported wrong, a good one confirmed', async () => {
    const node = startNode({});
    node.addPreExecutor(new RecordingLink('stale', node, { followsEffects: false, speculate: false }));
    node.start();
    const seen: OptimisticReply[] = [];

    const wrote = await node.submit(put('a', 'one'), (o) => seen.push(o));
    expect(seen).toEqual([{ outcome: { status: 'ok', result: null }, from: 'stale' }]);
    expect(wrote.optimistic).toBe('confirmed');

    // The pre-executor never saw `a` written: its optimistic answer says absent (null).
    const read = await node.submit(copy('a', 'r'), (o) => seen.push(o));
    expect(seen[1]).toEqual({ outcome: { status: 'ok', result: null }, from: 'stale' });
    expect(read.outcome).toEqual({ status: 'ok', result: 'one' });
    expect(read.optimistic).toBe('wrong');
    expect(node.optimisticStats).toEqual({ sent: 2, confirmed: 1, wrong: 1 });
    // Without asking, a reply carries no verdict.
    expect((await node.submit(put('b', 'x'))).optimistic).toBeUndefined();
  });

  it('speculation: a chain handed to one pre-executor is adopted whole; a wrong guess is re-executed', async () => {
    const node = startNode({ policy: 'round-robin' });
    const [p1, p2] = [new RecordingLink('p1', node), new RecordingLink('p2', node)];
    node.addPreExecutor(p1);
    node.addPreExecutor(p2);
    node.start();
    // Round robin: p1, p2, p1, p2. Each pair is handed over before any of it is applied.
    const first = await Promise.all([
      node.submit(put('a', 'x')), // p1
      node.submit(put('z', 'z')), // p2
      node.submit(copy('a', 'b')), // p1: reads its own guess a = x
      node.submit(copy('z', 'y')), // p2: reads its own guess z = z
    ]);
    expect(first.map((r) => r.decision)).toEqual(['adopted', 'adopted', 'adopted', 'adopted']);
    expect(first[2]?.outcome).toEqual({ status: 'ok', result: 'x' });
    expect(applied.slice(0, 4).flatMap((a) => a.conflicts)).toEqual([]);

    const second = await Promise.all([
      node.submit(put('c', 'mine')), // p1
      node.submit(put('c', 'theirs')), // p2: sequenced after, so c = theirs
      node.submit(copy('c', 'd')), // p1: guesses c = mine, which no longer holds
    ]);
    expect(second[2]?.decision).toBe('reexecuted');
    expect(second[2]?.outcome).toEqual({ status: 'ok', result: 'theirs' });
    expect(applied.at(-1)?.conflicts).toEqual([kvId('c')]);
  });

  it('retire: a retiring pre-executor is handed nothing new and nothing waits for the deadline', async () => {
    const node = startNode({ policy: 'round-robin' });
    const [p1, p2] = [new RecordingLink('p1', node), new RecordingLink('p2', node)];
    node.addPreExecutor(p1);
    node.addPreExecutor(p2);
    node.start();
    const firstHalf = Array.from({ length: 100 }, (_, i) => node.submit(put(`k${i}`, 'v')));
    // Handed over on the next tick; p2 retires while owing results.
    await new Promise(setImmediate);
    expect(p2.handed.length).toBeGreaterThan(0);
    const retired = node.retire('p2');
    expect(node.members).toEqual(['p1']);
    const handedBefore = p2.handed.length;
    const secondHalf = Array.from({ length: 100 }, (_, i) => node.submit(put(`m${i}`, 'v')));
    await Promise.all([retired, ...firstHalf, ...secondHalf]);
    node.removePreExecutor('p2');
    expect(p2.handed.length).toBe(handedBefore);
    // Every transaction had its pre-executed result: none fell to the 30 s deadline.
    expect(node.stats.executed).toBe(0);
    expect(node.stats.applied).toBe(200);
  });

  it('alone: a transaction submitted while no other is in flight is executed by the primary; concurrent and optimistic ones are handed out', async () => {
    const node = startNode({ localWhenAlone: true });
    const p1 = new RecordingLink('p1', node);
    node.addPreExecutor(p1);
    node.start();
    expect((await node.submit(put('a', '1'))).decision).toBe('executed');
    expect(p1.handed).toEqual([]);
    // The first of two goes in alone; the second finds it in flight.
    const pair = await Promise.all([node.submit(put('b', '2')), node.submit(copy('a', 'c'))]);
    expect(pair.map((r) => r.decision)).toEqual(['executed', 'adopted']);
    expect(pair[1]?.outcome).toEqual({ status: 'ok', result: '1' });
    expect(p1.handed).toHaveLength(1);
    // Asking for an optimistic reply is asking for a member's answer.
    const seen: OptimisticReply[] = [];
    expect((await node.submit(put('d', '4'), (o) => seen.push(o))).decision).toBe('adopted');
    expect(seen).toEqual([{ outcome: { status: 'ok', result: null }, from: 'p1' }]);
    expect(node.stats.applied).toBe(4);
  });

  it('held effects: while members owe nothing, effects wait for the next transactions handed out, or a short timer', async () => {
    const node = startNode({ localWhenAlone: true });
    const p1 = new RecordingLink('p1', node);
    node.addPreExecutor(p1);
    node.start();
    for (const [k, v] of [
      ['a', '1'],
      ['x', '9'],
      ['y', '8'],
    ])
      await node.submit(put(k as string, v as string));
    // Replied to and applied; the member, owing nothing, has not been woken for them.
    expect(p1.sent).toEqual([]);
    // The second of a pair is handed out: the held effects go first, all in one message, so
    // the member reads a = 1. (Whether the first of the pair, executed by the node, is applied
    // before or after the handing out is up to the event loop: it comes in this message or
    // a later one.)
    const pair = await Promise.all([node.submit(put('b', '2')), node.submit(copy('a', 'c'))]);
    expect(pair[1]?.decision).toBe('adopted');
    expect(pair[1]?.outcome).toEqual({ status: 'ok', result: '1' });
    expect(p1.sent.slice(0, 2)).toEqual(['effects', 'exec']);
    expect(p1.effects.slice(0, 3).map(([ts, writes]) => [ts, writes.map(([id]) => id)])).toEqual([
      [1n, [kvId('a')]],
      [2n, [kvId('x')]],
      [3n, [kvId('y')]],
    ]);
    // An idle node still brings the member up to date, soon after.
    const caughtUp = new Promise<void>((resolve) => (p1.onEffects = () => p1.pre.appliedTs >= 6n && resolve()));
    await node.submit(put('e', '5'));
    await caughtUp;
    expect(p1.pre.state.read(kvId('b'))?.version).toBe(4n);
    expect(p1.pre.state.read(kvId('e'))?.version).toBe(6n);
  });
});

describe('autoscaling decision', () => {
  const sample = (pool: number, outstanding: number, applied = 1000, alone = 0, reexecuted = 0) => ({
    pool,
    outstanding,
    applied,
    executedAlone: alone,
    reexecuted,
  });

  it('grows on a deep queue or on results missing the deadline, after `patience` agreeing samples', () => {
    const s = new Autoscaler({ min: 1, max: 3, highQueue: 64, patience: 2 });
    expect(s.decide(sample(1, 100))).toBe('hold');
    expect(s.decide(sample(1, 100))).toBe('up');
    expect(s.decide(sample(2, 200))).toBe('hold');
    // A disagreeing sample (20 owed each: neither deep nor shallow) restarts the count.
    expect(s.decide(sample(2, 40))).toBe('hold');
    expect(s.decide(sample(2, 20, 1000, 300))).toBe('hold');
    expect(s.decide(sample(2, 20, 1000, 300))).toBe('up');
    // Never past max.
    expect(s.decide(sample(3, 1000))).toBe('hold');
    expect(s.decide(sample(3, 1000))).toBe('hold');
  });

  it('shrinks on a shallow queue or mostly wasted pre-execution, never below min', () => {
    const s = new Autoscaler({ min: 1, max: 4, lowQueue: 8, patience: 1 });
    expect(s.decide(sample(3, 6))).toBe('down');
    expect(s.decide(sample(2, 100, 1000, 0, 950))).toBe('down');
    expect(s.decide(sample(1, 0, 0))).toBe('hold');
    expect(s.decide(sample(0, 0, 0))).toBe('up');
    expect(s.decide(sample(2, 40))).toBe('hold');
    expect(() => new Autoscaler({ min: 3, max: 2 })).toThrow(/min <= max/);
  });
});

describe('speculation bookkeeping', () => {
  const w = (id: string, v: string): [string, Uint8Array] => [id, Buffer.from(v)];

  it('keeps a later guess when an earlier one lands, drops all guesses on an object that went otherwise', () => {
    const state = new MemoryState();
    const s = new Speculation(state, 100);
    s.record('t1', [w('a', '1')]);
    s.record('t2', [w('a', '2')]);
    s.applied('t1', [w('a', '1')]);
    expect(s.read('a')).toEqual({ version: 0n, value: Buffer.from('2'), speculative: true });
    // t2 was applied with another value: the guess built on it is dropped, the copy answers.
    state.apply([w('a', '3')], 7n);
    s.applied('t2', [w('a', '3')]);
    expect(s.read('a')).toEqual({ version: 7n, value: Buffer.from('3') });
    s.record('t3', [w('b', 'x')]);
    s.applied('someone else', [w('b', 'y')]);
    expect(s.size).toBe(0);
  });

  it('ages out guesses never heard applied, so memory stays bounded by the window', () => {
    const s = new Speculation(new MemoryState(), 10);
    for (let i = 0; i < 1000; i++) s.record(`t${i}`, [w(`k${i}`, 'v')]);
    expect(s.size).toBe(10);
    expect(s.read('k999').speculative).toBe(true);
    expect(s.read('k0').speculative).toBeUndefined();
  });
});
