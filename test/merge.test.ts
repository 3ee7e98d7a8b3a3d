// The lookup table at work: when inputs changed, the primary's re-execution takes verified
// signatures and pre-compile results from the table instead of calling the natives again.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defineApp, makeTx, type Ctx } from '../ts/app/app.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { decodeTx, type DecodedTx } from '../ts/app/tx.js';
import { builtinApps, DEMO_MINT_AUTHORITY, keyPairFromSeed } from '../ts/apps/index.js';
import { PreExecutor } from '../ts/pipeline/preexecutor.js';
import { Primary, type Applied } from '../ts/pipeline/primary.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { precompileCounters, resetPrecompileCounters } from '../ts/precompile.js';
import { Store } from '../ts/store.js';
import { tempCluster } from './helpers.js';

const bank = builtinApps.bank;
const alice = keyPairFromSeed(Buffer.alloc(32, 1));
const bob = keyPairFromSeed(Buffer.alloc(32, 2));
const tx = (t: ReturnType<typeof makeTx>): DecodedTx => decodeTx(t);

describe('merge with a lookup table', () => {
  let cluster: ReturnType<typeof tempCluster>;
  let store: NativePrimaryStore;
  let primary: Primary;
  let applied: Applied[];

  beforeEach(() => {
    cluster = tempCluster();
    store = new NativePrimaryStore(Store.create({ dir: cluster.dir, name: 'primary', secret: cluster.secret }));
    applied = [];
    primary = new Primary(bank, store, nativeFunctions, { deadlineMs: 0, onApplied: (b) => applied.push(...b) });
  });
  afterEach(() => {
    store.store.close();
    cluster.cleanup();
  });

  it('re-executes without verifying signatures again and reuses pre-compile results', async () => {
    const setup = [
      tx(makeTx(bank, 'open', { account: 1, owner: alice.publicKey })),
      tx(makeTx(bank, 'open', { account: 2, owner: bob.publicKey })),
      tx(makeTx(bank, 'mint', { account: 1, amount: 1000 }, [DEMO_MINT_AUTHORITY])),
    ];
    for (const [i, t] of setup.entries()) await primary.deliver([{ ts: BigInt(i + 1), tx: t }]);
    const pre = new PreExecutor(bank, nativeFunctions);
    pre.install(applied.map((a) => [a.ts, a.writes, a.digest]));

    const transfer = tx(makeTx(bank, 'transfer', { from: 1, to: 2, amount: 10, nonce: 0 }, [alice]));
    const stamp = tx(makeTx(bank, 'stamp', { account: 1, memo: Buffer.from('audit') }));
    const offer = (txs: DecodedTx[]) => {
      for (const [digest, table] of pre.run(txs)) {
        primary.expect(digest);
        primary.offer(digest, table, 'pre-1');
      }
    };
    offer([transfer]);
    // Ordered before each of them: a mint to bob changes acct/2, which the transfer read; a
    // transfer from alice to herself changes acct/1 (nonce) but not her balance, so the
    // stamp's pre-compile input stays the same.
    const mintBob = tx(makeTx(bank, 'mint', { account: 2, amount: 5 }, [DEMO_MINT_AUTHORITY]));
    const selfTransfer = tx(makeTx(bank, 'transfer', { from: 1, to: 1, amount: 1, nonce: 1 }, [alice]));

    await primary.deliver([{ ts: 4n, tx: mintBob }]);
    resetPrecompileCounters();
    await primary.deliver([{ ts: 5n, tx: transfer }]);
    expect(applied.at(-1)).toMatchObject({ decision: 'reexecuted', outcome: { status: 'ok' } });
    expect(precompileCounters().ed25519Verify).toBe(0);
    expect(primary.stats.authFromTables).toBe(1);

    pre.install(applied.map((a) => [a.ts, a.writes, a.digest]));
    offer([stamp]);
    await primary.deliver([{ ts: 6n, tx: selfTransfer }]);
    resetPrecompileCounters();
    await primary.deliver([{ ts: 7n, tx: stamp }]);
    expect(applied.at(-1)).toMatchObject({ decision: 'reexecuted', outcome: { status: 'ok' } });
    expect(precompileCounters().sha256).toBe(0);
    expect(primary.stats.precompilesReused).toBe(1);

    const order = [...setup, mintBob, transfer, selfTransfer, stamp].map((t, i) => ({ ts: BigInt(i + 1), tx: t }));
    const reference = executeSequentially(bank, order, nativeFunctions);
    expect(store.digest()).toBe(reference.state.digest());
    for (const a of applied) expect(a.outcome).toEqual(reference.outcomes.get(a.ts));
  });

  it('adopts a pre-execution whose inputs are unchanged, with no native call at all', async () => {
    await primary.deliver([{ ts: 1n, tx: tx(makeTx(bank, 'open', { account: 1, owner: alice.publicKey })) }]);
    await primary.deliver([{ ts: 2n, tx: tx(makeTx(bank, 'mint', { account: 1, amount: 50 }, [DEMO_MINT_AUTHORITY])) }]);
    const pre = new PreExecutor(bank, nativeFunctions);
    pre.install(applied.map((a) => [a.ts, a.writes, a.digest]));
    const transfer = tx(makeTx(bank, 'transfer', { from: 1, to: 1, amount: 5, nonce: 0 }, [alice]));
    const [[digest, table] = ['', undefined]] = pre.run([transfer]);
    if (!table) throw new Error('no result');
    primary.expect(digest);
    primary.offer(digest, table, 'pre-1');
    resetPrecompileCounters();
    await primary.deliver([{ ts: 3n, tx: transfer }]);
    expect(applied.at(-1)?.decision).toBe('adopted');
    expect(precompileCounters().total).toBe(0);
  });

  it('a transfer with a bad signature aborts and applies nothing', async () => {
    await primary.deliver([{ ts: 1n, tx: tx(makeTx(bank, 'open', { account: 1, owner: alice.publicKey })) }]);
    const before = store.digest();
    const forged = tx(makeTx(bank, 'transfer', { from: 1, to: 1, amount: 0 + 1, nonce: 0 }, [bob]));
    await primary.deliver([{ ts: 2n, tx: forged }]);
    expect(applied.at(-1)?.outcome).toEqual({ status: 'aborted', reason: 'bad signature' });
    expect(store.digest()).toBe(before);
  });

  it('a command writing an oversize value aborts with a clear reason and the primary keeps going', async () => {
    const big = defineApp({
      name: 'big',
      commands: {
        fill(ctx: Ctx, args: { bytes: number }) {
          ctx.write('blob', 'x'.repeat(args.bytes));
        },
      },
      objects: () => ['blob'],
    });
    const own = new Primary(big, store, nativeFunctions, { deadlineMs: 0, onApplied: (b) => applied.push(...b) });
    await own.deliver([
      { ts: 1n, tx: tx(makeTx(big, 'fill', { bytes: 2 << 20 })) },
      { ts: 2n, tx: tx(makeTx(big, 'fill', { bytes: 10 })) },
    ]);
    expect(applied[0]?.outcome).toEqual({ status: 'aborted', reason: 'value for blob is 2097157 bytes, over the limit of 1048576' });
    expect(applied[1]?.outcome).toEqual({ status: 'ok', result: null });
    expect(store.get(['blob'])[0]?.version).toBe(2n);
  });
});
