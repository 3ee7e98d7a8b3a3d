// The built-in apps and the workload generators, run through the reference executor.
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { makeTx, type App } from '../ts/app/app.js';
import { decode, encode, type Data } from '../ts/app/codec.js';
import { execute, hintsFrom, type Outcome } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { MemoryState } from '../ts/app/state.js';
import { decodeTx, type Transaction } from '../ts/app/tx.js';
import { accountId, builtinApps, DEMO_MINT_AUTHORITY, kvApp, loadApp, stampId, type Account } from '../ts/apps/index.js';
import { BANK_INITIAL_BALANCE, BankAccounts, bankBench, bankWorkload, kvWorkload, Rng, zipf, zipfProbability } from '../ts/workload.js';

const bank = builtinApps.bank;

/** Runs transactions on `state` in order, continuing its timestamps; one outcome per tx. */
class Runner {
  readonly state = new MemoryState();
  private ts = 0n;

  constructor(readonly app: App) {}

  run(...txs: Transaction[]): Outcome[] {
    const entries = txs.map((tx) => ({ ts: ++this.ts, tx: decodeTx(tx) }));
    const { outcomes } = executeSequentially(this.app, entries, nativeFunctions, this.state);
    return entries.map((e) => outcomes.get(e.ts) ?? { status: 'aborted', reason: 'missing outcome' });
  }

  one(tx: Transaction): Outcome {
    const [o] = this.run(tx);
    if (o === undefined) throw new Error('no outcome');
    return o;
  }

  value<T>(id: string): T | undefined {
    const v = this.state.read(id).value;
    return v === undefined ? undefined : (decode(v) as T);
  }
}

// Compared as hex: buffers from msgpackr may carry an extra own property that deep equality sees.
const hex = (b: Uint8Array | null): string | null => (b === null ? null : Buffer.from(b).toString('hex'));
const ok = (result: Data = null): Outcome => ({ status: 'ok', result });
const aborted = (reason: string): Outcome => ({ status: 'aborted', reason });

function take<T>(it: Iterator<T>, n: number): T[] {
  return Array.from({ length: n }, () => {
    const r = it.next();
    if (r.done === true) throw new Error('workload ended');
    return r.value;
  });
}

describe('bank', () => {
  const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
  console.log(`apps test: bank workload seed ${seed} (REMORA_SEED to replay)`);

  it('conserves the money minted over a Zipf workload, with exact balances and nonces', () => {
    const work = bankWorkload({ accounts: 40, alpha: 1.1, seed });
    const r = new Runner(bank);
    expect(r.run(...work.setup)).toEqual(work.setup.map((_, i) => ok(i < 40 ? null : BANK_INITIAL_BALANCE)));

    const transfers = Array.from({ length: 1500 }, () => work.next());
    const expected = new Array<number>(40).fill(BANK_INITIAL_BALANCE);
    for (const tx of transfers) {
      const { from, to, amount } = decodeTx(tx).args as { from: number; to: number; amount: number };
      expected[from] = (expected[from] ?? 0) - amount;
      expected[to] = (expected[to] ?? 0) + amount;
    }
    // Generated in order and run in order: every nonce is right and every transfer commits.
    expect(r.run(...transfers).filter((o) => o.status !== 'ok')).toEqual([]);

    const accounts = Array.from({ length: 40 }, (_, i) => r.value<Account>(accountId(i)));
    expect(accounts.map((a) => a?.balance)).toEqual(expected);
    expect(accounts.reduce((s, a) => s + (a?.balance ?? 0), 0)).toBe(work.minted);
    expect(accounts.map((a) => a?.nonce)).toEqual(accounts.map((_, i) => work.accounts.nonce(i)));
    expect(accounts.map((a) => Buffer.from(a?.owner ?? []).toString('hex'))).toEqual(work.accounts.keys.map((k) => Buffer.from(k.publicKey).toString('hex')));
  });

  it('aborts bad signatures, replays, future nonces and overdrafts without changing anything', () => {
    const accts = new BankAccounts(3, seed);
    const r = new Runner(bank);
    r.run(...accts.setup(1000));
    const [alice, bob] = accts.keys;
    if (alice === undefined || bob === undefined) throw new Error('keys');

    const good = accts.transfer(0, 1, 10);
    const before = r.state.digest();
    // Signed by the wrong key; unsigned; and alice's signature lifted from another body.
    const forged = makeTx(bank, 'transfer', { from: 0, to: 1, amount: 10, nonce: 0 }, [bob]);
    const unsigned = { body: good.body, auth: [] };
    const other = makeTx(bank, 'transfer', { from: 0, to: 2, amount: 10, nonce: 0 }, [alice]);
    const lifted = { body: good.body, auth: other.auth };
    expect(r.run(forged, unsigned, lifted)).toEqual([aborted('bad signature'), aborted('bad signature'), aborted('bad signature')]);
    expect(r.state.digest()).toBe(before);

    expect(r.one(good)).toEqual(ok());
    const afterGood = r.state.digest();
    expect(r.one(good)).toEqual(aborted('stale nonce'));
    expect(r.one(makeTx(bank, 'transfer', { from: 0, to: 1, amount: 1, nonce: 5 }, [alice]))).toEqual(aborted('nonce too high: account 0 expects nonce 1'));
    expect(r.one(accts.transfer(0, 1, 991))).toEqual(aborted('insufficient funds'));
    expect(r.state.digest()).toBe(afterGood);
    expect(r.value<Account>(accountId(0))).toMatchObject({ balance: 990, nonce: 1 });
    expect(r.value<Account>(accountId(1))).toMatchObject({ balance: 1010, nonce: 0 });

    // The whole balance may go, and a transfer to oneself only advances the nonce.
    expect(r.one(makeTx(bank, 'transfer', { from: 0, to: 1, amount: 990, nonce: 1 }, [alice]))).toEqual(ok());
    expect(r.one(makeTx(bank, 'transfer', { from: 1, to: 1, amount: 5, nonce: 0 }, [bob]))).toEqual(ok());
    expect(r.value<Account>(accountId(1))).toMatchObject({ balance: 2000, nonce: 1 });
    expect(r.one(makeTx(bank, 'balance', { account: 0 }))).toEqual(ok(0));
  });

  it('guards open, mint and arguments with clear reasons', () => {
    const accts = new BankAccounts(2, seed);
    const owner = accts.keys[0]?.publicKey ?? new Uint8Array(32);
    const r = new Runner(bank);
    expect(r.one(makeTx(bank, 'open', { account: 7, owner }))).toEqual(ok());
    expect(r.one(makeTx(bank, 'open', { account: 7, owner }))).toEqual(aborted('account 7 already exists'));
    expect(r.one(makeTx(bank, 'mint', { account: 7, amount: 5 }, [accts.keys[0] ?? DEMO_MINT_AUTHORITY]))).toEqual(
      aborted('mint must be signed by the mint authority'),
    );
    expect(r.one(makeTx(bank, 'mint', { account: 8, amount: 5 }, [DEMO_MINT_AUTHORITY]))).toEqual(aborted('account 8 does not exist'));
    expect(r.one(makeTx(bank, 'mint', { account: 7, amount: Number.MAX_SAFE_INTEGER }, [DEMO_MINT_AUTHORITY]))).toEqual(ok(Number.MAX_SAFE_INTEGER));
    expect(r.one(makeTx(bank, 'mint', { account: 7, amount: 1 }, [DEMO_MINT_AUTHORITY]))).toEqual(aborted('balance would exceed the largest safe integer'));
    expect(r.one(makeTx(bank, 'open', { account: 9, owner: new Uint8Array(31) }))).toEqual(aborted('owner must be 32 bytes'));
    expect(r.one(makeTx(bank, 'open', { account: -1, owner }))).toEqual(aborted('account must be a non-negative safe integer account number'));
    const zero = { from: 7, to: 7, amount: 0, nonce: 0 };
    expect(r.one(makeTx(bank, 'transfer', zero))).toEqual(aborted('amount must be a positive safe integer'));
    expect(r.one(makeTx(bank, 'balance', { account: 3 }))).toEqual(aborted('account 3 does not exist'));
  });

  it('stamps sha256(memo ‖ balance) and reuses the pre-compiled result on re-execution', () => {
    const accts = new BankAccounts(1, seed);
    const r = new Runner(bank);
    r.run(...accts.setup(1234));
    const memo = Buffer.from('audit 2024');
    const tx = decodeTx(makeTx(bank, 'stamp', { account: 0, memo }));
    expect(tx.objects).toEqual([accountId(0), stampId(0)]);
    const want = createHash('sha256')
      .update(Buffer.concat([memo, Buffer.from('00000000000004d2', 'hex')]))
      .digest();

    const first = execute(bank, tx, r.state, nativeFunctions);
    expect(first.table.outcome).toEqual(ok(want));
    expect(first.table.writes.map(([id, value]) => [id, hex(value)])).toEqual([[stampId(0), hex(encode(want))]]);
    expect(first.counts).toMatchObject({ precompiled: 1, precompilesReused: 0 });
    const again = execute(bank, tx, r.state, nativeFunctions, hintsFrom(first.table));
    expect(again.counts).toMatchObject({ precompiled: 0, precompilesReused: 1 });
    expect(again.table.writes).toEqual(first.table.writes);
  });
});

describe('kv', () => {
  const put = (key: string, value: Data) => makeTx(kvApp, 'put', { key, value });
  const cas = (key: string, expected: Data, value: Data) => makeTx(kvApp, 'cas', { key, expected, value });

  it('compares and swaps on canonical encodings, null meaning absent', () => {
    const r = new Runner(kvApp);
    expect(r.one(cas('a', 1, 2))).toEqual(ok(false));
    expect(r.value('kv/a')).toBeUndefined();
    expect(r.one(cas('a', null, { y: 1, x: [1, 'two'] }))).toEqual(ok(true));
    // Same map, other key order: equal canonical bytes.
    expect(r.one(cas('a', { x: [1, 'two'], y: 1 }, 'next'))).toEqual(ok(true));
    expect(r.one(cas('a', { x: [1, 'two'], y: 1 }, 'again'))).toEqual(ok(false));
    expect(r.one(makeTx(kvApp, 'get', { key: 'a' }))).toEqual(ok('next'));
    expect(r.one(cas('a', 'next', new Uint8Array([1, 2])))).toEqual(ok(true));
    expect(r.one(cas('a', new Uint8Array([1, 2]), 1))).toEqual(ok(true));
    // A bigint always encodes as a 64-bit integer, so 1n is not the number 1.
    expect(r.one(cas('a', 1n, 3))).toEqual(ok(false));
    expect(r.one(cas('a', 1, 3))).toEqual(ok(true));
    expect(r.one(makeTx(kvApp, 'delete', { key: 'a' }))).toEqual(ok());
    expect(r.one(makeTx(kvApp, 'get', { key: 'a' }))).toEqual(ok(null));
    expect(r.one(cas('a', null, 4))).toEqual(ok(true));
  });

  it('copies, deletes and rejects bad keys', () => {
    const r = new Runner(kvApp);
    r.run(put('src', { n: 1 }));
    expect(r.one(makeTx(kvApp, 'copy', { from: 'src', to: 'dst' }))).toEqual(ok({ n: 1 }));
    expect(r.value('kv/dst')).toEqual({ n: 1 });
    expect(r.one(makeTx(kvApp, 'copy', { from: 'nothing', to: 'dst' }))).toEqual(ok(null));
    expect(r.state.read('kv/dst')).toMatchObject({ value: undefined });
    expect(r.one(put('', 1))).toEqual(aborted('key must be a non-empty string of at most 85 bytes'));
    expect(r.one(put('x'.repeat(86), 1))).toEqual(aborted('key must be a non-empty string of at most 85 bytes'));
    expect(r.one(makeTx(kvApp, 'put', { key: 'x' } as never))).toEqual(aborted('value is required (use null for none)'));
  });

  it('follow reads an undeclared object and records it as a dynamic read', () => {
    const r = new Runner(kvApp);
    r.run(put('ptr', 'target'), put('target', [42]));
    const tx = decodeTx(makeTx(kvApp, 'follow', { key: 'ptr', into: 'out' }));
    expect(tx.objects).toEqual(['kv/ptr', 'kv/out']);
    const { table } = execute(kvApp, tx, r.state, nativeFunctions);
    expect(table.outcome).toEqual(ok([42]));
    expect(table.dynamic.map(([id, v, value]) => [id, v, hex(value)])).toEqual([['kv/target', 2n, hex(encode([42]))]]);
    expect(table.reads).toEqual([
      ['kv/ptr', 1n],
      ['kv/target', 2n],
    ]);
    expect(table.writes.map(([id, value]) => [id, hex(value)])).toEqual([['kv/out', hex(encode([42]))]]);
    // A value that is not a key name is a dead end: no second read.
    r.run(put('ptr', 7));
    const dead = execute(kvApp, decodeTx(makeTx(kvApp, 'follow', { key: 'ptr' })), r.state, nativeFunctions);
    expect(dead.table.outcome).toEqual(ok(null));
    expect(dead.table.dynamic).toEqual([]);
  });

  it('runs a conflict-heavy workload with cas hits and misses and dynamic reads', () => {
    const seed = 20240611;
    const txs = take(kvWorkload({ keys: 100, hotKeys: 4, conflictRate: 0.5, dynamicRate: 0.2, seed }), 4000);
    const again = take(kvWorkload({ keys: 100, hotKeys: 4, conflictRate: 0.5, dynamicRate: 0.2, seed }), 4000);
    expect(again.map((t) => hex(t.body))).toEqual(txs.map((t) => hex(t.body)));
    const state = new MemoryState();
    const counts = { casTrue: 0, casFalse: 0, dynamic: 0, hot: 0 };
    txs.forEach((raw, i) => {
      const tx = decodeTx(raw);
      const { table } = execute(kvApp, tx, state, nativeFunctions);
      expect(table.outcome.status).toBe('ok');
      state.apply(table.writes, BigInt(i + 1));
      if (tx.command === 'cas') counts[table.outcome.status === 'ok' && table.outcome.result === true ? 'casTrue' : 'casFalse']++;
      if (table.dynamic.length > 0) counts.dynamic++;
      if (tx.objects.some((id) => id.startsWith('kv/hot/'))) counts.hot++;
    });
    // The shadow map makes most cas calls right when the stream runs in order.
    expect(counts.casTrue).toBeGreaterThan(3 * counts.casFalse);
    expect(counts.casFalse).toBeGreaterThan(0);
    expect(counts.dynamic).toBeGreaterThan(200);
    expect(counts.hot).toBeGreaterThan(1500);
    const reference = executeSequentially(
      kvApp,
      txs.map((tx, i) => ({ ts: BigInt(i + 1), tx: decodeTx(tx) })),
      nativeFunctions,
    );
    expect(reference.state.digest()).toBe(state.digest());
  });
});

describe('transactions', () => {
  it('every generated transaction passes decodeTx and declares what objects() says', () => {
    const work = bankWorkload({ accounts: 5, alpha: 0, seed: 1 });
    const txs = [
      ...work.setup,
      ...Array.from({ length: 20 }, () => work.next()),
      makeTx(bank, 'stamp', { account: 1, memo: new Uint8Array([1]) }),
      makeTx(bank, 'balance', { account: 1 }),
    ];
    for (const raw of txs) {
      const tx = decodeTx(raw);
      expect(tx.objects).toEqual(bank.objects(tx.command as keyof typeof bank.commands, tx.args));
    }
    for (const raw of take(kvWorkload({ keys: 10, hotKeys: 2, conflictRate: 0.5, dynamicRate: 0.3, seed: 1 }), 200)) {
      const tx = decodeTx(raw);
      expect(tx.objects).toEqual(kvApp.objects(tx.command as keyof typeof kvApp.commands, tx.args));
      expect(tx.objects.length).toBeGreaterThan(0);
    }
    expect(decodeTx(makeTx(bank, 'transfer', { from: 3, to: 3, amount: 1, nonce: 0 })).objects).toEqual([accountId(3)]);
    // Every transfer's objects are its valid accounts, in order, each once, whatever the arguments.
    const values: unknown[] = [0, -0, 3, 7, -1, 1.5, '3', null, undefined, 2 ** 53];
    for (const from of values) {
      for (const to of values) {
        const valid = [from, to].filter((v): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0);
        const expected = [...new Set(valid.map(accountId))];
        expect(bank.objects('transfer', { from, to }), `from ${String(from)}, to ${String(to)}`).toEqual(expected);
      }
    }
  });

  it('bankBench transfers commit in order and keep hot accounts at the conflict rate', () => {
    const b = bankBench({ transfers: 400, conflictRate: 0.25, seed: 9, accounts: 50 });
    const r = new Runner(bank);
    expect(r.run(...b.setup).every((o) => o.status === 'ok')).toBe(true);
    const more = Array.from({ length: 100 }, () => b.stream().next());
    expect(r.run(...b.transfers, ...more).filter((o) => o.status !== 'ok')).toEqual([]);
    const hot = b.transfers.filter((t) => (decodeTx(t).args as { to: number }).to < 4).length;
    expect(hot).toBeGreaterThan(60);
    expect(hot).toBeLessThan(140);
  });
});

describe('zipf', () => {
  it('samples the exact Zipf probabilities; alpha 1.2 concentrates on rank 1, alpha 0 does not', () => {
    const n = 100;
    const draws = 200_000;
    const freq = (alpha: number) => {
      const sample = zipf(n, alpha, new Rng(7, `zipf-${alpha}`));
      const counts = new Array<number>(n).fill(0);
      for (let i = 0; i < draws; i++) {
        const k = sample();
        counts[k] = (counts[k] ?? 0) + 1;
      }
      return counts;
    };
    for (const alpha of [0, 1, 1.2]) {
      const counts = freq(alpha);
      expect(counts.reduce((a, b) => a + b, 0)).toBe(draws);
      for (const k of [0, 1, 9, 99]) {
        const p = zipfProbability(n, alpha, k);
        // Within 6 standard deviations of the binomial count, or 5 % of it: generous for a fixed seed.
        const tolerance = Math.max(6 * Math.sqrt(draws * p * (1 - p)), 0.05 * draws * p);
        expect(Math.abs((counts[k] ?? 0) - draws * p), `alpha ${alpha} index ${k}`).toBeLessThan(tolerance);
      }
    }
    expect(zipfProbability(n, 0, 0)).toBeCloseTo(0.01, 12);
    expect(zipfProbability(n, 1.2, 0)).toBeGreaterThan(0.25);
    expect(freq(1.2)[0] ?? 0).toBeGreaterThan(20 * (freq(0)[0] ?? 0));
  });

  it('rejects bad parameters and is deterministic per seed', () => {
    expect(() => zipf(0, 1, new Rng(1))).toThrow(/n must be an integer/);
    expect(() => zipf(10, -1, new Rng(1))).toThrow(/alpha must be/);
    expect(() => new Rng(-1)).toThrow(/seed must be/);
    const a = new Rng(5);
    const b = new Rng(5);
    expect(Array.from({ length: 10 }, () => a.u32())).toEqual(Array.from({ length: 10 }, () => b.u32()));
    expect(new Rng(5).u32()).not.toBe(new Rng(6).u32());
  });
});

describe('loadApp', () => {
  it('loads the built-in apps and names them when asked for another', () => {
    expect(loadApp('bank')).toBe(builtinApps.bank);
    expect(loadApp('kv')).toBe(builtinApps.kv);
    expect(() => loadApp('nope')).toThrow('unknown app "nope": the built-in apps are bank, kv');
    expect(() => loadApp('toString')).toThrow(/unknown app "toString"/);
  });
});
