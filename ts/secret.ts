// Credentials, and the cluster directory that holds them (docs/security.md).
//
// `cluster.secret` is the member credential: pre-executors, Heron replicas and store peers
// (shm, tcp, verbs) prove they hold it. `client.secret` is the client credential, derived from
// it one-way, so handing it to clients gives them nothing a member has. The directory and both
// files must belong to the running user and be closed to everyone else: a directory or secret
// someone else could have planted or read is refused, not used.
import { createHmac, randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, readFileSync, writeFileSync, type Stats } from 'node:fs';
import { join } from 'node:path';

export const SECRET_FILE = 'cluster.secret';
export const CLIENT_SECRET_FILE = 'client.secret';

const CLIENT_LABEL = 'remora client credential v1';

/** Raised for a directory or secret file that must not be trusted; the message says the fix. */
export class CredentialError extends Error {
  override name = 'CredentialError';
}

const euid = (): number | undefined => process.geteuid?.();

/** Why `st` must not be trusted (null if it may): someone else's, or open to group or other. */
export function untrusted(st: Pick<Stats, 'uid' | 'mode'>, me: number | undefined): string | null {
  if (me !== undefined && st.uid !== me) return `it belongs to uid ${st.uid}, not to you (uid ${me})`;
  if ((st.mode & 0o077) !== 0) return `its mode is 0${(st.mode & 0o777).toString(8)}, open to group or other`;
  return null;
}

function checkPrivate(path: string, what: 'directory' | 'file', fix: string): void {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (e) {
    throw new CredentialError(`cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (st.isSymbolicLink()) throw new CredentialError(`${path} is a symbolic link; the cluster ${what} must be a real ${what} (${fix})`);
  if (what === 'directory' ? !st.isDirectory() : !st.isFile()) throw new CredentialError(`${path} is not a ${what}`);
  const why = untrusted(st, euid());
  if (why !== null) throw new CredentialError(`refusing ${what} ${path}: ${why}; ${fix}`);
}

/** Creates the cluster directory (0700) or checks that the existing one is private to this user. */
export function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  checkPrivate(dir, 'directory', `use a directory of your own with 'chmod 700 ${dir}', or another --dir`);
}

function readPrivate(path: string): Buffer {
  checkPrivate(path, 'file', `a secret must be readable by you alone: 'chmod 600 ${path}', if you made it`);
  const secret = readFileSync(path);
  if (secret.length < 16) throw new CredentialError(`the secret file ${path} holds ${secret.length} bytes; a credential has at least 16`);
  return secret;
}

/** The client credential that goes with a member credential. */
export function clientCredential(memberSecret: Buffer): Buffer {
  return createHmac('sha256', memberSecret).update(CLIENT_LABEL).digest();
}

function createOnce(path: string, data: Buffer): void {
  try {
    writeFileSync(path, data, { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
}

/**
 * The cluster's member credential, created (32 random bytes, 0600) on first use together with
 * `client.secret`, the file to hand to clients.
 */
export function loadOrCreateSecret(dir: string): Buffer {
  privateDir(dir);
  const path = join(dir, SECRET_FILE);
  createOnce(path, randomBytes(32));
  const member = readPrivate(path);
  const clientPath = join(dir, CLIENT_SECRET_FILE);
  createOnce(clientPath, clientCredential(member));
  return member;
}

/** The client credential of the cluster in `dir` (for clients on the node's host). */
export function loadClientSecret(dir: string): Buffer {
  return clientCredential(loadOrCreateSecret(dir));
}

/**
 * Reads a credential from a file of its own: how a member or client on another host gets it (a
 * copy of the node's `cluster.secret` or `client.secret`, readable by its user only).
 */
export function readSecretFile(path: string): Buffer {
  return readPrivate(path);
}
