// The message layer between cluster members and clients: length-prefixed msgpack frames over
// Unix sockets or TCP, opened by a mutual HMAC-SHA256 challenge–response on the credential of the
// role the connecting side announces (docs/security.md: members and clients hold different ones,
// so a client credential cannot open a member's role).
//
// Handshake (every frame a msgpack map; nonces are 32 random bytes, MACs HMAC-SHA256(secret, …)):
//   client → server  { t: 'hello', proto: 'remora-wire/1', role, nonce: nonceC }
//   server → client  { t: 'challenge', nonce: nonceS, mac: MAC("remora-server" ‖ nonceC ‖ nonceS ‖ role) }
//   client → server  { t: 'auth', mac: MAC("remora-client" ‖ nonceC ‖ nonceS ‖ role) }
//   server → client  { t: 'ok' }
// The client sends its MAC before checking the server's, so either side holding the wrong secret
// is seen (and logged) by the other. Until the handshake ends, frames are limited to 1 KiB, and
// the whole handshake has one deadline; a listener caps its connections and, lower, those still
// in their handshake, so idle or trickling peers cannot crowd out the others.
import { Buffer } from 'node:buffer';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { Packr, RESERVE_START_SPACE } from 'msgpackr';
import { FrameDecoder } from './frames.js';
import { stages } from './stages.js';
import { joinBytes, putU32be, u32be } from './bytes.js';

export interface Conn {
  /** The other end: its address (server side) or the address dialled (client side). */
  readonly peer: string;
  /** The role the client announced in the handshake. */
  readonly role: string;
  /** Queues a message; returns false once the socket's buffer is over its high-water mark. */
  send(msg: unknown): boolean;
  /**
   * As `send` for a message already encoded: `frame` is the whole frame, a u32 big-endian
   * body length and then the msgpack body, which the caller vouches is what `send` would
   * have written for it (the peer decodes it as such).
   */
  sendFrame(frame: Buffer): boolean;
  /** Messages in order; those that arrive before the first handler is set wait for it. */
  onMessage(handler: (msg: unknown) => void): void;
  /**
   * A faster reader for the frames this connection mostly carries, tried before msgpack's
   * decoder: it returns the message (with byte strings copied out of the frame), or undefined
   * to leave the frame to the decoder. It must answer only as the decoder would.
   */
  readWith(reader: (body: Buffer) => unknown): void;
  /** Called once when the connection is gone, with the error that ended it, if any. */
  onClose(handler: (err?: Error) => void): void;
  /** Flushes what was sent, then closes; later `send`s throw. */
  close(): void;
  /** Ends the connection at once, reporting `reason` to the close handlers. */
  fail(reason: Error): void;
  /**
   * Writes what `send` queued in this turn of the event loop now, instead of once the turn's
   * synchronous work is done (a reply then leaves before its sender's bookkeeping runs).
   */
  flush(): void;
  /** Bytes queued for the peer and not yet taken by it. */
  readonly buffered: number;
  /** Stops reading the peer's messages (its sends then back up into its own socket). */
  pause(): void;
  resume(): void;
  /** Called each time the outgoing queue empties after `send` returned false. */
  onDrain(handler: () => void): void;
}

export interface Server {
  /** The socket path, or host:port. */
  readonly address: string;
  /** Stops accepting and closes every live connection. */
  close(): Promise<void>;
}

export interface WireOptions {
  path?: string;
  host?: string;
  port?: number;
  /** Largest frame body accepted or sent (default 4 MiB). */
  maxFrameBytes?: number;
  /** Default 5000. */
  handshakeTimeoutMs?: number;
  /** Where protocol errors are reported (default console.error). */
  log?: (msg: string) => void;
}

export interface ListenOptions extends WireOptions {
  onConnection: (conn: Conn) => void;
  /**
   * The credential a peer announcing `role` must hold, or undefined to refuse the role. Roles
   * with different credentials are what keeps one kind of peer from acting as another.
   */
  secretFor: (role: string) => Buffer | undefined;
  /** Connections open at once, past which new ones are closed unanswered (default 1024). */
  maxConnections?: number;
  /** Of those, connections still in their handshake (default 64). */
  maxUnauthenticated?: number;
}

export interface ConnectOptions extends WireOptions {
  role: string;
  /** The credential of `role`, at least 16 bytes. */
  secret: Buffer;
}

const PROTO = 'remora-wire/1';
const NONCE_BYTES = 32;
const HANDSHAKE_FRAME_BYTES = 1024;
const MAX_ROLE_BYTES = 255;
const CLOSE_GRACE_MS = 2000;
const packr = new Packr({ useRecords: false, int64AsType: 'bigint' });

interface Settings {
  maxFrameBytes: number;
  handshakeTimeoutMs: number;
  log: (msg: string) => void;
}

function checkSecret(secret: unknown): Buffer {
  if (!Buffer.isBuffer(secret) || secret.length < 16) throw new Error('wire: a credential must be a Buffer of at least 16 bytes');
  return secret;
}

function settings(o: WireOptions): Settings {
  const maxFrameBytes = o.maxFrameBytes ?? 4 * 1024 * 1024;
  if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < HANDSHAKE_FRAME_BYTES || maxFrameBytes > 0xffffffff) {
    throw new Error(`wire: maxFrameBytes must be an integer in [${HANDSHAKE_FRAME_BYTES}, 2^32 - 1]`);
  }
  const handshakeTimeoutMs = o.handshakeTimeoutMs ?? 5000;
  if (!(handshakeTimeoutMs > 0)) throw new Error('wire: handshakeTimeoutMs must be positive');
  return { maxFrameBytes, handshakeTimeoutMs, log: o.log ?? ((m) => console.error(m)) };
}

function endpoint(o: WireOptions): { path: string } | { host: string; port: number } {
  if (o.path !== undefined) {
    if (o.host !== undefined || o.port !== undefined) throw new Error('wire: give either path or host/port, not both');
    return { path: o.path };
  }
  if (o.port === undefined) throw new Error('wire: give a socket path or a TCP port');
  return { host: o.host ?? '127.0.0.1', port: o.port };
}

const hostPort = (host: string, port: number | undefined): string => `${host.includes(':') ? `[${host}]` : host}:${port ?? '?'}`;
const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e));

function mac(secret: Buffer, label: string, nonceC: Uint8Array, nonceS: Uint8Array, role: string): Buffer {
  return createHmac('sha256', secret).update(label).update(nonceC).update(nonceS).update(role, 'utf8').digest();
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;
const isBytes = (v: unknown, n: number): v is Uint8Array => v instanceof Uint8Array && v.length === n;
const isRole = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && Buffer.byteLength(v) <= MAX_ROLE_BYTES;

/**
 * `v` with every byte string copied out of the frame, which is a view of the socket's read
 * buffer (up to 64 KiB): a received transaction or table outlives its frame, and a view would
 * keep the whole buffer alive. Copied with `Buffer.from`, whose small copies share Node's
 * 8 KiB pool; msgpackr's own copies (`copyBuffers`) make an ArrayBuffer each, three
 * allocations and a sweep for the collector per transaction received.
 */
export function ownBytes(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v);
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = ownBytes(v[i]);
  } else if (v instanceof Map) {
    for (const [k, x] of v) v.set(k, ownBytes(x));
  } else if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    for (const k in o) o[k] = ownBytes(o[k]);
  }
  return v;
}

class Channel implements Conn {
  role = '';
  established = false;
  private paused = false;
  private readonly drainHandlers: (() => void)[] = [];
  // Undelivered messages stay as bytes here; the socket is paused while nobody takes them.
  private readonly decoder = new FrameDecoder(HANDSHAKE_FRAME_BYTES);
  private readonly handlers: ((msg: unknown) => void)[] = [];
  private readonly closeHandlers: ((err?: Error) => void)[] = [];
  private waiter: { resolve: (m: unknown) => void; reject: (e: Error) => void } | undefined;
  private ending = false; // closed or failed here: nothing more is delivered
  private peerEnded = false;
  private closed = false;
  private failure: Error | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  /** Frames sent this turn of the event loop, not yet written. */
  private out: Buffer[] = [];
  private outBytes = 0;
  private drainOwed = false;
  private reader: ((body: Buffer) => unknown) | undefined;

  constructor(
    private readonly socket: net.Socket,
    readonly peer: string,
    private readonly o: Settings,
  ) {
    socket.on('data', (chunk: Buffer) => {
      if (this.ending) return;
      const prev = stages.enter('receive');
      try {
        this.decoder.push(chunk);
        this.pump();
      } finally {
        stages.leave(prev);
      }
    });
    socket.on('end', () => (this.peerEnded = true));
    socket.on('drain', () => {
      for (const handler of this.drainHandlers) handler();
    });
    socket.on('error', (err) => (this.failure ??= err));
    socket.on('close', () => this.onSocketClose());
  }

  send(msg: unknown): boolean {
    if (this.ending || this.peerEnded || this.closed) throw new Error(`wire: send on closed connection to ${this.peer}`);
    // Packed after 4 bytes left free for the length: the frame is the packer's own bytes, not a copy.
    const frame = packr.pack(msg, RESERVE_START_SPACE | 4);
    putU32be(frame, 0, frame.length - 4);
    return this.sendFrame(frame);
  }

  sendFrame(frame: Buffer): boolean {
    if (this.ending || this.peerEnded || this.closed) throw new Error(`wire: send on closed connection to ${this.peer}`);
    const length = frame.length - 4;
    if (length > this.o.maxFrameBytes) {
      throw new Error(`wire: message of ${length} bytes exceeds maxFrameBytes (${this.o.maxFrameBytes})`);
    }
    if (length < 0 || u32be(frame, 0) !== length) throw new Error(`wire: a frame of ${frame.length} bytes whose header does not give its body's length`);
    // Messages sent in one turn of the event loop leave as one buffer in one write: copying
    // them into it costs less than the stream's bookkeeping for a write per message.
    this.out.push(frame);
    this.outBytes += frame.length;
    if (this.out.length === 1) process.nextTick(this.writeOut);
    const ok = this.buffered < this.socket.writableHighWaterMark;
    if (!ok) this.drainOwed = true;
    return ok;
  }

  flush(): void {
    this.writeOut();
  }

  private readonly writeOut = (): void => {
    const n = this.out.length;
    if (n === 0) return;
    const chunk = n === 1 ? (this.out[0] as Buffer) : joinBytes(this.out, this.outBytes);
    this.out = [];
    this.outBytes = 0;
    if (this.socket.destroyed) return;
    // A send that answered false is owed a 'drain'; the socket emits one only if this write
    // leaves it over its mark, so otherwise it is given here.
    const owed = this.drainOwed;
    this.drainOwed = false;
    if (this.socket.write(chunk) && owed) {
      process.nextTick(() => {
        for (const handler of this.drainHandlers) handler();
      });
    }
  };

  onMessage(handler: (msg: unknown) => void): void {
    this.handlers.push(handler);
    queueMicrotask(() => this.pump());
  }

  readWith(reader: (body: Buffer) => unknown): void {
    this.reader = reader;
  }

  onClose(handler: (err?: Error) => void): void {
    if (this.closed) queueMicrotask(() => handler(this.failure));
    else this.closeHandlers.push(handler);
  }

  get buffered(): number {
    return this.socket.writableLength + this.outBytes;
  }

  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.pump();
  }

  onDrain(handler: () => void): void {
    this.drainHandlers.push(handler);
  }

  close(): void {
    if (this.ending || this.closed) return;
    this.ending = true;
    this.writeOut();
    this.socket.end();
    this.graceTimer = setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS);
  }

  /** Ends the connection at once because of `err` (logged if past the handshake). */
  fail(err: Error): void {
    if (this.closed) return;
    if (this.established) this.o.log(`remora wire: connection with ${this.peer} (${this.role}) closed: ${err.message}`);
    this.failure ??= err;
    this.ending = true;
    this.socket.destroy();
  }

  /** The next message, for the handshake. */
  read(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(this.failure ?? new Error('connection closed by peer'));
      this.waiter = { resolve, reject };
      this.pump();
    });
  }

  /** Past the handshake: frames may now be as large as configured. */
  establish(role: string): void {
    this.role = role;
    this.established = true;
    this.decoder.maxBytes = this.o.maxFrameBytes;
  }

  /** Decodes and hands on buffered frames while someone takes them. */
  private pump(): void {
    while (!this.ending) {
      if (this.waiter === undefined && !(this.established && this.handlers.length > 0 && !this.paused)) {
        this.socket.pause();
        return;
      }
      let msg: unknown;
      try {
        const body = this.decoder.next();
        if (body === undefined) {
          this.socket.resume();
          return;
        }
        msg = this.reader?.(body);
        if (msg === undefined) {
          // unpackMultiple, not unpack: on trailing bytes unpack builds its error message by
          // serialising the whole decoded value, which a 4 MiB frame turns into a long stall.
          const values: unknown[] = packr.unpackMultiple(body);
          if (values.length !== 1) throw new Error(`a frame must hold one msgpack value, this one holds ${values.length}`);
          msg = ownBytes(values[0]);
        }
      } catch (e) {
        this.fail(new Error(`protocol error: ${describe(e)}`));
        return;
      }
      const waiter = this.waiter;
      this.waiter = undefined;
      if (waiter !== undefined) waiter.resolve(msg);
      else this.dispatch(msg);
    }
  }

  private dispatch(msg: unknown): void {
    for (const handler of this.handlers) {
      try {
        handler(msg);
      } catch (e) {
        this.fail(new Error(`message handler threw: ${describe(e)}`));
        return;
      }
    }
  }

  private onSocketClose(): void {
    this.closed = true;
    this.ending = true;
    clearTimeout(this.graceTimer);
    this.waiter?.reject(this.failure ?? new Error('connection closed by peer'));
    this.waiter = undefined;
    for (const handler of this.closeHandlers.splice(0)) handler(this.failure);
  }
}

/**
 * At most `burst` lines per `windowMs`, then one line saying how many were left out: anyone
 * can fail a handshake, and the log must not become the flood.
 */
function rateLimited(log: (m: string) => void, burst = 20, windowMs = 10_000): (m: string) => void {
  let windowStart = 0;
  let said = 0;
  let dropped = 0;
  return (m) => {
    const now = Date.now();
    if (now - windowStart >= windowMs) {
      if (dropped > 0) log(`remora wire: ${dropped} more lines like these left out in the last ${windowMs / 1000} s`);
      windowStart = now;
      said = 0;
      dropped = 0;
    }
    if (said++ < burst) log(m);
    else dropped++;
  };
}

/** Rejects with "timed out" unless `work` settles within `ms`. */
async function within<T>(ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function serverHandshake(ch: Channel, secretFor: (role: string) => Buffer | undefined): Promise<void> {
  const hello = await ch.read();
  if (!isRecord(hello) || hello.t !== 'hello') throw new Error('the first message is not a hello');
  if (hello.proto !== PROTO)
    throw new Error(`unsupported protocol ${typeof hello.proto === 'string' ? JSON.stringify(hello.proto.slice(0, 64)) : typeof hello.proto}`);
  const { role, nonce: nonceC } = hello;
  if (!isRole(role) || !isBytes(nonceC, NONCE_BYTES)) throw new Error('malformed hello');
  const secret = secretFor(role);
  if (secret === undefined) throw new Error(`role ${JSON.stringify(role.slice(0, 64))} is not accepted here`);
  const nonceS = randomBytes(NONCE_BYTES);
  ch.send({ t: 'challenge', nonce: nonceS, mac: mac(secret, 'remora-server', nonceC, nonceS, role) });
  const auth = await ch.read();
  if (!isRecord(auth) || auth.t !== 'auth' || !isBytes(auth.mac, 32)) throw new Error('expected an auth message');
  if (!timingSafeEqual(auth.mac, mac(secret, 'remora-client', nonceC, nonceS, role))) {
    throw new Error(`peer does not hold the credential of role ${JSON.stringify(role)}`);
  }
  ch.establish(role);
  ch.send({ t: 'ok' });
}

async function clientHandshake(ch: Channel, secret: Buffer, role: string): Promise<void> {
  const nonceC = randomBytes(NONCE_BYTES);
  ch.send({ t: 'hello', proto: PROTO, role, nonce: nonceC });
  const challenge = await ch.read();
  if (!isRecord(challenge) || challenge.t !== 'challenge') throw new Error('unexpected reply to hello');
  const { nonce: nonceS, mac: macS } = challenge;
  if (!isBytes(nonceS, NONCE_BYTES) || !isBytes(macS, 32)) throw new Error('malformed challenge');
  ch.send({ t: 'auth', mac: mac(secret, 'remora-client', nonceC, nonceS, role) });
  if (!timingSafeEqual(macS, mac(secret, 'remora-server', nonceC, nonceS, role))) {
    throw new Error(`the server does not share this credential for role ${JSON.stringify(role)} (wrong secret file for this role?)`);
  }
  const ok = await ch.read();
  if (!isRecord(ok) || ok.t !== 'ok') throw new Error('server did not accept the handshake');
  ch.establish(role);
}

/** Removes a leftover socket file, refusing if a server still answers on it. */
async function clearStaleSocket(path: string): Promise<void> {
  try {
    if (!lstatSync(path).isSocket()) throw new Error(`wire: ${path} exists and is not a socket`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.createConnection({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new Error(`wire: ${path} is in use by a running server`);
  unlinkSync(path);
}

export async function listen(opts: ListenOptions): Promise<Server> {
  const o = settings(opts);
  const where = endpoint(opts);
  const maxConnections = opts.maxConnections ?? 1024;
  const maxUnauthenticated = Math.min(opts.maxUnauthenticated ?? 64, maxConnections);
  const channels = new Set<Channel>();
  // In handshake, oldest first. At the cap the oldest is dropped for the newcomer: an honest
  // handshake takes a round trip, so slow peers cannot hold every slot for the whole deadline.
  const handshaking = new Set<Channel>();
  let refused = 0;
  let stopping = false;
  let seq = 0;
  let address = 'path' in where ? where.path : '';
  const say = rateLimited(o.log);
  const secretFor = (role: string): Buffer | undefined => {
    const s = opts.secretFor(role);
    return s === undefined ? undefined : checkSecret(s);
  };
  const server = net.createServer((socket) => {
    const peer = socket.remoteAddress ? hostPort(socket.remoteAddress, socket.remotePort) : `${address}#${++seq}`;
    if (handshaking.size >= maxUnauthenticated) {
      const [oldest] = handshaking;
      if (oldest) {
        handshaking.delete(oldest);
        oldest.fail(new Error(`dropped for a newer connection: over ${maxUnauthenticated} in handshake`));
      }
    }
    if (channels.size >= maxConnections) {
      // Said once per burst, not per connection: the log must not become the flood.
      if (refused++ % 1000 === 0) say(`remora wire: ${address}: refusing ${peer}: ${channels.size} connections open (cap ${maxConnections})`);
      socket.destroy();
      return;
    }
    const ch = new Channel(socket, peer, o);
    channels.add(ch);
    handshaking.add(ch);
    const settled = () => handshaking.delete(ch);
    ch.onClose(() => {
      channels.delete(ch);
      settled();
    });
    within(o.handshakeTimeoutMs, serverHandshake(ch, secretFor)).then(
      () => {
        settled();
        try {
          opts.onConnection(ch);
        } catch (e) {
          ch.fail(new Error(`onConnection threw: ${describe(e)}`));
        }
      },
      (e: unknown) => {
        settled();
        if (!stopping) say(`remora wire: handshake with ${peer} failed: ${describe(e)}`);
        ch.fail(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
  if ('path' in where) await clearStaleSocket(where.path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(where, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => o.log(`remora wire: server ${address}: ${e.message}`));
  if ('path' in where) {
    // The cluster directory is the first fence; this closes the socket itself to other users.
    try {
      chmodSync(where.path, 0o600);
    } catch (e) {
      server.close();
      throw e;
    }
  } else {
    const a = server.address() as net.AddressInfo;
    address = hostPort(a.address, a.port);
  }
  return {
    address,
    close: () => {
      stopping = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const ch of channels) {
        if (ch.established) ch.close();
        else ch.fail(new Error('server closing'));
      }
      return closed;
    },
  };
}

export async function connect(opts: ConnectOptions): Promise<Conn> {
  const o = settings(opts);
  const secret = checkSecret(opts.secret);
  const where = endpoint(opts);
  if (!isRole(opts.role)) throw new Error(`wire: role must be a non-empty string of at most ${MAX_ROLE_BYTES} bytes`);
  const peer = 'path' in where ? where.path : hostPort(where.host, where.port);
  const socket = net.createConnection(where);
  let connected = false;
  socket.once('connect', () => (connected = true));
  const ch = new Channel(socket, peer, o);
  try {
    await within(o.handshakeTimeoutMs, clientHandshake(ch, secret, opts.role));
  } catch (e) {
    const reason = describe(e);
    if (!connected && socket.destroyed) throw new Error(`wire: cannot connect to ${peer}: ${reason}`);
    ch.close();
    throw new Error(`handshake with ${peer} failed: ${reason}`);
  }
  return ch;
}
