// The stream the replicated sequencer writes to, set up or checked at open: a cluster that
// just (re)started answers "temporarily unavailable" until it has a JetStream leader.
import { DiscardPolicy, jetstreamManager, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';

/** Largest stream message: the server's default max_payload. */
const STREAM_MAX_MSG = 1 << 20;
const SETUP_TIMEOUT_MS = 30_000;
/**
 * Errors a retry can outlive: elections, reconnections, a server not ready yet, and a cluster
 * whose meta leader has not yet heard from every peer ("no suitable peers for placement, peer
 * offline" when a replicated stream is created seconds after the servers started).
 */
export const TRANSIENT = /temporarily unavailable|timeout|no responders|not ready|not enabled|disconnect|connection|no suitable peers|peer offline/i;

export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The JetStream manager, once the engine answers: a cluster that just (re)started may not have elected its leader yet. */
export async function managerOf(nc: NatsConnection): Promise<JetStreamManager> {
  const deadline = Date.now() + SETUP_TIMEOUT_MS;
  for (;;) {
    try {
      return await jetstreamManager(nc);
    } catch (e) {
      if (!TRANSIENT.test(message(e)) || Date.now() > deadline) throw new Error(`JetStream sequencer: JetStream is not available: ${message(e)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

export async function ensureStream(jsm: JetStreamManager, name: string, replicas: number): Promise<void> {
  const config: Partial<StreamConfig> & { name: string } = {
    name,
    subjects: [`${name}.log`],
    num_replicas: replicas,
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.New,
    max_msg_size: STREAM_MAX_MSG,
    duplicate_window: nanos(120_000),
  };
  const deadline = Date.now() + SETUP_TIMEOUT_MS;
  for (;;) {
    try {
      const info = await jsm.streams.info(name).catch((e: unknown) => {
        if (/stream not found/i.test(message(e))) return null;
        throw e;
      });
      if (info === null) {
        await jsm.streams.add(config);
        return;
      }
      const c = info.config;
      const problems = [
        c.subjects.includes(`${name}.log`) ? null : `its subjects are ${JSON.stringify(c.subjects)}`,
        c.num_replicas === replicas ? null : `it has ${c.num_replicas} replicas, not ${replicas}`,
        c.storage === StorageType.File ? null : `its storage is ${c.storage}`,
        c.retention === RetentionPolicy.Limits ? null : `its retention is ${c.retention}`,
        c.max_msg_size === -1 || c.max_msg_size >= STREAM_MAX_MSG ? null : `its max_msg_size is ${c.max_msg_size}`,
        (c.max_msgs ?? -1) <= 0 && (c.max_bytes ?? -1) <= 0 && (c.max_age ?? 0) === 0 ? null : 'it drops old messages (max_msgs, max_bytes or max_age set)',
      ].filter((p) => p !== null);
      if (problems.length > 0) throw new Error(`JetStream sequencer: stream ${name} exists but cannot be the log: ${problems.join('; ')}`);
      return;
    } catch (e) {
      // A cluster that just started may not have elected its JetStream leader yet.
      const transient = TRANSIENT.test(message(e));
      if (!transient || Date.now() > deadline)
        throw e instanceof Error && e.message.startsWith('JetStream sequencer')
          ? e
          : new Error(`JetStream sequencer: cannot set up stream ${name}: ${message(e)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
