//! Heron coordination (crate remora-heron) for JavaScript. `coordinateSync` announces and waits
//! on the calling thread for a bounded budget (a spin, then a futex sleep on the doorbell),
//! writing its result as numbers into a `Float64Array` the caller owns; only a wait that
//! outlasts the budget moves to the libuv pool (`finish`), so the common case costs no pool
//! round trip and builds no JavaScript object.

use napi::bindgen_prelude::{
    AsyncTask, BigInt, Buffer, Float64Array, Float64ArraySlice, Uint32ArraySlice,
};
use napi::{Env, Error, Result, Status, Task};
use napi_derive::napi;
use remora_core::{AnyTransport, Store, TransportKind};
use remora_heron::{Coordinator, Layout, Member, Pending, Progress, Reached, WaitOptions};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{invalid, net};

/// How long a Heron peer over `tcp` may take to answer one request before it counts as gone,
/// for state transfer: a peer killed answers at once (refused, reset); one stopped would
/// otherwise hold a request for the transport's default of 10 s.
pub(crate) const NET_TIMEOUT: Duration = Duration::from_secs(2);

/// The same for coordination writes: shorter, since a write that times out costs nothing but
/// a retry (the coordinator hands the peer to a thread that keeps writing the latest entry),
/// while waiting for a stopped peer holds up the replica's announcement.
const COORD_NET_TIMEOUT: Duration = Duration::from_millis(250);

/// The cluster's transport for a Heron class, with requests to a `tcp` peer bounded by
/// `timeout`. `verbs` keeps its default: its link set-up (memory registration, queue pair)
/// has not been measured against bounds this short.
pub(crate) fn transport(
    name: Option<&str>,
    dir: &str,
    secret: &[u8],
    timeout: Duration,
) -> Result<AnyTransport> {
    let t = net::transport(name, dir, secret)?;
    Ok(match t.kind() {
        TransportKind::Tcp => t.with_timeout(timeout),
        TransportKind::Shm | TransportKind::Verbs => t,
    })
}

pub(crate) fn heron_err(e: remora_heron::Error) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

#[napi(object)]
pub struct CoordinatorOptions {
    /// `shm` (default), `tcp` or `verbs`.
    pub transport: Option<String>,
    /// The cluster directory (peers' stores live in it).
    pub dir: String,
    pub secret: Buffer,
    pub partitions: u32,
    pub replicas: u32,
    /// This replica's place.
    pub partition: u32,
    pub replica: u32,
    /// All replicas by entry index (partition * replicas + replica): store names over `shm`,
    /// `host:port` addresses their stores are served at over `tcp` and `verbs`.
    pub peers: Vec<String>,
    /// The region id every replica's coordination region has (each creates it first).
    pub region: u32,
}

type Shared = Arc<Coordinator<AnyTransport>>;

/// This replica's coordination memory and its peers', over the cluster's transport.
#[napi]
pub struct NativeCoordinator {
    coord: Shared,
    /// The wait `coordinateSync` left unfinished, for `finish`.
    pending: Mutex<Option<Pending>>,
}

/// `coordinateSync`'s and `finish`'s result, by index of the `Float64Array`.
const STATUS: usize = 0;
const MAJORITY_MICROS: usize = 1;
const WAITED_MICROS: usize = 2;
const FAILED_WRITES: usize = 3;
const SLEEPS: usize = 4;
/// Then one replica bitmap per involved partition, in the order asked.
const MASKS: usize = 5;

/// Status values: the wait outlasted the budget (call `finish`), every replica reached the
/// phase, or a majority of each partition did and the grace wait ended without the rest.
const PENDING: u32 = 0;
const COMPLETE: u32 = 1;
const MAJORITY: u32 = 2;

fn fill(r: &Reached, out: &mut [f64]) -> u32 {
    let status = if r.complete { COMPLETE } else { MAJORITY };
    out[STATUS] = f64::from(status);
    out[MAJORITY_MICROS] = r.majority_after.as_secs_f64() * 1e6;
    out[WAITED_MICROS] = r.waited.as_secs_f64() * 1e6;
    out[FAILED_WRITES] = r.failed_writes as f64;
    out[SLEEPS] = f64::from(r.sleeps);
    for (o, &m) in out[MASKS..].iter_mut().zip(&r.masks) {
        *o = f64::from(m);
    }
    status
}

fn micros(what: &str, v: f64) -> Result<Duration> {
    if !(v >= 0.0 && v.is_finite() && v <= 3.6e9) {
        return Err(invalid(format!(
            "{what} must be 0 to 3600000000 µs, got {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v / 1e6))
}

fn positive_ts(what: &str, ts: BigInt) -> Result<u64> {
    let (signed, ts, lossless) = ts.get_u64();
    if signed || !lossless || ts == 0 {
        return Err(invalid(format!(
            "{what}: ts must be a positive 64-bit integer"
        )));
    }
    Ok(ts)
}

pub(crate) fn create(store: Arc<Store>, opts: CoordinatorOptions) -> Result<NativeCoordinator> {
    let layout = Layout::new(opts.partitions, opts.replicas).map_err(heron_err)?;
    let transport = transport(
        opts.transport.as_deref(),
        &opts.dir,
        &opts.secret,
        COORD_NET_TIMEOUT,
    )?;
    // Peers' region files can be mapped here to ring their doorbells only on one host.
    let rings = transport.kind() == TransportKind::Shm;
    let peers: Vec<(String, u32)> = opts.peers.into_iter().map(|p| (p, opts.region)).collect();
    let me = Member {
        partition: opts.partition,
        replica: opts.replica,
    };
    let mut coord = Coordinator::create(store, transport, layout, me, &peers).map_err(heron_err)?;
    if rings {
        coord = coord.ring_doorbells(Path::new(&opts.dir));
    }
    if coord.region() != opts.region {
        return Err(invalid(format!(
            "coordination region got id {}, expected {}: create the coordinator before the store holds objects",
            coord.region(),
            opts.region
        )));
    }
    Ok(NativeCoordinator {
        coord: Arc::new(coord),
        pending: Mutex::new(None),
    })
}

#[napi(object)]
pub struct CoordinationEntry {
    pub ts: BigInt,
    pub phase: u32,
}

pub(crate) fn millis(what: &str, v: f64) -> Result<Duration> {
    if !(v >= 0.0 && v.is_finite() && v <= 3.6e6) {
        return Err(invalid(format!("{what} must be 0 to 3600000 ms, got {v}")));
    }
    Ok(Duration::from_secs_f64(v / 1000.0))
}

/// The rest of a wait `coordinateSync` left pending, on a pool thread.
pub struct Finish {
    coord: Shared,
    pending: Option<Pending>,
    masks: usize,
}

impl Task for Finish {
    type Output = Reached;
    type JsValue = Float64Array;
    fn compute(&mut self) -> Result<Reached> {
        let Some(p) = self.pending.take() else {
            return Err(invalid("finish: no coordination is pending"));
        };
        match self.coord.advance(p, Duration::MAX).map_err(heron_err)? {
            Progress::Reached(r) => Ok(r),
            // An unbounded advance only ends reached or failed.
            Progress::Pending(p) => Err(invalid(format!(
                "finish: the wait for {:?} stopped early",
                p.target()
            ))),
        }
    }
    fn resolve(&mut self, _: Env, r: Reached) -> Result<Float64Array> {
        let mut out = vec![0.0; MASKS + self.masks];
        fill(&r, &mut out);
        Ok(Float64Array::new(out))
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

    /// Writes ⟨ts, phase⟩ into every replica of `partitions`, then waits on this thread for at
    /// most `budgetMicros`: checking the entries for `spinMicros`, then asleep on this
    /// replica's doorbell until a peer announces. Writes the result into `out` (at least
    /// 5 + partitions.length long): [status, majority µs, waited µs, failed writes, sleeps,
    /// then per partition the bitmap of replicas that reached the phase] and returns the
    /// status: 1 every replica reached it, 2 a majority of each partition did and the grace
    /// wait ran out, 0 the budget ran out first (only the status is written; `finish`
    /// goes on with the wait). Throws the timeout error, as `coordinate` rejects. With
    /// `announce` false it only waits, for a phase announced before (`announce`).
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn coordinate_sync(
        &self,
        ts: BigInt,
        phase: u32,
        partitions: Uint32ArraySlice<'_>,
        grace_ms: f64,
        timeout_ms: f64,
        spin_micros: f64,
        budget_micros: f64,
        mut out: Float64ArraySlice<'_>,
        announce: Option<bool>,
    ) -> Result<u32> {
        let ts = positive_ts("coordinateSync", ts)?;
        if out.len() < MASKS + partitions.len() {
            return Err(invalid(format!(
                "coordinateSync: out holds {} numbers, {} needed for {} partitions",
                out.len(),
                MASKS + partitions.len(),
                partitions.len()
            )));
        }
        let opts = WaitOptions {
            spin: micros("spinMicros", spin_micros)?,
            ..WaitOptions::new(
                millis("graceMs", grace_ms)?,
                millis("timeoutMs", timeout_ms)?,
            )
        };
        let budget = micros("budgetMicros", budget_micros)?;
        let progress = if announce.unwrap_or(true) {
            self.coord
                .coordinate_within(ts, phase, &partitions, opts, budget)
        } else {
            self.coord.wait_within(ts, phase, &partitions, opts, budget)
        }
        .map_err(heron_err)?;
        // SAFETY: this runs synchronously on the JavaScript thread, so no JavaScript touches
        // `out` until the call returns; the slice lives only until then. (A shared buffer
        // written by a worker meanwhile would only see numbers overwritten.)
        let out = unsafe { out.as_mut() };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match progress {
            Progress::Reached(r) => {
                *pending = None;
                fill(&r, out)
            }
            Progress::Pending(p) => {
                *pending = Some(p);
                out[STATUS] = f64::from(PENDING);
                PENDING
            }
        })
    }

    /// Finishes the wait the last `coordinateSync` left pending (status 0), on a pool thread;
    /// resolves with the same numbers it would have written.
    #[napi(ts_return_type = "Promise<Float64Array>")]
    pub fn finish(&self) -> AsyncTask<Finish> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let masks = pending.as_ref().map_or(0, |p| p.partitions().len());
        AsyncTask::new(Finish {
            coord: self.coord.clone(),
            pending,
            masks,
        })
    }

    /// Writes ⟨ts, phase⟩ into every replica of `partitions` without waiting: how a replica
    /// shows how far it applied (state transfer's log truncation reads it). Returns how many
    /// peers could not be written.
    #[napi]
    pub fn announce(&self, ts: BigInt, phase: u32, partitions: Vec<u32>) -> Result<u32> {
        let ts = positive_ts("announce", ts)?;
        let failed = self
            .coord
            .announce(ts, phase, &partitions)
            .map_err(heron_err)?;
        Ok(failed as u32)
    }

    /// Replica `index` (partition * replicas + replica) restarted: attach to its new
    /// incarnation (at `address` over `tcp`/`verbs`) and write our latest entry there. Returns
    /// whether that write failed (it is retried with the next announcement).
    #[napi]
    pub fn reattach(&self, index: u32, address: Option<String>) -> Result<bool> {
        self.coord
            .reattach(index as usize, address.as_deref())
            .map_err(heron_err)
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
