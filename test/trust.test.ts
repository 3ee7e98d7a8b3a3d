// Hostile clients (docs/security.md): each attack of the trust issue, made as an attacker holding
// a valid client credential would make it, against a real node.
import { randomBytes, sign } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { decode, encode } from '../ts/app/codec.js';
import type { LookupTable } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { decodeTx, encodeBody, type Authenticator, type DecodedTx, type Transaction } from '../ts/app/tx.js';
import { accountId, keyPairFromSeed, kvApp, type Account } from '../ts/apps/index.js';
import { RemoraClient } from '../ts/client.js';
import { EmbeddedCluster, NODE_SOCKET } from '../ts/cluster.js';
import { EmbeddedNode, type PreExecutorLink } from '../ts/pipeline/node.js';
import { PreExecutor } from '../ts/pipeline/preexecutor.js';
import { EmbeddedSequencer } from '../ts/pipeline/sequencer.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { CredentialError, loadClientSecret, loadOrCreateSecret } from '../ts/secret.js';
import { Store } from '../ts/store.js';
import { connect, type Conn } from '../ts/wire.js';
import { BankAccounts } from '../ts/workload.js';
import { tempCluster } from './helpers.js';

const sortByKey = (auth: Authenticator[]): Authenticator[] => [...auth].sort((a, b) => Buffer.compare(a.publicKey, b.publicKey));

describe('hostile clients', () => {
  let dir: ReturnType<typeof tempCluster>;
  let cluster: EmbeddedCluster | null = null;
  const conns: Conn[] = [];
  beforeEach(() => {
    dir = tempCluster();
  });
  afterEach(async () => {
    for (const c of conns.splice(0)) c.fail(new Error('test over'));
    await cluster?.close();
    cluster = null;
    dir.cleanup();
  });

  const start = async (app: string, extra: Partial<Parameters<typeof EmbeddedCluster.start>[0]> = {}) => {
    cluster = await EmbeddedCluster.start({ dir: dir.dir, app, preExecutors: 0, log: () => undefined, ...extra });
    return cluster;
  };
  const client = () => RemoraClient.connect({ path: join(dir.dir, NODE_SOCKET), secret: loadClientSecret(dir.dir) });
  const balance = (c: EmbeddedCluster, account: number): number => {
    const v = c.node.primary.current([accountId(account)])[0]?.value;
    return v === undefined ? -1 : (decode(v) as Account).balance;
  };

  it('cannot block a signed transfer or mint by submitting its body first with other authenticators', async () => {
    const c = await start('bank');
    const alice = await client();
    const bank = new BankAccounts(2, 7);
    const [open0, open1, mint0, mint1] = bank.setup(1000);
    if (!open0 || !open1 || !mint0 || !mint1) throw new Error('set-up is four transactions');
    for (const tx of [open0, open1]) expect((await alice.submit(tx)).outcome?.status).toBe('ok');

    // An unsigned copy of the authority's mint goes first: it is another transaction.
    const squatMint = await alice.submit({ body: mint0.body, auth: [] });
    expect(squatMint.outcome).toEqual({ status: 'aborted', reason: 'mint must be signed by the mint authority' });
    const realMint = await alice.submit(mint0);
    expect(realMint).toMatchObject({ duplicate: false, outcome: { status: 'ok', result: 1000 } });
    expect((await alice.submit(mint1)).outcome?.status).toBe('ok');

    // Alice's transfer, predicted and submitted first with a random signature under her key.
    const transfer = bank.transfer(0, 1, 10);
    const [sig] = transfer.auth;
    if (!sig) throw new Error('a transfer is signed');
    const forged: Transaction = { body: transfer.body, auth: [{ ...sig, signature: randomBytes(64) }] };
    const squat = await alice.submit(forged);
    expect(squat).toMatchObject({ duplicate: false, outcome: { status: 'aborted', reason: 'bad signature' } });
    // The same body with a valid signature of the attacker's own added: it would run Alice's
    // transfer a second time under a new digest, so it must not commit.
    const mallory = keyPairFromSeed(Buffer.alloc(32, 9));
    const extra: Authenticator = { scheme: 'ed25519', publicKey: mallory.publicKey, signature: sign(null, transfer.body, mallory.privateKey) };
    const padded = await alice.submit({ body: transfer.body, auth: sortByKey([sig, extra]) });
    expect(padded.outcome).toMatchObject({
      status: 'aborted',
      reason: expect.stringMatching(/^authenticator \d \(key [0-9a-f]{16}…\) was not asked for by transfer$/),
    });
    // Out of order, the pair is refused outright: one set of signatures has one encoding.
    const unsorted = Buffer.compare(sig.publicKey, extra.publicKey) < 0 ? [extra, sig] : [sig, extra];
    await expect(alice.submit({ body: transfer.body, auth: unsorted })).rejects.toThrow('authenticators must be sorted by public key, each key at most once');

    const real = await alice.submit(transfer);
    expect(real).toMatchObject({ duplicate: false, outcome: { status: 'ok', result: null } });
    // The real one, resubmitted by anyone, is itself: answered as a duplicate with its outcome.
    const again = await alice.submit(transfer);
    expect(again).toMatchObject({ duplicate: true, ts: real.ts, outcome: { status: 'ok', result: null } });
    expect([balance(c, 0), balance(c, 1)]).toEqual([990, 1010]);
  });

  it('cannot attach as a pre-executor with a client credential, nor as a client with a member credential', async () => {
    const c = await start('kv');
    const path = join(dir.dir, NODE_SOCKET);
    const clientSecret = loadClientSecret(dir.dir);
    await expect(connect({ path, secret: clientSecret, role: 'pre-executor:evil', log: () => undefined })).rejects.toThrow(
      /handshake with .* failed: the server does not share this credential for role "pre-executor:evil"/,
    );
    expect(c.node.members).toEqual([]);
    await expect(connect({ path, secret: loadOrCreateSecret(dir.dir), role: 'client', log: () => undefined })).rejects.toThrow(/handshake with .* failed/);
    await expect(connect({ path, secret: clientSecret, role: 'heron-replica:0.0', log: () => undefined })).rejects.toThrow(/handshake/);
    // The member credential does open the member's role.
    const member = await connect({ path, secret: loadOrCreateSecret(dir.dir), role: 'pre-executor:ok', log: () => undefined });
    conns.push(member);
    const config = new Promise<unknown>((resolve) => member.onMessage(resolve));
    member.send({ t: 'hello', app: 'kv', digest: c.node.versions.active.digest });
    expect(await config).toMatchObject({ t: 'config' });
    expect(c.node.members).toEqual(['ok']);
  });

  it('names hostile values in errors without calling into them, and keeps serving', async () => {
    const lines: string[] = [];
    await start('kv', { log: (m) => lines.push(m) });
    const alice = await client();
    const put = makeTx(kvApp, 'put', { key: 'a', value: 'b' });
    const hostile = { scheme: { toString: 1 }, publicKey: new Uint8Array(32), signature: new Uint8Array(64) };
    await expect(alice.submit({ body: put.body, auth: [hostile] as unknown as Authenticator[] })).rejects.toThrow('authenticator 0: unknown scheme an object');
    const raw = await connect({ path: join(dir.dir, NODE_SOCKET), secret: loadClientSecret(dir.dir), role: 'client', log: () => undefined });
    conns.push(raw);
    const gone = new Promise<void>((resolve) => raw.onClose(() => resolve()));
    raw.send({ t: 2n ** 63n, id: 1 });
    await gone;
    expect(lines).toContainEqual(expect.stringMatching(/^client at .*: expected a submit message, got a message of type bigint; closing the connection$/));
    expect((await alice.submit(put)).outcome?.status).toBe('ok');
  });

  it('stops reading a client that does not read its replies, and the others keep being served', async () => {
    const c = await start('kv', { clientLimits: { inFlight: 32, pauseBytes: 64 * 1024, maxUnreadBytes: 1 << 20 } });
    const path = join(dir.dir, NODE_SOCKET);
    // No message handler: this end never takes its replies, as a client that stopped reading.
    const greedy = await connect({ path, secret: loadClientSecret(dir.dir), role: 'client', log: () => undefined });
    conns.push(greedy);
    const junk = { body: encodeBody('nope', {}, []), auth: [] };
    const flood = 200_000;
    for (let id = 1; id <= flood; id++) greedy.send({ t: 'submit', id, tx: junk });
    const honest = await client();
    const puts = Array.from({ length: 300 }, (_, i) => makeTx(kvApp, 'put', { key: `k${i % 17}`, value: `v${i}` }));
    const replies = await Promise.all(puts.map((tx) => honest.submit(tx)));
    expect(replies.every((r) => r.outcome?.status === 'ok')).toBe(true);
    // Everything the node read from the greedy client fits in the replies it could buffer.
    const fromGreedy = c.serving.requests - puts.length;
    expect(fromGreedy).toBeLessThan(flood / 10);
    expect(c.serving.paused).toBeGreaterThan(0);
    expect(c.serving.cutOff).toBe(0);
  });

  it('cuts off a client whose unread replies pass the limit', async () => {
    const c = await start('kv', { clientLimits: { inFlight: 1 << 20, pauseBytes: 1 << 30, maxUnreadBytes: 256 * 1024 } });
    const path = join(dir.dir, NODE_SOCKET);
    const greedy = await connect({ path, secret: loadClientSecret(dir.dir), role: 'client', log: () => undefined });
    conns.push(greedy);
    const gone = new Promise<Error | undefined>((resolve) => greedy.onClose(resolve));
    const junk = { body: encodeBody('nope', {}, ['x'.repeat(64)]), auth: [] };
    for (let id = 1; id <= 100_000; id++) greedy.send({ t: 'submit', id, tx: junk });
    await gone;
    expect(c.serving.cutOff).toBe(1);
    const honest = await client();
    expect((await honest.submit(makeTx(kvApp, 'put', { key: 'a', value: 'b' }))).outcome?.status).toBe('ok');
  });

  it('refuses a cluster directory or a secret someone else could have planted or read', async () => {
    const open = join(dir.dir, 'open');
    mkdirSync(open, { mode: 0o700 });
    chmodSync(open, 0o777);
    writeFileSync(join(open, 'cluster.secret'), randomBytes(32), { mode: 0o644 });
    await expect(EmbeddedCluster.start({ dir: open, app: 'kv', preExecutors: 0 })).rejects.toThrow(
      new CredentialError(
        `refusing directory ${open}: its mode is 0777, open to group or other; use a directory of your own with 'chmod 700 ${open}', or another --dir`,
      ),
    );
    chmodSync(open, 0o700);
    await expect(EmbeddedCluster.start({ dir: open, app: 'kv', preExecutors: 0 })).rejects.toThrow(
      /^refusing file .*cluster\.secret: its mode is 0644, open to group or other; a secret must be readable by you alone/,
    );
  });
});

describe('results from members', () => {
  it('takes a lookup table only from the pre-executor the transaction was handed to', async () => {
    const dir = tempCluster();
    const sequencer = new EmbeddedSequencer(join(dir.dir, 'log'));
    const store = new NativePrimaryStore(Store.create({ dir: dir.dir, name: 'primary', secret: dir.secret }));
    try {
      const node = new EmbeddedNode(kvApp, nativeFunctions, sequencer, store, { deadlineMs: 5_000, policy: 'round-robin', localWhenAlone: false });
      // Test doubles: links that hold what they are handed until the test answers for them.
      const handed = new Map<string, DecodedTx[]>();
      let onHanded: () => void = () => undefined;
      const link = (name: string): PreExecutorLink => ({
        name,
        send: (txs) => {
          handed.set(name, [...(handed.get(name) ?? []), ...txs]);
          onHanded();
        },
        sendEffects: () => undefined,
        sendObjects: () => undefined,
        sendFeedback: () => undefined,
      });
      node.addPreExecutor(link('honest'));
      node.addPreExecutor(link('rogue'));
      node.start();
      const tx = makeTx(kvApp, 'put', { key: 'a', value: 'mine' });
      const { digest } = decodeTx(tx);
      const wasHanded = new Promise<void>((resolve) => (onHanded = resolve));
      const reply = node.submit(tx);
      await wasHanded;
      const [owner] = [...handed.keys()];
      const other = owner === 'honest' ? 'rogue' : 'honest';
      const forged: LookupTable = {
        reads: [],
        dynamic: [],
        speculative: [],
        writes: [['kv/b', encode('forged')]],
        auth: [],
        precompiles: [],
        outcome: { status: 'ok', result: 'forged' },
      };
      node.result(other, digest, forged);
      const pre = new PreExecutor(kvApp, nativeFunctions);
      for (const [d, table] of pre.run(handed.get(owner ?? '') ?? [])) node.result(owner ?? '', d, table);
      node.result(owner ?? '', digest, forged); // once more, after it was returned
      expect((await reply).outcome).toEqual({ status: 'ok', result: null });
      expect(node.unowedResults).toBe(2);
      const [a, b] = node.primary.current(['kv/a', 'kv/b']);
      expect(a?.value && decode(a.value)).toBe('mine');
      expect(b?.value).toBeUndefined();
    } finally {
      await sequencer.close();
      store.store.close();
      dir.cleanup();
    }
  });
});
