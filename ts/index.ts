export { Store, RemoteStore, ReadBatch, NO_HANDLE } from './store.js';
export type {
  ReadResult,
  StoreOptions,
  RemoteOptions,
  ShmRemoteOptions,
  NetRemoteOptions,
  ServeOptions,
  Put,
  StoreStats,
  RemoteStats,
  StressReport,
  Latency,
  ReadStatus,
} from './store.js';
export type { ObjectId } from './ids.js';
export { TRANSPORTS } from './transport.js';
export type { NetTransport, Transport } from './transport.js';
export { CLIENT_SECRET_FILE, clientCredential, CredentialError, loadClientSecret, loadOrCreateSecret, readSecretFile, SECRET_FILE } from './secret.js';

// The application API and the pipeline.
export { defineApp, makeTx } from './app/app.js';
export type { App, ArgsOf, Command, CommandName, Ctx } from './app/app.js';
export { decode, encode } from './app/codec.js';
export type { Data } from './app/codec.js';
export type { LookupTable, Outcome } from './app/exec.js';
export { executeSequentially } from './app/reference.js';
export { MemoryState, stateDigest } from './app/state.js';
export { admitTx } from './app/admit.js';
export { decodeTx, encodeBody, LIMITS, txDigest, TxError } from './app/tx.js';
export type { Authenticator, DecodedTx, Transaction } from './app/tx.js';
export { bankApp, builtinApps, keyPairFromSeed, kvApp, loadApp } from './apps/index.js';
export { RemoraClient } from './client.js';
export { EmbeddedCluster, NODE_SOCKET } from './cluster.js';
export { CLIENT_LIMITS } from './pipeline/server.js';
export type { ClientLimits, ServeStats } from './pipeline/server.js';
export type { ClusterOptions } from './cluster.js';
export { SequencerLog } from './log.js';
export type { Reply } from './pipeline/node.js';
export {
  ED25519_VERIFY,
  precompile,
  precompileBatch,
  precompileCounters,
  precompileInputDigest,
  resetPrecompileCounters,
  SHA256,
  verifyEd25519Batch,
} from './precompile.js';
