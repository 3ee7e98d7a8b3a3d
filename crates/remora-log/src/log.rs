//! The log: open with recovery, group-committed append, replay.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::dedup::Dedup;
use crate::error::{corrupt, io_err, Error, Result};
use crate::format::{
    encode_record, encode_segment_header, parse_segment_file_name, record_len, record_len_of,
    segment_file_name, BODY_HEADER_LEN, MAX_BODY_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::reader::{Entry, Reader};
use crate::segment::{scan, valid_record_after, Segment};
use crate::{Digest, Options};

const LOCK_FILE: &str = "LOCK";
/// A write buffer grown past this by one huge batch is released rather than kept.
const KEEP_BUFFER: usize = 16 << 20;

/// What `append` did with one transaction of the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The transaction's timestamp: new, or the one it first got if it is a duplicate.
    pub ts: u64,
    /// The digest was already in the dedup window (or earlier in the batch): nothing was
    /// written for it and it must not be delivered again.
    pub duplicate: bool,
}

/// What `Log::open` found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments kept.
    pub segments: usize,
    /// Records (appends) kept, all verified.
    pub records: u64,
    /// Transactions kept; equal to the last timestamp.
    pub transactions: u64,
    /// Bytes cut off the end of the log (0 after a clean close).
    pub bytes_truncated: u64,
    /// The torn tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
}

/// A torn or damaged end of the last segment, removed on open because nothing valid
/// followed it: the remains of an append that never returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the damage starts; the file was cut here.
    pub offset: u64,
    pub reason: String,
    /// The segment held no complete record and was deleted.
    pub file_removed: bool,
}

/// A durable, append-only, deduplicating log of timestamped transactions. See the crate docs.
pub struct Log {
    dir: PathBuf,
    options: Options,
    segments: Vec<Segment>,
    /// Write handle of the last segment; `None` while the log is empty. Records are written
    /// at the segment's verified length (`Segment::len`), not at the end of the file, which
    /// may hold zeros written ahead (`Options::preallocate`).
    active: Option<File>,
    /// Length of the active segment's file: from the last record's end to here it is zeros.
    active_end: u64,
    last_ts: u64,
    dedup: Dedup,
    recovery: Recovery,
    buf: Vec<u8>,
    poisoned: bool,
    // Holds the directory's flock for as long as the Log lives.
    _lock: File,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, verifying every record, cutting a torn
    /// tail off the last segment and rebuilding the dedup window.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Log> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        create_dir(&dir)?;
        let lock = lock_dir(&dir)?;
        let files = list_segments(&dir)?;
        let mut dedup = Dedup::new(options.dedup_window);
        let mut segments = Vec::with_capacity(files.len());
        let mut recovery = Recovery::default();
        let mut next_ts = 1;
        let count = files.len();
        for (i, (name_ts, path)) in files.into_iter().enumerate() {
            let scanned = scan(&path, name_ts, next_ts, |digest, ts| dedup.push(digest, ts))?;
            let segment = scanned.segment;
            let is_last = i + 1 == count;
            if let Some((offset, reason)) = scanned.bad {
                if !is_last {
                    return Err(corrupt(
                        &path,
                        offset,
                        format!("{reason} (in a segment followed by others, so not a torn tail)"),
                    ));
                }
                if let Some(at) = valid_record_after(&path, offset, segment.next_ts)? {
                    return Err(corrupt(
                        &path,
                        offset,
                        format!(
                            "{reason}; a valid record follows at offset {at}, so this is \
                             damage inside the log, not a torn tail"
                        ),
                    ));
                }
                let (bytes, file_removed) = cut_tail(&dir, &segment, offset)?;
                recovery.bytes_truncated = bytes;
                recovery.torn_tail = Some(TornTail {
                    file: path,
                    offset,
                    reason,
                    file_removed,
                });
            } else if is_last && segment.is_empty() {
                // A header without records (a repair cut short): nothing in it was
                // acknowledged.
                let (bytes, file_removed) = cut_tail(&dir, &segment, SEGMENT_HEADER_LEN)?;
                recovery.bytes_truncated = bytes;
                recovery.torn_tail = Some(TornTail {
                    file: path,
                    offset: SEGMENT_HEADER_LEN,
                    reason: "segment holds no record".into(),
                    file_removed,
                });
            }
            next_ts = segment.next_ts;
            if !segment.is_empty() {
                recovery.records += segment.records;
                segments.push(segment);
            }
        }
        let last_ts = next_ts - 1;
        recovery.segments = segments.len();
        recovery.transactions = last_ts;
        let (active, active_end) = match segments.last() {
            Some(seg) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .map_err(io_err("open", &seg.path))?;
                let len = file.metadata().map_err(io_err("stat", &seg.path))?.len();
                (Some(file), len)
            }
            None => (None, 0),
        };
        Ok(Log {
            dir,
            options,
            segments,
            active,
            active_end,
            last_ts,
            dedup,
            recovery,
            buf: Vec::new(),
            poisoned: false,
            _lock: lock,
        })
    }

    /// Appends a batch as one record with one write and one fsync, returning once it is
    /// durable. Duplicates (a digest in the dedup window, or earlier in the batch) are not
    /// written; they report the timestamp the digest already has. A batch of nothing but
    /// duplicates writes nothing. On error nothing is acknowledged; after a failed write or
    /// fsync the log refuses further appends (`Error::Poisoned`) until reopened.
    pub fn append(&mut self, txs: &[(Digest, &[u8])]) -> Result<Vec<Appended>> {
        self.append_many(&[txs])
            .into_iter()
            .next()
            .unwrap_or(Err(Error::EmptyBatch))
    }

    /// Group commit: appends `batches` in order with the results one `append` each would give
    /// (timestamps, duplicates, the window), but as few records as fit (usually one), so one
    /// write and one fsync make them all durable. A batch that fails `append`'s checks is
    /// rejected alone. If a write or fsync fails, every batch of that record fails: the first
    /// with the I/O error, the others with `Error::Poisoned` (none is acknowledged; each may
    /// or may not be on disk).
    pub fn append_many(&mut self, batches: &[&[(Digest, &[u8])]]) -> Vec<Result<Vec<Appended>>> {
        let mut out: Vec<Result<Vec<Appended>>> = Vec::with_capacity(batches.len());
        // Indices of checked batches waiting to be written together, and their body size.
        let mut group: Vec<usize> = Vec::new();
        let mut group_body = 0u64;
        for (i, txs) in batches.iter().enumerate() {
            let txs_len = match self.check(txs) {
                Ok(len) => len,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if !group.is_empty() && group_body.saturating_add(txs_len) > MAX_BODY_LEN {
                self.commit(batches, &group, &mut out);
                group.clear();
            }
            if group.is_empty() {
                group_body = BODY_HEADER_LEN;
            }
            group.push(i);
            group_body += txs_len;
            // Placeholder, replaced by `commit`.
            out.push(Ok(Vec::new()));
        }
        if !group.is_empty() {
            self.commit(batches, &group, &mut out);
        }
        out
    }

    /// `append`'s checks; returns the bytes the batch's transactions take in a record body.
    fn check(&self, txs: &[(Digest, &[u8])]) -> Result<u64> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if txs.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let max = self.options.max_tx_size;
        if let Some((index, (_, bytes))) = txs.iter().enumerate().find(|(_, t)| t.1.len() > max) {
            return Err(Error::TxTooLarge {
                index,
                len: bytes.len(),
                max,
            });
        }
        // Checked on the whole batch, duplicates included, so that whether a batch fits
        // does not depend on what the log already holds.
        let whole = record_len(txs.iter().map(|t| t.1.len()));
        if whole - RECORD_HEADER_LEN > MAX_BODY_LEN {
            return Err(Error::BatchTooLarge {
                bytes: whole,
                max: MAX_BODY_LEN + RECORD_HEADER_LEN,
            });
        }
        Ok(whole - RECORD_HEADER_LEN - BODY_HEADER_LEN)
    }

    /// Writes the checked batches `group` (indices into `batches`) as one record and puts
    /// their results in `out`.
    fn commit(
        &mut self,
        batches: &[&[(Digest, &[u8])]],
        group: &[usize],
        out: &mut [Result<Vec<Appended>>],
    ) {
        if self.poisoned {
            for &i in group {
                out[i] = Err(Error::Poisoned);
            }
            return;
        }
        // One hash per transaction: a fresh digest enters the dedup map as it is checked, so
        // later copies find it there. Evicting waits for the end of each batch, so every
        // transaction is checked against the window as it was before its batch, as `append`
        // does. If the write fails the map holds digests that were never written, but the log
        // is poisoned then and nothing reads the map again.
        let mut ts = self.last_ts;
        let mut fresh_lens = 0u64;
        let mut results = Vec::with_capacity(group.len());
        for &i in group {
            let txs = batches[i];
            let mut result = Vec::with_capacity(txs.len());
            let mut lens = txs.iter().map(|(_, bytes)| bytes.len() as u64);
            self.dedup.insert_batch(
                txs,
                |(digest, _)| digest,
                ts + 1,
                |found| {
                    let len = lens.next().unwrap_or(0);
                    match found {
                        Some(first) => result.push(Appended {
                            ts: first,
                            duplicate: true,
                        }),
                        None => {
                            ts += 1;
                            fresh_lens += len;
                            result.push(Appended {
                                ts,
                                duplicate: false,
                            });
                        }
                    }
                },
            );
            self.dedup.evict();
            results.push(result);
        }
        let count = ts - self.last_ts;
        if count > 0 {
            let first_ts = self.last_ts + 1;
            let total = record_len_of(count, fresh_lens);
            let fresh = group.iter().zip(&results).flat_map(|(&i, result)| {
                batches[i]
                    .iter()
                    .zip(result)
                    .filter(|(_, a)| !a.duplicate)
                    .map(|((d, b), _)| (d, *b))
            });
            if let Err(e) = self.write(first_ts, count, fresh, total) {
                self.poisoned = true;
                let mut e = Some(e);
                for &i in group {
                    out[i] = Err(e.take().unwrap_or(Error::Poisoned));
                }
                return;
            }
            self.last_ts = ts;
            if let Some(seg) = self.segments.last_mut() {
                seg.push_record(first_ts, self.last_ts + 1, total);
            }
        }
        for (&i, result) in group.iter().zip(results) {
            out[i] = Ok(result);
        }
    }

    /// Writes and syncs one record, in a new segment if the active one would pass the size
    /// limit (a record bigger than the limit gets a segment of its own).
    fn write<'a>(
        &mut self,
        first_ts: u64,
        count: u64,
        fresh: impl Iterator<Item = (&'a Digest, &'a [u8])>,
        total: u64,
    ) -> Result<()> {
        let roll = match self.segments.last() {
            None => true,
            Some(seg) => seg.len.saturating_add(total) > self.options.segment_size,
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if roll {
            buf.extend_from_slice(&encode_segment_header(first_ts));
        }
        buf.reserve(usize::try_from(total).unwrap_or(0));
        encode_record(&mut buf, first_ts, count, fresh);
        let written = if roll {
            self.create_segment(first_ts, &buf)
        } else {
            self.write_active(&buf)
        };
        if buf.capacity() <= KEEP_BUFFER {
            self.buf = buf;
        }
        written
    }

    fn write_active(&mut self, buf: &[u8]) -> Result<()> {
        let (Some(file), Some(seg)) = (&self.active, self.segments.last()) else {
            return Err(Error::Poisoned);
        };
        self.active_end = write_ahead(
            file,
            &seg.path,
            seg.len,
            buf,
            self.active_end,
            self.options.preallocate,
        )?;
        file.sync_data().map_err(io_err("fsync", &seg.path))
    }

    fn create_segment(&mut self, first_ts: u64, buf: &[u8]) -> Result<()> {
        let path = self.dir.join(segment_file_name(first_ts));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let end = write_ahead(&file, &path, 0, buf, 0, self.options.preallocate)?;
        file.sync_data().map_err(io_err("fsync", &path))?;
        // The new name must be durable too, or a crash could lose the whole file.
        sync_dir(&self.dir)?;
        // The segment before keeps its records only. Not synced: a crash before the cut is
        // made durable leaves zeros after its last record, which recovery reads as free space.
        if let (Some(old), Some(seg)) = (&self.active, self.segments.last()) {
            if self.active_end > seg.len {
                old.set_len(seg.len)
                    .map_err(io_err("truncate", &seg.path))?;
            }
        }
        self.active = Some(file);
        self.active_end = end;
        self.segments.push(Segment::new(path, first_ts));
        Ok(())
    }

    /// Timestamp of the last durable transaction; 0 for an empty log.
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    /// What open found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Entries with timestamp >= `ts` (from the start for 0), in order, up to `last_ts()` as
    /// of this call.
    pub fn read_from(&self, ts: u64) -> Result<Reader> {
        let from = ts.max(1);
        let mut plan = Vec::new();
        if from <= self.last_ts {
            let first = self
                .segments
                .partition_point(|s| s.first_ts <= from)
                .saturating_sub(1);
            for (i, seg) in self.segments.iter().enumerate().skip(first) {
                let (offset, at_ts) = if i == first {
                    seg.seek_point(from)
                } else {
                    (SEGMENT_HEADER_LEN, seg.first_ts)
                };
                plan.push((seg.path.clone(), offset, at_ts, seg.len));
            }
        }
        Ok(Reader::new(self.dir.clone(), plan, from, self.last_ts))
    }

    /// Up to `max` entries from timestamp `from_ts` on: the chunked form of `read_from`.
    pub fn read_batch(&self, from_ts: u64, max: usize) -> Result<Vec<Entry>> {
        self.read_from(from_ts)?.take(max).collect()
    }
}

/// Zeros for `write_ahead`, written a slice at a time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Writes `buf` at `at` of `file` (whose length is `end`); if it reaches past `end`, then also
/// `preallocate` bytes of zeros after it, so that the next writes land in space the file
/// already has. Returns the file's new length. The caller syncs.
fn write_ahead(
    file: &File,
    path: &Path,
    at: u64,
    buf: &[u8],
    end: u64,
    preallocate: u64,
) -> Result<u64> {
    file.write_all_at(buf, at).map_err(io_err("write", path))?;
    let written = at.saturating_add(buf.len() as u64);
    if written <= end {
        return Ok(end);
    }
    let mut pos = written;
    let target = written.saturating_add(preallocate);
    while pos < target {
        let n = (target - pos).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], pos)
            .map_err(io_err("write", path))?;
        pos += n as u64;
    }
    Ok(target)
}

/// Cuts the last segment at `offset`, or deletes it when no record would remain. Returns the
/// bytes removed and whether the file went.
fn cut_tail(dir: &Path, segment: &Segment, offset: u64) -> Result<(u64, bool)> {
    let path = &segment.path;
    let file_len = fs::metadata(path).map_err(io_err("stat", path))?.len();
    if segment.is_empty() {
        fs::remove_file(path).map_err(io_err("remove", path))?;
        sync_dir(dir)?;
        return Ok((file_len, true));
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    file.set_len(offset).map_err(io_err("truncate", path))?;
    file.sync_all().map_err(io_err("fsync", path))?;
    Ok((file_len.saturating_sub(offset), false))
}

/// Creates the log's directory `0700`, or checks that an existing one is private: the log is
/// the cluster's history, so a directory another user made (who could plant or read
/// segments) or one open to group or others is refused with how to fix it.
fn create_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(Error::Io {
                op: "open log directory",
                path: dir.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("create directory", dir))?;
            match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
                _ => sync_dir(Path::new("."))?,
            }
        }
        Err(e) => return Err(io_err("stat", dir)(e)),
    }
    // Checked after creating too, so a directory someone else made in between is checked.
    let meta = fs::metadata(dir).map_err(io_err("stat", dir))?;
    check_private(dir, meta.uid(), meta.mode(), effective_uid())
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether a directory owned by `uid` with permission bits `mode` is private to `euid`; the
/// error says what is wrong and how to fix it.
fn check_private(dir: &Path, uid: u32, mode: u32, euid: u32) -> Result<()> {
    let open = mode & 0o077 != 0;
    if uid == euid && !open {
        return Ok(());
    }
    let d = dir.display();
    let mut what = Vec::new();
    if open {
        what.push(format!("is mode {:04o}", mode & 0o7777));
    }
    if uid != euid {
        what.push(format!(
            "is owned by uid {uid}, not by this process's uid {euid}"
        ));
    }
    let fix = if uid != euid {
        format!(
            "use a directory of your own, or have its owner hand it over: \
             chown {euid} {d} && chmod 700 {d}"
        )
    } else {
        format!("chmod 700 {d}")
    };
    Err(Error::Io {
        op: "refusing log directory",
        path: dir.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "it {}; it must be owned by you and closed to others: {fix}",
                what.join(" and ")
            ),
        ),
    })
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked(dir.to_path_buf())),
        Err(TryLockError::Error(e)) => Err(io_err("lock", &path)(e)),
    }
}

/// Segment files in timestamp order; other files are left alone.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(ts) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            found.push((ts, entry.path()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let path =
            std::env::temp_dir().join(format!("remora-log-unit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        Dir(path)
    }

    #[test]
    fn only_a_directory_of_ours_closed_to_others_is_private() {
        let d = Path::new("/srv/cluster/log");
        assert!(check_private(d, 7, 0o40700, 7).is_ok());
        let open = check_private(d, 7, 0o40777, 7).unwrap_err().to_string();
        assert_eq!(
            open,
            "refusing log directory /srv/cluster/log: it is mode 0777; it must be owned by you \
             and closed to others: chmod 700 /srv/cluster/log"
        );
        assert!(check_private(d, 7, 0o710, 7).is_err());
        let theirs = check_private(d, 8, 0o700, 7).unwrap_err().to_string();
        assert!(
            theirs.contains("is owned by uid 8, not by this process's uid 7"),
            "{theirs}"
        );
        assert!(
            theirs.contains("chown 7 /srv/cluster/log && chmod 700 /srv/cluster/log"),
            "{theirs}"
        );
    }

    #[test]
    fn an_open_log_directory_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("open-dir");
        fs::create_dir_all(&d.0).unwrap();
        fs::set_permissions(&d.0, fs::Permissions::from_mode(0o777)).unwrap();
        let err = Log::open(&d.0, Options::default()).err().expect("refused");
        let msg = err.to_string();
        assert!(msg.contains("is mode 0777"), "{msg}");
        assert!(
            msg.contains(&format!("chmod 700 {}", d.0.display())),
            "{msg}"
        );
        assert!(!d.0.join(LOCK_FILE).exists(), "nothing was created in it");
        fs::set_permissions(&d.0, fs::Permissions::from_mode(0o700)).unwrap();
        Log::open(&d.0, Options::default()).unwrap();
        let fresh = d.0.join("a").join("b");
        drop(Log::open(&fresh, Options::default()).unwrap());
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_failed_write_poisons_until_reopen_and_acknowledges_nothing() {
        let d = dir("poison");
        let mut log = Log::open(&d.0, Options::default()).unwrap();
        log.append(&[([1; 32], b"one")]).unwrap();
        // Swap in a read-only handle so the next write fails the way a full disk would.
        let path = log.segments[0].path.clone();
        log.active = Some(File::open(&path).unwrap());
        let err = log.append(&[([2; 32], b"two")]).unwrap_err();
        assert!(matches!(err, Error::Io { op: "write", .. }), "{err}");
        assert!(matches!(
            log.append(&[([3; 32], b"three")]),
            Err(Error::Poisoned)
        ));
        assert_eq!(log.last_ts(), 1);
        drop(log);
        let mut log = Log::open(&d.0, Options::default()).unwrap();
        assert_eq!(log.last_ts(), 1);
        let again = log.append(&[([2; 32], b"two")]).unwrap();
        assert_eq!(
            again,
            vec![Appended {
                ts: 2,
                duplicate: false
            }]
        );
    }

    #[test]
    fn replay_seeks_through_the_sparse_index() {
        let d = dir("seek");
        let mut log = Log::open(&d.0, Options::default()).unwrap();
        let big = vec![9u8; 300 << 10];
        for i in 0..14u8 {
            log.append(&[([i; 32], &big), ([i + 100; 32], b"small")])
                .unwrap();
        }
        assert_eq!(log.segments.len(), 1);
        assert!(
            log.segments[0].index_len() >= 3,
            "the index should be sparse, not empty"
        );
        for from in [1, 2, 9, 10, 17, 26, 27] {
            let entries = log.read_batch(from, 2).unwrap();
            let ts: Vec<u64> = entries.iter().map(|e| e.ts).collect();
            assert_eq!(ts, vec![from, from + 1]);
            let i = ((from - 1) / 2) as u8;
            assert_eq!(
                entries[0].digest[0],
                if from % 2 == 1 { i } else { i + 100 }
            );
        }
    }
}
