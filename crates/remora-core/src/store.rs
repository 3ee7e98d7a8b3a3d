//! The owner's dual-versioned object store: an index from object id to slot, size-class pools
//! of slots in registered regions, and the Heron operations `get`, `get_before` and `set`.
//!
//! One owner writes; it holds the write lock for every change, so its own reads never race a
//! write. Peers read the same slots one-sidedly (see `remote`) and validate what they copy.
//! The index is a module of its own (`crate::index`), and so is the merge (`store::adopt`).

mod adopt;
pub mod checkpoint;
mod transfer;

use crate::error::{show_id, Error, IoContext, Result};
use crate::index::{Entry, IdHasher, Index};
use crate::region::{private_dir, Region, RegionInfo, PAGE, REGION_HEADER_BYTES};
use crate::slot::{self, Lookup, MAX_ID_LEN, MAX_VALUE_LEN, SIZE_CLASSES};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Where an object's slot lives: what a remote reader caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Addr {
    pub region: u32,
    pub offset: u64,
}

impl Addr {
    /// Packs into one word (offsets are multiples of 64): the slot header's forward field.
    pub fn pack(self) -> u64 {
        (u64::from(self.region) << 32) | (self.offset / 64)
    }
    pub fn unpack(word: u64) -> Self {
        Addr {
            region: (word >> 32) as u32,
            offset: (word & 0xffff_ffff) * 64,
        }
    }
}

/// Default size of a region: large enough to amortise a file per region, small enough that a
/// store of a few objects stays small.
pub const DEFAULT_REGION_BYTES: usize = 4 << 20;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The cluster's directory on this host; the store lives in `dir/name`.
    pub dir: PathBuf,
    pub name: String,
    pub region_bytes: usize,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        StoreConfig {
            dir: dir.into(),
            name: name.into(),
            region_bytes: DEFAULT_REGION_BYTES,
        }
    }
}

/// Store names become file names: keep them boring.
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_string()))
    }
}

pub fn check_id(id: &[u8]) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Error::BadId {
            len: id.len(),
            max: MAX_ID_LEN,
        });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::Oversize {
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

/// One write of a batch: `(id, value, ts)`; `value: None` deletes.
pub type Put<'a> = (&'a [u8], Option<&'a [u8]>, u64);

/// What the index knows of an object: where its slot is and the newest version, which is all
/// the merge asks of most objects. Small, so that an index entry fits one cache line.
#[derive(Clone, Copy, Default)]
struct Obj {
    incarnation: u64,
    /// Generation of the newest version; 0 while the slot holds none. The other block holds
    /// generation `gen - 1`, or nothing when `gen` is 1 (blocks alternate, see `slot`).
    gen: u64,
    /// Timestamp of the newest version (a tombstone's, when deleted).
    ts: u64,
    region: u32,
    slot: u32,
    class: u8,
    /// The block (0 or 1) holding the newest version.
    newest: u8,
    deleted: bool,
}

impl Obj {
    fn newest_ts(&self) -> u64 {
        self.ts
    }
    /// The block the next version goes to: the older one (block 0 in a fresh slot).
    fn next_block(&self) -> usize {
        if self.gen == 0 {
            0
        } else {
            usize::from(1 - self.newest)
        }
    }
    fn class(&self) -> usize {
        usize::from(self.class)
    }
}

const _: () = assert!(std::mem::size_of::<Entry<Obj>>() == 64);

#[derive(Default)]
struct Inner {
    regions: Vec<Region>,
    /// Free slots per size class.
    free: Vec<Vec<(u32, usize)>>,
    index: Index<Obj>,
    next_incarnation: u64,
}

impl Inner {
    /// The newest version of `id` as the index records it: 0 when absent, the tombstone's
    /// timestamp when deleted.
    fn newest_ts(&self, id: &[u8]) -> u64 {
        self.index.get(id).map_or(0, Obj::newest_ts)
    }

    /// Where `obj`'s slot lives, as peers address it.
    fn addr(&self, obj: &Obj) -> Addr {
        Addr {
            region: obj.region,
            offset: self
                .regions
                .get(obj.region as usize)
                .map_or(0, |r| r.info.slot_offset(obj.slot as usize)),
        }
    }

    /// The newest version of `obj` (`id`'s index entry) as its owner reads it in place, its
    /// value appended to `out` when it has one: a `CURRENT_*` kind and the timestamp. No
    /// checksum: the owner is the slot's only writer, and writes under the lock its reads hold.
    fn current(&self, obj: &Obj, out: &mut Vec<u8>) -> (u8, u64) {
        if obj.deleted {
            return (CURRENT_DELETED, obj.ts);
        }
        if obj.gen == 0 {
            return (CURRENT_ABSENT, 0);
        }
        let words = self.regions[obj.region as usize].slot_words(obj.slot as usize);
        let start = out.len();
        match slot::append_own_version(words, obj.class(), usize::from(obj.newest), out) {
            (slot::KIND_VALUE, ts) => (CURRENT_VALUE, ts),
            (slot::KIND_TOMBSTONE, ts) => (CURRENT_DELETED, ts),
            _ => {
                out.truncate(start);
                (CURRENT_ABSENT, 0)
            }
        }
    }

    /// The newest value of `id` (`current`), or `None` when it is absent or deleted.
    fn current_value<'b>(&self, id: &[u8], scratch: &'b mut Vec<u8>) -> Option<&'b [u8]> {
        scratch.clear();
        let obj = self.index.get(id)?;
        (self.current(obj, scratch).0 == CURRENT_VALUE).then_some(scratch.as_slice())
    }
}

/// `Current::kinds`: no version (never written, or purged).
pub const CURRENT_ABSENT: u8 = 0;
/// `Current::kinds`: a value, `values[ends[i-1]..ends[i]]`.
pub const CURRENT_VALUE: u8 = 1;
/// `Current::kinds`: deleted at `versions[i]`.
pub const CURRENT_DELETED: u8 = 2;

/// The newest versions of a list of ids, one entry per id (`Store::current_many`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    pub kinds: Vec<u8>,
    /// The version's timestamp (0 when absent).
    pub versions: Vec<u64>,
    /// Values side by side; entry i's ends at `ends[i]` (empty unless it is a value).
    pub values: Vec<u8>,
    pub ends: Vec<usize>,
}

/// What a store holds, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub objects: usize,
    pub regions: usize,
    pub region_bytes: usize,
    pub free_slots: usize,
}

/// A dual-versioned object store owned by this process.
pub struct Store {
    name: String,
    dir: PathBuf,
    region_bytes: usize,
    inner: RwLock<Inner>,
    _owner_lock: File,
}

impl Store {
    /// Creates the store `cfg.name` in `cfg.dir`, replacing what a dead owner left there.
    pub fn create(cfg: &StoreConfig) -> Result<Self> {
        check_name(&cfg.name)?;
        private_dir(&cfg.dir)?;
        let dir = cfg.dir.join(&cfg.name);
        private_dir(&dir)?;
        let lock_path = dir.join("owner.lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .ctx(|| format!("opening {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Owned(cfg.name.clone())),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).ctx(|| format!("locking {}", lock_path.display()))
            }
        }
        remove_regions(&dir)?;
        Ok(Store {
            name: cfg.name.clone(),
            dir,
            region_bytes: cfg.region_bytes.max(2 * PAGE).next_multiple_of(PAGE),
            inner: RwLock::new(Inner {
                free: vec![Vec::new(); SIZE_CLASSES],
                next_incarnation: 1,
                ..Inner::default()
            }),
            _owner_lock: lock,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding this store's regions (and its control socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in this module; the data it guards
        // stays consistent per slot (each write is sequenced), so keep serving.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets each `(id, value, ts)` in order, overwriting the object's older version. The whole
    /// batch is checked first: one bad entry (id, size, or a timestamp not after the object's
    /// current one) rejects the batch and changes nothing.
    pub fn set_many(&self, entries: &[Put<'_>]) -> Result<()> {
        let mut inner = self.write();
        let mut pending: HashMap<&[u8], u64, IdHasher> = HashMap::default();
        for &(id, value, ts) in entries {
            check_id(id)?;
            if let Some(v) = value {
                check_value(v)?;
            }
            let current = pending
                .get(id)
                .copied()
                .or_else(|| inner.index.get(id).map(Obj::newest_ts));
            if let Some(current) = current {
                if ts <= current {
                    return Err(Error::StaleTimestamp {
                        id: show_id(id),
                        ts,
                        current,
                    });
                }
            }
            pending.insert(id, ts);
        }
        for &(id, value, ts) in entries {
            self.apply(&mut inner, id, value, ts)?;
        }
        Ok(())
    }

    pub fn set(&self, id: &[u8], value: &[u8], ts: u64) -> Result<()> {
        self.set_many(&[(id, Some(value), ts)])
    }

    /// Deletes `id` at `ts`: a tombstone version, so `get_before` still sees older values.
    /// Deleting an absent object does nothing.
    pub fn delete(&self, id: &[u8], ts: u64) -> Result<()> {
        check_id(id)?;
        if self.read().index.get(id).is_some() {
            self.set_many(&[(id, None, ts)])?;
        }
        Ok(())
    }

    fn apply(&self, inner: &mut Inner, id: &[u8], value: Option<&[u8]>, ts: u64) -> Result<()> {
        let len = value.map_or(0, <[u8]>::len);
        let class = slot::class_for_len(len).unwrap_or(SIZE_CLASSES - 1);
        // The common case, a new version that fits the slot, changes the index entry in
        // place: no allocation, one hash lookup.
        match inner.index.get_mut(id) {
            Some(obj) if slot::class_capacity(obj.class()) >= len => {
                write_next(&inner.regions, obj, ts, value);
                return Ok(());
            }
            Some(_) => {}
            None => {
                if value.is_some() {
                    let mut obj = self.place(inner, id, class)?;
                    write_next(&inner.regions, &mut obj, ts, value);
                    inner.index.insert(id, obj);
                }
                return Ok(());
            }
        }
        let Some(&obj) = inner.index.get(id) else {
            return Ok(());
        };
        // The value outgrew its slot: move to a larger class, carrying the newest version so
        // `get_before` keeps working, and leave a forward pointer for cached readers.
        let carried = snapshot(&inner.regions, id, &obj)?.get();
        let mut moved = self.place(inner, id, class)?;
        // Generations restart in the new slot: a lone version always has generation 1, which
        // is what lets a reader of an unordered copy tell a lone version from a stale partner.
        match carried {
            Lookup::Value { ts, value } => {
                write_at(&inner.regions, &mut moved, 1, ts, Some(&value))
            }
            Lookup::Deleted { ts } => write_at(&inner.regions, &mut moved, 1, ts, None),
            Lookup::Absent | Lookup::Lagging => {}
        }
        write_next(&inner.regions, &mut moved, ts, value);
        let region = &inner.regions[obj.region as usize];
        slot::write_header(
            &region.slot_words(obj.slot as usize)[..16],
            slot::STATE_FORWARDED,
            id,
            inner.addr(&moved).pack(),
            obj.incarnation,
        );
        inner.free[obj.class()].push((obj.region, obj.slot as usize));
        if let Some(entry) = inner.index.get_mut(id) {
            *entry = moved;
        }
        Ok(())
    }

    /// Takes a free slot of `class` (adding a region when none is left) and hands it to `id`.
    fn place(&self, inner: &mut Inner, id: &[u8], class: usize) -> Result<Obj> {
        let (region_id, slot_index) = match inner.free[class].pop() {
            Some(s) => s,
            None => self.add_slot_region(inner, class)?,
        };
        let incarnation = inner.next_incarnation;
        inner.next_incarnation += 1;
        let region = &inner.regions[region_id as usize];
        let words = region.slot_words(slot_index);
        slot::write_header(&words[..16], slot::STATE_LIVE, id, 0, incarnation);
        for which in 0..2 {
            let start = slot::version_offset(class, which) / 8;
            let len = (slot::VERSION_HEADER_BYTES + slot::class_capacity(class)) / 8;
            slot::clear_version(&words[start..start + len], incarnation);
        }
        Ok(Obj {
            incarnation,
            region: region_id,
            // `add_slot_region` keeps slot indexes within u32.
            slot: slot_index as u32,
            class: class as u8,
            ..Obj::default()
        })
    }

    /// Adds a region of `class` slots to the free pool and takes its first slot.
    fn add_slot_region(&self, inner: &mut Inner, class: usize) -> Result<(u32, usize)> {
        let slot_bytes = slot::slot_bytes(class);
        let bytes = self
            .region_bytes
            .max(REGION_HEADER_BYTES + slot_bytes)
            .next_multiple_of(PAGE);
        let info = RegionInfo {
            id: inner.regions.len() as u32,
            class: Some(class),
            slot_bytes,
            slot_count: ((bytes - REGION_HEADER_BYTES) / slot_bytes).min(u32::MAX as usize),
            bytes,
            writable: false,
        };
        let region = Region::create(&self.dir, info)?;
        // Hand out low slots first: pop() takes from the end.
        inner.free[class].extend((1..info.slot_count).rev().map(|s| (info.id, s)));
        inner.regions.push(region);
        Ok((info.id, 0))
    }

    /// Adds a raw region of `bytes` (rounded up to pages) that peers may write one-sidedly:
    /// coordination and state-transfer memory. Returns its id.
    pub fn add_shared_region(&self, bytes: usize) -> Result<u32> {
        let mut inner = self.write();
        let bytes = (REGION_HEADER_BYTES + bytes.max(1)).next_multiple_of(PAGE);
        let info = RegionInfo {
            id: inner.regions.len() as u32,
            class: None,
            slot_bytes: 0,
            slot_count: 0,
            bytes,
            writable: true,
        };
        inner.regions.push(Region::create(&self.dir, info)?);
        Ok(info.id)
    }

    /// Reads bytes of one of this store's regions (e.g. coordination memory peers wrote).
    pub fn read_region(&self, region: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.region(&self.read(), region)?.read(offset, buf)
    }

    /// Writes bytes into one of this store's remote-writable regions, as a peer would: the
    /// owner's own coordination entry lives beside the ones its peers write.
    pub fn write_region(&self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        let inner = self.read();
        let r = self.region(&inner, region)?;
        if !r.info.writable {
            return Err(Error::NotWritable { region });
        }
        r.write(offset, data)
    }

    fn region<'a>(&self, inner: &'a Inner, region: u32) -> Result<&'a Region> {
        inner
            .regions
            .get(region as usize)
            .ok_or_else(|| Error::NoRegion {
                store: self.name.clone(),
                region,
            })
    }

    fn lookup_many<T>(
        &self,
        reqs: &[T],
        key: impl Fn(&T) -> &[u8],
        pick: impl Fn(&T, slot::Snapshot) -> Lookup,
    ) -> Result<Vec<Lookup>> {
        let inner = self.read();
        reqs.iter()
            .map(|r| match inner.index.get(key(r)) {
                Some(obj) => Ok(pick(r, snapshot(&inner.regions, key(r), obj)?)),
                None => Ok(Lookup::Absent),
            })
            .collect()
    }

    /// The newest version of each id.
    pub fn get_many(&self, ids: &[&[u8]]) -> Result<Vec<Lookup>> {
        self.lookup_many(ids, |id| id, |_, snap| snap.get())
    }

    pub fn get(&self, id: &[u8]) -> Result<Lookup> {
        Ok(self.get_many(&[id])?.remove(0))
    }

    /// The newest version of each id, laid flat for the owner's merge: the index says which
    /// block holds it, and the block is read in place without its checksum (the owner is its
    /// only writer, and writes under the lock this read holds). Same answers as `get_many`
    /// (`Lagging` aside, which only `get_before` gives), a fraction of its cost.
    pub fn current_many<'a>(&self, ids: impl IntoIterator<Item = &'a [u8]>) -> Current {
        let inner = self.read();
        let mut out = Current::default();
        for id in ids {
            let (kind, ts) = match inner.index.get(id) {
                None => (CURRENT_ABSENT, 0),
                Some(obj) => inner.current(obj, &mut out.values),
            };
            out.kinds.push(kind);
            out.versions.push(ts);
            out.ends.push(out.values.len());
        }
        out
    }

    /// For each `(id, bound)`, the newest version with timestamp < bound, or `Lagging`.
    pub fn get_before_many(&self, reqs: &[(&[u8], u64)]) -> Result<Vec<Lookup>> {
        self.lookup_many(reqs, |r| r.0, |r, snap| snap.before(r.1))
    }

    pub fn get_before(&self, id: &[u8], bound: u64) -> Result<Lookup> {
        Ok(self.get_before_many(&[(id, bound)])?.remove(0))
    }

    /// Timestamps of the kept versions of `id`, newest first (empty when absent).
    pub fn versions(&self, id: &[u8]) -> Vec<u64> {
        let inner = self.read();
        let Some(obj) = inner.index.get(id) else {
            return Vec::new();
        };
        if obj.gen <= 1 {
            return (obj.gen == 1).then_some(obj.ts).into_iter().collect();
        }
        // The index keeps the newest timestamp only; the older one is the other block's, in
        // the owner's own memory, which nothing else writes.
        let older = 1 - usize::from(obj.newest);
        let at = slot::version_offset(obj.class(), older) / 8 + 1;
        let words = inner.regions[obj.region as usize].slot_words(obj.slot as usize);
        let older_ts = words.get(at).map(|w| w.load(Ordering::Relaxed));
        std::iter::once(obj.ts).chain(older_ts).collect()
    }

    /// Where each id's slot lives (Heron's `query_obj_addr`), `None` for unknown ids.
    pub fn addresses(&self, ids: &[&[u8]]) -> Vec<Option<Addr>> {
        let inner = self.read();
        ids.iter()
            .map(|id| inner.index.get(id).map(|o| inner.addr(o)))
            .collect()
    }

    /// Frees the slots of objects deleted before `horizon` (a timestamp every reader has
    /// passed, so no `get_before` can still need them). Returns how many were freed.
    pub fn purge_deleted(&self, horizon: u64) -> usize {
        let mut inner = self.write();
        let dead: Vec<Vec<u8>> = inner
            .index
            .iter()
            .filter(|(_, o)| o.deleted && o.newest_ts() < horizon)
            .map(|(id, _)| id.to_vec())
            .collect();
        for id in &dead {
            let Some(obj) = inner.index.remove(id) else {
                continue;
            };
            let words = inner.regions[obj.region as usize].slot_words(obj.slot as usize);
            slot::write_header(&words[..16], slot::STATE_FREE, &[], 0, obj.incarnation);
            inner.free[obj.class()].push((obj.region, obj.slot as usize));
        }
        dead.len()
    }

    /// The newest version of `id` from the owner's index alone, without reading the slot:
    /// 0 when absent, the tombstone's timestamp when deleted. What the merge compares a
    /// table's read versions with.
    pub fn newest_version(&self, id: &[u8]) -> u64 {
        self.read().newest_ts(id)
    }

    /// [`Store::newest_version`] of each id, under one lock.
    pub fn newest_versions(&self, ids: &[&[u8]]) -> Vec<u64> {
        let inner = self.read();
        ids.iter().map(|id| inner.newest_ts(id)).collect()
    }

    /// Every id the index holds, deleted objects included until purged, sorted bytewise so
    /// that replicas list the same state the same way.
    pub fn ids(&self) -> Vec<Vec<u8>> {
        let mut ids: Vec<Vec<u8>> = self
            .read()
            .index
            .iter()
            .map(|(id, _)| id.to_vec())
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn stats(&self) -> StoreStats {
        let inner = self.read();
        StoreStats {
            objects: inner.index.len(),
            regions: inner.regions.len(),
            region_bytes: inner.regions.iter().map(|r| r.info.bytes).sum(),
            free_slots: inner.free.iter().map(Vec::len).sum(),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The owner's memory dies with it; peers that still map a region keep their mapping.
        let _ = remove_regions(&self.dir);
        let _ = fs::remove_file(self.dir.join("owner.lock"));
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Writes the next version of `obj` over its older block.
fn write_next(regions: &[Region], obj: &mut Obj, ts: u64, value: Option<&[u8]>) {
    let gen = obj.gen + 1;
    write_at(regions, obj, gen, ts, value);
}

/// Writes generation `gen` into the block that does not hold the newest version (block 0 in a
/// fresh slot).
fn write_at(regions: &[Region], obj: &mut Obj, gen: u64, ts: u64, value: Option<&[u8]>) {
    let which = obj.next_block();
    let words = regions[obj.region as usize].slot_words(obj.slot as usize);
    let start = slot::version_offset(obj.class(), which) / 8;
    let len = (slot::VERSION_HEADER_BYTES + slot::class_capacity(obj.class())) / 8;
    slot::write_version(&words[start..start + len], obj.incarnation, gen, ts, value);
    obj.gen = gen;
    obj.ts = ts;
    obj.newest = which as u8;
    obj.deleted = value.is_none();
}

/// The owner's copy of a slot. The owner is the only writer and holds the lock, so the copy is
/// whole unless something outside the owner wrote the region file.
fn snapshot(regions: &[Region], id: &[u8], obj: &Obj) -> Result<slot::Snapshot> {
    let words = regions[obj.region as usize].slot_words(obj.slot as usize);
    slot::read_slot(words, obj.class()).map_err(|reject| Error::Corrupt {
        id: show_id(id),
        why: format!("{reject:?}"),
    })
}

/// Removes region files a previous owner of this directory left behind.
fn remove_regions(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("region-") || name == crate::control::SOCKET_NAME {
            let path = entry.path();
            fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}
