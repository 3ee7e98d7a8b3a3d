// The bank application: accounts owned by ed25519 keys, minting by one authority, and signed
// transfers ordered by a per-account nonce.
//
// Arguments come from untrusted clients, so every command checks their shape itself: a bad
// argument is an abort with a reason, never a thrown TypeError from deep inside.
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { defineApp, type Ctx } from '../app/app.js';
import { asArgs, type Args } from './args.js';
import { hashPartition } from '../app/partition.js';

/** What `acct/<n>` holds. */
export interface Account {
  /** Raw 32-byte ed25519 public key whose signature moves money out. */
  owner: Uint8Array;
  balance: number;
  /** The nonce the next transfer out must carry; replays carry an older one. */
  nonce: number;
}

export interface BankConfig {
  /** Raw 32-byte ed25519 public key that must sign every `mint`. */
  mintAuthority: Uint8Array;
}

export const accountId = (account: number): string => `acct/${account}`;
export const stampId = (account: number): string => `stamp/${account}`;
const NO_ARGS: Args = Object.freeze({});

/** Account numbers are non-negative safe integers, so ids stay short and canonical. */
function accountArg(ctx: Ctx, args: Args, name: string): number {
  const v = args[name];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    ctx.abort(`${name} must be a non-negative safe integer account number`);
  }
  return v;
}

function amountArg(ctx: Ctx, args: Args): number {
  const v = args['amount'];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) ctx.abort('amount must be a positive safe integer');
  return v;
}

function bytesArg(ctx: Ctx, args: Args, name: string, length?: number): Uint8Array {
  const v = args[name];
  if (!(v instanceof Uint8Array) || (length !== undefined && v.length !== length)) {
    ctx.abort(length === undefined ? `${name} must be bytes` : `${name} must be ${length} bytes`);
  }
  return v;
}

function readAccount(ctx: Ctx, account: number): Account {
  return ctx.read<Account>(accountId(account)) ?? ctx.abort(`account ${account} does not exist`);
}

/** Adds without leaving the safe-integer range, where balances would stop being exact. */
function credit(ctx: Ctx, balance: number, amount: number): number {
  const sum = balance + amount;
  if (!Number.isSafeInteger(sum)) ctx.abort('balance would exceed the largest safe integer');
  return sum;
}

const isAccountNumber = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** The bank application for a given mint authority. */
export function bankApp(config: BankConfig) {
  if (!(config.mintAuthority instanceof Uint8Array) || config.mintAuthority.length !== 32) {
    throw new TypeError('bankApp: mintAuthority must be a 32-byte ed25519 public key');
  }
  const mintAuthority = Uint8Array.from(config.mintAuthority);

  return defineApp({
    name: 'bank',
    commands: {
      open(ctx: Ctx, raw: { account: number; owner: Uint8Array }): null {
        const args = asArgs(ctx, raw);
        const account = accountArg(ctx, args, 'account');
        const owner = bytesArg(ctx, args, 'owner', 32);
        if (ctx.read(accountId(account)) !== undefined) ctx.abort(`account ${account} already exists`);
        ctx.write(accountId(account), { owner, balance: 0, nonce: 0 });
        return null;
      },

      mint(ctx: Ctx, raw: { account: number; amount: number }): number {
        const args = asArgs(ctx, raw);
        const account = accountArg(ctx, args, 'account');
        const amount = amountArg(ctx, args);
        if (!ctx.authenticate(mintAuthority)) ctx.abort('mint must be signed by the mint authority');
        const acct = readAccount(ctx, account);
        const balance = credit(ctx, acct.balance, amount);
        ctx.write(accountId(account), { ...acct, balance });
        return balance;
      },

      transfer(ctx: Ctx, raw: { from: number; to: number; amount: number; nonce: number }): null {
        const args = asArgs(ctx, raw);
        const from = accountArg(ctx, args, 'from');
        const to = accountArg(ctx, args, 'to');
        const amount = amountArg(ctx, args);
        const nonce = args['nonce'];
        if (typeof nonce !== 'number' || !Number.isSafeInteger(nonce) || nonce < 0) {
          ctx.abort('nonce must be a non-negative safe integer');
        }
        const source = readAccount(ctx, from);
        if (!ctx.authenticate(source.owner)) ctx.abort('bad signature');
        // Checked after the signature, so only the owner learns which nonce is current.
        if (nonce < source.nonce) ctx.abort('stale nonce');
        if (nonce > source.nonce) ctx.abort(`nonce too high: account ${from} expects nonce ${source.nonce}`);
        if (source.balance < amount) ctx.abort('insufficient funds');
        ctx.write(accountId(from), { ...source, balance: source.balance - amount, nonce: source.nonce + 1 });
        // Read after the write: with from = to this sees the debited account, so a transfer to
        // oneself only advances the nonce.
        const dest = readAccount(ctx, to);
        ctx.write(accountId(to), { ...dest, balance: credit(ctx, dest.balance, amount) });
        return null;
      },

      balance(ctx: Ctx, raw: { account: number }): number {
        const args = asArgs(ctx, raw);
        return readAccount(ctx, accountArg(ctx, args, 'account')).balance;
      },

      /**
       * Writes sha256(memo ‖ balance as 8 bytes big-endian) into `stamp/<account>` and returns
       * it: a deterministic use of a pre-compiled function whose input repeats across
       * re-executions, so its lookup-table entry can be reused.
       */
      stamp(ctx: Ctx, raw: { account: number; memo: Uint8Array }): Uint8Array {
        const args = asArgs(ctx, raw);
        const account = accountArg(ctx, args, 'account');
        const memo = bytesArg(ctx, args, 'memo');
        const { balance } = readAccount(ctx, account);
        const input = Buffer.alloc(memo.length + 8);
        input.set(memo);
        input.writeBigUInt64BE(BigInt(balance), memo.length);
        const digest = ctx.precompile('sha256', input);
        ctx.write(stampId(account), digest);
        return digest;
      },
    },

    /** Account n and its stamp live in partition n mod P: a transfer involves at most two. */
    partition(id: string, partitions: number): number {
      const m = /^(?:acct|stamp)\/(\d+)$/.exec(id);
      return m?.[1] === undefined ? hashPartition(id, partitions) : Number(BigInt(m[1]) % BigInt(partitions));
    },

    objects(command, args): string[] {
      // Admission calls this for every transaction: nothing made per call but the answer.
      const a = (typeof args === 'object' && args !== null ? args : NO_ARGS) as Args;
      switch (command) {
        case 'open':
        case 'mint':
        case 'balance': {
          const account = a['account'];
          return isAccountNumber(account) ? [accountId(account)] : [];
        }
        case 'transfer': {
          const from = a['from'];
          const to = a['to'];
          const hasFrom = isAccountNumber(from);
          const hasTo = isAccountNumber(to) && to !== from;
          // Literals of their final length: a push onto a one-element array grows its store to 17.
          if (hasFrom && hasTo) return [accountId(from), accountId(to)];
          if (hasFrom) return [accountId(from)];
          return hasTo ? [accountId(to)] : [];
        }
        case 'stamp':
          return isAccountNumber(a['account']) ? [accountId(a['account']), stampId(a['account'])] : [];
        default:
          return [];
      }
    },
  });
}

export type BankApp = ReturnType<typeof bankApp>;

/** An ed25519 key pair: the raw public key and the private key `makeTx` signs with. */
export interface KeyPair {
  publicKey: Uint8Array;
  privateKey: KeyObject;
}

// PKCS#8 DER of an ed25519 private key, up to the 32 seed bytes (RFC 8410): node:crypto has
// no raw-seed import, and a deterministic key needs one.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** The ed25519 key pair whose private key is the 32-byte `seed`. */
export function keyPairFromSeed(seed: Uint8Array): KeyPair {
  if (!(seed instanceof Uint8Array) || seed.length !== 32) throw new TypeError('keyPairFromSeed: seed must be 32 bytes');
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const { x } = createPublicKey(privateKey).export({ format: 'jwk' });
  if (x === undefined) throw new Error('ed25519 public key exported without x');
  return { publicKey: Buffer.from(x, 'base64url'), privateKey };
}
