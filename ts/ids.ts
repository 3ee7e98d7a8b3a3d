// Object ids cross into native code as bytes; applications mostly name objects with strings.

/** An object id: a string (UTF-8 encoded) or raw bytes, 1 to 88 bytes once encoded. */
export type ObjectId = string | Uint8Array;

export function idBytes(id: ObjectId): Uint8Array {
  if (typeof id === 'string') return Buffer.from(id, 'utf8');
  if (id instanceof Uint8Array) return id;
  throw new TypeError(`object id must be a string or Uint8Array, got ${describe(id)}`);
}

export function valueBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  throw new TypeError(`value must be a Uint8Array, got ${describe(value)}`);
}

export function timestamp(ts: unknown, what = 'version'): bigint {
  if (typeof ts === 'bigint' && ts >= 0n && ts < 1n << 64n) return ts;
  if (typeof ts === 'number' && Number.isSafeInteger(ts) && ts >= 0) return BigInt(ts);
  throw new TypeError(`${what} must be a non-negative 64-bit integer, got ${describe(ts)}`);
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? (v.constructor?.name ?? 'object') : typeof v;
}
