// @ts-check
// A token ledger as a Remora app (docs/apps.md walks through it). Tokens are created by their
// issuer; balances are held by addresses, an address being a hash of the holder's ed25519 key,
// so a holder can be paid before anyone has seen their key; a transfer is signed by the
// holder, and each holding carries a nonce so a signed transfer cannot be replayed.
//
// Plain ESM JavaScript with JSDoc types: it runs with no build step, e.g.
//   npx remora start node --dir /tmp/token --app examples/token/token.mjs
//   npx remora check --app examples/token/token.mjs
//
// Arguments come from untrusted clients, so every command checks their shape itself and aborts
// with a reason; nothing here may read a clock, randomness or the file system (the
// determinism guard refuses it while a command runs).
import { createHash } from 'node:crypto';
import { defineApp, keyPairFromSeed, makeTx } from 'remora';

/** @typedef {import('remora').Ctx} Ctx */
/** @typedef {import('remora').Transaction} Transaction */
/** @typedef {{ publicKey: Uint8Array, privateKey: import('node:crypto').KeyObject }} KeyPair */
/** What `token/<SYMBOL>` holds. @typedef {{ issuer: Uint8Array, supply: number }} Token */
/** What `bal/<SYMBOL>/<address>` holds. @typedef {{ balance: number, nonce: number }} Holding */

/** Symbols are short and canonical, so object ids stay well under the 88-byte limit. */
const SYMBOL = /^[A-Z][A-Z0-9]{0,11}$/;
/** 20 bytes of SHA-256, in lower-case hex. */
const ADDRESS = /^[0-9a-f]{40}$/;

export const tokenId = (/** @type {string} */ symbol) => `token/${symbol}`;
export const holdingId = (/** @type {string} */ symbol, /** @type {string} */ address) => `bal/${symbol}/${address}`;

/**
 * The address of an ed25519 public key, for clients and for `objects()`, which run outside
 * commands; commands compute the same hash through `ctx.precompile`, whose results the
 * primary can take from a pre-executor's lookup table instead of hashing again.
 * @param {Uint8Array} publicKey
 */
export function addressOf(publicKey) {
  return createHash('sha256').update(publicKey).digest('hex').slice(0, 40);
}

/** @param {Ctx} ctx @param {Uint8Array} publicKey */
const address = (ctx, publicKey) => Buffer.from(ctx.precompile('sha256', publicKey)).toString('hex').slice(0, 40);

/** @param {Ctx} ctx @param {unknown} args @returns {Record<string, unknown>} */
function asArgs(ctx, args) {
  if (typeof args !== 'object' || args === null || Array.isArray(args) || args instanceof Uint8Array) {
    return ctx.abort('arguments must be a map');
  }
  return /** @type {Record<string, unknown>} */ (args);
}

/** @param {Ctx} ctx @param {Record<string, unknown>} a */
function symbolArg(ctx, a) {
  const v = a['symbol'];
  return typeof v === 'string' && SYMBOL.test(v) ? v : ctx.abort('symbol must be 1-12 capital letters or digits, starting with a letter');
}

/** @param {Ctx} ctx @param {Record<string, unknown>} a @param {string} name */
function keyArg(ctx, a, name) {
  const v = a[name];
  return v instanceof Uint8Array && v.length === 32 ? v : ctx.abort(`${name} must be a 32-byte ed25519 public key`);
}

/** @param {Ctx} ctx @param {Record<string, unknown>} a @param {string} name */
function addressArg(ctx, a, name) {
  const v = a[name];
  return typeof v === 'string' && ADDRESS.test(v) ? v : ctx.abort(`${name} must be an address: 40 lower-case hex digits`);
}

/** @param {Ctx} ctx @param {Record<string, unknown>} a @param {string} name @param {number} min */
function intArg(ctx, a, name, min) {
  const v = a[name];
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min ? v : ctx.abort(`${name} must be an integer of at least ${min}`);
}

const token = defineApp({
  name: 'token',
  commands: {
    /**
     * Creates token `symbol` with `supply` units, all held by the issuer. Signed by the issuer:
     * the key that receives the supply must agree to it.
     * @param {Ctx} ctx
     * @param {{ symbol: string, issuer: Uint8Array, supply: number }} raw
     * @returns {string} the issuer's address
     */
    create(ctx, raw) {
      const a = asArgs(ctx, raw);
      const symbol = symbolArg(ctx, a);
      const issuer = keyArg(ctx, a, 'issuer');
      const supply = intArg(ctx, a, 'supply', 1);
      if (!ctx.authenticate(issuer)) ctx.abort('create must be signed by the issuer');
      if (ctx.read(tokenId(symbol)) !== undefined) ctx.abort(`token ${symbol} already exists`);
      const at = address(ctx, issuer);
      ctx.write(tokenId(symbol), { issuer, supply });
      ctx.write(holdingId(symbol, at), { balance: supply, nonce: 0 });
      return at;
    },

    /**
     * Moves `amount` of `symbol` from the holding of key `from` to address `to`. Signed by
     * `from`; `nonce` must be the holding's current one, so each signed transfer runs once.
     * @param {Ctx} ctx
     * @param {{ symbol: string, from: Uint8Array, to: string, amount: number, nonce: number }} raw
     * @returns {number} what `from` holds afterwards
     */
    transfer(ctx, raw) {
      const a = asArgs(ctx, raw);
      const symbol = symbolArg(ctx, a);
      const from = keyArg(ctx, a, 'from');
      const to = addressArg(ctx, a, 'to');
      const amount = intArg(ctx, a, 'amount', 1);
      const nonce = intArg(ctx, a, 'nonce', 0);
      if (!ctx.authenticate(from)) ctx.abort('bad signature');
      const fromAddress = address(ctx, from);
      /** @type {Holding | undefined} */
      const source = ctx.read(holdingId(symbol, fromAddress));
      if (source === undefined) return ctx.abort(`${fromAddress} holds no ${symbol}`);
      // After the signature: only the holder learns which nonce is current.
      if (nonce < source.nonce) ctx.abort('stale nonce');
      if (nonce > source.nonce) ctx.abort(`nonce too high: expected ${source.nonce}`);
      if (source.balance < amount) ctx.abort('insufficient funds');
      const left = source.balance - amount;
      ctx.write(holdingId(symbol, fromAddress), { balance: left, nonce: nonce + 1 });
      // Read after the write: paying oneself then only advances the nonce.
      /** @type {Holding} */
      const dest = ctx.read(holdingId(symbol, to)) ?? { balance: 0, nonce: 0 };
      ctx.write(holdingId(symbol, to), { balance: dest.balance + amount, nonce: dest.nonce });
      return fromAddress === to ? dest.balance + amount : left;
    },

    /**
     * What `address` holds of `symbol` (0 if nothing). `ref` is ignored: identical transactions
     * are one transaction (the sequencer answers a resubmission with the first outcome), so a
     * client that wants a fresh answer makes each query distinct with a number of its own.
     * @param {Ctx} ctx
     * @param {{ symbol: string, address: string, ref?: number }} raw
     * @returns {number}
     */
    balance(ctx, raw) {
      const a = asArgs(ctx, raw);
      const symbol = symbolArg(ctx, a);
      const at = addressArg(ctx, a, 'address');
      if (a['ref'] !== undefined) intArg(ctx, a, 'ref', 0);
      /** @type {Holding | undefined} */
      const h = ctx.read(holdingId(symbol, at));
      return h?.balance ?? 0;
    },
  },

  /**
   * The objects each command touches, from its arguments alone: admission routes by them and
   * refuses a transaction that declares anything else. Malformed arguments declare nothing;
   * the command then aborts with the reason.
   */
  objects(command, args) {
    const a = /** @type {Record<string, unknown>} */ (typeof args === 'object' && args !== null ? args : {});
    const symbol = typeof a['symbol'] === 'string' && SYMBOL.test(a['symbol']) ? a['symbol'] : null;
    const key = (/** @type {string} */ name) => {
      const v = a[name];
      return v instanceof Uint8Array && v.length === 32 ? addressOf(v) : null;
    };
    const addr = (/** @type {string} */ name) => {
      const v = a[name];
      return typeof v === 'string' && ADDRESS.test(v) ? v : null;
    };
    if (symbol === null) return [];
    /** @param {(string | null)[]} addresses */
    const holdings = (...addresses) => [...new Set(addresses.filter((x) => x !== null))].map((x) => holdingId(symbol, x));
    switch (command) {
      case 'create': {
        const issuer = key('issuer');
        return issuer === null ? [tokenId(symbol)] : [tokenId(symbol), holdingId(symbol, issuer)];
      }
      case 'transfer':
        return holdings(key('from'), addr('to'));
      case 'balance':
        return holdings(addr('address'));
      default:
        return [];
    }
  },
});

export default token;

/** A key pair derived from a label: the same label gives the same key (demos and load only). */
export function demoKey(/** @type {string} */ label) {
  return keyPairFromSeed(createHash('sha256').update(`remora token example: ${label}`).digest());
}

/** mulberry32: a small seeded generator, so a seed replays the same load byte for byte. */
function rng(/** @type {number} */ seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const WORKLOAD_SYMBOL = 'TOK';
export const WORKLOAD_HOLDERS = 100;
/** What set-up pays each holder: far more than the transfers can drain. */
export const WORKLOAD_GRANT = 1_000_000;

/**
 * Load for `remora check` and `remora bench app`: set-up (the issuer creates TOK and pays 100
 * holders), then an endless mix of signed transfers (a third of them to one of 4 hot holders,
 * so pre-executions conflict), balance queries, and transactions that must abort: replays with
 * a stale nonce and transfers signed by the wrong key. Nonces are tracked in the order
 * transactions are generated, which is the order the consumer must submit them in.
 * @param {number} seed
 * @returns {Generator<Transaction, never, undefined>}
 */
export function* workload(seed) {
  const random = rng(seed);
  const pick = (/** @type {number} */ n) => Math.floor(random() * n);
  const issuer = demoKey(`${seed}/issuer`);
  const holders = Array.from({ length: WORKLOAD_HOLDERS }, (_, i) => demoKey(`${seed}/holder/${i}`));
  const addresses = holders.map((h) => addressOf(h.publicKey));
  const nonces = holders.map(() => 0);
  const balances = holders.map(() => WORKLOAD_GRANT);
  const symbol = WORKLOAD_SYMBOL;

  yield makeTx(token, 'create', { symbol, issuer: issuer.publicKey, supply: WORKLOAD_GRANT * WORKLOAD_HOLDERS }, [issuer]);
  for (const [nonce, to] of addresses.entries()) {
    yield makeTx(token, 'transfer', { symbol, from: issuer.publicKey, to, amount: WORKLOAD_GRANT, nonce }, [issuer]);
  }
  for (let ref = 0; ; ref++) {
    const r = random();
    const from = pick(WORKLOAD_HOLDERS);
    const sender = /** @type {KeyPair} */ (holders[from]);
    const nonce = /** @type {number} */ (nonces[from]);
    if (r < 0.85) {
      let to = random() < 1 / 3 ? pick(4) : pick(WORKLOAD_HOLDERS);
      if (to === from) to = (from + 1) % WORKLOAD_HOLDERS;
      const amount = 1 + pick(100);
      if (/** @type {number} */ (balances[from]) >= amount) {
        nonces[from] = nonce + 1;
        balances[from] = /** @type {number} */ (balances[from]) - amount;
        balances[to] = /** @type {number} */ (balances[to]) + amount;
      }
      yield makeTx(token, 'transfer', { symbol, from: sender.publicKey, to: /** @type {string} */ (addresses[to]), amount, nonce }, [sender]);
    } else if (r < 0.93) {
      yield makeTx(token, 'balance', { symbol, address: /** @type {string} */ (addresses[pick(WORKLOAD_HOLDERS)]), ref });
    } else if (r < 0.97 && nonce > 0) {
      // A replay: an old nonce, paying oneself so it never equals an earlier transfer.
      const amount = 1 + pick(100);
      yield makeTx(token, 'transfer', { symbol, from: sender.publicKey, to: /** @type {string} */ (addresses[from]), amount, nonce: nonce - 1 }, [sender]);
    } else {
      // Signed by another holder than the one paying.
      const forger = /** @type {KeyPair} */ (holders[(from + 1 + pick(WORKLOAD_HOLDERS - 1)) % WORKLOAD_HOLDERS]);
      yield makeTx(token, 'transfer', { symbol, from: sender.publicKey, to: /** @type {string} */ (addresses[pick(WORKLOAD_HOLDERS)]), amount: 1, nonce }, [
        forger,
      ]);
    }
  }
}
