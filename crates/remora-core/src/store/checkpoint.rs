//! Checkpoints: the store's state as of a timestamp, in one file, so that a restart installs
//! it and replays only the log's tail (docs/checkpoints.md).
//!
//! The export reuses the state-transfer read ([`Store::export_before`]): the newest version of
//! each object before `ts + 1`, tombstones included, a chunk of ids per read-lock hold, so the
//! owner's merge goes on between chunks. An object written twice after `ts` while the export
//! runs has lost the version needed: the export then reports it `gone` and writes nothing; the
//! caller retries at a newer point or exports under one hold (see [`Store::export_checkpoint`]).
//!
//! Layout (little-endian; docs/binary-layouts.md, "Checkpoint file"):
//!
//! ```text
//! header (64 bytes)  magic "RMRCKPT\0" | format u32 | meta_len u32 | ts u64 | records u64
//!                    | body_bytes u64 | body_sum u64 | meta_sum u64 | head_sum u64
//! meta               meta_len bytes, the caller's (opaque here)
//! body               records: id_len u16 | kind u8 (1 value, 2 tombstone) | 0 u8
//!                    | value_len u32 | ts u64 | id | value
//! ```
//!
//! `body_sum` and `meta_sum` are xxh3-64 of their sections, `head_sum` of the 56 header bytes
//! before it: a file whose header, meta or body was torn or damaged is refused, and its length
//! must be exactly what the header says.

use super::{Put, Store};
use crate::error::{Error, IoContext, Result};
use crate::slot::{MAX_ID_LEN, MAX_VALUE_LEN};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

const MAGIC: &[u8; 8] = b"RMRCKPT\0";
/// The layout version this code writes and reads.
pub const CHECKPOINT_FORMAT: u32 = 1;
const HEADER_BYTES: usize = 64;
const RECORD_HEAD: usize = 16;
const KIND_VALUE: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
/// Ids per read-lock hold: a hold of well under a millisecond, so the merge barely notices.
pub const DEFAULT_CHUNK: usize = 4096;
/// Records installed per write-lock hold on restore.
const INSTALL_BATCH: usize = 4096;
/// Caller metadata beyond this is refused: it is meant for a sequencer's resume point.
pub const MAX_META_BYTES: usize = 64 << 20;

/// What a checkpoint file's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointHeader {
    pub format: u32,
    pub ts: u64,
    pub records: u64,
    pub meta: Vec<u8>,
    body_bytes: u64,
    body_sum: u64,
}

/// How an export ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exported {
    /// Every object's state as of the timestamp was copied.
    Whole { records: u64, bytes: u64 },
    /// This many objects were overwritten twice after the timestamp while the export ran: the
    /// state as of it is no longer in the store. Nothing was kept.
    Gone { objects: u64 },
}

/// What a restore installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub ts: u64,
    pub meta: Vec<u8>,
    pub records: u64,
}

fn damaged(path: &Path, why: impl Into<String>) -> Error {
    Error::Io {
        context: format!("checkpoint {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why.into()),
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn record_head(out: &mut Vec<u8>, id: &[u8], ts: u64, len: Option<usize>) {
    // Ids are at most MAX_ID_LEN and values MAX_VALUE_LEN (the store checks on write), so the
    // narrowing casts cannot truncate.
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.push(if len.is_some() {
        KIND_VALUE
    } else {
        KIND_TOMBSTONE
    });
    out.push(0);
    out.extend_from_slice(&(len.unwrap_or(0) as u32).to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(id);
}

/// A temp file beside `path`, renamed over it once whole and synced.
struct Pending {
    tmp: PathBuf,
    path: PathBuf,
    done: bool,
}

impl Pending {
    fn new(path: &Path) -> Self {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        Pending {
            tmp: tmp.into(),
            path: path.to_path_buf(),
            done: false,
        }
    }

    /// The temporary file, created (or emptied) owner-only.
    fn create(&self) -> Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.tmp)
            .ctx(|| format!("creating {}", self.tmp.display()))
    }

    fn commit(mut self, file: File) -> Result<()> {
        file.sync_all()
            .ctx(|| format!("syncing {}", self.tmp.display()))?;
        drop(file);
        fs::rename(&self.tmp, &self.path).ctx(|| format!("renaming to {}", self.path.display()))?;
        self.done = true;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx(|| format!("syncing directory {}", dir.display()))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Streams the body into a file, hashing it on the way.
struct BodySink {
    out: BufWriter<File>,
    hash: Xxh3,
    bytes: u64,
    path: PathBuf,
}

impl BodySink {
    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.hash.update(b);
        self.bytes += b.len() as u64;
        let path = &self.path;
        self.out
            .write_all(b)
            .ctx(|| format!("writing {}", path.display()))
    }
}

fn header(ts: u64, records: u64, meta: &[u8], body_bytes: u64, body_sum: u64) -> [u8; 64] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&CHECKPOINT_FORMAT.to_le_bytes());
    // Callers check meta against MAX_META_BYTES, which fits u32.
    h[12..16].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    h[16..24].copy_from_slice(&ts.to_le_bytes());
    h[24..32].copy_from_slice(&records.to_le_bytes());
    h[32..40].copy_from_slice(&body_bytes.to_le_bytes());
    h[40..48].copy_from_slice(&body_sum.to_le_bytes());
    h[48..56].copy_from_slice(&xxh3_64(meta).to_le_bytes());
    let sum = xxh3_64(&h[..56]);
    h[56..64].copy_from_slice(&sum.to_le_bytes());
    h
}

fn check_meta(meta: &[u8]) -> Result<()> {
    if meta.len() > MAX_META_BYTES {
        return Err(Error::Oversize {
            len: meta.len(),
            max: MAX_META_BYTES,
        });
    }
    Ok(())
}

impl Store {
    /// Exports the state as of `ts` (each object's newest version before `ts + 1`, tombstones
    /// included, in id order) to `sink`, `chunk` ids per read-lock hold (`usize::MAX`: one hold
    /// for the whole store). `between` runs after each chunk, outside the lock. Stops at the
    /// first chunk holding an object whose needed version is gone.
    fn export_state(
        &self,
        ts: u64,
        chunk: usize,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
        mut between: impl FnMut(),
    ) -> Result<(u64, Option<u64>)> {
        let bound = ts.saturating_add(1);
        let (flat, spans) = self.id_snapshot();
        let (mut records, mut buf, mut gone) = (0, Vec::new(), Vec::new());
        for part in spans.chunks(chunk.max(1)) {
            buf.clear();
            let ids: Vec<Vec<u8>> = part
                .iter()
                .map(|&(at, len)| flat[at..at + len].to_vec())
                .collect();
            records += self.export_before(&ids, 0, bound, &mut buf, record_head, &mut gone)?;
            if !gone.is_empty() {
                return Ok((records, Some(gone.len() as u64)));
            }
            sink(&buf)?;
            between();
        }
        Ok((records, None))
    }

    /// Every id the index holds, in id order, as spans of one buffer. Copied flat under the
    /// read lock (no allocation per id while the owner's writes wait) and sorted after it.
    fn id_snapshot(&self) -> (Vec<u8>, Vec<(usize, usize)>) {
        let (mut flat, mut spans) = (Vec::new(), Vec::new());
        {
            let inner = self.read();
            spans.reserve(inner.index.len());
            for (id, _) in inner.index.iter() {
                spans.push((flat.len(), id.len()));
                flat.extend_from_slice(id);
            }
        }
        spans.sort_unstable_by(|a, b| flat[a.0..a.0 + a.1].cmp(&flat[b.0..b.0 + b.1]));
        (flat, spans)
    }

    /// Writes the state as of `ts` to `path` (atomically: a temp file, synced, renamed, the
    /// directory synced), reading `chunk` ids per read-lock hold so the owner keeps writing.
    /// `meta` is kept as it is. Returns `Gone` and leaves `path` as it was if the state as of
    /// `ts` was overwritten during the export.
    pub fn checkpoint(&self, path: &Path, ts: u64, meta: &[u8], chunk: usize) -> Result<Exported> {
        self.checkpoint_with(path, ts, meta, chunk, || {})
    }

    fn checkpoint_with(
        &self,
        path: &Path,
        ts: u64,
        meta: &[u8],
        chunk: usize,
        between: impl FnMut(),
    ) -> Result<Exported> {
        check_meta(meta)?;
        let pending = Pending::new(path);
        let file = pending.create()?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let placeholder = [0u8; HEADER_BYTES];
        out.write_all(&placeholder)
            .and_then(|()| out.write_all(meta))
            .ctx(|| format!("writing {}", pending.tmp.display()))?;
        let mut body = BodySink {
            out,
            hash: Xxh3::new(),
            bytes: 0,
            path: pending.tmp.clone(),
        };
        let (records, gone) = self.export_state(ts, chunk, |b| body.write(b), between)?;
        if let Some(objects) = gone {
            return Ok(Exported::Gone { objects });
        }
        let BodySink {
            out, hash, bytes, ..
        } = body;
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| format!("writing {}", pending.tmp.display()))?;
        let head = header(ts, records, meta, bytes, hash.digest());
        file.write_all_at(&head, 0)
            .ctx(|| format!("writing {}", pending.tmp.display()))?;
        pending.commit(file)?;
        Ok(Exported::Whole {
            records,
            bytes: (HEADER_BYTES + meta.len()) as u64 + bytes,
        })
    }

    /// The state as of `ts` exported under one read-lock hold, in memory: what a caller that
    /// holds the only writer (and is at `ts`) can always get, then write with
    /// [`write_checkpoint`] off its own thread. Fails if the state as of `ts` is gone.
    pub fn export_checkpoint(&self, ts: u64) -> Result<ExportedState> {
        let mut body = Vec::new();
        let (records, gone) = self.export_state(
            ts,
            usize::MAX,
            |b| {
                body.extend_from_slice(b);
                Ok(())
            },
            || {},
        )?;
        if let Some(objects) = gone {
            return Err(Error::Io {
                context: format!("checkpoint of store '{}' at {ts}", self.name),
                source: std::io::Error::other(format!(
                    "{objects} objects were overwritten twice since {ts}: export at the writer's current point"
                )),
            });
        }
        Ok(ExportedState { ts, records, body })
    }

    /// Installs the checkpoint at `path` into this store, which must be empty. The whole file is
    /// checked (lengths, checksums, every record) before anything is installed, so a damaged
    /// file leaves the store empty.
    pub fn restore_checkpoint(&self, path: &Path) -> Result<Restored> {
        let held = self.read().index.len();
        if held > 0 {
            return Err(Error::Io {
                context: format!("restoring {} into store '{}'", path.display(), self.name),
                source: std::io::Error::other(format!(
                    "the store already holds {held} objects; a checkpoint is restored into an empty store only"
                )),
            });
        }
        let bytes = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
        let (head, puts) = check_file(path, &bytes)?;
        for part in puts.chunks(INSTALL_BATCH) {
            self.install(part)?;
        }
        Ok(Restored {
            ts: head.ts,
            meta: head.meta,
            records: head.records,
        })
    }
}

/// A checkpoint's body taken in memory (see [`Store::export_checkpoint`]).
pub struct ExportedState {
    pub ts: u64,
    pub records: u64,
    body: Vec<u8>,
}

/// Writes a state exported in memory to `path`, as [`Store::checkpoint`] does.
pub fn write_checkpoint(path: &Path, state: &ExportedState, meta: &[u8]) -> Result<Exported> {
    check_meta(meta)?;
    let pending = Pending::new(path);
    let file = pending.create()?;
    let head = header(
        state.ts,
        state.records,
        meta,
        state.body.len() as u64,
        xxh3_64(&state.body),
    );
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    out.write_all(&head)
        .and_then(|()| out.write_all(meta))
        .and_then(|()| out.write_all(&state.body))
        .and_then(|()| out.flush())
        .ctx(|| format!("writing {}", pending.tmp.display()))?;
    drop(out);
    pending.commit(file)?;
    Ok(Exported::Whole {
        records: state.records,
        bytes: (HEADER_BYTES + meta.len() + state.body.len()) as u64,
    })
}

/// Reads and checks a checkpoint's header and meta (not its records: [`Store::restore_checkpoint`]
/// checks those), to choose among files without reading them whole.
pub fn read_checkpoint_header(path: &Path) -> Result<CheckpointHeader> {
    let mut file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .ctx(|| format!("reading {}", path.display()))?
        .len();
    let mut head = [0u8; HEADER_BYTES];
    file.read_exact(&mut head)
        .map_err(|_| damaged(path, format!("{len} bytes: shorter than a header (torn)")))?;
    let meta_len = u32_at(&head, 12) as usize;
    if meta_len > MAX_META_BYTES || xxh3_64(&head[..56]) != u64_at(&head, 56) {
        return Err(damaged(
            path,
            "the header fails its checksum (torn or damaged)",
        ));
    }
    let mut bytes = head.to_vec();
    bytes.resize(HEADER_BYTES + meta_len, 0);
    file.read_exact(&mut bytes[HEADER_BYTES..])
        .map_err(|_| damaged(path, "shorter than its header says (torn)"))?;
    parse_header(path, &bytes, len)
}

/// Reads and checks a whole checkpoint file (header, meta, every record) without installing
/// it: to choose a file before the store it goes to exists.
pub fn verify_checkpoint(path: &Path) -> Result<CheckpointHeader> {
    let bytes = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    Ok(check_file(path, &bytes)?.0)
}

/// Reads and checks a whole checkpoint file, then calls `record(id, value, ts)` for each of its
/// records in id order (`value: None` for a tombstone): for a copy of the state kept elsewhere
/// than a store (a pre-executor's). Nothing is called if the file is damaged.
pub fn read_checkpoint(
    path: &Path,
    mut record: impl FnMut(&[u8], Option<&[u8]>, u64),
) -> Result<CheckpointHeader> {
    let bytes = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    let (head, puts) = check_file(path, &bytes)?;
    for (id, value, ts) in puts {
        record(id, value, ts);
    }
    Ok(head)
}

/// The header and records of a whole file, checked.
fn check_file<'a>(path: &Path, bytes: &'a [u8]) -> Result<(CheckpointHeader, Vec<Put<'a>>)> {
    let head = parse_header(path, bytes, bytes.len() as u64)?;
    let body = &bytes[HEADER_BYTES + head.meta.len()..];
    if xxh3_64(body) != head.body_sum {
        return Err(damaged(
            path,
            "records fail their checksum (torn or damaged)",
        ));
    }
    let puts = parse_records(path, body, head.records)?;
    Ok((head, puts))
}

/// Checks the header and meta at the start of `bytes` against a file of `len` bytes.
fn parse_header(path: &Path, bytes: &[u8], len: u64) -> Result<CheckpointHeader> {
    let head = bytes
        .get(..HEADER_BYTES)
        .ok_or_else(|| damaged(path, format!("{len} bytes: shorter than a header (torn)")))?;
    if &head[..8] != MAGIC {
        return Err(damaged(path, "not a checkpoint file (bad magic)"));
    }
    if xxh3_64(&head[..56]) != u64_at(head, 56) {
        return Err(damaged(
            path,
            "the header fails its checksum (torn or damaged)",
        ));
    }
    let format = u32_at(head, 8);
    if format != CHECKPOINT_FORMAT {
        return Err(damaged(
            path,
            format!("format {format}, but this build reads format {CHECKPOINT_FORMAT}"),
        ));
    }
    let meta_len = u32_at(head, 12) as usize;
    let body_bytes = u64_at(head, 32);
    let expected = (HEADER_BYTES as u64 + meta_len as u64).saturating_add(body_bytes);
    if len != expected {
        return Err(damaged(
            path,
            format!("{len} bytes, but its header says {expected} (torn)"),
        ));
    }
    let meta = bytes
        .get(HEADER_BYTES..HEADER_BYTES + meta_len)
        .ok_or_else(|| damaged(path, "shorter than its header says (torn)"))?;
    if xxh3_64(meta) != u64_at(head, 48) {
        return Err(damaged(path, "its meta fails its checksum (damaged)"));
    }
    Ok(CheckpointHeader {
        format,
        ts: u64_at(head, 16),
        records: u64_at(head, 24),
        meta: meta.to_vec(),
        body_bytes,
        body_sum: u64_at(head, 40),
    })
}

/// Every record of a body whose checksum matched; anything malformed refuses the whole file.
fn parse_records<'a>(path: &Path, body: &'a [u8], records: u64) -> Result<Vec<Put<'a>>> {
    let mut puts = Vec::with_capacity(records.min(body.len() as u64 / RECORD_HEAD as u64) as usize);
    let mut at = 0usize;
    while at < body.len() {
        let bad = |why: &str| damaged(path, format!("record {} at byte {at}: {why}", puts.len()));
        let head = body
            .get(at..at + RECORD_HEAD)
            .ok_or_else(|| bad("cut short"))?;
        let id_len = usize::from(u16::from_le_bytes([head[0], head[1]]));
        let kind = head[2];
        let value_len = u32_at(head, 4) as usize;
        let ts = u64_at(head, 8);
        if id_len == 0 || id_len > MAX_ID_LEN || value_len > MAX_VALUE_LEN {
            return Err(bad("id or value length out of range"));
        }
        if kind == KIND_TOMBSTONE && value_len != 0 {
            return Err(bad("a tombstone with a value"));
        }
        let start = at + RECORD_HEAD;
        let id = body
            .get(start..start + id_len)
            .ok_or_else(|| bad("cut short"))?;
        let value = match kind {
            KIND_VALUE => Some(
                body.get(start + id_len..start + id_len + value_len)
                    .ok_or_else(|| bad("cut short"))?,
            ),
            KIND_TOMBSTONE => None,
            _ => return Err(bad(&format!("unknown kind {kind}"))),
        };
        puts.push((id, value, ts));
        at = start + id_len + value_len;
    }
    if puts.len() as u64 != records {
        return Err(damaged(
            path,
            format!("{} records, but its header says {records}", puts.len()),
        ));
    }
    Ok(puts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::Lookup;
    use crate::StoreConfig;

    struct Fixture {
        dir: PathBuf,
    }

    impl Fixture {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("remora-ckpt-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Fixture { dir }
        }
        fn store(&self, name: &str) -> Store {
            Store::create(&StoreConfig::new(self.dir.join("stores"), name)).unwrap()
        }
        fn file(&self, name: &str) -> PathBuf {
            self.dir.join(name)
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// Every object's state as `get_before(ts + 1)` sees it, in id order.
    fn state_at(s: &Store, ts: u64) -> Vec<(Vec<u8>, Lookup)> {
        s.ids()
            .into_iter()
            .map(|id| {
                let l = s.get_before(&id, ts + 1).unwrap();
                (id, l)
            })
            .filter(|(_, l)| !matches!(l, Lookup::Lagging | Lookup::Absent))
            .collect()
    }

    fn state(s: &Store) -> Vec<(Vec<u8>, Lookup)> {
        s.ids()
            .into_iter()
            .map(|id| {
                let l = s.get(&id).unwrap();
                (id, l)
            })
            .collect()
    }

    #[test]
    fn round_trip_keeps_values_tombstones_and_versions_as_of_ts() {
        let f = Fixture::new("round");
        let s = f.store("a");
        for i in 0..5000u64 {
            s.set(format!("k{i}").as_bytes(), &i.to_le_bytes(), i + 1)
                .unwrap();
        }
        s.delete(b"k7", 6000).unwrap();
        // A value that outgrew its slot (moved), and versions after the checkpoint's point.
        s.set(b"k9", &[9u8; 3000], 6001).unwrap();
        s.set(b"k3", b"after", 7000).unwrap();
        s.set(b"late", b"new", 7001).unwrap();
        let path = f.file("a.ckpt");
        let got = s.checkpoint(&path, 6001, b"meta!", 100).unwrap();
        let expected = state_at(&s, 6001);
        assert_eq!(expected.len(), 5000);
        assert!(matches!(got, Exported::Whole { records: 5000, .. }));
        let Exported::Whole { bytes, .. } = got else {
            unreachable!()
        };
        assert_eq!(fs::metadata(&path).unwrap().len(), bytes);
        let head = read_checkpoint_header(&path).unwrap();
        assert_eq!(
            (head.ts, head.records, &head.meta[..]),
            (6001, 5000, &b"meta!"[..])
        );

        let r = f.store("b");
        let restored = r.restore_checkpoint(&path).unwrap();
        assert_eq!(
            restored,
            Restored {
                ts: 6001,
                meta: b"meta!".to_vec(),
                records: 5000
            }
        );
        assert_eq!(state(&r), expected);
        assert_eq!(r.get(b"k7").unwrap(), Lookup::Deleted { ts: 6000 });
        assert_eq!(r.get(b"late").unwrap(), Lookup::Absent);
        // The log's tail applies on top, as on the original.
        r.set(b"k3", b"after", 7000).unwrap();
        assert_eq!(r.get(b"k3").unwrap(), s.get(b"k3").unwrap());
        // Held and chunked exports write the same file.
        let held = f.file("held.ckpt");
        let state = s.export_checkpoint(7001).unwrap();
        write_checkpoint(&held, &state, b"m").unwrap();
        let chunked = f.file("chunked.ckpt");
        s.checkpoint(&chunked, 7001, b"m", 7).unwrap();
        assert_eq!(fs::read(&held).unwrap(), fs::read(&chunked).unwrap());
    }

    #[test]
    fn torn_or_damaged_files_are_refused_and_leave_the_store_empty() {
        let f = Fixture::new("torn");
        let s = f.store("a");
        for i in 0..300u64 {
            s.set(format!("k{i}").as_bytes(), b"value", i + 1).unwrap();
        }
        let path = f.file("a.ckpt");
        s.checkpoint(&path, 300, b"meta", 64).unwrap();
        let whole = fs::read(&path).unwrap();
        let r = f.store("b");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("cut", whole[..whole.len() - 10].to_vec(), "(torn)"),
            ("header", whole[..40].to_vec(), "shorter than a header"),
            ("empty", Vec::new(), "shorter than a header"),
            (
                "flip-body",
                {
                    let mut b = whole.clone();
                    let n = b.len();
                    b[n - 3] ^= 1;
                    b
                },
                "records fail their checksum",
            ),
            (
                "flip-meta",
                {
                    let mut b = whole.clone();
                    b[HEADER_BYTES] ^= 1;
                    b
                },
                "meta fails its checksum",
            ),
            (
                "flip-ts",
                {
                    let mut b = whole.clone();
                    b[16] ^= 1;
                    b
                },
                "header fails its checksum",
            ),
        ];
        for (tag, bytes, why) in cases {
            let p = f.file(&format!("{tag}.ckpt"));
            fs::write(&p, bytes).unwrap();
            let err = r.restore_checkpoint(&p).unwrap_err().to_string();
            assert!(err.contains(why), "{tag}: {err}");
            assert_eq!(verify_checkpoint(&p).unwrap_err().to_string(), err);
            assert!(err.contains(&p.display().to_string()), "{tag}: {err}");
            assert_eq!(r.stats().objects, 0, "{tag}");
        }
        // A cut file's header alone already tells.
        let cut = f.file("cut.ckpt");
        assert!(read_checkpoint_header(&cut)
            .unwrap_err()
            .to_string()
            .contains("(torn)"));
        assert_eq!(r.restore_checkpoint(&path).unwrap().records, 300);
    }

    #[test]
    fn an_object_overwritten_twice_during_the_export_is_reported_gone() {
        let f = Fixture::new("gone");
        let s = f.store("a");
        for i in 0..10u64 {
            s.set(format!("k{i}").as_bytes(), b"v", i + 1).unwrap();
        }
        let path = f.file("a.ckpt");
        // After the first chunk, a writer overwrites k9 (not yet exported) twice.
        let mut ts = 10;
        let got = s
            .checkpoint_with(&path, 10, b"", 2, || {
                if ts == 10 {
                    s.set(b"k9", b"w1", 11).unwrap();
                    s.set(b"k9", b"w2", 12).unwrap();
                    ts = 12;
                }
            })
            .unwrap();
        assert_eq!(got, Exported::Gone { objects: 1 });
        assert!(!path.exists());
        assert_eq!(fs::read_dir(&f.dir).unwrap().count(), 1, "temp file left");
        // Once overwritten only once after the point, the version before it is still there.
        let got = s
            .checkpoint_with(&path, 12, b"", 2, || {
                if ts == 12 {
                    s.set(b"k9", b"w3", 13).unwrap();
                    ts = 13;
                }
            })
            .unwrap();
        assert!(matches!(got, Exported::Whole { records: 10, .. }));
        let r = f.store("b");
        r.restore_checkpoint(&path).unwrap();
        assert_eq!(
            r.get(b"k9").unwrap(),
            Lookup::Value {
                ts: 12,
                value: b"w2".to_vec()
            }
        );
        let mut seen = Vec::new();
        let head = read_checkpoint(&path, |id, v, ts| {
            seen.push((id.to_vec(), v.map(<[u8]>::to_vec), ts))
        })
        .unwrap();
        assert_eq!((head.ts, seen.len()), (12, 10));
        assert_eq!(seen[9], (b"k9".to_vec(), Some(b"w2".to_vec()), 12));
        // The held export at the writer's point always has it.
        assert!(s.export_checkpoint(10).is_err());
        assert_eq!(s.export_checkpoint(13).unwrap().records, 10);
    }

    #[test]
    fn restore_refuses_a_store_that_holds_objects() {
        let f = Fixture::new("nonempty");
        let s = f.store("a");
        s.set(b"x", b"1", 1).unwrap();
        let path = f.file("a.ckpt");
        s.checkpoint(&path, 1, b"", DEFAULT_CHUNK).unwrap();
        let err = s.restore_checkpoint(&path).unwrap_err().to_string();
        assert!(err.contains("already holds 1 objects"), "{err}");
        assert!(err.contains("empty store"), "{err}");
    }
}
