//! Property tests of the log's decoders (segment headers, records and their transactions, as
//! `Log::open` scans them and `Reader` replays them), through the public API, on bytes a disk
//! or an attacker could leave:
//!
//! - arbitrary bytes as a segment never panic `Log::open`, and what it accepts replays whole;
//! - appended batches round-trip through reopen and replay;
//! - a valid log truncated anywhere, or with any bit flipped, either fails to open with an
//!   error or replays a prefix of what was written, never altered entries; damage appearing
//!   under an open log makes replay stop with an error after a prefix.

use proptest::collection::vec;
use proptest::prelude::*;
use remora_log::{Digest, Entry, Log, Options};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory path under the temp dir (not created), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "remora-log-decoders-{}-{n}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }

    /// The directory, created private (as the log requires of one it did not create).
    fn create(&self) -> &Path {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.0)
            .unwrap();
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

type Batch = Vec<(Digest, Vec<u8>)>;

fn append(log: &mut Log, batch: &Batch) {
    let txs: Vec<(Digest, &[u8])> = batch.iter().map(|(d, b)| (*d, b.as_slice())).collect();
    log.append(&txs).unwrap();
}

fn replay(log: &Log) -> Result<Vec<Entry>, String> {
    log.read_from(1)
        .map_err(|e| e.to_string())?
        .map(|e| e.map_err(|e| e.to_string()))
        .collect()
}

/// Batches whose digests are all distinct (so none is deduplicated away).
fn batches() -> impl Strategy<Value = Vec<Batch>> {
    vec(vec(vec(any::<u8>(), 0..40), 1..5), 1..6).prop_map(|bs| {
        let mut n = 0u32;
        bs.into_iter()
            .map(|b| {
                b.into_iter()
                    .map(|bytes| {
                        n += 1;
                        let mut d = [0u8; 32];
                        d[..4].copy_from_slice(&n.to_le_bytes());
                        (d, bytes)
                    })
                    .collect()
            })
            .collect()
    })
}

fn entries_of(batches: &[Batch]) -> Vec<Entry> {
    batches
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, (d, b))| Entry {
            ts: i as u64 + 1,
            digest: *d,
            bytes: b.clone(),
        })
        .collect()
}

/// A log of a few records over two segments (small segment size), and its entries.
fn reference(dir: &Path) -> (Vec<(String, Vec<u8>)>, Vec<Entry>) {
    let options = Options {
        segment_size: 300,
        ..Options::default()
    };
    let batches: Vec<Batch> = (0..6u8)
        .map(|b| {
            (0..2u8)
                .map(|t| ([b * 2 + t + 1; 32], vec![b ^ t; 20 + b as usize * 7]))
                .collect()
        })
        .collect();
    let mut log = Log::open(dir, options).unwrap();
    for b in &batches {
        append(&mut log, b);
    }
    drop(log);
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "the reference log spans segments");
    (files, entries_of(&batches))
}

fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// What a damaged log may give: an error, or a prefix of the entries written.
fn prefix_or_error(
    got: Result<Vec<Entry>, String>,
    written: &[Entry],
) -> Result<(), TestCaseError> {
    if let Ok(entries) = got {
        prop_assert!(entries.len() <= written.len());
        prop_assert_eq!(&entries[..], &written[..entries.len()]);
    }
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(96))]

    /// Any bytes as a first segment, with or without a valid header in front: opening never
    /// panics, and a log that opens replays exactly its `last_ts` entries.
    #[test]
    fn arbitrary_segments_never_panic(header in any::<bool>(), bytes in vec(any::<u8>(), 0..400)) {
        let tmp = TempDir::new("arbitrary");
        let dir = tmp.create();
        let mut file = Vec::new();
        if header {
            // A valid header for first timestamp 1, as the log writes it.
            let probe = TempDir::new("probe");
            let mut log = Log::open(&probe.0, Options::default()).unwrap();
            log.append(&[([9; 32], b"x")]).unwrap();
            drop(log);
            let seg = fs::read(probe.0.join("seg-00000000000000000001.log")).unwrap();
            file.extend_from_slice(&seg[..32]);
        }
        file.extend_from_slice(&bytes);
        fs::write(dir.join("seg-00000000000000000001.log"), &file).unwrap();
        if let Ok(log) = Log::open(dir, Options::default()) {
            let entries = replay(&log);
            prop_assert!(entries.is_ok(), "{:?}", entries);
            let entries = entries.unwrap();
            prop_assert_eq!(entries.len() as u64, log.last_ts());
            for (i, e) in entries.iter().enumerate() {
                prop_assert_eq!(e.ts, i as u64 + 1);
            }
        }
    }

    /// Appended batches come back in order with consecutive timestamps, after a reopen too,
    /// and from any starting timestamp.
    #[test]
    fn batches_round_trip(batches in batches(), from in 1u64..30) {
        let tmp = TempDir::new("roundtrip");
        let options = Options { segment_size: 200, ..Options::default() };
        let mut log = Log::open(&tmp.0, options.clone()).unwrap();
        for b in &batches {
            append(&mut log, b);
        }
        let written = entries_of(&batches);
        prop_assert_eq!(replay(&log).unwrap(), written.clone());
        drop(log);
        let log = Log::open(&tmp.0, options).unwrap();
        prop_assert_eq!(log.recovery().bytes_truncated, 0);
        prop_assert_eq!(replay(&log).unwrap(), written.clone());
        let tail: Vec<Entry> = log.read_from(from).unwrap().map(Result::unwrap).collect();
        let skip = (from as usize - 1).min(written.len());
        prop_assert_eq!(tail, written[skip..].to_vec());
    }
}

/// A valid log cut anywhere or with one bit flipped anywhere: an error, or a prefix.
#[test]
fn damaged_logs_open_to_an_error_or_a_prefix() {
    let base = TempDir::new("reference");
    let (files, written) = reference(&base.0);
    let total_bits: usize = files.iter().map(|(_, b)| b.len() * 8).sum();
    proptest!(config(256), |(flip in any::<bool>(), at in 0..total_bits)| {
        let tmp = TempDir::new("damaged");
        let dir = tmp.create();
        let mut damaged = files.clone();
        // Which file and where: bits counted across the files in order.
        let mut at = at;
        let target = damaged.iter_mut().find_map(|(_, b)| {
            if at < b.len() * 8 { Some(b) } else { at -= b.len() * 8; None }
        }).unwrap();
        if flip {
            target[at / 8] ^= 1 << (at % 8);
        } else {
            target.truncate(at / 8);
        }
        write_files(dir, &damaged);
        let opened = Log::open(dir, Options::default()).map_err(|e| e.to_string());
        prefix_or_error(opened.and_then(|log| replay(&log)), &written)?;
    });
}

/// Damage that appears while a log is open: replay verifies again, and stops with an error
/// after a prefix of the entries rather than hand out altered ones.
#[test]
fn replay_of_a_log_damaged_under_it_stops_at_the_damage() {
    let base = TempDir::new("reference-open");
    let (files, written) = reference(&base.0);
    let total_bits: usize = files.iter().map(|(_, b)| b.len() * 8).sum();
    proptest!(config(256), |(at in 0..total_bits)| {
        let tmp = TempDir::new("under");
        let dir = tmp.create();
        write_files(dir, &files);
        let log = Log::open(dir, Options::default()).unwrap();
        let mut at = at;
        let (name, bytes) = files.iter().find(|(_, b)| {
            if at < b.len() * 8 { true } else { at -= b.len() * 8; false }
        }).unwrap();
        let mut bytes = bytes.clone();
        bytes[at / 8] ^= 1 << (at % 8);
        fs::write(dir.join(name), &bytes).unwrap();
        let mut good = Vec::new();
        let mut failed = false;
        for item in log.read_from(1).unwrap() {
            match item {
                Ok(e) => {
                    prop_assert!(!failed, "an entry after an error");
                    good.push(e);
                }
                Err(_) => failed = true,
            }
        }
        prefix_or_error(Ok(good), &written)?;
    });
}
