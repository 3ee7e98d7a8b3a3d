// `remora upgrade`: asks a running node to activate another version of its app at the next
// position of its log (docs/apps.md, "Upgrades"). The operator holds the member credential.
import { isAbsolute, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { NODE_SOCKET } from '../cluster.js';
import type { NodeToAdmin } from '../pipeline/messages.js';
import { ADMIN_ROLE } from '../pipeline/server.js';
import { readSecretFile, SECRET_FILE } from '../secret.js';
import { parseHostPort } from '../transport.js';
import { connect } from '../wire.js';
import { ConfigError } from './errors.js';
import { appOption, required, UsageError } from './options.js';

/** A path is sent absolute: the node resolves specs from its own working directory. */
const absoluteSpec = (spec: string): string => (spec.startsWith('.') || isAbsolute(spec) ? resolve(spec) : spec);

export async function upgradeCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { dir: { type: 'string' }, node: { type: 'string' }, 'secret-file': { type: 'string' }, app: { type: 'string' } },
  });
  const spec = absoluteSpec(appOption(values.app));
  let where: { path: string } | { host: string; port: number };
  let secretFile: string;
  if (values.node !== undefined) {
    const hp = parseHostPort(values.node);
    if (hp === null) throw new UsageError(`--node must be HOST:PORT, got '${values.node}'`);
    where = hp;
    secretFile = required(values['secret-file'], 'secret-file');
  } else {
    const dir = required(values.dir, 'dir');
    where = { path: join(dir, NODE_SOCKET) };
    secretFile = values['secret-file'] ?? join(dir, SECRET_FILE);
  }
  const conn = await connect({ ...where, secret: readSecretFile(secretFile), role: ADMIN_ROLE });
  try {
    const answer = await new Promise<NodeToAdmin>((res, rej) => {
      conn.onMessage((m) => res(m as NodeToAdmin));
      conn.onClose((e) => rej(new Error(`the node closed the connection before answering${e ? `: ${e.message}` : ''}`)));
      conn.send({ t: 'upgrade', spec });
    });
    if (answer.t === 'failed') throw new ConfigError(`upgrade to ${spec} failed: ${answer.error}`);
    if (answer.t !== 'upgraded') throw new Error(`the node answered an upgrade with ${answer.t}`);
    process.stdout.write(`upgraded to ${answer.app} ${answer.digest.slice(0, 12)} (${spec}): active after ${answer.ts}\n`);
    return 0;
  } finally {
    conn.close();
  }
}
