// The key-value application: plain reads and writes, compare-and-swap, a copy, and `follow`,
// whose second read depends on a value read first, so it cannot be declared in advance.
//
// Absent keys and keys holding null read alike (null): `cas` with `expected: null` matches both.
import { defineApp, type Ctx } from '../app/app.js';
import { asArgs, type Args } from './args.js';
import { encode, type Data } from '../app/codec.js';
import { hashPartition } from '../app/partition.js';

const PREFIX = 'kv/';
/** Object ids are at most 88 bytes (the store's limit), the prefix included. */
export const MAX_KEY_BYTES = 88 - PREFIX.length;

export const kvId = (key: string): string => `${PREFIX}${key}`;

const isKey = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && Buffer.byteLength(v, 'utf8') <= MAX_KEY_BYTES;

function keyArg(ctx: Ctx, args: Args, name: string): string {
  const v = args[name];
  if (!isKey(v)) ctx.abort(`${name} must be a non-empty string of at most ${MAX_KEY_BYTES} bytes`);
  return v;
}

/** A value argument; a missing one is an error rather than a silent null. */
function valueArg(ctx: Ctx, args: Args, name: string): Data {
  if (!Object.hasOwn(args, name)) ctx.abort(`${name} is required (use null for none)`);
  return args[name] as Data;
}

const get = (ctx: Ctx, key: string): Data => ctx.read<Data>(kvId(key)) ?? null;

/** Canonical encodings are equal exactly when values are, whatever the map key order. */
const same = (a: Data, b: Data): boolean => encode(a).equals(encode(b));

export const kvApp = defineApp({
  name: 'kv',
  commands: {
    get(ctx: Ctx, raw: { key: string }): Data {
      return get(ctx, keyArg(ctx, asArgs(ctx, raw), 'key'));
    },

    put(ctx: Ctx, raw: { key: string; value: Data }): null {
      const args = asArgs(ctx, raw);
      ctx.write(kvId(keyArg(ctx, args, 'key')), valueArg(ctx, args, 'value'));
      return null;
    },

    /** Writes `value` iff the key holds `expected` (null: absent or null); true iff it wrote. */
    cas(ctx: Ctx, raw: { key: string; expected: Data; value: Data }): boolean {
      const args = asArgs(ctx, raw);
      const key = keyArg(ctx, args, 'key');
      const expected = valueArg(ctx, args, 'expected');
      const value = valueArg(ctx, args, 'value');
      if (!same(get(ctx, key), expected)) return false;
      ctx.write(kvId(key), value);
      return true;
    },

    delete(ctx: Ctx, raw: { key: string }): null {
      ctx.delete(kvId(keyArg(ctx, asArgs(ctx, raw), 'key')));
      return null;
    },

    /** Copies `from` to `to` (an absent `from` deletes `to`); returns the value copied. */
    copy(ctx: Ctx, raw: { from: string; to: string }): Data {
      const args = asArgs(ctx, raw);
      const from = keyArg(ctx, args, 'from');
      const to = keyArg(ctx, args, 'to');
      const value = ctx.read<Data>(kvId(from));
      if (value === undefined) ctx.delete(kvId(to));
      else ctx.write(kvId(to), value);
      return value ?? null;
    },

    /**
     * Reads `key`; if it holds a key name, reads that key too (a dynamic read: only `key` and
     * `into` are declared) and returns its value, else null. With `into`, also writes the value
     * found there, so what the dynamic read saw reaches the state and not only the result.
     */
    follow(ctx: Ctx, raw: { key: string; into?: string }): Data {
      const args = asArgs(ctx, raw);
      const key = keyArg(ctx, args, 'key');
      const into = args['into'] === undefined ? undefined : keyArg(ctx, args, 'into');
      const target = get(ctx, key);
      const value = isKey(target) ? get(ctx, target) : null;
      if (into !== undefined) ctx.write(kvId(into), value);
      return value;
    },
  },

  /** Keys are spread by a hash of the key, so neighbouring names land apart. */
  partition: hashPartition,

  objects(command, args): string[] {
    const a = (typeof args === 'object' && args !== null ? args : {}) as Args;
    const ids = (...names: string[]) => [
      ...new Set(
        names
          .map((n) => a[n])
          .filter(isKey)
          .map(kvId),
      ),
    ];
    switch (command) {
      case 'get':
      case 'put':
      case 'cas':
      case 'delete':
        return ids('key');
      case 'copy':
        return ids('from', 'to');
      case 'follow':
        return ids('key', 'into');
      default:
        return [];
    }
  },
});

export type KvApp = typeof kvApp;
