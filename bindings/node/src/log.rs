//! Thin N-API face of `remora-log`. `append` fsyncs and `readBatch` reads files, so both run on
//! the libuv pool; the other calls touch memory only. Inputs are copied before a task leaves
//! the JS thread: JS may change a buffer while the pool thread would be reading it.

use napi::bindgen_prelude::{AsyncTask, BigInt, BigUint64Array, Buffer, Uint32Array, Uint8Array};
use napi::{Env, Error, Result, Status, Task};
use napi_derive::napi;
use remora_log::{Appended, Digest, Entry, Log, Options, Recovery};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::invalid;

/// `None` once closed: dropping the `Log` releases the directory's lock.
type Shared = Arc<Mutex<Option<Log>>>;

const CLOSED: &str = "log is closed";

fn log_err(e: remora_log::Error) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

/// A JS number that must be a non-negative integer; `u32` arguments would silently wrap -1.
fn whole(what: &str, v: f64) -> Result<u64> {
    if !(v >= 0.0 && v.fract() == 0.0 && v <= 2f64.powi(53)) {
        return Err(invalid(format!(
            "{what} must be a non-negative integer, got {v}"
        )));
    }
    Ok(v as u64)
}

fn lock(log: &Mutex<Option<Log>>) -> MutexGuard<'_, Option<Log>> {
    // A panic while holding the lock would be a bug in the crate; taking the guard anyway
    // keeps `close` able to drop the log and release the directory lock.
    log.lock().unwrap_or_else(|e| e.into_inner())
}

#[napi(object)]
pub struct LogOptions {
    /// Bytes after which a new segment file starts (default 64 MiB).
    pub segment_size: Option<f64>,
    /// Largest transaction accepted, in bytes (default 4 MiB).
    pub max_tx_size: Option<f64>,
    /// How many recent transactions are remembered for duplicate detection (default 1,000,000).
    pub dedup_window: Option<f64>,
}

#[napi(object, object_to_js = false)]
pub struct LogTx {
    /// 32 bytes identifying the transaction for deduplication.
    pub digest: Uint8Array,
    pub bytes: Uint8Array,
}

#[napi(object)]
pub struct LogAppended {
    /// The new timestamp, or the first one of a duplicate.
    pub ts: BigInt,
    pub duplicate: bool,
}

/// What `appendFlat` did, one element per transaction, in order.
#[napi(object)]
pub struct LogAppendedFlat {
    /// The new timestamp, or the first one of a duplicate.
    pub ts: BigUint64Array,
    /// 1 for a duplicate (nothing written; it must not be delivered again), else 0.
    pub duplicate: Uint8Array,
}

#[napi(object)]
pub struct LogEntry {
    pub ts: BigInt,
    pub digest: Buffer,
    pub bytes: Buffer,
}

#[napi(object)]
pub struct LogTornTail {
    pub file: String,
    /// Where the damage started; the file was cut there.
    pub offset: f64,
    pub reason: String,
    /// The segment held no complete record and was deleted.
    pub file_removed: bool,
}

/// What `open` found and repaired.
#[napi(object)]
pub struct LogRecovery {
    pub segments: f64,
    pub records: f64,
    /// Transactions kept: equal to the last timestamp.
    pub transactions: BigInt,
    /// Bytes cut off the end of the log (0 after a clean close).
    pub bytes_truncated: f64,
    pub torn_tail: Option<LogTornTail>,
}

fn recovery_to_js(r: &Recovery) -> LogRecovery {
    LogRecovery {
        segments: r.segments as f64,
        records: r.records as f64,
        transactions: BigInt::from(r.transactions),
        bytes_truncated: r.bytes_truncated as f64,
        torn_tail: r.torn_tail.as_ref().map(|t| LogTornTail {
            file: t.file.to_string_lossy().into_owned(),
            offset: t.offset as f64,
            reason: t.reason.clone(),
            file_removed: t.file_removed,
        }),
    }
}

/// A durable, append-only, deduplicating sequencer log owned by this process.
#[napi]
pub struct NativeLog {
    log: Shared,
    /// Mirror of the log's last timestamp, so `lastTs` never waits behind an append's fsync
    /// holding the mutex (that would block the JS thread).
    last_ts: Arc<AtomicU64>,
    /// Fixed at open: answered without the mutex for the same reason.
    recovery: Recovery,
    /// Set by `close`. The synchronous calls check this rather than the mutex, which a task
    /// may hold; tasks check the `Option` itself.
    closed: AtomicBool,
}

#[napi]
impl NativeLog {
    /// Opens (creating if needed) the log in `dir`, verifying it. Synchronous: it runs once at
    /// startup, and the caller cannot do anything useful before it completes.
    #[napi(factory)]
    pub fn open(dir: String, opts: Option<LogOptions>) -> Result<Self> {
        let mut options = Options::default();
        if let Some(o) = opts {
            if let Some(v) = o.segment_size {
                options.segment_size = whole("segmentSize", v)?;
            }
            if let Some(v) = o.max_tx_size {
                options.max_tx_size = usize::try_from(whole("maxTxSize", v)?)
                    .map_err(|_| invalid("maxTxSize is too large"))?;
            }
            if let Some(v) = o.dedup_window {
                options.dedup_window = usize::try_from(whole("dedupWindow", v)?)
                    .map_err(|_| invalid("dedupWindow is too large"))?;
            }
        }
        let log = Log::open(&dir, options).map_err(log_err)?;
        Ok(NativeLog {
            last_ts: Arc::new(AtomicU64::new(log.last_ts())),
            recovery: log.recovery().clone(),
            log: Arc::new(Mutex::new(Some(log))),
            closed: AtomicBool::new(false),
        })
    }

    /// Checks every digest here, so a bad batch is rejected whole before anything is written.
    #[napi(ts_return_type = "Promise<Array<LogAppended>>")]
    pub fn append(&self, txs: Vec<LogTx>) -> Result<AsyncTask<Append>> {
        self.open_or_err()?;
        let txs = txs
            .iter()
            .enumerate()
            .map(|(i, tx)| {
                let digest = Digest::try_from(&tx.digest[..]).map_err(|_| {
                    invalid(format!(
                        "append: transaction {i} has a {}-byte digest; digests are 32 bytes",
                        tx.digest.len()
                    ))
                })?;
                Ok((digest, tx.bytes.to_vec()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AsyncTask::new(Append {
            log: self.log.clone(),
            last_ts: self.last_ts.clone(),
            txs,
        }))
    }

    /// `append` for a batch in three flat buffers, with no object per transaction either way:
    /// transaction `i` has digest `digests[32i..32i+32]` and bytes `bytes[ends[i-1]..ends[i]]`
    /// (`ends[-1]` = 0; bytes after the last end are ignored). Checked here, so a bad batch is
    /// rejected whole before anything is written; then appended exactly as `append` does
    /// (one record, one write, one fsync).
    #[napi(ts_return_type = "Promise<LogAppendedFlat>")]
    pub fn append_flat(
        &self,
        digests: Uint8Array,
        bytes: Uint8Array,
        ends: Uint32Array,
    ) -> Result<AsyncTask<AppendFlat>> {
        self.open_or_err()?;
        let n = ends.len();
        if Some(digests.len()) != n.checked_mul(32) {
            return Err(invalid(format!(
                "appendFlat: {} bytes of digests for {n} transactions; digests are 32 bytes each",
                digests.len()
            )));
        }
        let mut prev = 0u32;
        for (i, &end) in ends.iter().enumerate() {
            if end < prev {
                return Err(invalid(format!(
                    "appendFlat: ends[{i}] = {end} is before ends[{}] = {prev}",
                    i.saturating_sub(1)
                )));
            }
            if end as usize > bytes.len() {
                return Err(invalid(format!(
                    "appendFlat: ends[{i}] = {end} is past the {} bytes of transactions",
                    bytes.len()
                )));
            }
            prev = end;
        }
        Ok(AsyncTask::new(AppendFlat {
            log: self.log.clone(),
            last_ts: self.last_ts.clone(),
            digests: digests.to_vec(),
            bytes: bytes.get(..prev as usize).unwrap_or_default().to_vec(),
            ends: ends.to_vec(),
        }))
    }

    /// Up to `max` entries from timestamp `fromTs` on, as durable when the call was made.
    #[napi(ts_return_type = "Promise<Array<LogEntry>>")]
    pub fn read_batch(&self, from_ts: BigInt, max: f64) -> Result<AsyncTask<ReadBatch>> {
        self.open_or_err()?;
        let (negative, from, lossless) = from_ts.get_u64();
        if negative || !lossless {
            return Err(invalid(
                "readBatch: fromTs must be a non-negative 64-bit integer",
            ));
        }
        let max = usize::try_from(whole("readBatch: max", max)?)
            .map_err(|_| invalid("readBatch: max is too large"))?;
        Ok(AsyncTask::new(ReadBatch {
            log: self.log.clone(),
            from,
            max,
        }))
    }

    /// Timestamp of the last durable transaction; 0 for an empty log.
    #[napi]
    pub fn last_ts(&self) -> Result<BigInt> {
        self.open_or_err()?;
        Ok(BigInt::from(self.last_ts.load(Ordering::Acquire)))
    }

    #[napi]
    pub fn recovery(&self) -> Result<LogRecovery> {
        self.open_or_err()?;
        Ok(recovery_to_js(&self.recovery))
    }

    /// Drops the log, releasing its directory lock; waits for an append in flight. Idempotent.
    #[napi]
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        lock(&self.log).take();
    }

    fn open_or_err(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(invalid(CLOSED));
        }
        Ok(())
    }
}

pub struct Append {
    log: Shared,
    last_ts: Arc<AtomicU64>,
    txs: Vec<(Digest, Vec<u8>)>,
}

impl Task for Append {
    type Output = Vec<Appended>;
    type JsValue = Vec<LogAppended>;
    fn compute(&mut self) -> Result<Vec<Appended>> {
        let mut guard = lock(&self.log);
        // Closed while queued: nothing was written.
        let log = guard.as_mut().ok_or_else(|| invalid(CLOSED))?;
        let txs: Vec<(Digest, &[u8])> = self.txs.iter().map(|(d, b)| (*d, &b[..])).collect();
        let done = log.append(&txs).map_err(log_err)?;
        self.last_ts.store(log.last_ts(), Ordering::Release);
        Ok(done)
    }
    fn resolve(&mut self, _: Env, done: Vec<Appended>) -> Result<Vec<LogAppended>> {
        Ok(done
            .into_iter()
            .map(|a| LogAppended {
                ts: BigInt::from(a.ts),
                duplicate: a.duplicate,
            })
            .collect())
    }
}

pub struct AppendFlat {
    log: Shared,
    last_ts: Arc<AtomicU64>,
    digests: Vec<u8>,
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl Task for AppendFlat {
    type Output = Vec<Appended>;
    type JsValue = LogAppendedFlat;
    fn compute(&mut self) -> Result<Vec<Appended>> {
        // Checked by `append_flat`: 32 bytes of digest per end, ends in order and in bounds.
        let mut txs = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for (digest, &end) in self.digests.chunks_exact(32).zip(&self.ends) {
            let digest = Digest::try_from(digest).map_err(|_| invalid("appendFlat: digest"))?;
            let bytes = self
                .bytes
                .get(start..end as usize)
                .ok_or_else(|| invalid("appendFlat: ends out of order"))?;
            txs.push((digest, bytes));
            start = end as usize;
        }
        let mut guard = lock(&self.log);
        // Closed while queued: nothing was written.
        let log = guard.as_mut().ok_or_else(|| invalid(CLOSED))?;
        let done = log.append(&txs).map_err(log_err)?;
        self.last_ts.store(log.last_ts(), Ordering::Release);
        Ok(done)
    }
    fn resolve(&mut self, _: Env, done: Vec<Appended>) -> Result<LogAppendedFlat> {
        Ok(LogAppendedFlat {
            ts: BigUint64Array::new(done.iter().map(|a| a.ts).collect()),
            duplicate: Uint8Array::new(done.iter().map(|a| u8::from(a.duplicate)).collect()),
        })
    }
}

pub struct ReadBatch {
    log: Shared,
    from: u64,
    max: usize,
}

impl Task for ReadBatch {
    type Output = Vec<Entry>;
    type JsValue = Vec<LogEntry>;
    fn compute(&mut self) -> Result<Vec<Entry>> {
        // The reader owns its file handles: the lock is held only to plan the read, so
        // appends are not held up by the file reads.
        let reader = {
            let guard = lock(&self.log);
            let log = guard.as_ref().ok_or_else(|| invalid(CLOSED))?;
            log.read_from(self.from).map_err(log_err)?
        };
        reader
            .take(self.max)
            .collect::<remora_log::Result<Vec<_>>>()
            .map_err(log_err)
    }
    fn resolve(&mut self, _: Env, entries: Vec<Entry>) -> Result<Vec<LogEntry>> {
        Ok(entries
            .into_iter()
            .map(|e| LogEntry {
                ts: BigInt::from(e.ts),
                digest: Buffer::from(e.digest.to_vec()),
                bytes: Buffer::from(e.bytes),
            })
            .collect())
    }
}
