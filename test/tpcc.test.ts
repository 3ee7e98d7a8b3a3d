// The built-in TPC-C app: each transaction's exact effects on a small loaded state, rollbacks
// and bad arguments, the generator's mix, and the consistency conditions 1–4 after a run (and
// failing on corrupted states).
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { decode, encode } from '../ts/app/codec.js';
import type { Outcome } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { MemoryState } from '../ts/app/state.js';
import { decodeTx, type Transaction } from '../ts/app/tx.js';
import { formatConsistency, memorySnapshot, tpccConsistency, type Snapshot } from '../ts/apps/tpcc-check.js';
import {
  customerId,
  deliveryQueueId,
  districtId,
  historyId,
  itemId,
  lastNameIndexId,
  lastOrderId,
  newOrderId,
  orderId,
  orderLineId,
  stockId,
  tpccPartition,
  warehouseId,
  type Customer,
  type District,
  type History,
  type Item,
  type Order,
  type OrderLine,
  type Stock,
  type Warehouse,
} from '../ts/apps/tpcc-schema.js';
import { TPCC_KINDS, TPCC_MIX, TpccMix, tpccLoad, type TpccKind, type TpccScale } from '../ts/apps/tpcc-workload.js';
import { tpccApp } from '../ts/apps/tpcc.js';
import { loadTpcc, runTpccMix, storeSnapshot, type Submit } from '../ts/apps/tpcc-run.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { HeronCluster } from '../ts/heron/cluster.js';
import { nextDigest, DIGEST_ZERO } from '../ts/heron/digest.js';
import { destinations, partitionerOf } from '../ts/app/partition.js';
import { execute } from '../ts/app/exec.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { tempCluster } from './helpers.js';

const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
console.log(`tpcc test: seed ${seed} (REMORA_SEED to replay)`);

const SCALE: TpccScale = { warehouses: 2, customers: 30, items: 100 };

/** Runs transactions on `state` in order, continuing its timestamps. */
class Runner {
  readonly state = new MemoryState();
  private ts = 0n;

  run(...txs: Transaction[]): Outcome[] {
    const entries = txs.map((tx) => ({ ts: ++this.ts, tx: decodeTx(tx) }));
    const { outcomes } = executeSequentially(tpccApp, entries, nativeFunctions, this.state);
    return entries.map((e) => outcomes.get(e.ts) ?? { status: 'aborted', reason: 'missing outcome' });
  }

  one(tx: Transaction): Outcome {
    const [o] = this.run(tx);
    if (o === undefined) throw new Error('no outcome');
    return o;
  }

  get<T>(id: string): T {
    const v = this.state.read(id).value;
    if (v === undefined) throw new Error(`${id} does not exist`);
    return decode(v) as T;
  }

  has(id: string): boolean {
    return this.state.read(id).value !== undefined;
  }
}

function loaded(scale = SCALE): Runner {
  const r = new Runner();
  const outcomes = r.run(...tpccLoad(scale));
  expect(outcomes.filter((o) => o.status !== 'ok')).toEqual([]);
  return r;
}

const ok = (result: unknown): Outcome => ({ status: 'ok', result }) as Outcome;
const aborted = (reason: string): Outcome => ({ status: 'aborted', reason });

describe('tpcc: load', () => {
  it('loads W warehouses with the scaled cardinalities, consistent, and refuses a second load', () => {
    const r = loaded();
    const ids = [...r.state.objects.keys()];
    const count = (re: RegExp) => ids.filter((id) => re.test(id)).length;
    expect(count(/^t\/\d+\/w$/)).toBe(2);
    expect(count(/^t\/\d+\/d\/\d+$/)).toBe(20);
    expect(count(/^t\/\d+\/c\/\d+\/\d+$/)).toBe(2 * 10 * 30);
    expect(count(/^t\/\d+\/i\/\d+$/)).toBe(2 * 100);
    expect(count(/^t\/\d+\/s\/\d+$/)).toBe(2 * 100);
    expect(count(/^t\/\d+\/o\/\d+\/\d+$/)).toBe(2 * 10 * 30);
    // The last 30 % of each district's orders are undelivered.
    expect(count(/^t\/\d+\/no\/\d+\/\d+$/)).toBe(2 * 10 * 9);
    expect(r.get<District>(districtId(2, 7)).nextOid).toBe(31);
    expect(r.get<number>(deliveryQueueId(2, 7))).toBe(22);
    expect(r.get<Warehouse>(warehouseId(1)).ytd).toBe(30_000_000);
    // Every warehouse's copy of an item is the same row.
    expect(r.get<Item>(itemId(1, 42))).toEqual(r.get<Item>(itemId(2, 42)));
    // Each customer's last order is the order that names it.
    const o = r.get<number>(lastOrderId(1, 3, 17));
    expect(r.get<Order>(orderId(1, 3, o)).c).toBe(17);
    expect(tpccConsistency(memorySnapshot(r.state)).map((c) => c.ok)).toEqual([true, true, true, true]);

    const before = r.state.digest();
    expect(r.run(...tpccLoad({ ...SCALE, warehouses: 1 })).map((o) => (o.status === 'aborted' ? o.reason : 'ok'))).toEqual([
      'warehouse 1 is already loaded',
      'item 1 of warehouse 1 is already loaded',
      'stock 1 of warehouse 1 is already loaded',
      ...Array.from({ length: 10 }, (_, k) => `district ${k + 1} of warehouse 1 is already loaded`),
    ]);
    expect(r.state.digest()).toBe(before);
  });

  it('keys every row by its warehouse: warehouse w lives in partition (w - 1) mod P', () => {
    expect(tpccPartition(stockId(5, 9), 2)).toBe(0);
    expect(tpccPartition(orderLineId(6, 1, 2, 3), 2)).toBe(1);
    expect(tpccPartition(customerId(3, 1, 1), 3)).toBe(2);
    expect(tpccPartition('kv/x', 4)).toBeLessThan(4);
  });
});

describe('tpcc: transactions', () => {
  it('New-Order: takes D_NEXT_O_ID, writes the order, its lines and new-order row, updates stock (remote too)', () => {
    const r = loaded();
    const [s1, s2] = [r.get<Stock>(stockId(1, 1)), r.get<Stock>(stockId(2, 2))];
    const [i1, i2] = [r.get<Item>(itemId(1, 1)), r.get<Item>(itemId(1, 2))];
    const [wh, dist, cust] = [r.get<Warehouse>(warehouseId(1)), r.get<District>(districtId(1, 4)), r.get<Customer>(customerId(1, 4, 5))];
    const tx = makeTx(tpccApp, 'newOrder', {
      w: 1,
      d: 4,
      c: 5,
      lines: [
        [1, 1, 7],
        [2, 2, 3],
      ],
      date: 77,
    });
    expect(decodeTx(tx).objects).toEqual([
      warehouseId(1),
      districtId(1, 4),
      customerId(1, 4, 5),
      lastOrderId(1, 4, 5),
      itemId(1, 1),
      stockId(1, 1),
      itemId(1, 2),
      stockId(2, 2),
    ]);
    const sum = 7 * i1.price + 3 * i2.price;
    const total = Math.round((sum * (10_000 - cust.discount) * (10_000 + wh.tax + dist.tax)) / 1e8);
    const bg = (i: Item, s: Stock) => (i.data.includes('ORIGINAL') && s.data.includes('ORIGINAL') ? 'B' : 'G');
    expect(r.one(tx)).toEqual(ok({ o: 31, total, brandGeneric: bg(i1, s1) + bg(i2, s2) }));
    expect(r.get<District>(districtId(1, 4))).toEqual({ ...dist, nextOid: 32 });
    expect(r.get<Order>(orderId(1, 4, 31))).toEqual({ c: 5, entryD: 77, carrier: null, olCnt: 2, allLocal: false });
    expect(r.get<boolean>(newOrderId(1, 4, 31))).toBe(true);
    expect(r.get<number>(lastOrderId(1, 4, 5))).toBe(31);
    expect(r.get<OrderLine>(orderLineId(1, 4, 31, 1))).toEqual({ i: 1, supplyW: 1, deliveryD: null, qty: 7, amount: 7 * i1.price, distInfo: s1.dist[3] });
    expect(r.get<OrderLine>(orderLineId(1, 4, 31, 2))).toEqual({ i: 2, supplyW: 2, deliveryD: null, qty: 3, amount: 3 * i2.price, distInfo: s2.dist[3] });
    const left = (q: number, n: number) => (q >= n + 10 ? q - n : q - n + 91);
    expect(r.get<Stock>(stockId(1, 1))).toEqual({ ...s1, qty: left(s1.qty, 7), ytd: 7, orderCnt: 1, remoteCnt: 0 });
    expect(r.get<Stock>(stockId(2, 2))).toEqual({ ...s2, qty: left(s2.qty, 3), ytd: 3, orderCnt: 1, remoteCnt: 1 });
    expect(tpccConsistency(memorySnapshot(r.state)).every((c) => c.ok)).toBe(true);
  });

  it('New-Order rollback (an unused item) leaves no trace', () => {
    const r = loaded();
    const before = r.state.digest();
    const tx = makeTx(tpccApp, 'newOrder', {
      w: 2,
      d: 1,
      c: 1,
      lines: [
        [3, 2, 1],
        [101, 2, 1],
      ],
      date: 1,
    });
    expect(r.one(tx)).toEqual(aborted('rollback: item 101 is not a valid item (order 31, line 2)'));
    expect(r.state.digest()).toBe(before);
    expect(r.has(orderId(2, 1, 31))).toBe(false);
  });

  it('Payment by id and by last name (the middle one by first name), remote customer, BC data, history row', () => {
    const r = loaded();
    const [wh, dist] = [r.get<Warehouse>(warehouseId(1)), r.get<District>(districtId(1, 2))];
    const c9 = r.get<Customer>(customerId(2, 5, 9));
    expect(r.one(makeTx(tpccApp, 'payment', { w: 1, d: 2, cw: 2, cd: 5, c: 9, amount: 12_345, date: 5 }))).toEqual(
      ok({ c: 9, balance: c9.balance - 12_345, credit: c9.credit }),
    );
    expect(r.get<Warehouse>(warehouseId(1)).ytd).toBe(wh.ytd + 12_345);
    expect(r.get<District>(districtId(1, 2)).ytd).toBe(dist.ytd + 12_345);
    const data = c9.credit === 'BC' ? `9 5 2 2 1 12345|${c9.data}`.slice(0, 500) : c9.data;
    expect(r.get<Customer>(customerId(2, 5, 9))).toEqual({ ...c9, balance: c9.balance - 12_345, ytdPayment: 1000 + 12_345, paymentCnt: 2, data });
    expect(r.get<History>(historyId(2, 5, 9, 2))).toEqual({ c: 9, cd: 5, cw: 2, d: 2, w: 1, date: 5, amount: 12_345, data: `${wh.name}    ${dist.name}` });

    // By last name: a name several customers share picks the ⌈n/2⌉-th by first name.
    const ids = [...r.state.objects.keys()].filter((id) => id.startsWith('t/1/cl/3/'));
    const [shared, list] = ids.map((id) => [id.slice('t/1/cl/3/'.length), r.get<number[]>(id)] as const).find(([, l]) => l.length >= 2) ?? [];
    if (shared === undefined || list === undefined) throw new Error('no shared last name in district 3');
    const firsts = list.map((c) => r.get<Customer>(customerId(1, 3, c)).first);
    expect(firsts).toEqual([...firsts].sort());
    const chosen = list[Math.ceil(list.length / 2) - 1] ?? 0;
    const before = r.get<Customer>(customerId(1, 3, chosen));
    const tx = makeTx(tpccApp, 'payment', { w: 1, d: 3, cw: 1, cd: 3, last: shared, amount: 100, date: 6 });
    expect(decodeTx(tx).objects).toEqual([warehouseId(1), districtId(1, 3), lastNameIndexId(1, 3, shared)]);
    expect(r.one(tx)).toEqual(ok({ c: chosen, balance: before.balance - 100, credit: before.credit }));
    expect(r.one(makeTx(tpccApp, 'payment', { w: 1, d: 3, cw: 1, cd: 3, last: 'NOBODY', amount: 100, date: 7 }))).toEqual(
      aborted('no customer named NOBODY in district 3 of warehouse 1'),
    );
    expect(tpccConsistency(memorySnapshot(r.state)).every((c) => c.ok)).toBe(true);
  });

  it('Order-Status: the customer and its most recent order with every line', () => {
    const r = loaded();
    r.one(
      makeTx(tpccApp, 'newOrder', {
        w: 1,
        d: 1,
        c: 3,
        lines: [
          [10, 1, 2],
          [11, 1, 4],
        ],
        date: 9,
      }),
    );
    const cust = r.get<Customer>(customerId(1, 1, 3));
    const amount = (i: number, q: number) => q * r.get<Item>(itemId(1, i)).price;
    expect(r.one(makeTx(tpccApp, 'orderStatus', { w: 1, d: 1, c: 3, ref: 1 }))).toEqual(
      ok({
        c: 3,
        first: cust.first,
        last: cust.last,
        balance: cust.balance,
        o: 31,
        entryD: 9,
        carrier: null,
        lines: [
          [10, 1, 2, amount(10, 2), null],
          [11, 1, 4, amount(11, 4), null],
        ],
      }),
    );
    const byName = r.one(makeTx(tpccApp, 'orderStatus', { w: 1, d: 1, last: cust.last, ref: 2 }));
    expect(byName.status).toBe('ok');
  });

  it("Delivery: each district's oldest new order, carrier, line dates, customer balance; an empty district is skipped", () => {
    const r = loaded();
    const order = r.get<Order>(orderId(1, 6, 22));
    const lines = Array.from({ length: order.olCnt }, (_, n) => r.get<OrderLine>(orderLineId(1, 6, 22, n + 1)));
    const cust = r.get<Customer>(customerId(1, 6, order.c));
    expect(r.one(makeTx(tpccApp, 'delivery', { w: 1, carrier: 4, date: 50 }))).toEqual(ok(Array(10).fill(22)));
    expect(r.has(newOrderId(1, 6, 22))).toBe(false);
    expect(r.get<number>(deliveryQueueId(1, 6))).toBe(23);
    expect(r.get<Order>(orderId(1, 6, 22))).toEqual({ ...order, carrier: 4 });
    lines.forEach((l, n) => expect(r.get<OrderLine>(orderLineId(1, 6, 22, n + 1))).toEqual({ ...l, deliveryD: 50 }));
    const sum = lines.reduce((s, l) => s + l.amount, 0);
    expect(r.get<Customer>(customerId(1, 6, order.c))).toEqual({ ...cust, balance: cust.balance + sum, deliveryCnt: 1 });
    // Eight more empty the queues; the tenth finds none in any district, and a New-Order refills one.
    for (let k = 0; k < 8; k++) r.one(makeTx(tpccApp, 'delivery', { w: 1, carrier: 1, date: 51 + k }));
    expect(r.one(makeTx(tpccApp, 'delivery', { w: 1, carrier: 1, date: 60 }))).toEqual(ok(Array(10).fill(null)));
    r.one(makeTx(tpccApp, 'newOrder', { w: 1, d: 2, c: 1, lines: [[1, 1, 1]], date: 61 }));
    expect(r.one(makeTx(tpccApp, 'delivery', { w: 1, carrier: 1, date: 62 }))).toEqual(ok([null, 31, ...Array(8).fill(null)]));
    expect(tpccConsistency(memorySnapshot(r.state)).every((c) => c.ok)).toBe(true);
  });

  it('Stock-Level: distinct items of the last 20 orders below the threshold', () => {
    const r = loaded();
    const items = new Set<number>();
    for (let o = 11; o <= 30; o++) {
      const { olCnt } = r.get<Order>(orderId(2, 8, o));
      for (let n = 1; n <= olCnt; n++) items.add(r.get<OrderLine>(orderLineId(2, 8, o, n)).i);
    }
    for (const threshold of [10, 15, 20]) {
      const low = [...items].filter((i) => r.get<Stock>(stockId(2, i)).qty < threshold).length;
      expect(r.one(makeTx(tpccApp, 'stockLevel', { w: 2, d: 8, threshold, ref: threshold }))).toEqual(ok(low));
    }
  });

  it('aborts bad arguments with a reason, and declares nothing for them', () => {
    const r = loaded();
    const before = r.state.digest();
    const cases: [string, unknown, string][] = [
      ['newOrder', 7, 'arguments must be a map'],
      ['newOrder', { w: 0, d: 1, c: 1, lines: [[1, 1, 1]], date: 0 }, 'w must be an integer from 1 to 10000'],
      ['newOrder', { w: 1, d: 11, c: 1, lines: [[1, 1, 1]], date: 0 }, 'd must be an integer from 1 to 10'],
      ['newOrder', { w: 1, d: 1, c: 1, lines: [], date: 0 }, 'lines must be an array of 1 to 15 [item, supplying warehouse, quantity]'],
      ['newOrder', { w: 1, d: 1, c: 1, lines: [[1, 1, 11]], date: 0 }, 'lines[0] quantity must be an integer from 1 to 10'],
      ['newOrder', { w: 1, d: 1, c: 1, lines: [[1, 1]], date: 0 }, 'lines[0] must be [item, supplying warehouse, quantity]'],
      ['newOrder', { w: 1, d: 1, c: 1.5, lines: [[1, 1, 1]], date: 0 }, 'c must be an integer from 1 to 3000'],
      ['payment', { w: 1, d: 1, cw: 1, cd: 1, c: 1, last: 'BAR', amount: 100, date: 0 }, 'give exactly one of c (customer id) and last (customer last name)'],
      ['payment', { w: 1, d: 1, cw: 1, cd: 1, last: 'bar', amount: 100, date: 0 }, 'last must be 1 to 15 upper-case letters'],
      ['payment', { w: 1, d: 1, cw: 1, cd: 1, c: 1, amount: 99, date: 0 }, 'amount (cents) must be an integer from 100 to 500000'],
      ['orderStatus', { w: 1, d: 1, ref: 0 }, 'give exactly one of c (customer id) and last (customer last name)'],
      ['delivery', { w: 1, carrier: 0, date: 0 }, 'carrier must be an integer from 1 to 10'],
      ['stockLevel', { w: 1, d: 1, threshold: 9 }, 'threshold must be an integer from 10 to 20'],
      ['loadItems', { w: 1, from: 1, to: 1001 }, 'to must be an integer from 1 to 1000'],
      ['loadDistrict', { w: 1, d: 1, customers: 3001, items: 10 }, 'customers must be an integer from 3 to 3000'],
    ];
    for (const [command, args, reason] of cases) {
      expect(tpccApp.objects(command as never, args), command).toEqual([]);
      const tx = { body: encode(['remora.tx.v1', command, args as never, tpccApp.objects(command as never, args)]), auth: [] };
      expect(r.one(tx), `${command} ${JSON.stringify(args)}`).toEqual(aborted(reason));
    }
    // Well-formed, but naming a warehouse that was never loaded.
    expect(r.one(makeTx(tpccApp, 'newOrder', { w: 3, d: 1, c: 1, lines: [[1, 1, 1]], date: 0 }))).toEqual(aborted('warehouse 3 does not exist'));
    expect(r.state.digest()).toBe(before);
  });
});

describe('tpcc: workload', () => {
  it("generates the specification's mix and input rates over 10,000 transactions", () => {
    const mix = new TpccMix({ warehouses: 4, customers: 30, items: 1000 }, seed);
    const counts = Object.fromEntries(TPCC_KINDS.map((k) => [k, 0])) as Record<TpccKind, number>;
    let [lines, remoteLines, rollbacks, payments, remotePayments, byName, statusByName] = [0, 0, 0, 0, 0, 0, 0];
    const N = 10_000;
    for (let k = 0; k < N; k++) {
      const { kind, tx } = mix.next();
      counts[kind]++;
      const a = decodeTx(tx).args as Record<string, unknown>;
      if (kind === 'newOrder') {
        const ls = a['lines'] as [number, number, number][];
        expect(ls.length).toBeGreaterThanOrEqual(5);
        expect(ls.length).toBeLessThanOrEqual(15);
        lines += ls.length;
        remoteLines += ls.filter(([, sw]) => sw !== a['w']).length;
        if (ls.some(([i]) => i === 1001)) rollbacks++;
      } else if (kind === 'payment') {
        payments++;
        if (a['cw'] !== a['w']) remotePayments++;
        if (a['last'] !== undefined) byName++;
      } else if (kind === 'orderStatus' && a['last'] !== undefined) statusByName++;
    }
    console.log(
      `tpcc mix (seed ${seed}): ${JSON.stringify(counts)}; lines ${lines}, remote ${remoteLines}, rollbacks ${rollbacks}, payments ${payments} (remote ${remotePayments}, by name ${byName})`,
    );
    // Within 5 standard deviations of the binomial: fails by chance about once in 3 million.
    const near = (got: number, n: number, p: number) => expect(Math.abs(got - n * p)).toBeLessThan(5 * Math.sqrt(n * p * (1 - p)) + 1);
    for (const k of TPCC_KINDS) near(counts[k], N, TPCC_MIX[k] / 100);
    near(rollbacks, counts.newOrder, 0.01);
    near(remoteLines, lines, 0.01);
    near(remotePayments, payments, 0.15);
    near(byName, payments, 0.6);
    near(statusByName, counts.orderStatus, 0.6);
  });

  it('is reproducible from its seed', () => {
    const a = new TpccMix(SCALE, seed);
    const b = new TpccMix(SCALE, seed);
    for (let k = 0; k < 200; k++) expect(Buffer.from(a.next().tx.body).equals(Buffer.from(b.next().tx.body))).toBe(true);
  });
});

describe('tpcc: consistency conditions', () => {
  /** A copy of the state's snapshot with `edit` applied to the decoded values. */
  function edited(state: MemoryState, edit: (rows: Map<string, unknown>) => void): Snapshot {
    const rows = new Map<string, unknown>([...memorySnapshot(state)].map(([id, v]) => [id, decode(v)]));
    edit(rows);
    return [...rows].map(([id, v]) => [id, encode(v as never)] as [string, Uint8Array]);
  }

  it('hold after a sequential run of the mix, and each fails on a state corrupted for it', () => {
    const r = loaded();
    const mix = new TpccMix(SCALE, seed);
    const outcomes = r.run(...Array.from({ length: 3000 }, () => mix.next().tx));
    const failures = outcomes.filter((o) => o.status === 'aborted' && !o.reason.startsWith('rollback: '));
    expect(failures).toEqual([]);
    const good = tpccConsistency(memorySnapshot(r.state));
    expect(good.map((c) => [c.n, c.ok])).toEqual([
      [1, true],
      [2, true],
      [3, true],
      [4, true],
    ]);
    expect(formatConsistency(good)[0]).toBe('condition 1 (W_YTD = sum(D_YTD)): ok on 2 warehouses');

    const c1 = tpccConsistency(
      edited(r.state, (rows) => {
        const wh = rows.get(warehouseId(2)) as Warehouse;
        rows.set(warehouseId(2), { ...wh, ytd: wh.ytd + 1 });
      }),
    );
    expect(c1.map((c) => c.ok)).toEqual([false, true, true, true]);
    expect(formatConsistency(c1)[0]).toMatch(/^condition 1 \(W_YTD = sum\(D_YTD\)\): FAILED in 1 of 2 warehouses: warehouse 2: W_YTD \d+, sum\(D_YTD\) \d+$/);

    const c2 = tpccConsistency(
      edited(r.state, (rows) => {
        const d = rows.get(districtId(1, 5)) as District;
        rows.set(districtId(1, 5), { ...d, nextOid: d.nextOid + 1 });
      }),
    );
    expect(c2.map((c) => c.ok)).toEqual([true, false, true, true]);
    expect(c2[1]?.failures[0]).toMatch(/^district 1\/5: D_NEXT_O_ID - 1 = \d+, max\(O_ID\) = \d+, max\(NO_O_ID\) = /);

    const c3 = tpccConsistency(
      edited(r.state, (rows) => {
        // A new-order row from the middle of a district's run goes missing: the first district
        // with at least 3 left (Delivery may have drained some, depending on the seed).
        const byDistrict = new Map<string, string[]>();
        for (const id of rows.keys()) {
          const m = /^(t\/\d+\/no\/\d+)\/\d+$/.exec(id);
          if (m?.[1]) byDistrict.set(m[1], [...(byDistrict.get(m[1]) ?? []), id]);
        }
        const ids = [...byDistrict.values()].find((l) => l.length >= 3)?.sort((a, b) => Number(a.split('/')[4]) - Number(b.split('/')[4]));
        const middle = ids?.[1];
        if (middle === undefined) throw new Error('no district has 3 new orders');
        rows.delete(middle);
      }),
    );
    expect(c3.map((c) => c.ok)).toEqual([true, true, false, true]);

    const c4 = tpccConsistency(edited(r.state, (rows) => rows.delete(orderLineId(1, 1, 1, 1))));
    expect(c4.map((c) => c.ok)).toEqual([true, true, true, false]);
    expect(c4[3]?.failures).toEqual([expect.stringMatching(/^district 1\/1: sum\(O_OL_CNT\) = (\d+), order lines = \d+$/)]);
  });
});

describe('tpcc on the pipeline', () => {
  // Pre-executor processes run the compiled CLI, which resolves the built-in name to its module.
  const compiled = 'tpcc';

  it('runs the mix through 2 pre-executors: every outcome and the state equal sequential re-execution, conditions 1-4 hold', async () => {
    const tmp = tempCluster();
    const outcomes = new Map<bigint, Outcome | null>();
    let digest = '';
    try {
      const cluster = await EmbeddedCluster.start({ dir: tmp.dir, app: compiled, preExecutors: 2, log: () => undefined });
      try {
        const submit: Submit = (tx) => cluster.node.submit(tx).then((r) => (outcomes.set(r.ts, r.outcome), r));
        await loadTpcc(submit, SCALE);
        const run = await runTpccMix(submit, new TpccMix(SCALE, seed), { clients: 32, transactions: 3000, seconds: 120 });
        expect(run.submitted).toBe(3000);
        expect(run.abortReasons).toEqual([]);
        expect(run.kinds.newOrder.committed).toBeGreaterThan(0);
        const conditions = tpccConsistency(storeSnapshot(cluster.store));
        expect(formatConsistency(conditions).filter((l) => !/: ok on /.test(l))).toEqual([]);
        expect(cluster.node.stats.adopted).toBeGreaterThan(0);
        digest = cluster.store.digest();
      } finally {
        await cluster.close();
      }
      const entries = await readSequence(join(tmp.dir, 'log'));
      const reference = executeSequentially(tpccApp, entries, nativeFunctions);
      expect(reference.state.digest()).toBe(digest);
      for (const [ts, outcome] of outcomes) expect(outcome, `transaction at ${ts}`).toEqual(reference.outcomes.get(ts));
      expect(tpccConsistency(memorySnapshot(reference.state)).every((c) => c.ok)).toBe(true);
    } finally {
      tmp.cleanup();
    }
  }, 180_000);
});

describe('tpcc on Heron', () => {
  const compiled = 'tpcc';

  it.each([false, true])(
    '2 partitions x 3 replicas, one warehouse each (pre-execution %s): outcomes and every partition equal sequential execution, conditions 1-4 hold',
    async (preExecution) => {
      const tmp = tempCluster();
      const outcomes = new Map<bigint, Outcome>();
      let multi = 0;
      try {
        const cluster = await HeronCluster.start({ dir: tmp.dir, app: compiled, partitions: 2, replicas: 3, preExecution, log: () => undefined });
        let summaries: Awaited<ReturnType<HeronCluster['close']>> = [];
        try {
          const submit: Submit = (tx) =>
            cluster.submit(tx).then((r) => {
              outcomes.set(r.ts, r.outcome);
              if (r.dest.length > 1) multi++;
              return r;
            });
          await loadTpcc(submit, SCALE);
          const run = await runTpccMix(submit, new TpccMix(SCALE, seed), { clients: 8, transactions: 1000, seconds: 120 });
          expect(run.submitted).toBe(1000);
          expect(run.abortReasons).toEqual([]);
        } finally {
          summaries = await cluster.close();
        }
        expect(cluster.divergences).toEqual([]);
        expect(cluster.outcomeMismatches).toEqual([]);
        // Remote order lines and remote Payment customers span both partitions.
        expect(multi).toBeGreaterThan(0);

        // Sequential execution of the log, folded into each partition's running digest the way
        // a replica does: every transaction addressed to it, with its own writes sorted by id.
        const entries = await readSequence(join(tmp.dir, 'log'));
        const partitionOf = partitionerOf(tpccApp, 2);
        const state = new MemoryState();
        const digests = [DIGEST_ZERO, DIGEST_ZERO];
        for (const { ts, tx } of entries) {
          const { table } = execute(tpccApp, tx, state, nativeFunctions);
          state.apply(table.writes, ts);
          expect(outcomes.get(ts), `transaction at ${ts}`).toEqual(table.outcome);
          for (const h of destinations(tx.objects, partitionOf)) {
            const own = table.writes.filter(([id]) => partitionOf(id) === h).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
            digests[h] = nextDigest(digests[h] ?? DIGEST_ZERO, ts, own);
          }
        }
        expect(entries.length).toBe(outcomes.size);
        for (const s of summaries) expect(s.digest, `partition ${s.partition} replica ${s.replica}`).toBe(digests[s.partition]);
        expect(formatConsistency(tpccConsistency(memorySnapshot(state))).filter((l) => !/: ok on /.test(l))).toEqual([]);
      } finally {
        tmp.cleanup();
      }
    },
    240_000,
  );
});
