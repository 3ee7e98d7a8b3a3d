// Which log a node follows: the embedded one (this host's disk, the default) or a stream of
// NATS JetStream that replicated primaries share (docs/sequencer.md, docs/deployment.md).
import { mkdirSync, readFileSync } from 'node:fs';
import { JetStreamSequencer } from './jetstream-sequencer.js';
import { EmbeddedSequencer, type Sequencer } from './sequencer.js';

export type SequencerChoice =
  | { kind: 'embedded' }
  | {
      kind: 'jetstream';
      /** NATS URLs of the engine's servers. */
      servers: string[];
      /** The stream (default `REMORA`): nodes on one stream are replicas of one state machine. */
      stream?: string;
      /** A file holding the engine's client token, if its servers ask for one. */
      tokenFile?: string;
    };

export type OpenedSequencer = Sequencer & { readonly lastTs: bigint };

/**
 * Opens the log for a node whose state starts at `restored` (a checkpoint: its timestamp and
 * the sequencer's resume point), or at the beginning.
 */
export async function openSequencer(
  choice: SequencerChoice,
  logDir: string,
  restored: { ts: bigint; resume: Uint8Array; path: string } | null,
  opts: { name: string; log?: (m: string) => void },
): Promise<OpenedSequencer> {
  const resume = restored?.resume ?? new Uint8Array(0);
  if (choice.kind === 'embedded') {
    if (resume.length > 0) {
      throw new Error(
        `checkpoint ${restored?.path ?? ''} was taken following a JetStream stream, but this node runs the embedded log: start it with the same --sequencer, or move the checkpoints away`,
      );
    }
    return new EmbeddedSequencer(logDir);
  }
  if (restored && resume.length === 0) {
    throw new Error(
      `checkpoint ${restored.path} was taken following the embedded log, but this node follows a JetStream stream: move the checkpoints away to start from the stream alone`,
    );
  }
  // The app header (which code wrote the log) stays on this host, beside the checkpoints.
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  return JetStreamSequencer.open({
    servers: choice.servers,
    ...(choice.stream !== undefined && { stream: choice.stream }),
    ...(choice.tokenFile !== undefined && { token: readToken(choice.tokenFile) }),
    ...(resume.length > 0 && { resume }),
    name: opts.name,
    ...(opts.log && { log: opts.log }),
  });
}

function readToken(file: string): string {
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new Error(`cannot read the sequencer token file ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (token.length === 0) throw new Error(`the sequencer token file ${file} is empty`);
  return token;
}

/** `--sequencer`: `embedded`, or the engine's servers as comma-separated `nats://host:port` URLs. */
export function parseSequencerUrls(raw: string): string[] | null {
  if (raw === 'embedded') return null;
  const urls = raw.split(',').map((u) => u.trim());
  for (const u of urls) {
    if (!/^(nats|tls):\/\/[^\s/@]+:\d{1,5}$/.test(u))
      throw new Error(`--sequencer must be 'embedded' or nats://HOST:PORT URLs separated by commas, got '${u}'`);
  }
  return urls;
}
