//! State transfer between three replicas of one partition, each with its own store, over
//! `shm` with doorbells: shipments larger than the landing slot, a server that keeps executing
//! while it serves, a silent server replaced by the next, and chunks that must be refused.

use remora_core::{
    ControlServer, Lookup, ShmTransport, Store, StoreConfig, TcpServer, TcpTransport, Transport,
    VerbsServer, VerbsTransport,
};
use remora_heron::transfer::{CaughtUp, Prefix, Received};
use remora_heron::{Request, Transfer, TransferLayout};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const SECRET: &[u8] = b"test-cluster-secret-0123456789";

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Replica {
    transfer: Transfer<ShmTransport>,
    store: Arc<Store>,
    _control: ControlServer,
}

fn replicas(tag: &str, slot_bytes: usize) -> (Dir, Vec<Arc<Replica>>, TransferLayout) {
    let dir = std::env::temp_dir().join(format!("remora-transfer-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let layout = TransferLayout {
        replicas: 3,
        slot_bytes,
    };
    let out = (0..3).map(|q| replica(&dir, layout, q)).collect();
    (Dir(dir), out, layout)
}

/// Replica `q` of three, `r{q}` in `dir`, with an empty store (made again: a restarted replica,
/// with new region files).
fn replica(dir: &std::path::Path, layout: TransferLayout, q: u32) -> Arc<Replica> {
    replica_numbered(dir, layout, q, 0)
}

/// A replica whose requests are numbered from after `start`.
fn replica_numbered(
    dir: &std::path::Path,
    layout: TransferLayout,
    q: u32,
    start: u32,
) -> Arc<Replica> {
    let names: Vec<String> = (0..3).map(|q| format!("r{q}")).collect();
    let mut cfg = StoreConfig::new(dir, names[q as usize].clone());
    cfg.region_bytes = 64 * 1024;
    let store = Arc::new(Store::create(&cfg).unwrap());
    let control = ControlServer::start(&store, SECRET).unwrap();
    let t = ShmTransport::new(dir, SECRET).unwrap();
    let transfer = Transfer::create(store.clone(), t, layout, q, &names)
        .unwrap()
        .ring_peers_in(dir)
        .numbering_from(start);
    assert_eq!(transfer.regions(), (0, 1));
    Arc::new(Replica {
        transfer,
        store,
        _control: control,
    })
}

/// Runs `r`'s serving thread until the returned guard is dropped (it stops and joins it).
struct Serving(Arc<Replica>, Option<JoinHandle<()>>);

fn serve(r: &Arc<Replica>) -> Serving {
    let me = r.clone();
    let h = std::thread::spawn(move || {
        me.transfer
            .serve_forever(|req, e| panic!("serving {req:?} failed: {e}"))
            .unwrap()
    });
    Serving(r.clone(), Some(h))
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.transfer.stop();
        if let Some(h) = self.1.take() {
            // Not when already unwinding: a second panic would abort the test binary.
            if h.join().is_err() && !std::thread::panicking() {
                panic!("the serving thread panicked");
            }
        }
    }
}

fn value(i: u32, ts: u64) -> Vec<u8> {
    // Sizes from 0 to ~3 KB, so records straddle chunk boundaries.
    let len = ((i as u64 * 37 + ts * 11) % 3000) as usize;
    (0..len)
        .map(|k| (k as u64 ^ ts ^ u64::from(i)) as u8)
        .collect()
}

fn id(i: u32) -> Vec<u8> {
    format!("obj-{i}").into_bytes()
}

fn installed(got: Received) -> remora_heron::transfer::Installed {
    match got {
        Received::Installed(i) => i,
        other => panic!("expected an installed shipment, got {other:?}"),
    }
}

#[test]
fn a_shipment_larger_than_the_slot_transfers_exactly() {
    // Two lanes of 2 KB: a shipment of ~300 KB goes through in ~150 chunks.
    let (_dir, r, layout) = replicas("large", 4096);
    assert_eq!(layout.lane_bytes(), 2048);
    // Both start with the same state at 10; the server then applies 11..=20.
    for q in [0, 2] {
        for i in 0..200 {
            r[q].store.set(&id(i), &value(i, 10), 10).unwrap();
        }
    }
    for ts in 11..=20u64 {
        for i in 0..200 {
            if (i + ts as u32).is_multiple_of(3) {
                r[2].store.set(&id(i), &value(i, ts), ts).unwrap();
            } else if i == ts as u32 * 7 {
                r[2].store.delete(&id(i), ts).unwrap();
            }
        }
        r[2].store.set(&id(1000 + ts as u32), b"new", ts).unwrap();
        r[2].store.delete(&id(1000 + ts as u32), ts + 1).unwrap();
    }
    // An object created after the prefix is not shipped.
    let digest = [9u8; 32];
    r[2].transfer.publish(Prefix {
        ts: 20,
        applied: 20,
        digest,
    });
    r[2].store.set(&id(5000), b"later", 21).unwrap();
    let _serving = serve(&r[2]);
    let number = r[0].transfer.request(2, 10).unwrap();
    let got = installed(
        r[0].transfer
            .receive(2, number, Duration::from_secs(20))
            .unwrap(),
    );
    assert_eq!(
        got.prefix,
        Prefix {
            ts: 20,
            applied: 20,
            digest
        }
    );
    assert!(got.chunks > 100, "{got:?}");
    let mut expected = 0;
    for i in (0..200).chain(1011..=1020) {
        let want = r[2].store.get_before(&id(i), 21).unwrap();
        let have = r[0].store.get(&id(i)).unwrap();
        assert_eq!(have, want, "object {i}");
        let newer = match want {
            Lookup::Value { ts, .. } | Lookup::Deleted { ts } => ts > 10,
            _ => false,
        };
        expected += u64::from(newer);
    }
    assert_eq!(got.objects, expected);
    assert_eq!(r[0].store.get(&id(5000)).unwrap(), Lookup::Absent);
    // Objects created and deleted after `since` arrive as tombstones, as the server has them.
    assert_eq!(
        r[0].store.get(&id(1011)).unwrap(),
        Lookup::Deleted { ts: 12 }
    );
    assert_eq!(
        r[0].store.get(&id(1020)).unwrap(),
        Lookup::Value {
            ts: 20,
            value: b"new".to_vec()
        }
    );
}

#[test]
fn a_shipment_goes_out_as_it_is_read_short_chunks_first() {
    // Lanes of 1 MiB, a stream of ~610 KB: one chunk would do, but the server ships 16 KiB
    // as soon as it has read that much, then 32, 64, 128 and 256 KiB, then the rest (with the
    // trailer), so the lagger installs while the server reads.
    let (_dir, r, layout) = replicas("pipelined", 2 << 20);
    assert_eq!(layout.lane_bytes(), 1 << 20);
    for i in 0..300 {
        r[1].store.set(&id(i), &[i as u8; 2000], 7).unwrap();
    }
    r[1].transfer.publish(Prefix {
        ts: 7,
        applied: 300,
        digest: [7; 32],
    });
    let _serving = serve(&r[1]);
    let n = r[0].transfer.request(1, 0).unwrap();
    let got = installed(
        r[0].transfer
            .receive(1, n, Duration::from_secs(20))
            .unwrap(),
    );
    let records: u64 = (0..300).map(|i| (2 + id(i).len() + 12 + 2000) as u64).sum();
    assert_eq!(
        (got.prefix.ts, got.objects, got.bytes, got.chunks),
        (7, 300, records + 2 + 56, 6)
    );
    for i in 0..300 {
        assert_eq!(
            r[0].store.get(&id(i)).unwrap(),
            Lookup::Value {
                ts: 7,
                value: vec![i as u8; 2000]
            }
        );
    }
}

#[test]
fn a_server_that_keeps_executing_ships_the_state_at_one_prefix() {
    let (_dir, r, _) = replicas("concurrent", 64 << 10);
    // Enough objects that a collection outlasts many transactions: the hot objects are then
    // overwritten twice under it, and passes over what changed follow.
    const N: u32 = 512;
    for q in [0, 1] {
        for i in 0..N {
            r[q].store.set(&id(i), &value(i, 1), 1).unwrap();
        }
    }
    r[1].transfer.publish(Prefix {
        ts: 1,
        applied: 1,
        digest: [1; 32],
    });
    // The writer executes transaction ts = 2, 3, ...: it writes a few objects (hot ones
    // every time, so some get overwritten twice during a collection), then publishes.
    let writing = Arc::new(AtomicBool::new(true));
    let server = r[1].clone();
    let flag = writing.clone();
    let writer = std::thread::spawn(move || {
        let mut ts = 1u64;
        while flag.load(Ordering::Acquire) && ts < 200_000 {
            ts += 1;
            let other = (ts % u64::from(N)) as u32;
            let hot = if other > 1 {
                vec![0, 1, other]
            } else {
                vec![0, 1]
            };
            for i in hot {
                server.store.set(&id(i), &value(i, ts), ts).unwrap();
            }
            server.transfer.publish(Prefix {
                ts,
                applied: ts,
                digest: [(ts % 251) as u8; 32],
            });
        }
        ts
    });
    let _serving = serve(&r[1]);
    let mut shipped = Vec::new();
    for _ in 0..5 {
        let since = r[0]
            .store
            .ids()
            .iter()
            .map(|i| r[0].store.newest_version(i))
            .max()
            .unwrap();
        let number = r[0].transfer.request(1, since).unwrap();
        let got = installed(
            r[0].transfer
                .receive(1, number, Duration::from_secs(20))
                .unwrap(),
        );
        let t = got.prefix.ts;
        assert_eq!(got.prefix.digest, [(t % 251) as u8; 32]);
        // Exactly the writer's state at t: each object's last write at or before t.
        for i in 0..N {
            let last = (1..=t)
                .rev()
                .find(|&ts| ts == 1 || i <= 1 || ts % u64::from(N) == u64::from(i))
                .unwrap();
            assert_eq!(
                r[0].store.get(&id(i)).unwrap(),
                Lookup::Value {
                    ts: last,
                    value: value(i, last)
                },
                "object {i} at prefix {t}"
            );
        }
        shipped.push(t);
    }
    writing.store(false, Ordering::Release);
    let wrote = writer.join().unwrap();
    assert!(shipped.windows(2).all(|w| w[0] <= w[1]), "{shipped:?}");
    assert!(shipped.iter().all(|&t| t <= wrote));
}

#[test]
fn a_silent_server_is_replaced_by_the_next_and_its_late_answer_stays_in_its_slot() {
    let (_dir, r, _) = replicas("failover", 1 << 16);
    r[2].store.set(b"k", b"from-2", 50).unwrap();
    r[2].transfer.publish(Prefix {
        ts: 50,
        applied: 7,
        digest: [2; 32],
    });
    r[1].store.set(b"k", b"from-1", 60).unwrap();
    r[1].transfer.publish(Prefix {
        ts: 60,
        applied: 8,
        digest: [1; 32],
    });
    // Replica 1 is asked first and does not serve (yet).
    let first = r[0].transfer.request(1, 41).unwrap();
    assert_eq!(
        r[0].transfer
            .receive(1, first, Duration::from_millis(20))
            .unwrap(),
        Received::TimedOut { rejected: None }
    );
    let second = r[0].transfer.request(2, 41).unwrap();
    assert_eq!((first, second), (1, 2));
    {
        let _serving = serve(&r[2]);
        let got = installed(
            r[0].transfer
                .receive(2, second, Duration::from_secs(10))
                .unwrap(),
        );
        assert_eq!((got.prefix.ts, got.prefix.applied, got.objects), (50, 7, 1));
    }
    assert_eq!(r[2].transfer.served(), 1);
    // The silent server sees the old request; its late answer lands only in its own slot.
    let late = r[1].transfer.take_requests().unwrap();
    assert_eq!(
        late,
        vec![Request {
            replica: 0,
            number: 1,
            since: 41
        }]
    );
    r[1].transfer.serve(late[0]).unwrap();
    assert_eq!(
        r[0].store.get(b"k").unwrap(),
        Lookup::Value {
            ts: 50,
            value: b"from-2".to_vec()
        }
    );
    // Each request is taken once.
    assert_eq!(r[1].transfer.take_requests().unwrap(), vec![]);
}

/// Writes a chunk into `lagger`'s landing slot of `server` as a server would, with `check`
/// computed over the given fields (or overridden).
fn land(
    lagger: &Replica,
    layout: &TransferLayout,
    server: u32,
    fields: [u64; 4],
    data: &[u8],
    check: Option<u64>,
) {
    let [number, seq, len, last] = fields;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for w in [number, seq, len, last] {
        h.update(&w.to_le_bytes());
    }
    h.update(data);
    let at = layout.lane_offset(server, seq);
    lagger.store.write_region(1, at + 64, data).unwrap();
    let mut header = Vec::new();
    for w in [number, seq, len, last, check.unwrap_or(h.digest())] {
        header.extend_from_slice(&w.to_le_bytes());
    }
    lagger.store.write_region(1, at, &header).unwrap();
}

/// A stream's end: the end mark, then prefix 30 (applied 3) and a record count.
fn trailer(objects: u64) -> Vec<u8> {
    let mut m = 0u16.to_le_bytes().to_vec();
    m.extend_from_slice(&30u64.to_le_bytes());
    m.extend_from_slice(&3u64.to_le_bytes());
    m.extend_from_slice(&[0u8; 32]);
    m.extend_from_slice(&objects.to_le_bytes());
    m
}

#[test]
fn torn_stale_oversized_and_malformed_chunks_are_never_installed() {
    let (_dir, r, layout) = replicas("refused", 1024);
    let wait = Duration::from_millis(5);
    let mut one = Vec::new();
    one.extend_from_slice(&1u16.to_le_bytes());
    one.extend_from_slice(b"x");
    one.extend_from_slice(&31u64.to_le_bytes());
    one.extend_from_slice(&2u32.to_le_bytes());
    one.extend_from_slice(b"hi");
    let mut rec = one.clone();
    rec.extend_from_slice(&trailer(1));
    let n = r[0].transfer.request(1, 0).unwrap();
    let len = rec.len() as u64;

    // Torn: the check does not cover what is there.
    land(&r[0], &layout, 1, [n.into(), 0, len, 1], &rec, Some(12345));
    assert_eq!(
        r[0].transfer.receive(1, n, wait).unwrap(),
        Received::TimedOut {
            rejected: Some("chunk 0: check mismatch (torn or corrupt)".into())
        }
    );
    // Stale: a whole chunk answering another request is not this one's.
    land(&r[0], &layout, 1, [u64::from(n) + 7, 0, len, 1], &rec, None);
    assert_eq!(
        r[0].transfer.receive(1, n, wait).unwrap(),
        Received::TimedOut { rejected: None }
    );
    // Longer than a lane.
    land(&r[0], &layout, 1, [n.into(), 0, 600, 1], &rec, None);
    assert_eq!(
        r[0].transfer.receive(1, n, wait).unwrap(),
        Received::TimedOut {
            rejected: Some(
                "chunk 0: length 600 over the lane's 512 bytes, or bad last flag 1".into()
            )
        }
    );
    // Whole but malformed (more records than its trailer counts): refused with the reason.
    let mut two = one.clone();
    two.extend_from_slice(&one);
    two.extend_from_slice(&trailer(1));
    land(
        &r[0],
        &layout,
        1,
        [n.into(), 0, two.len() as u64, 1],
        &two,
        None,
    );
    assert_eq!(
        r[0].transfer.receive(1, n, wait).unwrap_err().to_string(),
        "state transfer: malformed shipment from replica 1 (request 1, chunk 0): 2 records shipped, the trailer says 1"
    );
    assert_eq!(r[0].store.get(b"x").unwrap(), Lookup::Absent);
    // The same chunk made whole is installed.
    land(&r[0], &layout, 1, [n.into(), 0, len, 1], &rec, None);
    let got = installed(r[0].transfer.receive(1, n, wait).unwrap());
    assert_eq!((got.prefix.ts, got.objects, got.chunks), (30, 1, 1));
    assert_eq!(
        r[0].store.get(b"x").unwrap(),
        Lookup::Value {
            ts: 31,
            value: b"hi".to_vec()
        }
    );
}

#[test]
fn bad_requests_are_refused_with_reasons() {
    let (_dir, r, _) = replicas("bounds", 1024);
    assert_eq!(
        r[1].transfer.request(1, 5).unwrap_err().to_string(),
        "state transfer: a replica does not transfer state to itself"
    );
    assert_eq!(
        r[1].transfer.request(3, 5).unwrap_err().to_string(),
        "state transfer: no replica 3 in this partition"
    );
    // An object written twice after the latest published prefix: its version as of the
    // prefix is gone, and no newer prefix comes to collect at.
    r[1].store.set(b"hot", b"1", 4).unwrap();
    r[1].transfer.publish(Prefix {
        ts: 10,
        applied: 10,
        digest: [0; 32],
    });
    r[1].store.set(b"hot", b"2", 11).unwrap();
    r[1].store.set(b"hot", b"3", 12).unwrap();
    assert_eq!(
        r[1].transfer
            .serve(Request {
                replica: 0,
                number: 1,
                since: 2
            })
            .unwrap_err()
            .to_string(),
        "state transfer: objects kept being overwritten twice while collecting state since 2 (64 attempts)"
    );
    r[1].transfer.set_horizon(10);
    let req = Request {
        replica: 0,
        number: 1,
        since: 5,
    };
    assert_eq!(
        r[1].transfer.serve(req).unwrap_err().to_string(),
        "state transfer: cannot serve state since 5: its log starts at 10 (tombstones before it were purged)"
    );
}

/// An empty replica (a restarted one) asks for everything since 0 over a transport without
/// doorbells (`tcp`, `verbs`): the server's request wait and the lagger's chunk wait poll. The
/// shipment, through a slot far smaller than it, installs exactly the server's state at its
/// prefix. `serve` starts a store's server and gives its address (peers are named by address).
fn empty_replica_receives_the_whole_state<T: Transport + 'static>(
    tag: &str,
    serve: impl Fn(&Arc<Store>) -> (Box<dyn std::any::Any>, String),
    transport: impl Fn() -> T,
) {
    let dir = std::env::temp_dir().join(format!("remora-transfer-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = Dir(dir.clone());
    let layout = TransferLayout {
        replicas: 3,
        slot_bytes: 8192,
    };
    // Bind first: peers are named by address.
    let mut stores = Vec::new();
    let mut servers = Vec::new();
    let mut names = Vec::new();
    for q in 0..3 {
        let mut cfg = StoreConfig::new(&dir, format!("r{q}"));
        cfg.region_bytes = 64 * 1024;
        let store = Arc::new(Store::create(&cfg).unwrap());
        let (server, addr) = serve(&store);
        servers.push(server);
        names.push(addr);
        stores.push(store);
    }
    let transfers: Vec<Arc<Transfer<T>>> = stores
        .iter()
        .enumerate()
        .map(|(q, store)| {
            Arc::new(
                Transfer::create(store.clone(), transport(), layout, q as u32, &names).unwrap(),
            )
        })
        .collect();
    // The server's state: 300 objects written at 1..=30, some deleted, then one written after
    // its prefix (not shipped).
    let server = &stores[1];
    for ts in 1..=30u64 {
        for i in 0..300u32 {
            if (i + ts as u32).is_multiple_of(7) {
                server.set(&id(i), &value(i, ts), ts).unwrap();
            } else if i == ts as u32 * 9 {
                server.delete(&id(i), ts).unwrap();
            }
        }
    }
    transfers[1].publish(Prefix {
        ts: 30,
        applied: 30,
        digest: [7; 32],
    });
    server.set(&id(1), b"after the prefix", 31).unwrap();
    let serving = {
        let t = transfers[1].clone();
        std::thread::spawn(move || {
            t.serve_forever(|r, e| panic!("serving {r:?} failed: {e}"))
                .unwrap()
        })
    };
    let got = (|| {
        let number = transfers[0].request(1, 0)?;
        transfers[0].receive(1, number, Duration::from_secs(60))
    })();
    transfers[1].stop();
    serving.join().unwrap();
    let got = installed(got.unwrap());
    assert_eq!(
        got.prefix,
        Prefix {
            ts: 30,
            applied: 30,
            digest: [7; 32]
        }
    );
    assert!(got.chunks > 10, "{got:?}");
    let mut shipped = 0;
    for i in 0..300u32 {
        let want = server.get_before(&id(i), 31).unwrap();
        assert_eq!(stores[0].get(&id(i)).unwrap(), want, "object {i}");
        shipped += u64::from(want != Lookup::Absent);
    }
    assert_eq!(got.objects, shipped);
    assert_eq!(stores[0].ids().len() as u64, shipped);
    assert_eq!(transfers[1].served(), 1);
    drop(servers);
}

#[test]
fn an_empty_replica_receives_the_whole_state_over_tcp() {
    empty_replica_receives_the_whole_state(
        "tcp",
        |store| {
            let s = TcpServer::start(store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = s.local_addr().to_string();
            (Box::new(s), addr)
        },
        || TcpTransport::new(SECRET).unwrap(),
    );
}

/// The same over `verbs`: needs an RDMA device (the soft-RoCE rig, test/rig, runs it with
/// `REMORA_REQUIRE_RDMA=1`); without one it says why and passes.
#[test]
fn an_empty_replica_receives_the_whole_state_over_verbs() {
    if let Err(why) = remora_core::transport::verbs::probe() {
        if std::env::var("REMORA_REQUIRE_RDMA").is_ok_and(|v| v == "1") {
            panic!("REMORA_REQUIRE_RDMA=1 but: {why}");
        }
        println!("skipped: {why}");
        return;
    }
    empty_replica_receives_the_whole_state(
        "verbs",
        |store| {
            let s = VerbsServer::start(store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = s.local_addr().to_string();
            (Box::new(s), addr)
        },
        || VerbsTransport::new(SECRET).unwrap(),
    );
}

#[test]
fn a_catch_up_adopts_a_short_prefix_and_asks_the_next_peer_until_one_covers() {
    let (_dir, r, _) = replicas("catch-up", 1 << 16);
    for q in &r {
        q.store.set(b"old", b"everyone", 10).unwrap();
    }
    // Replica 1 (asked first: the ring from replica 0) is at 50, short of the 60 needed;
    // replica 2 is at 70. The second request starts from 50, so only what changed after it
    // comes from replica 2.
    r[1].store.set(b"a", b"a@40", 40).unwrap();
    r[1].store.set(b"b", b"b@50", 50).unwrap();
    r[1].transfer.publish(Prefix {
        ts: 50,
        applied: 5,
        digest: [5; 32],
    });
    r[2].store.set(b"a", b"a@40", 40).unwrap();
    r[2].store.set(b"b", b"b@50", 50).unwrap();
    r[2].store.set(b"c", b"c@65", 65).unwrap();
    r[2].store.delete(b"a", 70).unwrap();
    r[2].transfer.publish(Prefix {
        ts: 70,
        applied: 7,
        digest: [7; 32],
    });
    let (_s1, _s2) = (serve(&r[1]), serve(&r[2]));
    let t = &r[0].transfer;
    let mut c = t.begin_catch_up(
        60,
        10,
        "test",
        Duration::from_secs(20),
        Duration::from_secs(10),
    );
    // A budget already spent leaves it under way; the next call finishes it.
    let before = std::time::Instant::now();
    assert_eq!(t.catch_up_until(&mut c, before).unwrap(), None);
    let later = std::time::Instant::now() + Duration::from_secs(20);
    let done = t.catch_up_until(&mut c, later).unwrap().unwrap();
    // Timed from the first request (made in the first call) to the covering install: both
    // shipments, within the calls.
    assert!(
        done.elapsed > Duration::ZERO && done.elapsed <= before.elapsed(),
        "elapsed {:?} is not within the calls' {:?}",
        done.elapsed,
        before.elapsed()
    );
    assert_eq!(
        (done.from, done.since, done.prefix),
        (
            2,
            10,
            Prefix {
                ts: 70,
                applied: 7,
                digest: [7; 32]
            }
        )
    );
    // Two from replica 1 (a, b), two from replica 2 (c, a's tombstone).
    assert_eq!((done.objects, done.chunks), (4, 2));
    assert_eq!(r[0].store.get(b"a").unwrap(), Lookup::Deleted { ts: 70 });
    assert_eq!(
        r[0].store.get(b"b").unwrap(),
        Lookup::Value {
            ts: 50,
            value: b"b@50".to_vec()
        }
    );
    assert_eq!(
        r[0].store.get(b"c").unwrap(),
        Lookup::Value {
            ts: 65,
            value: b"c@65".to_vec()
        }
    );
    assert_eq!(
        r[1].transfer.request_of(0).unwrap().map(|q| q.since),
        Some(10)
    );
    assert_eq!(
        r[2].transfer.request_of(0).unwrap().map(|q| q.since),
        Some(50)
    );
}

/// Replica `r` holds `a` at 20 and publishes the prefix through 20, which it returns.
fn one_at_20(r: &Replica) -> Prefix {
    r.store.set(b"a", b"a@20", 20).unwrap();
    let prefix = Prefix {
        ts: 20,
        applied: 2,
        digest: [2; 32],
    };
    r.transfer.publish(prefix);
    prefix
}

/// Waits (5 s at most) until `r` finished serving `n` requests: its last chunk is written and
/// its look at whether the lagger restarted done, so the lagger may go away.
fn until_served(r: &Replica, n: u64) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while r.transfer.served() < n {
        assert!(
            std::time::Instant::now() < end,
            "served {} of {n} requests within 5 s",
            r.transfer.served()
        );
        std::thread::yield_now();
    }
}

/// A catch-up to 20 from nothing, 5 s per peer and in all.
fn catch_up_to_20(t: &Transfer<ShmTransport>) -> remora_heron::Result<Option<CaughtUp>> {
    let wait = Duration::from_secs(5);
    let mut c = t.begin_catch_up(20, 0, "test", wait, wait);
    t.catch_up_until(&mut c, std::time::Instant::now() + wait)
}

#[test]
fn a_restarted_lagger_gets_its_shipment_in_its_new_memory() {
    let (dir, mut r, layout) = replicas("restarted", 1 << 16);
    let prefix = one_at_20(&r[1]);
    let _s1 = serve(&r[1]);
    // Replica 2 is silent: a shipment that missed the lagger ends the catch-up in an error.
    // Replica 1 maps replica 0's landing region serving these, and takes request numbers 1
    // and 2 (a new incarnation numbers from 1 again, and a number is taken once).
    for _ in 0..2 {
        assert_eq!(
            catch_up_to_20(&r[0].transfer).unwrap().unwrap().prefix,
            prefix
        );
    }
    until_served(&r[1], 2);
    drop(r.remove(0));
    r.insert(0, replica(&dir.0, layout, 0));
    assert_eq!(r[0].store.get(b"a").unwrap(), Lookup::Absent);
    // Replica 1 writes the first chunk through its old mapping, into the dead incarnation's
    // file, then notices the new file and writes it again there.
    let done = catch_up_to_20(&r[0].transfer).unwrap().unwrap();
    assert_eq!((done.from, done.prefix, done.objects), (1, prefix, 1));
    assert_eq!(
        r[0].store.get(b"a").unwrap(),
        Lookup::Value {
            ts: 20,
            value: b"a@20".to_vec()
        }
    );
}

#[test]
fn a_restarted_lagger_numbering_afresh_is_served_where_its_last_incarnation_was() {
    let (dir, mut r, layout) = replicas("renumbered", 1 << 16);
    let prefix = one_at_20(&r[1]);
    let _s1 = serve(&r[1]);
    // Replica 2 is silent: a request replica 1 ignored would end the catch-up in an error.
    // The dead incarnation's one request was number 1, which replica 1 took.
    assert_eq!(
        catch_up_to_20(&r[0].transfer).unwrap().unwrap().prefix,
        prefix
    );
    until_served(&r[1], 1);
    drop(r.remove(0));
    // The new one numbers from elsewhere, as a replica process does; from 1 again, replica 1
    // would take its first request for the one it answered and never answer it.
    r.insert(0, replica_numbered(&dir.0, layout, 0, 0x5eed_0000));
    let done = catch_up_to_20(&r[0].transfer).unwrap().unwrap();
    assert_eq!((done.from, done.prefix, done.objects), (1, prefix, 1));
}

#[test]
fn a_catch_up_refuses_a_lying_manifest_and_takes_the_next_peers_shipment() {
    let (_dir, r, layout) = replicas("catch-up-lie", 1024);
    r[2].store.set(b"k", b"true", 20).unwrap();
    r[2].transfer.publish(Prefix {
        ts: 20,
        applied: 2,
        digest: [2; 32],
    });
    // Replica 1's answer to request 1 (the catch-up's first) holds one object and a trailer
    // that counts two, already in its slot.
    let mut lie = Vec::new();
    lie.extend_from_slice(&1u16.to_le_bytes());
    lie.extend_from_slice(b"x");
    lie.extend_from_slice(&25u64.to_le_bytes());
    lie.extend_from_slice(&3u32.to_le_bytes());
    lie.extend_from_slice(b"lie");
    lie.extend_from_slice(&trailer(2));
    land(&r[0], &layout, 1, [1, 0, lie.len() as u64, 1], &lie, None);
    let _serving = serve(&r[2]);
    let t = &r[0].transfer;
    let mut c = t.begin_catch_up(
        15,
        0,
        "test",
        Duration::from_secs(20),
        Duration::from_secs(10),
    );
    let later = std::time::Instant::now() + Duration::from_secs(20);
    let done = t.catch_up_until(&mut c, later).unwrap().unwrap();
    assert_eq!((done.from, done.prefix.ts, done.objects), (2, 20, 1));
    assert_eq!(r[0].store.get(b"x").unwrap(), Lookup::Absent);
    assert_eq!(
        r[0].store.get(b"k").unwrap(),
        Lookup::Value {
            ts: 20,
            value: b"true".to_vec()
        }
    );
}

#[test]
fn a_catch_up_no_peer_covers_fails_naming_what_each_did() {
    let (_dir, r, _) = replicas("catch-up-none", 1024);
    r[1].transfer.publish(Prefix {
        ts: 30,
        applied: 3,
        digest: [3; 32],
    });
    // Replica 1 ships a prefix short of 40; replica 2 never answers.
    let _serving = serve(&r[1]);
    let t = &r[0].transfer;
    let mut c = t.begin_catch_up(
        40,
        0,
        "no version before 40",
        Duration::from_millis(300),
        Duration::from_millis(50),
    );
    let later = std::time::Instant::now() + Duration::from_secs(20);
    let e = t.catch_up_until(&mut c, later).unwrap_err().to_string();
    assert!(
        e.starts_with("state transfer: transaction 40: lagging (no version before 40) and no peer shipped state within 300ms (1: shipped only up to 30; 2: no shipment in time"),
        "{e}"
    );
}

#[test]
fn a_catch_up_asks_first_the_peer_whose_coordination_entry_shows_the_transaction_executed() {
    use remora_heron::{Coordinator, Layout, Member, PHASE_EXECUTED};
    let dir = std::env::temp_dir().join(format!("remora-transfer-order-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = Dir(dir.clone());
    // Partition 1 of 2: its entries start at index 3 of every coordination region.
    let layout = Layout::new(2, 3).unwrap();
    let all: Vec<(String, u32)> = (0..6)
        .map(|i| (format!("p{}r{}", i / 3, i % 3), 0))
        .collect();
    let names: Vec<String> = (0..3).map(|q| format!("p1r{q}")).collect();
    let mut replicas = Vec::new();
    for q in 0..3u32 {
        let store =
            Arc::new(Store::create(&StoreConfig::new(&dir, names[q as usize].clone())).unwrap());
        let control = ControlServer::start(&store, SECRET).unwrap();
        let me = Member {
            partition: 1,
            replica: q,
        };
        let t = ShmTransport::new(&dir, SECRET).unwrap();
        let coord = Coordinator::create(store.clone(), t, layout, me, &all).unwrap();
        assert_eq!(coord.region(), 0);
        let t = ShmTransport::new(&dir, SECRET).unwrap();
        let tl = TransferLayout {
            replicas: 3,
            slot_bytes: 1 << 16,
        };
        let transfer = Transfer::create(store.clone(), t, tl, q, &names)
            .unwrap()
            .ring_peers_in(&dir)
            .with_coordination(0, 3);
        replicas.push((
            coord,
            Arc::new(Replica {
                transfer,
                store,
                _control: control,
            }),
        ));
    }
    // Replica 1 (next in the ring) is at 30; replica 2 executed 40 and says so.
    let r: Vec<Arc<Replica>> = replicas.iter().map(|(_, r)| r.clone()).collect();
    r[1].store.set(b"k", b"at-30", 30).unwrap();
    r[1].transfer.publish(Prefix {
        ts: 30,
        applied: 3,
        digest: [3; 32],
    });
    r[2].store.set(b"k", b"at-40", 40).unwrap();
    r[2].transfer.publish(Prefix {
        ts: 40,
        applied: 4,
        digest: [4; 32],
    });
    replicas[2].0.announce(40, PHASE_EXECUTED, &[1]).unwrap();
    let (_s1, _s2) = (serve(&r[1]), serve(&r[2]));
    let t = &r[0].transfer;
    let mut c = t.begin_catch_up(
        40,
        0,
        "test",
        Duration::from_secs(20),
        Duration::from_secs(10),
    );
    let later = std::time::Instant::now() + Duration::from_secs(20);
    let done = t.catch_up_until(&mut c, later).unwrap().unwrap();
    assert_eq!((done.from, done.prefix.ts, done.objects), (2, 40, 1));
    assert_eq!(r[1].transfer.request_of(0).unwrap(), None);
}
