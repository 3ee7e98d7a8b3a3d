// The operator's connection to a running node (`remora upgrade`, `remora status`): the admin
// role, with the member credential, over the node's socket in its directory or over TCP.
import { join } from 'node:path';
import { NODE_SOCKET } from '../cluster.js';
import type { AdminToNode, NodeToAdmin } from '../pipeline/messages.js';
import { ADMIN_ROLE } from '../pipeline/server.js';
import { readSecretFile, SECRET_FILE } from '../secret.js';
import { parseHostPort } from '../transport.js';
import { connect } from '../wire.js';
import { required, UsageError } from './options.js';

/** The options every admin command takes: `--dir DIR`, or `--node HOST:PORT --secret-file F`. */
export const ADMIN_OPTIONS = { dir: { type: 'string' }, node: { type: 'string' }, 'secret-file': { type: 'string' } } as const;

/** Sends one request and resolves with the node's one answer. */
export async function askNode(
  values: { dir?: string | undefined; node?: string | undefined; 'secret-file'?: string | undefined },
  request: AdminToNode,
): Promise<NodeToAdmin> {
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
    return await new Promise<NodeToAdmin>((res, rej) => {
      conn.onMessage((m) => res(m as NodeToAdmin));
      conn.onClose((e) => rej(new Error(`the node closed the connection before answering${e ? `: ${e.message}` : ''}`)));
      conn.send(request);
    });
  } finally {
    conn.close();
  }
}
