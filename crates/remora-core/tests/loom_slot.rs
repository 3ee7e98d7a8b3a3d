#![cfg(loom)]
//! Loom model of the dual-versioned slot protocol in `remora_core::slot`.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p remora-core --release --test loom_slot`.
//! Without `--cfg loom` this file compiles to an empty test binary.
//!
//! The owner's writes and the readers' validation are the crate's own functions, driven over
//! loom's atomics through the `Word` trait; only the test setup and the transport copy (which
//! mirrors `Region::read`) live here. Every scenario lists the states the owner really
//! produces, and a reader may only ever accept one of them.

use loom::sync::atomic::{fence, AtomicU64};
use loom::sync::Arc;
use loom::thread;
use remora_core::slot::{
    self, Lookup, Reject, Snapshot, Version, Word, HEADER_BYTES, STATE_LIVE, VERSION_HEADER_BYTES,
};
use std::sync::atomic::Ordering;

/// The smallest class keeps the number of modelled atomic operations (and so the state space)
/// down; the protocol does not depend on the capacity.
const CLASS: usize = 0;

/// A reader gives up after this many rejected copies: loom explores every interleaving of the
/// retries, so this bounds the model, and a reader that never accepts asserts nothing. Two
/// tries already cover a retry that lands mid-write again.
const TRIES: usize = 2;

/// Loom's atomic is foreign to this crate, as is `Word`: the orphan rule wants a newtype.
struct LoomWord(AtomicU64);

impl Word for LoomWord {
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order)
    }
    fn fence(order: Ordering) {
        fence(order)
    }
}

struct Slot<W> {
    words: Vec<W>,
}

impl<W: Word> Slot<W> {
    fn header(&self) -> &[W] {
        &self.words[..HEADER_BYTES / 8]
    }

    fn block(&self, which: usize) -> &[W] {
        let start = slot::version_offset(CLASS, which) / 8;
        &self.words[start..start + (VERSION_HEADER_BYTES + slot::class_capacity(CLASS)) / 8]
    }
}

/// Builds the slot the owner left before the model starts. The setup runs outside loom (on std
/// atomics, same functions) because it is single-threaded: modelling it would only add steps.
fn slot_with(setup: impl FnOnce(&Slot<std::sync::atomic::AtomicU64>)) -> Arc<Slot<LoomWord>> {
    let image = Slot {
        words: (0..slot::slot_bytes(CLASS) / 8)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
    };
    setup(&image);
    Arc::new(Slot {
        words: image
            .words
            .iter()
            .map(|w| LoomWord(AtomicU64::new(w.load(Ordering::Relaxed))))
            .collect(),
    })
}

/// A slot handed to `id` in incarnation `inc`, holding `versions` as `(block, gen, ts)`.
fn live<W: Word>(s: &Slot<W>, id: &str, inc: u64, versions: &[(usize, u64, u64)]) {
    slot::write_header(s.header(), STATE_LIVE, id.as_bytes(), 0, inc);
    slot::clear_version(s.block(0), inc);
    slot::clear_version(s.block(1), inc);
    for &(which, gen, ts) in versions {
        slot::write_version(s.block(which), inc, gen, ts, Some(&value(id, ts)));
    }
}

/// The value the owner of `id` writes at `ts`. It spans two data words and each word names
/// both the object and the write, so any mix of writes or of occupants is visible in the bytes.
fn value(id: &str, ts: u64) -> Vec<u8> {
    assert_eq!(id.len(), 1);
    format!("{id}{ts:06}.{id}{ts:06}.").into_bytes()
}

/// The snapshot of a state the owner really produced: `versions` as `(gen, ts)`, newest first.
fn state(id: &str, versions: &[(u64, u64)]) -> Snapshot {
    Snapshot {
        state: STATE_LIVE,
        id: id.as_bytes().to_vec(),
        forward: 0,
        versions: versions
            .iter()
            .map(|&(gen, ts)| Version {
                ts,
                gen,
                value: Some(value(id, ts)),
            })
            .collect(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Reader {
    /// The owner's path: `read_slot` over the shared words.
    Words,
    /// The remote path: a transport copies the bytes (as `Region::read` does: relaxed word
    /// loads, then an acquire fence) and `decode_slot` validates the copy.
    Bytes,
}

fn read(s: &Slot<LoomWord>, how: Reader) -> Result<Snapshot, Reject> {
    match how {
        Reader::Words => slot::read_slot(&s.words, CLASS),
        Reader::Bytes => {
            let bytes: Vec<u8> = s
                .words
                .iter()
                .flat_map(|w| w.0.load(Ordering::Relaxed).to_le_bytes())
                .collect();
            fence(Ordering::Acquire);
            slot::decode_slot(&bytes, CLASS)
        }
    }
}

fn accept(s: &Slot<LoomWord>, how: Reader) -> Option<Snapshot> {
    for _ in 0..TRIES {
        match read(s, how) {
            Ok(snap) => return Some(snap),
            // Lets loom run the writer on, as a spinning reader would in practice.
            Err(_) => thread::yield_now(),
        }
    }
    None
}

fn assert_real(snap: &Snapshot, states: &[Snapshot], how: Reader) {
    assert!(
        states.contains(snap),
        "{how:?} reader accepted a state the owner never produced: {snap:?}"
    );
}

/// Default to one preemption, which is what a torn read needs (the writer cutting into one
/// copy) and keeps the whole file at a few minutes in release mode; `LOOM_MAX_PREEMPTIONS=2`
/// searches deeper (hours for the slot-reuse scenario).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(1);
    builder.check(f);
}

/// Scenario 1: two writes racing one reader; `get` and `get_before` must answer from a real
/// state, never from a torn version.
fn newest_and_before(how: Reader) {
    model(move || {
        let s = slot_with(|s| live(s, "A", 1, &[(0, 1, 10)]));
        let writer = {
            let s = s.clone();
            thread::spawn(move || {
                slot::write_version(s.block(1), 1, 2, 20, Some(&value("A", 20)));
                slot::write_version(s.block(0), 1, 3, 30, Some(&value("A", 30)));
            })
        };
        if let Some(snap) = accept(&s, how) {
            assert_real(
                &snap,
                &[
                    state("A", &[(1, 10)]),
                    state("A", &[(2, 20), (1, 10)]),
                    state("A", &[(3, 30), (2, 20)]),
                ],
                how,
            );
            let at = |ts| Lookup::Value {
                ts,
                value: value("A", ts),
            };
            let newest = snap.get();
            assert!(
                [at(10), at(20), at(30)].contains(&newest),
                "{how:?}: get() = {newest:?} from {snap:?}"
            );
            let b30 = snap.before(30);
            assert!(
                [at(20), at(10)].contains(&b30),
                "{how:?}: before(30) = {b30:?} from {snap:?}"
            );
            let b20 = snap.before(20);
            // ts 10 is gone only once ts 30 overwrote its block.
            assert!(
                b20 == at(10) || (b20 == Lookup::Lagging && newest == at(30)),
                "{how:?}: before(20) = {b20:?} from {snap:?}"
            );
        }
        writer.join().unwrap();
    });
}

/// Scenario 2: a reader copying the slot while two more writes land must not pair a version
/// with one it never coexisted with (gens 1 and 4 here), and two reads in a row must not go
/// back in time.
fn no_skewed_pairs(how: Reader) {
    model(move || {
        let s = slot_with(|s| live(s, "A", 1, &[(0, 1, 10), (1, 2, 20)]));
        let writer = {
            let s = s.clone();
            thread::spawn(move || {
                slot::write_version(s.block(0), 1, 3, 30, Some(&value("A", 30)));
                slot::write_version(s.block(1), 1, 4, 40, Some(&value("A", 40)));
            })
        };
        let states = [
            state("A", &[(2, 20), (1, 10)]),
            state("A", &[(3, 30), (2, 20)]),
            state("A", &[(4, 40), (3, 30)]),
        ];
        let mut last_gen = 0;
        for _ in 0..2 {
            let Some(snap) = accept(&s, how) else { break };
            assert!(
                snap.versions.windows(2).all(|v| v[0].gen == v[1].gen + 1),
                "{how:?} reader accepted non-consecutive generations: {snap:?}"
            );
            assert_real(&snap, &states, how);
            let gen = snap.versions[0].gen;
            assert!(
                gen >= last_gen,
                "{how:?} reader went back from gen {last_gen} to {snap:?}"
            );
            last_gen = gen;
        }
        writer.join().unwrap();
    });
}

/// Scenario 3: the slot is handed from object A (incarnation 1) to object B (incarnation 2).
/// A reader must never see A's id with B's versions or the reverse; the value bytes name the
/// object they were written for.
fn reuse_keeps_occupants_apart(how: Reader) {
    model(move || {
        let s = slot_with(|s| live(s, "A", 1, &[(0, 1, 10), (1, 2, 20)]));
        let writer = {
            let s = s.clone();
            thread::spawn(move || {
                slot::write_header(s.header(), STATE_LIVE, b"B", 0, 2);
                slot::clear_version(s.block(0), 2);
                slot::clear_version(s.block(1), 2);
                slot::write_version(s.block(0), 2, 1, 50, Some(&value("B", 50)));
            })
        };
        if let Some(snap) = accept(&s, how) {
            for v in &snap.versions {
                let owner = v.value.as_deref().and_then(|b| b.first()).copied();
                assert_eq!(
                    owner,
                    snap.id.first().copied(),
                    "{how:?} reader paired id {:?} with a version of another occupant: {snap:?}",
                    String::from_utf8_lossy(&snap.id)
                );
            }
            assert_real(
                &snap,
                &[
                    state("A", &[(2, 20), (1, 10)]),
                    state("B", &[]),
                    state("B", &[(1, 50)]),
                ],
                how,
            );
        }
        writer.join().unwrap();
    });
}

#[test]
fn words_newest_and_before() {
    newest_and_before(Reader::Words);
}

#[test]
fn bytes_newest_and_before() {
    newest_and_before(Reader::Bytes);
}

#[test]
fn words_no_skewed_pairs() {
    no_skewed_pairs(Reader::Words);
}

#[test]
fn bytes_no_skewed_pairs() {
    no_skewed_pairs(Reader::Bytes);
}

#[test]
fn words_reuse_keeps_occupants_apart() {
    reuse_keeps_occupants_apart(Reader::Words);
}

#[test]
fn bytes_reuse_keeps_occupants_apart() {
    reuse_keeps_occupants_apart(Reader::Bytes);
}
