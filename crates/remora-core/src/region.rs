//! Registered memory regions: page-aligned, fixed-size files that the owner maps read-write and
//! peers map by name. Each region holds slots of one size class (or, when `class` is `None`,
//! raw bytes that peers may write, for coordination memory).
//!
//! A region is a file `region-NNNNNN` in the store's directory, which is private to the
//! cluster (directory 0700, files 0600): being able to open it is being a cluster member on
//! this host.

use crate::error::{Error, IoContext, Result};
use memmap2::{MmapOptions, MmapRaw};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

pub const PAGE: usize = 4096;
/// The first page of every region describes it.
pub const REGION_HEADER_BYTES: usize = PAGE;
const MAGIC: u64 = u64::from_le_bytes(*b"REMORARG");
const FORMAT: u64 = 1;
const NO_CLASS: u64 = u64::MAX;

/// What a region's header says about it; readers learn it by reading the first page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    pub id: u32,
    /// Size class of its slots, `None` for a raw (remote-writable) region.
    pub class: Option<usize>,
    pub slot_bytes: usize,
    pub slot_count: usize,
    pub bytes: usize,
    pub writable: bool,
}

impl RegionInfo {
    fn encode(&self) -> [u8; 64] {
        let words = [
            MAGIC,
            FORMAT,
            u64::from(self.id),
            self.class.map_or(NO_CLASS, |c| c as u64),
            self.slot_bytes as u64,
            self.slot_count as u64,
            self.bytes as u64,
            u64::from(self.writable),
        ];
        let mut out = [0u8; 64];
        for (chunk, w) in out.chunks_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Parses a region header; `what` names the region in errors.
    pub fn decode(bytes: &[u8], what: &Path) -> Result<Self> {
        let bad = |why: &str| Error::BadRegion {
            path: what.to_path_buf(),
            why: why.to_string(),
        };
        if bytes.len() < 64 {
            return Err(bad("header too short"));
        }
        let w = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        if w(0) != MAGIC {
            return Err(bad("bad magic"));
        }
        if w(1) != FORMAT {
            return Err(bad("unknown format version"));
        }
        let class = match w(3) {
            NO_CLASS => None,
            c if (c as usize) < crate::slot::SIZE_CLASSES => Some(c as usize),
            _ => return Err(bad("size class out of range")),
        };
        let info = RegionInfo {
            id: u32::try_from(w(2)).map_err(|_| bad("region id out of range"))?,
            class,
            slot_bytes: w(4) as usize,
            slot_count: w(5) as usize,
            bytes: w(6) as usize,
            writable: w(7) == 1,
        };
        let slots_end = info
            .slot_bytes
            .checked_mul(info.slot_count)
            .and_then(|n| n.checked_add(REGION_HEADER_BYTES));
        if slots_end.is_none_or(|end| end > info.bytes) {
            return Err(bad("slots overrun the region"));
        }
        Ok(info)
    }

    /// Byte offset of slot `index`.
    pub fn slot_offset(&self, index: usize) -> u64 {
        (REGION_HEADER_BYTES + index * self.slot_bytes) as u64
    }
}

pub fn region_path(store_dir: &Path, id: u32) -> PathBuf {
    store_dir.join(format!("region-{id:06}"))
}

/// Creates `dir` (and parents) private to the owner: 0700. An existing `dir` must already be
/// private: a directory another user created, or one open to group or others, could hold a
/// planted secret or let others read the regions, so it is refused with how to fix it.
pub fn private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .ctx(|| format!("creating {}", dir.display()))?;
    // Checked after creating, so a directory someone else made in between is checked too.
    let meta = fs::metadata(dir).ctx(|| format!("reading {}", dir.display()))?;
    check_private(dir, meta.uid(), meta.mode(), effective_uid())
}

/// The user this process acts as.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether a directory owned by `uid` with permission bits `mode` is private to `euid`; the
/// error says what is wrong and how to fix it.
pub(crate) fn check_private(dir: &Path, uid: u32, mode: u32, euid: u32) -> Result<()> {
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
        format!("use a directory of your own, or have its owner hand it over: chown {euid} {d} && chmod 700 {d}")
    } else {
        format!("chmod 700 {d}")
    };
    Err(Error::Io {
        context: format!("cluster directory {d} {}", what.join(" and ")),
        source: std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("it must be owned by you and closed to others: {fix}"),
        ),
    })
}

/// A mapped region, owner's or peer's.
pub struct Region {
    pub info: RegionInfo,
    map: MmapRaw,
    /// Mapped writable: the owner's regions, and a peer's view of remote-writable ones.
    writable_here: bool,
}

impl Region {
    /// Creates and maps a new region file (owner side).
    pub fn create(store_dir: &Path, info: RegionInfo) -> Result<Self> {
        let path = region_path(store_dir, info.id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .ctx(|| format!("creating region {}", path.display()))?;
        file.set_len(info.bytes as u64)
            .ctx(|| format!("sizing region {}", path.display()))?;
        let map = MmapOptions::new()
            .len(info.bytes)
            .map_raw(&file)
            .ctx(|| format!("mapping region {}", path.display()))?;
        let region = Region {
            info,
            map,
            writable_here: true,
        };
        // SAFETY: the mapping is `info.bytes` long (> 64) and page-aligned; nobody else has the
        // file yet, so this plain write races with nothing.
        unsafe {
            std::ptr::copy_nonoverlapping(info.encode().as_ptr(), region.map.as_mut_ptr(), 64);
        }
        Ok(region)
    }

    /// Maps an existing region of another process (peer side): read-only unless the region
    /// says it is remote-writable.
    pub fn attach(store_dir: &Path, id: u32) -> Result<Self> {
        Self::attach_as(store_dir, id, false)
    }

    /// As [`Region::attach`]; `owner` maps every region read-write, as its owner may. RDMA
    /// needs that: kernels before 6.2 pin even read-only registrations for writing, which
    /// a read-only shared mapping refuses. Writes through `Region::write` stay limited to
    /// remote-writable regions either way.
    pub(crate) fn attach_as(store_dir: &Path, id: u32, owner: bool) -> Result<Self> {
        let path = region_path(store_dir, id);
        let file = match OpenOptions::new().read(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoRegion {
                    store: store_dir.display().to_string(),
                    region: id,
                })
            }
            Err(e) => return Err(e).ctx(|| format!("opening region {}", path.display())),
        };
        let len = file
            .metadata()
            .ctx(|| format!("reading {}", path.display()))?
            .len() as usize;
        if len < REGION_HEADER_BYTES {
            return Err(Error::BadRegion {
                path,
                why: "shorter than its header".into(),
            });
        }
        let ro = MmapOptions::new()
            .len(len)
            .map_raw_read_only(&file)
            .ctx(|| format!("mapping region {}", path.display()))?;
        // SAFETY: the header page is written once before the file is published and never again.
        let header = unsafe { std::slice::from_raw_parts(ro.as_ptr(), 64) };
        let info = RegionInfo::decode(header, &path)?;
        if info.bytes != len || info.id != id {
            return Err(Error::BadRegion {
                path,
                why: "header disagrees with the file".into(),
            });
        }
        let map = if info.writable || owner {
            drop(ro);
            let rw = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .ctx(|| format!("opening region {}", path.display()))?;
            MmapOptions::new()
                .len(len)
                .map_raw(&rw)
                .ctx(|| format!("mapping region {}", path.display()))?
        } else {
            ro
        };
        Ok(Region {
            info,
            map,
            writable_here: info.writable,
        })
    }

    /// The region as 64-bit words, for the slot protocol.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned and `bytes` long (a multiple of 8), stays mapped
        // while `self` lives, and is only ever accessed through atomics by this process.
        // `AtomicU64` has the layout of `u64`; atomic loads are valid on read-only pages.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.info.bytes / 8)
        }
    }

    /// The words of `len` bytes at `offset`, which must be word-aligned and in bounds.
    pub fn words_at(&self, offset: u64, len: usize) -> Result<&[AtomicU64]> {
        let start = self.check(offset, len)?;
        if !start.is_multiple_of(8) || !len.is_multiple_of(8) {
            return Err(Error::OutOfBounds {
                region: self.info.id,
                offset,
                len,
                size: self.info.bytes,
            });
        }
        Ok(&self.words()[start / 8..(start + len) / 8])
    }

    /// The words of slot `index`.
    pub fn slot_words(&self, index: usize) -> &[AtomicU64] {
        let start = self.info.slot_offset(index) as usize / 8;
        &self.words()[start..start + self.info.slot_bytes / 8]
    }

    fn check(&self, offset: u64, len: usize) -> Result<usize> {
        let out = || Error::OutOfBounds {
            region: self.info.id,
            offset,
            len,
            size: self.info.bytes,
        };
        let start = usize::try_from(offset).map_err(|_| out())?;
        match start.checked_add(len) {
            Some(end) if end <= self.info.bytes => Ok(start),
            _ => Err(out()),
        }
    }

    /// Copies `buf.len()` bytes at `offset`, with word-sized atomic loads where aligned. The
    /// copy may mix writes; callers validate it (see `slot`).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = self.check(offset, buf.len())?;
        let (words, bytes) = (self.words(), self.bytes());
        // Bytes up to a word boundary, whole words, then the tail's bytes: one tight loop for
        // the words (a branch per word made a 64 KiB read 1.5× slower).
        let head = ((8 - start % 8) % 8).min(buf.len());
        let whole = (buf.len() - head) / 8;
        let (first, rest) = buf.split_at_mut(head);
        let (middle, tail) = rest.split_at_mut(whole * 8);
        for (i, b) in first.iter_mut().enumerate() {
            *b = bytes[start + i].load(Ordering::Relaxed);
        }
        let w0 = (start + head) / 8;
        for (dst, w) in middle.chunks_exact_mut(8).zip(&words[w0..w0 + whole]) {
            dst.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let t0 = start + head + whole * 8;
        for (i, b) in tail.iter_mut().enumerate() {
            *b = bytes[t0 + i].load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        Ok(())
    }

    /// Writes bytes at `offset`, with word-sized atomic stores where aligned (so an aligned
    /// 8-byte entry is never seen half-written). Callers check that they may write here.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let start = self.check(offset, data.len())?;
        if !self.writable_here {
            return Err(Error::NotWritable {
                region: self.info.id,
            });
        }
        let (words, bytes) = (self.words(), self.bytes());
        fence(Ordering::Release);
        // As `read`: leading bytes, whole words in one tight loop, the tail's bytes.
        let head = ((8 - start % 8) % 8).min(data.len());
        let whole = (data.len() - head) / 8;
        let (first, rest) = data.split_at(head);
        let (middle, tail) = rest.split_at(whole * 8);
        for (i, &b) in first.iter().enumerate() {
            bytes[start + i].store(b, Ordering::Relaxed);
        }
        let w0 = (start + head) / 8;
        for (src, w) in middle.chunks_exact(8).zip(&words[w0..w0 + whole]) {
            let mut v = [0u8; 8];
            v.copy_from_slice(src);
            w.store(u64::from_le_bytes(v), Ordering::Relaxed);
        }
        let t0 = start + head + whole * 8;
        for (i, &b) in tail.iter().enumerate() {
            bytes[t0 + i].store(b, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Start of the mapping, for registering it with an RDMA device (which then reads and
    /// writes it as the owner's peers would).
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn bytes(&self) -> &[AtomicU8] {
        // SAFETY: as for `words`; `AtomicU8` has the layout of `u8`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU8, self.info.bytes) }
    }
}

/// A peer's regions, attached on first use and kept: a region file never changes size while
/// its owner lives, so a mapping stays valid.
pub(crate) struct AttachedRegions {
    dir: PathBuf,
    owner: bool,
    regions: RwLock<HashMap<u32, Arc<Region>>>,
}

impl AttachedRegions {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            owner: false,
            regions: RwLock::default(),
        }
    }

    /// The owner's own regions, all mapped read-write (see [`Region::attach_as`]).
    pub(crate) fn owner(dir: PathBuf) -> Self {
        Self {
            owner: true,
            ..Self::new(dir)
        }
    }

    pub(crate) fn get(&self, id: u32) -> Result<Arc<Region>> {
        if let Some(r) = self
            .regions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(r.clone());
        }
        let region = Arc::new(Region::attach_as(&self.dir, id, self.owner)?);
        let mut map = self.regions.write().unwrap_or_else(|e| e.into_inner());
        Ok(map.entry(id).or_insert(region).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_directory_of_ours_closed_to_others_is_private() {
        let d = Path::new("/srv/cluster");
        assert!(check_private(d, 1000, 0o40700, 1000).is_ok());
        assert!(check_private(d, 1000, 0o700, 1000).is_ok());
        assert!(check_private(d, 0, 0o500, 0).is_ok());

        let open = check_private(d, 1000, 0o40777, 1000)
            .unwrap_err()
            .to_string();
        assert_eq!(
            open,
            "cluster directory /srv/cluster is mode 0777: it must be owned by you and closed \
             to others: chmod 700 /srv/cluster"
        );
        assert!(check_private(d, 1000, 0o750, 1000).is_err());
        assert!(check_private(d, 1000, 0o701, 1000).is_err());

        let theirs = check_private(d, 1001, 0o700, 1000).unwrap_err().to_string();
        assert!(
            theirs.contains("is owned by uid 1001, not by this process's uid 1000"),
            "{theirs}"
        );
        assert!(
            theirs.contains("chown 1000 /srv/cluster && chmod 700 /srv/cluster"),
            "{theirs}"
        );
        let both = check_private(d, 1001, 0o777, 1000).unwrap_err().to_string();
        assert!(
            both.contains("is mode 0777 and is owned by uid 1001"),
            "{both}"
        );
    }

    #[test]
    fn an_open_directory_is_refused_and_a_new_one_is_made_private() {
        let base = std::env::temp_dir().join(format!("remora-region-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let fresh = base.join("new").join("cluster");
        private_dir(&fresh).unwrap();
        let mode = fs::metadata(&fresh).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let planted = base.join("planted");
        fs::create_dir_all(&planted).unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&planted).unwrap_err().to_string();
        assert!(err.contains("is mode 0777"), "{err}");
        assert!(
            err.contains(&format!("chmod 700 {}", planted.display())),
            "{err}"
        );
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o700)).unwrap();
        private_dir(&planted).unwrap();
        let _ = fs::remove_dir_all(&base);
    }
}
