//! Native adoption (`docs/binary-layouts.md`, "Lookup table" and "Native adoption"): the
//! `table.v1` parser against every way a table can be malformed, and `Store::adopt_batch`
//! against the merge rule: what it adopts, where it stops, and that a transaction it does not
//! adopt leaves nothing behind.

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use remora_core::adopt::{encode_table, AdoptError, Stop, Table, NO_VALUE};
use remora_core::slot::{MAX_ID_LEN, MAX_VALUE_LEN};
use remora_core::{Lookup, Store, StoreConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A table's content, owned: what tests build tables from and compare parses with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TableData {
    ok: bool,
    reads: Vec<(Vec<u8>, u64)>,
    speculative: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    rest: Vec<u8>,
}

type Entries<'a> = Vec<(&'a [u8], Option<&'a [u8]>)>;

fn entries(list: &[(Vec<u8>, Option<Vec<u8>>)]) -> Entries<'_> {
    list.iter()
        .map(|(id, v)| (id.as_slice(), v.as_deref()))
        .collect()
}

impl TableData {
    fn ok() -> Self {
        TableData {
            ok: true,
            ..Self::default()
        }
    }
    fn read(mut self, id: &str, version: u64) -> Self {
        self.reads.push((id.into(), version));
        self
    }
    fn spec(mut self, id: &str, value: Option<&str>) -> Self {
        self.speculative
            .push((id.into(), value.map(|v| v.as_bytes().to_vec())));
        self
    }
    fn write(mut self, id: &str, value: Option<&str>) -> Self {
        self.writes
            .push((id.into(), value.map(|v| v.as_bytes().to_vec())));
        self
    }

    fn encode(&self) -> Vec<u8> {
        let reads: Vec<(&[u8], u64)> = self.reads.iter().map(|(i, v)| (&i[..], *v)).collect();
        let mut out = Vec::new();
        encode_table(
            &mut out,
            self.ok,
            &reads,
            &entries(&self.speculative),
            &entries(&self.writes),
            &self.rest,
        );
        out
    }

    fn of(t: &Table) -> Self {
        let own = |(id, v): (&[u8], Option<&[u8]>)| (id.to_vec(), v.map(<[u8]>::to_vec));
        TableData {
            ok: t.ok(),
            reads: t.reads().map(|(id, v)| (id.to_vec(), v)).collect(),
            speculative: t.speculative().map(own).collect(),
            writes: t.writes().map(own).collect(),
            rest: t.rest().to_vec(),
        }
    }
}

struct Fixture {
    store: Store,
    _cleanup: common::Cleanup,
}

fn fixture(tag: &str) -> Fixture {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "remora-adopt-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = StoreConfig::new(&dir, "owner");
    cfg.region_bytes = 64 * 1024;
    Fixture {
        store: Store::create(&cfg).unwrap(),
        _cleanup: common::Cleanup(dir),
    }
}

/// Tables back to back and their ends, as the primary hands a batch over.
fn batch(tables: &[Vec<u8>]) -> (Vec<u8>, Vec<u32>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for t in tables {
        bytes.extend_from_slice(t);
        ends.push(bytes.len() as u32);
    }
    (bytes, ends)
}

fn adopt(store: &Store, tables: &[Vec<u8>], ts: &[u64], from: usize) -> (usize, Stop) {
    let (bytes, ends) = batch(tables);
    let run = store.adopt_batch(&bytes, &ends, ts, from).unwrap();
    (run.adopted, run.stop)
}

fn value(ts: u64, v: &str) -> Lookup {
    Lookup::Value {
        ts,
        value: v.as_bytes().to_vec(),
    }
}

/// Everything a reader can see of the store: each id's kept versions and newest lookup.
fn state(store: &Store) -> Vec<(Vec<u8>, Vec<u64>, Lookup)> {
    store
        .ids()
        .into_iter()
        .map(|id| {
            let versions = store.versions(&id);
            let now = store.get(&id).unwrap();
            (id, versions, now)
        })
        .collect()
}

#[test]
fn well_formed_tables_are_adopted_and_their_writes_carry_the_batch_timestamps() {
    let f = fixture("adopt");
    f.store.set(b"a", b"a1", 1).unwrap();
    let tables = [
        TableData::ok()
            .read("a", 1)
            .read("b", 0)
            .write("a", Some("a2"))
            .write("b", Some("b1"))
            .encode(),
        // Reads what the previous transaction wrote, at the version it got.
        TableData::ok()
            .read("a", 10)
            .read("b", 10)
            .write("b", Some("b2"))
            .encode(),
        // An aborted transaction: no writes, adopted all the same.
        TableData::default().read("b", 11).encode(),
    ];
    assert_eq!(adopt(&f.store, &tables, &[10, 11, 12], 0), (3, Stop::End));
    assert_eq!(f.store.get(b"a").unwrap(), value(10, "a2"));
    assert_eq!(f.store.get(b"b").unwrap(), value(11, "b2"));
    assert_eq!(f.store.versions(b"a"), vec![10, 1]);
    assert_eq!(f.store.versions(b"b"), vec![11, 10]);
    assert_eq!(f.store.newest_version(b"b"), 11);
    assert_eq!(f.store.newest_version(b"nothing"), 0);
    assert_eq!(
        f.store.newest_versions(&[b"a", b"b", b"c"]),
        vec![10, 11, 0]
    );
    assert_eq!(f.store.ids(), vec![b"a".to_vec(), b"b".to_vec()]);
    // Older versions stay readable the Heron way.
    assert_eq!(f.store.get_before(b"a", 10).unwrap(), value(1, "a1"));
}

#[test]
fn a_stale_stop_counts_the_transactions_after_it_that_will_not_be_adopted_either() {
    let f = fixture("stale-after");
    f.store.set(b"a", b"a1", 5).unwrap();
    f.store.set(b"b", b"b1", 6).unwrap();
    let tables = [
        TableData::ok().read("a", 5).write("a", Some("a2")).encode(),
        // Stale: `a` is at 10 by now.
        TableData::ok().read("a", 1).write("c", Some("c1")).encode(),
        // Read a version the store has passed: stale whatever is applied first.
        TableData::ok().read("b", 2).write("b", Some("b2")).encode(),
        // No table: merged by the caller in any case.
        Vec::new(),
        // Read `c` as current, but the stale transaction wrote it: its re-execution most
        // likely writes it again.
        TableData::ok().read("c", 0).encode(),
        // Read a version newer than the store's (a pre-executor's own result not yet
        // applied): it may hold once the transactions before it are, so the count ends.
        TableData::ok()
            .read("d", 11)
            .write("d", Some("d2"))
            .encode(),
        TableData::ok().read("b", 1).encode(),
    ];
    let (bytes, ends) = batch(&tables);
    let ts = [10, 11, 12, 13, 14, 15, 16];
    let run = f.store.adopt_batch(&bytes, &ends, &ts, 0).unwrap();
    assert_eq!(
        (run.adopted, &run.stop, run.stale_after),
        (1, &Stop::Stale, 3)
    );
    // From the transaction where the count ended, once the caller merged the ones before.
    f.store.set(b"d", b"d1", 11).unwrap();
    let run = f.store.adopt_batch(&bytes, &ends, &ts, 5).unwrap();
    assert_eq!(
        (run.adopted, &run.stop, run.stale_after),
        (1, &Stop::Stale, 0)
    );
    // Other stops count nothing; a malformed table ends the count.
    let tables = [
        TableData::ok().read("a", 1).encode(),
        b"\xff not a table".to_vec(),
        TableData::ok().read("a", 1).encode(),
    ];
    let (bytes, ends) = batch(&tables);
    let run = f
        .store
        .adopt_batch(&bytes, &ends, &[20, 21, 22], 0)
        .unwrap();
    assert_eq!(
        (run.adopted, &run.stop, run.stale_after),
        (0, &Stop::Stale, 0)
    );
    let run = f
        .store
        .adopt_batch(&bytes, &ends, &[20, 21, 22], 1)
        .unwrap();
    assert!(matches!(run.stop, Stop::Malformed(_)));
    assert_eq!(run.stale_after, 0);
}

#[test]
fn a_stale_read_stops_the_run_and_nothing_of_that_transaction_is_applied() {
    let f = fixture("stale");
    f.store.set(b"a", b"a1", 1).unwrap();
    f.store.set(b"b", b"b1", 2).unwrap();
    let tables = [
        TableData::ok().read("a", 1).write("a", Some("a2")).encode(),
        // Read `a` at 1, but the transaction before wrote it at 10. Its write to `c` (a new
        // object) must not happen.
        TableData::ok()
            .read("b", 2)
            .read("a", 1)
            .write("c", Some("c1"))
            .write("b", Some("b2"))
            .encode(),
        TableData::ok().read("b", 2).write("b", Some("b3")).encode(),
    ];
    let (bytes, ends) = batch(&tables);
    let ts = [10, 11, 12];
    let run = f.store.adopt_batch(&bytes, &ends, &ts, 0).unwrap();
    assert_eq!((run.adopted, run.stop), (1, Stop::Stale));
    assert_eq!(f.store.get(b"c").unwrap(), Lookup::Absent);
    assert_eq!(f.store.get(b"b").unwrap(), value(2, "b1"));
    // The caller re-executes transaction 1 itself, writes its effects, and goes on from 2.
    f.store.set(b"b", b"b2-reexecuted", 11).unwrap();
    let run = f.store.adopt_batch(&bytes, &ends, &ts, 2).unwrap();
    // Transaction 2 read `b` at 2: now stale too.
    assert_eq!((run.adopted, run.stop), (0, Stop::Stale));
    // A read of an object deleted since is stale; one at the tombstone's version is not.
    f.store.delete(b"a", 20).unwrap();
    assert_eq!(f.store.newest_version(b"a"), 20);
    let tables = [
        TableData::ok().read("a", 10).write("x", Some("x")).encode(),
        TableData::ok().read("a", 20).write("x", Some("x")).encode(),
    ];
    assert_eq!(adopt(&f.store, &tables, &[21, 22], 0), (0, Stop::Stale));
    assert_eq!(adopt(&f.store, &tables, &[21, 22], 1), (1, Stop::End));
    assert_eq!(f.store.get(b"x").unwrap(), value(22, "x"));
}

#[test]
fn speculative_reads_are_checked_by_value() {
    let f = fixture("spec");
    f.store.set(b"v", b"seven", 1).unwrap();
    f.store.set(b"gone", b"soon", 2).unwrap();
    f.store.delete(b"gone", 3).unwrap();
    let case = |t: TableData| {
        let ts = f.store.newest_version(b"log") + 100;
        adopt(&f.store, &[t.write("log", Some("x")).encode()], &[ts], 0).1
    };
    assert_eq!(case(TableData::ok().spec("v", Some("seven"))), Stop::End);
    assert_eq!(case(TableData::ok().spec("v", Some("eight"))), Stop::Stale);
    assert_eq!(case(TableData::ok().spec("v", Some("seve"))), Stop::Stale);
    assert_eq!(case(TableData::ok().spec("v", None)), Stop::Stale);
    // None: absent, or deleted.
    assert_eq!(case(TableData::ok().spec("never", None)), Stop::End);
    assert_eq!(case(TableData::ok().spec("gone", None)), Stop::End);
    assert_eq!(
        case(TableData::ok().spec("gone", Some("soon"))),
        Stop::Stale
    );
    assert_eq!(case(TableData::ok().spec("never", Some(""))), Stop::Stale);
    // An empty value is a value, not none.
    f.store.set(b"empty", b"", 5).unwrap();
    assert_eq!(case(TableData::ok().spec("empty", Some(""))), Stop::End);
    assert_eq!(case(TableData::ok().spec("empty", None)), Stop::Stale);
}

#[test]
fn deletes_keep_the_stores_rules() {
    let f = fixture("delete");
    f.store.set(b"here", b"v", 1).unwrap();
    let t = TableData::ok()
        .read("here", 1)
        .write("here", None)
        .write("absent", None)
        .encode();
    assert_eq!(adopt(&f.store, &[t], &[5], 0), (1, Stop::End));
    // A delete of an absent object leaves no tombstone; of a present one, a version.
    assert_eq!(f.store.versions(b"absent"), Vec::<u64>::new());
    assert_eq!(f.store.get(b"absent").unwrap(), Lookup::Absent);
    assert_eq!(f.store.ids(), vec![b"here".to_vec()]);
    assert_eq!(f.store.get(b"here").unwrap(), Lookup::Deleted { ts: 5 });
    assert_eq!(f.store.versions(b"here"), vec![5, 1]);
    // Written again after the delete.
    let t = TableData::ok()
        .spec("here", None)
        .write("here", Some("back"))
        .encode();
    assert_eq!(adopt(&f.store, &[t], &[6], 0), (1, Stop::End));
    assert_eq!(f.store.get(b"here").unwrap(), value(6, "back"));
    assert_eq!(f.store.purge_deleted(100), 0);
}

#[test]
fn values_that_outgrow_their_slot_move_and_keep_their_history() {
    let f = fixture("grow");
    f.store.set(b"g", b"small", 1).unwrap();
    let big = "x".repeat(5000);
    let t = TableData::ok()
        .read("g", 1)
        .write("g", Some(&big))
        .write("new", Some(&big))
        .encode();
    assert_eq!(adopt(&f.store, &[t], &[2], 0), (1, Stop::End));
    assert_eq!(f.store.get(b"g").unwrap(), value(2, &big));
    assert_eq!(f.store.get_before(b"g", 2).unwrap(), value(1, "small"));
    assert_eq!(f.store.get(b"new").unwrap(), value(2, &big));
}

#[test]
fn no_table_ends_and_bad_batches() {
    let f = fixture("batch");
    let t = TableData::ok().write("a", Some("1")).encode();
    let tables = [t.clone(), Vec::new(), t.clone()];
    assert_eq!(adopt(&f.store, &tables, &[1, 2, 3], 0), (1, Stop::NoTable));
    let (bytes, ends) = batch(&tables);
    // Nothing left: an empty run.
    let run = f.store.adopt_batch(&bytes, &ends, &[1, 2, 3], 3).unwrap();
    assert_eq!((run.adopted, run.stop), (0, Stop::End));
    let run = f.store.adopt_batch(&bytes, &ends, &[1, 2, 3], 2).unwrap();
    assert_eq!((run.adopted, run.stop), (1, Stop::End));
    assert_eq!(f.store.get(b"a").unwrap(), value(3, "1"));

    let bad =
        |ends: &[u32], ts: &[u64], from: usize| match f.store.adopt_batch(&bytes, ends, ts, from) {
            Err(AdoptError::Batch(why)) => why,
            other => panic!("expected a batch error, got {other:?}"),
        };
    let n = bytes.len() as u32;
    assert_eq!(
        bad(&[4, 2, n], &[7, 8, 9], 0),
        "ends[1] = 2 is before ends[0] = 4"
    );
    assert_eq!(
        bad(&[4, n + 1], &[7, 8], 0),
        format!("ends[1] = {} is past the {n} bytes of tables", n + 1)
    );
    assert_eq!(bad(&[n], &[7, 8], 0), "1 table ends but 2 timestamps");
    assert_eq!(
        bad(&[n], &[7], 2),
        "from 2 is past the 1 transactions of the batch"
    );
    assert!(AdoptError::Batch("x".into())
        .to_string()
        .starts_with("adoptBatch: "));
}

#[test]
fn writes_that_would_not_be_newer_are_refused_whole() {
    let f = fixture("order");
    f.store.set(b"a", b"a1", 1).unwrap();
    f.store.set(b"b", b"b1", 50).unwrap();
    // `b` is written blindly (not read): its version 50 is not before the batch's 40.
    let t = TableData::ok()
        .read("a", 1)
        .write("a", Some("a2"))
        .write("new", Some("n"))
        .write("b", Some("b2"))
        .encode();
    let before = state(&f.store);
    let (adopted, stop) = adopt(&f.store, &[t], &[40], 0);
    assert_eq!(adopted, 0);
    assert_eq!(
        stop,
        Stop::Malformed("timestamp 40 for object 'b' is not after its current version 50".into())
    );
    assert_eq!(state(&f.store), before);
    // The same object written twice by one table.
    let t = TableData::ok()
        .write("c", Some("1"))
        .write("d", Some("1"))
        .write("c", Some("2"))
        .encode();
    let (_, stop) = adopt(&f.store, &[t], &[60], 0);
    assert_eq!(
        stop,
        Stop::Malformed("table: write 2: object 'c' is written twice".into())
    );
    assert_eq!(state(&f.store), before);
}

/// A valid table to damage: two reads, a speculative read, two writes (one a delete).
fn sample() -> TableData {
    TableData::ok()
        .read("acct:1", 7)
        .read("acct:2", 0)
        .spec("acct:3", Some("v3"))
        .write("acct:1", Some("value-1"))
        .write("acct:2", None)
}

fn malformed(bytes: &[u8]) -> String {
    match Table::parse(bytes) {
        Ok(t) => panic!("parsed {:?}", TableData::of(&t)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_malformation_is_named() {
    let good = {
        let mut t = sample();
        t.rest = vec![0x94, 0x90, 0x90, 0x90, 0x80];
        t
    };
    let bytes = good.encode();
    assert_eq!(TableData::of(&Table::parse(&bytes).unwrap()), good);
    let with = |at: usize, v: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    // Offsets: header 12; read 0 = [12] idLen 6, id, version (8) ...
    let read1 = 12 + 1 + 6 + 8;
    let spec0 = read1 + 1 + 6 + 8;
    let write0 = spec0 + 1 + 6 + 4 + 2;
    let write1 = write0 + 1 + 6 + 4 + 7;
    let rest = write1 + 1 + 6 + 4;
    assert_eq!(rest + 5, bytes.len());
    let cases: Vec<(Vec<u8>, String)> = vec![
        (
            bytes[..5].to_vec(),
            "table: 5 bytes, shorter than the 12-byte header".into(),
        ),
        (
            Vec::new(),
            "table: 0 bytes, shorter than the 12-byte header".into(),
        ),
        (
            with(0, &[2]),
            "table: unknown layout 2 (this build reads layout 1)".into(),
        ),
        (
            with(1, &[0x05]),
            "table: unknown flag bits 0x04 (flags 0x05)".into(),
        ),
        (
            with(1, &[0]),
            "table: 2 writes but the outcome is not ok (flags bit 0 clear)".into(),
        ),
        (
            with(12, &[0]),
            "table: read 0: id of 0 bytes (ids are 1 to 88 bytes)".into(),
        ),
        (
            with(read1, &[89]),
            "table: read 1: id of 89 bytes (ids are 1 to 88 bytes)".into(),
        ),
        (
            with(write1 + 1, &[0xff]),
            "table: write 1: id is not UTF-8".into(),
        ),
        (
            with(spec0 + 7, &((MAX_VALUE_LEN + 1) as u32).to_le_bytes()),
            "table: speculative read 0: value of 1048577 bytes (at most 1048576)".into(),
        ),
        (
            with(write0 + 7, &[200, 0, 0, 0]),
            format!(
                "table: write 0: truncated in its value (needs 200 bytes, {} left)",
                bytes.len() - (write0 + 11)
            ),
        ),
        (
            bytes[..read1 + 3].to_vec(),
            "table: read 1: truncated in its id (needs 6 bytes, 2 left)".into(),
        ),
        (
            bytes[..spec0 - 2].to_vec(),
            "table: read 1: truncated in its version (needs 8 bytes, 6 left)".into(),
        ),
        (
            bytes[..write1].to_vec(),
            "table: write 1: truncated in its idLen (needs 1 bytes, 0 left)".into(),
        ),
        (
            bytes[..write1 + 8].to_vec(),
            "table: write 1: truncated in its valueLen (needs 4 bytes, 1 left)".into(),
        ),
        (
            bytes[..rest + 2].to_vec(),
            "table: restLen 5 but only 2 bytes follow the writes".into(),
        ),
        (
            [bytes.clone(), vec![0]].concat(),
            "table: 1 bytes left over after the 5-byte rest".into(),
        ),
        (
            with(8, &[0xff, 0xff, 0xff, 0xff]),
            "table: restLen 4294967295 but only 5 bytes follow the writes".into(),
        ),
        // Counts that lie: one read too few leaves its bytes to be read as a speculative
        // read; one write too many runs into the rest.
        (
            with(2, &[1, 0]),
            "table: write 0: id of 0 bytes (ids are 1 to 88 bytes)".into(),
        ),
        (
            with(6, &[3, 0]),
            "table: write 2: id of 148 bytes (ids are 1 to 88 bytes)".into(),
        ),
    ];
    let f = fixture("malformed");
    f.store.set(b"acct:1", b"v", 7).unwrap();
    f.store.set(b"acct:3", b"v3", 8).unwrap();
    let before = state(&f.store);
    for (bytes, want) in cases {
        let got = malformed(&bytes);
        assert_eq!(got, want);
        // Adopted, the same table stops the run with the same message and changes nothing;
        // an empty table is "no table", not a malformed one.
        let stop = adopt(&f.store, std::slice::from_ref(&bytes), &[100], 0).1;
        if bytes.is_empty() {
            assert_eq!(stop, Stop::NoTable);
        } else {
            assert_eq!(stop, Stop::Malformed(got));
        }
        assert_eq!(state(&f.store), before);
    }
    // The good table itself is adopted.
    assert_eq!(adopt(&f.store, &[bytes], &[100], 0), (1, Stop::End));
    // An id of exactly 88 bytes, a value of exactly 1 MiB and none (0xFFFFFFFF) are fine.
    let long = "i".repeat(MAX_ID_LEN);
    let big = "v".repeat(MAX_VALUE_LEN);
    let t = TableData::ok()
        .write(&long, Some(&big))
        .spec("nothing", None)
        .encode();
    assert!(t.windows(4).any(|w| w == NO_VALUE.to_le_bytes()));
    assert_eq!(adopt(&f.store, &[t], &[101], 0), (1, Stop::End));
    assert_eq!(f.store.get(long.as_bytes()).unwrap(), value(101, &big));
}

/// Ids of 1 to 40 bytes, some not ASCII, drawn from few enough that tables share them.
fn id() -> impl Strategy<Value = Vec<u8>> {
    (0u8..12, 1usize..8, any::<bool>()).prop_map(|(n, len, wide)| {
        let mut s = format!("k{n}:").repeat(len);
        if wide {
            s.push('é');
        }
        s.into_bytes()
    })
}

fn maybe_value() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..40))
}

fn table_data() -> impl Strategy<Value = TableData> {
    (
        any::<bool>(),
        prop::collection::vec((id(), 0u64..4), 0..4),
        prop::collection::vec((id(), maybe_value()), 0..3),
        prop::collection::vec((id(), maybe_value()), 0..4),
        prop::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(ok, reads, speculative, writes, rest)| TableData {
            ok,
            reads,
            speculative,
            writes: if ok { writes } else { Vec::new() },
            rest,
        })
}

/// One way to damage bytes; positions are taken modulo the length.
#[derive(Clone, Debug)]
enum Damage {
    Flip(usize, u8),
    Set(usize, u8),
    Cut(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, v)| Damage::Set(at, v)),
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), any::<u8>()).prop_map(|(at, v)| Damage::Insert(at, v)),
        any::<usize>().prop_map(Damage::Remove),
    ]
}

fn apply_damage(bytes: &mut Vec<u8>, d: &Damage) {
    let n = bytes.len();
    match *d {
        Damage::Flip(at, bit) if n > 0 => bytes[at % n] ^= 1 << bit,
        Damage::Set(at, v) if n > 0 => bytes[at % n] = v,
        Damage::Cut(at) => bytes.truncate(at % (n + 1)),
        Damage::Insert(at, v) => bytes.insert(at % (n + 1), v),
        Damage::Remove(at) if n > 0 => {
            bytes.remove(at % n);
        }
        _ => {}
    }
}

fn runner(cases: u32) -> TestRunner {
    let seed = common::seed("REMORA_ADOPT_SEED", "adopt property");
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed ^ (i as u64).wrapping_mul(0x9e37_79b9)).to_le_bytes());
    }
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Valid tables round-trip; damaged ones never panic the parser, and either fail with an
/// error or parse to a table that encodes back to exactly the damaged bytes (so whatever is
/// accepted is read exactly as written, nothing skipped or guessed).
#[test]
fn damaged_tables_parse_exactly_or_fail() {
    runner(4000)
        .run(
            &(table_data(), prop::collection::vec(damage(), 1..4)),
            |(data, damages)| {
                let bytes = data.encode();
                let parsed = Table::parse(&bytes).map(|t| TableData::of(&t));
                prop_assert_eq!(parsed, Ok(data.clone()));
                let mut damaged = bytes.clone();
                for d in &damages {
                    apply_damage(&mut damaged, d);
                }
                match Table::parse(&damaged) {
                    Ok(t) => {
                        let again = TableData::of(&t);
                        prop_assert_eq!(again.encode(), damaged.clone());
                        prop_assert_eq!(t.read_count(), again.reads.len());
                        prop_assert_eq!(t.write_count(), again.writes.len());
                        prop_assert_eq!(t.speculative_count(), again.speculative.len());
                    }
                    Err(e) => prop_assert!(e.to_string().starts_with("table: ")),
                }
                Ok(())
            },
        )
        .unwrap();
}

/// What the merge rule says of one table against a model of the state: adopt or not.
fn model_adopts(model: &BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>, t: &TableData) -> bool {
    let version = |id: &Vec<u8>| model.get(id).map_or(0, |(v, _)| *v);
    t.reads.iter().all(|(id, v)| version(id) == *v)
        && t.speculative.iter().all(|(id, seen)| {
            let now = model.get(id).and_then(|(_, v)| v.clone());
            now == *seen
        })
}

/// Random batches, some tables damaged, against a model of the merge rule: the store adopts
/// exactly what the rule says, stops where it says, and ends in the model's state.
#[test]
fn adoption_follows_the_merge_rule_and_damage_changes_nothing() {
    let strategy = prop::collection::vec(
        prop::collection::vec(
            (
                table_data(),
                prop::bool::weighted(0.8),
                prop::option::weighted(0.2, damage()),
            ),
            1..12,
        ),
        1..4,
    );
    runner(300)
        .run(&strategy, |batches| {
            let f = fixture("model");
            let mut model: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)> = BTreeMap::new();
            let mut next_ts = 1u64;
            for txs in batches {
                // Reads mostly of the current state, so that most tables are adoptable.
                let mut tables = Vec::new();
                let mut datas = Vec::new();
                for (mut data, current, damage) in txs {
                    if current {
                        for (id, v) in &mut data.reads {
                            *v = model.get(id).map_or(0, |(v, _)| *v);
                        }
                        for (id, v) in &mut data.speculative {
                            *v = model.get(id).and_then(|(_, v)| v.clone());
                        }
                    }
                    // Tables that write one object twice are refused; keep the first write.
                    let mut seen = std::collections::HashSet::new();
                    data.writes.retain(|(id, _)| seen.insert(id.clone()));
                    let mut bytes = data.encode();
                    if let Some(d) = damage {
                        apply_damage(&mut bytes, &d);
                    }
                    tables.push(bytes);
                    datas.push(data);
                }
                let ts: Vec<u64> = (0..tables.len() as u64).map(|k| next_ts + k).collect();
                next_ts += tables.len() as u64;
                let (bytes, ends) = batch(&tables);
                let mut from = 0;
                while from < tables.len() {
                    let run = f.store.adopt_batch(&bytes, &ends, &ts, from).unwrap();
                    // Every adopted one is adoptable by the rule, as parsed.
                    for k in from..from + run.adopted {
                        let parsed = Table::parse(&tables[k]).map(|t| TableData::of(&t));
                        let Ok(data) = parsed else {
                            return Err(TestCaseError::fail(format!("adopted malformed {k}")));
                        };
                        prop_assert!(model_adopts(&model, &data), "adopted {k} against the rule");
                        for (id, v) in &data.writes {
                            if v.is_some() || model.contains_key(id) {
                                model.insert(id.clone(), (ts[k], v.clone()));
                            }
                        }
                    }
                    let at = from + run.adopted;
                    match &run.stop {
                        Stop::End => prop_assert_eq!(at, tables.len()),
                        Stop::NoTable => prop_assert!(tables[at].is_empty()),
                        Stop::Malformed(why) => {
                            let parsed = Table::parse(&tables[at]);
                            match parsed {
                                Err(e) => prop_assert_eq!(why, &e.to_string()),
                                Ok(t) => {
                                    let data = TableData::of(&t);
                                    let repeat =
                                        data.writes.iter().enumerate().any(|(k, w)| {
                                            data.writes[..k].iter().any(|e| e.0 == w.0)
                                        });
                                    prop_assert!(repeat, "malformed {at}: {why}");
                                }
                            }
                        }
                        Stop::Stale => {
                            let data = TableData::of(&Table::parse(&tables[at]).unwrap());
                            prop_assert!(!model_adopts(&model, &data), "stale {at} by the rule");
                        }
                    }
                    if at >= tables.len() {
                        break;
                    }
                    from = at + 1;
                }
            }
            // The store holds exactly the model.
            let ids: Vec<Vec<u8>> = model.keys().cloned().collect();
            prop_assert_eq!(f.store.ids(), ids);
            for (id, (v, value)) in &model {
                let want = match value {
                    Some(value) => Lookup::Value {
                        ts: *v,
                        value: value.clone(),
                    },
                    None => Lookup::Deleted { ts: *v },
                };
                prop_assert_eq!(f.store.get(id).unwrap(), want);
                prop_assert_eq!(f.store.newest_version(id), *v);
            }
            Ok(())
        })
        .unwrap();
}
