//! A restarted replica's coordination: peers that attached to its previous region file keep
//! writing their entries there; the restarted replica copies each newer one into its new region
//! (never its own, never an older one over a newer one, never a torn one) and rings itself.

use remora_core::region::{Region, REGION_HEADER_BYTES};
use remora_core::{Store, StoreConfig};
use remora_heron::doorbell::{Doorbell, Woke};
use remora_heron::entry::{decode, encode};
use remora_heron::transfer::StaleEntries;
use remora_heron::{Entry, Layout, ENTRY_BYTES};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store with a coordination region of `layout` as region 0.
fn store(dir: &std::path::Path, name: &str, layout: Layout) -> Store {
    let mut cfg = StoreConfig::new(dir, name);
    cfg.region_bytes = 64 * 1024;
    let s = Store::create(&cfg).unwrap();
    assert_eq!(s.add_shared_region(layout.bytes()).unwrap(), 0);
    s
}

fn at(index: usize) -> u64 {
    (REGION_HEADER_BYTES + index * ENTRY_BYTES) as u64
}

fn put(r: &Region, index: usize, ts: u64, phase: u32) {
    r.write(at(index), &encode(Entry { ts, phase }, index))
        .unwrap();
}

fn get(r: &Region, index: usize) -> Option<Entry> {
    let mut b = [0u8; ENTRY_BYTES];
    r.read(at(index), &mut b).unwrap();
    decode(&b, index)
}

fn bell(r: &Region, layout: Layout) -> Doorbell<'_> {
    let w = r
        .words_at((REGION_HEADER_BYTES + layout.doorbell_offset()) as u64, 8)
        .unwrap();
    Doorbell::new(&w[0])
}

#[test]
fn newer_peer_entries_are_copied_from_the_previous_file() {
    let dir = Dir(std::env::temp_dir().join(format!("remora-rejoin-{}", std::process::id())));
    let layout = Layout::new(2, 3).unwrap();
    // Replica 1.2 (entry 5): its dead incarnation's region and its new one.
    let mine = layout.index(1, 2);
    let _old = store(&dir.0, "old", layout);
    let _new = store(&dir.0, "new", layout);
    let old = Region::attach(&dir.0.join("old"), 0).unwrap();
    let new = Region::attach(&dir.0.join("new"), 0).unwrap();
    put(&old, 0, 40, 4);
    put(&old, 1, 41, 2);
    put(&old, 3, 39, 4);
    // Its own entry in the old file describes state it lost: never copied.
    put(&old, mine, 38, 4);
    // A peer already writing into the new region is ahead: not overwritten.
    put(&new, 3, 45, 2);
    // A torn entry (its check does not match) is left for a later pass.
    old.write(at(4), &[0xAB; ENTRY_BYTES]).unwrap();
    let stale =
        StaleEntries::open(layout, mine, (&dir.0.join("new"), 0), &dir.0.join("old")).unwrap();
    let new_bell = bell(&new, layout);
    let waiter = new_bell.prepare();
    assert_eq!(stale.copy_newer().unwrap(), 2);
    // A copy rings the new region's doorbell: a waiter counted in before it does not sleep.
    assert_eq!(waiter.sleep(Duration::from_secs(10)), Woke::Rung);
    assert_eq!(get(&new, 0), Some(Entry { ts: 40, phase: 4 }));
    assert_eq!(get(&new, 1), Some(Entry { ts: 41, phase: 2 }));
    assert_eq!(get(&new, 3), Some(Entry { ts: 45, phase: 2 }));
    assert_eq!(get(&new, 4), Some(Entry { ts: 0, phase: 0 }));
    assert_eq!(get(&new, mine), Some(Entry { ts: 0, phase: 0 }));
    // Same phase of the same timestamp again: nothing to copy.
    assert_eq!(stale.copy_newer().unwrap(), 0);
    put(&old, 1, 41, 4);
    assert_eq!(stale.copy_newer().unwrap(), 1);
    assert_eq!(get(&new, 1), Some(Entry { ts: 41, phase: 4 }));
    // An entry index outside the layout is refused.
    let refused = StaleEntries::open(layout, 6, (&dir.0.join("new"), 0), &dir.0.join("old"));
    assert_eq!(
        refused.err().map(|e| e.to_string()),
        Some("bad coordination layout: entry 6 out of range: the layout has 6".to_string())
    );
}

#[test]
fn a_stale_writer_ringing_the_old_doorbell_reaches_a_waiter_on_the_new_one() {
    let dir = Dir(std::env::temp_dir().join(format!("remora-rejoin-run-{}", std::process::id())));
    let layout = Layout::new(1, 3).unwrap();
    let _old = store(&dir.0, "old", layout);
    let _new = store(&dir.0, "new", layout);
    let stale = StaleEntries::open(layout, 2, (&dir.0.join("new"), 0), &dir.0.join("old")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mirror = {
        let stop = stop.clone();
        std::thread::spawn(move || stale.run(&stop).unwrap())
    };
    let old = Region::attach(&dir.0.join("old"), 0).unwrap();
    let new = Region::attach(&dir.0.join("new"), 0).unwrap();
    let new_bell = bell(&new, layout);
    for ts in 1..=50u64 {
        // As a peer announcing through its old mapping: entry, then the ring.
        put(&old, (ts % 2) as usize, ts, 2);
        bell(&old, layout).ring();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sleeper = new_bell.prepare();
            if get(&new, (ts % 2) as usize) == Some(Entry { ts, phase: 2 }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "entry {ts} never reached the new region"
            );
            sleeper.sleep(Duration::from_millis(100));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    mirror.join().unwrap();
}
