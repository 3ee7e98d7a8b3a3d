// TPC-C's consistency conditions 1–4 (clause 3.3.2.1–4) over a snapshot of the state: the
// primary's store, a Heron partition's, or the reference executor's. Each condition reports
// how many warehouses or districts it checked and, when it fails, where and with what numbers.
import { decode } from '../app/codec.js';
import type { MemoryState } from '../app/state.js';
import type { District, Order, Warehouse } from './tpcc-schema.js';

export type TpccCondition = {
  n: 1 | 2 | 3 | 4;
  name: string;
  ok: boolean;
  /** Warehouses (condition 1) or districts (2–4) checked. */
  checked: number;
  /** How many of them fail; `failures` shows the first few. */
  failed: number;
  failures: string[];
};

const NAMES = {
  1: 'W_YTD = sum(D_YTD)',
  2: 'D_NEXT_O_ID - 1 = max(O_ID) = max(NO_O_ID)',
  3: 'max(NO_O_ID) - min(NO_O_ID) + 1 = count(NEW-ORDER)',
  4: 'sum(O_OL_CNT) = count(ORDER-LINE)',
} as const;

const SHOWN = 5;

type DistrictFacts = {
  ytd?: number;
  nextOid?: number;
  maxO: number;
  olCnt: number;
  lines: number;
  minNo: number;
  maxNo: number;
  newOrders: number;
};

const ROW = /^t\/(\d+)\/(w|d|o|no|ol)(?:\/(\d+))?(?:\/(\d+))?(?:\/\d+)?$/;

/** Objects as (id, encoded value) pairs, deleted and absent ones left out. */
export type Snapshot = Iterable<[id: string, value: Uint8Array]>;

export function* memorySnapshot(state: MemoryState): Snapshot {
  for (const [id, v] of state.objects) if (v.value !== undefined) yield [id, v.value];
}

/** The conditions, in order; each `ok` iff it holds everywhere it applies. */
export function tpccConsistency(snapshot: Snapshot): TpccCondition[] {
  const warehouses = new Map<number, { ytd: number; districtYtd: number }>();
  const districts = new Map<string, DistrictFacts>();
  const district = (w: string, d: string): DistrictFacts => {
    const key = `${w}/${d}`;
    let f = districts.get(key);
    if (!f) districts.set(key, (f = { maxO: 0, olCnt: 0, lines: 0, minNo: Infinity, maxNo: 0, newOrders: 0 }));
    return f;
  };
  for (const [id, bytes] of snapshot) {
    const m = ROW.exec(id);
    if (!m) continue;
    const [, w = '', table, d = '', o = ''] = m;
    switch (table) {
      case 'w': {
        const wh = decode(bytes) as Warehouse;
        const e = warehouses.get(Number(w)) ?? { ytd: 0, districtYtd: 0 };
        warehouses.set(Number(w), { ...e, ytd: wh.ytd });
        break;
      }
      case 'd': {
        const dist = decode(bytes) as District;
        const f = district(w, d);
        f.ytd = dist.ytd;
        f.nextOid = dist.nextOid;
        const e = warehouses.get(Number(w)) ?? { ytd: Number.NaN, districtYtd: 0 };
        warehouses.set(Number(w), { ...e, districtYtd: e.districtYtd + dist.ytd });
        break;
      }
      case 'o': {
        const f = district(w, d);
        f.maxO = Math.max(f.maxO, Number(o));
        f.olCnt += (decode(bytes) as Order).olCnt;
        break;
      }
      case 'no': {
        const f = district(w, d);
        f.minNo = Math.min(f.minNo, Number(o));
        f.maxNo = Math.max(f.maxNo, Number(o));
        f.newOrders++;
        break;
      }
      case 'ol':
        district(w, d).lines++;
        break;
    }
  }

  const result = (n: 1 | 2 | 3 | 4, checked: number, failures: string[]): TpccCondition => ({
    n,
    name: NAMES[n],
    ok: failures.length === 0,
    checked,
    failed: failures.length,
    failures: failures.slice(0, SHOWN),
  });
  const order = (key: string) => key.split('/').map(Number);
  const byDistrict = [...districts].sort(([a], [b]) => {
    const [wa = 0, da = 0] = order(a);
    const [wb = 0, db = 0] = order(b);
    return wa - wb || da - db;
  });

  const c1: string[] = [];
  for (const [w, e] of [...warehouses].sort(([a], [b]) => a - b)) {
    if (e.ytd !== e.districtYtd) c1.push(`warehouse ${w}: W_YTD ${e.ytd}, sum(D_YTD) ${e.districtYtd}`);
  }
  const c2: string[] = [];
  const c3: string[] = [];
  const c4: string[] = [];
  let withNewOrders = 0;
  for (const [key, f] of byDistrict) {
    const where = `district ${key}`;
    const next = (f.nextOid ?? Number.NaN) - 1;
    // With no undelivered order, max(NO_O_ID) is undefined and only the first equality applies.
    if (next !== f.maxO || (f.newOrders > 0 && next !== f.maxNo)) {
      c2.push(`${where}: D_NEXT_O_ID - 1 = ${next}, max(O_ID) = ${f.maxO}, max(NO_O_ID) = ${f.newOrders > 0 ? f.maxNo : 'none'}`);
    }
    if (f.newOrders > 0) {
      withNewOrders++;
      if (f.maxNo - f.minNo + 1 !== f.newOrders) c3.push(`${where}: max - min + 1 = ${f.maxNo - f.minNo + 1}, count = ${f.newOrders}`);
    }
    if (f.olCnt !== f.lines) c4.push(`${where}: sum(O_OL_CNT) = ${f.olCnt}, order lines = ${f.lines}`);
  }
  return [result(1, warehouses.size, c1), result(2, districts.size, c2), result(3, withNewOrders, c3), result(4, districts.size, c4)];
}

/** One line per condition, e.g. `condition 1 (W_YTD = sum(D_YTD)): ok on 2 warehouses`. */
export function formatConsistency(conditions: readonly TpccCondition[]): string[] {
  return conditions.map((c) => {
    const unit = c.n === 1 ? 'warehouses' : 'districts';
    const head = `condition ${c.n} (${c.name}): `;
    return c.ok ? `${head}ok on ${c.checked} ${unit}` : `${head}FAILED in ${c.failed} of ${c.checked} ${unit}: ${c.failures.join('; ')}`;
  });
}
