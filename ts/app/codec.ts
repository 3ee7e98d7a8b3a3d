// The one msgpack encoding used for transaction bodies, object values and results. Canonical:
// map keys are sorted before encoding, so equal values always encode to equal bytes, which is
// what lets a digest or a signature name a transaction.
import { Packr } from 'msgpackr';

const packr = new Packr({ useRecords: false, int64AsType: 'bigint', mapsAsObjects: true, variableMapSize: true });

/** Plain data a transaction, value or result may hold. */
export type Data =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | readonly Data[]
  | { readonly [key: string]: Data };

function sortKeys(v: unknown, depth: number): unknown {
  if (depth > 64) throw new TypeError('value nests deeper than 64 levels');
  if (v === undefined) throw new TypeError('undefined cannot be encoded (use null)');
  if (typeof v === 'number' && !Number.isFinite(v)) throw new TypeError(`non-finite number ${v} cannot be encoded`);
  if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map((x) => sortKeys(x, depth + 1));
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) {
    throw new TypeError(`${(v as object).constructor?.name ?? 'object'} cannot be encoded: use plain objects`);
  }
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) out[k] = sortKeys((v as Record<string, unknown>)[k], depth + 1);
  return out;
}

/** Canonical bytes of `v`. Throws a TypeError naming what cannot be encoded. */
export function encode(v: unknown): Buffer {
  return packr.pack(sortKeys(v, 0));
}

/** Decodes bytes made by `encode` (or a peer's). Throws on malformed input. */
export function decode(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}
