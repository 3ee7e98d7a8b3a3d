// One merge rule, three implementations: the native batch check (`adoptBatch`), the JavaScript
// merge (merge.ts), and the reference sequential executor. Tables come from a pre-executor
// lagging behind by a random number of transactions, so adoptions, stale reads, speculative
// reads and dynamic reads all occur; malformed tables are dropped and executed instead.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import type { Versioned } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { applyWrites, stateDigest } from '../ts/app/state.js';
import { decodeTx, type DecodedTx } from '../ts/app/tx.js';
import { builtinApps } from '../ts/apps/index.js';
import { PreExecutor, type Effect } from '../ts/pipeline/preexecutor.js';
import { Primary, type AdoptRun, type Applied, type PrimaryStore } from '../ts/pipeline/primary.js';
import { encodeTable, receiveTable, type ReceivedTable } from '../ts/pipeline/table-bytes.js';
import { kvWorkload } from '../ts/workload.js';
import { primaryStorePerTest, xorshift } from './helpers.js';

const kv = builtinApps.kv;

/** Test double: the primary's state in a Map, with no native check (every table merged in JS). */
class MapStore implements PrimaryStore {
  readonly objects = new Map<string, Versioned>();
  get(ids: readonly string[]): Versioned[] {
    return ids.map((id) => this.objects.get(id) ?? { version: 0n, value: undefined });
  }
  write(writes: readonly [string, bigint, Uint8Array | null][]): void {
    for (const [id, ts, value] of writes) applyWrites(this.objects, [[id, value]], ts);
  }
}

interface Case {
  batches: { ts: bigint; tx: DecodedTx }[][];
  tables: Map<string, ReceivedTable>;
}

/** A kv stream in batches, with tables from a pre-executor that sees the state a few transactions late. */
function makeCase(seed: number, total: number): Case {
  const rand = xorshift(seed);
  const gen = kvWorkload({ keys: 64, hotKeys: 4, conflictRate: 0.3, dynamicRate: 0.1, seed });
  const txs = Array.from({ length: total }, () => decodeTx(gen.next().value));
  const entries = txs.map((tx, i) => ({ ts: BigInt(i + 1), tx }));
  const reference = new PreExecutor(kv, nativeFunctions, { speculate: true });
  const effects: Effect[] = [];
  const pre = new PreExecutor(kv, nativeFunctions, { speculate: true });
  const tables = new Map<string, ReceivedTable>();
  for (const { ts, tx } of entries) {
    const lag = Math.floor(rand() * 4);
    pre.install(effects.filter(([at]) => at <= ts - 1n - BigInt(lag)));
    if (rand() < 0.9) {
      const [[digest, table] = ['', undefined]] = pre.run([tx]);
      if (table) tables.set(digest, receiveTable(encodeTable(table)));
    }
    const [[, truth] = ['', undefined]] = reference.run([tx]);
    const writes = truth?.writes ?? [];
    reference.install([[ts, writes, tx.digest]]);
    effects.push([ts, writes, tx.digest]);
  }
  const batches: Case['batches'] = [];
  for (let i = 0; i < entries.length;) {
    const n = 1 + Math.floor(rand() * 40);
    batches.push(entries.slice(i, i + n));
    i += n;
  }
  return { batches, tables };
}

async function runPrimary(store: PrimaryStore, c: Case): Promise<Applied[]> {
  const applied: Applied[] = [];
  const primary = new Primary(kv, store, nativeFunctions, { deadlineMs: 0, onApplied: (b) => applied.push(...b) });
  for (const batch of c.batches) {
    for (const { tx } of batch) {
      const t = c.tables.get(tx.digest);
      if (!t) continue;
      primary.expect(tx.digest);
      primary.offer(tx.digest, t, 'pre');
    }
    await primary.deliver(batch);
  }
  return applied;
}

/** Byte surgery on a valid table: each is malformed as docs/binary-layouts.md defines. */
const CORRUPTIONS: [string, (t: Buffer) => Buffer][] = [
  ['unknown layout', (t) => Buffer.concat([Buffer.from([9]), t.subarray(1)])],
  ['unknown flags', (t) => Buffer.concat([t.subarray(0, 1), Buffer.from([(t[1] ?? 0) | 4]), t.subarray(2)])],
  ['truncated', (t) => t.subarray(0, t.length - 3)],
  ['trailing bytes', (t) => Buffer.concat([t, Buffer.from([0])])],
  ['lying read count', (t) => withU16(t, 2, t.readUInt16LE(2) + 1)],
  ['lying rest length', (t) => withU32(t, 8, t.readUInt32LE(8) + 1)],
  ['id of 0 bytes', (t) => withByte(t, 12, 0)],
  ['id over 88 bytes', (t) => withByte(t, 12, 89)],
];

function withU16(t: Buffer, at: number, v: number): Buffer {
  const c = Buffer.from(t);
  c.writeUInt16LE(v & 0xffff, at);
  return c;
}
function withU32(t: Buffer, at: number, v: number): Buffer {
  const c = Buffer.from(t);
  c.writeUInt32LE(v >>> 0, at);
  return c;
}
function withByte(t: Buffer, at: number, v: number): Buffer {
  const c = Buffer.from(t);
  c[at] = v;
  return c;
}

describe('adoption', () => {
  const fx = primaryStorePerTest();

  it('a cluster of stale transactions is merged in one run: one store read, one write, one more native call', async () => {
    // Transactions 1-3 were pre-executed against the state before transaction 0, which writes
    // the key they read: stale whatever comes first. Transaction 4's table is current, and it
    // reads nothing they write.
    const cas = (key: string, n: number, expected: number | null) =>
      decodeTx(makeTx(kv, 'cas', { key, expected: expected === null ? null : { n: expected }, value: { n } }));
    const txs = [cas('key/0', 0, null), cas('key/0', 1, 0), cas('key/0', 2, 1), cas('key/0', 3, 2), cas('key/1', 4, null)];
    const early = txs.slice(0, 4).flatMap((tx) => new PreExecutor(kv, nativeFunctions, { speculate: false }).run([tx]));
    const truth = new PreExecutor(kv, nativeFunctions, { speculate: false });
    txs.slice(0, 4).forEach((tx, i) => {
      const [[, t] = ['', undefined]] = truth.run([tx]);
      truth.install([[BigInt(i + 1), t?.writes ?? [], tx.digest]]);
    });
    const late = truth.run([txs[4] as DecodedTx]);
    // Test double: the native store, counting the calls the primary makes.
    const calls = { adopt: [] as AdoptRun[], get: 0, write: 0 };
    const store = fx.store;
    const counting: PrimaryStore = {
      get: (ids) => (calls.get++, store.get(ids)),
      write: (writes) => (calls.write++, store.write(writes)),
      adopt: (tables, ends, ts, from) => {
        const run = store.adopt(tables, ends, ts, from);
        calls.adopt.push(run);
        return run;
      },
    };
    const applied: Applied[] = [];
    const primary = new Primary(kv, counting, nativeFunctions, { deadlineMs: 0, onApplied: (b) => applied.push(...b) });
    for (const [digest, table] of [...early, ...late]) {
      primary.expect(digest);
      primary.offer(digest, table, 'pre');
    }
    await primary.deliver(txs.map((tx, i) => ({ ts: BigInt(i + 1), tx })));
    expect(applied.map((a) => a.decision)).toEqual(['adopted', 'reexecuted', 'reexecuted', 'reexecuted', 'adopted']);
    expect(applied.map((a) => a.outcome)).toEqual(txs.map(() => ({ status: 'ok', result: true })));
    expect(calls.adopt.map((r) => [r.adopted, r.stop, r.staleAfter])).toEqual([
      [1, 'stale', 2],
      [1, 'end', 0],
    ]);
    expect([calls.get, calls.write, primary.stats.mergeRuns]).toEqual([1, 1, 1]);
  });

  it('native check, JS merge and reference: same decisions, outcomes and state over random kv batches', async () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`adopt agreement: seed ${seed} (REMORA_SEED to replay)`);
    const c = makeCase(seed, 3000);
    const native = await runPrimary(fx.store, c);
    const mem = new MapStore();
    const js = await runPrimary(mem, c);
    const entries = c.batches.flat();
    const reference = executeSequentially(kv, entries, nativeFunctions);

    expect(native.map((a) => a.decision)).toEqual(js.map((a) => a.decision));
    expect(native.map((a) => a.conflicts)).toEqual(js.map((a) => a.conflicts));
    expect(native.map((a) => a.outcome)).toEqual(entries.map(({ ts }) => reference.outcomes.get(ts)));
    expect(js.map((a) => a.outcome)).toEqual(entries.map(({ ts }) => reference.outcomes.get(ts)));
    // As bytes: adopted writes are views into the table, executed ones fresh buffers.
    const bytes = (list: Applied[]) => list.map((a) => a.writes.map(([id, v]) => [id, v === null ? null : Buffer.from(v).toString('hex')]));
    expect(bytes(native)).toEqual(bytes(js));
    expect(fx.store.digest()).toBe(reference.state.digest());
    expect(stateDigest(mem.objects)).toBe(reference.state.digest());
    // Every path ran, or the test proved less than it claims.
    const count = (d: Applied['decision']) => native.filter((a) => a.decision === d).length;
    expect(count('adopted')).toBeGreaterThan(100);
    expect(count('reexecuted')).toBeGreaterThan(10);
    expect(count('executed')).toBeGreaterThan(10);
  });

  it('malformed tables are refused at intake with a clear error; the primary executes the transaction itself', async () => {
    const gen = kvWorkload({ keys: 8, hotKeys: 0, conflictRate: 0, dynamicRate: 0, seed: 7 });
    const txs = Array.from({ length: CORRUPTIONS.length }, () => decodeTx(gen.next().value));
    const pre = new PreExecutor(kv, nativeFunctions, { speculate: false });
    const logged: string[] = [];
    const applied: Applied[] = [];
    const primary = new Primary(kv, fx.store, nativeFunctions, { deadlineMs: 0, onApplied: (b) => applied.push(...b), log: (m) => logged.push(m) });
    const results = pre.run(txs);
    CORRUPTIONS.forEach(([, corrupt], i) => {
      const [digest, table] = results[i] ?? ['', undefined];
      if (!table) throw new Error('no table');
      const bad = corrupt(encodeTable({ ...table, reads: table.reads.length > 0 ? table.reads : [['key/0', 0n]] }));
      primary.expect(digest);
      expect(() => receiveTable(bad), CORRUPTIONS[i]?.[0]).toThrow(/^table: /);
    });
    await primary.deliver(txs.map((tx, i) => ({ ts: BigInt(i + 1), tx })));
    expect(applied.map((a) => a.decision)).toEqual(txs.map(() => 'executed'));
    expect(logged).toEqual([]);
  });

  it('malformed tables that pass intake but not the native check (an id that is not UTF-8) are dropped and executed', async () => {
    const gen = kvWorkload({ keys: 8, hotKeys: 0, conflictRate: 0, dynamicRate: 0, seed: 8 });
    const tx = decodeTx(gen.next().value);
    const pre = new PreExecutor(kv, nativeFunctions, { speculate: false });
    const [[digest, table] = ['', undefined]] = pre.run([tx]);
    if (!table) throw new Error('no table');
    const bytes = encodeTable({ ...table, reads: [['key/\u00e9', 0n], ...table.reads] });
    // 'é' is 0xc3 0xa9 in UTF-8; a lone 0xc3 followed by '/' is not UTF-8.
    const at = bytes.indexOf(Buffer.from('key/\u00e9'));
    bytes[at + 5] = 0x2f;
    const logged: string[] = [];
    const applied: Applied[] = [];
    const primary = new Primary(kv, fx.store, nativeFunctions, { deadlineMs: 0, onApplied: (b) => applied.push(...b), log: (m) => logged.push(m) });
    primary.expect(digest);
    primary.offer(digest, receiveTable(bytes), 'pre');
    await primary.deliver([{ ts: 1n, tx }]);
    expect(applied.map((a) => a.decision)).toEqual(['executed']);
    expect(primary.stats.malformedTables).toBe(1);
    expect(logged.join('\n')).toMatch(/dropped the table of .* from pre: .*UTF-8/);
  });
});
