//! Transport conformance: the same checks against every transport (`shm`, `tcp`, `verbs`), so a new
//! transport is held to what the others already promise. Each check is instantiated once per
//! transport by `suite!` below; a transport plugs in through the `Kind` trait.
//!
//! `verbs` needs an RDMA device (rdma-core and, without hardware, soft-RoCE): without one its
//! checks print why and pass, unless `REMORA_REQUIRE_RDMA=1` (set by the soft-RoCE rig) makes
//! the absence a failure.

mod common;

use remora_core::control::{handshake_client, write_frame, SOCKET_NAME};
use remora_core::slot::{class_capacity, slot_bytes, Lookup, SIZE_CLASSES};
use remora_core::store::Put;
use remora_core::stress::{populate, run_reader, run_writer};
use remora_core::{
    ControlServer, Error, RemoteMemory, RemoteStore, ShmTransport, Store, StoreConfig, TcpServer,
    TcpTransport, Transport, VerbsServer, VerbsTransport,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const SECRET: &[u8] = b"conformance-cluster-secret-01234";
const WRONG_SECRET: &[u8] = b"not-the-cluster-secret-987654321";
/// Upper bound on any wait in these tests: a hang fails the test instead of blocking CI.
const BOUND: Duration = Duration::from_secs(60);

/// A byte stream to a transport's server, for feeding it bad input.
trait Raw: Read + Write {}
impl<S: Read + Write> Raw for S {}

enum Server {
    Shm(ControlServer),
    Tcp(TcpServer),
    Verbs(VerbsServer),
}

/// How a transport is set up for the checks.
trait Kind {
    type T: Transport;
    /// Whether the peer must be alive for a byte read to succeed (`shm` keeps its mapping of
    /// a dead owner's regions by design; a network transport cannot).
    const READS_NEED_PEER: bool;
    /// Reads per stress reader: software RDMA under emulation manages a few thousand a second.
    const STRESS_READS: u64 = 100_000;
    /// Why this transport cannot run here, if it cannot.
    fn unavailable() -> Option<String> {
        None
    }
    /// Starts serving `store`; returns the server and the name `attach` takes.
    fn serve(store: &Arc<Store>) -> (Server, String);
    fn transport(dir: &Path, secret: &[u8]) -> Self::T;
    /// A raw connection to the server that authenticates peers.
    fn raw(fx: &Fixture) -> Box<dyn Raw>;
}

struct Shm;
struct Tcp;
struct Verbs;

impl Kind for Shm {
    type T = ShmTransport;
    const READS_NEED_PEER: bool = false;
    fn serve(store: &Arc<Store>) -> (Server, String) {
        let control = ControlServer::start(store, SECRET).unwrap();
        (Server::Shm(control), store.name().to_string())
    }
    fn transport(dir: &Path, secret: &[u8]) -> ShmTransport {
        ShmTransport::new(dir, secret).unwrap()
    }
    fn raw(fx: &Fixture) -> Box<dyn Raw> {
        let s = UnixStream::connect(fx.store.dir().join(SOCKET_NAME)).unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        s.set_write_timeout(Some(BOUND)).unwrap();
        Box::new(s)
    }
}

impl Kind for Tcp {
    type T = TcpTransport;
    const READS_NEED_PEER: bool = true;
    fn serve(store: &Arc<Store>) -> (Server, String) {
        let server = TcpServer::start(store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().to_string();
        (Server::Tcp(server), addr)
    }
    fn transport(_: &Path, secret: &[u8]) -> TcpTransport {
        TcpTransport::new(secret).unwrap()
    }
    fn raw(fx: &Fixture) -> Box<dyn Raw> {
        let s = TcpStream::connect(&fx.peer).unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        s.set_write_timeout(Some(BOUND)).unwrap();
        Box::new(s)
    }
}

impl Kind for Verbs {
    type T = VerbsTransport;
    const READS_NEED_PEER: bool = true;
    const STRESS_READS: u64 = 3_000;
    fn unavailable() -> Option<String> {
        remora_core::transport::verbs::probe()
            .err()
            .map(|e| e.to_string())
    }
    fn serve(store: &Arc<Store>) -> (Server, String) {
        let server = VerbsServer::start(store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().to_string();
        (Server::Verbs(server), addr)
    }
    fn transport(_: &Path, secret: &[u8]) -> VerbsTransport {
        VerbsTransport::new(secret).unwrap()
    }
    fn raw(fx: &Fixture) -> Box<dyn Raw> {
        Tcp::raw(fx)
    }
}

/// Whether to skip `K`'s checks: only when it cannot run here and nobody requires it.
fn skip<K: Kind>() -> bool {
    let Some(why) = K::unavailable() else {
        return false;
    };
    if std::env::var("REMORA_REQUIRE_RDMA").is_ok_and(|v| v == "1") {
        panic!("REMORA_REQUIRE_RDMA=1 but: {why}");
    }
    println!("skipped: {why}");
    true
}

/// Removes the cluster directory last (fields drop in declaration order).
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Fixture {
    server: Option<Server>,
    store: Arc<Store>,
    peer: String,
    dir: PathBuf,
    _cleanup: DirGuard,
}

impl Fixture {
    fn new<K: Kind>(test: &str, region_bytes: usize) -> Fixture {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "remora-conformance-{}-{test}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = StoreConfig::new(&dir, "owner");
        cfg.region_bytes = region_bytes;
        let store = Arc::new(Store::create(&cfg).unwrap());
        let (server, peer) = K::serve(&store);
        Fixture {
            server: Some(server),
            store,
            peer,
            dir: dir.clone(),
            _cleanup: DirGuard(dir),
        }
    }

    fn attach<K: Kind>(&self) -> <K::T as Transport>::Peer {
        K::transport(&self.dir, SECRET).attach(&self.peer).unwrap()
    }

    /// The owner's server dies (its store, and so its memory, stays with the test).
    fn kill(&mut self) {
        match self.server.take() {
            Some(Server::Shm(s)) => drop(s),
            Some(Server::Tcp(s)) => drop(s),
            Some(Server::Verbs(s)) => drop(s),
            None => {}
        }
    }
}

fn pattern(class: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(class as u8 * 7 + 1))
        .collect()
}

/// Reads of every size class, through `RemoteStore`, return the exact bytes written; a raw
/// copy of the largest slot (larger than one frame) matches the owner's copy byte for byte.
fn every_size_class<K: Kind>() {
    let fx = Fixture::new::<K>("classes", 4 << 20);
    let ids: Vec<Vec<u8>> = (0..SIZE_CLASSES)
        .map(|c| format!("class/{c:02}").into_bytes())
        .collect();
    let values: Vec<Vec<u8>> = (0..SIZE_CLASSES)
        .map(|c| pattern(c, class_capacity(c)))
        .collect();
    let puts: Vec<Put> = ids
        .iter()
        .zip(&values)
        .map(|(id, v)| (id.as_slice(), Some(v.as_slice()), 1))
        .collect();
    fx.store.set_many(&puts).unwrap();

    let remote = RemoteStore::new(fx.attach::<K>());
    let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    let got = remote.get_many(&refs).unwrap();
    for (c, (found, want)) in got.into_iter().zip(&values).enumerate() {
        match found {
            Lookup::Value { ts: 1, value } => assert!(value == *want, "class {c}: bytes differ"),
            other => panic!("class {c}: expected the value at ts 1, got {other:?}"),
        }
    }

    let last = SIZE_CLASSES - 1;
    let addr = remote.memory().lookup(&[&ids[last]]).unwrap()[0].expect("resolvable");
    let mut theirs = vec![0u8; slot_bytes(last)];
    remote
        .memory()
        .read(addr.region, addr.offset, &mut theirs)
        .unwrap();
    let mut ours = vec![0u8; slot_bytes(last)];
    fx.store
        .read_region(addr.region, addr.offset, &mut ours)
        .unwrap();
    assert!(theirs == ours, "raw copy of the largest slot differs");
}

/// Out-of-bounds and unknown-region accesses fail, slot regions refuse writes, raw shared
/// regions take them; the peer keeps working after each refusal.
fn bounds_and_writability<K: Kind>() {
    let fx = Fixture::new::<K>("bounds", 256 * 1024);
    fx.store.set(b"obj", b"value", 1).unwrap();
    let shared = fx.store.add_shared_region(10_000).unwrap();
    let mem = fx.attach::<K>();
    let addr = mem.lookup(&[b"obj"]).unwrap()[0].expect("resolvable");
    let info = mem.region_info(addr.region).unwrap();
    assert_eq!(info.class, Some(0));
    assert!(!info.writable);
    assert!(mem.region_info(shared).unwrap().writable);

    let mut buf = [0u8; 16];
    let refused = [
        mem.read(4242, 0, &mut buf).unwrap_err(),
        mem.region_info(4242).unwrap_err(),
        mem.read(addr.region, info.bytes as u64 - 8, &mut buf)
            .unwrap_err(),
        mem.read(addr.region, u64::MAX - 4, &mut buf).unwrap_err(),
        mem.write(addr.region, addr.offset, &[1; 8]).unwrap_err(),
        mem.write(shared, u64::MAX - 2, &[1; 8]).unwrap_err(),
    ];
    for e in &refused {
        println!("refused as expected: {e}");
    }
    assert!(refused[4].to_string().contains("not remote-writable"));

    let data = pattern(3, 5000);
    mem.write(shared, 4096 + 3, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    fx.store.read_region(shared, 4096 + 3, &mut back).unwrap();
    assert!(back == data, "owner sees what the peer wrote");
    back.fill(0);
    mem.read(shared, 4096 + 3, &mut back).unwrap();
    assert!(back == data, "peer reads back what it wrote");
    let remote = RemoteStore::new(mem);
    assert_eq!(
        remote.get_many(&[b"obj"]).unwrap(),
        vec![Lookup::Value {
            ts: 1,
            value: b"value".to_vec()
        }]
    );
}

const OBJECTS: u32 = 48;
const READERS: u64 = 2;

/// Concurrent writer and readers (threads of this process, each reader with its own peer):
/// no accepted value is torn, no reader goes back in time.
fn no_torn_reads<K: Kind>() {
    let seed = common::seed("REMORA_STRESS_SEED", "stress");
    let fx = Fixture::new::<K>("stress", 256 * 1024);
    let start = populate(&fx.store, OBJECTS).unwrap();
    let stop = AtomicBool::new(false);
    let (writes, reports) = std::thread::scope(|s| {
        let writer = s.spawn(|| run_writer(&fx.store, OBJECTS, seed, start, &stop, BOUND));
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let remote = RemoteStore::new(fx.attach::<K>());
                s.spawn(move || {
                    let report = run_reader(&remote, OBJECTS, seed ^ (r + 1), K::STRESS_READS);
                    (report, remote.stats())
                })
            })
            .collect();
        let reports: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        (writer.join().unwrap().unwrap().0, reports)
    });
    println!("writer: {writes} writes");
    for (report, stats) in reports {
        let report = report.unwrap();
        println!("reader: {report:?}\n  {stats:?}");
        assert!(
            report.violations.is_empty(),
            "accepted bad reads: {:#?}",
            report.violations
        );
        assert_eq!(report.reads, K::STRESS_READS);
        assert!(
            report.verified > K::STRESS_READS / 2,
            "too few values verified: {report:?}"
        );
    }
    assert!(writes > 0, "the writer must have raced the readers");
}

/// The owner's server dies while a reader loops: the reader gets a clear error (never a
/// hang, never a success made of partial bytes).
fn peer_death_mid_read<K: Kind>() {
    let mut fx = Fixture::new::<K>("death", 4 << 20);
    let big = pattern(1, 200_000);
    fx.store.set(b"big", &big, 1).unwrap();
    let remote = RemoteStore::new(fx.attach::<K>());
    let (ready, started) = mpsc::channel();
    let err = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            for i in 0..1_000_000u64 {
                let step = remote
                    .snapshot(b"big")
                    .and_then(|_| remote.memory().lookup(&[b"big"]));
                if let Err(e) = step {
                    return Some(e);
                }
                if i == 0 {
                    let _ = ready.send(());
                }
            }
            None
        });
        started.recv_timeout(BOUND).expect("the reader started");
        fx.kill();
        reader.join().unwrap()
    });
    let err = err.expect("reads must fail once the peer is gone");
    println!("after the peer died: {err}");
    assert!(
        matches!(err, Error::PeerGone { .. } | Error::Io { .. }),
        "unclear error: {err:?}"
    );
    let mut buf = vec![0u8; 4096];
    let read = remote.memory().read(0, 0, &mut buf);
    if K::READS_NEED_PEER {
        let e = read.expect_err("a read from a dead peer must fail");
        assert!(matches!(e, Error::PeerGone { .. }), "unclear error: {e:?}");
    }
}

/// A peer without the cluster secret is refused with the handshake error; members still
/// get in.
fn wrong_secret_is_rejected<K: Kind>() {
    let fx = Fixture::new::<K>("secret", 256 * 1024);
    fx.store.set(b"obj", b"value", 1).unwrap();
    match K::transport(&fx.dir, WRONG_SECRET).attach(&fx.peer) {
        Err(e @ Error::Handshake { .. }) => println!("refused as expected: {e}"),
        Err(e) => panic!("expected a handshake error, got {e:?}"),
        Ok(_) => panic!("a peer without the secret got in"),
    }
    let remote = RemoteStore::new(fx.attach::<K>());
    assert!(matches!(
        &remote.get_many(&[b"obj"]).unwrap()[0],
        Lookup::Value { ts: 1, .. }
    ));
}

/// Reads until the server closes the connection; false if it kept it open until the timeout.
fn closed_by_server(s: &mut dyn Raw) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error reply, then the close
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                )
            }
        }
    }
}

/// Garbage before the handshake, a malformed frame after it, and an oversized frame each get
/// their connection closed; the server keeps serving a correct peer.
fn garbage_is_disconnected<K: Kind>() {
    let fx = Fixture::new::<K>("garbage", 256 * 1024);
    fx.store.set(b"obj", b"value", 1).unwrap();

    let mut raw = K::raw(&fx);
    let _ = raw.write_all(b"GET / HTTP/1.1\r\nHost: remora\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    assert!(closed_by_server(&mut *raw), "garbage handshake not closed");

    let mut raw = K::raw(&fx);
    handshake_client(&mut raw, SECRET, "test").unwrap();
    write_frame(&mut raw, &[0xff, 0xff, 0xff]).unwrap();
    assert!(closed_by_server(&mut *raw), "malformed frame not closed");

    let mut raw = K::raw(&fx);
    handshake_client(&mut raw, SECRET, "test").unwrap();
    raw.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(closed_by_server(&mut *raw), "oversized frame not closed");

    let remote = RemoteStore::new(fx.attach::<K>());
    assert!(matches!(
        &remote.get_many(&[b"obj"]).unwrap()[0],
        Lookup::Value { ts: 1, .. }
    ));
}

macro_rules! suite {
    ($module:ident, $kind:ty) => {
        mod $module {
            use super::*;
            #[test]
            fn every_size_class() {
                if super::skip::<$kind>() {
                    return;
                }
                super::every_size_class::<$kind>()
            }
            #[test]
            fn bounds_and_writability() {
                if super::skip::<$kind>() {
                    return;
                }
                super::bounds_and_writability::<$kind>()
            }
            #[test]
            fn no_torn_reads() {
                if super::skip::<$kind>() {
                    return;
                }
                super::no_torn_reads::<$kind>()
            }
            #[test]
            fn peer_death_mid_read() {
                if super::skip::<$kind>() {
                    return;
                }
                super::peer_death_mid_read::<$kind>()
            }
            #[test]
            fn wrong_secret_is_rejected() {
                if super::skip::<$kind>() {
                    return;
                }
                super::wrong_secret_is_rejected::<$kind>()
            }
            #[test]
            fn garbage_is_disconnected() {
                if super::skip::<$kind>() {
                    return;
                }
                super::garbage_is_disconnected::<$kind>()
            }
        }
    };
}

suite!(shm, Shm);
suite!(tcp, Tcp);
suite!(verbs, Verbs);

/// Without rdma-core or a device, the verbs transport says so plainly (and the owner side
/// refuses to start the same way) instead of failing somewhere deeper.
#[test]
fn verbs_absent_is_a_clear_error() {
    let err = match VerbsTransport::new(SECRET) {
        Ok(t) => return println!("skipped: RDMA device {} is present", t.device()),
        Err(e) => e.to_string(),
    };
    println!("as expected: {err}");
    assert!(
        err.starts_with("verbs transport: no RDMA device available ("),
        "unclear error: {err}"
    );
    if libibverbs_absent() {
        assert_eq!(
            err,
            "verbs transport: no RDMA device available (libibverbs.so.1 not found)"
        );
    }
    let fx = Fixture::new::<Tcp>("noverbs", 256 * 1024);
    let server = VerbsServer::start(&fx.store, SECRET, "127.0.0.1:0".parse().unwrap());
    assert_eq!(server.err().map(|e| e.to_string()), Some(err));
}

/// Whether no libibverbs is installed in the usual places (then the message must say so).
fn libibverbs_absent() -> bool {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/lib/x86_64-linux-gnu",
    ]
    .iter()
    .all(|d| !Path::new(d).join("libibverbs.so.1").exists())
}

/// `tcp` only: a well-formed but bad request (a read over the per-request limit, a region
/// that does not exist) gets an error reply naming the problem, and the same connection then
/// serves a good request. Requests are pipelined: both are sent before either reply is read.
#[test]
fn tcp_bad_requests_get_error_replies() {
    let fx = Fixture::new::<Tcp>("badreq", 256 * 1024);
    fx.store.set(b"obj", b"value", 1).unwrap();
    let mut raw = Tcp::raw(&fx);
    handshake_client(&mut raw, SECRET, "test").unwrap();
    let read = |id: u64, region: u32, len: u32| {
        let mut req = id.to_le_bytes().to_vec();
        req.push(3); // OP_READ
        req.extend_from_slice(&region.to_le_bytes());
        req.extend_from_slice(&0u64.to_le_bytes());
        req.extend_from_slice(&len.to_le_bytes());
        req
    };
    write_frame(&mut raw, &read(7, 0, 1 << 21)).unwrap();
    write_frame(&mut raw, &read(8, 77, 8)).unwrap();
    write_frame(&mut raw, &read(9, 0, 64)).unwrap();
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(
            remora_core::control::read_frame(&mut raw, "test")
                .unwrap()
                .expect("a reply"),
        );
    }
    let text = |r: &[u8]| String::from_utf8_lossy(&r[9..]).into_owned();
    assert_eq!(&replies[0][..9], &[7, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert!(
        text(&replies[0]).contains("exceeds the limit"),
        "{}",
        text(&replies[0])
    );
    assert_eq!(&replies[1][..9], &[8, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert!(
        text(&replies[1]).contains("region 77"),
        "{}",
        text(&replies[1])
    );
    assert_eq!(&replies[2][..9], &[9, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(replies[2].len(), 9 + 64);
    assert_eq!(&replies[2][9..17], b"REMORARG", "the region header's magic");
}
