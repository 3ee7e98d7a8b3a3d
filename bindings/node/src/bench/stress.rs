//! Torn-read stress (`remora_core::stress`) for the two-process tests and `bench oneside`: an
//! owner rewrites self-checking values from a native thread while a reader verifies every
//! one-sided read of them.

use crate::js_err;
use crate::remote::{NativeRemote, Remote};
use crate::NativeStore;
use napi::bindgen_prelude::{AsyncTask, BigInt};
use napi::{Env, Result, Task};
use napi_derive::napi;
use remora_core::{stress, Store};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub struct StressWrite {
    store: Arc<Store>,
    objects: u32,
    seed: u64,
    millis: u32,
    /// The store's `close` flag: closing it ends the writer early.
    stop: Arc<AtomicBool>,
}

impl Task for StressWrite {
    type Output = f64;
    type JsValue = f64;
    fn compute(&mut self) -> Result<f64> {
        let start = stress::populate(&self.store, self.objects).map_err(js_err)?;
        let limit = Duration::from_millis(u64::from(self.millis));
        let (writes, _) = stress::run_writer(
            &self.store,
            self.objects,
            self.seed,
            start,
            &self.stop,
            limit,
        )
        .map_err(js_err)?;
        Ok(writes as f64)
    }
    fn resolve(&mut self, _: Env, out: f64) -> Result<f64> {
        Ok(out)
    }
}

/// Owner side: writes `objects` self-checking values into `store`, then rewrites them from a
/// native thread for `millis` ms (or until the store closes). Resolves to the number of writes.
#[napi(ts_return_type = "Promise<number>")]
pub fn stress_write(
    store: &NativeStore,
    objects: u32,
    seed: BigInt,
    millis: u32,
) -> Result<AsyncTask<StressWrite>> {
    Ok(AsyncTask::new(StressWrite {
        store: store.store()?,
        objects: objects.max(1),
        seed: seed.get_u64().1,
        millis,
        stop: store.closing.clone(),
    }))
}

#[napi(object)]
pub struct StressReport {
    pub reads: f64,
    pub verified: f64,
    pub deleted: f64,
    pub absent: f64,
    pub lagging: f64,
    pub violations: Vec<String>,
}

pub struct StressRead {
    remote: Remote,
    objects: u32,
    seed: u64,
    reads: u64,
}

impl Task for StressRead {
    type Output = stress::ReadReport;
    type JsValue = StressReport;
    fn compute(&mut self) -> Result<stress::ReadReport> {
        stress::run_reader(&self.remote, self.objects, self.seed, self.reads).map_err(js_err)
    }
    fn resolve(&mut self, _: Env, r: stress::ReadReport) -> Result<StressReport> {
        Ok(StressReport {
            reads: r.reads as f64,
            verified: r.verified as f64,
            deleted: r.deleted as f64,
            absent: r.absent as f64,
            lagging: r.lagging as f64,
            violations: r.violations,
        })
    }
}

/// Reader side: `reads` verified one-sided reads of the stress objects through `remote`.
#[napi(ts_return_type = "Promise<StressReport>")]
pub fn stress_read(
    remote: &NativeRemote,
    objects: u32,
    seed: BigInt,
    reads: f64,
) -> AsyncTask<StressRead> {
    AsyncTask::new(StressRead {
        remote: remote.remote.clone(),
        objects: objects.max(1),
        seed: seed.get_u64().1,
        reads: reads.max(0.0) as u64,
    })
}
