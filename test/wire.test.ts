// The wire layer: framing, the handshake on the cluster secret, protocol errors, order, close.
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FrameDecoder, encodeFrame } from '../ts/frames.js';
import { connect, listen, type Conn, type Server } from '../ts/wire.js';
import { tempCluster } from './helpers.js';

const packr = new Packr({ useRecords: false, int64AsType: 'bigint' });

/** A log sink that can be waited on. */
function logSink(): { lines: string[]; log: (m: string) => void; waitFor: (re: RegExp) => Promise<string> } {
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  return {
    lines,
    log: (m) => {
      lines.push(m);
      for (const w of waiters.filter((x) => x.re.test(m))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    },
    waitFor: (re) =>
      new Promise((resolve) => {
        const seen = lines.find((l) => re.test(l));
        if (seen !== undefined) resolve(seen);
        else waiters.push({ re, resolve });
      }),
  };
}

/** Messages of a connection as promises, in order. */
function inbox(conn: Conn): () => Promise<unknown> {
  const ready: unknown[] = [];
  const waiting: ((m: unknown) => void)[] = [];
  conn.onMessage((m) => {
    const w = waiting.shift();
    if (w) w(m);
    else ready.push(m);
  });
  return () => (ready.length > 0 ? Promise.resolve(ready.shift()) : new Promise((resolve) => waiting.push(resolve)));
}

const closed = (conn: Conn): Promise<Error | undefined> => new Promise((resolve) => conn.onClose(resolve));
const socketClosed = (s: net.Socket): Promise<void> => new Promise((resolve) => s.once('close', () => resolve()));

/** A raw socket that completes the handshake by hand, as the protocol describes. */
async function rawAuthenticated(path: string, secret: Buffer, role: string): Promise<net.Socket> {
  const socket = net.createConnection({ path });
  const decoder = new FrameDecoder(1 << 20);
  const frames: unknown[] = [];
  let wake: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    decoder.push(chunk);
    for (let body = decoder.next(); body !== undefined; body = decoder.next()) frames.push(packr.unpack(body));
    wake?.();
  });
  const next = async (): Promise<Record<string, unknown>> => {
    while (frames.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    return frames.shift() as Record<string, unknown>;
  };
  const nonceC = randomBytes(32);
  socket.write(encodeFrame(packr.pack({ t: 'hello', proto: 'remora-wire/1', role, nonce: nonceC })));
  const challenge = await next();
  const nonceS = challenge.nonce as Buffer;
  const macC = createHmac('sha256', secret).update('remora-client').update(nonceC).update(nonceS).update(role).digest();
  socket.write(encodeFrame(packr.pack({ t: 'auth', mac: macC })));
  expect(await next()).toEqual({ t: 'ok' });
  socket.removeAllListeners('data');
  return socket;
}

const sample = {
  id: 12345678901234567890n,
  neg: -5n,
  small: 1n,
  nested: { list: [1, 'two', { three: [Buffer.from([0, 1, 2, 255])] }], flag: true, none: null },
  blob: Buffer.alloc(70_000, 7),
  text: 'héllo',
  float: 1.25,
};

describe('wire', () => {
  let cluster: ReturnType<typeof tempCluster>;
  let servers: Server[];
  let conns: Conn[];
  let sink: ReturnType<typeof logSink>;

  beforeEach(() => {
    cluster = tempCluster();
    servers = [];
    conns = [];
    sink = logSink();
  });
  afterEach(async () => {
    for (const c of conns) c.close();
    await Promise.all(servers.map((s) => s.close()));
    cluster.cleanup();
  });

  /** A server that echoes every message back as { role, msg }. */
  async function echoServer(opts: {
    path?: string;
    port?: number;
    maxFrameBytes?: number;
    handshakeTimeoutMs?: number;
    maxConnections?: number;
    maxUnauthenticated?: number;
  }) {
    const server = await listen({
      ...opts,
      secretFor: () => cluster.secret,
      log: sink.log,
      onConnection: (c) => c.onMessage((msg) => c.send({ role: c.role, msg })),
    });
    servers.push(server);
    return server;
  }
  async function client(opts: { path?: string; port?: number; role?: string; secret?: Buffer }) {
    const c = await connect({ role: 'tester', ...opts, secret: opts.secret ?? cluster.secret, log: sink.log });
    conns.push(c);
    return c;
  }
  const sockPath = (): string => join(cluster.dir, 'wire.sock');

  it('round-trips nested messages with bigints and Buffers over a Unix socket (mode 0600)', async () => {
    const server = await echoServer({ path: sockPath() });
    expect(server.address).toBe(sockPath());
    expect(statSync(sockPath()).mode & 0o777).toBe(0o600);
    const c = await client({ path: sockPath(), role: 'executor' });
    const next = inbox(c);
    c.send(sample);
    expect(await next()).toEqual({ role: 'executor', msg: sample });
    expect(sink.lines).toEqual([]);
  });

  it('round-trips over TCP on 127.0.0.1', async () => {
    const server = await echoServer({ port: 0 });
    expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const port = Number(server.address.split(':')[1]);
    const c = await client({ port });
    const next = inbox(c);
    c.send(sample);
    expect(await next()).toEqual({ role: 'tester', msg: sample });
  });

  it('rejects a client with the wrong secret, logs it, and still serves a correct client', async () => {
    await echoServer({ path: sockPath() });
    await expect(client({ path: sockPath(), secret: randomBytes(32) })).rejects.toThrow(
      `handshake with ${sockPath()} failed: the server does not share this credential for role "tester" (wrong secret file for this role?)`,
    );
    expect(await sink.waitFor(/handshake/)).toMatch(/handshake with .* failed: peer does not hold the credential of role "tester"/);
    const c = await client({ path: sockPath() });
    const next = inbox(c);
    c.send('after');
    expect(await next()).toEqual({ role: 'tester', msg: 'after' });
  });

  it('disconnects a peer that is silent past the handshake timeout', async () => {
    await echoServer({ path: sockPath(), handshakeTimeoutMs: 200 });
    const raw = net.createConnection({ path: sockPath() });
    await socketClosed(raw);
    expect(await sink.waitFor(/handshake/)).toMatch(/failed: timed out after 200 ms/);
  });

  it('drops the oldest of too many peers in handshake for a newcomer, and refuses past the connection cap', async () => {
    await echoServer({ path: sockPath(), maxConnections: 6, maxUnauthenticated: 3 });
    // Squatters: connected, silent, holding every handshake slot.
    const squatters = [0, 1, 2].map(() => net.createConnection({ path: sockPath() }));
    await Promise.all(squatters.map((s) => new Promise((resolve) => s.once('connect', resolve))));
    const first = squatters[0];
    if (!first) throw new Error('three squatters');
    const evicted = socketClosed(first);
    const honest = await client({ path: sockPath() });
    await evicted;
    expect(await sink.waitFor(/dropped/)).toMatch(/handshake with .* failed: dropped for a newer connection: over 3 in handshake/);
    // Fill the listener: two squatters remain, so three more authenticated make six.
    await client({ path: sockPath() });
    await client({ path: sockPath() });
    await client({ path: sockPath() });
    const over = net.createConnection({ path: sockPath() });
    await socketClosed(over);
    expect(await sink.waitFor(/refusing/)).toMatch(/refusing .*: 6 connections open \(cap 6\)/);
    const next = inbox(honest);
    honest.send('still served');
    expect(await next()).toEqual({ role: 'tester', msg: 'still served' });
    for (const s of squatters) s.destroy();
  });

  it('closes connections that send garbage and keeps serving the others', async () => {
    await echoServer({ path: sockPath(), maxFrameBytes: 4096 });
    const good = await client({ path: sockPath() });
    const next = inbox(good);

    // A huge length header as the very first bytes: refused before any body is read.
    const early = net.createConnection({ path: sockPath() });
    early.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    await socketClosed(early);
    expect(await sink.waitFor(/4294967295/)).toMatch(/handshake with .* failed: protocol error: frame of 4294967295 bytes exceeds the limit of 1024 bytes/);

    // Authenticated, then a header over maxFrameBytes.
    const big = await rawAuthenticated(sockPath(), cluster.secret, 'big');
    const header = Buffer.alloc(4);
    header.writeUInt32BE(4097);
    big.write(header);
    await socketClosed(big);
    expect(await sink.waitFor(/\(big\)/)).toMatch(/connection with .* \(big\) closed: protocol error: frame of 4097 bytes exceeds the limit of 4096 bytes/);

    // Authenticated, then a body that is not msgpack (an array announced with 2 items, holding 1).
    const bad = await rawAuthenticated(sockPath(), cluster.secret, 'bad');
    bad.write(encodeFrame(Buffer.from([0x92, 0x01])));
    await socketClosed(bad);
    expect(await sink.waitFor(/\(bad\)/)).toMatch(/connection with .* \(bad\) closed: protocol error: /);

    good.send({ still: 'here' });
    expect(await next()).toEqual({ role: 'tester', msg: { still: 'here' } });
    const late = await client({ path: sockPath() });
    const nextLate = inbox(late);
    late.send(1n);
    expect(await nextLate()).toEqual({ role: 'tester', msg: 1n });
  });

  it('preserves the order of 10,000 messages both ways', async () => {
    await echoServer({ path: sockPath() });
    const c = await client({ path: sockPath() });
    const got: unknown[] = [];
    const all = new Promise<void>((resolve) =>
      c.onMessage((m) => {
        got.push((m as { msg: { i: number } }).msg.i);
        if (got.length === 10_000) resolve();
      }),
    );
    for (let i = 0; i < 10_000; i++) c.send({ i, pad: 'x'.repeat(i % 100) });
    await all;
    expect(got).toEqual(Array.from({ length: 10_000 }, (_, i) => i));
  });

  it('hands on what a reader took and what it left to msgpack in the order sent', async () => {
    const seen: unknown[] = [];
    const server = await listen({
      path: sockPath(),
      secretFor: () => cluster.secret,
      log: sink.log,
      onConnection: (c) => {
        // A reader of one shape: `{ i }` with an even `i` below 128 (map16 of one entry, as
        // msgpackr writes it), read as { read: i }.
        c.readWith((body) => (body.length === 6 && body[0] === 0xde && body[5] !== undefined && body[5] % 2 === 0 ? { read: body[5] } : undefined));
        c.onMessage((m) => {
          seen.push(m);
          c.send(m);
        });
      },
    });
    servers.push(server);
    const c = await client({ path: sockPath() });
    const next = inbox(c);
    for (let i = 0; i < 100; i++) c.send({ i });
    const got: unknown[] = [];
    for (let i = 0; i < 100; i++) got.push(await next());
    expect(got).toEqual(Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? { read: i } : { i })));
    expect(seen).toEqual(got);
  });

  it('throws on send after close, and tells both ends', async () => {
    let onAccept: (c: Conn) => void = () => undefined;
    const accepted = new Promise<Conn>((resolve) => (onAccept = resolve));
    servers.push(await listen({ path: sockPath(), secretFor: () => cluster.secret, log: sink.log, onConnection: (c) => onAccept(c) }));
    const c = await client({ path: sockPath() });
    const serverSide = await accepted;
    const serverClosed = closed(serverSide);
    const clientClosed = closed(c);
    c.close();
    expect(() => c.send('late')).toThrow(/send on closed connection/);
    expect(await clientClosed).toBeUndefined();
    expect(await serverClosed).toBeUndefined();
    expect(() => serverSide.send('late')).toThrow(/send on closed connection/);
  });

  it('removes a stale socket file but refuses a path a server still answers on', async () => {
    const child = spawn(process.execPath, ['-e', "require('net').createServer().listen(process.argv[1], () => console.log('up'))", sockPath()], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    await expect(echoServer({ path: sockPath() })).rejects.toThrow(/in use by a running server/);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    expect(existsSync(sockPath())).toBe(true);
    await echoServer({ path: sockPath() });
    const c = await client({ path: sockPath() });
    const next = inbox(c);
    c.send('fresh');
    expect(await next()).toEqual({ role: 'tester', msg: 'fresh' });
  });
});
