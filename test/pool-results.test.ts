// An ordered member's results are matched to what it was sent in order, by comparing digests
// in place (PreExecutionPool.results). That is only a shortcut for the lookup by digest: fed
// the same runs, with results skipped, reordered, repeated, late or never owed, a pool whose
// members are ordered must decide exactly as one that looks each result up.
import { randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import type { LookupTable } from '../ts/app/exec.js';
import type { DecodedTx } from '../ts/app/tx.js';
import { PreExecutionPool, type PreExecutorLink } from '../ts/pipeline/pool.js';
import { encodeResults, frameResults } from '../ts/pipeline/records.js';
import { encodeTable } from '../ts/pipeline/table-bytes.js';
import { rng } from './kv-history.js';

const TABLE = encodeTable({
  reads: [],
  dynamic: [],
  speculative: [],
  writes: [],
  auth: [],
  precompiles: [],
  outcome: { status: 'ok', result: null },
} satisfies LookupTable);
const MEMBERS = ['m1', 'm2', 'm3'];

function tx(digest: string): DecodedTx {
  return { digest, objects: [`o${digest.slice(0, 2)}`], command: 'put' } as unknown as DecodedTx;
}

/** A pool whose members are test doubles recording what they are sent; `ordered` as a wire member is. */
function pool(ordered: boolean) {
  const offered: string[] = [];
  const sent = new Map<string, string[]>(MEMBERS.map((m) => [m, []]));
  const p = new PreExecutionPool(
    {
      offer: (digest, _t, from) => offered.push(`${digest.slice(0, 8)} from ${from}`),
      malformed: () => undefined,
      forget: () => undefined,
    },
    { policy: 'load' },
  );
  for (const name of MEMBERS) {
    const link: PreExecutorLink = {
      name,
      ordered,
      send: (txs) => sent.get(name)?.push(...txs.map((t) => t.digest)),
      sendEffects: () => undefined,
      sendObjects: () => undefined,
      sendFeedback: () => undefined,
    };
    p.add(link);
  }
  const deliver = (from: string, digests: string[]) => {
    if (ordered) p.results(from, frameResults(encodeResults(digests.map((d) => [d, TABLE]))));
    else for (const d of digests) p.result(from, d, TABLE);
  };
  const view = () => ({ offered: [...offered], unowed: p.unowedResults, stats: p.stats(), load: MEMBERS.map((m) => p.scheduler.outstanding(m)) });
  return { p, sent, deliver, view };
}

describe('PreExecutionPool.results', () => {
  it('decides as the lookup by digest does, whatever order results come in', () => {
    for (let run = 0; run < 40; run++) {
      const seed = randomBytes(4).readUInt32LE(0);
      const rand = rng(seed);
      const pick = <T>(xs: readonly T[]): T | undefined => xs[Math.floor(rand() * xs.length)];
      const digest = () => Buffer.from(Array.from({ length: 32 }, () => Math.floor(rand() * 256))).toString('hex');
      const a = pool(true);
      const b = pool(false);
      const all: string[] = [];
      const delegated = new Set<string>();
      // What each member was sent and has not answered yet, as it would answer it.
      const pending = new Map<string, string[]>(MEMBERS.map((m) => [m, []]));
      const sentSeen = new Map<string, number>(MEMBERS.map((m) => [m, 0]));
      for (let step = 0; step < 300; step++) {
        const r = rand();
        if (r < 0.35) {
          const d = digest();
          all.push(d);
          expect(a.p.dispatch(tx(d))).toBe(b.p.dispatch(tx(d)));
        } else if (r < 0.5) {
          a.p.flush();
          b.p.flush();
          expect(a.sent).toEqual(b.sent);
          for (const m of MEMBERS) {
            const s = a.sent.get(m) ?? [];
            pending.get(m)?.push(...s.slice(sentSeen.get(m)));
            sentSeen.set(m, s.length);
          }
        } else if (r < 0.8) {
          // A member answers a few, as it may: in order, one skipped, two swapped, one
          // repeated, or one it was never sent.
          const m = pick(MEMBERS) as string;
          const q = pending.get(m) as string[];
          const out = q.splice(0, 1 + Math.floor(rand() * 4));
          const how = rand();
          if (how < 0.1 && out.length > 1) out.splice(Math.floor(rand() * out.length), 1);
          else if (how < 0.2 && out.length > 1) out.push(out.shift() as string);
          else if (how < 0.25 && out.length > 0) out.push(out[0] as string);
          else if (how < 0.3) out.push(pick(all) ?? digest());
          a.deliver(m, out);
          b.deliver(m, out);
        } else if (r < 0.9) {
          // Applied without its result (a deadline, or ordered before it came).
          const d = pick(all);
          if (d !== undefined) {
            a.p.done(d);
            b.p.done(d);
          }
        } else if (r < 0.97) {
          // Delegated: to the member owing it, or another. Once per digest: delegated back to
          // a member that holds an older copy, the two pools take different copies (the test
          // below).
          const d = pick(all);
          const m = pick(MEMBERS) as string;
          if (d !== undefined && a.p.owing(d) !== undefined && !delegated.has(d)) {
            delegated.add(d);
            expect(a.p.delegate(m, [], [tx(d)])).toBe(b.p.delegate(m, [], [tx(d)]));
            a.p.flush();
            b.p.flush();
            for (const mm of MEMBERS) {
              const s = a.sent.get(mm) ?? [];
              pending.get(mm)?.push(...s.slice(sentSeen.get(mm)));
              sentSeen.set(mm, s.length);
            }
          }
        } else {
          // A message from no member at all.
          const d = pick(all) ?? '00'.repeat(32);
          a.deliver('stranger', [d]);
          b.deliver('stranger', [d]);
        }
        const [va, vb] = [a.view(), b.view()];
        if (JSON.stringify(va) !== JSON.stringify(vb)) throw new Error(`seed ${seed}, step ${step}: the ordered pool decided otherwise`);
      }
      expect(a.view().offered.length).toBeGreaterThan(0);
    }
  });

  it("takes an ordered member's results in any order, each once", () => {
    const { p, deliver, view } = pool(true);
    const ds = [1, 2, 3, 4, 5, 6].map((i) => String(i).repeat(64));
    for (const d of ds) p.dispatch(tx(d));
    p.flush();
    const owner = p.owing(ds[0] as string) as string;
    const mine = ds.filter((d) => p.owing(d) === owner);
    // The member answers its second before its first: both are taken, each once.
    deliver(owner, [...mine].reverse());
    deliver(owner, mine);
    expect(view().offered).toEqual([...mine].reverse().map((d) => `${d.slice(0, 8)} from ${owner}`));
    expect(view().unowed).toBe(mine.length);
  });

  it('matches results that come in the order sent without making a string of any digest', () => {
    const { p, deliver, view } = pool(true);
    const ds = Array.from({ length: 30 }, () => randomBytes(32).toString('hex'));
    for (const d of ds) p.dispatch(tx(d));
    p.flush();
    const byMember = MEMBERS.map((m) => ds.filter((d) => p.owing(d) === m));
    const toString = vi.spyOn(Buffer.prototype, 'toString');
    try {
      MEMBERS.forEach((m, i) => deliver(m, byMember[i] ?? []));
      expect(toString.mock.calls.filter(([encoding]) => encoding === 'hex')).toEqual([]);
    } finally {
      toString.mockRestore();
    }
    expect(view().offered).toHaveLength(30);
    expect(view().unowed).toBe(0);
  });

  it('delegated away and back, takes the copy delegated last, not the one sent at admission', () => {
    const { p, sent, deliver, view } = pool(true);
    const d = 'ab'.repeat(32);
    p.dispatch(tx(d));
    p.flush();
    const first = p.owing(d) as string;
    const other = MEMBERS.find((m) => m !== first) as string;
    p.delegate(other, [], [tx(d)]);
    p.delegate(first, [], [tx(d)]);
    expect(sent.get(first)).toEqual([d, d]);
    // Its admission copy answers first: no longer the one owed.
    deliver(first, [d]);
    expect([view().offered, view().unowed]).toEqual([[], 1]);
    deliver(first, [d]);
    expect(view().offered).toEqual([`${d.slice(0, 8)} from ${first}`]);
    // The member it was delegated to in between answers too late to count.
    deliver(other, [d]);
    expect(view().unowed).toBe(2);
  });
});
