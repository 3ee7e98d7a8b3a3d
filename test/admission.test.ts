// Admission processes (docs/pipeline.md, "Admission processes"): clients of one are answered as
// the node would answer them, the node's state is what sequential re-execution of its log
// gives, and neither a client nor a member can turn the admission link against the node.
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { unpack } from 'msgpackr';
import { makeTx } from '../ts/app/app.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { admitTx } from '../ts/app/admit.js';
import { encodeBody, TxError, type Transaction } from '../ts/app/tx.js';
import { kvApp } from '../ts/apps/index.js';
import { RemoraClient } from '../ts/client.js';
import { EmbeddedCluster, NODE_SOCKET } from '../ts/cluster.js';
import { startLoadGenerators, type LoadGenerators } from '../ts/loadgen.js';
import { admissionMetrics, createRegistry } from '../ts/metrics.js';
import { AdmissionFront, runAdmission } from '../ts/pipeline/admission.js';
import { loadAppModule } from '../ts/app/module.js';
import { parseHostPort } from '../ts/transport.js';
import { admitMessage, AnswerWriter, parseAdmissionMessage, readAnswers, type Answer } from '../ts/pipeline/admission-frames.js';
import { ProtocolError } from '../ts/pipeline/messages.js';
import type { Reply, SubmitDone } from '../ts/pipeline/node.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import { slotOf } from '../ts/pipeline/scheduler.js';
import { loadClientSecret, loadOrCreateSecret } from '../ts/secret.js';
import { bankWorkload } from '../ts/workload.js';
import { connect, type Conn } from '../ts/wire.js';
import { tempCluster } from './helpers.js';

const put = (k: number): Transaction => makeTx(kvApp, 'put', { key: `adm/${k}`, value: k });
const refusal = (p: Promise<Reply>): Promise<string> =>
  p.then(
    (r) => `accepted at ${r.ts}`,
    (e: unknown) => (e instanceof Error ? e.message : String(e)),
  );

describe('admission processes', () => {
  let dir: ReturnType<typeof tempCluster>;
  let cluster: EmbeddedCluster | null = null;
  let gens: LoadGenerators | null = null;
  const clients: RemoraClient[] = [];
  const conns: Conn[] = [];
  beforeEach(() => {
    dir = tempCluster();
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const c of conns.splice(0)) c.fail(new Error('test over'));
    await gens?.close();
    gens = null;
    await cluster?.close();
    cluster = null;
    dir.cleanup();
  });

  const clientOf = async (path: string): Promise<RemoraClient> => {
    const c = await RemoraClient.connect({ path, secret: loadClientSecret(dir.dir) });
    clients.push(c);
    return c;
  };

  it("answers each client's submissions as the node answers them, in the order sent", async () => {
    const logs: string[] = [];
    cluster = await EmbeddedCluster.start({ dir: dir.dir, app: 'kv', preExecutors: 1, admissions: 1, log: (m) => logs.push(m) });
    const [socket] = cluster.admissionSockets;
    if (socket === undefined) throw new Error('one admission process was asked for');
    const c = await clientOf(socket);
    const before = Array.from({ length: 10 }, (_, k) => c.submit(put(k)));
    const duplicate = c.submit(put(3));
    const unknown = refusal(c.submit({ body: encodeBody('nope', { key: 'x' }, ['x']), auth: [] }));
    const misdeclared = refusal(c.submit({ body: encodeBody('put', { key: 'a', value: 1 }, ['b']), auth: [] }));
    const garbage = refusal(c.submit(Uint8Array.of(1, 2, 3)));
    const reserved = refusal(c.submit({ body: encodeBody('remora.upgrade', {}, []), auth: [] }));
    const optimistic = refusal(c.submitOptimistic(put(10)).final);
    const after = Array.from({ length: 9 }, (_, k) => c.submit(put(11 + k)));

    const first = await Promise.all(before);
    const last = await Promise.all(after);
    for (const r of [...first, ...last]) expect(r.outcome).toEqual({ status: 'ok', result: null });
    const order = [...first, ...last].map((r) => r.ts);
    expect(order).toEqual([...order].sort((a, b) => (a < b ? -1 : 1)));
    expect(new Set(order).size).toBe(order.length);
    const dup = await duplicate;
    expect(dup.duplicate).toBe(true);
    expect(dup.ts).toBe(first[3]?.ts);
    expect(await unknown).toBe('unknown command "nope" for app kv');
    expect(await misdeclared).toBe('declared objects ["b"] differ from what kv.put touches (["kv/a"]); build the body with the app\'s objects()');
    expect(await garbage).toBe('transaction bytes are truncated');
    expect(await reserved).toBe('command "remora.upgrade": names starting with "remora." are reserved for the node');
    expect(await optimistic).toBe('optimistic replies are not served by an admission process: submit to the node');
    // The refused ones never reached the node: it sequenced exactly the 19 puts.
    expect(cluster.node.lastApplied).toBe(19n);
    expect(logs.filter((m) => m.includes('closing'))).toEqual([]);
  });

  it('forwards and answers a burst of the largest transactions without passing the frame limit', async () => {
    // 100 puts of 60,000 bytes in one turn: one message for all would be 6 MB, over the 4 MiB
    // a frame may hold, and a client could then cut every other client's link to the node.
    cluster = await EmbeddedCluster.start({ dir: dir.dir, app: 'kv', preExecutors: 1, admissions: 1, log: () => undefined });
    const [socket] = cluster.admissionSockets;
    if (socket === undefined) throw new Error('one admission process was asked for');
    const c = await clientOf(socket);
    const big = (k: number): Transaction => makeTx(kvApp, 'put', { key: `big/${k}`, value: String(k).padEnd(60_000, 'x') });
    const replies = await Promise.all(Array.from({ length: 100 }, (_, k) => c.submit(big(k))));
    expect(replies.every((r) => r.outcome?.status === 'ok')).toBe(true);
    const read = await Promise.all(Array.from({ length: 100 }, (_, k) => c.submit(makeTx(kvApp, 'get', { key: `big/${k}` }))));
    expect(read.map((r) => (r.outcome?.status === 'ok' ? String(r.outcome.result).length : 0))).toEqual(new Array<number>(100).fill(60_000));
    expect(cluster.node.lastApplied).toBe(200n);
  });

  it('two admission processes under load: every transfer committed once, state equal to sequential re-execution', async () => {
    const seed = 43;
    const accounts = 24;
    const c = await EmbeddedCluster.start({ dir: dir.dir, app: 'bank', preExecutors: 1, admissions: 2, log: () => undefined });
    cluster = c;
    const setup = bankWorkload({ accounts, alpha: 1, seed });
    for (const tx of setup.setup) expect((await c.node.submit(tx)).outcome?.status).toBe('ok');
    gens = await startLoadGenerators({
      dir: dir.dir,
      sockets: c.admissionSockets,
      count: 2,
      workload: { app: 'bank', accounts, alpha: 1, seed },
      mode: { kind: 'closed', clients: 16 },
      transactions: 600,
      seconds: 30,
      drainSeconds: 5,
    });
    gens.go();
    const r = await gens.results();
    expect(r.sent).toBe(600);
    expect(r.committed).toBe(600);
    expect(r.rejected).toBe(0);
    expect(r.generators.map((g) => g.abortReasons)).toEqual([{}, {}]);
    // Each generator went through its own admission process, and the node kept no client.
    expect(c.serving.requests).toBe(0);

    const digest = c.store.digest();
    const app = c.app;
    await c.close();
    cluster = null;
    const entries = await readSequence(join(dir.dir, 'log'));
    expect(entries).toHaveLength(setup.setup.length + 600);
    const reference = executeSequentially(app, entries, nativeFunctions);
    expect(reference.state.digest()).toBe(digest);
  });

  it('an admission process killed mid-run: the node keeps applying and serving, and forgets it', async () => {
    let left: (m: string) => void = () => undefined;
    const leaving = new Promise<string>((resolve) => (left = resolve));
    const log = (m: string) => {
      if (m.startsWith('admission adm-1 left')) left(m);
    };
    cluster = await EmbeddedCluster.start({ dir: dir.dir, app: 'kv', preExecutors: 1, admissions: 1, log });
    const c = cluster;
    const [socket] = c.admissionSockets;
    const child = c.admissions.get('adm-1');
    if (socket === undefined || child === undefined) throw new Error('one admission process was asked for');
    const via = await clientOf(socket);
    for (const r of await Promise.all(Array.from({ length: 20 }, (_, k) => via.submit(put(k))))) expect(r.outcome?.status).toBe('ok');
    expect(c.node.admissions.get('adm-1')).toEqual({ forwarded: 20, waiting: 0 });
    // Killed with submissions in flight: the node has them or not, and applies what it has.
    const inFlight = Array.from({ length: 50 }, (_, k) => refusal(via.submit(put(100 + k))));
    child.kill('SIGKILL');
    await child.exited;
    await Promise.all(inFlight);
    expect(await leaving).toMatch(/^admission adm-1 left.*; \d+ of what it forwarded had no answer yet$/);
    expect(c.node.admissions.size).toBe(0);
    const direct = await clientOf(join(dir.dir, NODE_SOCKET));
    const after = await direct.submit(put(1000));
    expect(after.outcome).toEqual({ status: 'ok', result: null });
    await c.node.whenApplied(after.ts);
    // Whatever it forwarded before it died is in the log once, before the direct client's put.
    const logged = c.node.lastApplied;
    expect(logged).toBe(after.ts);
    expect(logged).toBeGreaterThanOrEqual(21n);
    expect(logged).toBeLessThanOrEqual(71n);
  });

  it('joins a node over TCP and serves clients over TCP, as from another host', async () => {
    cluster = await EmbeddedCluster.start({ dir: dir.dir, app: 'kv', preExecutors: 0, listen: '127.0.0.1:0', log: () => undefined });
    const node = parseHostPort(cluster.address ?? '');
    if (node === null) throw new Error('the node listens on TCP');
    const secret = loadOrCreateSecret(dir.dir);
    const a = await runAdmission({
      node,
      secret,
      name: 'far',
      app: await loadAppModule('kv'),
      path: join(dir.dir, 'far.sock'),
      tcp: { host: '127.0.0.1', port: 0 },
      log: () => undefined,
    });
    try {
      const tcp = parseHostPort(a.tcpAddress ?? '');
      if (tcp === null) throw new Error('the admission process listens on TCP');
      const c = await RemoraClient.connect({ ...tcp, secret: loadClientSecret(dir.dir) });
      clients.push(c);
      expect((await c.submit(put(5))).outcome).toEqual({ status: 'ok', result: null });
      expect(cluster.node.admissions.get('far')).toEqual({ forwarded: 1, waiting: 0 });
    } finally {
      await a.close();
    }
  });

  it('refuses a client that claims the admission role, and a member that admits for other code', async () => {
    const logs: string[] = [];
    cluster = await EmbeddedCluster.start({ dir: dir.dir, app: 'kv', preExecutors: 0, log: (m) => logs.push(m) });
    const node = join(dir.dir, NODE_SOCKET);
    // A client's credential does not open the admission role: it could otherwise forward
    // transactions the node takes as checked.
    await expect(connect({ path: node, role: 'admission:mallory', secret: loadClientSecret(dir.dir), log: () => undefined })).rejects.toThrow(
      /handshake with .* failed/,
    );

    const member = await connect({ path: node, role: 'admission:old', secret: loadOrCreateSecret(dir.dir), log: () => undefined });
    conns.push(member);
    const answer = new Promise<unknown>((resolve) => member.onMessage(resolve));
    const closed = new Promise<void>((resolve) => member.onClose(() => resolve()));
    member.send({ t: 'hello', app: 'kv', digest: 'ab'.repeat(32) });
    expect(await answer).toMatchObject({ t: 'refused', reason: expect.stringContaining('start it with the same --app') as unknown });
    await closed;
    // The node serves on.
    expect((await (await clientOf(node)).submit(put(1))).outcome).toEqual({ status: 'ok', result: null });
  });

  it('closes a member link that forwards malformed batches, and changes nothing', async () => {
    const logs: string[] = [];
    cluster = await EmbeddedCluster.start({ dir: dir.dir, app: 'kv', preExecutors: 0, log: (m) => logs.push(m) });
    const node = join(dir.dir, NODE_SOCKET);
    const good = admitMessage(0, [admitTx(kvApp, put(7))]) as Record<string, unknown>;
    const bad: [string, Record<string, unknown>, RegExp][] = [
      ['before hello', good, /first message must be hello/],
      ['a lying end', { ...good, ends: Buffer.from([0xff, 0, 0, 0]) }, /ends at 255, outside the bytes/],
      ['too few digest bytes', { ...good, digests: Buffer.alloc(31) }, /1 transactions but 31 bytes of digests/],
      ['digests in hex', { ...good, digests: 'ab'.repeat(32) }, /missing fields/],
      ['ends not whole', { ...good, ends: Buffer.alloc(5) }, /ends of 5 bytes, not a whole number of u32/],
      ['no transactions', { ...good, ends: Buffer.alloc(0), digests: Buffer.alloc(0), slots: Buffer.alloc(0) }, /0 transactions, expected 1 to 8192/],
      ['bytes after the last', { ...good, bytes: Buffer.concat([good['bytes'] as Buffer, Buffer.from([0])]) }, /1 bytes after the last transaction/],
      ['a negative first', { ...good, first: -1 }, /first must be a uint32/],
      ['slots cut short', { ...good, slots: Buffer.alloc(1) }, /the slots of transaction 0 do not fit \(no count\)/],
      ['a lying slot count', { ...good, slots: Buffer.from([2, 0, 1, 2, 3, 4]) }, /the slots of transaction 0 do not fit \(2 objects\)/],
      ['too many objects', { ...good, slots: Buffer.concat([Buffer.from([1, 1]), Buffer.alloc(4 * 257)]) }, /\(257 objects\)/],
      ['slots after the last', { ...good, slots: Buffer.concat([good['slots'] as Buffer, Buffer.alloc(4)]) }, /4 bytes of slots after the last transaction/],
    ];
    for (const [what, message, why] of bad) {
      const member = await connect({ path: node, role: `admission:${what.replaceAll(' ', '-')}`, secret: loadOrCreateSecret(dir.dir), log: () => undefined });
      conns.push(member);
      const closed = new Promise<void>((resolve) => member.onClose(() => resolve()));
      const welcome = new Promise<unknown>((resolve) => member.onMessage(resolve));
      if (what !== 'before hello') {
        member.send({ t: 'hello', app: 'kv', digest: cluster.node.versions.active.digest });
        expect(await welcome).toEqual({ t: 'welcome' });
      }
      member.send(message);
      await closed;
      expect(logs.at(-1), what).toMatch(why);
    }
    expect(cluster.node.lastApplied).toBe(0n);
    expect((await (await clientOf(node)).submit(put(1))).outcome).toEqual({ status: 'ok', result: null });
  });
});

describe('answers.v1', () => {
  it('carries replies and refusals as the node gave them', () => {
    const w = new AnswerWriter();
    w.reply(7, 12n, false, { status: 'ok', result: 1 }, 'adopted');
    w.reply(8, 13n, true, null, null);
    w.reply(0xffffffff, 2n ** 60n, false, { status: 'aborted', reason: 'insufficient funds' }, 'reexecuted');
    w.refused(9, 'unknown command "x" for app kv', true);
    w.refused(10, 'sequencer is closed', false);
    const got: Answer[] = [];
    readAnswers(w.take(), (a) => got.push(a));
    expect(got).toEqual([
      { id: 7, reply: { ts: 12n, duplicate: false, outcome: { status: 'ok', result: 1 }, decision: 'adopted' } },
      { id: 8, reply: { ts: 13n, duplicate: true, outcome: null, decision: null } },
      { id: 0xffffffff, reply: { ts: 2n ** 60n, duplicate: false, outcome: { status: 'aborted', reason: 'insufficient funds' }, decision: 'reexecuted' } },
      { id: 9, error: 'unknown command "x" for app kv', txError: true },
      { id: 10, error: 'sequencer is closed', txError: false },
    ]);
    expect(w.length).toBe(0);
  });

  it('refuses a record cut short or of an unknown kind', () => {
    const w = new AnswerWriter();
    w.reply(1, 1n, false, { status: 'aborted', reason: 'x' }, 'executed');
    const whole = w.take();
    for (let n = 1; n < whole.length; n++) expect(() => readAnswers(whole.subarray(0, n), () => undefined)).toThrow(ProtocolError);
    const kind = Buffer.from(whole);
    kind[4] = 7;
    expect(() => readAnswers(kind, () => undefined)).toThrow('answers: unknown kind 7');
  });
});

describe('AdmissionFront', () => {
  /** A test double of the node's connection: keeps what is sent, as msgpack's decoder reads the frame. */
  const sentTo = () => {
    const sent: unknown[] = [];
    return {
      sent,
      conn: {
        sendFrame: (frame: Buffer) => {
          expect(frame.readUInt32BE(0)).toBe(frame.length - 4);
          return sent.push(unpack(frame.subarray(4))) > 0;
        },
      },
    };
  };

  it('forwards a turn as one batch and routes each answer to its submitter', async () => {
    const { sent, conn } = sentTo();
    const front = new AdmissionFront(kvApp, conn);
    const heard = new Map<number, string>();
    const raws = [put(1), put(2), put(3)];
    raws.forEach((raw, i) => front.submitWith(raw, (e, r) => heard.set(i, e ? `error ${e.message}` : `ts ${r?.ts}`)));
    await Promise.resolve();
    expect(sent).toHaveLength(1);
    const batch = parseAdmissionMessage(sent[0]);
    if (batch.t !== 'admit') throw new Error('an admit message');
    expect(batch.first).toBe(0);
    const admitted = raws.map((raw) => admitTx(kvApp, raw));
    expect(batch.txs.map((t) => t.digest)).toEqual(admitted.map((t) => t.digest));
    // What the node reads only when it executes: the body's, as admission decoded it.
    expect(batch.txs.map((t) => [t.command, t.objects, t.args])).toEqual(admitted.map((t) => [t.command, t.objects, t.args]));
    // The scheduler's hashes came along, equal to hashing the objects.
    const slots: number[] = [];
    for (const [i, t] of batch.txs.entries()) {
      expect(t.slotsInto?.(slots, 0xffff)).toBe(admitted[i]?.objects.length);
      expect(slots.slice(0, admitted[i]?.objects.length)).toEqual(admitted[i]?.objects.map((id) => slotOf(id) & 0xffff));
    }
    const w = new AnswerWriter();
    w.reply(2, 30n, false, null, 'executed');
    w.refused(0, 'sequencer is closed', false);
    front.answers(w.take());
    expect([...heard.entries()].sort()).toEqual([
      [0, 'error sequencer is closed'],
      [2, 'ts 30'],
    ]);
    // A lost node answers whatever still waits, and everything after.
    front.lost(new Error('reset'));
    expect(heard.get(1)).toBe("error the node's connection was lost: reset");
    const late = await new Promise<Error | null>((resolve) => front.submitWith(raws[0], ((e) => resolve(e)) as SubmitDone));
    expect(late?.message).toBe("the node's connection was lost: reset");
    expect(front.inFlight).toBe(0);
  });

  it('counts what it forwarded, refused and was answered for its metrics', async () => {
    const { conn } = sentTo();
    const front = new AdmissionFront(kvApp, conn);
    const registry = createRegistry();
    admissionMetrics(registry, { serving: { requests: 4, paused: 0, cutOff: 0 }, front });
    const done: SubmitDone = () => undefined;
    for (const k of [1, 2, 3]) front.submitWith(put(k), done);
    front.submitWith({ body: encodeBody('nope', {}, []), auth: [] }, done);
    await Promise.resolve();
    const w = new AnswerWriter();
    w.reply(0, 1n, false, null, 'executed');
    front.answers(w.take());
    const text = await registry.metrics();
    for (const line of [
      'remora_admission_requests_total 4',
      'remora_admission_forwarded_total 3',
      'remora_admission_refused_total 1',
      'remora_admission_answered_total 1',
      'remora_admission_in_flight 2',
    ])
      expect(text).toContain(`\n${line}\n`);
  });

  it('answers a submission the app refuses without forwarding it', async () => {
    const { sent, conn } = sentTo();
    const front = new AdmissionFront(kvApp, conn);
    const e = await new Promise<Error | null>((resolve) => front.submitWith({ body: encodeBody('nope', {}, []), auth: [] }, (err) => resolve(err)));
    expect(e).toBeInstanceOf(TxError);
    expect(e?.message).toBe('unknown command "nope" for app kv');
    await Promise.resolve();
    expect(sent).toEqual([]);
  });
});
