// Checking TPC-C's command arguments. They come from untrusted clients, and both `objects()`
// (which must not throw) and the commands (which abort with the reason) need the same verdict,
// so each parser returns the parsed arguments or the reason as a string.
import { DISTRICTS, MAX_CUSTOMERS, MAX_ITEMS, MAX_ORDER_LINES, MAX_WAREHOUSES } from './tpcc-schema.js';

type Raw = Record<string, unknown>;

/** One New-Order line: item id, supplying warehouse, quantity. */
export type OrderLineArg = [i: number, supplyW: number, qty: number];

export type NewOrderArgs = { w: number; d: number; c: number; lines: OrderLineArg[]; date: number };
/** A customer chosen by id or, 60 % of the time in the mix, by last name. */
export type CustomerRef = { c: number } | { last: string };
export type PaymentArgs = { w: number; d: number; cw: number; cd: number; amount: number; date: number } & CustomerRef;
export type OrderStatusArgs = { w: number; d: number; ref: number } & CustomerRef;
export type DeliveryArgs = { w: number; carrier: number; date: number };
export type StockLevelArgs = { w: number; d: number; threshold: number; ref: number };

/** Thrown only inside this module, to carry a reason out of nested checks. */
class Bad extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

const asRaw = (args: unknown): Raw => {
  if (typeof args !== 'object' || args === null || Array.isArray(args) || args instanceof Uint8Array) throw new Bad('arguments must be a map');
  return args as Raw;
};

function int(v: unknown, name: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < lo || v > hi) {
    throw new Bad(`${name} must be an integer from ${lo} to ${hi}`);
  }
  return v;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const warehouse = (v: unknown, name = 'w') => int(v, name, 1, MAX_WAREHOUSES);
const district = (v: unknown, name = 'd') => int(v, name, 1, DISTRICTS);
const customer = (v: unknown, name = 'c') => int(v, name, 1, MAX_CUSTOMERS);
const item = (v: unknown, name: string) => int(v, name, 1, MAX_ITEMS + 1);

/** C_LAST: one to three of the ten syllables, upper case, at most 15 letters. */
const LAST_NAME = /^[A-Z]{1,15}$/;

function customerRef(a: Raw): CustomerRef {
  const hasC = a['c'] !== undefined;
  const hasLast = a['last'] !== undefined;
  if (hasC === hasLast) throw new Bad('give exactly one of c (customer id) and last (customer last name)');
  if (hasC) return { c: customer(a['c']) };
  const last = a['last'];
  if (typeof last !== 'string' || !LAST_NAME.test(last)) throw new Bad('last must be 1 to 15 upper-case letters');
  return { last };
}

function lines(v: unknown): OrderLineArg[] {
  if (!Array.isArray(v) || v.length < 1 || v.length > MAX_ORDER_LINES) {
    throw new Bad(`lines must be an array of 1 to ${MAX_ORDER_LINES} [item, supplying warehouse, quantity]`);
  }
  return v.map((l: unknown, n): OrderLineArg => {
    if (!Array.isArray(l) || l.length !== 3) throw new Bad(`lines[${n}] must be [item, supplying warehouse, quantity]`);
    return [item(l[0], `lines[${n}] item`), warehouse(l[1], `lines[${n}] supplying warehouse`), int(l[2], `lines[${n}] quantity`, 1, 10)];
  });
}

function parse<T>(args: unknown, f: (a: Raw) => T): T | string {
  try {
    return f(asRaw(args));
  } catch (e) {
    if (e instanceof Bad) return e.reason;
    throw e;
  }
}

export const parseNewOrder = (args: unknown): NewOrderArgs | string =>
  parse(args, (a) => ({ w: warehouse(a['w']), d: district(a['d']), c: customer(a['c']), lines: lines(a['lines']), date: int(a['date'], 'date', 0, MAX_SAFE) }));

export const parsePayment = (args: unknown): PaymentArgs | string =>
  parse(args, (a) => ({
    w: warehouse(a['w']),
    d: district(a['d']),
    cw: warehouse(a['cw'], 'cw'),
    cd: district(a['cd'], 'cd'),
    amount: int(a['amount'], 'amount (cents)', 100, 500_000),
    date: int(a['date'], 'date', 0, MAX_SAFE),
    ...customerRef(a),
  }));

export const parseOrderStatus = (args: unknown): OrderStatusArgs | string =>
  parse(args, (a) => ({ w: warehouse(a['w']), d: district(a['d']), ref: int(a['ref'] ?? 0, 'ref', 0, MAX_SAFE), ...customerRef(a) }));

export const parseDelivery = (args: unknown): DeliveryArgs | string =>
  parse(args, (a) => ({ w: warehouse(a['w']), carrier: int(a['carrier'], 'carrier', 1, 10), date: int(a['date'], 'date', 0, MAX_SAFE) }));

export const parseStockLevel = (args: unknown): StockLevelArgs | string =>
  parse(args, (a) => ({
    w: warehouse(a['w']),
    d: district(a['d']),
    threshold: int(a['threshold'], 'threshold', 10, 20),
    ref: int(a['ref'] ?? 0, 'ref', 0, MAX_SAFE),
  }));

export type LoadRangeArgs = { w: number; from: number; to: number };
export type LoadDistrictArgs = { w: number; d: number; customers: number; items: number };

export const parseLoadWarehouse = (args: unknown): { w: number } | string => parse(args, (a) => ({ w: warehouse(a['w']) }));

export const parseLoadRange = (args: unknown, span: number): LoadRangeArgs | string =>
  parse(args, (a) => {
    const w = warehouse(a['w']);
    const from = int(a['from'], 'from', 1, MAX_ITEMS);
    const to = int(a['to'], 'to', from, Math.min(MAX_ITEMS, from + span - 1));
    return { w, from, to };
  });

export const parseLoadDistrict = (args: unknown): LoadDistrictArgs | string =>
  parse(args, (a) => ({
    w: warehouse(a['w']),
    d: district(a['d']),
    customers: int(a['customers'], 'customers', 3, MAX_CUSTOMERS),
    items: int(a['items'], 'items', 1, MAX_ITEMS),
  }));
