//! Thin N-API face of `remora-log`. `append` fsyncs and `readBatch` reads files, so neither runs
//! on the JS thread; the other calls touch memory only. Inputs are copied before they leave
//! the JS thread: JS may change a buffer while another thread would be reading it.
//!
//! Appends go to a writer thread of the log's own, not the pool: the call queues its batch on
//! the JS thread and gets a promise; the writer takes everything queued, in call order, and
//! settles each promise once its batch is durable. So appends run in the order they were
//! called however many are in flight, and none of them holds a pool thread while it waits
//! (waiting pool tasks would starve the process's file I/O, or deadlock on one another).

use napi::bindgen_prelude::{
    AsyncTask, BigInt, BigUint64Array, Buffer, Either, Object, Uint32Array, Uint8Array,
};
use napi::{Env, Error, JsDeferred, Result, Status, Task};
use napi_derive::napi;
use remora_log::{Appended, Digest, Entry, Log, Options, Recovery};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::invalid;

/// `None` once closed: dropping the `Log` releases the directory's lock.
type Shared = Arc<Mutex<Option<Log>>>;

/// One batch waiting to be appended, as its call copied it.
enum Batch {
    Txs(Vec<(Digest, Vec<u8>)>),
    /// Checked by `append_flat`: one digest per end, ends in order and in bounds.
    Flat {
        digests: Digests,
        bytes: Vec<u8>,
        ends: Vec<u32>,
    },
}

/// The digests of a flat batch, back to back.
enum Digests {
    Bytes(Vec<u8>),
    /// 64 hex digits each, decoded by the writer: it keeps that work off the JS thread, which
    /// has the digests as hex strings.
    Hex(String),
}

impl Digests {
    fn get(&self, i: usize) -> Result<Digest> {
        let bad = || invalid(format!("appendFlat: digest {i} is not 64 hex digits"));
        match self {
            Digests::Bytes(b) => b
                .get(32 * i..32 * i + 32)
                .and_then(|d| Digest::try_from(d).ok())
                .ok_or_else(|| invalid("appendFlat: digest")),
            Digests::Hex(s) => {
                let hex = s.as_bytes().get(64 * i..64 * i + 64).ok_or_else(bad)?;
                let mut d = [0u8; 32];
                // Branch-free: a table lookup per digit, one check per digest.
                let mut invalid_digit = 0u8;
                for (out, pair) in d.iter_mut().zip(hex.chunks_exact(2)) {
                    let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
                    invalid_digit |= (hi | lo) & 0xf0;
                    *out = hi << 4 | lo;
                }
                if invalid_digit != 0 {
                    return Err(bad());
                }
                Ok(d)
            }
        }
    }
}

/// The value of each hex digit; 0xff for every other byte.
const NIBBLE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = match c as u8 {
            b'0'..=b'9' => c as u8 - b'0',
            b'a'..=b'f' => c as u8 - b'a' + 10,
            b'A'..=b'F' => c as u8 - b'A' + 10,
            _ => 0xff,
        };
        c += 1;
    }
    table
};

/// A batch as `Log::append_many` takes it.
type Txs<'a> = Vec<(Digest, &'a [u8])>;

impl Batch {
    /// The transactions as `Log::append_many` takes them; a bad digest rejects the batch.
    fn txs(&self) -> Result<Txs<'_>> {
        match self {
            Batch::Txs(txs) => Ok(txs.iter().map(|(d, b)| (*d, &b[..])).collect()),
            Batch::Flat {
                digests,
                bytes,
                ends,
            } => {
                let mut txs = Vec::with_capacity(ends.len());
                let mut start = 0;
                for (i, &end) in ends.iter().enumerate() {
                    let digest = digests.get(i)?;
                    let tx = bytes
                        .get(start..end as usize)
                        .ok_or_else(|| invalid("appendFlat: ends out of order"))?;
                    txs.push((digest, tx));
                    start = end as usize;
                }
                Ok(txs)
            }
        }
    }
}

/// Builds a promise's value on the JS thread from what the writer made of the batch.
type Resolve<T> = Box<dyn FnOnce(Env) -> Result<T> + Send>;

/// The promise an append call returned, in the shape that call promised.
enum Reply {
    Objects(JsDeferred<Vec<LogAppended>, Resolve<Vec<LogAppended>>>),
    Flat(JsDeferred<LogAppendedFlat, Resolve<LogAppendedFlat>>),
}

impl Reply {
    fn settle(self, done: Result<Vec<Appended>>) {
        match (self, done) {
            (Reply::Objects(d), Err(e)) => d.reject(e),
            (Reply::Flat(d), Err(e)) => d.reject(e),
            (Reply::Objects(d), Ok(done)) => d.resolve(Box::new(move |_| {
                Ok(done
                    .into_iter()
                    .map(|a| LogAppended {
                        ts: BigInt::from(a.ts),
                        duplicate: a.duplicate,
                    })
                    .collect())
            })),
            (Reply::Flat(d), Ok(done)) => {
                // Laid flat here, so the JS thread only wraps the two vectors.
                let ts: Vec<u64> = done.iter().map(|a| a.ts).collect();
                let duplicate: Vec<u8> = done.iter().map(|a| u8::from(a.duplicate)).collect();
                d.resolve(Box::new(move |_| {
                    Ok(LogAppendedFlat {
                        ts: BigUint64Array::new(ts),
                        duplicate: Uint8Array::new(duplicate),
                    })
                }))
            }
        }
    }
}

/// Batches queued by append calls and not yet taken by the writer, in call order.
#[derive(Default)]
struct Queue {
    batches: Vec<(Batch, Reply)>,
    /// Set by `close` (or dropping the log): the writer finishes what is queued and exits.
    stop: bool,
}

#[derive(Default)]
struct Writer {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Writer {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Held only to move batches in and out: nothing in between can panic.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }

    /// Starts the thread that writes queued batches in order until `stop`.
    fn spawn(self: &Arc<Self>, log: Shared, last_ts: Arc<AtomicU64>) -> Result<()> {
        let writer = self.clone();
        std::thread::Builder::new()
            .name("remora-log-writer".into())
            .spawn(move || writer.run(&log, &last_ts))
            .map(|_| ())
            .map_err(|e| invalid(format!("starting the log's writer thread: {e}")))
    }

    fn run(&self, log: &Mutex<Option<Log>>, last_ts: &AtomicU64) {
        loop {
            let batches = {
                let mut queue = self.lock();
                while queue.batches.is_empty() && !queue.stop {
                    queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
                if queue.batches.is_empty() {
                    return;
                }
                std::mem::take(&mut queue.batches)
            };
            let results = append_all(log, &batches);
            if let Some(log) = lock(log).as_ref() {
                last_ts.store(log.last_ts(), Ordering::Release);
            }
            for ((_, reply), done) in batches.into_iter().zip(results) {
                reply.settle(done);
            }
        }
    }
}

/// Group commit: everything queued while the last write and fsync ran goes into one record.
fn append_all(log: &Mutex<Option<Log>>, batches: &[(Batch, Reply)]) -> Vec<Result<Vec<Appended>>> {
    let txs: Vec<Result<Txs>> = batches.iter().map(|(b, _)| b.txs()).collect();
    let good: Vec<&[(Digest, &[u8])]> = txs.iter().flatten().map(|t| &t[..]).collect();
    let appended: Vec<Result<Vec<Appended>>> = match lock(log).as_mut() {
        Some(log) => log
            .append_many(&good)
            .into_iter()
            .map(|r| r.map_err(log_err))
            .collect(),
        // Closed while queued: nothing was written.
        None => good.iter().map(|_| Err(invalid(CLOSED))).collect(),
    };
    let mut appended = appended.into_iter();
    txs.into_iter()
        .map(|t| match t {
            Err(e) => Err(e),
            Ok(_) => appended
                .next()
                .unwrap_or_else(|| Err(invalid("append: result missing"))),
        })
        .collect()
}

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
    /// Zeros written ahead of the last record, in runs of this many bytes (default 0).
    pub preallocate: Option<f64>,
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
    writer: Arc<Writer>,
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
            if let Some(v) = o.preallocate {
                options.preallocate = whole("preallocate", v)?;
            }
        }
        let log = Log::open(&dir, options).map_err(log_err)?;
        let native = NativeLog {
            last_ts: Arc::new(AtomicU64::new(log.last_ts())),
            recovery: log.recovery().clone(),
            log: Arc::new(Mutex::new(Some(log))),
            writer: Arc::default(),
            closed: AtomicBool::new(false),
        };
        native
            .writer
            .spawn(native.log.clone(), native.last_ts.clone())?;
        Ok(native)
    }

    /// Checks every digest here, so a bad batch is rejected whole before anything is written.
    #[napi(ts_return_type = "Promise<Array<LogAppended>>")]
    pub fn append<'env>(&self, env: &'env Env, txs: Vec<LogTx>) -> Result<Object<'env>> {
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
        let (deferred, promise) = env.create_deferred()?;
        self.enqueue(Batch::Txs(txs), Reply::Objects(deferred));
        Ok(promise)
    }

    /// `append` for a batch in three flat buffers, with no object per transaction either way:
    /// transaction `i` has digest `digests[32i..32i+32]` and bytes `bytes[ends[i-1]..ends[i]]`
    /// (`ends[-1]` = 0; bytes after the last end are ignored). `digests` may instead be one
    /// string of 64 hex digits per transaction. Checked here (hex digits when the batch is
    /// written), so a bad batch is rejected whole before anything is written; then appended
    /// exactly as `append` does (one record, one write, one fsync), in call order with every
    /// other append.
    #[napi(ts_return_type = "Promise<LogAppendedFlat>")]
    pub fn append_flat<'env>(
        &self,
        env: &'env Env,
        digests: Either<Uint8Array, String>,
        bytes: Uint8Array,
        ends: Uint32Array,
    ) -> Result<Object<'env>> {
        self.open_or_err()?;
        let n = ends.len();
        let (len, each, what) = match &digests {
            Either::A(b) => (b.len(), 32, "bytes"),
            Either::B(s) => (s.len(), 64, "hex digits"),
        };
        if Some(len) != n.checked_mul(each) {
            return Err(invalid(format!(
                "appendFlat: {len} {what} of digests for {n} transactions; digests are {each} \
                 {what} each"
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
        let batch = Batch::Flat {
            digests: match digests {
                Either::A(b) => Digests::Bytes(b.to_vec()),
                Either::B(s) => Digests::Hex(s),
            },
            bytes: bytes.get(..prev as usize).unwrap_or_default().to_vec(),
            ends: ends.to_vec(),
        };
        let (deferred, promise) = env.create_deferred()?;
        self.enqueue(batch, Reply::Flat(deferred));
        Ok(promise)
    }

    /// Up to `max` entries from timestamp `fromTs` on, as durable when the call was made. Runs
    /// on the libuv pool.
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
        self.writer.stop();
    }

    /// Queues `batch` behind every append called before; the writer settles `reply`.
    fn enqueue(&self, batch: Batch, reply: Reply) {
        self.writer.lock().batches.push((batch, reply));
        self.writer.wake.notify_one();
    }

    fn open_or_err(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(invalid(CLOSED));
        }
        Ok(())
    }
}

impl Drop for NativeLog {
    fn drop(&mut self) {
        // Garbage-collected without `close`: the writer finishes what is queued, then drops
        // its handle on the log, which releases the directory.
        self.writer.stop();
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
