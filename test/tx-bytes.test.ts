// Admission decodes `tx.v1` bytes on a path of its own (no views per authenticator, the digest's
// input copied from the bytes). Held here to the path through `{ body, auth }` objects: the same
// transaction, the same digest and authenticators, and for damaged bytes the same refusal.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeTx, encodeBody, encodeTxBytes, forwardedTx, splitTxBytes, TxError, type Authenticator, type DecodedTx } from '../ts/app/tx.js';
import { isAdmin } from '../ts/app/versions.js';
import { xorshift } from './helpers.js';

/** What decoding gave, or the refusal's message; anything other than a `TxError` fails the test. */
function outcome(decode: () => DecodedTx): { tx: Omit<DecodedTx, 'auth'> & { auth: Authenticator[] } } | { refused: string } {
  try {
    const tx = decode();
    const { command, args, objects, digest, body, bytes } = tx;
    return {
      tx: {
        command,
        args,
        objects,
        digest,
        body: Buffer.from(body),
        bytes: Buffer.from(bytes),
        auth: tx.auth.map((a) => ({ ...a, publicKey: Buffer.from(a.publicKey), signature: Buffer.from(a.signature) })),
      },
    };
  } catch (e) {
    if (!(e instanceof TxError)) throw e;
    return { refused: e.message };
  }
}

/** The reference: split into objects, then decoded as a client's `{ body, auth }` would be. */
function viaObjects(bytes: Buffer): DecodedTx {
  const { tx, end } = splitTxBytes(bytes);
  if (end !== bytes.length) throw new TxError(`transaction bytes hold ${bytes.length - end} bytes after the transaction`);
  return decodeTx(tx);
}

describe('decodeTx of tx.v1 bytes', () => {
  it('agrees with decoding the same transaction as objects, for whole and damaged bytes', () => {
    const seed = Number(process.env['REMORA_SEED'] ?? randomBytes(4).readUInt32LE());
    console.log(`tx bytes test: seed ${seed} (REMORA_SEED to replay)`);
    const next = xorshift(seed);
    const rand = (n: number): number => Math.floor(next() * n);
    const bytesOf = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => rand(256)));
    let accepted = 0;
    for (let round = 0; round < 3000; round++) {
      const objects = Array.from({ length: rand(4) }, (_, i) => `obj/${rand(1000)}/${i}`);
      const body = encodeBody(rand(8) === 0 ? '' : `cmd${rand(3)}`, { n: rand(1 << 20), memo: bytesOf(rand(40)) }, objects);
      // Keys in order unless the round means them not to be; a repeated key now and then.
      const auth: Authenticator[] = Array.from({ length: rand(4) }, () => ({ scheme: 'ed25519' as const, publicKey: bytesOf(32), signature: bytesOf(64) }));
      if (rand(3) !== 0) auth.sort((a, b) => Buffer.compare(a.publicKey, b.publicKey));
      const [first, second] = auth;
      if (first && second && rand(8) === 0) auth[1] = { ...second, publicKey: first.publicKey };
      let bytes = encodeTxBytes({ body, auth });
      switch (rand(6)) {
        case 0:
          bytes = bytes.subarray(0, rand(bytes.length));
          break;
        case 1:
          bytes = Buffer.concat([bytes, bytesOf(1 + rand(3))]);
          break;
        case 2:
          bytes = Buffer.from(bytes);
          bytes[rand(bytes.length)] = rand(256);
          break;
      }
      const got = outcome(() => decodeTx(bytes));
      expect(got, `round ${round}`).toEqual(outcome(() => viaObjects(bytes)));
      if ('tx' in got) accepted++;
    }
    // Both kinds of answer were exercised, not only refusals.
    expect(accepted).toBeGreaterThan(300);
  });

  it('splits the authenticators out of the bytes only when asked, as the same values each time', () => {
    const auth: Authenticator[] = [1, 2].map((k) => ({ scheme: 'ed25519', publicKey: Buffer.alloc(32, k), signature: Buffer.alloc(64, k + 10) }));
    const tx = decodeTx(encodeTxBytes({ body: encodeBody('c', null, ['a']), auth }));
    expect(tx.auth).toEqual(auth);
    expect(tx.auth).toBe(tx.auth);
  });
});

describe('a forwarded transaction', () => {
  /** As the node holds one an admission process forwarded: digest and slots beside its bytes. */
  const forwarded = (command: string, objects: string[]): DecodedTx => {
    const bytes = encodeTxBytes({ body: encodeBody(command, { n: 1 }, objects), auth: [] });
    const slots = Buffer.alloc(2 + 4 * objects.length);
    slots.writeUInt16LE(objects.length, 0);
    return forwardedTx('ab'.repeat(32), bytes, Buffer.alloc(32, 0xab), 0, slots, 0);
  };

  it("tells the node's own commands from its bytes as the decoded command does", () => {
    const commands = [
      'transfer',
      'remora.upgrade',
      'remora.',
      'remora',
      'remor.x',
      'Remora.upgrade',
      'x'.repeat(40),
      `remora.${'y'.repeat(50)}`,
      `${'z'.repeat(31)}`,
    ];
    for (const command of commands) {
      const tx = forwarded(command, ['a', 'b']);
      // Asked before the command, so the body is still undecoded when it answers.
      const admin = tx.admin;
      expect(admin, command).toBe(command.startsWith('remora.'));
      expect(isAdmin(tx), command).toBe(admin);
      expect([tx.command, tx.objects, tx.args]).toEqual([command, ['a', 'b'], { n: 1 }]);
    }
  });
});
