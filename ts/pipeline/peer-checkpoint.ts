// A checkpoint copied from a running node over its store's transport (docs/checkpoints.md,
// "From a peer"): a primary starting with an empty directory, or a pre-executor joining from
// another host, starts from the node's newest checkpoint instead of from nothing. The node
// shares the file in a region of its store; the copier asks where (one `admin` request, the
// member credential), reads the region one-sidedly, and checks the whole file before use.
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { verifyCheckpoint } from '../binding.js';
import { RemoteStore } from '../store.js';
import { connect } from '../wire.js';
import { checkpointFile } from './checkpoints.js';
import { parseSharedCheckpoint, type SharedCheckpointInfo } from './messages.js';
import { ADMIN_ROLE } from './server.js';

/** Where the region's data starts (one page of region header) and the share's own header. */
const SHARE_AT = 4096;
const SHARE_HEADER = 16;
const CHUNK = 1 << 20;
const ATTEMPTS = 3;

export type NodeAddress = { path: string } | { host: string; port: number };

/** Asks the node at `where` where it shares its newest checkpoint (null: none yet). */
export async function askSharedCheckpoint(where: NodeAddress, secret: Buffer): Promise<SharedCheckpointInfo | null> {
  const conn = await connect({ ...where, secret, role: ADMIN_ROLE });
  try {
    return await new Promise<SharedCheckpointInfo | null>((resolve, reject) => {
      conn.onMessage((m) => {
        try {
          resolve(parseSharedCheckpoint(m));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
      conn.onClose((e) => reject(new Error(`the node closed the connection before answering${e ? `: ${e.message}` : ''}`)));
      conn.send({ t: 'checkpoint' });
    });
  } finally {
    conn.close();
  }
}

/**
 * Copies the node's newest shared checkpoint into `dir` (as a checkpoint file a start then
 * chooses like its own) and returns its path and timestamp, or null if the node shares none.
 * `clusterDir`: where the node's store lives, for `shm` (the node's host).
 */
export async function fetchPeerCheckpoint(opts: {
  node: NodeAddress;
  secret: Buffer;
  dir: string;
  clusterDir?: string;
  /** The node's answer to `askSharedCheckpoint`, if already asked. */
  at?: SharedCheckpointInfo | null;
  log?: (m: string) => void;
}): Promise<{ ts: bigint; path: string; bytes: number } | null> {
  const at = opts.at === undefined ? await askSharedCheckpoint(opts.node, opts.secret) : opts.at;
  if (at === null) return null;
  // Released with the object: a remote store has no close.
  const remote = await connectStore(at, opts);
  mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
  const tmp = `${checkpointFile(opts.dir, at.ts)}.peer-${process.pid}`;
  for (let attempt = 1; ; attempt++) {
    const copy = copyShared(remote, at);
    if (copy !== null) {
      writeFileSync(tmp, copy, { mode: 0o600 });
      try {
        // The whole file's checksums: a copy torn by a newer share, or damaged, is refused.
        // A newer one than the node named is as good: it was shared since.
        const { ts } = verifyCheckpoint(tmp);
        const path = checkpointFile(opts.dir, ts);
        renameSync(tmp, path);
        return { ts, path, bytes: copy.length };
      } catch (e) {
        rmSync(tmp, { force: true });
        opts.log?.(`copy ${attempt} of the peer's checkpoint at ts ${at.ts} is not whole: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    if (attempt >= ATTEMPTS) throw new Error(`the peer's checkpoint at ts ${at.ts} changed under ${ATTEMPTS} copies; start again`);
  }
}

async function connectStore(at: SharedCheckpointInfo, opts: { secret: Buffer; clusterDir?: string }): Promise<RemoteStore> {
  if (at.transport !== 'shm') {
    if (at.address === null) throw new Error(`the node serves its store over ${at.transport} without an address`);
    return RemoteStore.connect({ transport: at.transport, address: at.address, secret: opts.secret });
  }
  if (opts.clusterDir === undefined) {
    throw new Error('the node shares its store over shm (its host only): start it with --transport tcp to copy its checkpoint from another host');
  }
  return RemoteStore.connect({ transport: 'shm', dir: opts.clusterDir, store: at.store, secret: opts.secret });
}

/** The shared file as the region holds it now, or null if it is being replaced. */
function copyShared(remote: RemoteStore, at: SharedCheckpointInfo): Buffer | null {
  const head = (): [bigint, bigint] => {
    const b = remote.readRegion(at.region, SHARE_AT, SHARE_HEADER);
    return [b.readBigUInt64LE(0), b.readBigUInt64LE(8)];
  };
  const [generation, length] = head();
  // 0: being replaced. Past 8 GiB: not a length this layout writes.
  if (length === 0n || length > 1n << 33n) return null;
  const n = Number(length);
  const out = Buffer.allocUnsafe(n);
  for (let off = 0; off < n; off += CHUNK) {
    remote.readRegion(at.region, SHARE_AT + SHARE_HEADER + off, Math.min(CHUNK, n - off)).copy(out, off);
  }
  const [after] = head();
  return after === generation ? out : null;
}
