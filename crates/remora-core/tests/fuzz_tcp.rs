//! A seeded fuzzer against a live `TcpServer`: 4·10⁵ mutated frames per run (at least 10⁵), before and
//! after the handshake, of every op code, over thousands of connections from two threads.
//! Mutations of valid requests: bit flips, truncation, length fields set huge, zero or off by
//! some, unknown ops, out-of-range region / offset / length, trailing bytes, garbage. What
//! must hold:
//!
//! - every byte the server sends back parses as reply frames echoing request ids, in order;
//! - the server still serves an honest reader the right values afterwards;
//! - no write landed outside a remote-writable region: every read-only region is unchanged;
//! - it did all that on one thread (the process's thread count stays put).
//!
//! `REMORA_FUZZ_SEED=<n>` replays a run; `REMORA_FUZZ_FRAMES=<n>` changes the total.

mod common;

use remora_core::control::handshake_client;
use remora_core::region::RegionInfo;
use remora_core::{
    Lookup, RemoteMemory, RemoteStore, Store, StoreConfig, TcpServer, TcpTransport, Transport,
};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"fuzz-cluster-secret-0123456789ab";
const MAX_FRAME: usize = 1 << 20;
/// Every blocking call of the fuzzer: a server that stops answering fails the run.
const BOUND: Duration = Duration::from_secs(20);
/// The whole run stops sending by then, done or not.
const BUDGET: Duration = Duration::from_secs(45);
const OBJECTS: usize = 48;

const OP_LOOKUP: u8 = 1;
const OP_INFO: u8 = 2;
const OP_READ: u8 = 3;
const OP_WRITE: u8 = 4;

/// The tests of this file run one at a time: one counts the process's threads.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// splitmix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// `min` to `min + spread - 1` random bytes.
    fn some_bytes(&mut self, min: usize, spread: u64) -> Vec<u8> {
        let n = min + self.below(spread) as usize;
        self.bytes(n)
    }
}

fn id(i: usize) -> Vec<u8> {
    format!("fuzz/{i}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let len = [10usize, 100, 1000, 5000][i % 4] + i;
    (0..len).map(|b| (b * 13 + i * 7) as u8).collect()
}

/// What the fuzzer knows about the owner: regions and which ones peers may write.
struct Target {
    addr: SocketAddr,
    regions: Vec<RegionInfo>,
}

impl Target {
    fn region(&self, rng: &mut Rng) -> (u32, usize, bool) {
        let r = &self.regions[rng.below(self.regions.len() as u64) as usize];
        (r.id, r.bytes, r.writable)
    }
}

/// A valid request payload (request id first).
fn valid(rng: &mut Rng, t: &Target, req_id: u64) -> Vec<u8> {
    let mut r = req_id.to_le_bytes().to_vec();
    match rng.below(4) {
        0 => {
            r.push(OP_LOOKUP);
            let n = rng.below(6) as usize;
            r.extend_from_slice(&(n as u32).to_le_bytes());
            for _ in 0..n {
                let name = if rng.chance(80) {
                    id(rng.below(OBJECTS as u64 + 8) as usize)
                } else {
                    rng.some_bytes(1, 88)
                };
                r.extend_from_slice(&(name.len() as u16).to_le_bytes());
                r.extend_from_slice(&name);
            }
        }
        1 => {
            r.push(OP_INFO);
            r.extend_from_slice(&t.region(rng).0.to_le_bytes());
        }
        2 => {
            let (region, bytes, _) = t.region(rng);
            let len = if rng.chance(3) {
                rng.below(256 << 10)
            } else {
                rng.below(4096)
            } as usize;
            let len = len.min(bytes);
            let offset = rng.below((bytes - len + 1) as u64);
            r.push(OP_READ);
            r.extend_from_slice(&region.to_le_bytes());
            r.extend_from_slice(&offset.to_le_bytes());
            r.extend_from_slice(&(len as u32).to_le_bytes());
        }
        _ => {
            // Half of the writes aim at regions peers may not write.
            let (region, bytes, _) = t.region(rng);
            let len = (rng.below(512) as usize).min(bytes);
            let offset = rng.below((bytes - len + 1) as u64);
            r.push(OP_WRITE);
            r.extend_from_slice(&region.to_le_bytes());
            r.extend_from_slice(&offset.to_le_bytes());
            r.extend_from_slice(&rng.bytes(len));
        }
    }
    r
}

/// Overwrites `width` bytes at `at` (if they exist) with an extreme or random value.
fn clobber(rng: &mut Rng, r: &mut [u8], at: usize, width: usize) {
    if r.len() < at + width {
        return;
    }
    let v: u64 = match rng.below(5) {
        0 => 0,
        1 => u64::MAX,
        2 => 1 << (rng.below(64)),
        3 => u64::MAX - rng.below(16),
        _ => rng.next(),
    };
    r[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

/// A request damaged in its fields, keeping its shape: the server must answer it (an error
/// reply, mostly) and carry on with the connection.
fn mutate_fields(rng: &mut Rng, mut r: Vec<u8>) -> Vec<u8> {
    let op = r[8];
    if op == OP_LOOKUP {
        // Bits inside the ids (their lengths are structure): unknown or invalid ids.
        let mut at = 13;
        while at + 2 <= r.len() {
            let len = u16::from_le_bytes([r[at], r[at + 1]]) as usize;
            if len > 0 && rng.chance(50) {
                let bit = rng.below(len as u64 * 8) as usize;
                r[at + 2 + bit / 8] ^= 1 << (bit % 8);
            }
            at += 2 + len;
        }
        return r;
    }
    match rng.below(6) {
        0 => {}                                                              // some stay valid
        1 => clobber(rng, &mut r, 9, 4),                                     // region
        2 if op == OP_READ || op == OP_WRITE => clobber(rng, &mut r, 13, 8), // offset
        3 if op == OP_READ => clobber(rng, &mut r, 21, 4),                   // length
        4 if op == OP_READ || op == OP_INFO => {
            // Bits of the region, offset or length fields.
            let bit = 9 * 8 + rng.below((r.len() as u64 - 9) * 8) as usize;
            r[bit / 8] ^= 1 << (bit % 8);
        }
        _ if op == OP_WRITE => {
            // Aim a write anywhere, read-only regions included.
            r[9..13].copy_from_slice(&(rng.below(8) as u32).to_le_bytes());
        }
        _ => clobber(rng, &mut r, 9, 4),
    }
    r
}

/// A request damaged anyhow: what a hostile or broken member sends; many of these end the
/// connection.
fn mutate_any(rng: &mut Rng, mut r: Vec<u8>) -> Vec<u8> {
    match rng.below(6) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let bit = rng.below(r.len() as u64 * 8) as usize;
                r[bit / 8] ^= 1 << (bit % 8);
            }
        }
        1 => r.truncate(rng.below(r.len() as u64) as usize),
        2 => r[8] = rng.next() as u8, // any op code, known or not
        3 => {
            let extra = rng.some_bytes(1, 16);
            r.extend_from_slice(&extra);
        }
        4 => clobber(rng, &mut r, 13, 8), // a lookup's first id length, a read's offset
        _ => r = rng.some_bytes(0, 40),
    }
    r
}

/// The frame around `payload`; with `lie`, its length field is wrong.
fn frame(rng: &mut Rng, payload: &[u8], lie: bool) -> Vec<u8> {
    let len = if !lie {
        payload.len() as u32
    } else {
        match rng.below(5) {
            0 => u32::MAX,
            1 => MAX_FRAME as u32 + 1 + rng.below(1000) as u32,
            2 => 0,
            3 => (payload.len() as u32).saturating_sub(1 + rng.below(4) as u32),
            _ => payload.len() as u32 + 1 + rng.below(64) as u32,
        }
    };
    let mut f = len.to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

#[derive(Default)]
struct Counts {
    frames: AtomicU64,
    hellos: AtomicU64,
    replies: AtomicU64,
    error_replies: AtomicU64,
    connections: AtomicU64,
    closed_early: AtomicU64,
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("the server accepts connections");
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s
}

/// Reads everything until the server closes; `None` if it kept the connection past [`BOUND`].
fn drain(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return Some(all)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Garbage in place of the handshake: mutated hellos, and hellos followed by bad proofs.
fn before_handshake(rng: &mut Rng, t: &Target, counts: &Counts) {
    let mut s = connect(t.addr);
    let mut hello = b"RMRA".to_vec();
    hello.extend_from_slice(&1u16.to_le_bytes());
    hello.extend_from_slice(&rng.bytes(32));
    let bytes = match rng.below(4) {
        0 => rng.some_bytes(0, 100),
        1 => {
            let bit = rng.below(6 * 8) as usize;
            hello[bit / 8] ^= 1 << (bit % 8);
            hello
        }
        2 => hello[..rng.below(hello.len() as u64) as usize].to_vec(),
        _ => {
            hello.extend_from_slice(&rng.some_bytes(1, 64));
            hello
        }
    };
    let _ = s.write_all(&bytes);
    let _ = s.shutdown(Shutdown::Write);
    let reply = drain(&mut s).expect("the server hangs up on a broken handshake");
    // At most the server's challenge and a rejection.
    assert!(
        reply.len() <= 65,
        "{} bytes answered a broken hello",
        reply.len()
    );
    counts.hellos.fetch_add(1, Ordering::Relaxed);
    counts.connections.fetch_add(1, Ordering::Relaxed);
}

/// Checks the server's replies: whole frames, each echoing a request id sent, in order (when
/// `sent` is known: a lying length field moves the frame boundaries the server sees, and the
/// ids it reads are then bytes of other frames).
fn check_replies(bytes: &[u8], sent: Option<&[u64]>, counts: &Counts) -> usize {
    let mut at = 0;
    let mut replies = 0;
    let mut next = 0;
    while at < bytes.len() {
        assert!(at + 4 <= bytes.len(), "a reply's length is cut short");
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        assert!(
            (9..=MAX_FRAME).contains(&len),
            "a reply frame of {len} bytes"
        );
        assert!(at + 4 + len <= bytes.len(), "a reply frame is cut short");
        let payload = &bytes[at + 4..at + 4 + len];
        let req = u64::from_le_bytes(payload[..8].try_into().unwrap());
        if let Some(sent) = sent {
            let pos = sent[next..]
                .iter()
                .position(|&s| s == req)
                .unwrap_or_else(|| {
                    panic!("a reply to request {req}, which was not sent (or out of order)")
                });
            next += pos + 1;
        }
        match payload[8] {
            0 => {}
            1 => {
                counts.error_replies.fetch_add(1, Ordering::Relaxed);
            }
            s => panic!("reply status {s}"),
        }
        counts.replies.fetch_add(1, Ordering::Relaxed);
        replies += 1;
        at += 4 + len;
    }
    replies
}

/// One authenticated connection carrying a batch of requests damaged in their fields, and
/// most often a last one damaged anyhow; then a half-close, so the server answers what it
/// took and hangs up.
fn after_handshake(rng: &mut Rng, t: &Target, counts: &Counts) {
    let mut s = connect(t.addr);
    handshake_client(&mut s, SECRET, "fuzzer").expect("members get in");
    let n = 1 + rng.below(128) as usize;
    let mut sent = Vec::with_capacity(n + 1);
    let mut wire = Vec::new();
    for _ in 0..n {
        let req_id = rng.next();
        let request = valid(rng, t, req_id);
        let payload = mutate_fields(rng, request);
        sent.push(req_id);
        wire.extend_from_slice(&frame(rng, &payload, false));
    }
    let mut honest_framing = true;
    if rng.chance(70) {
        let req_id = rng.next();
        let request = valid(rng, t, req_id);
        let payload = mutate_any(rng, request);
        if payload.len() >= 8 {
            sent.push(u64::from_le_bytes(payload[..8].try_into().unwrap()));
        }
        honest_framing = !rng.chance(30);
        wire.extend_from_slice(&frame(rng, &payload, !honest_framing));
    }
    let written = s.write_all(&wire).is_ok();
    let _ = s.shutdown(Shutdown::Write);
    let replies = drain(&mut s).expect("the server answers and hangs up after a half-close");
    // Every request damaged only in its fields was answered: none of them ends a connection.
    let answered = check_replies(&replies, honest_framing.then_some(&sent[..]), counts);
    assert!(
        answered >= n,
        "{answered} replies to {n} well-framed requests"
    );
    if !written {
        counts.closed_early.fetch_add(1, Ordering::Relaxed);
    }
    counts
        .frames
        .fetch_add(sent.len().max(n) as u64, Ordering::Relaxed);
    counts.connections.fetch_add(1, Ordering::Relaxed);
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn fuzzed_frames_neither_break_the_server_nor_reach_read_only_memory() {
    let _one = serial();
    let seed = common::seed("REMORA_FUZZ_SEED", "fuzz");
    let total: u64 = std::env::var("REMORA_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400_000);

    let dir: PathBuf = std::env::temp_dir().join(format!("remora-fuzz-tcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = common::Cleanup(dir.clone());
    let (ids, values): (Vec<_>, Vec<_>) = (0..OBJECTS).map(|i| (id(i), value(i))).unzip();
    let store = common::filled_store(&dir, &ids, &values);
    let writable = store.add_shared_region(64 * 1024).unwrap();
    let server = TcpServer::start(&store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
    let honest = RemoteStore::new(
        TcpTransport::new(SECRET)
            .unwrap()
            .attach(&server.local_addr().to_string())
            .unwrap(),
    );
    let regions: Vec<RegionInfo> = (0..store.stats().regions as u32)
        .map(|r| honest.memory().region_info(r).unwrap())
        .collect();
    assert!(regions.iter().any(|r| r.writable) && regions.iter().any(|r| !r.writable));
    let snapshot = |r: &RegionInfo| {
        let mut b = vec![0u8; r.bytes];
        store.read_region(r.id, 0, &mut b).unwrap();
        b
    };
    let read_only: Vec<(u32, Vec<u8>)> = regions
        .iter()
        .filter(|r| !r.writable)
        .map(|r| (r.id, snapshot(r)))
        .collect();
    let target = Target {
        addr: server.local_addr(),
        regions,
    };
    let threads_before = threads();

    let counts = Counts::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for worker in 0..2u64 {
            let (target, counts) = (&target, &counts);
            s.spawn(move || {
                let mut rng = Rng(seed ^ worker.wrapping_mul(0x2545_f491_4f6c_dd1d));
                while counts.replies.load(Ordering::Relaxed) + counts.hellos.load(Ordering::Relaxed)
                    < total
                    && started.elapsed() < BUDGET
                {
                    if rng.chance(10) {
                        before_handshake(&mut rng, target, counts);
                    } else {
                        after_handshake(&mut rng, target, counts);
                    }
                }
            });
        }
    });
    let took = started.elapsed();
    let threads_after = threads();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let answered = c(&counts.replies) + c(&counts.hellos);
    println!(
        "{} mutated frames sent after the handshake, {} answered ({} with an error reply), + {} \
         mutated handshakes: {answered} frames processed in {took:?} over {} connections",
        c(&counts.frames),
        c(&counts.replies),
        c(&counts.error_replies),
        c(&counts.hellos),
        c(&counts.connections),
    );
    println!("server: {:?}", server.stats());
    println!("threads: {threads_before} before, {threads_after} after the fuzzing threads ended");
    assert!(
        answered >= total,
        "only {answered} frames within {BUDGET:?}"
    );
    assert!(c(&counts.error_replies) > 0);
    assert!(threads_after <= threads_before + 2);

    // The honest reader still gets every value right, over its old connection and a new one.
    let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    let fresh = RemoteStore::new(
        TcpTransport::new(SECRET)
            .unwrap()
            .attach(&server.local_addr().to_string())
            .unwrap(),
    );
    for reader in [&honest, &fresh] {
        let got = reader.get_many(&refs).unwrap();
        for (i, found) in got.into_iter().enumerate() {
            assert_eq!(
                found,
                Lookup::Value {
                    ts: 1,
                    value: values[i].clone()
                },
                "object {i} after fuzzing"
            );
        }
    }
    // Not a byte of a read-only region changed; the writable one did take writes.
    for (id, before) in &read_only {
        let info = target.regions.iter().find(|r| r.id == *id).unwrap();
        assert!(snapshot(info) == *before, "read-only region {id} changed");
    }
    let w = target.regions.iter().find(|r| r.id == writable).unwrap();
    assert!(
        snapshot(w).iter().any(|&b| b != 0),
        "no fuzzed write reached the writable region"
    );
}

/// Reads one whole frame (length and payload) off `s`, however it is cut.
fn read_raw_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_FRAME {
        return None;
    }
    let mut payload = vec![0u8; n];
    s.read_exact(&mut payload).ok()?;
    Some(payload)
}

/// A hostile owner: a proxy in front of a real `TcpServer` that mutates the replies its
/// readers get (bit flips, truncation, lying lengths, wrong ids and statuses, garbage,
/// hang-ups). A reader must get an error or an answer of the right shape, never a panic and
/// never a wait past its timeout.
#[test]
fn a_hostile_owner_neither_crashes_nor_hangs_a_reader() {
    let _one = serial();
    let seed = common::seed("REMORA_FUZZ_SEED", "fuzz");
    let dir = std::env::temp_dir().join(format!("remora-fuzz-owner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = common::Cleanup(dir.clone());
    let store = Arc::new(Store::create(&StoreConfig::new(&dir, "owner")).unwrap());
    for i in 0..OBJECTS {
        store.set(&id(i), &value(i), 1).unwrap();
    }
    let writable = store.add_shared_region(8192).unwrap();
    let server = TcpServer::start(&store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
    let upstream = server.local_addr();

    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mutated = Arc::new(AtomicU64::new(0));
    let proxy_thread = {
        let (stop, mutated) = (stop.clone(), mutated.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0x5151);
            for client in proxy.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut client) = client else { continue };
                let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
                if remora_core::control::handshake_server(&mut client, SECRET, "reader").is_err() {
                    continue;
                }
                let mut up = connect(upstream);
                handshake_client(&mut up, SECRET, "owner").unwrap();
                while let Some(req) = read_raw_frame(&mut client) {
                    let mut framed = (req.len() as u32).to_le_bytes().to_vec();
                    framed.extend_from_slice(&req);
                    up.write_all(&framed).unwrap();
                    let Some(mut reply) = read_raw_frame(&mut up) else {
                        break;
                    };
                    let mut lie = None;
                    match rng.below(12) {
                        0 => {
                            let bit = rng.below(reply.len() as u64 * 8) as usize;
                            reply[bit / 8] ^= 1 << (bit % 8);
                        }
                        1 => reply.truncate(rng.below(reply.len() as u64) as usize),
                        2 => reply[..8].copy_from_slice(&rng.next().to_le_bytes()),
                        3 => reply[8] = rng.next() as u8,
                        4 => {
                            let extra = rng.some_bytes(1, 32);
                            reply.extend_from_slice(&extra);
                        }
                        5 => reply = rng.some_bytes(0, 64),
                        // Longer than what follows: the reader waits, then times out.
                        6 if rng.chance(10) => lie = Some(reply.len() as u32 + 1),
                        7 => lie = Some(MAX_FRAME as u32 + 1 + rng.below(1 << 20) as u32),
                        8 => break, // hang up mid-request
                        _ => {}
                    }
                    let len = lie.unwrap_or(reply.len() as u32);
                    let mut out = len.to_le_bytes().to_vec();
                    out.extend_from_slice(&reply);
                    mutated.fetch_add(1, Ordering::Relaxed);
                    if client.write_all(&out).is_err() {
                        break;
                    }
                }
            }
        })
    };

    let timeout = Duration::from_millis(200);
    let transport = TcpTransport::new(SECRET).unwrap().with_timeout(timeout);
    let peer = loop {
        // The proxy may hang up on the first attempts: that is its job.
        if let Ok(p) = transport.attach(&proxy_addr.to_string()) {
            break p;
        }
    };
    let mut rng = Rng(seed);
    let (mut ok, mut failed) = (0u32, 0u32);
    let started = Instant::now();
    for _ in 0..1500 {
        let t = Instant::now();
        let outcome = match rng.below(4) {
            0 => {
                let mut buf = vec![0u8; rng.below(5000) as usize];
                peer.read(0, 4096, &mut buf)
            }
            1 => {
                let names: Vec<Vec<u8>> = (0..1 + rng.below(5)).map(|i| id(i as usize)).collect();
                let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
                peer.lookup(&refs)
                    .map(|found| assert_eq!(found.len(), refs.len()))
            }
            2 => peer.region_info(0).map(|info| assert_eq!(info.id, 0)),
            _ => peer.write(writable, 4096, &rng.some_bytes(1, 100)),
        };
        assert!(
            t.elapsed() < timeout * 10,
            "a hostile owner held a reader for {:?}",
            t.elapsed()
        );
        match outcome {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    println!(
        "against a hostile owner: {ok} calls answered, {failed} refused, {} replies mutated, in {:?}",
        mutated.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(ok > 0 && failed > 0);
    stop.store(true, Ordering::Relaxed);
    drop(peer);
    let _ = TcpStream::connect(proxy_addr);
    proxy_thread.join().unwrap();
}
