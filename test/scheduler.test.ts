// Admission scheduling policies and the primary's conflict feedback that drives the hot one.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { MemoryState } from '../ts/app/state.js';
import { decodeTx } from '../ts/app/tx.js';
import { kvApp, kvId } from '../ts/apps/index.js';
import { ConflictFeedback } from '../ts/pipeline/feedback.js';
import { merge } from '../ts/pipeline/merge.js';
import { PreExecutor } from '../ts/pipeline/preexecutor.js';
import type { Applied } from '../ts/pipeline/primary.js';
import { DEFAULT_POLICY, Scheduler, slotOf, YOUNG_SLACK, type Schedulable, type SchedulerOptions } from '../ts/pipeline/scheduler.js';

const pool = (opts: SchedulerOptions, names = ['a', 'b', 'c']): Scheduler => {
  const s = new Scheduler(opts);
  for (const n of names) s.add(n);
  return s;
};

/** An applied transaction as the primary reports it; only decision, executor and conflicts matter here. */
const applied = (ts: number, decision: Applied['decision'], conflicts: string[] = [], preExecutor: string | null = 'a'): Applied => ({
  ts: BigInt(ts),
  digest: `d${ts}`,
  outcome: { status: 'ok', result: null } as unknown as Applied['outcome'],
  decision,
  preExecutor,
  writes: [],
  writeCount: 0,
  conflicts,
});

describe('scheduler', () => {
  it('round-robin cycles through the pool, whatever the load, and skips a member that left', () => {
    const s = pool({ policy: 'round-robin' });
    expect([1, 2, 3, 4, 5, 6].map(() => s.choose(['x']))).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
    s.remove('b');
    expect([1, 2, 3, 4].map(() => s.choose([]))).toEqual(['a', 'c', 'a', 'c']);
    expect(s.outstanding('a')).toBe(4);
  });

  it('load picks the least outstanding, ties in turn, and counts results coming back', () => {
    const s = pool({ policy: 'load' });
    expect([1, 2, 3].map(() => s.choose([]))).toEqual(['a', 'b', 'c']);
    s.completed('b');
    expect(s.choose([])).toBe('b');
    s.completed('c');
    s.completed('c');
    expect(s.outstanding('c')).toBe(0);
    expect(s.choose([])).toBe('c');
    expect(new Scheduler().policy).toBe(DEFAULT_POLICY);
    expect(new Scheduler().choose(['x'])).toBeNull();
  });

  it('load+affinity follows the member last handed the objects while within the slack', () => {
    const s = pool({ policy: 'load+affinity', slack: 2 });
    const first = s.choose(['x', 'y']);
    expect(first).toBe('a');
    // a holds x and y: it keeps them while it is at most 2 ahead of the least loaded (0).
    expect(s.choose(['x'])).toBe('a');
    expect(s.choose(['y', 'z'])).toBe('a');
    expect(s.outstanding('a')).toBe(3);
    // Now a is 3 ahead of b and c, over the slack; but x was just handed to a, with results
    // owed, so its write is likely in flight there: a keeps x up to YOUNG_SLACK times the
    // slack ahead, then the least loaded takes it (and x with it).
    let other = s.choose(['x']);
    while (other === 'a') other = s.choose(['x']);
    expect(s.outstanding('a')).toBe(1 + YOUNG_SLACK * 2);
    expect(s.choose(['x'])).toBe(other);
    // The newest memory wins, not the most ids: a was handed y and z, but `other` was handed x
    // since, and a write to x still in flight there is what a transaction must not miss.
    for (let i = 0; i < 3; i++) s.completed('a');
    expect(s.choose(['y', 'z', 'x'])).toBe(other);
    s.completed(other as string);
    expect(s.choose(['z'])).toBe(other); // z went with that transaction
    // Affinity to a member that left is ignored.
    s.remove(other as string);
    expect(['a', 'b', 'c'].filter((m) => m !== other)).toContain(s.choose(['y']));
  });

  it('load+affinity follows an old memory only within the slack', () => {
    const s = pool({ policy: 'load+affinity', slack: 1 });
    expect(s.choose(['x', 'u'])).toBe('a');
    expect(s.choose(['u'])).toBe('a');
    // Two handed elsewhere and answered: x was handed 4 transactions ago, with 2 results owed.
    expect(s.choose(['p'])).toBe('b');
    expect(s.choose(['q'])).toBe('c');
    s.completed('b');
    s.completed('c');
    // a is 2 ahead, over the slack of 1, and x's memory is old: the least loaded takes it.
    expect(s.choose(['x'])).not.toBe('a');
  });

  it('load+affinity remembers in a fixed table: an id sharing a slot follows its last use, and a leaver is forgotten', () => {
    // Capacity 1: two slots. Find ids for each, and a second id for slot 1.
    const ids = Array.from({ length: 64 }, (_, i) => `o${i}`);
    const x = ids.find((id) => (slotOf(id) & 1) === 0) as string;
    const [y, z] = ids.filter((id) => (slotOf(id) & 1) === 1) as [string, string];
    const s = pool({ policy: 'load+affinity', affinityCapacity: 1 });
    expect(s.choose([x])).toBe('a');
    expect(s.choose([y])).toBe('b');
    expect(s.choose([x])).toBe('a'); // a: 2 outstanding, within the slack
    // z was never handed out, but its slot holds b: it goes where y went.
    expect(s.choose([z])).toBe('b');
    // b leaves and d joins, taking b's tag; d is handed one transaction on nothing remembered.
    s.remove('b');
    s.add('d');
    s.completed('a');
    s.completed('a');
    const w = ids.filter((id) => (slotOf(id) & 1) === 0)[1] as string;
    const loads = () => ['a', 'c', 'd'].map((m) => s.outstanding(m));
    while (s.outstanding('d') === 0) s.choose([]);
    expect(s.outstanding('d')).toBe(1);
    // Slot 1 was cleared when b left: y goes to a least-loaded member, not to d through b's old tag.
    const least = Math.min(...loads());
    const chosen = s.choose([y]);
    expect(chosen).not.toBe('d');
    expect(s.outstanding(chosen as string)).toBe(least + 1);
    expect(s.choose([z])).toBe(chosen); // now slot 1 holds that member
    expect(s.choose([w, x])).toBe('a'); // slot 0 still holds a
    expect(() => new Scheduler({ affinityCapacity: -1 })).toThrow(/affinityCapacity must be a non-negative integer/);
  });

  it('hot objects are pinned to one member whatever the load, and re-pinned when it leaves', () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`scheduler hot-pin test: seed ${seed} (REMORA_SEED to replay)`);
    let x = seed >>> 0 || 1;
    const rand = () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), (x >>> 0) / 2 ** 32);

    const feedback = new ConflictFeedback({ hotThreshold: 3, halveEvery: 100 });
    const s = pool({ policy: 'load+affinity+hot', slack: 0 });
    const route = () => {
      // Random other objects alongside X, so affinity and load alone would scatter X.
      const objects = rand() < 0.5 ? ['X', `k${Math.floor(rand() * 50)}`] : [`k${Math.floor(rand() * 50)}`, 'X'];
      return s.choose(objects);
    };
    const before = new Set(Array.from({ length: 60 }, route));
    expect(before.size).toBeGreaterThan(1);

    // Two conflicts on X: below the threshold, nothing is hot yet.
    feedback.record([applied(1, 'reexecuted', ['X']), applied(2, 'reexecuted', ['X', 'k1'], 'b')]);
    s.setHot(feedback.hot());
    expect(s.hot.size).toBe(0);
    feedback.record([applied(3, 'reexecuted', ['X'], 'b'), applied(4, 'adopted')]);
    s.setHot(feedback.hot());
    expect([...s.hot]).toEqual(['X']);
    expect(feedback.misses()).toEqual(
      new Map([
        ['a', 1],
        ['b', 2],
      ]),
    );

    const after = Array.from({ length: 200 }, route);
    expect(new Set(after).size).toBe(1);
    const pinned = after[0] ?? '';
    expect(s.pinnedTo('X')).toBe(pinned);
    expect(s.outstanding(pinned)).toBeGreaterThan(100);
    // Transactions not touching X still spread by load.
    expect(s.choose(['q'])).not.toBe(pinned);

    s.remove(pinned);
    const repinned = Array.from({ length: 20 }, route);
    expect(new Set(repinned).size).toBe(1);
    expect(repinned[0]).not.toBe(pinned);
  });

  it('with hotToPrimary, transactions on a hot object are not dispatched at all', () => {
    const feedback = new ConflictFeedback({ hotThreshold: 2 });
    const s = pool({ policy: 'load+affinity+hot', hotToPrimary: true });
    expect(s.choose(['X'])).toBe('a');
    feedback.record([applied(1, 'reexecuted', ['X']), applied(2, 'reexecuted', ['X'])]);
    s.setHot(feedback.hot());
    const total = () => ['a', 'b', 'c'].reduce((n, m) => n + s.outstanding(m), 0);
    const sent = total();
    for (let i = 0; i < 50; i++) expect(s.choose(['y', 'X'])).toBeNull();
    expect(total()).toBe(sent);
    expect(s.choose(['y'])).not.toBeNull();
  });

  it("asks a forwarded transaction for its objects only when one of its hashes is a hot object's", () => {
    const s = pool({ policy: 'load+affinity+hot', slack: 0 });
    let asked = 0;
    // The shape of a transaction an admission process forwarded: its objects' hashes came with
    // it, and reading its objects decodes its body.
    const forwarded = (objects: string[]): Schedulable => ({
      get objects(): string[] {
        asked++;
        return objects;
      },
      slotsInto: (out, mask) => {
        objects.forEach((id, i) => (out[i] = (slotOf(id) & mask) >>> 0));
        return objects.length;
      },
    });
    s.choose(forwarded(['X', 'y']));
    expect(asked).toBe(0);
    s.setHot(new Set(['X']));
    for (let i = 0; i < 20; i++) s.choose(forwarded([`k${i}`, `q${i}`]));
    expect(asked).toBe(0);
    const pinned = s.choose(forwarded(['X', 'y']));
    expect(asked).toBe(1);
    expect(s.pinnedTo('X')).toBe(pinned);
    // Hashed or by ids, a transaction on the hot object follows its pin.
    expect(s.choose(['X'])).toBe(pinned);
    expect(s.choose(forwarded(['z', 'X']))).toBe(pinned);
  });

  it('other policies ignore the hot set', () => {
    const s = pool({ policy: 'load' });
    s.setHot(new Set(['X']));
    expect([1, 2, 3].map(() => s.choose(['X']))).toEqual(['a', 'b', 'c']);
  });
});

describe('conflict feedback', () => {
  it('decays in applied transactions: a hot object cools after enough conflict-free ones', () => {
    const f = new ConflictFeedback({ hotThreshold: 4, halveEvery: 10 });
    f.record(Array.from({ length: 8 }, (_, i) => applied(i + 1, 'reexecuted', ['X'])));
    expect(f.count('X')).toBe(8);
    expect(f.hot()).toEqual(new Set(['X']));
    f.record([applied(9, 'adopted'), applied(10, 'executed')]); // 10th transaction: halve
    expect(f.count('X')).toBe(4);
    expect(f.hot()).toEqual(new Set(['X']));
    f.record(Array.from({ length: 10 }, (_, i) => applied(11 + i, 'adopted')));
    expect(f.count('X')).toBe(2);
    expect(f.hot().size).toBe(0);
    // Counts eventually go away entirely rather than linger as tiny fractions.
    f.record(Array.from({ length: 30 }, (_, i) => applied(21 + i, 'adopted')));
    expect(f.count('X')).toBe(0);
    // Only re-executions count: executed and adopted transactions carry no conflicts.
    expect(f.misses()).toEqual(new Map([['a', 8]]));
    expect(() => new ConflictFeedback({ halveEvery: 0 })).toThrow(RangeError);
  });

  it('the merge reports the objects whose recorded version was no longer current', () => {
    const kv = kvApp;
    const pre = new PreExecutor(kv, nativeFunctions);
    const copy = decodeTx(makeTx(kv, 'copy', { from: 'x', to: 'y' }));
    const [[, table] = ['', undefined]] = pre.run([copy]);
    expect(table).toBeDefined();
    if (!table) return;
    const [xId, yId] = [kvId('x'), kvId('y')];
    expect(copy.objects).toEqual([xId, yId]);

    const state = new MemoryState();
    state.apply([[yId, new Uint8Array([0xc0])]], 1n); // y changed, x did not
    const m = merge(kv, copy, table, state, nativeFunctions);
    // copy reads only `from`: a changed `to` is no conflict, so the table is adopted.
    expect(m).toMatchObject({ decision: 'adopted', conflicts: [] });

    state.apply([[xId, new Uint8Array([0xc0])]], 2n);
    expect(merge(kv, copy, table, state, nativeFunctions)).toMatchObject({ decision: 'reexecuted', conflicts: [xId] });
    expect(merge(kv, copy, undefined, state, nativeFunctions)).toMatchObject({ decision: 'executed', conflicts: [] });
  });
});
