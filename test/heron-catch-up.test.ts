// A replica rehearses its catch-up at start (ts/heron/catch-up.ts): the rehearsal must hand the
// replica's own prefix back unchanged and ship nothing, whatever that prefix is, or a replica
// would start from another prefix than the one it applied and its digests would diverge.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CatchUp, type Prefix } from '../ts/heron/catch-up.js';
import { Store } from '../ts/store.js';

const work = mkdtempSync(join(tmpdir(), 'remora-heron-catch-up-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function transferOf(name: string) {
  const secret = randomBytes(32);
  const store = Store.create({ dir: work, name, secret });
  // Replica 1 of 2: its peer (replica 0) is never started, which a rehearsal does not need.
  const transfer = store.heronTransfer({ dir: work, secret, replicas: 2, replica: 1, peers: [`${name}-peer`, name], slotBytes: 1 << 16, requestRegion: 0 });
  return { store, transfer };
}

describe('catch-up rehearsal', () => {
  it('hands the replica its own prefix back and ships nothing', () => {
    const { store, transfer } = transferOf('rehearsed');
    try {
      const at: Prefix = { lastTs: 1234567890123n, applied: 4321, digest: 'ab'.repeat(32) };
      const adopted: Prefix[] = [];
      const done = new CatchUp(transfer, {}).rehearse(at, (p) => adopted.push(p));
      expect(adopted).toEqual([at]);
      expect(done).toMatchObject({ from: 1, since: at.lastTs, ts: at.lastTs, objects: 0, bytes: 0, nativeMicros: 0 });
    } finally {
      transfer.close();
      store.close();
    }
  });

  it('refuses a prefix that is not one, with the reason', () => {
    const { store, transfer } = transferOf('refused');
    try {
      const c = new CatchUp(transfer, {});
      const adopted: Prefix[] = [];
      expect(() => c.rehearse({ lastTs: 1n, applied: 1.5, digest: 'ab'.repeat(32) }, (p) => adopted.push(p))).toThrow(
        /applied must be a non-negative integer, got 1.5/,
      );
      expect(() => c.rehearse({ lastTs: -1n, applied: 1, digest: 'ab'.repeat(32) }, (p) => adopted.push(p))).toThrow(/since must be a 64-bit unsigned integer/);
      expect(() => c.rehearse({ lastTs: 1n, applied: 1, digest: 'xyz' }, (p) => adopted.push(p))).toThrow(/digest/);
      expect(adopted).toEqual([]);
    } finally {
      transfer.close();
      store.close();
    }
  });
});
