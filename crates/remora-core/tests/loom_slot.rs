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
    self, Checked, Lookup, ReadMeta, Reject, SlotRead, Snapshot, Status, Version, Want, Word,
    HEADER_BYTES, STATE_LIVE, VERSION_HEADER_BYTES,
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

// ---- The shared-memory read through a handle: checked once, then seqlock copies ----

/// What one handle read accepted: its answer and, for a value, the bytes.
#[derive(Debug, PartialEq)]
struct Answer {
    status: Status,
    ts: u64,
    value: Vec<u8>,
}

/// A reader of object `id` as `RemoteStore::read_into` drives the slot functions over `shm`:
/// the seqlock copy (`read_seqlocked`) while the occupant's header is the one a checked read
/// (`checked_read_slot`) accepted, the checked read otherwise. `hseq` is the reader's
/// handle state: 0 until a checked read succeeds. `None`: no answer within `TRIES`, or the
/// slot no longer holds `id` (the real reader then asks the owner).
fn handle_read(s: &Slot<LoomWord>, id: &str, hseq: &mut u64, want: Want) -> Option<Answer> {
    let mut out = [0u8; 64];
    let answer = |m: ReadMeta, out: &[u8]| Answer {
        status: m.status,
        ts: m.ts,
        value: out[..m.len].to_vec(),
    };
    for _ in 0..TRIES {
        if *hseq != 0 {
            match slot::read_seqlocked(&s.words, CLASS, *hseq, want, &mut out) {
                Ok(Some(m)) => return Some(answer(m, &out)),
                Ok(None) => *hseq = 0,
                Err(_) => {
                    thread::yield_now();
                    continue;
                }
            }
        }
        match slot::checked_read_slot(&s.words, CLASS, id.as_bytes(), want, &mut out) {
            Ok(Checked {
                hseq: h,
                read: SlotRead::Live(m),
            }) => {
                *hseq = h;
                return Some(answer(m, &out));
            }
            Ok(_) => return None,
            Err(_) => thread::yield_now(),
        }
    }
    None
}

fn val(id: &str, ts: u64) -> Answer {
    Answer {
        status: Status::Value,
        ts,
        value: value(id, ts),
    }
}

const NOTHING: Answer = Answer {
    status: Status::Absent,
    ts: 0,
    value: Vec::new(),
};

const LAGGING: Answer = Answer {
    status: Status::Lagging,
    ts: 0,
    value: Vec::new(),
};

/// The header sequence word the owner left in the setup image: the reader checked the slot
/// before the model starts (what a handle that already read once holds).
fn checked_before(s: &Slot<LoomWord>) -> u64 {
    s.words[0].0.load(Ordering::Relaxed)
}

/// Scenario 4: two writes racing handle reads (checked first, then seqlock copies): `get`
/// and `get_before` answer from real states, and `get` never goes back.
#[test]
fn handle_reads_newest_and_before() {
    model(|| {
        let s = slot_with(|s| live(s, "A", 1, &[(0, 1, 10)]));
        let writer = {
            let s = s.clone();
            thread::spawn(move || {
                slot::write_version(s.block(1), 1, 2, 20, Some(&value("A", 20)));
                slot::write_version(s.block(0), 1, 3, 30, Some(&value("A", 30)));
            })
        };
        let mut hseq = 0;
        let mut last = 0;
        for want in [Want::Newest, Want::Before(20), Want::Newest] {
            let Some(a) = handle_read(&s, "A", &mut hseq, want) else {
                continue;
            };
            match want {
                Want::Newest => {
                    assert!(
                        [val("A", 10), val("A", 20), val("A", 30)].contains(&a),
                        "newest: {a:?}"
                    );
                    assert!(a.ts >= last, "went back from {last} to {a:?}");
                    last = a.ts;
                }
                Want::Before(_) => assert!(a == val("A", 10) || a == LAGGING, "before(20): {a:?}"),
            }
        }
        writer.join().unwrap();
    });
}

/// Scenario 5: the slot of A, already checked by the reader, is handed to B (a new header,
/// then B's first version in the block A's only version was in). The reader's seqlock copy
/// must never answer for A with B's version. (The owner also clears the other block, already
/// empty here; leaving that out keeps the model small.)
#[test]
fn handle_reads_never_take_a_reused_slot_for_its_old_occupant() {
    model(|| {
        let s = slot_with(|s| live(s, "A", 1, &[(0, 1, 10)]));
        let mut hseq = checked_before(&s);
        let writer = {
            let s = s.clone();
            thread::spawn(move || {
                slot::write_header(s.header(), STATE_LIVE, b"B", 0, 2);
                slot::clear_version(s.block(0), 2);
                slot::write_version(s.block(0), 2, 1, 50, Some(&value("B", 50)));
            })
        };
        if let Some(a) = handle_read(&s, "A", &mut hseq, Want::Newest) {
            assert_eq!(a, val("A", 10), "A answered from a reused slot");
        }
        writer.join().unwrap();
    });
}

/// Scenario 6: a reader of B meets the slot while it passes from A to B. Its checked read
/// may see B's header before B's blocks (A's version still visible): the checksums refuse
/// that, so the seqlock copy that follows only ever sees B's blocks.
#[test]
fn handle_reads_of_a_new_occupant_never_see_the_old_ones_versions() {
    model(|| {
        let s = slot_with(|s| live(s, "A", 1, &[(0, 1, 10)]));
        let writer = {
            let s = s.clone();
            thread::spawn(move || {
                slot::write_header(s.header(), STATE_LIVE, b"B", 0, 2);
                slot::clear_version(s.block(0), 2);
                slot::write_version(s.block(0), 2, 1, 50, Some(&value("B", 50)));
            })
        };
        let mut hseq = 0;
        for _ in 0..2 {
            if let Some(a) = handle_read(&s, "B", &mut hseq, Want::Newest) {
                assert!(a == NOTHING || a == val("B", 50), "B answered with {a:?}");
            }
        }
        writer.join().unwrap();
    });
}
