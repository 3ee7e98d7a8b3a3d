// The scheduler's affinity memory is a table of member tags indexed by a hash of the object id
// (scheduler.ts): it must choose exactly as a map from slot to member name would, members
// leaving and joining (and so tags reused) included, however long it runs.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Scheduler, slotOf, YOUNG_SLACK, type Schedulable } from '../ts/pipeline/scheduler.js';

/** A forwarded transaction's shape: its objects' hashes, and objects it must not be asked for. */
const hashedOnly = (objects: readonly string[]): Schedulable => ({
  get objects(): string[] {
    throw new Error('the scheduler asked a forwarded transaction for its objects');
  },
  slotsInto: (out, mask) => {
    objects.forEach((id, i) => (out[i] = slotOf(id) & mask));
    return objects.length;
  },
});

/** `load+affinity` written plainly: a Map from slot to the member's name and when, names never reused. */
class ReferenceAffinity {
  private readonly members: string[] = [];
  private readonly load = new Map<string, number>();
  private cursor = 0;
  /** Slot → the member last handed an id there, and when (a count of transactions handed). */
  private readonly affinity = new Map<number, { member: string; at: number }>();
  private handed = 0;
  private readonly slots: number;

  constructor(
    capacity: number,
    private readonly slack: number,
  ) {
    this.slots = capacity === 0 ? 0 : 2 ** Math.ceil(Math.log2(2 * capacity));
  }

  private slot(id: string): number {
    return slotOf(id) % this.slots;
  }

  add(name: string): void {
    this.members.push(name);
    this.load.set(name, 0);
  }

  remove(name: string): void {
    const i = this.members.indexOf(name);
    if (i < 0) return;
    this.members.splice(i, 1);
    this.load.delete(name);
    if (i < this.cursor) this.cursor--;
  }

  completed(name: string): void {
    const n = this.load.get(name);
    if (n !== undefined) this.load.set(name, Math.max(0, n - 1));
  }

  private outstanding(name: string): number {
    return this.load.get(name) ?? 0;
  }

  private leastLoaded(): string {
    const n = this.members.length;
    if (this.cursor >= n) this.cursor = 0;
    let best = this.cursor;
    let bestLoad = Infinity;
    for (let k = 0; k < n; k++) {
      const i = (this.cursor + k) % n;
      const l = this.outstanding(this.members[i] as string);
      if (l < bestLoad) {
        best = i;
        bestLoad = l;
      }
    }
    this.cursor = (best + 1) % n;
    return this.members[best] as string;
  }

  choose(objects: readonly string[]): string | null {
    if (this.members.length === 0) return null;
    // The member last handed the most recently handed of the objects.
    let affine: string | undefined;
    let newest = -1;
    for (const id of objects) {
      const m = this.slots === 0 ? undefined : this.affinity.get(this.slot(id));
      if (m !== undefined && this.load.has(m.member) && m.at > newest) {
        affine = m.member;
        newest = m.at;
      }
    }
    let chosen: string;
    if (affine === undefined) chosen = this.leastLoaded();
    else {
      const loads = this.members.map((m) => this.outstanding(m));
      const ahead = this.outstanding(affine) - Math.min(...loads);
      const owed = loads.reduce((a, b) => a + b, 0);
      // Past the slack, a young memory (younger than twice the results owed) is followed up to
      // YOUNG_SLACK times the slack.
      const young = this.handed - newest < 2 * owed;
      chosen = ahead <= this.slack || (young && ahead <= YOUNG_SLACK * this.slack) ? affine : this.leastLoaded();
    }
    this.load.set(chosen, this.outstanding(chosen) + 1);
    if (this.slots > 0) for (const id of objects) this.affinity.set(this.slot(id), { member: chosen, at: this.handed });
    this.handed++;
    return chosen;
  }
}

describe('scheduler affinity memory', () => {
  for (const capacity of [0, 1, 3, 40, 1000]) {
    it(`chooses as a map from slot to member would (capacity ${capacity})`, () => {
      const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
      console.log(`scheduler affinity test (capacity ${capacity}): seed ${seed} (REMORA_SEED to replay)`);
      let x = seed >>> 0 || 1;
      const rand = (n: number): number => {
        // xorshift32: the same sequence for the same seed.
        x ^= x << 13;
        x >>>= 0;
        x ^= x >>> 17;
        x ^= x << 5;
        x >>>= 0;
        return x % n;
      };
      const slack = 4;
      const s = new Scheduler({ policy: 'load+affinity', affinityCapacity: capacity, slack });
      const ref = new ReferenceAffinity(capacity, slack);
      const present = new Set<string>();
      const join = (name: string) => {
        s.add(name);
        ref.add(name);
        present.add(name);
      };
      for (const name of ['a', 'b', 'c']) join(name);
      // Ids from a set larger than the small tables, so slots are shared and overwritten.
      for (let step = 0; step < 30_000; step++) {
        const r = rand(100);
        if (r < 30) {
          const names = [...present];
          const name = names[rand(names.length)] as string;
          s.completed(name);
          ref.completed(name);
        } else if (r === 30 && present.size > 1) {
          const names = [...present];
          const name = names[rand(names.length)] as string;
          s.remove(name);
          ref.remove(name);
          present.delete(name);
        } else if (r === 31) {
          const name = `m${step}`;
          join(name);
        } else {
          const objects = [...new Set(Array.from({ length: 1 + rand(3) }, () => `o${rand(120)}`))];
          // Every other one as a forwarded transaction, whose hashes came with it.
          const tx = step % 2 === 1 ? hashedOnly(objects) : objects;
          expect(s.choose(tx), `step ${step}, objects ${objects.join(',')}`).toBe(ref.choose(objects));
        }
      }
    });
  }
});
