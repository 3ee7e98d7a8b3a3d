// Restart time after a long log (issue 14 item 3, docs/checkpoints.md): `restart_s_after_1M`
// is the time from `EmbeddedCluster.start` until `replayed()` resolves, for a log of 10⁶
// transactions (10⁵ with quick) and checkpoints taken at the default interval; the full
// replay without checkpoints is measured for comparison. Also: what a checkpoint costs (file
// write, restore) and what it does to the merge (longest store write while a background
// export runs; the pause of an export under one lock hold).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTx } from '../ts/app/app.js';
import { decodeTx } from '../ts/app/tx.js';
import { kvApp } from '../ts/apps/index.js';
import { EmbeddedCluster } from '../ts/cluster.js';
import { SequencerLog } from '../ts/log.js';
import { CHECKPOINTS_DIR, DEFAULT_CHECKPOINT_EVERY, listCheckpoints } from '../ts/pipeline/checkpoints.js';
import { atExit } from '../ts/process.js';
import { loadOrCreateSecret } from '../ts/secret.js';
import { Store } from '../ts/store.js';

export interface RestartBenchOptions {
  quick: boolean;
  log: (m: string) => void;
}

/** Distinct objects the log's puts cycle through: the state a checkpoint holds. */
const KEYS = 100_000;
const APPEND_BATCH = 10_000;

/** Appends `n` kv puts (over `KEYS` keys, every body distinct) straight to the log: no node. */
async function buildLog(dir: string, n: number): Promise<void> {
  const log = SequencerLog.open(join(dir, 'log'));
  try {
    for (let start = 0; start < n; start += APPEND_BATCH) {
      const count = Math.min(APPEND_BATCH, n - start);
      const digests = Buffer.alloc(32 * count);
      const parts: Uint8Array[] = [];
      const ends = new Uint32Array(count);
      let end = 0;
      for (let i = 0; i < count; i++) {
        const k = start + i;
        const tx = decodeTx(makeTx(kvApp, 'put', { key: `k${k % KEYS}`, value: `v${k}` }));
        digests.write(tx.digest, 32 * i, 'hex');
        parts.push(tx.bytes);
        end += tx.bytes.length;
        ends[i] = end;
      }
      await log.appendFlat(digests, Buffer.concat(parts, end), ends);
    }
  } finally {
    log.close();
  }
}

/** Starts a node on `dir` (no pre-executors) and times it until its state is complete. */
async function timedStart(dir: string, checkpointEvery: number): Promise<{ s: number; cluster: EmbeddedCluster; replayed: bigint; from: bigint }> {
  const t0 = performance.now();
  const cluster = await EmbeddedCluster.start({ dir, app: 'kv', preExecutors: 0, checkpointEvery, log: () => undefined });
  const started = await cluster.replayed();
  return { s: (performance.now() - t0) / 1000, cluster, replayed: started.replayed, from: started.checkpoint?.ts ?? 0n };
}

/**
 * Single-object store writes from this (the merging) thread while `during` runs: the longest
 * and the 99.9th percentile (ms). On a shared machine the longest is mostly scheduling noise.
 */
async function writesDuring(store: Store, firstTs: bigint, during: Promise<unknown>): Promise<{ maxMs: number; p999Ms: number; writes: number }> {
  let done = false;
  void during.finally(() => (done = true));
  let ts = firstTs;
  const times: number[] = [];
  while (!done) {
    for (let i = 0; i < 64; i++) {
      const t = performance.now();
      store.set([{ id: `k${times.length % KEYS}`, value: Buffer.from('pause'), version: ts++ }]);
      times.push(performance.now() - t);
    }
    await new Promise((r) => setImmediate(r));
  }
  await during;
  times.sort((a, b) => a - b);
  return { maxMs: times.at(-1) ?? 0, p999Ms: times[Math.floor(times.length * 0.999)] ?? 0, writes: times.length };
}

export async function benchRestart(opts: RestartBenchOptions): Promise<Record<string, number>> {
  const n = opts.quick ? 100_000 : 1_000_000;
  const per = (x: number) => (x * 1_000_000) / n;
  const dir = mkdtempSync(join(tmpdir(), 'remora-restart-'));
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  const unhook = atExit(removeDir);
  const out: Record<string, number> = {};
  try {
    const b0 = performance.now();
    await buildLog(dir, n);
    opts.log(`restart: logged ${n} kv puts over ${KEYS} keys in ${((performance.now() - b0) / 1000).toFixed(1)} s`);

    // The whole log, no checkpoints: what a restart cost before them.
    const full = await timedStart(dir, 0);
    await full.cluster.close();
    out['replay_s'] = full.s;
    // Measured at 10⁶ in a full run; scaled from 10⁵ with quick (replay is linear in the log).
    out[opts.quick ? 'replay_s_per_1M_scaled' : 'replay_s_after_1M'] = per(full.s);
    opts.log(`restart: full replay of ${full.replayed} transactions: ${full.s.toFixed(2)} s (${((full.s * 1e6) / n).toFixed(1)} us each)`);

    // Again, taking checkpoints as it replays (each one valid: the state at a batch end).
    const taking = await timedStart(dir, DEFAULT_CHECKPOINT_EVERY);
    const stats = taking.cluster.checkpoints;
    // Closing waits for a checkpoint being written.
    await taking.cluster.close();
    const files = listCheckpoints(join(dir, CHECKPOINTS_DIR));
    const newest = files[0];
    if (!stats || !newest) throw new Error('restart bench: the replay took no checkpoint');
    out['checkpoint_write_ms'] = stats.lastMs;
    out['checkpoint_bytes'] = stats.bytes;
    out['checkpoint_records'] = stats.records;
    out['checkpoints_gone'] = stats.gone;
    opts.log(
      `restart: replay with checkpoints every ${DEFAULT_CHECKPOINT_EVERY}: ${taking.s.toFixed(2)} s; ${stats.taken} taken, the last at ts ${stats.lastTs}: ${stats.records} objects, ${(stats.bytes / 1e6).toFixed(1)} MB in ${stats.lastMs.toFixed(0)} ms`,
    );

    // The restart measured: newest checkpoint + the log after it.
    const restart = await timedStart(dir, DEFAULT_CHECKPOINT_EVERY);
    await restart.cluster.close();
    out['restart_s'] = restart.s;
    out['restart_tail_tx'] = Number(restart.replayed);
    // Named for the log it measured: only a full run reports `restart_s_after_1M`.
    out[opts.quick ? 'restart_s_after_100k' : 'restart_s_after_1M'] = restart.s;
    opts.log(`restart: from checkpoint at ts ${restart.from} + ${restart.replayed} replayed: ${restart.s.toFixed(2)} s`);

    // Restore alone, and what exporting costs the merge, on a store holding the state.
    const secret = loadOrCreateSecret(dir);
    const store = Store.create({ dir, name: 'bench', secret });
    try {
      const r0 = performance.now();
      const restored = store.restore(newest.path);
      out['checkpoint_restore_ms'] = performance.now() - r0;
      const objects = restored.records;
      const baseline = await writesDuring(store, restored.ts + 1n, new Promise((r) => setTimeout(r, 200)));
      const from = restored.ts + 1n + BigInt(baseline.writes);
      const ckpt = join(dir, 'bench.ckpt');
      const during = await writesDuring(store, from, store.checkpoint(ckpt, from - 1n, new Uint8Array(0)));
      out['merge_write_max_ms'] = baseline.maxMs;
      out['merge_write_p999_ms'] = baseline.p999Ms;
      out['merge_write_max_during_checkpoint_ms'] = during.maxMs;
      out['merge_write_p999_during_checkpoint_ms'] = during.p999Ms;
      const h0 = performance.now();
      const held = store.checkpointHeld(ckpt, from + BigInt(during.writes) - 1n, new Uint8Array(0));
      const heldMs = performance.now() - h0;
      await held;
      out['held_export_pause_ms_per_1e5'] = (heldMs * 100_000) / objects;
      opts.log(
        `restart: restore of ${objects} objects ${out['checkpoint_restore_ms'].toFixed(0)} ms; store writes p99.9/max ${baseline.p999Ms.toFixed(3)}/${baseline.maxMs.toFixed(2)} ms ` +
          `alone, ${during.p999Ms.toFixed(3)}/${during.maxMs.toFixed(2)} ms during a background checkpoint; one-hold export pauses writes ${heldMs.toFixed(1)} ms for ${objects} objects`,
      );
    } finally {
      store.close();
    }
    return out;
  } finally {
    unhook();
    removeDir();
  }
}
