//! Heron's ordered stream (crate remora-heron, `ring`) for JavaScript: the launcher appends
//! ordered transactions to a ring in its store; each replica reads it one-sidedly, waiting on a
//! native thread (a bounded spin, then the partition's doorbell) so JavaScript never polls.

use napi::bindgen_prelude::{AsyncTask, BigInt, Buffer};
use napi::{Env, Error, Result, Status, Task};
use napi_derive::napi;
use remora_core::region::{Region, RegionInfo};
use remora_core::{Addr, RemoteMemory, Store};
use remora_heron::{Dropped, Record, RecordIn, RingError, RingLayout, RingProducer, RingReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::heron::millis;
use crate::invalid;
use crate::net;

fn ring_err(e: RingError) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

fn ts_of(what: &str, ts: &BigInt) -> Result<u64> {
    let (signed, v, lossless) = ts.get_u64();
    if signed || !lossless || v == 0 {
        return Err(invalid(format!(
            "{what}: ts must be a positive 64-bit integer"
        )));
    }
    Ok(v)
}

#[napi(object)]
pub struct RingOptions {
    pub partitions: u32,
    pub replicas: u32,
    /// Bytes of records the ring holds (4 KiB to 1 GiB).
    pub capacity: u32,
}

#[napi(object, object_to_js = false)]
pub struct RingRecordIn {
    pub ts: BigInt,
    pub dest: Vec<u32>,
    pub payload: Buffer,
}

#[napi(object)]
pub struct RingRecord {
    pub ts: BigInt,
    pub dest: Vec<u32>,
    pub payload: Buffer,
}

/// A replica the producer stopped waiting for, with the records addressed to its partition it
/// had not read (`lost`: its position named no record, so they cannot be told).
#[napi(object)]
pub struct DroppedConsumer {
    pub consumer: u32,
    pub lost: bool,
    pub records: Vec<RingRecord>,
}

fn to_js(r: Record) -> RingRecord {
    RingRecord {
        ts: BigInt::from(r.ts),
        dest: r.dest,
        payload: r.payload.into(),
    }
}

/// Bytes before each record's destinations in a packed batch (`pack`).
const PACKED_HEADER: usize = 16;

/// Records as one buffer, for the replica's hot path: one allocation handed to JavaScript per
/// batch instead of an object, a BigInt, an array and an external buffer (with its finalizer)
/// per record; about 0.4 µs less CPU per record in a push-and-poll loop. Per record,
/// little-endian: u64 ts, u32 payload length, u16 destinations, u16 zero, a u16 per
/// destination, the payload. `ts/heron/ring-batch.ts` reads it.
fn pack(records: Vec<Record>) -> Buffer {
    let size = records
        .iter()
        .map(|r| PACKED_HEADER + 2 * r.dest.len() + r.payload.len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for r in records {
        out.extend_from_slice(&r.ts.to_le_bytes());
        // The reader checked both: a payload within the ring (at most MAX_RING_BYTES), and
        // at most one destination per partition, each below the count (at most MAX_PARTITIONS).
        out.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&(r.dest.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        for h in &r.dest {
            out.extend_from_slice(&(*h as u16).to_le_bytes());
        }
        out.extend_from_slice(&r.payload);
    }
    out.into()
}

fn dropped_to_js(d: Dropped) -> DroppedConsumer {
    DroppedConsumer {
        consumer: d.consumer,
        lost: d.lost,
        records: d.records.into_iter().map(to_js).collect(),
    }
}

/// The launcher's ring: a new remote-writable region of its store.
#[napi]
pub struct NativeRingProducer {
    ring: Mutex<RingProducer>,
}

pub(crate) fn create_producer(store: Arc<Store>, opts: RingOptions) -> Result<NativeRingProducer> {
    let layout = RingLayout::new(opts.partitions, opts.replicas, opts.capacity as usize)
        .map_err(ring_err)?;
    let ring = RingProducer::create(&store, layout).map_err(ring_err)?;
    Ok(NativeRingProducer {
        ring: Mutex::new(ring),
    })
}

#[napi]
impl NativeRingProducer {
    fn ring(&self) -> std::sync::MutexGuard<'_, RingProducer> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ring's region id in the launcher's store.
    #[napi(getter)]
    pub fn region(&self) -> u32 {
        self.ring().region()
    }

    /// Appends `records` in order and wakes their partitions' readers. Waits up to `stallMs`
    /// for room; replicas still in the way then are dropped and returned with what they missed.
    #[napi]
    pub fn push(&self, records: Vec<RingRecordIn>, stall_ms: f64) -> Result<Vec<DroppedConsumer>> {
        let stall = millis("stallMs", stall_ms)?;
        let ts = records
            .iter()
            .map(|r| ts_of("push", &r.ts))
            .collect::<Result<Vec<_>>>()?;
        let ins: Vec<RecordIn<'_>> = records
            .iter()
            .zip(&ts)
            .map(|(r, &ts)| RecordIn {
                ts,
                dest: &r.dest,
                payload: &r.payload,
            })
            .collect();
        let dropped = self.ring().push(&ins, stall).map_err(ring_err)?;
        Ok(dropped.into_iter().map(dropped_to_js).collect())
    }

    /// Stops waiting for `consumer` (the replica is gone); returns what it had not read.
    #[napi]
    pub fn retire(&self, consumer: u32) -> Result<DroppedConsumer> {
        self.ring()
            .retire(consumer)
            .map(dropped_to_js)
            .map_err(ring_err)
    }

    /// Takes `consumer` back (its replica restarted): the producer waits for it again from the
    /// head, which it returns (a stream position); a reader attaching as `consumer` starts there.
    #[napi]
    pub fn reattach(&self, consumer: u32) -> Result<f64> {
        self.ring()
            .reattach(consumer)
            .map(|head| head as f64)
            .map_err(ring_err)
    }
}

#[napi(object)]
pub struct RingReaderOptions {
    /// `shm` (default): the ring's region file in `dir`, mapped; `tcp` or `verbs`: the
    /// launcher's store served at `address`, read with `secret` (no doorbell: a wait polls).
    pub transport: Option<String>,
    pub address: Option<String>,
    pub secret: Option<Buffer>,
    /// The cluster directory (private to its owner: that is what guards the ring's file).
    pub dir: String,
    /// The launcher's store name and the ring's region in it.
    pub store: String,
    pub region: u32,
    /// partition * replicas + replica.
    pub consumer: u32,
}

/// The launcher's ring on this host: its region file mapped here, read in place. Unlike an
/// `ShmPeer` it opens no control connection to the launcher, which a ring never needs (it holds
/// no objects to look up), so the launcher's control thread never has a replica to serve.
struct MappedRing {
    name: String,
    store_dir: String,
    region: Arc<Region>,
}

impl MappedRing {
    fn check(&self, region: u32) -> remora_core::Result<&Region> {
        if region != self.region.info.id {
            return Err(remora_core::Error::NoRegion {
                store: self.store_dir.clone(),
                region,
            });
        }
        Ok(&self.region)
    }
}

impl RemoteMemory for MappedRing {
    fn peer(&self) -> &str {
        &self.name
    }
    fn region_info(&self, region: u32) -> remora_core::Result<RegionInfo> {
        Ok(self.check(region)?.info)
    }
    fn read(&self, region: u32, offset: u64, buf: &mut [u8]) -> remora_core::Result<()> {
        self.check(region)?.read(offset, buf)
    }
    fn write(&self, region: u32, offset: u64, data: &[u8]) -> remora_core::Result<()> {
        self.check(region)?.write(offset, data)
    }
    fn lookup(&self, ids: &[&[u8]]) -> remora_core::Result<Vec<Option<Addr>>> {
        Ok(vec![None; ids.len()])
    }
}

/// The ring's memory: mapped on this host (`MappedRing`), or the launcher's store over the
/// network (an `AnyPeer`).
type RingMemory = Box<dyn RemoteMemory>;

type SharedReader = Arc<Mutex<RingReader<RingMemory>>>;

/// A replica's view of the launcher's ring, over `shm` (mapped) or the network.
#[napi]
pub struct NativeRingReader {
    reader: SharedReader,
}

fn lock(r: &SharedReader) -> std::sync::MutexGuard<'_, RingReader<RingMemory>> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct WaitRing {
    reader: SharedReader,
    max: usize,
    spin: Duration,
    timeout: Duration,
}

impl Task for WaitRing {
    type Output = Vec<Record>;
    type JsValue = Buffer;
    fn compute(&mut self) -> Result<Vec<Record>> {
        lock(&self.reader)
            .wait(self.max, self.spin, self.timeout)
            .map_err(ring_err)
    }
    fn resolve(&mut self, _: Env, got: Vec<Record>) -> Result<Buffer> {
        Ok(pack(got))
    }
}

#[napi]
impl NativeRingReader {
    /// Attaches to the launcher's ring as `consumer`, resuming where it last read. Over `tcp`
    /// or `verbs` this connects on the calling thread: once, as a replica starts.
    #[napi(factory)]
    pub fn attach(opts: RingReaderOptions) -> Result<Self> {
        if net::kind(opts.transport.as_deref())?.is_network() {
            let secret = opts
                .secret
                .as_ref()
                .ok_or_else(|| invalid("attach: a ring over the network needs 'secret'"))?;
            let target = net::Target::from_options(&net::RemoteOptions {
                transport: opts.transport.clone(),
                dir: None,
                address: opts.address.clone(),
                store: None,
                secret: secret.to_vec().into(),
            })?;
            let peer: RingMemory = Box::new(target.attach(secret)?);
            let reader =
                RingReader::attach(peer, opts.region, opts.consumer, None).map_err(ring_err)?;
            return Ok(NativeRingReader {
                reader: Arc::new(Mutex::new(reader)),
            });
        }
        remora_core::store::check_name(&opts.store).map_err(crate::js_err)?;
        let dir = std::path::Path::new(&opts.dir).join(&opts.store);
        // One mapping serves the reads, the position writes and the doorbell's futex.
        let region = Arc::new(Region::attach(&dir, opts.region).map_err(crate::js_err)?);
        let mem = MappedRing {
            name: format!("shm ring of '{}'", opts.store),
            store_dir: dir.display().to_string(),
            region: region.clone(),
        };
        let reader = RingReader::attach(
            Box::new(mem) as RingMemory,
            opts.region,
            opts.consumer,
            Some(region),
        )
        .map_err(ring_err)?;
        Ok(NativeRingReader {
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Up to `max` records for our partition, without waiting, packed (`pack`; empty: none).
    #[napi]
    pub fn poll(&self, max: u32) -> Result<Buffer> {
        let got = lock(&self.reader)
            .poll(max.max(1) as usize)
            .map_err(ring_err)?;
        Ok(pack(got))
    }

    /// As `wait`, on this thread, for at most `budgetMicros`: no pool hop, so the records are
    /// in JavaScript one wake-up after the producer rang. Packed as `poll`; empty when the
    /// budget ran out.
    #[napi]
    pub fn wait_sync(&self, max: u32, spin_micros: f64, budget_micros: f64) -> Result<Buffer> {
        let spin = millis("spinMicros", spin_micros / 1000.0)?;
        let budget = millis("budgetMicros", budget_micros / 1000.0)?;
        let got = lock(&self.reader)
            .wait(max.max(1) as usize, spin, budget)
            .map_err(ring_err)?;
        Ok(pack(got))
    }

    /// Resolves with up to `max` records, waiting on a pool thread: a spin of `spinMicros`,
    /// then asleep on the doorbell. Packed as `poll`; empty after `timeoutMs`.
    #[napi(ts_return_type = "Promise<Buffer>")]
    pub fn wait(&self, max: u32, spin_micros: f64, timeout_ms: f64) -> Result<AsyncTask<WaitRing>> {
        Ok(AsyncTask::new(WaitRing {
            reader: self.reader.clone(),
            max: max.max(1) as usize,
            spin: millis("spinMicros", spin_micros / 1000.0)?,
            timeout: millis("timeoutMs", timeout_ms)?,
        }))
    }

    /// The stream position read up to.
    #[napi(getter)]
    pub fn position(&self) -> f64 {
        lock(&self.reader).position() as f64
    }
}
