//! State transfer between three replicas of one partition, each with its own store, over
//! `shm`: a lagger asks one server, and when that one never answers (it is not running its
//! serving side) it asks the next, which ships; torn or oversized shipments are refused.

use remora_core::{ControlServer, ShmTransport, Store, StoreConfig};
use remora_heron::{Request, Transfer, TransferLayout};
use std::path::PathBuf;
use std::sync::Arc;
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
    _control: ControlServer,
}

fn replicas(tag: &str, slot_bytes: usize) -> (Dir, Vec<Arc<Replica>>) {
    let dir = std::env::temp_dir().join(format!("remora-transfer-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let names: Vec<String> = (0..3).map(|q| format!("r{q}")).collect();
    let layout = TransferLayout {
        replicas: 3,
        slot_bytes,
    };
    let mut out = Vec::new();
    for q in 0..3u32 {
        let mut cfg = StoreConfig::new(&dir, names[q as usize].clone());
        cfg.region_bytes = 64 * 1024;
        let store = Arc::new(Store::create(&cfg).unwrap());
        let control = ControlServer::start(&store, SECRET).unwrap();
        let t = ShmTransport::new(&dir, SECRET).unwrap();
        let transfer = Transfer::create(store, t, layout, q, &names).unwrap();
        assert_eq!(transfer.regions(), (0, 1));
        out.push(Arc::new(Replica {
            transfer,
            _control: control,
        }));
    }
    (Dir(dir), out)
}

#[test]
fn a_silent_server_is_replaced_by_the_next() {
    let (_dir, r) = replicas("failover", 1 << 20);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // Replica 1 is asked first and never serves.
    let first = r[0].transfer.request(1, 41).unwrap();
    assert_eq!(
        r[0].transfer
            .wait_shipment(1, first, Duration::from_millis(50))
            .unwrap(),
        None
    );
    let second = r[0].transfer.request(2, 41).unwrap();
    assert_eq!((first, second), (1, 2));
    let server = r[2].clone();
    let shipped = data.clone();
    let serving = std::thread::spawn(move || {
        let got = server
            .transfer
            .wait_requests(Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            got,
            vec![Request {
                replica: 0,
                number: 2,
                since: 41
            }]
        );
        server.transfer.ship(0, 2, &shipped).unwrap();
        // Each request is taken once.
        assert_eq!(server.transfer.take_requests().unwrap(), vec![]);
    });
    let landed = r[0]
        .transfer
        .wait_shipment(2, second, Duration::from_secs(10))
        .unwrap();
    serving.join().unwrap();
    assert_eq!(landed.as_deref(), Some(&data[..]));
    // The silent server sees the old request, but its late answer lands only in its own slot.
    assert_eq!(
        r[1].transfer.take_requests().unwrap(),
        vec![Request {
            replica: 0,
            number: 1,
            since: 41
        }]
    );
    r[1].transfer.ship(0, 1, b"late").unwrap();
    assert_eq!(
        r[0].transfer
            .wait_shipment(2, second, Duration::from_millis(1))
            .unwrap()
            .as_deref(),
        Some(&data[..])
    );
}

#[test]
fn oversized_and_self_transfers_are_refused() {
    let (_dir, r) = replicas("bounds", 1024);
    assert_eq!(
        r[1].transfer.ship(0, 1, &[0u8; 1025]).unwrap_err().to_string(),
        "bad coordination request: a shipment of 1025 bytes does not fit a slot of 1024 bytes: give the cluster larger transfer slots"
    );
    assert_eq!(
        r[1].transfer.request(1, 5).unwrap_err().to_string(),
        "bad coordination request: a replica does not transfer state to itself"
    );
    // A shipment answering another request number is not taken for this one.
    r[1].transfer.ship(0, 7, b"x").unwrap();
    assert_eq!(
        r[0].transfer
            .wait_shipment(1, 8, Duration::from_millis(5))
            .unwrap(),
        None
    );
}
