//! Loopback latency of `tcp` reads, one at a time, as `remora bench transports` measures them:
//! a number to compare before and after a change to the server, not a pass/fail check (a
//! shared 2-core machine is too noisy for a threshold). Run it on a quiet machine with
//! `cargo test -p remora-core --release --test tcp_latency -- --ignored --nocapture`.

use remora_core::store::Put;
use remora_core::{
    RemoteMemory, RemoteStore, Store, StoreConfig, TcpServer, TcpTransport, Transport,
};
use std::sync::Arc;
use std::time::Instant;

const SECRET: &[u8] = b"latency-cluster-secret-012345678";
const OBJECTS: usize = 16;
const READS: usize = 20_000;

fn percentile(sorted: &[u128], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .map_or(0.0, |&ns| ns as f64 / 1000.0)
}

#[test]
#[ignore = "a measurement: run with --ignored on a quiet machine"]
fn tcp_read_latency_over_loopback() {
    let dir = std::env::temp_dir().join(format!("remora-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::create(&StoreConfig::new(&dir, "bench")).unwrap());
    let server = TcpServer::start(&store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
    let remote = RemoteStore::new(
        TcpTransport::new(SECRET)
            .unwrap()
            .attach(&server.local_addr().to_string())
            .unwrap(),
    );
    for size in [64usize, 1024, 4096] {
        let values: Vec<(Vec<u8>, Vec<u8>)> = (0..OBJECTS)
            .map(|i| (format!("t/{size}/{i}").into_bytes(), vec![i as u8; size]))
            .collect();
        let puts: Vec<Put> = values
            .iter()
            .map(|(id, v)| (id.as_slice(), Some(v.as_slice()), 1))
            .collect();
        store.set_many(&puts).unwrap();
        let refs: Vec<&[u8]> = values.iter().map(|(id, _)| id.as_slice()).collect();
        let addrs: Vec<_> = remote
            .memory()
            .lookup(&refs)
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(addrs.len(), OBJECTS);
        let mut buf = vec![0u8; size];
        let mut ns = Vec::with_capacity(READS);
        let started = Instant::now();
        for i in 0..READS {
            let a = addrs[i % OBJECTS];
            let t = Instant::now();
            remote.memory().read(a.region, a.offset, &mut buf).unwrap();
            ns.push(t.elapsed().as_nanos());
        }
        let per_s = READS as f64 / started.elapsed().as_secs_f64();
        ns.sort_unstable();
        println!(
            "tcp read {size:>5} B: p50 {:.2} µs, p99 {:.2} µs, {:.0} reads/s",
            percentile(&ns, 0.5),
            percentile(&ns, 0.99),
            per_s
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
