// The generated napi-rs loader and its typings are emitted into ./native by the build.
import * as native from './native/index.js';

export {
  NativeStore,
  NativeRemote,
  NativeLog,
  NativeCoordinator,
  NativeTransfer,
  NativeRingProducer,
  NativeRingReader,
  precompileCall,
  precompileBatch,
  verifyEd25519Batch,
  precompileCounters,
  resetPrecompileCounters,
  precompileInputDigest,
  readCheckpoint,
  readCheckpointHeader,
  verifyCheckpoint,
  vouchTx,
  vouchTxs,
} from './native/index.js';
export type {
  CaughtUpShipment,
  CheckpointHeaderJs,
  CheckpointRecords,
  CheckpointRestored,
  CheckpointWritten,
  SharedCheckpoint,
  CoordinationEntry,
  DroppedConsumer,
  RingRecordIn,
  LogAppended,
  LogEntry,
  LogRecovery,
  LogTornTail,
  PrecompileCounters,
  PrecompileResult as NativePrecompileResult,
  ReadResult,
  RemoteStatsJs as RemoteStats,
  StoreStatsJs as StoreStats,
} from './native/index.js';

type Native = typeof native;

/**
 * The addon's benchmark and stress entry points: compiled only with the `bench` cargo feature
 * (on by default), so a packaged addon may lack them. Read through `benchEntry`, never
 * imported by name: a missing name would fail the import of this module, not the call.
 */
export type BenchEntry = 'benchAdopt' | 'benchMemcpy' | 'benchTimer' | 'benchTransport' | 'benchReads' | 'stressWrite' | 'stressRead';

export type { AdoptBenchResult, Latency, StressReport, TransportLatency } from './native/index.js';

/**
 * The bench entry point `name` of the addon (or of `loaded`, another loader's exports); throws
 * when it was built without the `bench` feature.
 */
export function benchEntry<K extends BenchEntry>(name: K, loaded: object = native): Native[K] {
  const entry: unknown = (loaded as Partial<Native>)[name];
  if (typeof entry !== 'function') {
    throw new Error(`this build has no bench entry points (built without the \`bench\` feature): ${name} is missing`);
  }
  return entry as Native[K];
}
