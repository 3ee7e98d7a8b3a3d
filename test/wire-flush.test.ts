// `Conn.flush`: what `send` queued leaves at once instead of at the end of the turn (a heron
// replica's reply must not wait behind its bookkeeping), and later sends still leave in order.
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connect, listen, type Conn, type Server } from '../ts/wire.js';
import { tempCluster } from './helpers.js';

describe('wire flush', () => {
  let cluster: ReturnType<typeof tempCluster>;
  let server: Server | null = null;
  const conns: Conn[] = [];

  beforeEach(() => {
    cluster = tempCluster();
  });

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    await server?.close();
    server = null;
    cluster.cleanup();
  });

  /** A client connection, and the messages the server side receives from it. */
  async function pair(): Promise<{ client: Conn; received: unknown[]; next: (n: number) => Promise<void> }> {
    const received: unknown[] = [];
    let wake: (() => void) | undefined;
    server = await listen({
      path: join(cluster.dir, 'flush.sock'),
      secretFor: () => cluster.secret,
      log: () => undefined,
      onConnection: (c) => {
        conns.push(c);
        c.onMessage((m) => {
          received.push(m);
          wake?.();
        });
      },
    });
    const client = await connect({ path: join(cluster.dir, 'flush.sock'), role: 'tester', secret: cluster.secret, log: () => undefined });
    conns.push(client);
    const next = async (n: number) => {
      while (received.length < n) await new Promise<void>((resolve) => (wake = resolve));
    };
    return { client, received, next };
  }

  it('writes what was sent in this turn before the turn ends, and keeps the order of later sends', async () => {
    const { client, received, next } = await pair();
    client.send({ n: 1 });
    client.send({ n: 2 });
    // Queued until the turn ends: held by the connection, not yet written.
    expect(client.buffered).toBeGreaterThan(0);
    client.flush();
    expect(client.buffered).toBe(0);
    // Sent after the flush, in the same turn: queued again, and behind the first two.
    client.send({ n: 3 });
    expect(client.buffered).toBeGreaterThan(0);
    client.flush();
    client.flush();
    client.send({ n: 4 });
    await next(4);
    expect(received).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]);
  });

  it("answers false once a turn's sends pass the socket's high-water mark, and a drain follows", async () => {
    const { client, received, next } = await pair();
    const drained = new Promise<void>((resolve) => client.onDrain(resolve));
    const big = Buffer.alloc(4096, 7);
    const answers = Array.from({ length: 8 }, (_, n) => client.send({ n, big }));
    // 16 KiB, Node's default mark: the first sends fit under it, the last ones do not.
    expect(answers.slice(0, 3)).toEqual([true, true, true]);
    expect(answers.slice(4)).toEqual([false, false, false, false]);
    await drained;
    await next(8);
    expect(received.map((m) => (m as { n: number }).n)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });
});
