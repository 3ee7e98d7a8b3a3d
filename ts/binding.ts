// The generated napi-rs loader and its typings are emitted into ./native by the build.
export {
  NativeStore,
  NativeRemote,
  benchMemcpy,
  benchTimer,
} from './native/index.js';
export type {
  Latency,
  ReadResult as NativeReadResult,
  RemoteStatsJs as RemoteStats,
  StoreStatsJs as StoreStats,
  StressReport,
} from './native/index.js';
