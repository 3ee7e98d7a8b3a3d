//! Native loop for `remora bench transports`: the same reads over each transport on this
//! host (`shm`, `tcp` over loopback, `verbs` when an RDMA device is present), timed one by
//! one on the libuv pool, never on the JS thread.

use crate::js_err;
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Error, Result, Status, Task};
use napi_derive::napi;
use remora_core::store::Put;
use remora_core::{
    ControlServer, RemoteMemory, RemoteStore, ShmTransport, Store, StoreConfig, TcpServer,
    TcpTransport, Transport, VerbsServer, VerbsTransport,
};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Instant;

/// Objects per size: reads cycle through them.
const OBJECTS: usize = 16;

/// Read costs of one size over one transport.
#[napi(object)]
pub struct TransportLatency {
    pub size: u32,
    /// Raw reads of `size` bytes (what perftest's ib_read_lat measures).
    pub read_p50_ns: f64,
    pub read_p99_ns: f64,
    pub read_ops_per_s: f64,
    /// Validated reads of the object (its whole slot, checksummed).
    pub get_p50_ns: f64,
    pub get_p99_ns: f64,
    pub get_ops_per_s: f64,
}

/// (p50, p99, ops/s) of `n` timed calls.
fn time(n: u32, mut op: impl FnMut(usize) -> remora_core::Result<()>) -> Result<(f64, f64, f64)> {
    let mut ns = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for i in 0..n as usize {
        let t = Instant::now();
        op(i).map_err(js_err)?;
        ns.push(t.elapsed().as_nanos() as f64);
    }
    let total = started.elapsed().as_secs_f64();
    ns.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ns.get(((ns.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok((
        at(0.5),
        at(0.99),
        if total > 0.0 { n as f64 / total } else { 0.0 },
    ))
}

fn measure<M: RemoteMemory>(
    remote: &RemoteStore<M>,
    sizes: &[u32],
    n: u32,
) -> Result<Vec<TransportLatency>> {
    let mut out = Vec::new();
    for &size in sizes {
        let ids: Vec<Vec<u8>> = (0..OBJECTS)
            .map(|i| format!("t/{size}/{i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
        let addrs: Vec<_> = remote
            .memory()
            .lookup(&refs)
            .map_err(js_err)?
            .into_iter()
            .flatten()
            .collect();
        if addrs.len() != OBJECTS {
            return Err(Error::new(Status::GenericFailure, "bench objects missing"));
        }
        let mut buf = vec![0u8; size as usize];
        let mem = remote.memory();
        let read = time(n, |i| {
            let a = addrs[i % OBJECTS];
            mem.read(a.region, a.offset, &mut buf)
        })?;
        let get = time(n, |i| remote.snapshot(refs[i % OBJECTS]).map(drop))?;
        out.push(TransportLatency {
            size,
            read_p50_ns: read.0,
            read_p99_ns: read.1,
            read_ops_per_s: read.2,
            get_p50_ns: get.0,
            get_p99_ns: get.1,
            get_ops_per_s: get.2,
        });
    }
    Ok(out)
}

/// Removes the bench's private directory however the run ends.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct TransportBench {
    transport: String,
    sizes: Vec<u32>,
    iterations: u32,
}

impl Task for TransportBench {
    type Output = Vec<TransportLatency>;
    type JsValue = Vec<TransportLatency>;

    fn compute(&mut self) -> Result<Self::Output> {
        let dir = std::env::temp_dir().join(format!(
            "remora-bench-transports-{}-{}",
            std::process::id(),
            self.transport
        ));
        let _cleanup = Cleanup(dir.clone());
        let store = Arc::new(Store::create(&StoreConfig::new(&dir, "bench")).map_err(js_err)?);
        let values: Vec<(Vec<u8>, Vec<u8>)> = self
            .sizes
            .iter()
            .flat_map(|&s| {
                (0..OBJECTS)
                    .map(move |i| (format!("t/{s}/{i}").into_bytes(), vec![i as u8; s as usize]))
            })
            .collect();
        let puts: Vec<Put> = values
            .iter()
            .map(|(id, v)| (id.as_slice(), Some(v.as_slice()), 1))
            .collect();
        store.set_many(&puts).map_err(js_err)?;
        let mut secret = Vec::with_capacity(32);
        for i in 0..4u64 {
            secret.extend_from_slice(&RandomState::new().hash_one(i).to_le_bytes());
        }
        let loopback = "127.0.0.1:0"
            .parse()
            .map_err(|_| Error::from_reason("bad address"))?;
        let (sizes, n) = (&self.sizes, self.iterations.max(2));
        match self.transport.as_str() {
            "shm" => {
                let _server = ControlServer::start(&store, &secret).map_err(js_err)?;
                let peer = ShmTransport::new(&dir, &secret).and_then(|t| t.attach("bench"));
                measure(&RemoteStore::new(peer.map_err(js_err)?), sizes, n)
            }
            "tcp" => {
                let server = TcpServer::start(&store, &secret, loopback).map_err(js_err)?;
                let peer = TcpTransport::new(&secret)
                    .and_then(|t| t.attach(&server.local_addr().to_string()));
                measure(&RemoteStore::new(peer.map_err(js_err)?), sizes, n)
            }
            "verbs" => {
                let server = VerbsServer::start(&store, &secret, loopback).map_err(js_err)?;
                let peer = VerbsTransport::new(&secret)
                    .and_then(|t| t.attach(&server.local_addr().to_string()));
                measure(&RemoteStore::new(peer.map_err(js_err)?), sizes, n)
            }
            t => Err(Error::from_reason(format!(
                "unknown transport '{t}': shm, tcp or verbs"
            ))),
        }
    }

    fn resolve(&mut self, _: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(out)
    }
}

/// Times raw and validated reads of objects of each size over `transport` (`shm`, `tcp` or
/// `verbs`), between a store and a peer in this process.
#[napi(ts_return_type = "Promise<TransportLatency[]>")]
pub fn bench_transport(
    transport: String,
    sizes: Vec<u32>,
    iterations: u32,
) -> AsyncTask<TransportBench> {
    AsyncTask::new(TransportBench {
        transport,
        sizes,
        iterations,
    })
}
