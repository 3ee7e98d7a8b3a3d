// The built-in TPC-C application (docs/tpcc.md): the five transactions of the specification
// over one object per row, partitioned by warehouse, plus the loader's commands.
//
// Each command declares what its arguments name (warehouse, district, customer or last-name
// index, items, stocks, the delivery queues); rows found through data (the order a New-Order
// creates, a customer found by last name, Delivery's oldest order, Stock-Level's last 20
// orders) are dynamic reads and writes. All of them belong to a warehouse the transaction
// declares something of, so on Heron they are local to one of its destinations.
import { defineApp, type Ctx } from '../app/app.js';
import {
  parseDelivery,
  parseLoadDistrict,
  parseLoadRange,
  parseLoadWarehouse,
  parseNewOrder,
  parseOrderStatus,
  parsePayment,
  parseStockLevel,
  type CustomerRef,
  type DeliveryArgs,
  type LoadDistrictArgs,
  type LoadRangeArgs,
  type NewOrderArgs,
  type OrderStatusArgs,
  type PaymentArgs,
  type StockLevelArgs,
} from './tpcc-args.js';
import { LOAD_SPAN, loadDistrict, loadItems, loadStock, loadWarehouse } from './tpcc-load.js';
import {
  customerId,
  deliveryQueueId,
  DISTRICTS,
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
} from './tpcc-schema.js';

/** Parsed arguments, or an abort with the parser's reason. */
const checked = <T>(ctx: Ctx, parsed: T | string): T => (typeof parsed === 'string' ? ctx.abort(parsed) : parsed);

function must<T>(ctx: Ctx, id: string, what: string): T {
  return ctx.read<T>(id) ?? ctx.abort(`${what} does not exist`);
}

/**
 * The customer a by-name request means: of the district's customers with that last name, sorted
 * by first name, the one at position ⌈n / 2⌉ (clause 2.5.2.2).
 */
function resolveCustomer(ctx: Ctx, w: number, d: number, ref: CustomerRef): number {
  if ('c' in ref) return ref.c;
  const list = ctx.read<number[]>(lastNameIndexId(w, d, ref.last)) ?? [];
  return list[Math.ceil(list.length / 2) - 1] ?? ctx.abort(`no customer named ${ref.last} in district ${d} of warehouse ${w}`);
}

/** One line of an order as Order-Status reports it: item, supplying warehouse, quantity, amount, delivery date. */
export type OrderLineView = [i: number, supplyW: number, qty: number, amount: number, deliveryD: number | null];

export type NewOrderResult = { o: number; total: number; brandGeneric: string };
export type PaymentResult = { c: number; balance: number; credit: string };
export type OrderStatusResult = {
  c: number;
  first: string;
  last: string;
  balance: number;
  o: number;
  entryD: number;
  carrier: number | null;
  lines: OrderLineView[];
};

function newOrder(ctx: Ctx, raw: NewOrderArgs): NewOrderResult {
  const { w, d, c, lines, date } = checked(ctx, parseNewOrder(raw));
  const wh = must<Warehouse>(ctx, warehouseId(w), `warehouse ${w}`);
  const dist = must<District>(ctx, districtId(w, d), `district ${d} of warehouse ${w}`);
  const cust = must<Customer>(ctx, customerId(w, d, c), `customer ${c} of district ${d}, warehouse ${w}`);
  const o = dist.nextOid;
  ctx.write(districtId(w, d), { ...dist, nextOid: o + 1 });
  const order: Order = { c, entryD: date, carrier: null, olCnt: lines.length, allLocal: lines.every(([, sw]) => sw === w) };
  ctx.write(orderId(w, d, o), order);
  ctx.write(newOrderId(w, d, o), true);
  ctx.write(lastOrderId(w, d, c), o);
  let sum = 0;
  let brandGeneric = '';
  lines.forEach(([i, sw, qty], k) => {
    // The specification's 1 % rollback: an unused item id, found here, undoes everything.
    const it = ctx.read<Item>(itemId(w, i)) ?? ctx.abort(`rollback: item ${i} is not a valid item (order ${o}, line ${k + 1})`);
    const stock = must<Stock>(ctx, stockId(sw, i), `stock of item ${i} in warehouse ${sw}`);
    const qtyLeft = stock.qty >= qty + 10 ? stock.qty - qty : stock.qty - qty + 91;
    ctx.write(stockId(sw, i), {
      ...stock,
      qty: qtyLeft,
      ytd: stock.ytd + qty,
      orderCnt: stock.orderCnt + 1,
      remoteCnt: stock.remoteCnt + (sw === w ? 0 : 1),
    });
    const amount = qty * it.price;
    sum += amount;
    const line: OrderLine = { i, supplyW: sw, deliveryD: null, qty, amount, distInfo: stock.dist[d - 1] ?? '' };
    ctx.write(orderLineId(w, d, o, k + 1), line);
    brandGeneric += it.data.includes('ORIGINAL') && stock.data.includes('ORIGINAL') ? 'B' : 'G';
  });
  // Exact in doubles: sum ≤ 1.5e6 cents, the factors ≤ 1e4 and 1.4e4, so the product < 2^53.
  const total = Math.round((sum * (10_000 - cust.discount) * (10_000 + wh.tax + dist.tax)) / 1e8);
  return { o, total, brandGeneric };
}

function payment(ctx: Ctx, raw: PaymentArgs): PaymentResult {
  const a = checked(ctx, parsePayment(raw));
  const { w, d, cw, cd, amount, date } = a;
  const wh = must<Warehouse>(ctx, warehouseId(w), `warehouse ${w}`);
  ctx.write(warehouseId(w), { ...wh, ytd: wh.ytd + amount });
  const dist = must<District>(ctx, districtId(w, d), `district ${d} of warehouse ${w}`);
  ctx.write(districtId(w, d), { ...dist, ytd: dist.ytd + amount });
  const c = resolveCustomer(ctx, cw, cd, a);
  const cust = must<Customer>(ctx, customerId(cw, cd, c), `customer ${c} of district ${cd}, warehouse ${cw}`);
  const paymentCnt = cust.paymentCnt + 1;
  const data = cust.credit === 'BC' ? `${c} ${cd} ${cw} ${d} ${w} ${amount}|${cust.data}`.slice(0, 500) : cust.data;
  const balance = cust.balance - amount;
  ctx.write(customerId(cw, cd, c), { ...cust, balance, ytdPayment: cust.ytdPayment + amount, paymentCnt, data });
  // Keyed by the customer's payment count: HISTORY has no key of its own, and this one is unique.
  const history: History = { c, cd, cw, d, w, date, amount, data: `${wh.name}    ${dist.name}` };
  ctx.write(historyId(cw, cd, c, paymentCnt), history);
  return { c, balance, credit: cust.credit };
}

function orderStatus(ctx: Ctx, raw: OrderStatusArgs): OrderStatusResult {
  const a = checked(ctx, parseOrderStatus(raw));
  const { w, d } = a;
  const c = resolveCustomer(ctx, w, d, a);
  const cust = must<Customer>(ctx, customerId(w, d, c), `customer ${c} of district ${d}, warehouse ${w}`);
  const o = ctx.read<number>(lastOrderId(w, d, c)) ?? ctx.abort(`customer ${c} of district ${d}, warehouse ${w} has no order`);
  const order = must<Order>(ctx, orderId(w, d, o), `order ${o} of district ${d}, warehouse ${w}`);
  const lines: OrderLineView[] = [];
  for (let n = 1; n <= order.olCnt; n++) {
    const l = must<OrderLine>(ctx, orderLineId(w, d, o, n), `line ${n} of order ${o}`);
    lines.push([l.i, l.supplyW, l.qty, l.amount, l.deliveryD]);
  }
  return { c, first: cust.first, last: cust.last, balance: cust.balance, o, entryD: order.entryD, carrier: order.carrier, lines };
}

/**
 * Delivers the oldest undelivered order of each district (clause 2.7.4), all ten in one
 * transaction; a district with none is skipped. Returns the order delivered per district
 * (null: skipped).
 */
function delivery(ctx: Ctx, raw: DeliveryArgs): (number | null)[] {
  const { w, carrier, date } = checked(ctx, parseDelivery(raw));
  const delivered: (number | null)[] = [];
  for (let d = 1; d <= DISTRICTS; d++) {
    const o = must<number>(ctx, deliveryQueueId(w, d), `the delivery queue of district ${d}, warehouse ${w}`);
    // New orders are dense from the queue head to D_NEXT_O_ID − 1, so the head's row is the
    // oldest one, and its absence means there is none.
    if (ctx.read(newOrderId(w, d, o)) === undefined) {
      delivered.push(null);
      continue;
    }
    ctx.delete(newOrderId(w, d, o));
    ctx.write(deliveryQueueId(w, d), o + 1);
    const order = must<Order>(ctx, orderId(w, d, o), `order ${o} of district ${d}, warehouse ${w}`);
    ctx.write(orderId(w, d, o), { ...order, carrier });
    let sum = 0;
    for (let n = 1; n <= order.olCnt; n++) {
      const line = must<OrderLine>(ctx, orderLineId(w, d, o, n), `line ${n} of order ${o}`);
      sum += line.amount;
      ctx.write(orderLineId(w, d, o, n), { ...line, deliveryD: date });
    }
    const cust = must<Customer>(ctx, customerId(w, d, order.c), `customer ${order.c} of district ${d}, warehouse ${w}`);
    ctx.write(customerId(w, d, order.c), { ...cust, balance: cust.balance + sum, deliveryCnt: cust.deliveryCnt + 1 });
    delivered.push(o);
  }
  return delivered;
}

/** How many distinct items of the district's last 20 orders have stock below `threshold` (clause 2.8.2.2). */
function stockLevel(ctx: Ctx, raw: StockLevelArgs): number {
  const { w, d, threshold } = checked(ctx, parseStockLevel(raw));
  const { nextOid } = must<District>(ctx, districtId(w, d), `district ${d} of warehouse ${w}`);
  const items = new Set<number>();
  for (let o = Math.max(1, nextOid - 20); o < nextOid; o++) {
    const order = ctx.read<Order>(orderId(w, d, o));
    for (let n = 1; n <= (order?.olCnt ?? 0); n++) {
      const line = ctx.read<OrderLine>(orderLineId(w, d, o, n));
      if (line) items.add(line.i);
    }
  }
  let low = 0;
  for (const i of items) if ((ctx.read<Stock>(stockId(w, i))?.qty ?? threshold) < threshold) low++;
  return low;
}

/** What each command declares, or [] for arguments the command will refuse. */
function objectsOf(command: string, args: unknown): string[] {
  switch (command) {
    case 'newOrder': {
      const a = parseNewOrder(args);
      if (typeof a === 'string') return [];
      const ids = [warehouseId(a.w), districtId(a.w, a.d), customerId(a.w, a.d, a.c), lastOrderId(a.w, a.d, a.c)];
      for (const [i, sw] of a.lines) ids.push(itemId(a.w, i), stockId(sw, i));
      return [...new Set(ids)];
    }
    case 'payment': {
      const a = parsePayment(args);
      if (typeof a === 'string') return [];
      const customer = 'c' in a ? customerId(a.cw, a.cd, a.c) : lastNameIndexId(a.cw, a.cd, a.last);
      return [warehouseId(a.w), districtId(a.w, a.d), customer];
    }
    case 'orderStatus': {
      const a = parseOrderStatus(args);
      if (typeof a === 'string') return [];
      return 'c' in a ? [customerId(a.w, a.d, a.c), lastOrderId(a.w, a.d, a.c)] : [lastNameIndexId(a.w, a.d, a.last)];
    }
    case 'delivery': {
      const a = parseDelivery(args);
      return typeof a === 'string' ? [] : Array.from({ length: DISTRICTS }, (_, k) => deliveryQueueId(a.w, k + 1));
    }
    case 'stockLevel': {
      const a = parseStockLevel(args);
      return typeof a === 'string' ? [] : [districtId(a.w, a.d)];
    }
    // A load transaction declares one row of what it writes: enough to route it, and on Heron
    // to address it to its warehouse's partition.
    case 'loadWarehouse': {
      const a = parseLoadWarehouse(args);
      return typeof a === 'string' ? [] : [warehouseId(a.w)];
    }
    case 'loadItems': {
      const a = parseLoadRange(args, LOAD_SPAN);
      return typeof a === 'string' ? [] : [itemId(a.w, a.from)];
    }
    case 'loadStock': {
      const a = parseLoadRange(args, LOAD_SPAN);
      return typeof a === 'string' ? [] : [stockId(a.w, a.from)];
    }
    case 'loadDistrict': {
      const a = parseLoadDistrict(args);
      return typeof a === 'string' ? [] : [districtId(a.w, a.d)];
    }
    default:
      return [];
  }
}

export const tpccApp = defineApp({
  name: 'tpcc',
  commands: {
    newOrder,
    payment,
    orderStatus,
    delivery,
    stockLevel,
    loadWarehouse(ctx: Ctx, raw: { w: number }): null {
      return loadWarehouse(ctx, checked(ctx, parseLoadWarehouse(raw)).w);
    },
    loadItems(ctx: Ctx, raw: LoadRangeArgs): number {
      const { w, from, to } = checked(ctx, parseLoadRange(raw, LOAD_SPAN));
      return loadItems(ctx, w, from, to);
    },
    loadStock(ctx: Ctx, raw: LoadRangeArgs): number {
      const { w, from, to } = checked(ctx, parseLoadRange(raw, LOAD_SPAN));
      return loadStock(ctx, w, from, to);
    },
    loadDistrict(ctx: Ctx, raw: LoadDistrictArgs): number {
      const { w, d, customers, items } = checked(ctx, parseLoadDistrict(raw));
      return loadDistrict(ctx, w, d, customers, items);
    },
  },
  partition: tpccPartition,
  objects: objectsOf,
});

export type TpccApp = typeof tpccApp;
