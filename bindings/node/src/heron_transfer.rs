//! Heron state transfer (crate remora-heron) for JavaScript: a native thread serves peers'
//! requests from the store while JavaScript keeps executing; a lagger's wait installs the
//! shipment natively and resolves with numbers only.

use napi::bindgen_prelude::{BigInt, Buffer, Object};
use napi::{Env, Result};
use napi_derive::napi;
use remora_core::{AnyTransport, Store, TransportKind};
use remora_heron::transfer::{CatchUp, CaughtUp, Prefix};
use remora_heron::{Transfer, TransferLayout};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::heron::{heron_err, millis, transport, NET_TIMEOUT};
use crate::invalid;

#[napi(object)]
pub struct TransferOptions {
    /// `shm` (default), `tcp` or `verbs`.
    pub transport: Option<String>,
    pub dir: String,
    pub secret: Buffer,
    pub replicas: u32,
    /// This replica's index in its partition.
    pub replica: u32,
    /// This partition's replicas, by replica index: store names over `shm`, the addresses
    /// their stores are served at over `tcp` and `verbs`.
    pub peers: Vec<String>,
    /// Bytes of one server's landing slot here (two lanes of half each); any shipment
    /// transfers through it, chunk by chunk.
    pub slot_bytes: u32,
    /// The ids the request and landing regions must get (every replica creates them at the
    /// same point, so peers know them).
    pub request_region: u32,
    /// This replica's partition and the id of its coordination region: a catch-up asks first
    /// the peers whose coordination entries show the transaction executed (without them, in
    /// ring order from this replica).
    pub partition: Option<u32>,
    pub coordination_region: Option<u32>,
}

type SharedTransfer = Arc<Transfer<AnyTransport>>;

/// This replica's state-transfer memory (requests in, shipments in) and its peers', over the
/// cluster's transport.
#[napi]
pub struct NativeTransfer {
    transfer: SharedTransfer,
    name: String,
    serving: Mutex<Option<JoinHandle<()>>>,
    /// The catch-up `catchUpSync` left unfinished, for `finishCatchUp`.
    catching: Mutex<Option<CatchUp>>,
}

pub(crate) fn create_transfer(store: Arc<Store>, opts: TransferOptions) -> Result<NativeTransfer> {
    let transport = transport(
        opts.transport.as_deref(),
        &opts.dir,
        &opts.secret,
        NET_TIMEOUT,
    )?;
    // Peers' doorbells can be rung through their region files only on one host.
    let rings = transport.kind() == TransportKind::Shm;
    let layout = TransferLayout {
        replicas: opts.replicas,
        slot_bytes: opts.slot_bytes as usize,
    };
    let name = store.name().to_string();
    let mut transfer =
        Transfer::create(store, transport, layout, opts.replica, &opts.peers).map_err(heron_err)?;
    if rings {
        transfer = transfer.ring_peers_in(&opts.dir);
    }
    transfer = transfer.numbering_from(incarnation_start());
    if let (Some(p), Some(region)) = (opts.partition, opts.coordination_region) {
        transfer = transfer.with_coordination(region, p as usize * opts.replicas as usize);
    }
    if transfer.regions().0 != opts.request_region {
        return Err(invalid(format!(
            "transfer request region got id {}, expected {}",
            transfer.regions().0,
            opts.request_region
        )));
    }
    Ok(NativeTransfer {
        transfer: Arc::new(transfer),
        name,
        serving: Mutex::new(None),
        catching: Mutex::new(None),
    })
}

/// A catch-up that reached a prefix covering its transaction.
#[napi(object)]
pub struct CaughtUpShipment {
    /// The peer whose shipment covered the transaction.
    pub from: u32,
    /// The prefix installed and published (timestamp, applied count, digest in hex), which
    /// the lagger adopts; over every shipment installed on the way: objects, bytes, chunks.
    pub up_to: BigInt,
    pub applied: f64,
    pub digest: String,
    pub objects: f64,
    pub bytes: f64,
    pub chunks: f64,
    /// µs from the first request going out to the covering shipment installed.
    pub micros: f64,
}

/// Where this process's request numbers start: different from a dead incarnation's (see
/// `Transfer::numbering_from`). Not a secret: only distinct, which the clock and pid make it.
fn incarnation_start() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(7)
        });
    nanos ^ std::process::id().rotate_left(16)
}

fn caught_up(c: CaughtUp) -> CaughtUpShipment {
    CaughtUpShipment {
        from: c.from,
        up_to: BigInt::from(c.prefix.ts),
        applied: c.prefix.applied as f64,
        digest: hex(&c.prefix.digest),
        objects: c.objects as f64,
        bytes: c.bytes as f64,
        chunks: c.chunks as f64,
        micros: c.elapsed.as_secs_f64() * 1e6,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unsigned(what: &str, v: BigInt) -> Result<u64> {
    let (signed, v, lossless) = v.get_u64();
    if signed || !lossless {
        return Err(invalid(format!("{what} must be a 64-bit unsigned integer")));
    }
    Ok(v)
}

fn digest_bytes(hex: &str) -> Result<[u8; 32]> {
    let bad = || invalid("publish: digest must be 64 hex digits");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[napi]
impl NativeTransfer {
    /// Catches up to a peer's prefix covering transaction `ts` from this replica's prefix
    /// `since` (Heron, Algorithm 3), in one call: asks the peers in turn (those whose
    /// coordination entries show `ts` executed first), installs each shipment as it lands, and
    /// publishes every longer prefix installed. Runs on this thread for at most `budgetMicros`
    /// (the lagging replica has nothing else to execute) and returns the covering prefix, or
    /// null when the budget ran out first: `finishCatchUp` goes on. Throws when no peer
    /// shipped a covering prefix within `timeoutMs` (asking the next peer after
    /// `transferTimeoutMs` without a whole shipment); `why` goes into that error.
    #[napi]
    pub fn catch_up_sync(
        &self,
        ts: BigInt,
        since: BigInt,
        why: String,
        timeout_ms: f64,
        transfer_timeout_ms: f64,
        budget_micros: f64,
    ) -> Result<Option<CaughtUpShipment>> {
        let ts = unsigned("catchUpSync: ts", ts)?;
        let since = unsigned("catchUpSync: since", since)?;
        let timeout = millis("timeoutMs", timeout_ms)?;
        let per_peer = millis("transferTimeoutMs", transfer_timeout_ms)?;
        if !(0.0..=3.6e9).contains(&budget_micros) {
            return Err(invalid(format!(
                "budgetMicros must be 0 to 3600000000, got {budget_micros}"
            )));
        }
        let until = Instant::now() + Duration::from_secs_f64(budget_micros / 1e6);
        let mut c = self
            .transfer
            .begin_catch_up(ts, since, &why, timeout, per_peer);
        let mut catching = self.catching.lock().unwrap_or_else(|e| e.into_inner());
        *catching = None;
        match self
            .transfer
            .catch_up_until(&mut c, until)
            .map_err(heron_err)?
        {
            Some(done) => Ok(Some(caught_up(done))),
            None => {
                *catching = Some(c);
                Ok(None)
            }
        }
    }

    /// Goes into and out of a catch-up once, asking nobody and installing nothing, and returns
    /// the lagger's own prefix (`since`, `applied`, `digest`) as if a shipment had brought it:
    /// a replica calls it at start, so that its first real catch-up does not pay V8's
    /// first-run costs (the result's shape built, the code around the call compiled and its
    /// caches filled: 25-30 µs of a 64 KB catch-up, docs/heron.md) at the time a lagger can
    /// least afford them.
    #[napi]
    pub fn rehearse_catch_up(
        &self,
        since: BigInt,
        applied: f64,
        digest: String,
    ) -> Result<CaughtUpShipment> {
        let since = unsigned("rehearseCatchUp: since", since)?;
        if !(applied >= 0.0 && applied.fract() == 0.0 && applied <= 2f64.powi(53)) {
            return Err(invalid(format!(
                "rehearseCatchUp: applied must be a non-negative integer, got {applied}"
            )));
        }
        Ok(caught_up(CaughtUp {
            from: self.transfer.me(),
            since,
            prefix: Prefix {
                ts: since,
                applied: applied as u64,
                digest: digest_bytes(&digest)?,
            },
            objects: 0,
            bytes: 0,
            chunks: 0,
            elapsed: Duration::ZERO,
        }))
    }

    /// Finishes the catch-up the last `catchUpSync` left unfinished, on a thread of its own
    /// (not the libuv pool, which a lagger's other waits may hold); resolves as
    /// `catchUpSync` returns, or rejects as it throws.
    #[napi(ts_return_type = "Promise<CaughtUpShipment>")]
    pub fn finish_catch_up<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let Some(mut c) = self
            .catching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Err(invalid("finishCatchUp: no catch-up is under way"));
        };
        let (deferred, promise) = env.create_deferred()?;
        let transfer = self.transfer.clone();
        std::thread::Builder::new()
            .name("heron-catch-up".into())
            .spawn(move || loop {
                match transfer.catch_up_until(&mut c, Instant::now() + Duration::from_secs(3600)) {
                    Ok(None) => continue,
                    Ok(Some(done)) => break deferred.resolve(move |_| Ok(caught_up(done))),
                    Err(e) => break deferred.reject(heron_err(e)),
                }
            })
            .map_err(|e| invalid(format!("starting the catch-up thread: {e}")))?;
        Ok(promise)
    }

    /// Records the prefix this replica applied (after its writes are in the store): what the
    /// serving thread ships is the state as of the latest one.
    #[napi]
    pub fn publish(&self, ts: BigInt, applied: f64, digest: String) -> Result<()> {
        let (signed, ts, lossless) = ts.get_u64();
        if signed || !lossless {
            return Err(invalid("publish: ts must be a 64-bit unsigned integer"));
        }
        if !(applied >= 0.0 && applied.fract() == 0.0 && applied <= 2f64.powi(53)) {
            return Err(invalid(format!(
                "publish: applied must be a non-negative integer, got {applied}"
            )));
        }
        self.transfer.publish(Prefix {
            ts,
            applied: applied as u64,
            digest: digest_bytes(&digest)?,
        });
        Ok(())
    }

    /// Starts the native serving thread (once): it sleeps on the request doorbell and ships
    /// what peers ask for, while this thread keeps executing.
    #[napi]
    pub fn serve(&self) -> Result<()> {
        let mut serving = self.serving.lock().unwrap_or_else(|e| e.into_inner());
        if serving.is_some() {
            return Ok(());
        }
        let transfer = self.transfer.clone();
        let name = self.name.clone();
        let handle = std::thread::Builder::new()
            .name("heron-transfer".into())
            .spawn(move || {
                let failed = |r: remora_heron::Request, e: remora_heron::Error| {
                    // The lagger asks another peer; this is for the operator.
                    eprintln!(
                        "heron: {name} could not serve replica {} (request {}): {e}",
                        r.replica, r.number
                    );
                };
                // Attaching to peers takes a handshake each: done here, before any request.
                transfer.warm();
                if let Err(e) = transfer.serve_forever(failed) {
                    eprintln!("heron: {name} stopped serving state transfers: {e}");
                }
            })
            .map_err(|e| invalid(format!("starting the transfer thread: {e}")))?;
        *serving = Some(handle);
        Ok(())
    }

    /// Requests served to completion.
    #[napi]
    pub fn served(&self) -> f64 {
        self.transfer.served() as f64
    }

    /// Replica `replica` of this partition restarted: attach to its new incarnation next
    /// time (at `address` over `tcp`/`verbs`).
    #[napi]
    pub fn reattach(&self, replica: u32, address: Option<String>) -> Result<()> {
        self.transfer
            .reattach(replica, address.as_deref())
            .map_err(heron_err)
    }

    /// Stops the serving thread and waits for it (a shipment in progress is abandoned).
    #[napi]
    pub fn close(&self) {
        self.transfer.stop();
        let handle = self
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}
