// The one msgpack encoding used for transaction bodies, object values and results. Canonical:
// map keys are sorted before encoding, so equal values always encode to equal bytes, which is
// what lets a digest or a signature name a transaction.
import { Packr } from 'msgpackr';

const packr = new Packr({ useRecords: false, int64AsType: 'bigint', mapsAsObjects: true, variableMapSize: true });

/** Plain data a transaction, value or result may hold. */
export type Data = null | boolean | number | bigint | string | Uint8Array | readonly Data[] | { readonly [key: string]: Data };

/**
 * What `v` is to the encoder: a leaf, an array, or a plain object (map). Throws a TypeError
 * naming what cannot be encoded canonically.
 */
function kind(v: unknown, depth: number): 'leaf' | 'array' | 'map' {
  if (depth > 64) throw new TypeError('value nests deeper than 64 levels');
  if (v === undefined) throw new TypeError('undefined cannot be encoded (use null)');
  if (typeof v === 'number' && !Number.isFinite(v)) throw new TypeError(`non-finite number ${v} cannot be encoded`);
  if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return 'leaf';
  if (Array.isArray(v)) return 'array';
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) {
    throw new TypeError(`${v.constructor?.name ?? 'object'} cannot be encoded: use plain objects`);
  }
  return 'map';
}

function sortKeys(v: unknown, depth: number): unknown {
  const k = kind(v, depth);
  if (k === 'leaf') return v;
  if (k === 'array') return (v as unknown[]).map((x) => sortKeys(x, depth + 1));
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(v as object).sort()) out[key] = sortKeys((v as Record<string, unknown>)[key], depth + 1);
  return out;
}

/** Keys JavaScript objects keep first, in numeric order, whatever the insertion order. */
const isIndexKey = (k: string): boolean => {
  // Most keys are names: one comparison, before the pattern.
  const c = k.charCodeAt(0);
  return c >= 48 && c <= 57 && /^(?:0|[1-9][0-9]{0,9})$/.test(k) && Number(k) <= 4294967294;
};

/**
 * Checks what `sortKeys` checks, without copying: true if `sortKeys(v)` would give every map
 * its keys in the order they already have (so `v` encodes as it is), false if not. Index-like
 * keys come first in numeric order in any object, so only the others need be in order.
 */
function keysSorted(v: unknown, depth: number): boolean {
  const k = kind(v, depth);
  if (k === 'leaf') return true;
  // Loops without an array of keys or a callback: this runs over every body admitted.
  if (k === 'array') {
    const a = v as unknown[];
    for (let i = 0; i < a.length; i++) if (!keysSorted(a[i], depth + 1)) return false;
    return true;
  }
  let prev: string | null = null;
  // `for...in` walks own keys in `Object.keys` order here: `kind` let through only plain
  // objects, whose prototype (Object.prototype or null) has no enumerable keys.
  for (const key in v as object) {
    if (!keysSorted((v as Record<string, unknown>)[key], depth + 1)) return false;
    if (isIndexKey(key)) continue;
    // The order `Array.prototype.sort` gives strings: by UTF-16 code units.
    if (prev !== null && !(prev < key)) return false;
    prev = key;
  }
  return true;
}

/** Canonical bytes of `v`. Throws a TypeError naming what cannot be encoded. */
export function encode(v: unknown): Buffer {
  // Most values (every decoded canonical body) are in order already: encoded without a copy.
  return packr.pack(keysSorted(v, 0) ? v : sortKeys(v, 0));
}

/** Decodes bytes made by `encode` (or a peer's). Throws on malformed input. */
export function decode(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}
