//! The owner's store and a peer reading it over `shm`, in one process: Heron's version rules,
//! growth across size classes, deletes, bad input, and the control channel's defences.

use remora_core::control::{handshake_client, write_frame, ControlClient, SOCKET_NAME};
use remora_core::slot::{MAX_ID_LEN, MAX_VALUE_LEN};
use remora_core::{
    ControlServer, Error, Lookup, RemoteMemory, RemoteStore, ShmTransport, Store, StoreConfig,
    Transport,
};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

const SECRET: &[u8] = b"test-cluster-secret-0123456789";

struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("remora-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Cluster { dir }
    }
    fn store(&self, name: &str) -> (Arc<Store>, ControlServer) {
        let mut cfg = StoreConfig::new(&self.dir, name);
        cfg.region_bytes = 64 * 1024;
        let store = Arc::new(Store::create(&cfg).expect("create store"));
        let control = ControlServer::start(&store, SECRET).expect("start control");
        (store, control)
    }
    fn peer(&self, name: &str) -> RemoteStore<remora_core::ShmPeer> {
        let t = ShmTransport::new(&self.dir, SECRET).unwrap();
        RemoteStore::new(t.attach(name).expect("attach"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn value(ts: u64, v: &[u8]) -> Lookup {
    Lookup::Value {
        ts,
        value: v.to_vec(),
    }
}

#[test]
fn get_before_follows_heron_and_peers_see_the_same() {
    let c = Cluster::new("versions");
    let (store, _ctl) = c.store("s");
    store.set(b"x", b"one", 10).unwrap();
    store.set(b"x", b"two", 20).unwrap();
    let peer = c.peer("s");
    for (bound, want) in [
        (25, value(20, b"two")),
        (20, value(10, b"one")),
        (10, Lookup::Lagging),
    ] {
        assert_eq!(
            store.get_before(b"x", bound).unwrap(),
            want,
            "owner, bound {bound}"
        );
        let remote = peer.get_before_many(&[(b"x", bound)]).unwrap().remove(0);
        assert_eq!(remote, want, "peer, bound {bound}");
    }
    assert_eq!(store.versions(b"x"), vec![20, 10]);
    store.set(b"x", b"three", 30).unwrap();
    assert_eq!(store.versions(b"x"), vec![30, 20]);
    assert_eq!(peer.get_many(&[b"x"]).unwrap(), vec![value(30, b"three")]);
    assert_eq!(store.get(b"nope").unwrap(), Lookup::Absent);
    assert_eq!(peer.get_many(&[b"nope"]).unwrap(), vec![Lookup::Absent]);
}

#[test]
fn growing_values_move_and_cached_readers_follow() {
    let c = Cluster::new("grow");
    let (store, _ctl) = c.store("s");
    store.set(b"g", &[1u8; 10], 1).unwrap();
    let peer = c.peer("s");
    let before = store.addresses(&[b"g"])[0].unwrap();
    assert_eq!(peer.get_many(&[b"g"]).unwrap(), vec![value(1, &[1u8; 10])]);
    // Grow through several size classes; the peer keeps its first cached address.
    for (ts, len) in [(2u64, 100usize), (3, 5000), (4, 70_000)] {
        store.set(b"g", &vec![ts as u8; len], ts).unwrap();
        assert_eq!(
            peer.get_many(&[b"g"]).unwrap(),
            vec![value(ts, &vec![ts as u8; len])]
        );
    }
    assert_ne!(store.addresses(&[b"g"])[0].unwrap(), before);
    assert!(peer.stats().forwards >= 1, "{:?}", peer.stats());
    // The carried version keeps get_before exact after a move.
    assert_eq!(store.get_before(b"g", 4).unwrap(), value(3, &[3u8; 5000]));
    // Shrinking stays in place.
    let addr = store.addresses(&[b"g"])[0];
    store.set(b"g", b"small", 5).unwrap();
    assert_eq!(store.addresses(&[b"g"])[0], addr);
}

#[test]
fn deletes_are_versions_until_purged() {
    let c = Cluster::new("delete");
    let (store, _ctl) = c.store("s");
    store.set(b"d", b"alive", 5).unwrap();
    store.delete(b"d", 9).unwrap();
    let peer = c.peer("s");
    assert_eq!(store.get(b"d").unwrap(), Lookup::Deleted { ts: 9 });
    assert_eq!(
        peer.get_many(&[b"d"]).unwrap(),
        vec![Lookup::Deleted { ts: 9 }]
    );
    assert_eq!(store.get_before(b"d", 9).unwrap(), value(5, b"alive"));
    assert_eq!(
        store.purge_deleted(9),
        0,
        "a reader at 9 may still need the old version"
    );
    assert_eq!(store.purge_deleted(10), 1);
    assert_eq!(store.get(b"d").unwrap(), Lookup::Absent);
    assert_eq!(peer.get_many(&[b"d"]).unwrap(), vec![Lookup::Absent]);
    // The freed slot is reused by the next object; the stale cache must not alias it.
    store.set(b"e", b"other", 11).unwrap();
    assert_eq!(peer.get_many(&[b"d"]).unwrap(), vec![Lookup::Absent]);
    assert_eq!(peer.get_many(&[b"e"]).unwrap(), vec![value(11, b"other")]);
    store.delete(b"never", 12).unwrap();
    assert_eq!(store.stats().objects, 1);
}

#[test]
fn bad_input_is_rejected_and_changes_nothing() {
    let c = Cluster::new("bad");
    let (store, _ctl) = c.store("s");
    store.set(b"a", b"1", 5).unwrap();
    let long_id = vec![b'i'; MAX_ID_LEN + 1];
    let big = vec![0u8; MAX_VALUE_LEN + 1];
    let cases: Vec<(Vec<remora_core::store::Put>, &str)> = vec![
        (
            vec![(b"b", Some(b"2"), 6), (&long_id, Some(b"x"), 7)],
            "object id must be 1 to 88 bytes, got 89",
        ),
        (
            vec![(b"b", Some(b"2"), 6), (b"", Some(b"x"), 7)],
            "object id must be 1 to 88 bytes, got 0",
        ),
        (
            vec![(b"b", Some(b"2"), 6), (b"c", Some(&big), 7)],
            "value of 1048577 bytes exceeds the maximum of 1048576 bytes",
        ),
        (
            vec![(b"b", Some(b"2"), 6), (b"a", Some(b"x"), 5)],
            "timestamp 5 for object 'a' is not after its current version 5",
        ),
        (
            vec![(b"b", Some(b"2"), 6), (b"b", Some(b"x"), 6)],
            "timestamp 6 for object 'b' is not after its current version 6",
        ),
    ];
    for (batch, msg) in cases {
        let err = store.set_many(&batch).unwrap_err();
        assert_eq!(err.to_string(), msg);
        assert_eq!(
            store.get(b"b").unwrap(),
            Lookup::Absent,
            "batch must not half-apply"
        );
        assert_eq!(store.get(b"a").unwrap(), value(5, b"1"));
    }
    assert!(matches!(
        Store::create(&StoreConfig::new(&c.dir, "../escape")),
        Err(Error::BadName(_))
    ));
    assert!(matches!(
        Store::create(&StoreConfig::new(&c.dir, "s")),
        Err(Error::Owned(_))
    ));
    let peer = c.peer("s");
    assert_eq!(
        peer.memory()
            .read(99, 0, &mut [0u8; 8])
            .unwrap_err()
            .to_string(),
        format!(
            "region 99 does not exist in store '{}'",
            c.dir.join("s").display()
        )
    );
    assert_eq!(
        peer.memory()
            .read(0, 1 << 30, &mut [0u8; 8])
            .unwrap_err()
            .to_string(),
        "access of 8 bytes at offset 1073741824 is outside region 0 (65536 bytes)"
    );
    assert_eq!(
        peer.memory()
            .write(0, 4096, b"evil")
            .unwrap_err()
            .to_string(),
        "region 0 is not remote-writable"
    );
    assert_eq!(store.get(b"a").unwrap(), value(5, b"1"));
}

#[test]
fn regions_are_private_to_the_cluster_and_shared_regions_take_peer_writes() {
    let c = Cluster::new("perm");
    let (store, _ctl) = c.store("s");
    store.set(b"a", b"1", 1).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&c.dir), 0o700);
    assert_eq!(mode(&c.dir.join("s")), 0o700);
    assert_eq!(mode(&c.dir.join("s/region-000000")), 0o600);
    let shared = store.add_shared_region(4096).unwrap();
    let peer = c.peer("s");
    peer.memory()
        .write(shared, 4096 + 8, &42u64.to_le_bytes())
        .unwrap();
    let mut buf = [0u8; 8];
    store.read_region(shared, 4096 + 8, &mut buf).unwrap();
    assert_eq!(u64::from_le_bytes(buf), 42);
}

#[test]
fn the_control_channel_rejects_strangers_and_bad_frames_and_keeps_serving() {
    let c = Cluster::new("control");
    let (store, _ctl) = c.store("s");
    store.set(b"a", b"1", 1).unwrap();
    let sock = c.dir.join("s").join(SOCKET_NAME);

    let wrong = ControlClient::connect(&sock, b"not-the-cluster-secret!!")
        .err()
        .unwrap();
    assert!(
        wrong
            .to_string()
            .contains("the peer does not hold the cluster secret"),
        "{wrong}"
    );

    let mut raw = UnixStream::connect(&sock).unwrap();
    std::io::Write::write_all(&mut raw, b"GET / HTTP/1.1\r\n\r\n------------------------").unwrap();
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw, &mut sink);
    assert!(sink.is_empty(), "a non-Remora peer gets nothing back");

    let mut client = ControlClient::connect(&sock, SECRET).unwrap();
    let unknown = client.call_raw(&[42]).unwrap_err().to_string();
    assert!(unknown.contains("unknown command 42"), "{unknown}");

    let mut s = UnixStream::connect(&sock).unwrap();
    handshake_client(&mut s, SECRET, "test").unwrap();
    write_frame(&mut s, &[1, 5, 0, 0, 0, 3]).unwrap();
    let mut reply = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut reply);
    assert!(
        String::from_utf8_lossy(&reply).contains("truncated"),
        "{reply:?}"
    );

    let mut s = UnixStream::connect(&sock).unwrap();
    handshake_client(&mut s, SECRET, "test").unwrap();
    std::io::Write::write_all(&mut s, &(64u32 << 20).to_le_bytes()).unwrap();
    let mut reply = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut reply);
    assert!(reply.is_empty(), "an oversize frame closes the connection");

    // Still serving, and nothing changed.
    let peer = c.peer("s");
    assert_eq!(peer.get_many(&[b"a"]).unwrap(), vec![value(1, b"1")]);
}

#[test]
fn a_closed_owner_leaves_nothing_behind() {
    let c = Cluster::new("close");
    let (store, ctl) = c.store("s");
    store.set(b"a", b"1", 1).unwrap();
    drop(ctl);
    drop(store);
    assert!(!c.dir.join("s").exists());
    let err = ShmTransport::new(&c.dir, SECRET)
        .unwrap()
        .attach("s")
        .err()
        .unwrap();
    assert!(err.to_string().contains("unreachable"), "{err}");
}

/// What `current_many` answers, as `get_many` would: the owner's unchecked in-place read and
/// the checked one must agree on every object, through moves to larger slots, deletes and
/// purges.
fn current_as_lookups(store: &Store, ids: &[&[u8]]) -> Vec<Lookup> {
    let c = store.current_many(ids.iter().copied());
    assert_eq!(c.kinds.len(), ids.len());
    (0..ids.len())
        .map(|i| {
            let start = if i == 0 { 0 } else { c.ends[i - 1] };
            match c.kinds[i] {
                remora_core::CURRENT_VALUE => value(c.versions[i], &c.values[start..c.ends[i]]),
                remora_core::CURRENT_DELETED => {
                    assert_eq!(start, c.ends[i], "a deletion carries no value");
                    Lookup::Deleted { ts: c.versions[i] }
                }
                k => {
                    assert_eq!(k, remora_core::CURRENT_ABSENT);
                    Lookup::Absent
                }
            }
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn the_owners_current_read_agrees_with_the_checked_one(
        ops in proptest::collection::vec((0u8..6, 0usize..3, 0usize..5000), 1..60),
    ) {
        let c = Cluster::new("current");
        let (store, _ctl) = c.store("s");
        let ids: [&[u8]; 6] = [b"a", b"b", b"c", b"d", b"e", b"never-written"];
        let mut ts = 0u64;
        for (id, op, len) in ops {
            ts += 1;
            let id = ids[usize::from(id) % 5];
            match op {
                0 | 1 => store.set(id, &vec![ts as u8; len], ts).unwrap(),
                _ => store.delete(id, ts).unwrap(),
            }
            if ts.is_multiple_of(17) {
                store.purge_deleted(ts + 1);
            }
            let checked = store.get_many(&ids).unwrap();
            proptest::prop_assert_eq!(current_as_lookups(&store, &ids), checked);
        }
    }
}
