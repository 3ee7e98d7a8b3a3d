// Deterministic load for the built-in apps: the same seed gives the same transactions, byte for
// byte, so a failing run can be replayed from the seed its caller printed.
import { createHash } from 'node:crypto';
import { makeTx } from './app/app.js';
import { encode, type Data } from './app/codec.js';
import type { Transaction } from './app/tx.js';
import { builtinApps, DEMO_MINT_AUTHORITY, keyPairFromSeed, WORK_MAX_ROUNDS, type BankApp, type KeyPair } from './apps/index.js';

/** The built-in bank, whose mint authority `DEMO_MINT_AUTHORITY` the bank workloads sign with. */
export const DEMO_MINT_AUTHORITY_APP: BankApp = builtinApps.bank;

function checkSeed(seed: number): void {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative safe integer, got ${seed}`);
}

/** `label` separates independent streams (keys, choices) drawn from one seed. */
function seedBytes(seed: number, label: string): Buffer {
  return createHash('sha256').update(`remora.workload.v1:${label}:${seed}`).digest();
}

/**
 * xoshiro128** (Blackman & Vigna), on 32-bit integers: fast, small state, and good enough for
 * load generation. Seeded through SHA-256 so nearby seeds give unrelated streams.
 */
export class Rng {
  private readonly s: Uint32Array;

  constructor(
    readonly seed: number,
    label = 'rng',
  ) {
    checkSeed(seed);
    const b = seedBytes(seed, label);
    this.s = Uint32Array.of(b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8), b.readUInt32LE(12));
    // The all-zero state is a fixed point; SHA-256 reaching it is not a practical concern,
    // but the guard costs nothing.
    if (this.s.every((x) => x === 0)) this.s[0] = 1;
  }

  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    const s = this.s;
    const s0 = s[0] ?? 0;
    const s1 = s[1] ?? 0;
    const s2 = s[2] ?? 0;
    const s3 = s[3] ?? 0;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    s[0] = s0 ^ n3;
    s[1] = s1 ^ n2;
    s[2] = n2 ^ t;
    s[3] = rotl(n3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  next(): number {
    return ((this.u32() >>> 5) * 67108864 + (this.u32() >>> 6)) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const x = this.u32();
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (x >>> (8 * j)) & 0xff;
    }
    return out;
  }
}

const rotl = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;

/** Largest population `zipf` takes: its CDF is held in memory, 8 bytes per item. */
export const ZIPF_MAX_N = 10_000_000;

function checkZipf(n: number, alpha: number): void {
  if (!Number.isSafeInteger(n) || n < 1 || n > ZIPF_MAX_N) throw new RangeError(`zipf: n must be an integer in [1, ${ZIPF_MAX_N}], got ${n}`);
  if (!Number.isFinite(alpha) || alpha < 0) throw new RangeError(`zipf: alpha must be a finite number ≥ 0, got ${alpha}`);
}

/** Probability that `zipf(n, alpha)` returns `index` (rank index + 1): (index+1)^-alpha / H(n, alpha). */
export function zipfProbability(n: number, alpha: number, index: number): number {
  checkZipf(n, alpha);
  if (!Number.isInteger(index) || index < 0 || index >= n) return 0;
  let h = 0;
  for (let k = 1; k <= n; k++) h += k ** -alpha;
  return (index + 1) ** -alpha / h;
}

/**
 * A Zipf sampler over indices [0, n): index i (rank i + 1) has weight (i + 1)^-alpha, so index
 * 0 is the most popular and alpha 0 is uniform. Exact for every alpha ≥ 0 (1 included): it
 * searches the precomputed CDF rather than using an approximation that breaks at alpha = 1.
 */
export function zipf(n: number, alpha: number, rng: Rng): () => number {
  checkZipf(n, alpha);
  if (alpha === 0) return () => rng.int(n);
  const cdf = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    total += (i + 1) ** -alpha;
    cdf[i] = total;
  }
  return () => {
    const u = rng.next() * total;
    // First index whose cumulative weight exceeds u.
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((cdf[mid] ?? total) > u) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
}

function checkCount(name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`${name} must be an integer ≥ ${min}, got ${v}`);
}

function checkRate(name: string, v: number): void {
  if (!(v >= 0 && v <= 1)) throw new RangeError(`${name} must be in [0, 1], got ${v}`);
}

/** Balance every account is minted at set-up. */
export const BANK_INITIAL_BALANCE = 1_000_000_000;
/** Transfers move 1..BANK_MAX_AMOUNT: an account runs dry only after ten million net payments. */
export const BANK_MAX_AMOUNT = 100;

// Importing an ed25519 key from PKCS#8 costs about half a millisecond (OpenSSL's decoder
// lookup), which adds up to seconds for a bench that sets up 10,000 accounts several times
// over; owners depend only on (seed, account), so they are kept for the process.
const ownerKeys = new Map<string, KeyPair>();
const OWNER_KEYS_KEPT = 100_000;

function ownerKey(seed: number, account: number): KeyPair {
  const label = `bank.owner.${account}`;
  const memo = `${seed}:${label}`;
  let key = ownerKeys.get(memo);
  if (key === undefined) {
    if (ownerKeys.size >= OWNER_KEYS_KEPT) ownerKeys.clear();
    key = keyPairFromSeed(seedBytes(seed, label));
    ownerKeys.set(memo, key);
  }
  return key;
}

/**
 * Accounts 0..n-1 with deterministic owners, and signed transfers whose nonces assume every
 * earlier generated transfer from the same account succeeds, in generation order.
 */
export class BankAccounts {
  readonly app: BankApp = DEMO_MINT_AUTHORITY_APP;
  readonly mintAuthority: KeyPair = DEMO_MINT_AUTHORITY;
  // Owners are derived when first needed: a load generator that sends from a share of the
  // accounts imports only those keys (half a millisecond each).
  private readonly owners: (KeyPair | undefined)[];
  private readonly nonces: number[];

  constructor(
    readonly count: number,
    readonly seed: number,
  ) {
    checkCount('accounts', count, 1);
    checkSeed(seed);
    this.owners = new Array<KeyPair | undefined>(count);
    this.nonces = new Array<number>(count).fill(0);
  }

  /** Every account's owner. */
  get keys(): readonly KeyPair[] {
    return Array.from({ length: this.count }, (_, i) => this.key(i));
  }

  /** The owner of `account`. */
  key(account: number): KeyPair {
    if (!Number.isInteger(account) || account < 0 || account >= this.count) throw new RangeError(`no account ${account}`);
    return (this.owners[account] ??= ownerKey(this.seed, account));
  }

  /** `open` for every account, then `mint` of `initialBalance` for every account. */
  setup(initialBalance = BANK_INITIAL_BALANCE): Transaction[] {
    const keys = this.keys;
    const opens = keys.map((k, account) => makeTx(this.app, 'open', { account, owner: k.publicKey }));
    const mints = keys.map((_, account) => makeTx(this.app, 'mint', { account, amount: initialBalance }, [this.mintAuthority]));
    // Opens first: a consumer that lets set-up transactions overtake each other a little
    // still has every account open before its mint.
    return [...opens, ...mints];
  }

  /** The nonce the next transfer generated from `account` will carry. */
  nonce(account: number): number {
    return this.nonces[account] ?? 0;
  }

  /** A transfer signed by `from`'s owner, carrying and then advancing its tracked nonce. */
  transfer(from: number, to: number, amount: number): Transaction {
    const key = this.key(from);
    const nonce = this.nonce(from);
    this.nonces[from] = nonce + 1;
    return makeTx(this.app, 'transfer', { from, to, amount, nonce }, [key]);
  }
}

export interface BankWorkloadOptions {
  accounts: number;
  /** Zipf skew of the accounts chosen, for senders and receivers alike; 0 = uniform. */
  alpha: number;
  /** Seed of the transfers chosen (and of the owners' keys, unless `keySeed` is given). */
  seed: number;
  /**
   * Seed of the owners' keys (default `seed`): load generators that share one set-up but draw
   * their own transfers (each from `seed + index`) keep the set-up's seed here.
   */
  keySeed?: number;
  /**
   * Send only from accounts a with a mod `of` = `index` (default: from every account). The
   * nonces of a sender are valid only in the order its transfers were generated, so streams
   * submitted side by side (several load generators) must not share senders; each stream's
   * senders follow the Zipf distribution over its own share (its hottest is account `index`),
   * and receivers are still drawn from all the accounts.
   */
  senders?: { index: number; of: number };
}

export interface BankWorkload {
  readonly seed: number;
  readonly accounts: BankAccounts;
  /** Opens, then mints of `BANK_INITIAL_BALANCE` to every account: apply these first. */
  readonly setup: readonly Transaction[];
  /** Total minted by `setup`: the money supply every later state must conserve. */
  readonly minted: number;
  /** The next transfer of the endless stream. */
  next(): Transaction;
}

/** Set-up, then an endless stream of signed transfers between Zipf-chosen accounts. */
export function bankWorkload(opts: BankWorkloadOptions): BankWorkload {
  const n = opts.accounts;
  const part = opts.senders ?? { index: 0, of: 1 };
  checkCount('senders.of', part.of, 1);
  if (!Number.isSafeInteger(part.index) || part.index < 0 || part.index >= part.of) {
    throw new RangeError(`senders.index must be an integer in [0, ${part.of}), got ${part.index}`);
  }
  if (part.of > n) throw new RangeError(`senders: ${part.of} streams need at least as many accounts, got ${n}`);
  const accounts = new BankAccounts(n, opts.keySeed ?? opts.seed);
  const rng = new Rng(opts.seed, 'bank.transfers');
  // With one stream, senders and receivers come from one sampler over all accounts, drawing
  // from `rng` in the same order as before streams existed: same seed, same transfers.
  const pick = zipf(n, opts.alpha, rng);
  const own = Math.floor((n - 1 - part.index) / part.of) + 1;
  const pickOwn = part.of === 1 ? pick : zipf(own, opts.alpha, rng);
  let setup: readonly Transaction[] | undefined;
  return {
    seed: opts.seed,
    accounts,
    // Signed when first asked for: a load generator that only sends never needs it.
    get setup() {
      return (setup ??= accounts.setup());
    },
    minted: BANK_INITIAL_BALANCE * n,
    next() {
      const from = part.index + part.of * pickOwn();
      let to = pick();
      // Another account, uniformly among the rest: resampling could spin when alpha is large.
      if (to === from && n > 1) to = (from + 1 + rng.int(n - 1)) % n;
      return accounts.transfer(from, to, 1 + rng.int(BANK_MAX_AMOUNT));
    },
  };
}

export interface WorkWorkloadOptions {
  /** Counters 0..objects-1. */
  objects: number;
  /** Zipf skew of the counters chosen; 0 = uniform. */
  alpha: number;
  /** Mixing rounds each `crunch` asks for: the compute cost of a transaction. */
  rounds: number;
  seed: number;
}

export interface WorkWorkload {
  readonly seed: number;
  /** Nothing: counters start at { n: 0, h: 0 }. There for the same shape as `BankWorkload`. */
  readonly setup: readonly Transaction[];
  /** The next `crunch` of the endless stream. */
  next(): Transaction;
}

/**
 * An endless stream of `crunch` transactions on two Zipf-chosen counters (one when both draws
 * agree), each with a fresh random tag: identical bodies would be one transaction to the
 * sequencer's deduplication. Unsigned, so the cost of a transaction is its `rounds`.
 */
export function workWorkload(opts: WorkWorkloadOptions): WorkWorkload {
  checkCount('objects', opts.objects, 1);
  if (opts.objects > 0x1_0000_0000) throw new RangeError(`objects must be at most 2^32, got ${opts.objects}`);
  if (!Number.isSafeInteger(opts.rounds) || opts.rounds < 0 || opts.rounds > WORK_MAX_ROUNDS) {
    throw new RangeError(`rounds must be an integer from 0 to ${WORK_MAX_ROUNDS}, got ${opts.rounds}`);
  }
  const app = builtinApps.work;
  const rng = new Rng(opts.seed, 'work');
  const pick = zipf(opts.objects, opts.alpha, rng);
  return {
    seed: opts.seed,
    setup: [],
    next() {
      const a = pick();
      const b = pick();
      // 53 random bits: distinct from every other tag of any stream, in practice.
      const tag = (rng.u32() >>> 11) * 0x1_0000_0000 + rng.u32();
      return makeTx(app, 'crunch', { objects: a === b ? [a] : [a, b], rounds: opts.rounds, tag });
    },
  };
}

export interface BankBenchOptions {
  /** Transfers generated up front (`transfers`); `stream()` continues after them (one shared stream). */
  transfers: number;
  /** Probability that a transfer pays one of `BANK_HOT_ACCOUNTS` accounts. */
  conflictRate: number;
  seed: number;
  /** Default 10,000. */
  accounts?: number;
}

/** Accounts 0..BANK_HOT_ACCOUNTS-1 are the hot ones in `bankBench`. */
export const BANK_HOT_ACCOUNTS = 4;

/**
 * Transfers with a controlled conflict rate, for measuring merging. Without a hot account, a
 * transfer's two accounts come round-robin from the cold ones, so any (accounts - 4) / 2
 * consecutive transfers touch disjoint accounts; with probability `conflictRate` it pays a hot
 * account instead, and such transfers conflict with each other.
 */
export function bankBench(opts: BankBenchOptions): {
  seed: number;
  accounts: BankAccounts;
  setup: Transaction[];
  transfers: Transaction[];
  stream(): { next(): Transaction };
} {
  const count = opts.accounts ?? 10_000;
  checkCount('transfers', opts.transfers, 0);
  checkRate('conflictRate', opts.conflictRate);
  checkCount('accounts', count, BANK_HOT_ACCOUNTS + 2);
  const accounts = new BankAccounts(count, opts.seed);
  const rng = new Rng(opts.seed, 'bank.bench');
  const cold = count - BANK_HOT_ACCOUNTS;
  let i = 0;
  const next = (): Transaction => {
    const from = BANK_HOT_ACCOUNTS + ((2 * i) % cold);
    const to = rng.chance(opts.conflictRate) ? rng.int(BANK_HOT_ACCOUNTS) : BANK_HOT_ACCOUNTS + ((2 * i + 1) % cold);
    i++;
    return accounts.transfer(from, to, 1 + rng.int(BANK_MAX_AMOUNT));
  };
  const setup = accounts.setup();
  const transfers = Array.from({ length: opts.transfers }, next);
  return { seed: opts.seed, accounts, setup, transfers, stream: () => ({ next }) };
}

export interface KvWorkloadOptions {
  /** Size of the cold key range. */
  keys: number;
  /** Number of hot keys (may be 0). */
  hotKeys: number;
  /** Probability that each key a transaction names is a hot one. */
  conflictRate: number;
  /** Share of `follow` transactions, whose second read is undeclared. */
  dynamicRate: number;
  seed: number;
}

export const hotKey = (i: number): string => `hot/${i}`;
export const coldKey = (i: number): string => `key/${i}`;

/**
 * An endless stream of kv transactions: `follow` with probability `dynamicRate`, else put
 * (45 %), cas (25 %), copy (15 %), get (10 %) and delete (5 %). Half the values written are
 * key names, so `follow` usually has somewhere to go. `cas` mostly expects the value the key
 * would hold if the stream ran in order (tracked in a shadow map), so it succeeds when run
 * sequentially and fails when reordered; a fifth of the time it expects a wrong value.
 */
export function* kvWorkload(opts: KvWorkloadOptions): Generator<Transaction, never, undefined> {
  checkCount('keys', opts.keys, 1);
  checkCount('hotKeys', opts.hotKeys, 0);
  checkRate('conflictRate', opts.conflictRate);
  checkRate('dynamicRate', opts.dynamicRate);
  const app = builtinApps.kv;
  const rng = new Rng(opts.seed, 'kv');
  const shadow = new Map<string, Data>();
  const read = (key: string): Data => shadow.get(key) ?? null;
  const pick = (): string => (opts.hotKeys > 0 && rng.chance(opts.conflictRate) ? hotKey(rng.int(opts.hotKeys)) : coldKey(rng.int(opts.keys)));
  let counter = 0;
  const value = (): Data => {
    const r = rng.next();
    if (r < 0.5) return pick();
    if (r < 0.8) return { n: counter++, seed: opts.seed };
    return rng.bytes(8);
  };

  for (;;) {
    if (rng.chance(opts.dynamicRate)) {
      const key = pick();
      const target = read(key);
      const found = typeof target === 'string' ? read(target) : null;
      if (rng.chance(0.5)) {
        const into = pick();
        shadow.set(into, found);
        yield makeTx(app, 'follow', { key, into });
      } else {
        yield makeTx(app, 'follow', { key });
      }
      continue;
    }
    const r = rng.next();
    if (r < 0.45) {
      const key = pick();
      const v = value();
      shadow.set(key, v);
      yield makeTx(app, 'put', { key, value: v });
    } else if (r < 0.7) {
      const key = pick();
      const expected = rng.chance(0.8) ? read(key) : { n: -1 };
      const v = value();
      if (encode(expected).equals(encode(read(key)))) shadow.set(key, v);
      yield makeTx(app, 'cas', { key, expected, value: v });
    } else if (r < 0.85) {
      const from = pick();
      const to = pick();
      shadow.set(to, read(from));
      yield makeTx(app, 'copy', { from, to });
    } else if (r < 0.95) {
      yield makeTx(app, 'get', { key: pick() });
    } else {
      const key = pick();
      shadow.delete(key);
      yield makeTx(app, 'delete', { key });
    }
  }
}
