//! The two halves of the transport checks when owner and reader are on different machines
//! (the soft-RoCE rig runs one in each VM):
//!
//! * `serve --listen IP:PORT --secret S`: owns a store with an object of every size class,
//!   the bench objects and the stress objects, and serves it over verbs on PORT (tcp on
//!   PORT+2); a second store ("doomed", verbs on PORT+1) exists to be killed mid-read. Both
//!   take commands by RDMA WRITE into their remote-writable region: see `CMD_*`.
//! * `check --peer IP:PORT --secret S [--reads N] [--seed N]`: the conformance checks across
//!   the link; prints `RIG-RESULT {json}` and exits non-zero on any failure.
//! * `bench --peer IP:PORT --secret S [--iters N]`: read latency and throughput, verbs and tcp.

use remora_core::slot::{class_capacity, Lookup, SIZE_CLASSES};
use remora_core::store::Put;
use remora_core::stress::{populate, run_reader, run_writer};
use remora_core::{
    Error, RemoteMemory, RemoteStore, Store, StoreConfig, TcpServer, TcpTransport, Transport,
    VerbsServer, VerbsTransport,
};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STRESS_OBJECTS: u32 = 48;
const BENCH_SIZES: [usize; 3] = [64, 1024, 4096];
const BENCH_OBJECTS: usize = 16;
/// Offset of the command word in each store's remote-writable region (after its header).
const CMD_OFFSET: u64 = 4096;
/// Main store: run the stress writer while the word is `CMD_STRESS`.
const CMD_STRESS: u64 = 1;
/// Doomed store: stop serving when the word is `CMD_DIE`.
const CMD_DIE: u64 = 0xdead;
/// Upper bound of every wait here.
const BOUND: Duration = Duration::from_secs(60);

fn pattern(class: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(class as u8 * 7 + 1))
        .collect()
}

fn class_id(c: usize) -> Vec<u8> {
    format!("class/{c:02}").into_bytes()
}

fn bench_id(size: usize, i: usize) -> Vec<u8> {
    format!("bench/{size}/{i}").into_bytes()
}

struct Args(Vec<String>);

impl Args {
    fn get(&self, flag: &str) -> Option<&str> {
        let at = self.0.iter().position(|a| a == flag)?;
        self.0.get(at + 1).map(String::as_str)
    }
    fn need(&self, flag: &str) -> Result<&str, String> {
        self.get(flag).ok_or_else(|| format!("missing {flag}"))
    }
    fn num(&self, flag: &str, default: u64) -> Result<u64, String> {
        self.get(flag).map_or(Ok(default), |v| {
            v.parse().map_err(|e| format!("{flag}: {e}"))
        })
    }
}

fn main() -> ExitCode {
    let args = Args(std::env::args().skip(1).collect());
    let r = match args.0.first().map(String::as_str) {
        Some("serve") => serve(&args),
        Some("check") => check(&args),
        Some("bench") => bench(&args),
        _ => Err("usage: verbs_rig serve|check|bench ...".to_string()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("verbs_rig: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn with_port(addr: SocketAddr, plus: u16) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + plus)
}

// ---------------------------------------------------------------------------------------------

fn serve(args: &Args) -> Result<(), String> {
    let listen: SocketAddr = args.need("--listen")?.parse().map_err(s)?;
    let secret = args.need("--secret")?.as_bytes().to_vec();
    let dir = std::env::temp_dir().join(format!("remora-rig-{}", std::process::id()));
    let mut cfg = StoreConfig::new(&dir, "owner");
    cfg.region_bytes = 4 << 20;
    let store = Arc::new(Store::create(&cfg).map_err(s)?);
    let shared = store.add_shared_region(8192).map_err(s)?;
    let values: Vec<(Vec<u8>, Vec<u8>)> = (0..SIZE_CLASSES)
        .map(|c| (class_id(c), pattern(c, class_capacity(c))))
        .chain(BENCH_SIZES.iter().flat_map(|&size| {
            (0..BENCH_OBJECTS).map(move |i| (bench_id(size, i), pattern(i, size)))
        }))
        .collect();
    let puts: Vec<Put> = values
        .iter()
        .map(|(id, v)| (id.as_slice(), Some(v.as_slice()), 1))
        .collect();
    store.set_many(&puts).map_err(s)?;
    let start = populate(&store, STRESS_OBJECTS).map_err(s)?;

    let doomed_cfg = StoreConfig::new(&dir, "doomed");
    let doomed = Arc::new(Store::create(&doomed_cfg).map_err(s)?);
    let doomed_cmd = doomed.add_shared_region(4096).map_err(s)?;
    doomed.set(b"big", &pattern(1, 200_000), 1).map_err(s)?;

    let verbs = VerbsServer::start(&store, &secret, listen).map_err(s)?;
    let mut doomed_server =
        Some(VerbsServer::start(&doomed, &secret, with_port(listen, 1)).map_err(s)?);
    let _tcp = TcpServer::start(&store, &secret, with_port(listen, 2)).map_err(s)?;
    println!(
        "RIG serve ready on {} (device {}), doomed on {}, tcp on {}",
        verbs.local_addr(),
        verbs.device(),
        with_port(listen, 1),
        with_port(listen, 2)
    );

    let word = |st: &Store, region: u32| {
        let mut w = [0u8; 8];
        st.read_region(region, CMD_OFFSET, &mut w)
            .map(|()| u64::from_le_bytes(w))
    };
    let seed = 0x5eed_u64 ^ u64::from(std::process::id());
    let mut ts = start;
    // Commands arrive as RDMA WRITEs, which nothing here is told about: poll for them.
    loop {
        if doomed_server.is_some() && word(&doomed, doomed_cmd).map_err(s)? == CMD_DIE {
            doomed_server = None;
            println!("RIG serve: doomed store stopped serving, as asked");
        }
        if word(&store, shared).map_err(s)? == CMD_STRESS {
            let stop = AtomicBool::new(false);
            let (writes, last) = std::thread::scope(|sc| {
                let w = sc.spawn(|| run_writer(&store, STRESS_OBJECTS, seed, ts, &stop, BOUND));
                while word(&store, shared).is_ok_and(|w| w == CMD_STRESS) && !w.is_finished() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                stop.store(true, Ordering::Relaxed);
                w.join().map_err(|_| "stress writer panicked".to_string())
            })?
            .map_err(s)?;
            ts = last;
            println!("RIG serve: stress writer made {writes} writes (seed {seed})");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Attaches, waiting (bounded) for a server that is still starting.
fn attach_when_up<T: Transport>(t: &T, addr: &str) -> Result<T::Peer, String> {
    let started = Instant::now();
    loop {
        match t.attach(addr) {
            Err(Error::PeerGone { .. }) if started.elapsed() < BOUND => {
                std::thread::sleep(Duration::from_millis(200))
            }
            r => return r.map_err(s),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Finds a peer's remote-writable region.
fn writable_region<M: RemoteMemory>(mem: &M) -> Result<u32, String> {
    (0..64)
        .find(|&r| mem.region_info(r).is_ok_and(|i| i.writable))
        .ok_or_else(|| "no remote-writable region".to_string())
}

fn check(args: &Args) -> Result<(), String> {
    let peer: SocketAddr = args.need("--peer")?.parse().map_err(s)?;
    let secret = args.need("--secret")?.as_bytes().to_vec();
    let reads = args.num("--reads", 3000)?;
    let seed = args.num("--seed", {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ u64::from(std::process::id())
    })?;
    println!("RIG check: stress seed {seed} (--seed to replay)");
    let verbs = VerbsTransport::new(&secret).map_err(s)?;
    let addr = peer.to_string();
    let mut out = Vec::new();
    let first = attach_when_up(&verbs, &addr)?;

    // A peer without the cluster secret never gets a queue pair or a key.
    let mut wrong = secret.clone();
    wrong[0] ^= 0x55;
    match VerbsTransport::new(&wrong).map_err(s)?.attach(&addr) {
        Err(e @ Error::Handshake { .. }) => println!("RIG check: refused as expected: {e}"),
        Err(e) => return Err(format!("wrong secret: expected a handshake error, got {e}")),
        Ok(_) => return Err("a peer without the secret got in".into()),
    }
    out.push("\"unauthenticated_rejected\":true".to_string());

    let remote = RemoteStore::new(first);
    let ids: Vec<Vec<u8>> = (0..SIZE_CLASSES).map(class_id).collect();
    let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    let started = Instant::now();
    for (c, got) in remote.get_many(&refs).map_err(s)?.into_iter().enumerate() {
        match got {
            Lookup::Value { ts: 1, value } if value == pattern(c, class_capacity(c)) => {}
            other => {
                return Err(format!(
                    "class {c}: wrong value ({})",
                    match other {
                        Lookup::Value { value, .. } => format!("{} bytes", value.len()),
                        o => format!("{o:?}"),
                    }
                ))
            }
        }
    }
    println!(
        "RIG check: {SIZE_CLASSES} size classes read and verified in {:?}",
        started.elapsed()
    );
    out.push(format!("\"size_classes_verified\":{SIZE_CLASSES}"));

    let mem = remote.memory();
    let shared = writable_region(mem)?;
    let slot_region = remote.memory().lookup(&[b"class/00"]).map_err(s)?[0]
        .ok_or("class/00 not found")?
        .region;
    match mem.write(slot_region, 4096, &[1; 8]) {
        Err(e @ Error::NotWritable { .. }) => println!("RIG check: refused as expected: {e}"),
        other => return Err(format!("write into a slot region: {other:?}")),
    }
    let size = mem.region_info(shared).map_err(s)?.bytes as u64;
    match mem.read(shared, size - 4, &mut [0; 8]) {
        Err(e @ Error::OutOfBounds { .. }) => println!("RIG check: refused as expected: {e}"),
        other => return Err(format!("read past a region: {other:?}")),
    }
    let data = pattern(5, 3000);
    mem.write(shared, CMD_OFFSET + 64, &data).map_err(s)?;
    let mut back = vec![0; data.len()];
    mem.read(shared, CMD_OFFSET + 64, &mut back).map_err(s)?;
    if back != data {
        return Err("RDMA WRITE then READ gave different bytes".into());
    }
    out.push("\"bounds_and_writability\":true".to_string());

    // Torn-read stress: the owner rewrites the stress objects while we read them.
    mem.write(shared, CMD_OFFSET, &1u64.to_le_bytes())
        .map_err(s)?;
    let started = Instant::now();
    let report = run_reader(&remote, STRESS_OBJECTS, seed, reads);
    mem.write(shared, CMD_OFFSET, &0u64.to_le_bytes())
        .map_err(s)?;
    let report = report.map_err(s)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "RIG check: stress {report:?} in {secs:.1} s\n  {:?}",
        remote.stats()
    );
    if !report.violations.is_empty() {
        return Err(format!("accepted bad reads: {:#?}", report.violations));
    }
    if report.verified <= reads / 2 {
        return Err(format!("too few values verified: {report:?}"));
    }
    let st = remote.stats();
    out.push(format!(
        "\"stress_reads\":{},\"stress_verified\":{},\"stress_violations\":0,\"stress_rejected\":{},\"stress_seed\":{seed}",
        report.reads,
        report.verified,
        st.rejected_busy + st.rejected_checksum + st.rejected_skew + st.rejected_malformed
    ));

    // Peer death mid-read: the doomed store stops serving while we loop reading it.
    let doomed_addr = with_port(peer, 1).to_string();
    let doomed = RemoteStore::new(verbs.attach(&doomed_addr).map_err(s)?);
    let cmd = writable_region(doomed.memory())?;
    let started = Instant::now();
    let mut ok_reads = 0u64;
    let err = loop {
        if started.elapsed() > BOUND {
            return Err("reads kept succeeding after the peer was told to die".into());
        }
        match doomed.snapshot(b"big") {
            Ok(Some(_)) => ok_reads += 1,
            Ok(None) => return Err("doomed store lost its object".into()),
            Err(e) => break e,
        }
        if ok_reads == 1 {
            doomed
                .memory()
                .write(cmd, CMD_OFFSET, &CMD_DIE.to_le_bytes())
                .map_err(s)?;
        }
    };
    println!(
        "RIG check: after {ok_reads} reads and {:?}, the dead peer gave: {err}",
        started.elapsed()
    );
    if !matches!(err, Error::PeerGone { .. }) {
        return Err(format!("unclear error from a dead peer: {err:?}"));
    }
    match doomed.memory().read(0, 0, &mut [0; 64]) {
        Err(Error::PeerGone { .. }) => {}
        other => return Err(format!("read from a dead peer: {other:?}")),
    }
    out.push("\"peer_death_clear_error\":true".to_string());
    println!("RIG-RESULT check {{{}}}", out.join(","));
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `iters` reads of `size` bytes, one at a time: p50, p99 (µs), reads/s, MB/s.
fn time_reads(
    iters: usize,
    mut read: impl FnMut(usize) -> Result<(), String>,
    size: usize,
) -> Result<(f64, f64, f64, f64), String> {
    let mut lat = Vec::with_capacity(iters);
    let started = Instant::now();
    for i in 0..iters {
        let t = Instant::now();
        read(i)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let rate = iters as f64 / total;
    Ok((
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        rate,
        rate * size as f64 / 1e6,
    ))
}

fn bench_one<M: RemoteMemory>(
    label: &str,
    remote: &RemoteStore<M>,
    iters: usize,
    out: &mut Vec<String>,
) -> Result<(), String> {
    for size in BENCH_SIZES {
        let ids: Vec<Vec<u8>> = (0..BENCH_OBJECTS).map(|i| bench_id(size, i)).collect();
        let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
        let addrs = remote.memory().lookup(&refs).map_err(s)?;
        let addrs: Vec<_> = addrs.into_iter().flatten().collect();
        if addrs.len() != BENCH_OBJECTS {
            return Err(format!("bench objects of {size} B missing"));
        }
        let mut buf = vec![0u8; size];
        let mem = remote.memory();
        // Raw reads of `size` bytes: what perftest's ib_read_lat measures.
        let (p50, p99, rate, mbs) = time_reads(
            iters,
            |i| {
                let a = addrs[i % addrs.len()];
                mem.read(a.region, a.offset, &mut buf).map_err(s)
            },
            size,
        )?;
        let name = if size >= 1024 {
            format!("{}KB", size / 1024)
        } else {
            format!("{size}B")
        };
        println!(
            "RIG bench {label} read {name}: p50 {p50:.1} µs, p99 {p99:.1} µs, {rate:.0}/s, {mbs:.2} MB/s"
        );
        out.push(format!(
            "\"{label}_read_{name}_p50_us\":{p50:.2},\"{label}_read_{name}_p99_us\":{p99:.2},\"{label}_read_{name}_ops_per_s\":{rate:.0},\"{label}_read_{name}_mb_per_s\":{mbs:.3}"
        ));
        // Validated object reads (the whole slot, checksummed): what Remora's readers do.
        let (p50, p99, rate, _) = time_reads(
            iters / 2,
            |i| match remote.snapshot(&ids[i % ids.len()]).map_err(s)? {
                Some(_) => Ok(()),
                None => Err("bench object vanished".into()),
            },
            size,
        )?;
        println!("RIG bench {label} get {name}: p50 {p50:.1} µs, p99 {p99:.1} µs, {rate:.0}/s");
        out.push(format!(
            "\"{label}_get_{name}_p50_us\":{p50:.2},\"{label}_get_{name}_p99_us\":{p99:.2},\"{label}_get_{name}_ops_per_s\":{rate:.0}"
        ));
    }
    Ok(())
}

fn bench(args: &Args) -> Result<(), String> {
    let peer: SocketAddr = args.need("--peer")?.parse().map_err(s)?;
    let secret = args.need("--secret")?.as_bytes().to_vec();
    let iters = args.num("--iters", 1000)?.max(2) as usize;
    let mut out = Vec::new();
    let verbs = RemoteStore::new(attach_when_up(
        &VerbsTransport::new(&secret).map_err(s)?,
        &peer.to_string(),
    )?);
    bench_one("verbs", &verbs, iters, &mut out)?;
    let tcp = RemoteStore::new(
        TcpTransport::new(&secret)
            .map_err(s)?
            .attach(&with_port(peer, 2).to_string())
            .map_err(s)?,
    );
    bench_one("tcp_vm", &tcp, iters, &mut out)?;
    println!("RIG-RESULT bench {{{}}}", out.join(","));
    Ok(())
}
