//! Several replicas in one process, each with its own store and coordination region, writing
//! into each other's regions over `shm` (ringing doorbells) and once over `tcp` (polling), on
//! their own threads.

use remora_core::{
    ControlServer, ShmTransport, Store, StoreConfig, TcpServer, TcpTransport, Transport,
};
use remora_heron::{
    Coordinator, Entry, Layout, Member, Progress, WaitOptions, PHASE_DELIVERED, PHASE_EXECUTED,
};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"test-cluster-secret-0123456789";
/// Every replica creates its coordination region first, so it is region 0 everywhere.
const REGION: u32 = 0;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("remora-heron-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn name(h: u32, q: u32) -> String {
    format!("p{h}r{q}")
}

struct Replica<T: Transport + 'static> {
    coord: Coordinator<T>,
    store: Arc<Store>,
    _control: ControlServer,
}

fn shm_replicas(dir: &Dir, layout: Layout, skip: &[Member]) -> Vec<Arc<Replica<ShmTransport>>> {
    let peers: Vec<(String, u32)> = (0..layout.partitions)
        .flat_map(|h| (0..layout.replicas).map(move |q| (name(h, q), REGION)))
        .collect();
    let mut out = Vec::new();
    for h in 0..layout.partitions {
        for q in 0..layout.replicas {
            let me = Member {
                partition: h,
                replica: q,
            };
            if skip.contains(&me) {
                continue;
            }
            let mut cfg = StoreConfig::new(&dir.0, name(h, q));
            cfg.region_bytes = 64 * 1024;
            let store = Arc::new(Store::create(&cfg).unwrap());
            let control = ControlServer::start(&store, SECRET).unwrap();
            let t = ShmTransport::new(&dir.0, SECRET).unwrap();
            let coord = Coordinator::create(store.clone(), t, layout, me, &peers)
                .unwrap()
                .ring_doorbells(&dir.0);
            assert_eq!(coord.region(), REGION);
            out.push(Arc::new(Replica {
                coord,
                store,
                _control: control,
            }));
        }
    }
    out
}

const OPTS: WaitOptions = WaitOptions::new(Duration::from_millis(200), Duration::from_secs(20));

/// Transaction `ts` of the test workload: odd ones involve both partitions, even ones only
/// partition `ts / 2 % 2` (and skip coordination, as single-partition transactions do).
fn involved(ts: u64) -> Vec<u32> {
    if ts % 2 == 1 {
        vec![0, 1]
    } else {
        vec![(ts / 2 % 2) as u32]
    }
}

#[test]
fn all_replicas_coordinate_every_multi_partition_transaction() {
    let dir = Dir::new("all");
    let layout = Layout::new(2, 3).unwrap();
    let replicas = shm_replicas(&dir, layout, &[]);
    let threads: Vec<_> = replicas
        .iter()
        .map(|r| {
            let r = r.clone();
            std::thread::spawn(move || {
                r.coord.connect(Duration::from_secs(10)).unwrap();
                let mut last = 0;
                for ts in 1..=200u64 {
                    let parts = involved(ts);
                    if parts.len() == 1 {
                        continue;
                    }
                    for phase in [PHASE_DELIVERED, PHASE_EXECUTED] {
                        let got = r.coord.coordinate(ts, phase, &parts, OPTS).unwrap();
                        // Nobody is slow enough to outlast the grace wait here.
                        assert!(got.complete, "ts {ts} phase {phase}: {got:?}");
                        assert_eq!(got.replicas, vec![(0, vec![0, 1, 2]), (1, vec![0, 1, 2])]);
                        assert_eq!(got.failed_writes, 0);
                    }
                    last = ts;
                }
                last
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 199);
    }
    for r in &replicas {
        let me = r.coord.member();
        let entries = r.coord.entries().unwrap();
        assert_eq!(entries.len(), 6);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                *e,
                Entry {
                    ts: 199,
                    phase: PHASE_EXECUTED
                },
                "entry {i} at {me:?}"
            );
        }
    }
}

#[test]
fn a_missing_replica_costs_one_grace_wait_not_progress() {
    let dir = Dir::new("minority");
    let layout = Layout::new(2, 3).unwrap();
    let gone = Member {
        partition: 1,
        replica: 2,
    };
    let replicas = shm_replicas(&dir, layout, &[gone]);
    let barrier = Arc::new(Barrier::new(replicas.len()));
    let threads: Vec<_> = replicas
        .iter()
        .map(|r| {
            let (r, barrier) = (r.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let got = r
                    .coord
                    .coordinate(7, PHASE_DELIVERED, &[0, 1], OPTS)
                    .unwrap();
                assert!(!got.complete);
                assert_eq!(got.replicas, vec![(0, vec![0, 1, 2]), (1, vec![0, 1])]);
                // The replica that was never started cannot be written.
                assert_eq!(got.failed_writes, 1);
                assert!(got.waited >= OPTS.grace, "{got:?}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn no_majority_is_an_error_after_the_timeout() {
    let dir = Dir::new("nomajority");
    let layout = Layout::new(2, 3).unwrap();
    let replicas = shm_replicas(
        &dir,
        layout,
        &[
            Member {
                partition: 1,
                replica: 1,
            },
            Member {
                partition: 1,
                replica: 2,
            },
        ],
    );
    let opts = WaitOptions::new(Duration::ZERO, Duration::from_millis(100));
    let err = replicas[0]
        .coord
        .coordinate(3, PHASE_DELIVERED, &[0, 1], opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("no majority for phase 2 of transaction 3 within "),
        "{err}"
    );
    assert!(
        err.ends_with("partition 0 has 1 of the 2 replicas needed"),
        "{err}"
    );
    let bad = replicas[0]
        .coord
        .announce(3, PHASE_DELIVERED, &[0, 2])
        .unwrap_err();
    assert_eq!(
        bad.to_string(),
        "bad coordination request: partition 2 out of range: the cluster has 2"
    );
    let twice = replicas[0]
        .coord
        .wait(3, PHASE_DELIVERED, &[1, 1], opts)
        .unwrap_err();
    assert_eq!(
        twice.to_string(),
        "bad coordination request: partition 1 given twice"
    );
}

#[test]
fn coordination_works_over_tcp() {
    let dir = Dir::new("tcp");
    let layout = Layout::new(1, 3).unwrap();
    // Bind first: peers are named by address.
    let mut stores = Vec::new();
    let mut servers = Vec::new();
    for q in 0..3 {
        let mut cfg = StoreConfig::new(&dir.0, name(0, q));
        cfg.region_bytes = 64 * 1024;
        let store = Arc::new(Store::create(&cfg).unwrap());
        let server = TcpServer::start(&store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
        stores.push(store);
        servers.push(server);
    }
    let peers: Vec<(String, u32)> = servers
        .iter()
        .map(|s| (s.local_addr().to_string(), REGION))
        .collect();
    let coords: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(q, store)| {
            let me = Member {
                partition: 0,
                replica: q as u32,
            };
            let t = TcpTransport::new(SECRET).unwrap();
            Arc::new(Coordinator::create(store, t, layout, me, &peers).unwrap())
        })
        .collect();
    let threads: Vec<_> = coords
        .iter()
        .map(|c| {
            let c = c.clone();
            std::thread::spawn(move || {
                c.connect(Duration::from_secs(10)).unwrap();
                for ts in 1..=20 {
                    let got = c.coordinate(ts, PHASE_EXECUTED, &[0], OPTS).unwrap();
                    assert_eq!(got.replicas[0].1.len(), 3, "{got:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Two replicas of one partition over `shm`, connected.
fn pair(dir: &Dir) -> (Arc<Replica<ShmTransport>>, Arc<Replica<ShmTransport>>) {
    let replicas = shm_replicas(dir, Layout::new(1, 2).unwrap(), &[]);
    for r in &replicas {
        r.coord.connect(Duration::from_secs(10)).unwrap();
    }
    (replicas[0].clone(), replicas[1].clone())
}

/// Waits (bounded) until `r` has a wait asleep on its doorbell.
fn until_asleep(r: &Replica<ShmTransport>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.coord.sleepers() == 0 {
        assert!(Instant::now() < deadline, "the waiter never went to sleep");
        std::thread::yield_now();
    }
}

#[test]
fn a_sleeping_waiter_is_woken_by_its_peers_announcement() {
    let dir = Dir::new("doorbell");
    let (a, b) = pair(&dir);
    let opts = WaitOptions {
        spin: Duration::ZERO,
        ..WaitOptions::new(Duration::ZERO, Duration::from_secs(20))
    };
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let a = a.clone();
        std::thread::spawn(move || {
            tx.send(a.coord.coordinate(5, PHASE_DELIVERED, &[0], opts))
                .is_ok()
        })
    };
    until_asleep(&a);
    assert_eq!(b.coord.announce(5, PHASE_DELIVERED, &[0]).unwrap(), 0);
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the announcement did not wake the waiter")
        .unwrap();
    assert!(waiter.join().unwrap());
    assert!(got.complete, "{got:?}");
    assert_eq!(got.replicas, vec![(0, vec![0, 1])]);
    assert_eq!(got.masks, vec![0b11]);
    assert!(got.sleeps >= 1, "{got:?}");
    assert_eq!(a.coord.sleepers(), 0);
}

#[test]
fn a_budgeted_wait_stops_pending_and_resumes_from_its_start() {
    let dir = Dir::new("budget");
    let (a, b) = pair(&dir);
    let opts = WaitOptions::new(Duration::ZERO, Duration::from_secs(20));
    let started = Instant::now();
    let pending = match a
        .coord
        .coordinate_within(9, PHASE_EXECUTED, &[0], opts, Duration::from_millis(2))
        .unwrap()
    {
        Progress::Pending(p) => p,
        Progress::Reached(r) => panic!("reached without the peer: {r:?}"),
    };
    assert_eq!(pending.target(), (9, PHASE_EXECUTED));
    assert!(started.elapsed() >= Duration::from_millis(2));
    // The peer is still at an earlier phase of the same transaction: not enough.
    b.coord.announce(9, PHASE_DELIVERED, &[0]).unwrap();
    let pending = match a.coord.advance(pending, Duration::ZERO).unwrap() {
        Progress::Pending(p) => p,
        Progress::Reached(r) => panic!("phase 2 counted as phase 4: {r:?}"),
    };
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let a = a.clone();
        std::thread::spawn(move || tx.send(a.coord.advance(pending, Duration::MAX)).is_ok())
    };
    until_asleep(&a);
    b.coord.announce(9, PHASE_EXECUTED, &[0]).unwrap();
    let got = match rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap() {
        Progress::Reached(r) => r,
        Progress::Pending(p) => panic!("an unbounded wait came back pending: {p:?}"),
    };
    assert!(waiter.join().unwrap());
    assert!(got.complete);
    // Timed from the first call, not from the resumption.
    assert!(got.waited >= Duration::from_millis(2), "{got:?}");
    assert_eq!(got.majority_after, got.waited);
    assert_eq!(got.failed_writes, 0);
}

#[test]
fn lockstep_replicas_coordinate_within_a_budget() {
    let dir = Dir::new("lockstep");
    let (a, b) = pair(&dir);
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|r| {
            std::thread::spawn(move || {
                for ts in 1..=300u64 {
                    for phase in [PHASE_DELIVERED, PHASE_EXECUTED] {
                        let got = match r
                            .coord
                            .coordinate_within(ts, phase, &[0], OPTS, Duration::from_millis(1))
                            .unwrap()
                        {
                            Progress::Reached(got) => got,
                            // A descheduled peer pushes a round past its budget.
                            Progress::Pending(p) => {
                                match r.coord.advance(p, Duration::MAX).unwrap() {
                                    Progress::Reached(got) => got,
                                    Progress::Pending(p) => panic!("{p:?}"),
                                }
                            }
                        };
                        assert!(got.complete, "ts {ts} phase {phase}: {got:?}");
                        assert_eq!(got.masks, vec![0b11]);
                        assert_eq!(got.replicas, vec![(0, vec![0, 1])]);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_spin_that_keeps_failing_is_skipped_then_tried_again() {
    let dir = Dir::new("spinscore");
    let (a, b) = pair(&dir);
    let opts = WaitOptions {
        spin: Duration::from_micros(200),
        ..WaitOptions::new(Duration::ZERO, Duration::from_secs(20))
    };
    // Each wait spins in vain, sleeps, and is woken by the peer.
    let mut spins = Vec::new();
    for ts in 1..=24u64 {
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || {
                tx.send(a.coord.coordinate(ts, PHASE_EXECUTED, &[0], opts))
                    .is_ok()
            })
        };
        until_asleep(&a);
        b.coord.announce(ts, PHASE_EXECUTED, &[0]).unwrap();
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        assert!(waiter.join().unwrap());
        assert!(got.sleeps >= 1, "{got:?}");
        spins.push(got.spin > Duration::ZERO);
    }
    // Five failed spins bring the score under the threshold; from then on only every 16th
    // wait spins, to notice if spinning pays again.
    let expected: Vec<bool> = (0..24).map(|i| i < 5 || i == 5 + 15).collect();
    assert_eq!(spins, expected);
    // Another phase has its own score.
    b.coord.announce(25, PHASE_DELIVERED, &[0]).unwrap();
    let got = a.coord.coordinate(25, PHASE_DELIVERED, &[0], opts).unwrap();
    assert_eq!(got.spin, opts.spin);
}

/// A peer whose server accepts connections but never answers (a stopped process): the first
/// write to it waits for the transport's timeout; later announcements do not wait again, and a
/// thread keeps writing the latest entry, which lands once the peer answers.
#[test]
fn over_tcp_a_silent_peer_costs_one_timeout_and_gets_the_latest_entry_when_it_answers() {
    let dir = Dir::new("silent");
    let layout = Layout::new(1, 3).unwrap();
    let timeout = Duration::from_millis(500);
    let mut stores = Vec::new();
    let mut servers = Vec::new();
    for q in 0..2 {
        let mut cfg = StoreConfig::new(&dir.0, name(0, q));
        cfg.region_bytes = 64 * 1024;
        let store = Arc::new(Store::create(&cfg).unwrap());
        servers.push(TcpServer::start(&store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap());
        stores.push(store);
    }
    // Replica 2's address, where nothing answers yet: the kernel completes connections into
    // the listener's backlog, and nobody reads them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let peers = vec![
        (servers[0].local_addr().to_string(), REGION),
        (servers[1].local_addr().to_string(), REGION),
        (silent_addr.to_string(), REGION),
    ];
    let t = TcpTransport::new(SECRET).unwrap().with_timeout(timeout);
    let me = Member {
        partition: 0,
        replica: 0,
    };
    let coord = Coordinator::create(stores[0].clone(), t, layout, me, &peers).unwrap();
    // Replica 1 answers: it has its coordination region.
    let second = Member {
        partition: 0,
        replica: 1,
    };
    let t = TcpTransport::new(SECRET).unwrap();
    let _second = Coordinator::create(stores[1].clone(), t, layout, second, &peers).unwrap();
    let started = Instant::now();
    assert_eq!(coord.announce(1, PHASE_EXECUTED, &[0]).unwrap(), 1);
    assert!(started.elapsed() >= timeout, "the first write did not wait");
    // Ten more announcements: none waits for the silent peer again (each would take `timeout`).
    let started = Instant::now();
    for ts in 2..=11 {
        assert_eq!(coord.announce(ts, PHASE_EXECUTED, &[0]).unwrap(), 1);
    }
    assert!(
        started.elapsed() < timeout * 5,
        "announcements waited for the silent peer: {:?}",
        started.elapsed()
    );
    // The peer answers at last, at the same address: the latest entry lands there.
    drop(silent);
    let mut cfg = StoreConfig::new(&dir.0, name(0, 2));
    cfg.region_bytes = 64 * 1024;
    let store = Arc::new(Store::create(&cfg).unwrap());
    let _server = TcpServer::start(&store, SECRET, silent_addr).unwrap();
    let t = TcpTransport::new(SECRET).unwrap();
    let me = Member {
        partition: 0,
        replica: 2,
    };
    let third = Coordinator::create(store, t, layout, me, &peers).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while third.entry(0).unwrap()
        != (Entry {
            ts: 11,
            phase: PHASE_EXECUTED,
        })
    {
        assert!(Instant::now() < deadline, "the latest entry never landed");
        std::thread::yield_now();
    }
    // Writes go inline again once the retry thread has let go of the peer. It does so just after
    // its write lands, so an announcement made in between is still handed to it (and counted as
    // skipped): the first that is not must be written, and visible, at once.
    let mut ts = 12;
    while coord.announce(ts, 2, &[0]).unwrap() != 0 {
        assert!(Instant::now() < deadline, "writes never went inline again");
        ts += 1;
        std::thread::yield_now();
    }
    assert_eq!(third.entry(0).unwrap(), Entry { ts, phase: 2 });
}

/// A peer descheduled between the two words of its entry leaves that entry torn for as long as
/// it is off the CPU. A wait counts it as not announced yet (and returns once the grace ends,
/// without it), instead of failing the replica; once the writer finishes, the next wait sees it.
#[test]
fn a_torn_entry_counts_as_not_yet_announced() {
    let dir = Dir::new("torn-entry");
    let layout = Layout {
        partitions: 1,
        replicas: 3,
    };
    let r = shm_replicas(&dir, layout, &[]);
    let ts = 7;
    r[1].coord.announce(ts, PHASE_DELIVERED, &[0]).unwrap();
    // Replica 2 was at ⟨5, phase 4⟩ and got as far as the first word of ⟨7, phase 2⟩.
    let index = layout.index(0, 2);
    let old = remora_heron::entry::encode(
        Entry {
            ts: 5,
            phase: PHASE_EXECUTED,
        },
        index,
    );
    let new = remora_heron::entry::encode(
        Entry {
            ts,
            phase: PHASE_DELIVERED,
        },
        index,
    );
    let torn = [&new[..8], &old[8..]].concat();
    let at = (remora_core::region::REGION_HEADER_BYTES + index * remora_heron::ENTRY_BYTES) as u64;
    r[0].store.write_region(REGION, at, &torn).unwrap();
    assert!(r[0].coord.entry(index).is_err(), "the entry reads as torn");

    let quick = WaitOptions::new(Duration::from_millis(20), Duration::from_secs(5));
    let got = r[0]
        .coord
        .coordinate(ts, PHASE_DELIVERED, &[0], quick)
        .unwrap();
    assert_eq!(got.masks, vec![0b011]);
    assert!(!got.complete, "the torn entry was not counted");

    // The writer resumes and stores its second word.
    r[0].store.write_region(REGION, at, &new).unwrap();
    let got = r[0].coord.wait(ts, PHASE_DELIVERED, &[0], quick).unwrap();
    assert_eq!(got.masks, vec![0b111]);
    assert!(got.complete);
}
