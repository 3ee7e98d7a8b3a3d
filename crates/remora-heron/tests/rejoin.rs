//! A restarted replica's coordination: its new incarnation has a new coordination region (a
//! new file over `shm`, a new server, at a new address, over `tcp`). Peers attached to the dead
//! one write into its memory without an error; `Coordinator::reattach` moves them to the new
//! one and writes their latest entry there, waking a waiter.

use remora_core::{ControlServer, ShmTransport, Store, StoreConfig, TcpServer, TcpTransport};
use remora_heron::{Coordinator, Entry, Layout, Member, WaitOptions, PHASE_EXECUTED};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"test-cluster-secret-0123456789";
const REGION: u32 = 0;
const OPTS: WaitOptions = WaitOptions::new(Duration::from_millis(200), Duration::from_secs(20));

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("remora-rejoin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn name(q: u32) -> String {
    format!("p0r{q}")
}

fn member(q: u32) -> Member {
    Member {
        partition: 0,
        replica: q,
    }
}

fn store(dir: &Dir, q: u32) -> Arc<Store> {
    let mut cfg = StoreConfig::new(&dir.0, name(q));
    cfg.region_bytes = 64 * 1024;
    Arc::new(Store::create(&cfg).unwrap())
}

/// One replica over `shm`; the control server answers peers' attach handshakes.
struct ShmReplica {
    coord: Arc<Coordinator<ShmTransport>>,
    _control: ControlServer,
}

fn shm_replica(dir: &Dir, layout: Layout, q: u32) -> ShmReplica {
    let peers: Vec<(String, u32)> = (0..layout.replicas).map(|p| (name(p), REGION)).collect();
    let s = store(dir, q);
    let control = ControlServer::start(&s, SECRET).unwrap();
    let t = ShmTransport::new(&dir.0, SECRET).unwrap();
    let coord = Coordinator::create(s, t, layout, member(q), &peers)
        .unwrap()
        .ring_doorbells(&dir.0);
    ShmReplica {
        coord: Arc::new(coord),
        _control: control,
    }
}

fn until_asleep<T: remora_core::Transport>(c: &Coordinator<T>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.sleepers() == 0 {
        assert!(Instant::now() < deadline, "the waiter never went to sleep");
        std::thread::yield_now();
    }
}

#[test]
fn a_peer_reattached_to_a_restarted_replica_writes_its_new_region_and_wakes_it() {
    let dir = Dir::new("shm");
    let layout = Layout::new(1, 3).unwrap();
    let a = shm_replica(&dir, layout, 0);
    let _b = shm_replica(&dir, layout, 1);
    let c = shm_replica(&dir, layout, 2);
    a.coord.connect(Duration::from_secs(10)).unwrap();
    a.coord.announce(5, PHASE_EXECUTED, &[0]).unwrap();
    assert_eq!(
        c.coord.entry(0).unwrap(),
        Entry {
            ts: 5,
            phase: PHASE_EXECUTED
        }
    );

    // Replica 2 crashes and restarts: a new store, so a new coordination file.
    drop(c);
    let c = shm_replica(&dir, layout, 2);
    // A still writes through its mapping of the dead file, and nothing fails to tell it.
    assert_eq!(a.coord.announce(6, 2, &[0]).unwrap(), 0);
    assert_eq!(c.coord.entry(0).unwrap(), Entry { ts: 0, phase: 0 });

    // The restarted replica waits for a majority of ⟨6, 2⟩: itself and A, once A re-attaches.
    let waiter = {
        let c = c.coord.clone();
        std::thread::spawn(move || c.coordinate(6, 2, &[0], OPTS))
    };
    until_asleep(&c.coord);
    assert!(
        !a.coord.reattach(2, None).unwrap(),
        "the write into the new region failed"
    );
    let got = waiter.join().unwrap().unwrap();
    assert_eq!(got.masks, vec![0b101]);
    assert!(got.sleeps >= 1, "{got:?}");
    assert_eq!(c.coord.entry(0).unwrap(), Entry { ts: 6, phase: 2 });

    // From now on A's announcements land in the new region.
    a.coord.announce(7, PHASE_EXECUTED, &[0]).unwrap();
    assert_eq!(
        c.coord.entry(0).unwrap(),
        Entry {
            ts: 7,
            phase: PHASE_EXECUTED
        }
    );
}

#[test]
fn reattach_refuses_itself_and_entries_out_of_range() {
    let dir = Dir::new("refuse");
    let layout = Layout::new(1, 3).unwrap();
    let a = shm_replica(&dir, layout, 0);
    assert_eq!(
        a.coord.reattach(0, None).unwrap_err().to_string(),
        "bad coordination request: entry 0 is this replica's own: it does not re-attach to itself"
    );
    assert_eq!(
        a.coord.reattach(3, None).unwrap_err().to_string(),
        "bad coordination request: entry 3 out of range: the layout has 3"
    );
    // Nothing announced yet: nothing to write, nothing attached.
    assert!(!a.coord.reattach(1, None).unwrap());
}

/// One replica over `tcp`, its store served at an address of its own.
struct TcpReplica {
    coord: Arc<Coordinator<TcpTransport>>,
    server: TcpServer,
}

fn tcp_replica(dir: &Dir, layout: Layout, q: u32, peers: &[(String, u32)]) -> TcpReplica {
    let s = store(dir, q);
    let server = TcpServer::start(&s, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
    let t = TcpTransport::new(SECRET).unwrap();
    let coord = Coordinator::create(s, t, layout, member(q), peers).unwrap();
    TcpReplica {
        coord: Arc::new(coord),
        server,
    }
}

#[test]
fn over_tcp_a_restarted_replica_is_reached_at_its_new_address() {
    let dir = Dir::new("tcp");
    let layout = Layout::new(1, 3).unwrap();
    // Replica 0 is started last, knowing where the others are; they never write to it here.
    let placeholder: Vec<(String, u32)> = (0..3).map(|q| (name(q), REGION)).collect();
    let b = tcp_replica(&dir, layout, 1, &placeholder);
    let c = tcp_replica(&dir, layout, 2, &placeholder);
    let addr = |r: &TcpReplica| r.server.local_addr().to_string();
    let peers = vec![(name(0), REGION), (addr(&b), REGION), (addr(&c), REGION)];
    let a = tcp_replica(&dir, layout, 0, &peers);
    a.coord.connect(Duration::from_secs(10)).unwrap();
    a.coord.announce(5, PHASE_EXECUTED, &[0]).unwrap();
    assert_eq!(c.coord.entry(0).unwrap().ts, 5);

    // Replica 2 restarts at another port: A's writes to the old one fail (it is gone).
    let old = addr(&c);
    drop(c);
    let c = tcp_replica(&dir, layout, 2, &placeholder);
    assert_ne!(addr(&c), old);
    assert_eq!(a.coord.announce(6, PHASE_EXECUTED, &[0]).unwrap(), 1);
    assert!(!a.coord.reattach(2, Some(&addr(&c))).unwrap());
    assert_eq!(
        c.coord.entry(0).unwrap(),
        Entry {
            ts: 6,
            phase: PHASE_EXECUTED
        }
    );
    assert_eq!(a.coord.announce(7, 2, &[0]).unwrap(), 0);
    assert_eq!(c.coord.entry(0).unwrap(), Entry { ts: 7, phase: 2 });
    drop(b);
}
