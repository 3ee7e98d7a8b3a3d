// Which code runs which transaction (docs/apps.md, "Upgrades"). An application version is
// activated by an administrative transaction in the log: every member applies the sequence in
// the same order, so every member switches at the same timestamp, and a transaction is always
// executed by the version active at its position, wherever and whenever it is executed.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { App } from './app.js';
import { AppLoadError, loadAppModule, type LoadedApp } from './module.js';
import { ADMIN_PREFIX, encodeBody, TxError, type DecodedTx } from './tx.js';

export { ADMIN_PREFIX };
export const UPGRADE_COMMAND = 'remora.upgrade';

/** Whether `tx` is the node's own; a transaction that knows without decoding its body says so. */
export const isAdmin = (tx: { command: string; readonly admin?: boolean }): boolean => tx.admin ?? tx.command.startsWith(ADMIN_PREFIX);

/**
 * The body of the administrative transaction that activates `v` after its own timestamp.
 * `since` (when the version it replaces became active) keeps a later upgrade back to the same
 * code from being deduplicated against this one.
 */
export function upgradeBody(v: { spec: string; digest: string }, since: bigint): Buffer {
  return encodeBody(UPGRADE_COMMAND, { spec: v.spec, digest: v.digest, since: String(since) }, []);
}

/** The version an administrative transaction activates; a `TxError` if it is malformed. */
export function upgradeOf(tx: DecodedTx): { spec: string; digest: string } {
  const a = tx.args as Record<string, unknown> | null;
  if (tx.command !== UPGRADE_COMMAND || typeof a !== 'object' || a === null || typeof a['spec'] !== 'string' || typeof a['digest'] !== 'string') {
    throw new TxError(`malformed administrative transaction ${JSON.stringify(tx.command)}`);
  }
  return { spec: a['spec'], digest: a['digest'] };
}

export interface AppVersion extends LoadedApp {
  /** Active for transactions after this timestamp (0: from the start). */
  after: bigint;
}

/** The versions a log has run, oldest first; what a member needs to execute any position. */
export class AppVersions {
  private readonly list: AppVersion[];

  constructor(initial: LoadedApp) {
    this.list = [{ ...initial, after: 0n }];
  }

  get active(): AppVersion {
    return this.list[this.list.length - 1] as AppVersion;
  }

  get all(): readonly AppVersion[] {
    return this.list;
  }

  /** The version that executes the transaction at `ts`. */
  at(ts: bigint): AppVersion {
    for (let i = this.list.length - 1; i > 0; i--) {
      const v = this.list[i] as AppVersion;
      if (ts > v.after) return v;
    }
    return this.list[0] as AppVersion;
  }

  /** Activates `v` for transactions after `after` (the upgrade transaction's timestamp). */
  activate(v: LoadedApp, after: bigint): void {
    if (after < this.active.after) throw new Error(`app versions must be activated in log order (${after} after ${this.active.after})`);
    if (after === this.active.after && this.list.length > 1) throw new Error(`two app versions activated at ${after}`);
    this.list.push({ ...v, after });
  }

  /** The app a plain `App` consumer should use now. */
  get app(): App {
    return this.active.app;
  }
}

/** Where a log records which code wrote it: beside its segments, rewritten atomically. */
export const APP_HEADER = 'app.json';

interface HeaderEntry {
  after: string;
  spec: string;
  digest: string;
}

export function readAppHeader(logDir: string): HeaderEntry[] | null {
  const path = join(logDir, APP_HEADER);
  if (!existsSync(path)) return null;
  const raw: unknown = JSON.parse(readFileSync(path, 'utf8'));
  const ok = (e: unknown): e is HeaderEntry => {
    const r = e as Record<string, unknown> | null;
    return typeof r === 'object' && r !== null && typeof r['after'] === 'string' && typeof r['spec'] === 'string' && typeof r['digest'] === 'string';
  };
  if (!Array.isArray(raw) || raw.length === 0 || !raw.every(ok)) throw new AppLoadError(`${path} is damaged: expected a list of app versions`);
  return raw;
}

export function writeAppHeader(logDir: string, versions: AppVersions): void {
  const path = join(logDir, APP_HEADER);
  const entries: HeaderEntry[] = versions.all.map((v) => ({ after: String(v.after), spec: v.spec, digest: v.digest }));
  writeFileSync(`${path}.tmp`, `${JSON.stringify(entries, null, 1)}\n`, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

const short = (digest: string): string => digest.slice(0, 12);

/**
 * The versions a cluster directory's log needs, with `loaded` as the newest: the log's header
 * says which code wrote it, and every older version must still load with its recorded digest
 * (replaying the log runs each transaction with its own version). A newest version that
 * differs from `loaded` is refused unless `upgrade` is set; then `pendingUpgrade` is true and
 * the caller activates `loaded` by an upgrade transaction once the log is replayed.
 */
export async function versionsForLog(
  logDir: string,
  loaded: LoadedApp,
  opts: { upgrade?: boolean },
): Promise<{ versions: AppVersions; pendingUpgrade: boolean }> {
  const header = readAppHeader(logDir);
  if (header === null) {
    // A new log, or one written before logs recorded their code: `loaded` wrote it.
    return { versions: new AppVersions(loaded), pendingUpgrade: false };
  }
  const load = async (e: HeaderEntry): Promise<LoadedApp> => {
    if (e.digest === loaded.digest) return loaded;
    let v: LoadedApp;
    try {
      v = await loadAppModule(e.spec);
    } catch (err) {
      throw new AppLoadError(
        `replaying the log needs app version ${short(e.digest)} from ${e.spec}, which no longer loads: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
    if (v.digest !== e.digest) {
      throw new AppLoadError(
        `replaying the log needs app version ${short(e.digest)} from ${e.spec}, which now has digest ${short(v.digest)}: keep each version that ran loadable until a checkpoint`,
      );
    }
    return v;
  };
  const [first, ...rest] = header as [HeaderEntry, ...HeaderEntry[]];
  const versions = new AppVersions(await load(first));
  for (const e of rest) versions.activate(await load(e), BigInt(e.after));
  if (versions.active.digest === loaded.digest) return { versions, pendingUpgrade: false };
  if (!opts.upgrade) {
    throw new AppLoadError(
      `this cluster's log was written by app ${versions.active.app.name} ${short(versions.active.digest)} (${versions.active.spec}), ` +
        `but ${loaded.spec} has digest ${short(loaded.digest)}: the code differs; to run the new code from the next position of the log, start with --upgrade`,
    );
  }
  return { versions, pendingUpgrade: true };
}
