export { Store, RemoteStore } from './store.js';
export type {
  ReadResult,
  StoreOptions,
  RemoteOptions,
  Put,
  StoreStats,
  RemoteStats,
  StressReport,
  Latency,
} from './store.js';
export type { ObjectId } from './ids.js';
export { loadOrCreateSecret } from './secret.js';
