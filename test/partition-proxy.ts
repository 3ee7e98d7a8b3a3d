// A TCP relay in front of one server, for fault tests: `partition()` stops moving bytes both
// ways while keeping every connection open, as a network that silently drops packets would
// (the peers find out only through their own timeouts); `heal()` lets the queued bytes through.
import { createServer, connect, type Server, type Socket } from 'node:net';

export class PartitionProxy {
  private readonly pairs = new Set<[Socket, Socket]>();
  /** Bytes held back while cut, per destination socket, in order. */
  private readonly held = new Map<Socket, Buffer[]>();
  private cut = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(target: { host: string; port: number }): Promise<PartitionProxy> {
    let proxy: PartitionProxy | null = null;
    const server = createServer((client) => {
      const upstream = connect(target);
      const pair: [Socket, Socket] = [client, upstream];
      proxy?.pairs.add(pair);
      const forward = (to: Socket) => (chunk: Buffer) => {
        if (!proxy?.cut) to.write(chunk);
        else proxy.held.set(to, [...(proxy.held.get(to) ?? []), chunk]);
      };
      client.on('data', forward(upstream));
      upstream.on('data', forward(client));
      const drop = () => {
        proxy?.pairs.delete(pair);
        for (const s of pair) proxy?.held.delete(s);
        client.destroy();
        upstream.destroy();
      };
      for (const s of pair) s.on('error', drop).on('close', drop);
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('proxy: no TCP address');
    proxy = new PartitionProxy(server, address.port);
    return proxy;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  partition(): void {
    this.cut = true;
  }

  heal(): void {
    this.cut = false;
    for (const [to, chunks] of this.held) for (const c of chunks) to.write(c);
    this.held.clear();
  }

  async close(): Promise<void> {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
    this.held.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
