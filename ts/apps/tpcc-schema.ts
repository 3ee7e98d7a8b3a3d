// TPC-C's tables as Remora objects (docs/tpcc.md): one object per row, every id starting with
// `t/<warehouse>/`, so the partitioner can put a warehouse and everything that hangs off it in
// one partition. Money is integer cents, rates are integer basis points (1/10,000): the
// arithmetic is exact and the same on every member.
import { hashPartition } from '../app/partition.js';

/** Districts per warehouse: the specification's 10, not scaled (the mix and conditions rely on it). */
export const DISTRICTS = 10;
/** Most lines in one New-Order (specification: 5 to 15). */
export const MAX_ORDER_LINES = 15;
/** The largest warehouse number the commands accept. */
export const MAX_WAREHOUSES = 10_000;
/** Largest customers per district and items the loader accepts: the specification's full size. */
export const MAX_CUSTOMERS = 3000;
export const MAX_ITEMS = 100_000;

/** Initial W_YTD (300,000.00) and D_YTD (30,000.00), in cents. */
export const WAREHOUSE_INITIAL_YTD = 30_000_000;
export const DISTRICT_INITIAL_YTD = 3_000_000;

// Rows are type aliases, not interfaces: an alias is assignable to the `Data` a write takes.
export type Warehouse = {
  name: string;
  /** Basis points, 0..2000. */
  tax: number;
  /** Cents. */
  ytd: number;
};

export type District = {
  name: string;
  tax: number;
  ytd: number;
  /** D_NEXT_O_ID: the id the next New-Order of this district takes. */
  nextOid: number;
};

export type Customer = {
  first: string;
  middle: string;
  last: string;
  credit: 'GC' | 'BC';
  creditLim: number;
  /** Basis points, 0..5000. */
  discount: number;
  balance: number;
  ytdPayment: number;
  paymentCnt: number;
  deliveryCnt: number;
  data: string;
};

export type History = {
  c: number;
  cd: number;
  cw: number;
  d: number;
  w: number;
  date: number;
  amount: number;
  data: string;
};

export type Order = {
  c: number;
  entryD: number;
  /** Null until delivered. */
  carrier: number | null;
  olCnt: number;
  allLocal: boolean;
};

export type OrderLine = {
  i: number;
  supplyW: number;
  /** Null until delivered. */
  deliveryD: number | null;
  qty: number;
  amount: number;
  distInfo: string;
};

export type Item = {
  name: string;
  price: number;
  data: string;
};

export type Stock = {
  qty: number;
  /** S_DIST_01..S_DIST_10. */
  dist: string[];
  ytd: number;
  orderCnt: number;
  remoteCnt: number;
  data: string;
};

export const warehouseId = (w: number): string => `t/${w}/w`;
export const districtId = (w: number, d: number): string => `t/${w}/d/${d}`;
export const customerId = (w: number, d: number, c: number): string => `t/${w}/c/${d}/${c}`;
/** The customers of a district with one last name, sorted by first name (then id): `number[]`. */
export const lastNameIndexId = (w: number, d: number, last: string): string => `t/${w}/cl/${d}/${last}`;
/** The id of the customer's most recent order (what Order-Status looks up): `number`. */
export const lastOrderId = (w: number, d: number, c: number): string => `t/${w}/co/${d}/${c}`;
export const historyId = (w: number, d: number, c: number, n: number): string => `t/${w}/h/${d}/${c}/${n}`;
/** A NEW-ORDER row: `true` while the order is undelivered. */
export const newOrderId = (w: number, d: number, o: number): string => `t/${w}/no/${d}/${o}`;
/** The oldest undelivered order id of the district (Delivery's queue head): `number`. */
export const deliveryQueueId = (w: number, d: number): string => `t/${w}/dq/${d}`;
export const orderId = (w: number, d: number, o: number): string => `t/${w}/o/${d}/${o}`;
export const orderLineId = (w: number, d: number, o: number, n: number): string => `t/${w}/ol/${d}/${o}/${n}`;
/** The item table, one read-only copy per warehouse (Heron's choice: Item replicated). */
export const itemId = (w: number, i: number): string => `t/${w}/i/${i}`;
export const stockId = (w: number, i: number): string => `t/${w}/s/${i}`;

const WAREHOUSE_OF = /^t\/(\d{1,9})\//;

/** The warehouse an id belongs to, or undefined for an id that is not TPC-C's. */
export function warehouseOf(id: string): number | undefined {
  const m = WAREHOUSE_OF.exec(id);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

/** Warehouse w lives in partition (w − 1) mod P: W warehouses spread evenly over P partitions. */
export function tpccPartition(id: string, partitions: number): number {
  const w = warehouseOf(id);
  return w === undefined || w < 1 ? hashPartition(id, partitions) : (w - 1) % partitions;
}

const SYLLABLES = ['BAR', 'OUGHT', 'ABLE', 'PRI', 'PRES', 'ESE', 'ANTI', 'CALLY', 'ATION', 'EING'] as const;

/** C_LAST for a number 0..999: the three syllables of its digits (clause 4.3.2.3). */
export function lastName(n: number): string {
  const s = (k: number) => SYLLABLES[k % 10] ?? '';
  return s(Math.floor(n / 100)) + s(Math.floor(n / 10)) + s(n);
}

/**
 * How many distinct last names a district's customers share: the specification has 1,000 names
 * for 3,000 customers, three customers a name on average; scaled, the same ratio.
 */
export const lastNamesFor = (customers: number): number => Math.max(1, Math.min(1000, Math.floor(customers / 3)));

/**
 * A small deterministic generator for the loader, usable inside commands (no clocks, no
 * crypto): mulberry32 seeded from an FNV-1a hash of a label, so each table and range of rows
 * has its own reproducible stream.
 */
export class RowRng {
  private s: number;

  constructor(label: string) {
    let h = 0x811c9dc5;
    for (let k = 0; k < label.length; k++) h = Math.imul(h ^ label.charCodeAt(k), 0x01000193) >>> 0;
    this.s = h;
  }

  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + (this.u32() % (hi - lo + 1));
  }

  /** Random letters, length in [min, max] (a-string, clause 4.3.2.2). */
  letters(min: number, max: number): string {
    let out = '';
    for (let n = this.int(min, max); n > 0; n--) out += String.fromCharCode(97 + (this.u32() % 26));
    return out;
  }

  /** Digits, length n (n-string). */
  digits(n: number): string {
    let out = '';
    for (let k = 0; k < n; k++) out += String.fromCharCode(48 + (this.u32() % 10));
    return out;
  }

  /** I_DATA / S_DATA: 10 % of rows carry "ORIGINAL" at a random position (clause 4.3.3.1). */
  data(min: number, max: number): string {
    const s = this.letters(min, max);
    if (this.u32() % 10 !== 0) return s;
    const at = this.int(0, s.length - 8);
    return `${s.slice(0, at)}ORIGINAL${s.slice(at + 8)}`;
  }
}
