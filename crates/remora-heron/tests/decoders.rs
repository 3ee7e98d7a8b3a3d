//! Property tests of what a replica decodes out of memory its peers write one-sidedly:
//! coordination entries (`entry::decode`) and state-transfer requests and shipments
//! (`Transfer::take_requests`, `Transfer::receive`). A peer may write any bytes there.
//!
//! - arbitrary bytes never panic a decoder, and what one accepts is something a writer could
//!   have written;
//! - encode → decode round-trips;
//! - a bit-flipped or truncated (torn) valid entry or shipment chunk is refused, or decodes
//!   to a valid one.

use proptest::collection::vec;
use proptest::prelude::*;
use remora_core::region::REGION_HEADER_BYTES;
use remora_core::{ControlServer, Lookup, ShmTransport, Store, StoreConfig};
use remora_heron::entry::{decode, encode, Entry, ENTRY_BYTES};
use remora_heron::transfer::{Prefix, Received};
use remora_heron::{Transfer, TransferLayout};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Where replica 1's chunk `seq` lands in replica 0's landing region.
    fn lane(&self, seq: u64) -> (u32, u64) {
        (
            self.transfers[0].regions().1,
            self.layout.lane_offset(1, seq),
        )
    }

    /// Chunk 0 of request `number`, installed if it is whole and well formed.
    fn landed(&self, number: u32) -> remora_heron::Result<Received> {
        self.transfers[0].receive(1, number, Duration::ZERO)
    }
}

/// A chunk header: request number, chunk number, length, last flag, check.
fn header(number: u64, seq: u64, last: u64, data: &[u8], check: Option<u64>) -> Vec<u8> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for w in [number, seq, data.len() as u64, last] {
        h.update(&w.to_le_bytes());
    }
    h.update(data);
    [
        number,
        seq,
        data.len() as u64,
        last,
        check.unwrap_or(h.digest()),
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect()
}

/// Whatever bytes a peer leaves in a landing lane or a request region, the lagger's and the
/// server's decoders never panic; a chunk they accept is checked, and its stream well formed.
#[test]
fn arbitrary_landing_and_request_bytes_never_panic() {
    let p = pair("arbitrary", 512);
    let (landing, at) = p.lane(0);
    let requests = p.transfers[0].regions().0;
    proptest!(|(raw in vec(any::<u8>(), 40), checked in any::<bool>(), data in vec(any::<u8>(), 0..300), number in any::<u32>(), request in vec(any::<u8>(), 32))| {
        // Arbitrary header words, or a header whose check covers arbitrary data: the stream
        // decoder then sees whatever a peer wrote.
        let head = if checked { header(u64::from(number), 0, 1, &data, None) } else { raw };
        p.stores[0].write_region(landing, at + 64, &data).unwrap();
        p.stores[0].write_region(landing, at, &head).unwrap();
        if let Ok(Received::Installed(got)) = p.landed(number) {
            prop_assert!(checked || head == header(u64::from(number), 0, 1, &data, None));
            prop_assert_eq!(got.bytes, data.len() as u64);
        }
        // Request entries, as a peer could write them.
        p.stores[0].write_region(requests, REGION_HEADER_BYTES as u64 + 64, &request[..16]).unwrap();
        p.stores[0].write_region(requests, REGION_HEADER_BYTES as u64 + 128, &request[16..]).unwrap();
        for r in p.transfers[0].take_requests().unwrap() {
            prop_assert_eq!(r.replica, 1, "replica 0 does not ask itself");
            prop_assert!(r.number != 0);
        }
    });
}

/// A shipment lands whole; flipping any bit of it, or cutting its data short (a torn
/// landing: the header of a longer chunk over shorter data), is refused or valid.
#[test]
fn shipments_round_trip_and_damaged_ones_are_refused_or_valid() {
    let p = pair("roundtrip", 1024);
    let (landing, at) = p.lane(0);
    let next = AtomicU64::new(0);
    proptest!(|(value in vec(any::<u8>(), 0..300), bit in any::<usize>(), cut in any::<usize>())| {
        // A new version per case, shipped to a lagger that has every earlier one.
        let ts = next.fetch_add(1, Ordering::Relaxed) + 1;
        p.stores[1].set(b"k", &value, ts).unwrap();
        p.transfers[1].publish(Prefix { ts, applied: ts, digest: [1; 32] });
        let number = p.transfers[0].request(1, ts - 1).unwrap();
        let req = p.transfers[1].take_requests().unwrap();
        prop_assert_eq!(req.len(), 1);
        p.transfers[1].serve(req[0]).unwrap();
        match p.landed(number).unwrap() {
            Received::Installed(got) => prop_assert_eq!((got.prefix.ts, got.objects), (ts, 1)),
            other => prop_assert!(false, "not installed: {:?}", other),
        }
        prop_assert_eq!(p.stores[0].get(b"k").unwrap(), Lookup::Value { ts, value: value.clone() });

        let mut head = [0u8; 40];
        p.stores[0].read_region(landing, at, &mut head).unwrap();
        let len = u64::from_le_bytes(head[16..24].try_into().unwrap()) as usize;
        let mut landed = vec![0u8; 64 + len];
        p.stores[0].read_region(landing, at, &mut landed).unwrap();
        let mut flipped = landed.clone();
        let bit = bit % (flipped.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        p.stores[0].write_region(landing, at, &flipped).unwrap();
        // Refused, or the flip missed every checked byte (the header line's padding).
        if let Ok(Received::Installed(_)) = p.landed(number) {
            prop_assert!((40..64).contains(&(bit / 8)), "bit {} accepted", bit);
        }

        // Torn: the header says `len` bytes but only a prefix of them landed.
        let keep = 64 + cut % len;
        let mut torn = landed.clone();
        for b in &mut torn[keep..] {
            *b = !*b;
        }
        p.stores[0].write_region(landing, at, &torn).unwrap();
        prop_assert!(!matches!(p.landed(number), Ok(Received::Installed(_))));
    });
}
