//! The owner's dual-versioned object store: an index from object id to slot, size-class pools
//! of slots in registered regions, and the Heron operations `get`, `get_before` and `set`.
//!
//! One owner writes; it holds the write lock for every change, so its own reads never race a
//! write. Peers read the same slots one-sidedly (see `remote`) and validate what they copy.

use crate::error::{show_id, Error, IoContext, Result};
use crate::region::{private_dir, Region, RegionInfo, PAGE, REGION_HEADER_BYTES};
use crate::slot::{self, Lookup, MAX_ID_LEN, MAX_VALUE_LEN, SIZE_CLASSES};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
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

#[derive(Clone, Copy, Default)]
struct Block {
    gen: u64,
    ts: u64,
}

struct Obj {
    addr: Addr,
    slot: usize,
    class: usize,
    incarnation: u64,
    blocks: [Block; 2],
    deleted: bool,
}

impl Obj {
    /// Index of the block holding the newest version.
    fn newest(&self) -> usize {
        usize::from(self.blocks[1].gen > self.blocks[0].gen)
    }
    fn newest_ts(&self) -> u64 {
        self.blocks[self.newest()].ts
    }
    fn newest_gen(&self) -> u64 {
        self.blocks[self.newest()].gen
    }
}

#[derive(Default)]
struct Inner {
    regions: Vec<Region>,
    /// Free slots per size class.
    free: Vec<Vec<(u32, usize)>>,
    index: HashMap<Vec<u8>, Obj>,
    next_incarnation: u64,
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
        let mut pending: HashMap<&[u8], u64> = HashMap::new();
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
        if self.read().index.contains_key(id) {
            self.set_many(&[(id, None, ts)])?;
        }
        Ok(())
    }

    fn apply(&self, inner: &mut Inner, id: &[u8], value: Option<&[u8]>, ts: u64) -> Result<()> {
        let len = value.map_or(0, <[u8]>::len);
        let class = slot::class_for_len(len).unwrap_or(SIZE_CLASSES - 1);
        let Some(mut obj) = inner.index.remove(id) else {
            if value.is_some() {
                let mut obj = self.place(inner, id, class)?;
                self.write_next(inner, &mut obj, ts, value);
                inner.index.insert(id.to_vec(), obj);
            }
            return Ok(());
        };
        if slot::class_capacity(obj.class) >= len {
            self.write_next(inner, &mut obj, ts, value);
            inner.index.insert(id.to_vec(), obj);
            return Ok(());
        }
        // The value outgrew its slot: move to a larger class, carrying the newest version so
        // `get_before` keeps working, and leave a forward pointer for cached readers.
        let carried = self.snapshot(inner, id, &obj).map(|s| s.get());
        let placed = carried.and_then(|c| Ok((c, self.place(inner, id, class)?)));
        let (carried, mut moved) = match placed {
            Ok(p) => p,
            Err(e) => {
                inner.index.insert(id.to_vec(), obj);
                return Err(e);
            }
        };
        // Generations restart in the new slot: a lone version always has generation 1, which
        // is what lets a reader of an unordered copy tell a lone version from a stale partner.
        match carried {
            Lookup::Value { ts, value } => self.write_at(inner, &mut moved, 1, ts, Some(&value)),
            Lookup::Deleted { ts } => self.write_at(inner, &mut moved, 1, ts, None),
            Lookup::Absent | Lookup::Lagging => {}
        }
        self.write_next(inner, &mut moved, ts, value);
        let region = &inner.regions[obj.addr.region as usize];
        slot::write_header(
            &region.slot_words(obj.slot)[..16],
            slot::STATE_FORWARDED,
            id,
            moved.addr.pack(),
            obj.incarnation,
        );
        inner.free[obj.class].push((obj.addr.region, obj.slot));
        inner.index.insert(id.to_vec(), moved);
        Ok(())
    }

    /// Writes the next version of `obj` over its older block.
    fn write_next(&self, inner: &Inner, obj: &mut Obj, ts: u64, value: Option<&[u8]>) {
        let gen = obj.newest_gen() + 1;
        self.write_at(inner, obj, gen, ts, value);
    }

    /// Writes generation `gen` into the block that does not hold the newest version (block 0
    /// in a fresh slot).
    fn write_at(&self, inner: &Inner, obj: &mut Obj, gen: u64, ts: u64, value: Option<&[u8]>) {
        let fresh = obj.blocks[0].gen == 0 && obj.blocks[1].gen == 0;
        let which = if fresh { 0 } else { 1 - obj.newest() };
        let words = inner.regions[obj.addr.region as usize].slot_words(obj.slot);
        let start = slot::version_offset(obj.class, which) / 8;
        let len = (slot::VERSION_HEADER_BYTES + slot::class_capacity(obj.class)) / 8;
        slot::write_version(&words[start..start + len], obj.incarnation, gen, ts, value);
        obj.blocks[which] = Block { gen, ts };
        obj.deleted = value.is_none();
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
            addr: Addr {
                region: region_id,
                offset: region.info.slot_offset(slot_index),
            },
            slot: slot_index,
            class,
            incarnation,
            blocks: [Block::default(); 2],
            deleted: false,
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
            slot_count: (bytes - REGION_HEADER_BYTES) / slot_bytes,
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

    /// The owner's copy of a slot. The owner is the only writer and holds the lock, so the
    /// copy is whole unless something outside the owner wrote the region file.
    fn snapshot(&self, inner: &Inner, id: &[u8], obj: &Obj) -> Result<slot::Snapshot> {
        let words = inner.regions[obj.addr.region as usize].slot_words(obj.slot);
        slot::read_slot(words, obj.class).map_err(|reject| Error::Corrupt {
            id: show_id(id),
            why: format!("{reject:?}"),
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
                Some(obj) => Ok(pick(r, self.snapshot(&inner, key(r), obj)?)),
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
        let mut blocks: Vec<Block> = obj.blocks.iter().copied().filter(|b| b.gen > 0).collect();
        blocks.sort_by_key(|b| std::cmp::Reverse(b.gen));
        blocks.iter().map(|b| b.ts).collect()
    }

    /// Where each id's slot lives (Heron's `query_obj_addr`), `None` for unknown ids.
    pub fn addresses(&self, ids: &[&[u8]]) -> Vec<Option<Addr>> {
        let inner = self.read();
        ids.iter()
            .map(|id| inner.index.get(*id).map(|o| o.addr))
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
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dead {
            let Some(obj) = inner.index.remove(id) else {
                continue;
            };
            let words = inner.regions[obj.addr.region as usize].slot_words(obj.slot);
            slot::write_header(&words[..16], slot::STATE_FREE, &[], 0, obj.incarnation);
            inner.free[obj.class].push((obj.addr.region, obj.slot));
        }
        dead.len()
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
