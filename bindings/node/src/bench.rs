//! Native timing loops for `remora bench oneside`: one-sided reads and the memcpy baseline,
//! each operation timed on its own with the same clock so their ratio is fair.

use crate::{js_err, Remote};
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Result, Task};
use napi_derive::napi;
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
    pub(crate) remote: Remote,
    pub(crate) ids: Vec<Vec<u8>>,
    pub(crate) iterations: u32,
}

impl Task for ReadBench {
    type Output = Latency;
    type JsValue = Latency;
    fn compute(&mut self) -> Result<Latency> {
        let ids: Vec<&[u8]> = self.ids.iter().map(Vec::as_slice).collect();
        if ids.is_empty() {
            return Ok(summarise(Vec::new()));
        }
        self.remote.resolve(&ids).map_err(js_err)?;
        let mut failure = None;
        let ns = timed(self.iterations, |i| {
            if let Err(e) = self.remote.snapshot(ids[i % ids.len()]).map(black_box) {
                failure.get_or_insert(e);
            }
        });
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
