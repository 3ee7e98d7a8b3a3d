//! Property tests of what a replica decodes out of memory its peers write one-sidedly:
//! coordination entries (`entry::decode`) and state-transfer requests and shipments
//! (`Transfer::take_requests`, `Transfer::wait_shipment`). A peer may write any bytes there.
//!
//! - arbitrary bytes never panic a decoder, and what one accepts is something a writer could
//!   have written;
//! - encode → decode round-trips;
//! - a bit-flipped or truncated (torn) valid entry or shipment is refused, or decodes to a
//!   valid one.

use proptest::collection::vec;
use proptest::prelude::*;
use remora_core::region::REGION_HEADER_BYTES;
use remora_core::{ControlServer, ShmTransport, Store, StoreConfig};
use remora_heron::entry::{decode, encode, Entry, ENTRY_BYTES};
use remora_heron::{Transfer, TransferLayout};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &[u8] = b"heron-decoders-secret-0123456789";

fn entry() -> impl Strategy<Value = Entry> {
    (any::<u64>(), any::<u32>()).prop_map(|(ts, phase)| Entry { ts, phase })
}

proptest! {
    #[test]
    fn arbitrary_entries_never_panic_and_only_canonical_ones_decode(bytes in any::<[u8; ENTRY_BYTES]>(), index in 0usize..1 << 15) {
        if let Some(e) = decode(&bytes, index) {
            // The all-zero initial entry, or exactly what a writer at this index writes.
            prop_assert!(bytes == [0; ENTRY_BYTES] || encode(e, index) == bytes);
        }
    }

    #[test]
    fn entries_round_trip_and_flipped_ones_are_refused_or_valid(e in entry(), index in 0usize..1 << 15, bit in 0usize..ENTRY_BYTES * 8, other in 0usize..1 << 15) {
        let bytes = encode(e, index);
        prop_assert_eq!(decode(&bytes, index), Some(e));
        if other != index && e != Entry::default() {
            prop_assert_eq!(decode(&bytes, other), None, "an entry read at the wrong place");
        }
        let mut flipped = bytes;
        flipped[bit / 8] ^= 1 << (bit % 8);
        if let Some(got) = decode(&flipped, index) {
            prop_assert!(flipped == [0; ENTRY_BYTES] || encode(got, index) == flipped);
        }
    }

    /// A torn entry: the new timestamp word with the old phase word, or the other way round.
    #[test]
    fn torn_entries_are_refused_or_valid(old in entry(), new in entry(), index in 0usize..64) {
        let (a, b) = (encode(old, index), encode(new, index));
        for torn in [[&a[..8], &b[8..]].concat(), [&b[..8], &a[8..]].concat()] {
            let torn: [u8; ENTRY_BYTES] = torn.try_into().unwrap();
            if let Some(got) = decode(&torn, index) {
                prop_assert!(got == old || got == new || encode(got, index) == torn);
            }
        }
    }
}

/// Two replicas of one partition, each with its own store, over `shm`; removed on drop.
struct Pair {
    stores: Vec<Arc<Store>>,
    transfers: Vec<Transfer<ShmTransport>>,
    _controls: Vec<ControlServer>,
    dir: PathBuf,
    layout: TransferLayout,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.transfers.clear();
        self._controls.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pair(tag: &str, slot_bytes: usize) -> Pair {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "remora-heron-decoders-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let names: Vec<String> = (0..2).map(|q| format!("r{q}")).collect();
    let layout = TransferLayout {
        replicas: 2,
        slot_bytes,
    };
    let (mut stores, mut transfers, mut controls) = (Vec::new(), Vec::new(), Vec::new());
    for q in 0..2u32 {
        let mut cfg = StoreConfig::new(&dir, names[q as usize].clone());
        cfg.region_bytes = 64 * 1024;
        let store = Arc::new(Store::create(&cfg).unwrap());
        controls.push(ControlServer::start(&store, SECRET).unwrap());
        let t = ShmTransport::new(&dir, SECRET).unwrap();
        transfers.push(Transfer::create(store.clone(), t, layout, q, &names).unwrap());
        stores.push(store);
    }
    Pair {
        stores,
        transfers,
        _controls: controls,
        dir,
        layout,
    }
}

impl Pair {
    /// Where replica 1's shipments land in replica 0's landing region.
    fn slot(&self) -> (u32, u64) {
        let stride = (24 + self.layout.slot_bytes).next_multiple_of(64);
        (
            self.transfers[0].regions().1,
            (REGION_HEADER_BYTES + stride) as u64,
        )
    }

    fn landed(&self, number: u32) -> Option<Vec<u8>> {
        self.transfers[0]
            .wait_shipment(1, number, Duration::ZERO)
            .unwrap()
    }
}

fn check(number: u64, data: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&number.to_le_bytes());
    h.update(&(data.len() as u64).to_le_bytes());
    h.update(data);
    h.digest()
}

/// Whatever bytes a peer leaves in a landing slot or a request region, the lagger's and the
/// server's decoders never panic; a shipment they accept is whole and checked.
#[test]
fn arbitrary_landing_and_request_bytes_never_panic() {
    let p = pair("arbitrary", 256);
    let (landing, at) = p.slot();
    let requests = p.transfers[0].regions().0;
    let header = prop_oneof![
        vec(any::<u8>(), 24),
        (any::<u32>(), 0u64..300, any::<u64>()).prop_map(|(n, len, sum)| {
            [
                u64::from(n).to_le_bytes(),
                len.to_le_bytes(),
                sum.to_le_bytes(),
            ]
            .concat()
        }),
    ];
    proptest!(|(header in header, data in vec(any::<u8>(), 0..300), number in any::<u32>(), request in vec(any::<u8>(), 32))| {
        p.stores[0].write_region(landing, at, &header).unwrap();
        p.stores[0].write_region(landing, at + 24, &data).unwrap();
        if let Some(got) = p.landed(number) {
            let len = u64::from_le_bytes(header[8..16].try_into().unwrap());
            let sum = u64::from_le_bytes(header[16..].try_into().unwrap());
            prop_assert_eq!(got.len() as u64, len);
            prop_assert!(got.len() <= p.layout.slot_bytes);
            prop_assert_eq!(check(u64::from(number), &got), sum);
        }
        // Both replicas' request entries, as a peer could write them.
        p.stores[0].write_region(requests, REGION_HEADER_BYTES as u64, &request).unwrap();
        for r in p.transfers[0].take_requests().unwrap() {
            prop_assert_eq!(r.replica, 1, "replica 0 does not ask itself");
            prop_assert!(r.number != 0);
        }
    });
}

/// A shipment lands whole; flipping any bit of it, or cutting its data short (a torn
/// landing: the header of a longer shipment over shorter data), is refused or valid.
#[test]
fn shipments_round_trip_and_damaged_ones_are_refused_or_valid() {
    let p = pair("roundtrip", 512);
    let (landing, at) = p.slot();
    let next = AtomicUsize::new(0);
    proptest!(|(data in vec(any::<u8>(), 0..512), bit in any::<usize>(), cut in any::<usize>())| {
        // A new request number per case, as a lagger draws them.
        let number = next.fetch_add(1, Ordering::Relaxed) as u32 + 1;
        p.transfers[1].ship(0, number, &data).unwrap();
        prop_assert_eq!(p.landed(number), Some(data.clone()));
        prop_assert_eq!(p.landed(number.wrapping_add(1)), None, "a stale shipment");

        let mut landed = vec![0u8; 24 + data.len()];
        p.stores[0].read_region(landing, at, &mut landed).unwrap();
        let mut flipped = landed.clone();
        let bit = bit % (flipped.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        p.stores[0].write_region(landing, at, &flipped).unwrap();
        if let Some(got) = p.landed(number) {
            let len = u64::from_le_bytes(flipped[8..16].try_into().unwrap());
            prop_assert_eq!(got.len() as u64, len);
            prop_assert_eq!(check(u64::from(number), &got), u64::from_le_bytes(flipped[16..24].try_into().unwrap()));
        }

        // Torn: the header says `data.len()` bytes but only a prefix of them landed.
        if !data.is_empty() {
            let keep = cut % data.len();
            let mut torn = landed.clone();
            for b in &mut torn[24 + keep..] {
                *b = !*b;
            }
            p.stores[0].write_region(landing, at, &torn).unwrap();
            prop_assert_eq!(p.landed(number), None);
        }
    });
}
