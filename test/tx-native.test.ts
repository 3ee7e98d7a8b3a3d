// Admission's native check vouches for a transaction's framing and canonical body and gives its
// digest, sparing the body's second encoding; whatever it cannot vouch for, the JavaScript
// check decides. The rule it must keep: a body it vouches for is canonical as the JavaScript
// check defines it (decoded and encoded again, the same bytes), under the same digest, so
// admission answers exactly as the `{ body, auth }` path (which never asks it) does.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { vouchTx, vouchTxs } from '../ts/binding.js';
import { decode, encode, type Data } from '../ts/app/codec.js';
import { decodeTx, decodeTxBatch, encodeBody, encodeTxBytes, splitTxBytes, txDigest, TxError, type Authenticator } from '../ts/app/tx.js';
import { bankWorkload } from '../ts/workload.js';
import { xorshift } from './helpers.js';

/** The JavaScript check alone: the bytes split into objects, decoded as a client's `{ body, auth }`. */
function viaObjects(bytes: Buffer): { digest: string; command: string; args: unknown; objects: string[] } | { refused: string } {
  try {
    const { tx, end } = splitTxBytes(bytes);
    if (end !== bytes.length) throw new TxError('bytes after the transaction');
    const { digest, command, args, objects } = decodeTx(tx);
    return { digest, command, args, objects };
  } catch (e) {
    if (!(e instanceof TxError)) throw e;
    return { refused: e.message };
  }
}

/** Random plain data of every kind the codec writes, at its size boundaries, and some it leaves to JavaScript. */
/** A random source from a printed seed (`REMORA_SEED` replays it), and random data from it. */
function seeded(test: string): { rand: (n: number) => number; data: (depth: number) => Data } {
  const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
  console.log(`${test}: seed ${seed} (REMORA_SEED to replay)`);
  const next = xorshift(seed);
  const rand = (n: number): number => Math.floor(next() * n);
  return { rand, data: randomData(rand) };
}

/** Up to two ed25519 authenticators of random bytes, sorted by key as admission requires. */
function randomAuth(rand: (n: number) => number): Authenticator[] {
  const auth: Authenticator[] = Array.from({ length: rand(3) }, () => ({
    scheme: 'ed25519' as const,
    publicKey: Buffer.from(Array.from({ length: 32 }, () => rand(256))),
    signature: Buffer.from(Array.from({ length: 64 }, () => rand(256))),
  }));
  return auth.sort((a, b) => Buffer.compare(a.publicKey, b.publicKey));
}

function randomData(rand: (n: number) => number): (depth: number) => Data {
  const ints = [
    0,
    1,
    31,
    32,
    127,
    128,
    255,
    256,
    65535,
    65536,
    2 ** 32 - 1,
    2 ** 32,
    2 ** 53 - 1,
    -1,
    -32,
    -33,
    -128,
    -129,
    -32768,
    -32769,
    -(2 ** 31),
    -(2 ** 31) - 1,
  ];
  const floats = [0.5, -2.25, 1e300, -1e-300, 2 ** 40, 3.000001];
  const chars = ['a', 'b', 'z', '0', '7', '_', 'é', 'ÿ', 'Ā', '中', '\ufeff', '\u0000', '\u2028', '\uffff', '😀', '\ud800'];
  const str = (len: number): string => Array.from({ length: len }, () => chars[rand(chars.length)]).join('');
  const keys = ['', 'a', 'ab', 'b', 'é', '中', '\ufeffa', '😀', '1', '10', '01', 'z9', '__proto_', 'constructor'];
  const value = (depth: number): Data => {
    switch (rand(depth > 2 ? 8 : 11)) {
      case 0:
        return null;
      case 1:
        return rand(2) === 0;
      case 2:
        return ints[rand(ints.length)] ?? 0;
      case 3:
        return rand(2) === 0 ? (floats[rand(floats.length)] ?? 0) : rand(1 << 30) - (1 << 29);
      case 4:
        return rand(6) === 0 ? BigInt(rand(1000)) - 500n : (rand(5) === 0 ? 2 ** 33 : rand(100000)) * (rand(2) === 0 ? 1 : -1);
      case 5:
        return str(rand(6) === 0 ? 40 + rand(300) : rand(12));
      case 6:
      case 7:
        return Buffer.from(Array.from({ length: rand(6) === 0 ? 250 + rand(20) : rand(8) }, () => rand(256)));
      case 8:
        return Array.from({ length: rand(6) === 0 ? 16 + rand(4) : rand(5) }, () => value(depth + 1));
      default: {
        const out: Record<string, Data> = {};
        const n = rand(6) === 0 ? 16 + rand(4) : rand(5);
        for (let i = 0; i < n; i++) out[rand(4) === 0 ? `k${i}` : (keys[rand(keys.length)] ?? '')] = value(depth + 1);
        return out;
      }
    }
  };
  return value;
}

describe('the native admission check', () => {
  it('vouches only for what the JavaScript check accepts, with the same digest, over random and damaged bodies', () => {
    const { rand, data } = seeded('native tx check test');
    let vouched = 0;
    let leftToJs = 0;
    let damagedVouched = 0;
    for (let round = 0; round < 4000; round++) {
      const auth = randomAuth(rand);
      let body = encodeBody(`cmd${rand(3)}`, data(0), [`obj/${rand(100)}`]);
      const whole = rand(2) === 0;
      if (!whole) {
        // Damage inside the body, keeping the framing valid: the canonical check is what decides.
        body = Buffer.from(body);
        const at = rand(body.length);
        if (rand(3) === 0) body = Buffer.concat([body.subarray(0, at), Buffer.from([rand(256)]), body.subarray(at)]);
        else if (rand(2) === 0) body = Buffer.concat([body.subarray(0, at), body.subarray(at + 1)]);
        else body[at] = rand(256);
      }
      const bytes = encodeTxBytes({ body, auth });
      const digest = vouchTx(bytes);
      const reference = viaObjects(bytes);
      if (digest === null) {
        leftToJs++;
      } else {
        // Canonical as the JavaScript check defines it: decoded and encoded again, the same bytes.
        let again: string;
        try {
          again = encode(decode(body)).toString('hex');
        } catch (e) {
          again = String(e);
        }
        expect(again, `round ${round}: vouched for a body that is not canonical`).toBe(body.toString('hex'));
        expect(digest, `round ${round}`).toBe(txDigest(body, auth));
        vouched++;
        if (!whole) damagedVouched++;
      }
      // Admission of the bytes, fast path or not, answers as the JavaScript check does.
      let admitted: ReturnType<typeof viaObjects>;
      try {
        const { digest: d, command, args, objects } = decodeTx(bytes);
        admitted = { digest: d, command, args, objects };
      } catch (e) {
        if (!(e instanceof TxError)) throw e;
        admitted = { refused: e.message };
      }
      expect(admitted, `round ${round}`).toEqual(reference);
    }
    // Both answers were exercised, including damage that happened to stay canonical.
    expect(vouched).toBeGreaterThan(800);
    expect(leftToJs).toBeGreaterThan(800);
    expect(damagedVouched).toBeGreaterThan(100);
  });

  it('answers a batch per transaction as it answers each alone, damaged framing included', () => {
    const { rand, data } = seeded('native tx batch test');
    const txs: Buffer[] = [];
    for (let i = 0; i < 1500; i++) {
      const auth = randomAuth(rand);
      let bytes = encodeTxBytes({ body: encodeBody(`cmd${rand(3)}`, data(0), [`obj/${rand(100)}`]), auth });
      const damage = rand(8);
      if (damage === 0) bytes = bytes.subarray(0, rand(bytes.length));
      else if (damage === 1) bytes = Buffer.concat([bytes, Buffer.from([rand(256)])]);
      else if (damage === 2) bytes[rand(bytes.length)] = rand(256);
      txs.push(bytes);
    }
    const alone = (bytes: Buffer): { digest: string; command: string; args: unknown; objects: string[] } | { refused: string } => {
      try {
        const { digest, command, args, objects } = decodeTx(bytes);
        return { digest, command, args, objects };
      } catch (e) {
        return { refused: (e as Error).message };
      }
    };
    let refused = 0;
    for (let at = 0; at < txs.length;) {
      const batch = txs.slice(at, (at += 1 + rand(64)));
      const ends = new Uint32Array(batch.length);
      batch.reduce((end, b, i) => (ends[i] = end + b.length), 0);
      const digests = vouchTxs(Buffer.concat(batch), ends).toString('latin1');
      expect(digests.length).toBe(64 * batch.length);
      batch.forEach((b, i) => expect(digests.slice(64 * i, 64 * i + 64)).toBe(vouchTx(b) ?? '-'.repeat(64)));
      decodeTxBatch(batch).forEach((got, i) => {
        const want = alone(batch[i] as Buffer);
        if ('refused' in want) {
          refused++;
          expect(got).toBeInstanceOf(TxError);
          expect((got as Error).message).toBe(want.refused);
        } else {
          const { digest, command, args, objects } = got as Exclude<typeof got, Error>;
          expect({ digest, command, args, objects }).toEqual(want);
        }
      });
    }
    expect(refused).toBeGreaterThan(200);
    expect(refused).toBeLessThan(txs.length - 200);
  });

  it('refuses a batch whose ends are out of order or past its bytes, whole', () => {
    const tx = encodeTxBytes({ body: encodeBody('c', null, []), auth: [] });
    const two = Buffer.concat([tx, tx]);
    expect(vouchTxs(two, Uint32Array.of(tx.length, 2 * tx.length)).toString('latin1')).toBe(vouchTx(tx)?.repeat(2));
    expect(() => vouchTxs(two, Uint32Array.of(tx.length, tx.length - 1))).toThrow(
      `vouchTxs: ends[1] = ${tx.length - 1} is before ${tx.length} or past the ${two.length} bytes`,
    );
    expect(() => vouchTxs(two, Uint32Array.of(2 * tx.length + 1))).toThrow(
      `vouchTxs: ends[0] = ${2 * tx.length + 1} is before 0 or past the ${two.length} bytes`,
    );
    expect(vouchTxs(two, new Uint32Array(0)).length).toBe(0);
  });

  it('vouches for every transaction of the bank workload', () => {
    const w = bankWorkload({ accounts: 100, alpha: 0, seed: 3 });
    for (const tx of [...w.setup.slice(0, 50), ...Array.from({ length: 200 }, () => w.next())]) {
      const bytes = encodeTxBytes(tx);
      expect(vouchTx(bytes)).toBe(decodeTx(tx).digest);
    }
  });

  it('leaves to JavaScript what it cannot prove canonical, which then accepts or refuses it as before', () => {
    const accepted: Data[] = [5n, { '1': 1, a: 2 }, { '😀': 1 }];
    for (const args of accepted) {
      const bytes = encodeTxBytes({ body: encodeBody('c', args, []), auth: [] });
      expect(vouchTx(bytes)).toBeNull();
      expect(decodeTx(bytes).digest).toBe((viaObjects(bytes) as { digest: string }).digest);
    }
    // A float32, a non-minimal integer, and a lone surrogate as the encoder writes it in a short
    // string (which decodes as U+FFFD): never canonical.
    for (const value of [Buffer.from([0xca, 0x3f, 0, 0, 0]), Buffer.from([0xcc, 0x05]), Buffer.from([0xa3, 0xed, 0xa0, 0x80])]) {
      const body = Buffer.concat([encodeBody('c', null, []).subarray(0, -2), value, Buffer.from([0x90])]);
      const bytes = encodeTxBytes({ body, auth: [] });
      expect(vouchTx(bytes)).toBeNull();
      expect(() => decodeTx(bytes)).toThrow('not in canonical form');
    }
  });
});
