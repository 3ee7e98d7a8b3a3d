// Two network namespaces joined by a veth pair: separate hosts on one machine, for tests and
// benchmarks of what crosses a network. Needs root and iproute2's `ip`.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Why namespaces cannot be used here, or null if they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  const ip = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p));
  return ip === undefined ? "the 'ip' command (iproute2) is missing" : null;
}

/** Two namespaces joined by a veth pair, `a` at 10.X.Y.1/24 and `b` at .2. */
export class NetnsPair {
  readonly a: string;
  readonly b: string;
  readonly addrA: string;
  readonly addrB: string;
  private readonly created: string[] = [];

  constructor() {
    const tag = randomBytes(3).toString('hex');
    const [x = 0, y = 0] = randomBytes(2);
    [this.a, this.b] = [`remora-a-${tag}`, `remora-b-${tag}`];
    [this.addrA, this.addrB] = [`10.${64 + (x % 64)}.${y}.1`, `10.${64 + (x % 64)}.${y}.2`];
  }

  private ip(...args: string[]) {
    return run('ip', args, { timeout: 10_000 });
  }

  async create(): Promise<void> {
    const tag = this.a.slice(-6);
    for (const ns of [this.a, this.b]) {
      await this.ip('netns', 'add', ns);
      this.created.push(ns);
    }
    // Interface names are at most 15 bytes; each end is created inside its namespace.
    await this.ip('link', 'add', `rma${tag}`, 'netns', this.a, 'type', 'veth', 'peer', 'name', `rmb${tag}`, 'netns', this.b);
    for (const [ns, dev, addr] of [
      [this.a, `rma${tag}`, this.addrA],
      [this.b, `rmb${tag}`, this.addrB],
    ] as const) {
      await this.ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
      await this.ip('-n', ns, 'link', 'set', dev, 'up');
      await this.ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
  }

  exec(ns: string): string[] {
    return ['ip', 'netns', 'exec', ns];
  }

  /** Deleting a namespace deletes its end of the veth pair, and so the pair. */
  async destroy(): Promise<void> {
    for (const ns of this.created.splice(0)) {
      await this.ip('netns', 'del', ns).catch((e: unknown) => console.error(`netns del ${ns}: ${String(e)}`));
    }
  }
}
