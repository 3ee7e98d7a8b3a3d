//! The native adoption benchmark from the command line:
//! `cargo run --release -p remora-core --example adopt_bench -- [objects...] [--txs N] [--rounds R]`
//! (default 10^4, 10^6 and 10^7 objects, 3 rounds of 10^6 transactions each; the stores go in
//! /dev/shm when there is one). With `--lookups`, also times what the merge's version check
//! costs per object: a validated `get` against the index-only `newest_version`.

use remora_core::adopt::{bench_adopt, bench_id};
use remora_core::{Store, StoreConfig};
use std::path::Path;
use std::time::Instant;

/// ns per lookup of random existing ids: `get` (reads and validates the slot) and
/// `newest_version` (the index alone).
fn lookups(dir: &Path, objects: usize) -> (f64, f64) {
    let mut cfg = StoreConfig::new(dir, "lookups");
    cfg.region_bytes = 64 << 20;
    let store = Store::create(&cfg).expect("store");
    let ids: Vec<Vec<u8>> = (0..objects as u64)
        .map(|i| {
            let mut id = Vec::new();
            bench_id(i, &mut id);
            id
        })
        .collect();
    for chunk in ids.chunks(1 << 16) {
        let puts: Vec<_> = chunk
            .iter()
            .map(|id| (&id[..], Some(&b"0123456789abcdef0123"[..]), 1))
            .collect();
        store.set_many(&puts).expect("fill");
    }
    let mut rng = remora_core::stress::XorShift::new(7);
    let picks: Vec<usize> = (0..1_000_000)
        .map(|_| rng.below(objects as u64) as usize)
        .collect();
    let t = Instant::now();
    for &i in &picks {
        std::hint::black_box(store.get(&ids[i]).expect("get"));
    }
    let get = t.elapsed().as_nanos() as f64 / picks.len() as f64;
    let t = Instant::now();
    for &i in &picks {
        std::hint::black_box(store.newest_version(&ids[i]));
    }
    let index = t.elapsed().as_nanos() as f64 / picks.len() as f64;
    (get, index)
}

fn main() {
    let mut objects = Vec::new();
    let (mut txs, mut rounds) = (1_000_000, 3);
    let mut time_lookups = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--txs" => txs = args.next().and_then(|v| v.parse().ok()).unwrap_or(txs),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds),
            "--lookups" => time_lookups = true,
            n => match n.parse::<f64>() {
                Ok(n) => objects.push(n as usize),
                Err(_) => {
                    eprintln!("usage: adopt_bench [objects...] [--txs N] [--rounds R] [--lookups]");
                    std::process::exit(2);
                }
            },
        }
    }
    if objects.is_empty() {
        objects = vec![10_000, 1_000_000, 10_000_000];
    }
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("remora-adopt-bench-{}", std::process::id()));
    for n in objects {
        if time_lookups {
            let (get, index) = lookups(&dir, n);
            println!("objects {n:>10}  get {get:.0} ns  newest_version {index:.0} ns");
        }
        match bench_adopt(&dir, n, txs, rounds, 64 << 20, 0x5eed ^ n as u64) {
            Ok(r) => println!(
                "objects {:>10}  fill {:>6.2}s  {} × {} txs  best {:>9.0} tx/s  median {:>9.0} tx/s  \
                 ({:.0} ns/tx)",
                r.objects,
                r.fill_secs,
                r.rounds.len(),
                r.txs,
                r.best_tps,
                r.median_tps,
                1e9 / r.best_tps
            ),
            Err(e) => {
                eprintln!("objects {n}: {e}");
                std::process::exit(1);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
