// Submissions a client's connection delivers in one read are admitted together (one native
// check, one append): each must still be answered exactly as if it had come alone, and
// sequenced in the order it was sent.
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeTx } from '../ts/app/app.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { encodeBody, encodeTxBytes, type Transaction } from '../ts/app/tx.js';
import { kvApp } from '../ts/apps/index.js';
import { RemoraClient } from '../ts/client.js';
import { EmbeddedCluster, NODE_SOCKET } from '../ts/cluster.js';
import { EmbeddedNode, type Reply, type SubmitDone } from '../ts/pipeline/node.js';
import { EmbeddedSequencer } from '../ts/pipeline/sequencer.js';
import { NativePrimaryStore } from '../ts/pipeline/store-adapter.js';
import { loadClientSecret } from '../ts/secret.js';
import { Store } from '../ts/store.js';
import { tempCluster } from './helpers.js';

describe('admission of a read in one batch', () => {
  let dir: ReturnType<typeof tempCluster>;
  let cluster: EmbeddedCluster | null = null;
  let alice: RemoraClient | null = null;
  beforeEach(() => {
    dir = tempCluster();
  });
  afterEach(async () => {
    alice?.close();
    alice = null;
    await cluster?.close();
    cluster = null;
    dir.cleanup();
  });

  const put = (k: number): Transaction => makeTx(kvApp, 'put', { key: `batch/${k}`, value: k });
  const refusal = (p: Promise<Reply>): Promise<string> =>
    p.then(
      (r) => `accepted at ${r.ts}`,
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );

  it('answers each submission of a burst as alone, in the order sent, a duplicate with the first one’s place', async () => {
    // The client and the node share this thread: the burst, written in one turn, is read whole.
    cluster = await EmbeddedCluster.start({ dir: dir.dir, app: 'kv', preExecutors: 0, log: () => undefined });
    alice = await RemoraClient.connect({ path: join(dir.dir, NODE_SOCKET), secret: loadClientSecret(dir.dir) });
    const c = alice;
    const before = Array.from({ length: 10 }, (_, k) => c.submit(put(k)));
    const duplicate = c.submit(put(3));
    const unknown = refusal(c.submit({ body: encodeBody('nope', { key: 'x' }, ['x']), auth: [] }));
    const misdeclared = refusal(c.submit({ body: encodeBody('put', { key: 'a', value: 1 }, ['b']), auth: [] }));
    const garbage = refusal(c.submit(Uint8Array.of(1, 2, 3)));
    // Not `tx.v1` (an unknown scheme): the general path, after what came before it.
    const objectForm = refusal(
      c.submit({ body: put(99).body, auth: [{ scheme: 'rsa' as 'ed25519', publicKey: Buffer.alloc(32), signature: Buffer.alloc(64) }] }),
    );
    // Asks for an optimistic reply: admitted alone, between the two batches around it.
    const optimistic = c.submitOptimistic(put(10)).final;
    const after = Array.from({ length: 9 }, (_, k) => c.submit(put(11 + k)));

    const first = await Promise.all(before);
    const dup = await duplicate;
    const middle = await optimistic;
    const last = await Promise.all(after);
    for (const r of [...first, middle, ...last]) expect(r.outcome).toEqual({ status: 'ok', result: null });
    const order = [...first, middle, ...last].map((r) => r.ts);
    expect(order).toEqual([...order].sort((a, b) => (a < b ? -1 : 1)));
    expect(new Set(order).size).toBe(order.length);
    expect(dup.duplicate).toBe(true);
    expect(dup.ts).toBe(first[3]?.ts);
    expect(await unknown).toBe('unknown command "nope" for app kv');
    expect(await misdeclared).toBe('declared objects ["b"] differ from what kv.put touches (["kv/a"]); build the body with the app\'s objects()');
    expect(await garbage).toBe('transaction bytes are truncated');
    expect(await objectForm).toBe('authenticator 0: unknown scheme "rsa"');
  });

  it('sends a batch to the log in one append, its refusals answered apart', async () => {
    const sequencer = new EmbeddedSequencer(join(dir.dir, 'log'));
    const store = new NativePrimaryStore(Store.create({ dir: dir.dir, name: 'primary', secret: dir.secret }));
    try {
      const node = new EmbeddedNode(kvApp, nativeFunctions, sequencer, store, { deadlineMs: 50, localWhenAlone: false });
      node.start();
      const txs: Uint8Array[] = Array.from({ length: 40 }, (_, k) => encodeTxBytes(put(k)));
      txs.splice(7, 0, Uint8Array.of(9, 9));
      const done: SubmitDone[] = [];
      const answers = txs.map((_, k) => new Promise<string>((resolve) => (done[k] = (e, r) => resolve(e ? e.message : `${r?.outcome?.status}`))));
      const appends = sequencer.appends;
      node.submitBatch(txs, done);
      const got = await Promise.all(answers);
      expect(got[7]).toBe('transaction bytes are truncated');
      expect(got.filter((g) => g === 'ok')).toHaveLength(40);
      // Its first transaction does not go out alone, with the rest in a second append.
      expect(sequencer.appends - appends).toBe(1);
    } finally {
      await sequencer.close();
      store.store.close();
    }
  });
});
