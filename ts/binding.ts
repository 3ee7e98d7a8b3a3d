// The generated napi-rs loader and its typings are emitted into ./native by the build.
export {
  NativeStore,
  NativeRemote,
  NativeLog,
  benchMemcpy,
  benchTimer,
  precompileCall,
  precompileBatch,
  verifyEd25519Batch,
  precompileCounters,
  resetPrecompileCounters,
  precompileInputDigest,
} from './native/index.js';
export type {
  Latency,
  LogAppended,
  LogEntry,
  LogRecovery,
  LogTornTail,
  PrecompileCounters,
  PrecompileResult as NativePrecompileResult,
  ReadResult as NativeReadResult,
  RemoteStatsJs as RemoteStats,
  StoreStatsJs as StoreStats,
  StressReport,
} from './native/index.js';
