// @ts-check
// A client of a running token cluster, in its own process: it connects to the node's socket
// with the client credential of the cluster directory, submits a short scripted session and
// prints one JSON line per step. Usage:
//   node examples/token/client.mjs DIR
// where DIR is the cluster directory of `remora start node --dir DIR --app examples/token/token.mjs`.
import { join } from 'node:path';
import { loadClientSecret, makeTx, NODE_SOCKET, RemoraClient } from 'remora';
import token, { addressOf, demoKey } from './token.mjs';

const dir = process.argv[2];
if (dir === undefined) {
  process.stderr.write('usage: node examples/token/client.mjs DIR (the cluster directory of a running node)\n');
  process.exit(2);
}

const [issuer, alice, bob, mallory] = ['issuer', 'alice', 'bob', 'mallory'].map(demoKey);
if (!issuer || !alice || !bob || !mallory) throw new Error('unreachable: four labels give four keys');
const symbol = 'DEMO';
const client = await RemoraClient.connect({ path: join(dir, NODE_SOCKET), secret: loadClientSecret(dir) });

/**
 * Submits `tx` and prints what came back; bigints do not travel in JSON, so the timestamp is
 * printed as a number.
 * @param {string} step
 * @param {import('remora').Transaction} tx
 */
async function submit(step, tx) {
  const r = await client.submit(tx);
  process.stdout.write(`${JSON.stringify({ step, ts: Number(r.ts), duplicate: r.duplicate, outcome: r.outcome })}\n`);
}

const pay = (/** @type {typeof alice} */ from, /** @type {string} */ to, /** @type {number} */ amount, /** @type {number} */ nonce) =>
  makeTx(token, 'transfer', { symbol, from: from.publicKey, to, amount, nonce }, [from]);

try {
  await submit('create', makeTx(token, 'create', { symbol, issuer: issuer.publicKey, supply: 1000 }, [issuer]));
  await submit('issuer pays alice 300', pay(issuer, addressOf(alice.publicKey), 300, 0));
  const aliceToBob = pay(alice, addressOf(bob.publicKey), 120, 0);
  await submit('alice pays bob 120', aliceToBob);
  // The same bytes again are the same transaction: answered with the first outcome, not run twice.
  await submit('the same transfer resubmitted', aliceToBob);
  // Alice's key with a signature that is not hers: the command's ctx.authenticate says no.
  const forged = pay(alice, addressOf(mallory.publicKey), 100, 1);
  const signature = Buffer.from(forged.auth[0]?.signature ?? []);
  signature[0] = (signature[0] ?? 0) ^ 1;
  await submit('a forged transfer to mallory', { body: forged.body, auth: [{ scheme: 'ed25519', publicKey: alice.publicKey, signature }] });
  await submit('alice replays nonce 0', pay(alice, addressOf(bob.publicKey), 50, 0));
  await submit('alice overspends', pay(alice, addressOf(bob.publicKey), 999, 1));
  for (const [name, key] of /** @type {const} */ ([
    ['issuer', issuer],
    ['alice', alice],
    ['bob', bob],
    ['mallory', mallory],
  ])) {
    await submit(`balance of ${name}`, makeTx(token, 'balance', { symbol, address: addressOf(key.publicKey) }));
  }
} finally {
  client.close();
}
