// Test plumbing: private cluster directories and owner processes driven over stdin.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export function tempCluster(): { dir: string; secret: Buffer; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'remora-vitest-'));
  return { dir, secret: randomBytes(32), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A store owner in another process; `send` waits for its one-line reply. */
export class OwnerProcess {
  private readonly lines: AsyncIterator<string>;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    this.lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }

  static async start(dir: string, name: string, secret: Buffer): Promise<OwnerProcess> {
    const script = fileURLToPath(new URL('./fixtures/owner.mjs', import.meta.url));
    const child = spawn(process.execPath, [script, dir, name, secret.toString('hex')], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const owner = new OwnerProcess(child);
    const first = await owner.next();
    if (first !== 'ready') throw new Error(`owner did not start: ${first}\n${stderr}`);
    return owner;
  }

  private async next(): Promise<string> {
    const { value, done } = await this.lines.next();
    if (done) throw new Error('owner process exited');
    return value;
  }

  async send(line: string): Promise<string> {
    this.child.stdin.write(`${line}\n`);
    return this.next();
  }

  /** Ends the owner: closing stdin makes it close its store and exit; killed if it hangs. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = new Promise<number | null>((resolve) => this.child.once('exit', resolve));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }
}
