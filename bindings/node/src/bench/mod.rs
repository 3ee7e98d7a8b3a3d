//! The addon's entry points for benchmarks and stress tests, compiled with the `bench` feature
//! (on by default): `remora bench` and the tests use them, a cluster never does. Here, the
//! timing loops of `remora bench oneside` (one-sided reads and the memcpy baseline, each
//! operation timed on its own with the same clock so their ratio is fair) and `bench scale`
//! (native adoption); `transports` times each transport, `stress` drives torn-read stress.

pub mod stress;
pub mod transports;

use crate::js_err;
use crate::remote::{owned_ids, NativeRemote, Remote};
use napi::bindgen_prelude::{AsyncTask, Uint8Array};
use napi::{Env, Result, Task};
use napi_derive::napi;
use remora_core::remote::NO_HANDLE;
use remora_core::slot::{self, Want};
use std::hint::black_box;
use std::time::Instant;

/// Latency distribution of one measured operation, in nanoseconds.
#[napi(object)]
#[derive(Clone)]
pub struct Latency {
    pub count: u32,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub mean_ns: f64,
    pub min_ns: f64,
}

fn summarise(mut ns: Vec<u64>) -> Latency {
    ns.sort_unstable();
    let at = |q: f64| {
        ns.get(((ns.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0) as f64
    };
    let sum: u64 = ns.iter().sum();
    Latency {
        count: ns.len() as u32,
        p50_ns: at(0.5),
        p99_ns: at(0.99),
        mean_ns: if ns.is_empty() {
            0.0
        } else {
            sum as f64 / ns.len() as f64
        },
        min_ns: ns.first().copied().unwrap_or(0) as f64,
    }
}

fn timed(iterations: u32, mut op: impl FnMut(usize)) -> Vec<u64> {
    (0..iterations as usize)
        .map(|i| {
            let t = Instant::now();
            op(i);
            t.elapsed().as_nanos() as u64
        })
        .collect()
}

pub struct ReadBench {
    remote: Remote,
    ids: Vec<Vec<u8>>,
    iterations: u32,
    /// Time the allocating snapshot path (`read`, `readSync`) instead of handle reads.
    snapshots: bool,
}

/// Native read latency of `ids` on `remote` (resolved first), `iterations` reads timed one by
/// one: through handles into a reused buffer (`readInto`'s path), or with `snapshots`,
/// through the allocating path `read` and `readSync` take.
#[napi(ts_return_type = "Promise<Latency>")]
pub fn bench_reads(
    remote: &NativeRemote,
    ids: Vec<Uint8Array>,
    iterations: u32,
    snapshots: Option<bool>,
) -> AsyncTask<ReadBench> {
    AsyncTask::new(ReadBench {
        remote: remote.remote.clone(),
        ids: owned_ids(&ids),
        iterations,
        snapshots: snapshots.unwrap_or(false),
    })
}

impl Task for ReadBench {
    type Output = Latency;
    type JsValue = Latency;
    fn compute(&mut self) -> Result<Latency> {
        let ids: Vec<&[u8]> = self.ids.iter().map(Vec::as_slice).collect();
        if ids.is_empty() {
            return Ok(summarise(Vec::new()));
        }
        let handles = self.remote.handles(&ids).map_err(js_err)?;
        if let Some(i) = handles.iter().position(|&h| h == NO_HANDLE) {
            return Err(napi::Error::new(
                napi::Status::InvalidArg,
                format!(
                    "benchReads: the owner has no object {}",
                    remora_core::error::show_id(ids[i])
                ),
            ));
        }
        let mut out = vec![0u8; slot::MAX_VALUE_LEN];
        let mut failure = None;
        let ns = if self.snapshots {
            timed(self.iterations, |i| {
                if let Err(e) = self.remote.snapshot(ids[i % ids.len()]).map(black_box) {
                    failure.get_or_insert(e);
                }
            })
        } else {
            timed(self.iterations, |i| {
                let h = handles[i % handles.len()];
                match self.remote.read_into(h, Want::Newest, &mut out) {
                    Ok(m) => {
                        black_box((m, &mut out));
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            })
        };
        match failure {
            Some(e) => Err(js_err(e)),
            None => Ok(summarise(ns)),
        }
    }
    fn resolve(&mut self, _: Env, out: Latency) -> Result<Latency> {
        Ok(out)
    }
}

pub struct MemcpyBench {
    size: usize,
    iterations: u32,
}

impl Task for MemcpyBench {
    type Output = Latency;
    type JsValue = Latency;
    fn compute(&mut self) -> Result<Latency> {
        // Copy out of a pool larger than the caches' first level, as reads of many objects do.
        let slots = (256 * 1024 / self.size.max(1)).max(1);
        let src = vec![7u8; slots * self.size];
        let mut dst = vec![0u8; self.size];
        Ok(summarise(timed(self.iterations, |i| {
            let at = (i % slots) * self.size;
            dst.copy_from_slice(black_box(&src[at..at + self.size]));
            black_box(&mut dst);
        })))
    }
    fn resolve(&mut self, _: Env, out: Latency) -> Result<Latency> {
        Ok(out)
    }
}

/// The baseline: a local memcpy of `size` bytes, timed like a one-sided read.
#[napi(ts_return_type = "Promise<Latency>")]
pub fn bench_memcpy(size: u32, iterations: u32) -> AsyncTask<MemcpyBench> {
    AsyncTask::new(MemcpyBench {
        size: size as usize,
        iterations,
    })
}

/// What timing an empty operation costs on this machine (subtract it to compare).
#[napi]
pub fn bench_timer(iterations: u32) -> Latency {
    summarise(timed(iterations, |i| {
        black_box(i);
    }))
}

/// What `benchAdopt` measured: the native batch check-and-apply alone, on one core.
#[napi(object)]
pub struct AdoptBenchResult {
    pub objects: u32,
    /// Transactions per round (2 reads and 2 writes each, batches of 1024).
    pub txs: u32,
    /// Seconds spent filling the store first (not part of the rates).
    pub fill_secs: f64,
    /// Transactions per second of the best round: what the code does on a quiet core.
    pub tps: f64,
    /// Of the median round: what it did on this machine as it was.
    pub median_tps: f64,
    pub ns_per_tx: f64,
    /// Each round's rate.
    pub rounds: Vec<f64>,
}

pub struct AdoptBench {
    dir: String,
    objects: u32,
    txs: u32,
    rounds: u32,
    region_bytes: usize,
}

impl Task for AdoptBench {
    type Output = remora_core::adopt::AdoptBench;
    type JsValue = AdoptBenchResult;
    fn compute(&mut self) -> Result<Self::Output> {
        // A store of its own in `dir`, removed when the benchmark ends.
        let dir = std::path::Path::new(&self.dir).join(format!(
            "adopt-bench-{}-{}",
            std::process::id(),
            self.objects
        ));
        let seed = u64::from(self.objects) ^ 0x5eed;
        let out = remora_core::adopt::bench_adopt(
            &dir,
            self.objects as usize,
            self.txs as usize,
            self.rounds as usize,
            self.region_bytes,
            seed,
        );
        let _ = std::fs::remove_dir_all(&dir);
        out.map_err(|e| napi::Error::new(napi::Status::GenericFailure, e.to_string()))
    }
    fn resolve(&mut self, _: Env, out: Self::Output) -> Result<AdoptBenchResult> {
        Ok(AdoptBenchResult {
            objects: out.objects as u32,
            txs: out.txs as u32,
            fill_secs: out.fill_secs,
            tps: out.best_tps,
            median_tps: out.median_tps,
            ns_per_tx: 1e9 / out.best_tps.max(1e-9),
            rounds: out.rounds,
        })
    }
}

/// Native adoption throughput (`NativeStore.adoptBatch`'s core, without N-API): a store in
/// `dir` (tmpfs, e.g. /dev/shm, keeps the disk out of it) filled with `objects` objects, then
/// `rounds` (default 3) rounds of `txs` transfer transactions adopted in batches of 1024.
/// Regions of `regionBytes` (default 64 MiB). 10^7 objects take about 5 GiB and half a minute.
#[napi(ts_return_type = "Promise<AdoptBenchResult>")]
pub fn bench_adopt(
    objects: u32,
    txs: u32,
    dir: String,
    rounds: Option<u32>,
    region_bytes: Option<u32>,
) -> AsyncTask<AdoptBench> {
    AsyncTask::new(AdoptBench {
        dir,
        objects,
        txs,
        rounds: rounds.unwrap_or(3).max(1),
        region_bytes: region_bytes.map_or(64 << 20, |b| b as usize),
    })
}
