// A seeded fuzzer against a live node: over 10⁵ hostile frames before the handshake, from an
// authenticated client and from an attached pre-executor, while an honest client's kv load runs
// throughout. Afterwards every honest transaction was answered ok, the node still serves, and
// its state equals sequential execution of its log (DESIGN invariant 1): bad input may be
// refused or executed, but never changes how good input is treated.
//
// REMORA_FUZZ_SEED replays a run: each connection's frames come from its own stream of the
// seed (fuzz-frames.ts), so a report names a frame by seed, phase and connection.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { encode } from '../ts/app/codec.js';
import type { Outcome } from '../ts/app/exec.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { executeSequentially } from '../ts/app/reference.js';
import { decodeTx, txDigest, type DecodedTx, type Transaction } from '../ts/app/tx.js';
import { kvApp } from '../ts/apps/index.js';
import { makeTx } from '../ts/app/app.js';
import { RemoraClient, type Reply } from '../ts/client.js';
import { EmbeddedCluster, NODE_SOCKET } from '../ts/cluster.js';
import { FrameDecoder } from '../ts/frames.js';
import { PreExecutor } from '../ts/pipeline/preexecutor.js';
import { readSequence } from '../ts/pipeline/sequencer.js';
import type { PushedObject } from '../ts/pipeline/state-update.js';
import { loadClientSecret, loadOrCreateSecret } from '../ts/secret.js';
import { kvWorkload } from '../ts/workload.js';
import {
  badAuth,
  badHello,
  badMemberHello,
  brokenFrame,
  fatalClientFrame,
  fatalMemberControl,
  fatalMemberFrame,
  frame,
  handshakeMac,
  hello,
  HANDSHAKE_FRAME_BYTES,
  memberHello,
  mp,
  Prng,
  randomValue,
  submitFrame,
  unaskedLoadAnswer,
  unowedResults,
  type Frame,
  type Mp,
  type Must,
} from './fuzz-frames.js';
import { tempCluster } from './helpers.js';
import { decodeEffects, encodeResults, splitTxs } from '../ts/pipeline/records.js';
import { encodeTable } from '../ts/pipeline/table-bytes.js';

/** Mutated frames the run must write, at the least; the plan below aims a little over. */
const MIN_FRAMES = 100_000;
const PLAN = {
  /** Connections before the handshake, and how many at once (the listener allows 64 in handshake). */
  preHandshake: { connections: 16_000, parallel: 24 },
  /** Authenticated clients, each sending a run of submits then one frame that ends it. */
  client: { connections: 1_000, parallel: 6, frames: [40, 120] as const },
  /** Attachments as `pre-executor:fuzz`, one at a time (one name). */
  member: { connections: 1_400, frames: [8, 24] as const },
};
const HONEST_TXS = 3_000;
const HONEST_WINDOW = 32;
/** Bounds on waiting for the node: passing one is a hang, reported with the frame at fault. */
const NODE_WAIT_MS = 20_000;

const wirePackr = new Packr({ useRecords: false, int64AsType: 'bigint' });
type Msg = Record<string, unknown>;
const isMsg = (v: unknown): v is Msg => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Rejects with `what()` unless `p` settles within `ms`: a failure bound, never a pause. */
async function bounded<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what()} (no answer within ${ms} ms)`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Frames written so far; the honest client paces itself on it so its load spans the run. */
class Progress {
  written = 0;
  private done = false;
  private waiters: { at: number; resolve: () => void }[] = [];

  add(n: number): void {
    this.written += n;
    this.waiters = this.waiters.filter((w) => (this.written >= w.at ? (w.resolve(), false) : true));
  }

  until(at: number): Promise<void> {
    if (this.done || this.written >= at) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ at, resolve }));
  }

  finish(): void {
    this.done = true;
    for (const w of this.waiters.splice(0)) w.resolve();
  }
}

interface PhaseStats {
  connections: number;
  /** Mutated frames written to the node's socket (the write completed without error). */
  written: number;
  /** Mutated frames generated but not written: the connection was gone first. */
  unwritten: number;
  /** Valid frames among what was sent (submits of good transactions), counted apart. */
  valid: number;
  /** Connections the node ended on its own after a frame that required it. */
  closedByNode: number;
}

const phaseStats = (): PhaseStats => ({ connections: 0, written: 0, unwritten: 0, valid: 0, closedByNode: 0 });

/** The node's log, sorted into what hostile input is expected to cause and everything else. */
class LogBook {
  readonly counts = new Map<string, number>();
  /** The first lines of each kind, to show what the node said. */
  readonly samples = new Map<string, string[]>();
  readonly unexpected: string[] = [];
  private static readonly KINDS: [string, RegExp][] = [
    ['refused (over a connection cap)', /: refusing /],
    ['handshake timed out', /^remora wire: handshake with .* failed: timed out/s],
    ['handshake failed', /^remora wire: handshake with .* failed: /s],
    ['connection failed after handshake', /^remora wire: connection with .* closed: (protocol error|over )/s],
    ['client broke the protocol', /^client at .*; closing the connection$/s],
    ['member name taken', /pre-executor fuzz is already attached; closing( the connection)?$/s],
    ['member refused (other app)', /: pre-executor fuzz loaded app .* but the node runs .*; closing$/s],
    ['member broke the protocol', /^pre-executor:fuzz at .*; closing the connection$/s],
    // The wire's own rate limit on those lines (ts/wire.ts): a loaded host reaches its burst.
    ['lines left out by the rate limit', /^remora wire: \d+ more lines like these left out in the last [\d.]+ s$/],
  ];

  readonly log = (m: string): void => {
    const kind = LogBook.KINDS.find(([, re]) => re.test(m))?.[0];
    if (kind === undefined) {
      if (this.unexpected.length < 50) this.unexpected.push(m.slice(0, 600));
      return;
    }
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    const samples = this.samples.get(kind) ?? [];
    if (samples.length < 3) this.samples.set(kind, [...samples, m.slice(0, 300)]);
  };

  count(kind: string): number {
    return this.counts.get(kind) ?? 0;
  }
}

/** A connection to the node's socket driven byte by byte, as a hostile peer would. */
class RawPeer {
  readonly socket: net.Socket;
  readonly closed: Promise<void>;
  isClosed = false;
  /** The node ended or reset the connection (as opposed to this side ending it). */
  endedByNode = false;
  private endedHere = false;
  private readonly decoder = new FrameDecoder(64 << 20);
  private readonly inbox: unknown[] = [];
  private wake: (() => void) | undefined;
  private handler: ((m: unknown) => void) | undefined;
  badReply: string | null = null;

  constructor(path: string, live: Set<RawPeer>) {
    this.socket = net.createConnection({ path });
    live.add(this);
    // Resets and broken pipes are how a node ends a hostile peer; 'close' tells the rest.
    this.socket.on('error', () => undefined);
    this.socket.on('data', (chunk: Buffer) => {
      this.decoder.push(chunk);
      try {
        for (let body = this.decoder.next(); body !== undefined; body = this.decoder.next()) this.deliver(wirePackr.unpack(body));
      } catch (e) {
        this.badReply ??= `the node sent a frame this side cannot read: ${e instanceof Error ? e.message : String(e)}`;
        this.socket.destroy();
      }
    });
    this.socket.on('end', () => {
      if (!this.endedHere) this.endedByNode = true;
    });
    this.closed = new Promise((resolve) =>
      this.socket.on('close', () => {
        if (!this.endedHere) this.endedByNode = true;
        this.isClosed = true;
        live.delete(this);
        this.wake?.();
        resolve();
      }),
    );
  }

  private deliver(m: unknown): void {
    if (this.handler) this.handler(m);
    else {
      this.inbox.push(m);
      this.wake?.();
    }
  }

  /** Hands every later message (and those waiting) to `handler`. */
  onMessage(handler: (m: unknown) => void): void {
    this.handler = handler;
    for (const m of this.inbox.splice(0)) handler(m);
  }

  /** The next message, or null once the connection is closed. */
  async next(): Promise<unknown> {
    for (;;) {
      if (this.inbox.length > 0) return this.inbox.shift();
      if (this.isClosed) return null;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  /** Writes `bytes`; true once the kernel took all of them, false if the connection went first. */
  write(bytes: Buffer): Promise<boolean> {
    return new Promise((resolve) => {
      if (this.isClosed || this.socket.destroyed || !this.socket.writable) return resolve(false);
      this.socket.write(bytes, (err) => resolve(!err));
    });
  }

  end(): void {
    this.endedHere = true;
    this.socket.end();
  }

  destroy(): void {
    this.endedHere = true;
    this.socket.destroy();
  }
}

const jsonable = (_: string, v: unknown): unknown => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? `0x${Buffer.from(v).toString('hex')}` : v);

/** The client side of the handshake (wire.ts), by hand, so the socket stays ours afterwards. */
async function handshake(peer: RawPeer, secret: Buffer, role: string): Promise<boolean> {
  const nonceC = randomBytes(32);
  if (!(await peer.write(hello(role, nonceC)))) return false;
  const challenge = await peer.next();
  if (challenge === null) return false;
  if (!isMsg(challenge) || challenge['t'] !== 'challenge' || !(challenge['nonce'] instanceof Uint8Array)) {
    throw new Error(`handshake as ${role}: unexpected reply ${JSON.stringify(challenge, jsonable)}`);
  }
  const nonceS = challenge['nonce'];
  const serverMac = challenge['mac'];
  if (!(serverMac instanceof Uint8Array) || !handshakeMac(secret, 'remora-server', nonceC, nonceS, role).equals(serverMac)) {
    throw new Error(`handshake as ${role}: the node's MAC does not verify`);
  }
  if (!(await peer.write(frame(mp({ t: 'auth', mac: handshakeMac(secret, 'remora-client', nonceC, nonceS, role) }))))) return false;
  const ok = await peer.next();
  if (ok === null) return false;
  if (!isMsg(ok) || ok['t'] !== 'ok') throw new Error(`handshake as ${role}: expected ok`);
  return true;
}

const hexHead = (b: Buffer): string => `${b.subarray(0, 48).toString('hex')}${b.length > 48 ? `… (${b.length} bytes)` : ''}`;

describe('wire fuzzing of a live node', () => {
  it('survives 10⁵ hostile frames in every stage of a connection, answering every honest transaction', { timeout: 150_000 }, async () => {
    const t0 = performance.now();
    const raw = process.env['REMORA_FUZZ_SEED'];
    const seed = raw === undefined ? randomBytes(4).readUInt32LE() : Number(raw);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`REMORA_FUZZ_SEED must be a non-negative integer, got ${raw}`);
    const honestSeed = new Prng(seed, 0).u32();
    console.log(`fuzz: seed ${seed} (REMORA_FUZZ_SEED=${seed} replays it); honest kv workload seed ${honestSeed}`);

    const tmp = tempCluster();
    const book = new LogBook();
    const live = new Set<RawPeer>();
    const findings: string[] = [];
    const finding = (m: string) => {
      if (findings.length < 20) findings.push(m);
    };
    const stats = { preHandshake: phaseStats(), client: phaseStats(), member: phaseStats() };
    const progress = new Progress();
    const times: Record<string, number> = {};
    /** Final outcomes the node sent, by timestamp, to hold against the reference executor. */
    const outcomes = new Map<bigint, { outcome: Outcome | null; from: string }>();
    let cluster: EmbeddedCluster | null = null;
    try {
      cluster = await EmbeddedCluster.start({ dir: tmp.dir, app: 'kv', preExecutors: 2, log: book.log });
      const node = cluster.node;
      const path = join(tmp.dir, NODE_SOCKET);
      const clientSecret = loadClientSecret(tmp.dir);
      const memberSecret = loadOrCreateSecret(tmp.dir);

      // The honest client: unique transactions, so each is sequenced once and its digest is
      // never owed again after its reply (the member phase names such digests in its results).
      const honestTxs: Transaction[] = [];
      const seen = new Set<string>();
      for (const tx of kvWorkload({ keys: 200, hotKeys: 4, conflictRate: 0.3, dynamicRate: 0.1, seed: honestSeed })) {
        const digest = txDigest(tx.body, tx.auth);
        if (seen.has(digest)) continue;
        seen.add(digest);
        honestTxs.push(tx);
        if (honestTxs.length === HONEST_TXS) break;
      }
      const answeredDigests: string[] = [];
      const honestClient = await RemoraClient.connect({ path, secret: clientSecret });
      const honestErrors: string[] = [];
      const honestReplies: Reply[] = [];
      const honest = (async () => {
        const inFlight = new Set<Promise<void>>();
        for (const [i, tx] of honestTxs.entries()) {
          await progress.until(Math.floor((i * MIN_FRAMES) / HONEST_TXS));
          const p: Promise<void> = honestClient.submit(tx).then(
            (r) => {
              honestReplies.push(r);
              if (r.outcome?.status !== 'ok') honestErrors.push(`honest tx ${i}: outcome ${JSON.stringify(r.outcome)}`);
              if (!r.duplicate) outcomes.set(r.ts, { outcome: r.outcome, from: `honest tx ${i}` });
              answeredDigests.push(txDigest(tx.body, tx.auth));
            },
            (e: unknown) => {
              honestErrors.push(`honest tx ${i}: ${e instanceof Error ? e.message : String(e)}`);
            },
          );
          const tracked = p.finally(() => inFlight.delete(tracked));
          inFlight.add(tracked);
          if (inFlight.size >= HONEST_WINDOW) await Promise.race(inFlight);
        }
        await Promise.all(inFlight);
      })();

      // ---------------------------------------------------------------- phase 1: no handshake
      const p1 = stats.preHandshake;
      const preHandshake = async (i: number): Promise<void> => {
        const r = new Prng(seed, 1, i);
        const where = `seed ${seed} phase 1 conn ${i}`;
        const started = performance.now();
        const peer = new RawPeer(path, live);
        p1.connections++;
        // Members and the operator (admin) hold the member credential, clients the client one.
        const roll = r.int(20);
        const memberRole = roll >= 13;
        const role = roll < 13 ? 'client' : roll < 17 ? `pre-executor:p1-${i}` : 'admin';
        const secret = memberRole ? memberSecret : clientSecret;
        const other = memberRole ? clientSecret : memberSecret;
        const kind = r.int(12);
        let sent: Frame | undefined;
        let expectOk = false;
        const send = async (f: Frame): Promise<void> => {
          sent = f;
          if (await peer.write(f.bytes)) {
            p1.written += f.frames;
            progress.add(f.frames);
          } else p1.unwritten += f.frames;
        };
        if (kind < 3) await send(brokenFrame(r, HANDSHAKE_FRAME_BYTES));
        else if (kind < 6) await send(badHello(r, role));
        else if (kind < 8) {
          // Pipelined: hello and a guessed auth at once, before any challenge.
          const f = badAuth(r, null, null);
          await send({ ...f, bytes: Buffer.concat([hello(role, r.bytes(32)), f.bytes]), what: `hello, then at once ${f.what}` });
        } else {
          const nonceC = r.bytes(32);
          if (!(await peer.write(hello(role, nonceC)))) {
            finding(`${where}: the node dropped a valid hello (${role})`);
            return;
          }
          const challenge = await bounded(peer.next(), NODE_WAIT_MS, () => `${where}: no challenge to a valid hello`);
          if (!isMsg(challenge) || challenge['t'] !== 'challenge' || !(challenge['nonce'] instanceof Uint8Array)) {
            finding(`${where}: a valid hello (${role}) got ${JSON.stringify(challenge, jsonable)}`);
            peer.destroy();
            return;
          }
          const nonceS = challenge['nonce'];
          const mac = handshakeMac(secret, 'remora-client', nonceC, nonceS, role);
          if (kind < 10) await send(badAuth(r, mac, handshakeMac(other, 'remora-client', nonceC, nonceS, role)));
          else if (kind === 10) {
            const f = r.chance(0.5) ? brokenFrame(r, HANDSHAKE_FRAME_BYTES) : badHello(r, role);
            await send({ ...f, what: `${f.what}, in place of auth` });
          } else if (role === 'client') {
            // Right MAC, extra fields: a well-formed auth the node accepts.
            expectOk = true;
            let bytes = frame(mp({ t: 'auth', mac, extra: randomValue(r, 2, { decodable: true, stringKeys: true }) }));
            if (bytes.length > 4 + HANDSHAKE_FRAME_BYTES) bytes = frame(mp({ t: 'auth', mac, extra: null }));
            await send({ bytes, frames: 1, expect: 'either', what: 'auth with extra fields' });
          } else {
            await send(badAuth(r, mac, handshakeMac(other, 'remora-client', nonceC, nonceS, role)));
          }
        }
        const f = sent;
        if (f === undefined) throw new Error('no frame was chosen');
        if (f.expect === 'either') peer.end();
        let gotOk = false;
        const next = () => bounded(peer.next(), NODE_WAIT_MS, () => `${where}: connection not closed after ${f.what}: ${hexHead(f.bytes)}`);
        for (let m = await next(); m !== null; m = await next()) {
          if (isMsg(m) && m['t'] === 'ok') gotOk = true;
          else if (!(isMsg(m) && m['t'] === 'challenge')) finding(`${where}: unexpected message ${JSON.stringify(m, jsonable)} after ${f.what}`);
        }
        await bounded(peer.closed, NODE_WAIT_MS, () => `${where}: connection not closed after ${f.what}`);
        // Refused at once, or closed at the end this side sent: never left to the node's 5 s
        // handshake deadline, which is what a frame it did not see as wrong would come to.
        const ms = performance.now() - started;
        if (ms > 4_000) finding(`${where}: closed only after ${Math.round(ms)} ms, after ${f.what} (${role}): ${hexHead(f.bytes)}`);
        if (gotOk !== expectOk) finding(`${where}: handshake ${gotOk ? 'accepted' : 'refused'} after ${f.what} (${role}): ${hexHead(f.bytes)}`);
        if (f.expect === 'close') {
          if (peer.endedByNode) p1.closedByNode++;
          else finding(`${where}: not closed by the node after ${f.what}`);
        }
      };
      let t = performance.now();
      await Promise.all(
        Array.from({ length: PLAN.preHandshake.parallel }, async (_, w) => {
          for (let i = w; i < PLAN.preHandshake.connections; i += PLAN.preHandshake.parallel) await preHandshake(i);
        }),
      );
      times['phase 1 s'] = (performance.now() - t) / 1000;

      // ---------------------------------------------------------------- phase 2: as a client
      /** Sends the frame that ends a connection, and holds the node to what it must do with it. */
      const finish = async (peer: RawPeer, f: Frame, s: PhaseStats, where: string): Promise<void> => {
        if (await peer.write(f.bytes)) {
          s.written += f.frames;
          progress.add(f.frames);
        } else s.unwritten += f.frames;
        if (f.expect === 'either') peer.end();
        await bounded(peer.closed, NODE_WAIT_MS, () => `${where}: connection not closed after ${f.what} (expected ${f.expect}): ${hexHead(f.bytes)}`);
        if (f.expect === 'close') {
          if (peer.endedByNode) s.closedByNode++;
          else finding(`${where}: not closed by the node after ${f.what}`);
        }
        if (peer.badReply) finding(`${where}: ${peer.badReply}`);
      };
      const p2 = stats.client;
      let admitted = 0;
      let leftInFlight = 0;
      const clientConn = async (i: number): Promise<void> => {
        const r = new Prng(seed, 2, i);
        const peer = new RawPeer(path, live);
        p2.connections++;
        if (!(await handshake(peer, clientSecret, 'client'))) {
          finding(`phase 2 conn ${i}: the client handshake failed`);
          return;
        }
        const base = kvWorkload({ keys: 200, hotKeys: 4, conflictRate: 0.3, dynamicRate: 0.1, seed: new Prng(seed, 2, i, 1).u32() });
        const nextTx = (): Transaction => base.next().value;
        const pending = new Map<number, { what: string; optimistic: boolean; must: Must; tx: Mp }>();
        let answered: () => void = () => undefined;
        const anomaly = (m: string) => finding(`seed ${seed} phase 2 conn ${i}: ${m}`);
        peer.onMessage((m) => {
          if (!isMsg(m) || typeof m['id'] !== 'number') return anomaly(`unreadable reply ${JSON.stringify(m, jsonable)}`);
          const p = pending.get(m['id']);
          if (!p) return anomaly(`a reply for id ${m['id']} that is not pending: ${JSON.stringify(m, jsonable).slice(0, 300)}`);
          if (m['t'] === 'optimistic') {
            if (!p.optimistic) anomaly(`an optimistic reply nobody asked for (${p.what})`);
            return;
          }
          if (m['t'] === 'reply') {
            if (m['duplicate'] !== true && typeof m['ts'] === 'bigint')
              outcomes.set(m['ts'], { outcome: m['outcome'] as Outcome | null, from: `phase 2 conn ${i}: ${p.what}` });
            if (p.must === 'reject') anomaly(`admitted ${p.what} (id ${m['id']}): ${hexHead(mp(p.tx))}`);
            else admitted++;
          } else if (m['t'] === 'rejected' && typeof m['error'] === 'string') {
            if (p.must === 'accept') anomaly(`rejected ${p.what} (id ${m['id']}): ${m['error']}`);
          } else return anomaly(`unexpected reply ${JSON.stringify(m, jsonable).slice(0, 300)}`);
          pending.delete(m['id']);
          if (pending.size === 0) answered();
        });
        const count = r.range(...PLAN.client.frames);
        // Some clients end the connection with their submits still in flight: the node must
        // still apply what it admitted, and answer nobody.
        const waitForAnswers = r.chance(0.7);
        const idBase = r.pick([1, 0, -1_000_000, 2 ** 53 - 10_000]);
        const validSent: Mp[] = [];
        let batch: Buffer[] = [];
        let batchMutated = 0;
        let batchValid = 0;
        const flush = async () => {
          if (batch.length === 0) return;
          const ok = await peer.write(Buffer.concat(batch));
          if (ok) {
            p2.written += batchMutated;
            p2.valid += batchValid;
            progress.add(batchMutated);
          } else p2.unwritten += batchMutated;
          batch = [];
          batchMutated = 0;
          batchValid = 0;
        };
        for (let j = 0; j < count; j++) {
          const sub = submitFrame(r, idBase + j, nextTx, validSent);
          pending.set(sub.id, { what: sub.what, optimistic: sub.optimistic, must: sub.must, tx: sub.tx });
          batch.push(sub.bytes);
          if (sub.valid) batchValid++;
          else batchMutated++;
          if (batch.length >= 32) await flush();
        }
        await flush();
        if (waitForAnswers && pending.size > 0 && !peer.isClosed) {
          const all = new Promise<void>((resolve) => (answered = resolve));
          await bounded(Promise.race([all, peer.closed]), NODE_WAIT_MS, () => {
            const [id, p] = [...pending][0] ?? [0, { what: '?' }];
            return `seed ${seed} phase 2 conn ${i}: ${pending.size} submits unanswered, e.g. id ${id} (${p.what})`;
          });
        }
        if (peer.isClosed) {
          anomaly(
            `the connection closed (${peer.badReply ?? (peer.endedByNode ? 'by the node' : 'here')}) while ${pending.size} well-formed submits were pending`,
          );
          return;
        }
        const fatal = fatalClientFrame(r, nextTx(), idBase + count);
        // It may decode, be read as a submit, and be answered before the connection ends.
        pending.set(idBase + count, { what: fatal.what, optimistic: false, must: undefined, tx: null });
        if (!waitForAnswers) leftInFlight += pending.size - 1;
        await finish(peer, fatal, p2, `seed ${seed} phase 2 conn ${i}`);
      };
      t = performance.now();
      await Promise.all(
        Array.from({ length: PLAN.client.parallel }, async (_, w) => {
          for (let i = w; i < PLAN.client.connections; i += PLAN.client.parallel) await clientConn(i);
        }),
      );
      times['phase 2 s'] = (performance.now() - t) / 1000;

      // ---------------------------------------------------------------- phase 3: as a member
      const p3 = stats.member;
      const handed = new Set<string>();
      let unowedSent = 0;
      let honestResults = 0;
      let nameTaken = 0;
      const unowedBefore = node.unowedResults;
      const appDigest = node.versions.active.digest;
      const memberConn = async (i: number): Promise<void> => {
        const r = new Prng(seed, 3, i);
        const where = `seed ${seed} phase 3 conn ${i}`;
        if (r.chance(0.15)) {
          // Authenticated as a member, but its first message is wrong: it must never attach.
          const peer = new RawPeer(path, live);
          if (!(await handshake(peer, memberSecret, 'pre-executor:fuzz'))) throw new Error(`${where}: member handshake failed`);
          p3.connections++;
          const got: unknown[] = [];
          peer.onMessage((m) => got.push(m));
          const f = badMemberHello(r, appDigest);
          await finish(peer, f, p3, where);
          const types = got.map((m) => (isMsg(m) ? m['t'] : typeof m));
          if (types.includes('config')) finding(`${where}: attached after ${f.what}`);
          if (f.refused && !types.includes('refused')) finding(`${where}: not told why after ${f.what} (got ${JSON.stringify(types)})`);
          return;
        }
        let peer: RawPeer | undefined;
        let config: unknown = null;
        // The node may not have seen the previous `fuzz` leave yet: it then refuses the name.
        for (let attempt = 0; config === null; attempt++) {
          if (attempt > 100) throw new Error(`${where}: the name fuzz stayed taken`);
          if (attempt > 0) nameTaken++;
          peer = new RawPeer(path, live);
          if (!(await handshake(peer, memberSecret, 'pre-executor:fuzz'))) throw new Error(`${where}: member handshake failed`);
          if (!(await peer.write(memberHello(appDigest)))) continue;
          const p = peer;
          config = await bounded(p.next(), NODE_WAIT_MS, () => `${where}: no config after attaching`);
        }
        if (peer === undefined) throw new Error('unreachable: attached without a connection');
        p3.connections++;
        if (!isMsg(config) || config['t'] !== 'config') finding(`${where}: first message ${JSON.stringify(config, jsonable)}`);
        // Honest work for what the node hands it, from a stale copy of the state: it stays a
        // fair member, so no honest transaction waits for the deadline because of the fuzzer.
        const pre = new PreExecutor(kvApp, nativeFunctions);
        const member = peer;
        member.onMessage((m) => {
          if (!isMsg(m)) return finding(`${where}: unreadable message`);
          if (m['t'] === 'exec' && m['txs'] instanceof Uint8Array) {
            const txs: DecodedTx[] = [];
            for (const t of splitTxs(Buffer.from(m['txs']))) {
              try {
                const d = decodeTx(t);
                handed.add(d.digest);
                txs.push(d);
              } catch (e) {
                finding(`${where}: the node handed over a transaction that does not decode: ${e instanceof Error ? e.message : String(e)}`);
              }
            }
            const results = pre.run(txs);
            honestResults += results.length;
            void member.write(frame(wirePackr.pack({ t: 'results', tables: encodeResults(results.map(([d, t]) => [d, encodeTable(t)])) })));
          } else if (m['t'] === 'effects' && m['effects'] instanceof Uint8Array) pre.install(decodeEffects(Buffer.from(m['effects'])));
          else if (m['t'] === 'objects') pre.installObjects(m['objects'] as PushedObject[]);
        });
        const count = r.range(...PLAN.member.frames);
        const batch: Buffer[] = [];
        let entries = 0;
        for (let j = 0; j < count; j++) {
          if (r.chance(0.08)) {
            batch.push(frame(unaskedLoadAnswer(r).body));
            continue;
          }
          // Digests of answered honest transactions: owed by nobody any more, unless handed
          // here. Drawn whatever is answered yet, so the stream stays the seed's.
          const draws = Array.from({ length: 8 }, () => r.u32());
          const digests =
            answeredDigests.length === 0 ? [] : draws.map((x) => answeredDigests[x % answeredDigests.length] ?? '').filter((d) => d !== '' && !handed.has(d));
          const u = unowedResults(r, digests);
          entries += u.entries;
          batch.push(frame(u.body));
        }
        if (await member.write(Buffer.concat(batch))) {
          p3.written += count;
          unowedSent += entries;
          progress.add(count);
        } else p3.unwritten += count;
        await finish(member, r.chance(0.8) ? fatalMemberFrame(r) : fatalMemberControl(r, appDigest), p3, where);
      };
      t = performance.now();
      for (let i = 0; i < PLAN.member.connections; i++) await memberConn(i);
      times['phase 3 s'] = (performance.now() - t) / 1000;
      const unowedCounted = node.unowedResults - unowedBefore;

      progress.finish();
      await bounded(honest, 60_000, () => `seed ${seed}: honest transactions unanswered (${honestReplies.length} of ${HONEST_TXS} answered)`);
      honestClient.close();

      // The node still serves: a fresh client's put is read back.
      const fresh = await RemoraClient.connect({ path, secret: clientSecret });
      const value = `after fuzzing ${seed}`;
      expect((await fresh.submit(makeTx(kvApp, 'put', { key: 'fuzz/after', value }))).outcome).toEqual({ status: 'ok', result: null });
      expect((await fresh.submit(makeTx(kvApp, 'get', { key: 'fuzz/after' }))).outcome).toEqual({ status: 'ok', result: value });
      fresh.close();

      const mutated = stats.preHandshake.written + stats.client.written + stats.member.written;
      times['total s'] = (performance.now() - t0) / 1000;
      console.log(
        JSON.stringify(
          {
            seed,
            honestSeed,
            framesWritten: mutated,
            phases: stats,
            honest: { submitted: HONEST_TXS, answered: honestReplies.length, ok: honestReplies.filter((x) => x.outcome?.status === 'ok').length },
            admittedMutations: admitted,
            leftInFlight,
            member: { unowedSent, unowedCounted, honestResults, nameTaken },
            node: { ...node.stats, unowedResults: node.unowedResults, serving: cluster.serving, members: node.members },
            log: Object.fromEntries(book.counts),
            times: Object.fromEntries(Object.entries(times).map(([k, v]) => [k, Math.round(v * 10) / 10])),
          },
          jsonable,
        ),
      );
      console.log(`node log, first lines of each kind:\n${[...book.samples.values()].flat().join('\n')}`);
      if (book.unexpected.length > 0) console.log(`node log lines of unexpected kinds:\n${book.unexpected.join('\n')}`);
      for (const child of cluster.children.values()) if (child.stderr.trim()) console.log(`${child.role} stderr:\n${child.stderr.slice(-2000)}`);

      expect(findings).toEqual([]);
      expect(honestErrors.slice(0, 5)).toEqual([]);
      expect(honestReplies.length).toBe(HONEST_TXS);
      expect(mutated).toBeGreaterThanOrEqual(MIN_FRAMES);
      // Nobody was turned away: every written frame reached a connection the node served.
      expect(book.count('refused (over a connection cap)')).toBe(0);
      // Each bad handshake was refused at once, not left to the handshake deadline.
      expect(book.count('handshake timed out')).toBe(0);
      expect(book.unexpected).toEqual([]);
      expect(cluster.serving.cutOff).toBe(0);
      // Every result the member phase sent was read and dropped as owed by nobody.
      expect(unowedCounted).toBeGreaterThanOrEqual(unowedSent);
      // The pre-executor processes lived through it, are still members, and owe nothing: no
      // hostile input left a result waited for.
      for (const child of cluster.children.values()) expect(child.exitStatus, `${child.role} exited`).toBeNull();
      expect(node.members.filter((m) => m.startsWith('pre-'))).toHaveLength(2);
      expect(node.poolStats().filter((p) => p.outstanding > 0)).toEqual([]);

      const digest = cluster.store.digest();
      const lastApplied = node.lastApplied;
      await cluster.close();
      cluster = null;

      // Serial equivalence: the state and every outcome the node sent equal the reference's.
      const entries = await readSequence(join(tmp.dir, 'log'));
      expect(lastApplied).toBe(BigInt(entries.length));
      const reference = executeSequentially(kvApp, entries, nativeFunctions);
      expect(digest).toBe(reference.state.digest());
      const differing = [...outcomes]
        .filter(([ts, o]) => {
          const ref = reference.outcomes.get(ts);
          return ref === undefined || o.outcome === null || !encode(o.outcome).equals(encode(ref));
        })
        .slice(0, 5)
        .map(([ts, o]) => ({ ts, from: o.from, node: o.outcome, reference: reference.outcomes.get(ts) }));
      expect(JSON.parse(JSON.stringify(differing, jsonable))).toEqual([]);
      console.log(
        `fuzz: seed ${seed}: ${mutated} mutated frames written, ${entries.length} transactions sequenced, state equal to the reference, ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
    } finally {
      progress.finish();
      for (const peer of live) peer.destroy();
      await cluster?.close();
      tmp.cleanup();
    }
  });
});
