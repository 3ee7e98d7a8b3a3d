// The cluster secret lives in the cluster directory, readable by its user only.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const SECRET_FILE = 'cluster.secret';

/** Reads the cluster's secret, creating a fresh random one (32 bytes, file 0600) if none. */
export function loadOrCreateSecret(dir: string): Buffer {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, SECRET_FILE);
  try {
    writeFileSync(path, randomBytes(32), { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  return readFileSync(path);
}

/**
 * Reads a cluster secret from a file of its own: how a member on another host, without the
 * cluster directory, gets it (copy the node's `cluster.secret` there, readable by its user only).
 */
export function readSecretFile(path: string): Buffer {
  let secret: Buffer;
  try {
    secret = readFileSync(path);
  } catch (e) {
    throw new Error(`cannot read the secret file ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (secret.length < 16) throw new Error(`the secret file ${path} holds ${secret.length} bytes; a cluster secret has at least 16`);
  return secret;
}
