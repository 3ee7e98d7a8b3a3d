//! Hostile peers against the servers' accept/handshake skeleton: every peer may be an attacker.
//!
//! - a peer trickling its handshake a byte at a time is cut at the whole-handshake deadline;
//! - idle connections, authenticated or not, hold no thread of the owner;
//! - over the caps new connections are refused at once, a member is never displaced, and an
//!   honest peer is never starved by squatters;
//! - a peer leaving its replies unread is cut at the stall timeout, on both servers;
//! - a peer failing the handshake is cut at once, on both servers, and members carry on.
//!
//! Every wait is a blocking read bounded by a generous timeout: the server closing the socket
//! is what ends it. The tests of this file run one at a time (they count the process's
//! threads and open many sockets).

mod common;

use remora_core::control::{handshake_client, SOCKET_NAME};
use remora_core::{
    ControlClient, ControlServer, Lookup, RemoteMemory, RemoteStore, ServerLimits, Store,
    TcpServer, TcpTransport, Transport,
};
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"hostile-cluster-secret-012345678";
/// Upper bound on any blocking wait: a server that never acts fails the test, never hangs it.
const BOUND: Duration = Duration::from_secs(30);
/// How the attacker paces its bytes.
const TRICKLE: Duration = Duration::from_millis(300);

fn serial() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

struct Fixture {
    store: Arc<Store>,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const OBJECTS: usize = 8;

fn id(i: usize) -> Vec<u8> {
    format!("hostile/{i}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    (0..100 + i).map(|b| (b * 7 + i) as u8).collect()
}

fn fixture(test: &str) -> Fixture {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "remora-hostile-{}-{test}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let (ids, values): (Vec<_>, Vec<_>) = (0..OBJECTS).map(|i| (id(i), value(i))).unzip();
    let store = common::filled_store(&dir, &ids, &values);
    Fixture { store, dir }
}

fn limits(max_connections: usize, max_unauthenticated: usize, deadline: Duration) -> ServerLimits {
    ServerLimits {
        max_connections,
        max_unauthenticated,
        handshake_timeout: deadline,
        ..ServerLimits::default()
    }
}

/// An honest member reads every object and checks the bytes.
fn honest_read<M: RemoteMemory>(remote: &RemoteStore<M>) {
    let ids: Vec<Vec<u8>> = (0..OBJECTS).map(id).collect();
    let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    let got = remote.get_many(&refs).expect("an honest member is served");
    for (i, found) in got.into_iter().enumerate() {
        assert_eq!(
            found,
            Lookup::Value {
                ts: 1,
                value: value(i)
            },
            "object {i}"
        );
    }
}

fn attach(server: &TcpServer) -> Result<RemoteStore<remora_core::TcpPeer>, remora_core::Error> {
    TcpTransport::new(SECRET)?
        .with_timeout(Duration::from_secs(5))
        .attach(&server.local_addr().to_string())
        .map(RemoteStore::new)
}

/// A TCP connection from the loopback address `127.0.0.x`: a distinct source for the server.
fn connect_from(x: u8, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let from = SocketAddr::from((Ipv4Addr::new(127, 0, 0, x), 0));
    s.bind(&from.into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s
}

/// What the server did with a connection we wait on.
#[derive(Debug, PartialEq)]
enum Outcome {
    Closed(Duration),
    SentData(usize),
    StillOpen,
}

/// Blocks until the server closes `s` (or sends something), at most [`BOUND`]; the elapsed
/// time is measured from `since`.
fn wait_close(s: &mut impl Read, since: Instant) -> Outcome {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => Outcome::Closed(since.elapsed()),
        Ok(n) => Outcome::SentData(n),
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
            Outcome::Closed(since.elapsed())
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Outcome::StillOpen
        }
        Err(e) => panic!("unexpected error waiting for the server: {e}"),
    }
}

/// A valid client hello (magic, protocol 1, nonce): what an honest peer sends first.
fn hello() -> Vec<u8> {
    let mut h = b"RMRA".to_vec();
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&[0x5a; 32]);
    h
}

/// Writes `bytes` one at a time, [`TRICKLE`] apart, until done or the server hangs up.
fn trickle(mut s: impl Write + Send + 'static, bytes: Vec<u8>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut sent = 0;
        for b in bytes {
            if s.write_all(&[b]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(TRICKLE);
        }
        sent
    })
}

fn assert_cut_at(outcome: Outcome, deadline: Duration, what: &str) {
    match outcome {
        Outcome::Closed(after) => {
            println!("{what}: dropped by the server after {after:?} (deadline {deadline:?})");
            assert!(
                after + Duration::from_millis(50) >= deadline,
                "{what}: dropped after {after:?}, before the {deadline:?} deadline"
            );
            assert!(
                after < deadline + Duration::from_secs(2),
                "{what}: dropped only after {after:?}; the deadline is {deadline:?}"
            );
        }
        other => panic!("{what}: expected the server to drop the trickler, got {other:?}"),
    }
}

/// (a) A peer sending its hello one byte every 300 ms, or a quick hello and then its proof
/// one byte every 300 ms, keeps each read short of any per-read timeout: only a deadline on
/// the whole handshake cuts it. The server closes it at that deadline, measured from connect.
#[test]
fn trickled_handshake_is_cut_at_the_whole_handshake_deadline() {
    let _one = serial();
    let fx = fixture("trickle");
    let deadline = Duration::from_secs(1);
    let server = TcpServer::start_limited(
        &fx.store,
        SECRET,
        "127.0.0.1:0".parse().unwrap(),
        limits(256, 32, deadline),
    )
    .unwrap();
    let addr = server.local_addr();

    // The hello, trickled.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    let since = Instant::now();
    let writer = trickle(s.try_clone().unwrap(), hello());
    assert_cut_at(wait_close(&mut s, since), deadline, "trickled hello");
    let sent = writer.join().unwrap();
    println!(
        "the trickler got {sent} of {} hello bytes in",
        hello().len()
    );
    assert!(sent < hello().len());

    // A quick hello, then the proof trickled: the deadline counts from the connection, not
    // from the last step.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    let since = Instant::now();
    s.write_all(&hello()).unwrap();
    let mut reply = [0u8; 64];
    s.read_exact(&mut reply).unwrap();
    let writer = trickle(s.try_clone().unwrap(), vec![0x33; 32]);
    assert_cut_at(wait_close(&mut s, since), deadline, "trickled proof");
    writer.join().unwrap();

    // Members still get in and are served.
    honest_read(&attach(&server).unwrap());
    let stats = server.stats();
    println!("{stats:?}");
    assert_eq!(stats.timed_out, 2);
}

/// (a) on the control channel: the Unix socket shares the skeleton, so the same deadline.
#[test]
fn trickled_handshake_on_the_control_socket_is_cut_too() {
    let _one = serial();
    let fx = fixture("trickle-unix");
    let deadline = Duration::from_secs(1);
    let server =
        ControlServer::start_limited(&fx.store, SECRET, limits(256, 32, deadline)).unwrap();
    let path = fx.store.dir().join(SOCKET_NAME);
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    let since = Instant::now();
    let writer = trickle(s.try_clone().unwrap(), hello());
    assert_cut_at(wait_close(&mut s, since), deadline, "trickled hello (unix)");
    writer.join().unwrap();
    let mut member = ControlClient::connect(&path, SECRET).unwrap();
    assert!(member.lookup(&[&id(0)]).unwrap()[0].is_some());
    assert_eq!(server.stats().timed_out, 1);
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// (b) 1000 idle connections (200 that authenticated and then went quiet, 800 that never
/// said a word) cost the owner no threads, and honest members, already connected or new,
/// are served while they are open.
#[test]
fn idle_connections_hold_no_threads() {
    let _one = serial();
    let fx = fixture("idle");
    let server = TcpServer::start(&fx.store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let member = attach(&server).unwrap();
    honest_read(&member);
    let before = threads();

    let (quiet_members, squatters) = match open_files_limit() {
        // Both ends of every connection live in this process.
        Some(n) if n < 2 * 1000 + 200 => {
            let total = (n.saturating_sub(200) / 2).max(100);
            println!("open-files limit {n}: using {total} connections instead of 1000");
            (total / 5, total - total / 5)
        }
        _ => (200, 800),
    };
    let mut open = Vec::new();
    for _ in 0..quiet_members {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        handshake_client(&mut s, SECRET, "quiet member").unwrap();
        open.push(s);
    }
    // Squatters come from another address, so the new member below is not one of theirs.
    for _ in 0..squatters {
        open.push(connect_from(2, addr));
    }
    let during = threads();
    println!(
        "threads: {before} before, {during} with {} idle connections open",
        open.len()
    );
    assert!(
        during <= before + 2,
        "{} idle connections grew the thread count from {before} to {during}",
        open.len()
    );
    honest_read(&member);
    honest_read(&attach(&server).unwrap());
    let stats = server.stats();
    println!("{stats:?}");
    assert!(stats.open <= ServerLimits::default().max_connections);
    assert!(stats.unauthenticated <= ServerLimits::default().max_unauthenticated);
    assert!(stats.refused > 0, "over the caps connections are refused");
    drop(open);
}

/// Opens `n` silent connections from `127.0.0.x`.
fn squat(x: u8, n: usize, to: SocketAddr) -> Vec<TcpStream> {
    (0..n).map(|_| connect_from(x, to)).collect()
}

/// (c) Over the unauthenticated cap new connections are refused at once; a member's new
/// connection still gets in: a squatting address gives up its oldest slot to an address that
/// holds none. When every slot is held by a different address, the honest peer is refused
/// until the deadline cuts them, then gets in. A squatter reconnecting as fast as it can
/// never starves members.
#[test]
fn unauthenticated_cap_refuses_but_never_starves_members() {
    let _one = serial();
    let fx = fixture("cap");
    let deadline = Duration::from_secs(2);
    let start = || {
        TcpServer::start_limited(
            &fx.store,
            SECRET,
            "127.0.0.1:0".parse().unwrap(),
            limits(256, 8, deadline),
        )
        .unwrap()
    };

    // One squatting address: 8 admitted, 8 more refused at once; a member still gets in, and
    // the squatter's oldest connection is the one that goes.
    let server = start();
    let opened = Instant::now();
    let mut held = squat(2, 8, server.local_addr());
    let mut extra = squat(2, 8, server.local_addr());
    for (i, s) in extra.iter_mut().enumerate() {
        match wait_close(s, opened) {
            Outcome::Closed(after) => assert!(
                after < deadline / 2,
                "extra connection {i} closed only after {after:?}"
            ),
            other => panic!("extra connection {i} over the cap was not refused: {other:?}"),
        }
    }
    honest_read(&attach(&server).unwrap());
    assert!(
        opened.elapsed() < deadline,
        "the member got in while the squatters held on"
    );
    match wait_close(&mut held[0], opened) {
        Outcome::Closed(after) => assert!(after < deadline, "evicted after {after:?}"),
        other => panic!("the oldest squatter was not evicted: {other:?}"),
    }
    let stats = server.stats();
    println!("one squatting address: {stats:?}");
    assert_eq!((stats.refused, stats.evicted), (8, 1));
    drop((held, extra, server));

    // Every slot held by a different address: refused until the deadline cuts them.
    let server = start();
    let opened = Instant::now();
    let mut held: Vec<TcpStream> = (0..8)
        .map(|x| connect_from(10 + x, server.local_addr()))
        .collect();
    let refused = attach(&server)
        .err()
        .expect("refused while every slot is held");
    println!("refused as expected: {refused}");
    assert!(opened.elapsed() < deadline);
    for s in &mut held {
        assert!(matches!(wait_close(s, opened), Outcome::Closed(_)));
    }
    let cut = opened.elapsed();
    assert!(
        cut + Duration::from_millis(50) >= deadline,
        "cut after {cut:?}"
    );
    honest_read(&attach(&server).unwrap());
    println!(
        "distinct addresses, cut after {cut:?}: {:?}",
        server.stats()
    );
    drop((held, server));

    // A squatter reopening connections from two addresses as fast as it can: members get in
    // every time, by taking a slot from the address that holds the most.
    let server = start();
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (full, filled) = std::sync::mpsc::channel();
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut live: Vec<TcpStream> = Vec::new();
            let mut opened = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // A squatter never hears anything: readable means closed.
                live.retain(|s| {
                    s.set_nonblocking(true).unwrap();
                    matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock)
                });
                while live.len() < 12 {
                    live.push(connect_from(2 + (opened % 2) as u8, addr));
                    opened += 1;
                }
                if opened == 12 {
                    let _ = full.send(());
                }
                std::thread::yield_now();
            }
            opened
        })
    };
    filled
        .recv_timeout(BOUND)
        .expect("the squatter filled its slots");
    let began = Instant::now();
    let rounds = 20;
    for round in 0..rounds {
        match attach(&server) {
            Ok(member) => honest_read(&member),
            Err(e) => panic!("member starved in round {round}: {e}"),
        }
    }
    let took = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    let opened = attacker.join().unwrap();
    let stats = server.stats();
    println!("{rounds} members in {took:?} against {opened} squatting connections: {stats:?}");
    assert!(stats.refused > 0, "the squatter was over the cap");
    assert!(stats.evicted > 0, "members took squatters' slots");
    assert!(
        took < deadline,
        "members waited for the deadline instead of getting in"
    );
}

/// At the total cap, a newcomer is refused at once and the members keep their connections:
/// an idle unauthenticated peer never displaces an authenticated one.
#[test]
fn a_full_server_refuses_newcomers_and_keeps_its_members() {
    let _one = serial();
    let fx = fixture("full");
    let server = TcpServer::start_limited(
        &fx.store,
        SECRET,
        "127.0.0.1:0".parse().unwrap(),
        limits(4, 4, Duration::from_secs(5)),
    )
    .unwrap();
    let members: Vec<_> = (0..4).map(|_| attach(&server).unwrap()).collect();
    let opened = Instant::now();
    let mut newcomer = connect_from(2, server.local_addr());
    match wait_close(&mut newcomer, opened) {
        Outcome::Closed(after) => assert!(after < Duration::from_secs(1), "after {after:?}"),
        other => panic!("a newcomer over the total cap was not refused: {other:?}"),
    }
    for m in &members {
        honest_read(m);
    }
    assert_eq!(server.stats().refused, 1);
}

/// Sends `request` (one whole frame) over and over and never reads a reply, until the server
/// hangs up; returns when, and how the last write failed.
fn flood_without_reading(
    mut s: impl Write + Send + 'static,
    request: Vec<u8>,
) -> std::thread::JoinHandle<(Instant, std::io::Error)> {
    // Many frames per write, so the flood outruns the replies it provokes.
    let burst = request.repeat((64 * 1024 / request.len()).max(1));
    std::thread::spawn(move || loop {
        if let Err(e) = s.write_all(&burst) {
            return (Instant::now(), e);
        }
    })
}

/// Waits for `flooder` and checks the server cut it at the stall timeout, not before (counted
/// from the connection: its replies cannot have waited longer) nor long after.
fn assert_cut_for_stalling(
    flooder: std::thread::JoinHandle<(Instant, std::io::Error)>,
    since: Instant,
    stall: Duration,
    what: &str,
) {
    let (at, why) = flooder.join().unwrap();
    let after = at.duration_since(since);
    println!("{what}: cut after {after:?} (stall timeout {stall:?}): {why}");
    assert!(
        matches!(
            why.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
        ),
        "{what}: the server did not hang up: {why}"
    );
    assert!(
        after >= stall,
        "{what}: cut after {after:?}, before {stall:?}"
    );
    assert!(
        after < stall + Duration::from_secs(10),
        "{what}: cut only after {after:?}"
    );
}

fn stall_limits(stall: Duration) -> ServerLimits {
    ServerLimits {
        stall_timeout: stall,
        ..ServerLimits::default()
    }
}

/// (d) A member that pipelines reads and never reads the replies is cut at the stall
/// timeout, and other members are served meanwhile and after.
#[test]
fn a_peer_leaving_its_replies_unread_is_cut_at_the_stall_timeout() {
    let _one = serial();
    let fx = fixture("stall");
    let stall = Duration::from_secs(1);
    let server = TcpServer::start_limited(
        &fx.store,
        SECRET,
        "127.0.0.1:0".parse().unwrap(),
        stall_limits(stall),
    )
    .unwrap();
    let member = attach(&server).unwrap();
    let since = Instant::now();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    handshake_client(&mut s, SECRET, "staller").unwrap();
    // `[len][request id][OP_READ][region 0][offset 0][64 KiB]`: a large reply per request.
    let mut read = 25u32.to_le_bytes().to_vec();
    read.extend_from_slice(&7u64.to_le_bytes());
    read.push(3);
    read.extend_from_slice(&0u32.to_le_bytes());
    read.extend_from_slice(&0u64.to_le_bytes());
    read.extend_from_slice(&(64u32 << 10).to_le_bytes());
    let flooder = flood_without_reading(s, read);
    honest_read(&member);
    assert_cut_for_stalling(flooder, since, stall, "tcp");
    honest_read(&member);
    // Kept open: a dropped client's close reaches the counters only some time later.
    let newcomer = attach(&server).unwrap();
    honest_read(&newcomer);
    let stats = server.stats();
    println!("{stats:?}");
    assert_eq!(stats.open, 2, "the two members, not the staller");
}

/// (d) on the control channel. Its old thread-per-connection server had no write timeout, so
/// such a peer held a thread for as long as it liked; the shared skeleton cuts it as it cuts
/// a `tcp` peer.
#[test]
fn a_control_peer_leaving_its_replies_unread_is_cut_too() {
    let _one = serial();
    let fx = fixture("stall-unix");
    let stall = Duration::from_secs(1);
    let server = ControlServer::start_limited(&fx.store, SECRET, stall_limits(stall)).unwrap();
    let path = fx.store.dir().join(SOCKET_NAME);
    let mut member = ControlClient::connect(&path, SECRET).unwrap();
    let since = Instant::now();
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    handshake_client(&mut s, SECRET, "staller").unwrap();
    // A lookup of 4096 ids: a reply of 53 KB per request.
    let ids = 4096u32;
    let mut body = vec![1u8];
    body.extend_from_slice(&ids.to_le_bytes());
    for i in 0..ids as usize {
        let id = id(i % OBJECTS);
        body.extend_from_slice(&(id.len() as u16).to_le_bytes());
        body.extend_from_slice(&id);
    }
    let mut lookup = (body.len() as u32).to_le_bytes().to_vec();
    lookup.extend_from_slice(&body);
    let flooder = flood_without_reading(s, lookup);
    assert!(member.lookup(&[&id(1)]).unwrap()[0].is_some());
    assert_cut_for_stalling(flooder, since, stall, "control");
    assert!(member.lookup(&[&id(2)]).unwrap()[0].is_some());
    let mut newcomer = ControlClient::connect(&path, SECRET).unwrap();
    assert!(newcomer.lookup(&[&id(3)]).unwrap()[0].is_some());
    let stats = server.stats();
    println!("{stats:?}");
    assert_eq!(stats.open, 2, "the two members, not the staller");
}

/// Runs the handshake with a proof made without the secret: the server says no, then hangs up.
fn prove_wrongly(s: &mut (impl Read + Write), what: &str) {
    s.write_all(&hello()).unwrap();
    let mut challenge = [0u8; 64];
    s.read_exact(&mut challenge).unwrap();
    s.write_all(&[0x33; 32]).unwrap();
    let mut verdict = [9u8; 1];
    s.read_exact(&mut verdict).unwrap();
    assert_eq!(verdict, [0], "{what}: a wrong proof was accepted");
    assert!(
        matches!(wait_close(s, Instant::now()), Outcome::Closed(_)),
        "{what}: still open after a rejected proof"
    );
}

/// A peer failing the handshake (without the secret, or not a Remora peer at all) is cut at
/// once, and changes nothing for members, on both servers.
#[test]
fn failed_handshakes_are_cut_and_members_are_still_served() {
    let _one = serial();
    let fx = fixture("rejected");
    let tcp = TcpServer::start(&fx.store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
    let control = ControlServer::start(&fx.store, SECRET).unwrap();
    let path = fx.store.dir().join(SOCKET_NAME);
    let member = attach(&tcp).unwrap();
    let mut control_member = ControlClient::connect(&path, SECRET).unwrap();
    let quick = Duration::from_secs(2);

    let since = Instant::now();
    let mut s = TcpStream::connect(tcp.local_addr()).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    prove_wrongly(&mut s, "tcp");
    let mut s = TcpStream::connect(tcp.local_addr()).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    // Longer than a hello, so the server has a whole first step to refuse.
    s.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n")
        .unwrap();
    assert!(matches!(
        wait_close(&mut s, Instant::now()),
        Outcome::Closed(_)
    ));
    assert!(
        since.elapsed() < quick,
        "cut only after {:?}",
        since.elapsed()
    );
    honest_read(&member);
    honest_read(&attach(&tcp).unwrap());
    let stats = tcp.stats();
    println!("tcp: {stats:?}");
    assert_eq!((stats.rejected, stats.timed_out), (2, 0));

    let since = Instant::now();
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    prove_wrongly(&mut s, "control");
    assert!(
        since.elapsed() < quick,
        "cut only after {:?}",
        since.elapsed()
    );
    assert!(control_member.lookup(&[&id(0)]).unwrap()[0].is_some());
    let mut newcomer = ControlClient::connect(&path, SECRET).unwrap();
    assert!(newcomer.lookup(&[&id(1)]).unwrap()[0].is_some());
    let stats = control.stats();
    println!("control: {stats:?}");
    assert_eq!((stats.rejected, stats.timed_out), (1, 0));
}
