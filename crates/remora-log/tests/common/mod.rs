//! Helpers shared by the integration tests: temporary directories, a seeded generator,
//! transaction builders and file surgery.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use remora_log::{Digest, Entry, Log, Options};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("remora-log-test-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A fresh sub-directory path (not created).
    pub fn sub(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// splitmix64: small, seedable, good enough to drive tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The seed from `var` if set, else a fresh one; printed either way so a failure can be
/// replayed (`cargo test` shows it with the failure output).
pub fn seed(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s} is not a u64")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    eprintln!("seed {seed} (replay with {var}={seed})");
    seed
}

/// A digest derived from a number, distinct for distinct numbers.
pub fn digest(n: u64) -> Digest {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&n.to_le_bytes());
    d[8..16].copy_from_slice(&(!n).to_le_bytes());
    d
}

/// The bytes of transaction `n`: recognisable, of a length varying with `n`.
pub fn payload(n: u64) -> Vec<u8> {
    let len = (n * 7 % 41) as usize;
    (0..len).map(|i| (n as usize + i) as u8).collect()
}

pub fn tx_batch(ids: &[u64]) -> Vec<(Digest, Vec<u8>)> {
    ids.iter().map(|&n| (digest(n), payload(n))).collect()
}

/// Appends owned transactions (the API takes borrowed bytes).
pub fn append_owned(log: &mut Log, txs: &[(Digest, Vec<u8>)]) -> Vec<remora_log::Appended> {
    let refs: Vec<(Digest, &[u8])> = txs.iter().map(|(d, b)| (*d, b.as_slice())).collect();
    log.append(&refs).expect("append")
}

pub fn small(segment_size: u64) -> Options {
    Options {
        segment_size,
        ..Options::default()
    }
}

pub fn replay(log: &Log) -> Vec<Entry> {
    log.read_from(0)
        .expect("read_from")
        .collect::<Result<_, _>>()
        .expect("replay")
}

/// Segment files of a log directory, in order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
        })
        .collect();
    v.sort();
    v
}

pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").len()
}

pub fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    // Private, as the log requires of a directory it did not create itself.
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
        .create(to)
        .expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

pub fn truncate(path: &Path, len: u64) {
    let f = fs::OpenOptions::new().write(true).open(path).expect("open");
    f.set_len(len).expect("truncate");
}

pub fn append_bytes(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(bytes).expect("write");
}

pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).expect("write");
}

/// Bytes of a segment header (the documented format).
pub const SEGMENT_HEADER: u64 = 32;

/// Where one append's record landed, read back from the file sizes.
#[derive(Clone, Debug)]
pub struct Written {
    pub file: PathBuf,
    pub start: u64,
    pub end: u64,
    pub last_ts: u64,
}

/// Appends and notes where the record went (nothing is noted for an all-duplicate batch).
pub fn append_tracked(
    log: &mut Log,
    txs: &[(Digest, Vec<u8>)],
    records: &mut Vec<Written>,
) -> Vec<remora_log::Appended> {
    let before = log.last_ts();
    let got = append_owned(log, txs);
    if log.last_ts() != before {
        let file = segments(log.dir()).pop().expect("a segment");
        let start = match records.last() {
            Some(prev) if prev.file == file => prev.end,
            _ => SEGMENT_HEADER,
        };
        let end = file_len(&file);
        records.push(Written {
            file,
            start,
            end,
            last_ts: log.last_ts(),
        });
    }
    got
}
