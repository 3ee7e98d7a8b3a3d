// Who hears of an applied transaction: every submitter of its digest, and later duplicates by
// the timestamp of the first submission, for as long as its outcome is remembered.
import { describe, expect, it } from 'vitest';
import type { Applied } from '../ts/pipeline/primary.js';
import { ReplyWaiters } from '../ts/pipeline/replies.js';

const applied = (ts: number, digest = `d${ts}`): Applied => ({
  ts: BigInt(ts),
  digest,
  outcome: { status: 'ok', result: ts },
  decision: 'adopted',
  preExecutor: 'a',
  writes: [],
  writeCount: 0,
  conflicts: [],
});

describe('reply waiters', () => {
  it('remembers exactly the last `remember` outcomes, by timestamp and digest', () => {
    const r = new ReplyWaiters(3);
    r.applied(
      [1, 2, 3, 4, 5].map((ts) => applied(ts)),
      () => 'none',
    );
    expect(r.remembered('d1', 1n)).toBeNull();
    expect(r.remembered('d2', 2n)).toBeNull();
    expect(r.remembered('d3', 3n)).toEqual({ ts: 3n, outcome: { status: 'ok', result: 3 }, decision: 'adopted' });
    expect(r.remembered('d5', 5n)?.outcome).toEqual({ status: 'ok', result: 5 });
    // Another digest at that timestamp, or a timestamp not applied yet, is not an answer.
    expect(r.remembered('d4', 5n)).toBeNull();
    expect(r.remembered('d6', 6n)).toBeNull();
    expect(r.lastApplied).toBe(5n);
  });

  it('remembers nothing with a window of 0, and refuses a negative one', () => {
    const r = new ReplyWaiters(0);
    r.applied([applied(1)], () => 'none');
    expect(r.remembered('d1', 1n)).toBeNull();
    expect(() => new ReplyWaiters(-1)).toThrow('outcomes remembered must be a non-negative integer, got -1');
  });

  it('answers every submitter of a digest once, and none that dropped it', async () => {
    const r = new ReplyWaiters(10);
    const heard: string[] = [];
    const first = r.wait('x');
    r.listen('x', { onApplied: (a) => heard.push(`listener ${a.ts}`) });
    const second = r.wait('x');
    r.listen('y', { onApplied: () => heard.push('y') });
    r.drop('y');
    r.applied([applied(7, 'x'), applied(8, 'y')], (a) => (a.digest === 'x' ? 'confirmed' : 'none'));
    expect((await first).a.ts).toBe(7n);
    expect((await second).optimistic).toBe('confirmed');
    expect(heard).toEqual(['listener 7']);
    // Applied again (it cannot be, but a second answer must not reach anyone).
    r.applied([applied(9, 'x')], () => 'none');
    expect(heard).toEqual(['listener 7']);
  });
});
