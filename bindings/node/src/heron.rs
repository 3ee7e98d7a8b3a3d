//! Heron coordination (crate remora-heron) for JavaScript: the waits run on the libuv pool and
//! resolve a Promise, so JavaScript never polls coordination memory.

use napi::bindgen_prelude::{AsyncTask, BigInt, Buffer};
use napi::{Env, Error, Result, Status, Task};
use napi_derive::napi;
use remora_core::{ShmTransport, Store};
use remora_heron::{
    Coordinator, Layout, Member, Reached, Request, Transfer, TransferLayout, WaitOptions,
};
use std::sync::Arc;
use std::time::Duration;

use crate::invalid;

fn heron_err(e: remora_heron::Error) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

#[napi(object)]
pub struct CoordinatorOptions {
    /// The cluster directory (peers' stores live in it).
    pub dir: String,
    pub secret: Buffer,
    pub partitions: u32,
    pub replicas: u32,
    /// This replica's place.
    pub partition: u32,
    pub replica: u32,
    /// Store names of all replicas, by entry index (partition * replicas + replica).
    pub peers: Vec<String>,
    /// The region id every replica's coordination region has (each creates it first).
    pub region: u32,
}

type Shared = Arc<Coordinator<ShmTransport>>;

/// This replica's coordination memory and its peers', over `shm`.
#[napi]
pub struct NativeCoordinator {
    coord: Shared,
}

pub(crate) fn create(store: Arc<Store>, opts: CoordinatorOptions) -> Result<NativeCoordinator> {
    let layout = Layout::new(opts.partitions, opts.replicas).map_err(heron_err)?;
    let transport = ShmTransport::new(&opts.dir, &opts.secret).map_err(crate::js_err)?;
    let peers: Vec<(String, u32)> = opts.peers.into_iter().map(|p| (p, opts.region)).collect();
    let me = Member {
        partition: opts.partition,
        replica: opts.replica,
    };
    let coord = Coordinator::create(store, transport, layout, me, &peers).map_err(heron_err)?;
    if coord.region() != opts.region {
        return Err(invalid(format!(
            "coordination region got id {}, expected {}: create the coordinator before the store holds objects",
            coord.region(),
            opts.region
        )));
    }
    Ok(NativeCoordinator {
        coord: Arc::new(coord),
    })
}

#[napi(object)]
pub struct CoordinationEntry {
    pub ts: BigInt,
    pub phase: u32,
}

#[napi(object)]
pub struct CoordinateResult {
    /// Per involved partition, in the order asked: the replicas that reached the phase.
    pub replicas: Vec<Vec<u32>>,
    /// Every replica of every involved partition reached it.
    pub complete: bool,
    pub majority_micros: f64,
    pub waited_micros: f64,
    pub failed_writes: u32,
}

fn millis(what: &str, v: f64) -> Result<Duration> {
    if !(v >= 0.0 && v.is_finite() && v <= 3.6e6) {
        return Err(invalid(format!("{what} must be 0 to 3600000 ms, got {v}")));
    }
    Ok(Duration::from_secs_f64(v / 1000.0))
}

pub struct Coordinate {
    coord: Shared,
    ts: u64,
    phase: u32,
    partitions: Vec<u32>,
    opts: WaitOptions,
}

impl Task for Coordinate {
    type Output = Reached;
    type JsValue = CoordinateResult;
    fn compute(&mut self) -> Result<Reached> {
        self.coord
            .coordinate(self.ts, self.phase, &self.partitions, self.opts)
            .map_err(heron_err)
    }
    fn resolve(&mut self, _: Env, r: Reached) -> Result<CoordinateResult> {
        Ok(CoordinateResult {
            replicas: r.replicas.into_iter().map(|(_, q)| q).collect(),
            complete: r.complete,
            majority_micros: r.majority_after.as_secs_f64() * 1e6,
            waited_micros: r.waited.as_secs_f64() * 1e6,
            failed_writes: r.failed_writes as u32,
        })
    }
}

pub struct Connect {
    coord: Shared,
    timeout: Duration,
}

impl Task for Connect {
    type Output = ();
    type JsValue = ();
    fn compute(&mut self) -> Result<()> {
        self.coord.connect(self.timeout).map_err(heron_err)
    }
    fn resolve(&mut self, _: Env, _: ()) -> Result<()> {
        Ok(())
    }
}

#[napi]
impl NativeCoordinator {
    #[napi(getter)]
    pub fn region(&self) -> u32 {
        self.coord.region()
    }

    /// Attaches to every peer, retrying until `timeoutMs` (peers start in any order).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn connect(&self, timeout_ms: f64) -> Result<AsyncTask<Connect>> {
        Ok(AsyncTask::new(Connect {
            coord: self.coord.clone(),
            timeout: millis("timeoutMs", timeout_ms)?,
        }))
    }

    /// Writes ⟨ts, phase⟩ into every replica of `partitions`, then waits (on a pool thread) for
    /// a majority of each and up to `graceMs` more for the rest; rejects after `timeoutMs`
    /// without a majority.
    #[napi(ts_return_type = "Promise<CoordinateResult>")]
    pub fn coordinate(
        &self,
        ts: BigInt,
        phase: u32,
        partitions: Vec<u32>,
        grace_ms: f64,
        timeout_ms: f64,
    ) -> Result<AsyncTask<Coordinate>> {
        let (signed, ts, lossless) = ts.get_u64();
        if signed || !lossless || ts == 0 {
            return Err(invalid("coordinate: ts must be a positive 64-bit integer"));
        }
        Ok(AsyncTask::new(Coordinate {
            coord: self.coord.clone(),
            ts,
            phase,
            partitions,
            opts: WaitOptions {
                grace: millis("graceMs", grace_ms)?,
                timeout: millis("timeoutMs", timeout_ms)?,
            },
        }))
    }

    /// Writes ⟨ts, phase⟩ into every replica of `partitions` without waiting: how a replica
    /// shows how far it applied (state transfer's log truncation reads it). Returns how many
    /// peers could not be written.
    #[napi]
    pub fn announce(&self, ts: BigInt, phase: u32, partitions: Vec<u32>) -> Result<u32> {
        let (signed, ts, lossless) = ts.get_u64();
        if signed || !lossless || ts == 0 {
            return Err(invalid("announce: ts must be a positive 64-bit integer"));
        }
        let failed = self
            .coord
            .announce(ts, phase, &partitions)
            .map_err(heron_err)?;
        Ok(failed as u32)
    }

    /// Every entry of this replica's coordination region, by index.
    #[napi]
    pub fn entries(&self) -> Result<Vec<CoordinationEntry>> {
        Ok(self
            .coord
            .entries()
            .map_err(heron_err)?
            .into_iter()
            .map(|e| CoordinationEntry {
                ts: BigInt::from(e.ts),
                phase: e.phase,
            })
            .collect())
    }
}

#[napi(object)]
pub struct TransferOptions {
    pub dir: String,
    pub secret: Buffer,
    pub replicas: u32,
    /// This replica's index in its partition.
    pub replica: u32,
    /// Store names of this partition's replicas, by replica index.
    pub peers: Vec<String>,
    /// Largest shipment one server lands at one lagger, in bytes.
    pub slot_bytes: u32,
    /// The ids the request and landing regions must get (every replica creates them at the
    /// same point, so peers know them).
    pub request_region: u32,
}

type SharedTransfer = Arc<Transfer<ShmTransport>>;

/// This replica's state-transfer memory (requests in, shipments in) and its peers', over `shm`.
#[napi]
pub struct NativeTransfer {
    transfer: SharedTransfer,
}

pub(crate) fn create_transfer(store: Arc<Store>, opts: TransferOptions) -> Result<NativeTransfer> {
    let transport = ShmTransport::new(&opts.dir, &opts.secret).map_err(crate::js_err)?;
    let layout = TransferLayout {
        replicas: opts.replicas,
        slot_bytes: opts.slot_bytes as usize,
    };
    let transfer =
        Transfer::create(store, transport, layout, opts.replica, &opts.peers).map_err(heron_err)?;
    if transfer.regions().0 != opts.request_region {
        return Err(invalid(format!(
            "transfer request region got id {}, expected {}",
            transfer.regions().0,
            opts.request_region
        )));
    }
    Ok(NativeTransfer {
        transfer: Arc::new(transfer),
    })
}

#[napi(object)]
pub struct TransferRequest {
    pub replica: u32,
    pub number: u32,
    pub since: BigInt,
}

pub struct WaitRequests {
    transfer: SharedTransfer,
    timeout: Duration,
}

impl Task for WaitRequests {
    type Output = Vec<Request>;
    type JsValue = Vec<TransferRequest>;
    fn compute(&mut self) -> Result<Vec<Request>> {
        self.transfer.wait_requests(self.timeout).map_err(heron_err)
    }
    fn resolve(&mut self, _: Env, got: Vec<Request>) -> Result<Vec<TransferRequest>> {
        Ok(got
            .into_iter()
            .map(|r| TransferRequest {
                replica: r.replica,
                number: r.number,
                since: BigInt::from(r.since),
            })
            .collect())
    }
}

pub struct WaitShipment {
    transfer: SharedTransfer,
    server: u32,
    number: u32,
    timeout: Duration,
}

impl Task for WaitShipment {
    type Output = Option<Vec<u8>>;
    type JsValue = Option<Buffer>;
    fn compute(&mut self) -> Result<Option<Vec<u8>>> {
        self.transfer
            .wait_shipment(self.server, self.number, self.timeout)
            .map_err(heron_err)
    }
    fn resolve(&mut self, _: Env, got: Option<Vec<u8>>) -> Result<Option<Buffer>> {
        Ok(got.map(Buffer::from))
    }
}

#[napi]
impl NativeTransfer {
    /// Asks replica `server` of this partition for every object updated after `since`;
    /// returns the request number.
    #[napi]
    pub fn request(&self, server: u32, since: BigInt) -> Result<u32> {
        let (signed, since, lossless) = since.get_u64();
        if signed || !lossless {
            return Err(invalid("request: since must be a 64-bit unsigned integer"));
        }
        self.transfer.request(server, since).map_err(heron_err)
    }

    /// Resolves with the requests that arrived (each once), or an empty list after `timeoutMs`.
    #[napi(ts_return_type = "Promise<TransferRequest[]>")]
    pub fn wait_requests(&self, timeout_ms: f64) -> Result<AsyncTask<WaitRequests>> {
        Ok(AsyncTask::new(WaitRequests {
            transfer: self.transfer.clone(),
            timeout: millis("timeoutMs", timeout_ms)?,
        }))
    }

    /// Lands `data` at replica `lagger`, answering its request `number`.
    #[napi]
    pub fn ship(&self, lagger: u32, number: u32, data: Buffer) -> Result<()> {
        self.transfer.ship(lagger, number, &data).map_err(heron_err)
    }

    /// Resolves with what `server` shipped for request `number`, or null after `timeoutMs`.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn wait_shipment(
        &self,
        server: u32,
        number: u32,
        timeout_ms: f64,
    ) -> Result<AsyncTask<WaitShipment>> {
        Ok(AsyncTask::new(WaitShipment {
            transfer: self.transfer.clone(),
            server,
            number,
            timeout: millis("timeoutMs", timeout_ms)?,
        }))
    }
}
