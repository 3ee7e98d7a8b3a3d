// TPC-C's load: the loader's transactions for W warehouses, then the specification's mix
// (clause 5.2.3: 45 % New-Order, 43 % Payment, 4 % each Order-Status, Delivery, Stock-Level)
// with its input rules (clause 2): NURand customers and items, 1 % New-Order rollbacks, 1 %
// remote order lines, 15 % remote Payment customers, 60 % of customers chosen by last name.
// Inputs never depend on the state, so the transactions may run in any order and concurrently.
import { makeTx } from '../app/app.js';
import type { Transaction } from '../app/tx.js';
import type { OrderLineArg } from './tpcc-args.js';
import { LOAD_SPAN, NURAND_C_LAST_RUN, nurand, nurandA } from './tpcc-load.js';
import { DISTRICTS, lastName, lastNamesFor, MAX_CUSTOMERS, MAX_ITEMS, MAX_WAREHOUSES, RowRng } from './tpcc-schema.js';
import { tpccApp } from './tpcc.js';

/** The database size: the specification's structure with fewer rows (docs/tpcc.md). */
export type TpccScale = {
  warehouses: number;
  /** Customers per district (specification: 3,000); also the initial orders per district. */
  customers: number;
  /** Items (specification: 100,000), and stock rows per warehouse. */
  items: number;
};

/** 1/100 of the specification's customers and items: W = 4 loads in about a second on 2 cores. */
export const TPCC_DEFAULT_SCALE: TpccScale = { warehouses: 2, customers: 30, items: 1000 };

export type TpccKind = 'newOrder' | 'payment' | 'orderStatus' | 'delivery' | 'stockLevel';
export const TPCC_KINDS: readonly TpccKind[] = ['newOrder', 'payment', 'orderStatus', 'delivery', 'stockLevel'];
/** The specification's minimum mix, in percent, New-Order taking the rest. */
export const TPCC_MIX: Readonly<Record<TpccKind, number>> = { newOrder: 45, payment: 43, orderStatus: 4, delivery: 4, stockLevel: 4 };

export function checkScale(s: TpccScale): void {
  const bad = (what: string, v: number, lo: number, hi: number) => {
    if (!Number.isSafeInteger(v) || v < lo || v > hi) throw new RangeError(`tpcc: ${what} must be an integer from ${lo} to ${hi}, got ${v}`);
  };
  bad('warehouses', s.warehouses, 1, MAX_WAREHOUSES);
  bad('customers per district', s.customers, 3, MAX_CUSTOMERS);
  bad('items', s.items, 1, MAX_ITEMS);
}

/** The loader: every warehouse with its districts, customers, orders, items and stock. */
export function tpccLoad(scale: TpccScale): Transaction[] {
  checkScale(scale);
  const txs: Transaction[] = [];
  for (let w = 1; w <= scale.warehouses; w++) {
    txs.push(makeTx(tpccApp, 'loadWarehouse', { w }));
    for (let from = 1; from <= scale.items; from += LOAD_SPAN) {
      const to = Math.min(scale.items, from + LOAD_SPAN - 1);
      txs.push(makeTx(tpccApp, 'loadItems', { w, from, to }), makeTx(tpccApp, 'loadStock', { w, from, to }));
    }
    for (let d = 1; d <= DISTRICTS; d++) txs.push(makeTx(tpccApp, 'loadDistrict', { w, d, customers: scale.customers, items: scale.items }));
  }
  return txs;
}

/** The steady mix, one transaction at a time, reproducible from its seed. */
export class TpccMix {
  private readonly rng: RowRng;
  private readonly names: number;
  private readonly aCustomer: number;
  private readonly aItem: number;
  private readonly aName: number;
  // Distinct bodies: identical transactions would be deduplicated into one.
  private seq = 0;

  constructor(
    readonly scale: TpccScale,
    readonly seed: number,
  ) {
    checkScale(scale);
    this.rng = new RowRng(`tpcc/mix/${seed}`);
    this.names = lastNamesFor(scale.customers);
    this.aCustomer = nurandA(scale.customers, 1023, 3000);
    this.aItem = nurandA(scale.items, 8191, 100_000);
    this.aName = nurandA(this.names, 255, 1000);
  }

  private int = (lo: number, hi: number): number => this.rng.int(lo, hi);

  private customer(): number {
    return nurand(this.int, this.aCustomer, 1, this.scale.customers, 259);
  }

  private customerRef(): { c: number } | { last: string } {
    return this.int(1, 100) <= 60 ? { last: lastName(nurand(this.int, this.aName, 0, this.names - 1, NURAND_C_LAST_RUN)) } : { c: this.customer() };
  }

  private otherWarehouse(w: number): number {
    const o = this.int(1, this.scale.warehouses - 1);
    return o >= w ? o + 1 : o;
  }

  /** The next transaction and which of the five it is. */
  next(): { kind: TpccKind; tx: Transaction } {
    const W = this.scale.warehouses;
    const w = this.int(1, W);
    const d = this.int(1, DISTRICTS);
    const date = ++this.seq;
    const r = this.int(1, 100);
    if (r <= TPCC_MIX.newOrder) {
      const count = this.int(5, 15);
      const rollback = this.int(1, 100) === 1;
      const items = new Set<number>();
      while (items.size < count) items.add(nurand(this.int, this.aItem, 1, this.scale.items, 7911));
      const lines: OrderLineArg[] = [...items].map((i) => [i, W > 1 && this.int(1, 100) === 1 ? this.otherWarehouse(w) : w, this.int(1, 10)]);
      const last = lines[lines.length - 1];
      // An unused item id: the command finds no such item and rolls the whole order back.
      if (rollback && last) last[0] = this.scale.items + 1;
      return { kind: 'newOrder', tx: makeTx(tpccApp, 'newOrder', { w, d, c: this.customer(), lines, date }) };
    }
    if (r <= TPCC_MIX.newOrder + TPCC_MIX.payment) {
      const remote = W > 1 && this.int(1, 100) <= 15;
      const [cw, cd] = remote ? [this.otherWarehouse(w), this.int(1, DISTRICTS)] : [w, d];
      const amount = this.int(100, 500_000);
      return { kind: 'payment', tx: makeTx(tpccApp, 'payment', { w, d, cw, cd, amount, date, ...this.customerRef() }) };
    }
    if (r <= TPCC_MIX.newOrder + TPCC_MIX.payment + TPCC_MIX.orderStatus) {
      return { kind: 'orderStatus', tx: makeTx(tpccApp, 'orderStatus', { w, d, ref: date, ...this.customerRef() }) };
    }
    if (r <= 100 - TPCC_MIX.stockLevel) {
      return { kind: 'delivery', tx: makeTx(tpccApp, 'delivery', { w, carrier: this.int(1, 10), date }) };
    }
    return { kind: 'stockLevel', tx: makeTx(tpccApp, 'stockLevel', { w, d, threshold: this.int(10, 20), ref: date }) };
  }
}

/** The loader's transactions, then the mix, endlessly: what `remora check --app tpcc` drives. */
export function* tpccWorkload(seed: number, scale: TpccScale = TPCC_DEFAULT_SCALE): Generator<Transaction, never, undefined> {
  yield* tpccLoad(scale);
  const mix = new TpccMix(scale, seed);
  for (;;) yield mix.next().tx;
}
