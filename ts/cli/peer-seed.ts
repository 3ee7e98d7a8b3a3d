// Starting from a running node's checkpoint, copied over its store transport: a replicated
// primary's `--bootstrap`, and a pre-executor joining from another host (docs/checkpoints.md).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHECKPOINTS_DIR, listCheckpoints } from '../pipeline/checkpoints.js';
import { askSharedCheckpoint, fetchPeerCheckpoint } from '../pipeline/peer-checkpoint.js';
import { loadOrCreateSecret } from '../secret.js';
import { formatHostPort, type HostPort } from '../transport.js';

/**
 * A replicated primary starting from a peer's newest checkpoint when it is newer than its own:
 * same stream, same deterministic state, so the peer's resume point is this node's too.
 */
export async function bootstrapFrom(peer: HostPort, dir: string): Promise<void> {
  const checkpoints = join(dir, CHECKPOINTS_DIR);
  const secret = loadOrCreateSecret(dir);
  const mine = listCheckpoints(checkpoints)[0]?.ts ?? 0n;
  const at = await askSharedCheckpoint(peer, secret);
  if (at === null || at.ts <= mine) {
    process.stderr.write(
      `node: bootstrap: ${at === null ? 'the peer shares no checkpoint yet' : `the peer's checkpoint (ts ${at.ts}) is not newer than this node's (ts ${mine})`}; starting from this node's own\n`,
    );
    return;
  }
  const got = await fetchPeerCheckpoint({ node: peer, secret, dir: checkpoints, at, log: (m) => process.stderr.write(`node: bootstrap: ${m}\n`) });
  if (got) process.stderr.write(`node: bootstrap: copied the checkpoint at ts ${got.ts} (${got.bytes} bytes) from ${formatHostPort(peer)}\n`);
}

/** A node's newest checkpoint copied into a temporary directory, or null (none, or not reachable). */
export async function copiedCheckpoint(node: HostPort, secret: Buffer, say: (m: string) => void): Promise<string | null> {
  // Refused here (a wrong secret, no node) is the join's own failure: it is not swallowed.
  const at = await askSharedCheckpoint(node, secret);
  if (at === null) {
    say('the node shares no checkpoint yet: starting with an empty copy');
    return null;
  }
  const dir = mkdtempSync(join(tmpdir(), 'remora-seed-'));
  try {
    if (await fetchPeerCheckpoint({ node, secret, dir, at, log: say })) return dir;
  } catch (e) {
    say(`starting with an empty copy: ${e instanceof Error ? e.message : String(e)}`);
  }
  rmSync(dir, { recursive: true, force: true });
  return null;
}
