// The delegator's decisions (docs/primary.md, "Delegation to a free pre-executor"): which
// transactions are delegable, when a lease is granted and to whom, why it ends, and what the
// delegate is sent. Serial equivalence with delegation on is test/pipeline.test.ts's.
import { describe, expect, it } from 'vitest';
import type { LookupTable, Versioned } from '../ts/app/exec.js';
import type { DecodedTx } from '../ts/app/tx.js';
import type { Applied } from '../ts/pipeline/applied.js';
import { delegable, Delegator, freest, type DelegationHost, type DelegationOptions } from '../ts/pipeline/delegation.js';
import { PreExecutionPool, type PreExecutorLink } from '../ts/pipeline/pool.js';
import type { Sequenced } from '../ts/pipeline/sequencer.js';
import type { PushedObject } from '../ts/pipeline/state-update.js';

/** Only what the delegator reads of a transaction. */
function tx(digest: string, objects: string[], command = 'put'): DecodedTx {
  return { digest, objects, command } as unknown as DecodedTx;
}

function batchOf(...txs: DecodedTx[]): Sequenced[] {
  return txs.map((t, i) => ({ ts: BigInt(i + 1), tx: t }));
}

interface Handed {
  member: string;
  objects: readonly PushedObject[];
  digests: string[];
  until: number;
}

/** A host whose clock, hot set, members and tables the test sets. */
class FakeHost implements DelegationHost {
  clock = 1000;
  hotIds: string[] = ['a', 'b', 'c'];
  loads: { name: string; load: number }[] = [
    { name: 'm1', load: 5 },
    { name: 'm2', load: 2 },
    { name: 'm3', load: 2 },
  ];
  state = new Map<string, Versioned>([
    ['a', { version: 7n, value: Buffer.from('A') }],
    ['b', { version: 3n, value: Buffer.from('B') }],
  ]);
  handed: Handed[] = [];

  hot(): readonly string[] {
    return this.hotIds;
  }
  members(): readonly { name: string; load: number }[] {
    return this.loads;
  }
  current(ids: readonly string[]): Versioned[] {
    return ids.map((id) => this.state.get(id) ?? { version: 0n, value: undefined });
  }
  hand(member: string, objects: readonly PushedObject[], txs: readonly DecodedTx[], until: number): void {
    this.handed.push({ member, objects, digests: txs.map((t) => t.digest), until });
  }
  now(): number {
    return this.clock;
  }
}

const OPTS: DelegationOptions = { backlog: 4, leaseMs: 100, maxObjects: 2 };

describe('delegable', () => {
  const leased = new Set(['a', 'b']);
  it('takes every transaction that declares a leased object, whatever else it declares', () => {
    expect(delegable(tx('1', ['a']), leased)).toBe(true);
    expect(delegable(tx('2', ['a', 'b']), leased)).toBe(true);
    expect(delegable(tx('3', ['z', 'b']), leased)).toBe(true);
  });
  it('refuses transactions on no leased object, none declared, and administrative ones', () => {
    expect(delegable(tx('4', ['y', 'z']), leased)).toBe(false);
    expect(delegable(tx('5', []), leased)).toBe(false);
    expect(delegable(tx('6', ['a'], 'remora.upgrade'), leased)).toBe(false);
  });
});

describe('freest', () => {
  it('is the member with the fewest results not returned, the first listed on a tie', () => {
    expect(
      freest([
        { name: 'x', load: 3 },
        { name: 'y', load: 1 },
        { name: 'z', load: 1 },
      ]),
    ).toBe('y');
    expect(freest([])).toBeNull();
  });
});

describe('Delegator', () => {
  it('grants no lease below the backlog', () => {
    const host = new FakeHost();
    const d = new Delegator(OPTS, host);
    d.batch(batchOf(tx('1', ['a']), tx('2', ['a']), tx('3', ['b'])));
    expect(d.lease).toBeNull();
    expect(host.handed).toEqual([]);
  });

  it('at the backlog, leases the hottest objects to the freest member and hands it the delegable transactions in order', () => {
    const host = new FakeHost();
    const d = new Delegator(OPTS, host);
    d.batch(batchOf(tx('1', ['b']), tx('2', ['c']), tx('3', ['a', 'b']), tx('4', ['a']), tx('5', ['a', 'd']), tx('6', ['a'])));
    expect(d.lease).toEqual({ member: 'm2', objects: new Set(['a', 'b']), granted: 1000, until: 1100 });
    // 2 touches only c, outside the lease. 5's d goes along, never written.
    expect(host.handed).toEqual([
      {
        member: 'm2',
        objects: [
          ['a', 7n, Buffer.from('A')],
          ['b', 3n, Buffer.from('B')],
          ['d', 0n, null],
        ],
        digests: ['1', '3', '4', '5', '6'],
        until: 1100,
      },
    ]);
    expect(d.stats).toEqual({ leases: 1, ended: { load: 0, expired: 0, member: 0 }, delegated: 5, adopted: 0 });
  });

  it('stops at the first administrative transaction of a batch', () => {
    const host = new FakeHost();
    const d = new Delegator(OPTS, host);
    d.batch(batchOf(tx('1', ['a']), tx('2', ['a']), tx('u', [], 'remora.upgrade'), tx('3', ['a'])));
    expect(host.handed.map((h) => h.digests)).toEqual([['1', '2']]);
  });

  it('grants nothing without hot objects or members', () => {
    const host = new FakeHost();
    host.hotIds = [];
    const d = new Delegator(OPTS, host);
    const big = batchOf(tx('1', ['a']), tx('2', ['a']), tx('3', ['a']), tx('4', ['a']));
    d.batch(big);
    expect(d.lease).toBeNull();
    host.hotIds = ['a'];
    host.loads = [];
    d.batch(big);
    expect(d.lease).toBeNull();
    expect(d.stats.leases).toBe(0);
  });

  it('keeps the lease while the backlog is at least half the threshold, ends it below (load)', () => {
    const host = new FakeHost();
    const d = new Delegator(OPTS, host);
    d.batch(batchOf(tx('1', ['a']), tx('2', ['a']), tx('3', ['a']), tx('4', ['a'])));
    host.clock += 10;
    d.batch(batchOf(tx('5', ['a']), tx('6', ['b'])));
    expect(d.lease?.member).toBe('m2');
    expect(host.handed.map((h) => h.digests)).toEqual([
      ['1', '2', '3', '4'],
      ['5', '6'],
    ]);
    d.batch(batchOf(tx('7', ['a'])));
    expect(d.lease).toBeNull();
    expect(d.stats.ended).toEqual({ load: 1, expired: 0, member: 0 });
    expect(host.handed).toHaveLength(2);
  });

  it('ends an expired lease and grants a fresh one, with current objects, while the backlog holds', () => {
    const host = new FakeHost();
    const d = new Delegator(OPTS, host);
    const big = batchOf(tx('1', ['a']), tx('2', ['a']), tx('3', ['a']), tx('4', ['a']));
    d.batch(big);
    host.clock += 100;
    host.hotIds = ['b'];
    host.loads = [
      { name: 'm1', load: 0 },
      { name: 'm2', load: 9 },
    ];
    d.batch(batchOf(tx('5', ['b']), tx('6', ['b']), tx('7', ['a']), tx('8', ['b'])));
    expect(d.stats.ended).toEqual({ load: 0, expired: 1, member: 0 });
    expect(d.lease).toEqual({ member: 'm1', objects: new Set(['b']), granted: 1100, until: 1200 });
    expect(host.handed[1]).toEqual({ member: 'm1', objects: [['b', 3n, Buffer.from('B')]], digests: ['5', '6', '8'], until: 1200 });
  });

  it('ends the lease when its member leaves, and grants none to it again', () => {
    const host = new FakeHost();
    const d = new Delegator(OPTS, host);
    d.batch(batchOf(tx('1', ['a']), tx('2', ['a']), tx('3', ['a']), tx('4', ['a'])));
    host.loads = host.loads.filter((m) => m.name !== 'm2');
    d.check();
    expect(d.lease).toBeNull();
    expect(d.stats.ended).toEqual({ load: 0, expired: 0, member: 1 });
    d.batch(batchOf(tx('5', ['a']), tx('6', ['a']), tx('7', ['a']), tx('8', ['a'])));
    expect(d.lease?.member).toBe('m3');
  });

  it('counts the delegated transactions the primary adopted', () => {
    const host = new FakeHost();
    const d = new Delegator(OPTS, host);
    d.batch(batchOf(tx('1', ['a']), tx('2', ['a']), tx('3', ['z']), tx('4', ['a'])));
    expect(host.handed.map((h) => h.digests)).toEqual([['1', '2', '4']]);
    const applied = (digest: string, decision: Applied['decision']) => ({ digest, decision }) as Applied;
    d.applied([applied('1', 'adopted'), applied('2', 'reexecuted'), applied('3', 'adopted'), applied('4', 'executed')]);
    expect(d.stats).toMatchObject({ delegated: 3, adopted: 1 });
  });

  it('refuses options that cannot work, naming them', () => {
    const host = new FakeHost();
    expect(() => new Delegator({ ...OPTS, backlog: 0 }, host)).toThrow('delegation backlog must be a positive integer, got 0');
    expect(() => new Delegator({ ...OPTS, leaseMs: 0 }, host)).toThrow('delegation leaseMs must be positive, got 0');
    expect(() => new Delegator({ ...OPTS, maxObjects: 1.5 }, host)).toThrow('delegation maxObjects must be a positive integer, got 1.5');
  });
});

describe('PreExecutionPool.delegate', () => {
  const table: LookupTable = { reads: [], dynamic: [], speculative: [], writes: [], auth: [], precompiles: [], outcome: { status: 'ok', result: null } };

  function setup() {
    const offered: [string, string][] = [];
    const sent: string[] = [];
    const pool = new PreExecutionPool(
      { offer: (digest, _t, from) => offered.push([digest, from]), malformed: () => undefined, forget: () => undefined },
      { policy: 'round-robin' },
    );
    const link = (name: string): PreExecutorLink => ({
      name,
      send: (txs) => sent.push(`${name} txs ${txs.map((t) => t.digest).join(',')}`),
      sendEffects: () => undefined,
      sendObjects: (objects) => sent.push(`${name} objects ${objects.map(([id, v]) => `${id}@${v}`).join(',')}`),
      sendFeedback: () => undefined,
    });
    pool.add(link('m1'));
    pool.add(link('m2'));
    return { pool, offered, sent };
  }

  it('sends the objects then the transactions to the delegate alone, which now owes them', () => {
    const { pool, sent } = setup();
    expect(pool.delegate('m2', [['a', 4n, null]], [tx('1', ['a']), tx('2', ['a'])])).toBe(true);
    expect(sent).toEqual(['m2 objects a@4', 'm2 txs 1,2']);
    expect(pool.owing('1')).toBe('m2');
    expect(pool.stats().map((m) => [m.name, m.outstanding])).toEqual([
      ['m1', 0],
      ['m2', 2],
    ]);
  });

  it("takes a reassigned result from the delegate only: the admission member's copy is unowed", () => {
    const { pool, offered } = setup();
    pool.dispatch(tx('1', ['a']));
    const first = pool.owing('1');
    expect(first).toBe('m1');
    pool.delegate('m2', [], [tx('1', ['a'])]);
    expect(pool.scheduler.outstanding('m1')).toBe(0);
    pool.result('m1', '1', table);
    expect(pool.unowedResults).toBe(1);
    pool.result('m2', '1', table);
    expect(offered).toEqual([['1', 'm2']]);
    expect(pool.stats().map((m) => [m.name, m.executed, m.outstanding])).toEqual([
      ['m1', 0, 0],
      ['m2', 1, 0],
    ]);
  });

  it('under a lease, admission hands nobody transactions on leased objects, and the delegate nothing', () => {
    const { pool, sent } = setup();
    pool.lease = { member: 'm1', objects: new Set(['a']) };
    expect(pool.dispatch(tx('1', ['a', 'z']))).toBe(false);
    // Round-robin would pick m1 first: m2 takes both.
    expect(pool.dispatch(tx('2', ['z']))).toBe(true);
    expect(pool.dispatch(tx('3', ['y']))).toBe(true);
    expect([pool.owing('1'), pool.owing('2'), pool.owing('3')]).toEqual([undefined, 'm2', 'm2']);
    expect(pool.scheduler.outstanding('m1')).toBe(0);
    pool.flush();
    expect(sent).toEqual(['m2 txs 2,3']);
    pool.lease = null;
    expect(pool.dispatch(tx('4', ['a']))).toBe(true);
  });

  it('delegated to the member that owed it from admission: its first (admission) copy is dropped', () => {
    const { pool, offered, sent } = setup();
    pool.dispatch(tx('1', ['a']));
    pool.flush();
    pool.delegate('m1', [], [tx('1', ['a'])]);
    expect(sent).toEqual(['m1 txs 1', 'm1 txs 1']);
    pool.result('m1', '1', table);
    expect([offered, pool.unowedResults]).toEqual([[], 1]);
    pool.result('m1', '1', table);
    expect(offered).toEqual([['1', 'm1']]);
    expect(pool.scheduler.outstanding('m1')).toBe(0);
  });

  it('an admission copy not sent yet is not sent at all: the delegated one is the only one', () => {
    const { pool, offered, sent } = setup();
    pool.dispatch(tx('1', ['a']));
    pool.dispatch(tx('2', ['b']));
    pool.delegate('m2', [], [tx('1', ['a']), tx('2', ['b'])]);
    pool.flush();
    expect(sent).toEqual(['m2 txs 1,2']);
    pool.result('m2', '1', table);
    pool.result('m2', '2', table);
    expect(offered).toEqual([
      ['1', 'm2'],
      ['2', 'm2'],
    ]);
    expect([pool.scheduler.outstanding('m1'), pool.scheduler.outstanding('m2')]).toEqual([0, 0]);
  });

  it('refuses a member that is not active, sending nothing', () => {
    const { pool, sent } = setup();
    expect(pool.delegate('gone', [], [tx('1', ['a'])])).toBe(false);
    void pool.retire('m1');
    expect(pool.delegate('m1', [], [tx('1', ['a'])])).toBe(false);
    expect(sent).toEqual([]);
  });
});
