// The TPC-C loader's commands (clause 4.3.3.1, scaled: docs/tpcc.md). A load transaction carries
// only a range (a warehouse, a district, a span of item ids); the command generates the rows from
// a generator seeded by that range, so a body stays a few bytes however many rows it writes, and
// every member generates the same rows.
import type { Ctx } from '../app/app.js';
import {
  customerId,
  deliveryQueueId,
  DISTRICT_INITIAL_YTD,
  districtId,
  historyId,
  itemId,
  lastName,
  lastNameIndexId,
  lastNamesFor,
  lastOrderId,
  newOrderId,
  orderId,
  orderLineId,
  RowRng,
  stockId,
  WAREHOUSE_INITIAL_YTD,
  DISTRICTS,
  type Customer,
  type District,
  type History,
  type Item,
  type Order,
  type OrderLine,
  type Stock,
  type Warehouse,
  warehouseId,
} from './tpcc-schema.js';

/** Rows of one item or stock load transaction, at most. */
export const LOAD_SPAN = 1000;

/** Constant C of NURand for C_LAST at load time (clause 2.1.6); the run uses `NURAND_C_LAST_RUN`. */
export const NURAND_C_LAST_LOAD = 157;
export const NURAND_C_LAST_RUN = 223;

/** NURand(A, x, y) (clause 2.1.6) over two uniform draws from `int`. */
export function nurand(int: (lo: number, hi: number) => number, a: number, x: number, y: number, c: number): number {
  return (((int(0, a) | int(x, y)) + c) % (y - x + 1)) + x;
}

/**
 * The NURand A for a range scaled down from the specification's (A 255 for 1,000 names, 1023 for
 * 3,000 customers, 8191 for 100,000 items): the same ratio, as 2^k − 1.
 */
export function nurandA(range: number, specA: number, specRange: number): number {
  const want = Math.max(1, (specA * range) / specRange);
  return 2 ** Math.max(1, Math.round(Math.log2(want + 1))) - 1;
}

/** Undelivered orders a district starts with: the specification's last 900 of 3,000 (30 %). */
export const initialNewOrders = (customers: number): number => Math.floor((customers * 3) / 10);

function refuseExisting(ctx: Ctx, id: string, what: string): void {
  // Loading is open to any client (a benchmark app), but it never overwrites: a second load of
  // the same rows would reset balances and order ids mid-run.
  if (ctx.read(id) !== undefined) ctx.abort(`${what} is already loaded`);
}

export function loadWarehouse(ctx: Ctx, w: number): null {
  refuseExisting(ctx, warehouseId(w), `warehouse ${w}`);
  const rng = new RowRng(`warehouse/${w}`);
  const row: Warehouse = { name: rng.letters(6, 10), tax: rng.int(0, 2000), ytd: WAREHOUSE_INITIAL_YTD };
  ctx.write(warehouseId(w), row);
  return null;
}

export function loadItems(ctx: Ctx, w: number, from: number, to: number): number {
  refuseExisting(ctx, itemId(w, from), `item ${from} of warehouse ${w}`);
  // The same item rows for every warehouse's copy: seeded by the item range, not the warehouse.
  const rng = new RowRng(`items/${from}`);
  for (let i = from; i <= to; i++) {
    const row: Item = { name: rng.letters(14, 24), price: rng.int(100, 10000), data: rng.data(26, 50) };
    ctx.write(itemId(w, i), row);
  }
  return to - from + 1;
}

export function loadStock(ctx: Ctx, w: number, from: number, to: number): number {
  refuseExisting(ctx, stockId(w, from), `stock ${from} of warehouse ${w}`);
  const rng = new RowRng(`stock/${w}/${from}`);
  for (let i = from; i <= to; i++) {
    const dist = Array.from({ length: DISTRICTS }, () => rng.letters(24, 24));
    const row: Stock = { qty: rng.int(10, 100), dist, ytd: 0, orderCnt: 0, remoteCnt: 0, data: rng.data(26, 50) };
    ctx.write(stockId(w, i), row);
  }
  return to - from + 1;
}

/**
 * District d of warehouse w with its customers, their history rows and last-name index, and
 * one order per customer (a random permutation), the last 30 % of them undelivered.
 */
export function loadDistrict(ctx: Ctx, w: number, d: number, customers: number, items: number): number {
  refuseExisting(ctx, districtId(w, d), `district ${d} of warehouse ${w}`);
  const rng = new RowRng(`district/${w}/${d}`);
  const district: District = { name: rng.letters(6, 10), tax: rng.int(0, 2000), ytd: DISTRICT_INITIAL_YTD, nextOid: customers + 1 };
  ctx.write(districtId(w, d), district);

  const names = lastNamesFor(customers);
  const a = nurandA(names, 255, 1000);
  const int = (lo: number, hi: number) => rng.int(lo, hi);
  const byName = new Map<string, { c: number; first: string }[]>();
  for (let c = 1; c <= customers; c++) {
    // Every name exists (the first `names` customers take one each), so a by-name lookup of
    // the run's NURand over the same range always finds someone.
    const last = lastName(c <= names ? c - 1 : nurand(int, a, 0, names - 1, NURAND_C_LAST_LOAD));
    const row: Customer = {
      first: rng.letters(8, 16),
      middle: 'OE',
      last,
      credit: rng.int(1, 10) === 1 ? 'BC' : 'GC',
      creditLim: 5_000_000,
      discount: rng.int(0, 5000),
      balance: -1000,
      ytdPayment: 1000,
      paymentCnt: 1,
      deliveryCnt: 0,
      data: rng.letters(30, 50),
    };
    ctx.write(customerId(w, d, c), row);
    const history: History = { c, cd: d, cw: w, d, w, date: 0, amount: 1000, data: rng.letters(12, 24) };
    ctx.write(historyId(w, d, c, 1), history);
    const same = byName.get(last) ?? [];
    same.push({ c, first: row.first });
    byName.set(last, same);
  }
  for (const [last, list] of byName) {
    list.sort((x, y) => (x.first < y.first ? -1 : x.first > y.first ? 1 : x.c - y.c));
    ctx.write(
      lastNameIndexId(w, d, last),
      list.map((e) => e.c),
    );
  }

  // O_C_ID is a random permutation of the customers (Fisher-Yates).
  const perm = Array.from({ length: customers }, (_, k) => k + 1);
  for (let k = customers - 1; k > 0; k--) {
    const j = rng.int(0, k);
    [perm[k], perm[j]] = [perm[j] ?? 0, perm[k] ?? 0];
  }
  const firstNew = customers - initialNewOrders(customers) + 1;
  for (let o = 1; o <= customers; o++) {
    const c = perm[o - 1] ?? 1;
    const delivered = o < firstNew;
    const order: Order = { c, entryD: 0, carrier: delivered ? rng.int(1, 10) : null, olCnt: rng.int(5, 15), allLocal: true };
    ctx.write(orderId(w, d, o), order);
    ctx.write(lastOrderId(w, d, c), o);
    for (let n = 1; n <= order.olCnt; n++) {
      const line: OrderLine = {
        i: rng.int(1, items),
        supplyW: w,
        deliveryD: delivered ? 0 : null,
        qty: 5,
        amount: delivered ? 0 : rng.int(1, 999_999),
        distInfo: rng.letters(24, 24),
      };
      ctx.write(orderLineId(w, d, o, n), line);
    }
    if (!delivered) ctx.write(newOrderId(w, d, o), true);
  }
  ctx.write(deliveryQueueId(w, d), firstNew);
  return customers;
}
