//! Reading another process's store one-sidedly: resolve an object's address once over the
//! control channel, cache it, then copy its slot through any transport and validate the copy.
//!
//! Resolving an id yields a [`Handle`], a small integer indexing this reader's table of
//! resolved objects. [`RemoteStore::read_into`] reads through a handle into the caller's
//! buffer and allocates nothing: the entry caches the object's address and, over `shm`, a
//! pointer to its slot in the mapped region and the header sequence word its occupant was
//! last checked under, so a read is a seqlock copy (`slot::read_seqlocked`). Anything else
//! (first read, a header that changed, byte-copying transports) takes the checked read with
//! checksums (`slot::checked_read_slot`, `slot::checked_decode`).

use crate::error::{show_id, Error, Result};
use crate::region::Region;
use crate::slot::{self, Checked, Lookup, ReadMeta, Reject, SlotRead, Snapshot, Want};
use crate::store::{check_id, Addr};
use crate::transport::RemoteMemory;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Copies of one slot tried before giving up (the owner may be stopped mid-write) ...
pub const MAX_ATTEMPTS: u32 = 100_000;
/// ... and for at least this long.
pub const MIN_UNSTABLE_TIME: Duration = Duration::from_secs(2);

/// An object resolved by this reader: an index into its table of resolved objects.
pub type Handle = u32;
/// What [`RemoteStore::handles`] gives an id the owner does not know.
pub const NO_HANDLE: Handle = u32::MAX;

/// Counters of what remote reads met; torn copies are counted, never returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteStats {
    pub reads: u64,
    pub rejected_busy: u64,
    pub rejected_checksum: u64,
    pub rejected_skew: u64,
    pub rejected_malformed: u64,
    pub lookups: u64,
    pub forwards: u64,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    busy: AtomicU64,
    checksum: AtomicU64,
    skew: AtomicU64,
    malformed: AtomicU64,
    lookups: AtomicU64,
    forwards: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// `Entry::addr` of an object the owner did not know at the last lookup.
const NOWHERE: u64 = u64::MAX;

/// Where a resolved object was last seen, as one consistent copy of its entry.
#[derive(Clone, Copy)]
struct Loc {
    /// `Addr::pack`ed, or [`NOWHERE`].
    addr: u64,
    class: usize,
    /// The slot's words in this process's mapping of the region (`shm`), or null.
    words: *const AtomicU64,
    /// Header sequence word the occupant was checked under; 0 until a checked read.
    hseq: u64,
}

/// One resolved object. The location fields change together (forwarding, reuse), so they are
/// published with a sequence word like a slot's block: writers (serialised by
/// `RemoteStore::update`) make it odd, store the fields, then even it with release; readers
/// load it with acquire, the fields, and re-check it.
struct Entry {
    id: Box<[u8]>,
    ver: AtomicU64,
    addr: AtomicU64,
    class: AtomicU64,
    words: AtomicPtr<AtomicU64>,
    hseq: AtomicU64,
}

impl Entry {
    fn new(id: &[u8]) -> Self {
        Entry {
            id: id.into(),
            ver: AtomicU64::new(0),
            addr: AtomicU64::new(NOWHERE),
            class: AtomicU64::new(0),
            words: AtomicPtr::new(std::ptr::null_mut()),
            hseq: AtomicU64::new(0),
        }
    }

    fn load(&self) -> Loc {
        loop {
            let v = self.ver.load(Ordering::Acquire);
            if v & 1 == 0 {
                let loc = Loc {
                    addr: self.addr.load(Ordering::Relaxed),
                    class: self.class.load(Ordering::Relaxed) as usize,
                    words: self.words.load(Ordering::Relaxed),
                    hseq: self.hseq.load(Ordering::Relaxed),
                };
                fence(Ordering::Acquire);
                if self.ver.load(Ordering::Relaxed) == v {
                    return loc;
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Only with `RemoteStore::update` held.
    fn store(&self, loc: Loc) {
        let v = self.ver.load(Ordering::Relaxed);
        self.ver.store(v | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.addr.store(loc.addr, Ordering::Relaxed);
        self.class.store(loc.class as u64, Ordering::Relaxed);
        self.words.store(loc.words.cast_mut(), Ordering::Relaxed);
        self.hseq.store(loc.hseq, Ordering::Relaxed);
        self.ver.store((v | 1) + 1, Ordering::Release);
    }
}

/// Entries in segments that never move (segment `k` holds `64 << k`), so a handle finds its
/// entry with no lock; only appending takes `RemoteStore::update`.
const SEGMENTS: usize = 27;

struct Entries {
    segments: [OnceLock<Box<[OnceLock<Entry>]>>; SEGMENTS],
    len: AtomicU32,
}

fn locate(handle: Handle) -> (usize, usize) {
    let n = u64::from(handle) / 64 + 1;
    let k = 63 - n.leading_zeros() as usize;
    let base = 64 * ((1u64 << k) - 1);
    (k, (u64::from(handle) - base) as usize)
}

impl Entries {
    fn get(&self, handle: Handle) -> Option<&Entry> {
        if handle >= self.len.load(Ordering::Acquire) {
            return None;
        }
        let (k, i) = locate(handle);
        self.segments.get(k)?.get()?.get(i)?.get()
    }

    /// Only with `RemoteStore::update` held.
    fn push(&self, id: &[u8]) -> Option<Handle> {
        let handle = self.len.load(Ordering::Relaxed);
        if handle == NO_HANDLE {
            return None;
        }
        let (k, i) = locate(handle);
        let seg = self.segments.get(k)?.get_or_init(|| {
            (0..(64usize << k))
                .map(|_| OnceLock::new())
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        seg.get(i)?.set(Entry::new(id)).ok()?;
        self.len.store(handle + 1, Ordering::Release);
        Some(handle)
    }
}

/// The largest region id a reader accepts (its table of regions is indexed by id).
const MAX_REGION_ID: u32 = 1 << 20;

/// A region as this reader knows it: its slot class and, over `shm`, its mapping (kept for
/// the reader's life: entries point into it).
#[derive(Clone)]
struct KnownRegion {
    class: Option<usize>,
    map: Option<Arc<Region>>,
}

pub struct RemoteStore<M> {
    mem: M,
    entries: Entries,
    index: RwLock<HashMap<Box<[u8]>, Handle>>,
    regions: RwLock<Vec<Option<KnownRegion>>>,
    /// Serialises changes to entries (resolving, forwarding, re-checking): never taken by a
    /// read that finds its object where it was.
    update: Mutex<()>,
    counters: Counters,
}

thread_local! {
    /// Byte copies of slots for transports that move bytes, reused across reads.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<M: RemoteMemory> RemoteStore<M> {
    pub fn new(mem: M) -> Self {
        RemoteStore {
            mem,
            entries: Entries {
                segments: std::array::from_fn(|_| OnceLock::new()),
                len: AtomicU32::new(0),
            },
            index: RwLock::default(),
            regions: RwLock::default(),
            update: Mutex::default(),
            counters: Counters::default(),
        }
    }

    pub fn memory(&self) -> &M {
        &self.mem
    }

    fn handle_of(&self, id: &[u8]) -> Option<Handle> {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    fn cached(&self, id: &[u8]) -> Option<Addr> {
        let e = self.entries.get(self.handle_of(id)?)?;
        let addr = e.load().addr;
        (addr != NOWHERE).then(|| Addr::unpack(addr))
    }

    /// Asks the owner where `ids` live and caches the answers. Unknown ids stay unresolved.
    pub fn resolve(&self, ids: &[&[u8]]) -> Result<()> {
        for id in ids {
            check_id(id)?;
        }
        let missing: Vec<&[u8]> = ids
            .iter()
            .copied()
            .filter(|id| self.cached(id).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.refresh(&missing)
    }

    /// Resolves `ids` (one control round trip for those not resolved yet) and returns their
    /// handles, [`NO_HANDLE`] for ids the owner does not know.
    pub fn handles(&self, ids: &[&[u8]]) -> Result<Vec<Handle>> {
        self.resolve(ids)?;
        Ok(ids
            .iter()
            .map(|id| match self.handle_of(id) {
                Some(h) if self.cached(id).is_some() => h,
                _ => NO_HANDLE,
            })
            .collect())
    }

    /// The id a handle stands for.
    pub fn handle_id(&self, handle: Handle) -> Option<&[u8]> {
        self.entries.get(handle).map(|e| &e.id[..])
    }

    fn refresh(&self, ids: &[&[u8]]) -> Result<()> {
        bump(&self.counters.lookups);
        let found = self.mem.lookup(ids)?;
        for (id, addr) in ids.iter().zip(found) {
            match (self.handle_of(id), addr) {
                (Some(h), a) => {
                    if let Some(e) = self.entries.get(h) {
                        self.relocate(e, a)?;
                    }
                }
                (None, Some(a)) => {
                    let _guard = self.update.lock().unwrap_or_else(|e| e.into_inner());
                    let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
                    if index.contains_key(*id) {
                        continue;
                    }
                    let Some(h) = self.entries.push(id) else {
                        return Err(too_many(self.mem.peer()));
                    };
                    index.insert((*id).into(), h);
                    drop(index);
                    drop(_guard);
                    if let Some(e) = self.entries.get(h) {
                        self.relocate(e, Some(a))?;
                    }
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    /// Points `e` at `addr` (or nowhere), with its slot's mapping when there is one; its
    /// occupant is unchecked there until a checked read.
    fn relocate(&self, e: &Entry, addr: Option<Addr>) -> Result<()> {
        let loc = match addr {
            None => Loc {
                addr: NOWHERE,
                class: 0,
                words: std::ptr::null(),
                hseq: 0,
            },
            Some(a) => {
                let known = self.region(a.region)?;
                let Some(class) = known.class else {
                    return Err(Error::Remote {
                        peer: self.mem.peer().to_string(),
                        message: format!(
                            "address of {} points into raw region {}",
                            show_id(&e.id),
                            a.region
                        ),
                    });
                };
                let words = match &known.map {
                    Some(r) => r.words_at(a.offset, slot::slot_bytes(class))?.as_ptr(),
                    None => std::ptr::null(),
                };
                Loc {
                    addr: a.pack(),
                    class,
                    words,
                    hseq: 0,
                }
            }
        };
        let _guard = self.update.lock().unwrap_or_else(|e| e.into_inner());
        e.store(loc);
        Ok(())
    }

    /// Records that `e`'s occupant at `seen` checked out under header sequence `hseq`, unless
    /// another thread moved the entry meanwhile.
    fn checked(&self, e: &Entry, seen: Loc, hseq: u64) {
        let _guard = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let now = e.load();
        if now.addr == seen.addr && now.words == seen.words && now.hseq != hseq {
            e.store(Loc { hseq, ..now });
        }
    }

    /// Whether `id`'s address is cached (a read of it needs no control round trip).
    pub fn is_resolved(&self, id: &[u8]) -> bool {
        self.cached(id).is_some()
    }

    fn region(&self, region: u32) -> Result<KnownRegion> {
        if let Some(Some(k)) = self
            .regions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(region as usize)
        {
            return Ok(k.clone());
        }
        if region > MAX_REGION_ID {
            // Region ids count up from 0 in each store: only a peer feeding us garbage (a
            // forward word or a lookup answer) names one this far out.
            return Err(Error::Remote {
                peer: self.mem.peer().to_string(),
                message: format!("region id {region} is out of range (at most {MAX_REGION_ID})"),
            });
        }
        let info = self.mem.region_info(region)?;
        let known = KnownRegion {
            class: info.class,
            map: self.mem.mapped(region)?,
        };
        let mut regions = self.regions.write().unwrap_or_else(|e| e.into_inner());
        let at = region as usize;
        if regions.len() <= at {
            regions.resize(at + 1, None);
        }
        Ok(regions[at].get_or_insert(known).clone())
    }

    fn count(&self, reject: Reject) {
        bump(match reject {
            Reject::Busy => &self.counters.busy,
            Reject::Checksum => &self.counters.checksum,
            Reject::Skew => &self.counters.skew,
            Reject::Malformed => &self.counters.malformed,
        });
    }

    /// Reads the object behind `handle` into `out`, allocating nothing: `want` picks the
    /// newest version or the newest before a bound; the value lands in `out[..len]` (see
    /// [`ReadMeta`]: a value longer than `out` is reported, not copied).
    ///
    /// Over `shm`, once the object's slot has been checked, a read is a seqlock copy out of the
    /// mapping. A slot that was freed, reused or forwarded is followed or re-resolved (the only
    /// case that may ask the owner). Gives up with [`Error::Unstable`] only after
    /// [`MAX_ATTEMPTS`] failed copies and [`MIN_UNSTABLE_TIME`]; the clock is read only once a
    /// copy has failed.
    pub fn read_into(&self, handle: Handle, want: Want, out: &mut [u8]) -> Result<ReadMeta> {
        let Some(e) = self.entries.get(handle) else {
            return Err(unknown_handle(
                handle,
                self.entries.len.load(Ordering::Acquire),
            ));
        };
        bump(&self.counters.reads);
        let mut attempt = 0u32;
        let mut started: Option<Instant> = None;
        loop {
            let loc = e.load();
            if loc.addr == NOWHERE {
                self.refresh(&[&e.id])?;
                if e.load().addr == NOWHERE {
                    return Ok(ReadMeta::ABSENT);
                }
            } else {
                let checked = if loc.words.is_null() {
                    self.copy_and_check(&e.id, loc, want, out)?
                } else {
                    // SAFETY: `words` was taken from `Region::words_at` for a whole slot of
                    // `class` in a mapping that `self.regions` keeps alive as long as `self`.
                    let words = unsafe {
                        std::slice::from_raw_parts(loc.words, slot::slot_bytes(loc.class) / 8)
                    };
                    if loc.hseq != 0 {
                        match slot::read_seqlocked(words, loc.class, loc.hseq, want, out) {
                            Ok(Some(meta)) => return Ok(meta),
                            // The header changed: the checked read below says how.
                            Ok(None) => {}
                            Err(r) => {
                                self.count(r);
                                self.back_off(&e.id, &mut attempt, &mut started)?;
                                continue;
                            }
                        }
                    }
                    slot::checked_read_slot(words, loc.class, &e.id, want, out)
                };
                match checked {
                    Ok(Checked {
                        hseq,
                        read: SlotRead::Live(meta),
                    }) => {
                        if !loc.words.is_null() {
                            self.checked(e, loc, hseq);
                        }
                        return Ok(meta);
                    }
                    Ok(Checked {
                        read: SlotRead::Forwarded(to),
                        ..
                    }) => {
                        bump(&self.counters.forwards);
                        self.relocate(e, Some(Addr::unpack(to)))?;
                    }
                    // Freed or handed to another object since we cached it: ask again.
                    Ok(Checked {
                        read: SlotRead::Gone,
                        ..
                    }) => {
                        self.refresh(&[&e.id])?;
                        if e.load().addr == NOWHERE {
                            return Ok(ReadMeta::ABSENT);
                        }
                    }
                    Err(r) => self.count(r),
                }
            }
            self.back_off(&e.id, &mut attempt, &mut started)?;
        }
    }

    /// A byte copy of the slot at `loc` through the transport, checked.
    fn copy_and_check(
        &self,
        id: &[u8],
        loc: Loc,
        want: Want,
        out: &mut [u8],
    ) -> Result<std::result::Result<Checked, Reject>> {
        let addr = Addr::unpack(loc.addr);
        SCRATCH.with(|s| {
            let mut buf = s.borrow_mut();
            buf.resize(slot::slot_bytes(loc.class), 0);
            self.mem.read(addr.region, addr.offset, &mut buf)?;
            Ok(slot::checked_decode(&buf, loc.class, id, want, out))
        })
    }

    /// Counts a failed attempt and waits a little, or gives up: only after many attempts
    /// *and* some wall time, as a reader starved of CPU (more runnable threads than cores)
    /// must not mistake its own stalls for an unstable object.
    fn back_off(&self, id: &[u8], attempt: &mut u32, started: &mut Option<Instant>) -> Result<()> {
        *attempt = attempt.saturating_add(1);
        let since = *started.get_or_insert_with(Instant::now);
        if *attempt >= MAX_ATTEMPTS && since.elapsed() >= MIN_UNSTABLE_TIME {
            return Err(Error::Unstable {
                id: show_id(id),
                attempts: *attempt,
            });
        }
        if *attempt <= 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        Ok(())
    }

    /// A validated copy of `id`'s slot, or `None` when the owner has no such object.
    pub fn snapshot(&self, id: &[u8]) -> Result<Option<Snapshot>> {
        check_id(id)?;
        if self.cached(id).is_none() {
            self.refresh(&[id])?;
        }
        let Some(e) = self.handle_of(id).and_then(|h| self.entries.get(h)) else {
            return Ok(None);
        };
        bump(&self.counters.reads);
        let mut buf = Vec::new();
        let mut attempt = 0u32;
        let mut started: Option<Instant> = None;
        loop {
            let loc = e.load();
            if loc.addr == NOWHERE {
                return Ok(None);
            }
            let addr = Addr::unpack(loc.addr);
            match self
                .mem
                .read_slot(addr.region, addr.offset, loc.class, &mut buf)?
            {
                Ok(snap) if snap.id == id && snap.state == slot::STATE_LIVE => {
                    return Ok(Some(snap))
                }
                Ok(snap) if snap.id == id && snap.state == slot::STATE_FORWARDED => {
                    bump(&self.counters.forwards);
                    self.relocate(e, Some(Addr::unpack(snap.forward)))?;
                }
                Ok(_) => self.refresh(&[id])?,
                Err(reject) => self.count(reject),
            }
            self.back_off(id, &mut attempt, &mut started)?;
        }
    }

    /// The newest version of each id.
    pub fn get_many(&self, ids: &[&[u8]]) -> Result<Vec<Lookup>> {
        self.resolve(ids)?;
        ids.iter()
            .map(|id| Ok(self.snapshot(id)?.map_or(Lookup::Absent, |s| s.get())))
            .collect()
    }

    /// For each `(id, bound)`, the newest version with timestamp < bound, or `Lagging`.
    pub fn get_before_many(&self, reqs: &[(&[u8], u64)]) -> Result<Vec<Lookup>> {
        let ids: Vec<&[u8]> = reqs.iter().map(|r| r.0).collect();
        self.resolve(&ids)?;
        reqs.iter()
            .map(|(id, bound)| {
                Ok(self
                    .snapshot(id)?
                    .map_or(Lookup::Absent, |s| s.before(*bound)))
            })
            .collect()
    }

    pub fn stats(&self) -> RemoteStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteStats {
            reads: l(&c.reads),
            rejected_busy: l(&c.busy),
            rejected_checksum: l(&c.checksum),
            rejected_skew: l(&c.skew),
            rejected_malformed: l(&c.malformed),
            lookups: l(&c.lookups),
            forwards: l(&c.forwards),
        }
    }
}

fn unknown_handle(handle: Handle, issued: u32) -> Error {
    Error::Io {
        context: "remote read".into(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "unknown handle {handle}: this reader has issued {issued} handles (handles come from resolving ids)"
            ),
        ),
    }
}

fn too_many(peer: &str) -> Error {
    Error::Io {
        context: format!("resolving objects of {peer}"),
        source: std::io::Error::other("this reader holds the most handles it can (2^32 - 1)"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::region::RegionInfo;
    use crate::slot::Status;
    use crate::transport::Transport;
    use crate::{ControlServer, ShmTransport, Store, StoreConfig, TcpServer, TcpTransport};
    use std::path::PathBuf;

    pub(crate) const SECRET: &[u8] = b"remote-unit-secret-0123456789";

    /// A store directory, removed when dropped.
    pub(crate) struct Dir(pub(crate) PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An owner's store in a fresh directory (`tag` unique per test), with its control server.
    pub(crate) fn owner(tag: &str) -> (Dir, Arc<Store>, ControlServer) {
        let dir = std::env::temp_dir().join(format!("remora-remote-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = StoreConfig::new(&dir, "own");
        cfg.region_bytes = 64 * 1024;
        let store = Arc::new(Store::create(&cfg).unwrap());
        let control = ControlServer::start(&store, SECRET).unwrap();
        (Dir(dir), store, control)
    }

    /// `shm` without its mapping: reads take the byte-copy path that `tcp` and `verbs` use.
    pub(crate) struct ByteCopies(pub(crate) crate::ShmPeer);

    impl RemoteMemory for ByteCopies {
        fn peer(&self) -> &str {
            self.0.peer()
        }
        fn region_info(&self, region: u32) -> Result<RegionInfo> {
            self.0.region_info(region)
        }
        fn read(&self, region: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.0.read(region, offset, buf)
        }
        fn write(&self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
            self.0.write(region, offset, data)
        }
        fn lookup(&self, ids: &[&[u8]]) -> Result<Vec<Option<Addr>>> {
            self.0.lookup(ids)
        }
    }

    /// What `read_into` found, as the allocating API reports it.
    fn lookup<M: RemoteMemory>(r: &RemoteStore<M>, h: Handle, want: Want) -> Lookup {
        let mut buf = [0u8; 2048];
        let m = r.read_into(h, want, &mut buf).unwrap();
        assert!(m.fits(buf.len()));
        match m.status {
            Status::Value => Lookup::Value {
                ts: m.ts,
                value: buf[..m.len].to_vec(),
            },
            Status::Deleted => Lookup::Deleted { ts: m.ts },
            Status::Absent => Lookup::Absent,
            Status::Lagging => Lookup::Lagging,
        }
    }

    fn value(ts: u64, v: &[u8]) -> Lookup {
        Lookup::Value {
            ts,
            value: v.to_vec(),
        }
    }

    /// Exact answers of handle reads, checked against the snapshot path, through one reader.
    fn handle_reads_answer_like_snapshots<M: RemoteMemory>(store: &Store, r: &RemoteStore<M>) {
        let hs = r.handles(&[b"x", b"gone", b"nobody"]).unwrap();
        assert_eq!(hs[2], NO_HANDLE);
        let (x, gone) = (hs[0], hs[1]);
        assert_eq!(r.handle_id(x), Some(&b"x"[..]));
        let cases = [
            (x, Want::Newest, value(20, b"two")),
            (x, Want::Before(21), value(20, b"two")),
            (x, Want::Before(20), value(10, b"one")),
            (x, Want::Before(11), value(10, b"one")),
            (x, Want::Before(10), Lookup::Lagging),
            (gone, Want::Newest, Lookup::Deleted { ts: 7 }),
            (gone, Want::Before(7), value(5, b"was")),
            (gone, Want::Before(5), Lookup::Lagging),
        ];
        for _ in 0..2 {
            // The second round reads slots already checked: the seqlock path over `shm`.
            for (h, want, expected) in &cases {
                assert_eq!(lookup(r, *h, *want), *expected, "{want:?}");
                let id = r.handle_id(*h).unwrap();
                let snap = r.snapshot(id).unwrap().unwrap();
                let old = match want {
                    Want::Newest => snap.get(),
                    Want::Before(b) => snap.before(*b),
                };
                assert_eq!(old, *expected);
            }
        }
        // A buffer too small for the value: its length, nothing copied.
        let mut small = [0xaau8; 2];
        let m = r.read_into(x, Want::Newest, &mut small).unwrap();
        assert_eq!(
            (m.status, m.ts, m.len, m.fits(2)),
            (Status::Value, 20, 3, false)
        );
        assert_eq!(small, [0xaa, 0xaa]);

        // Growing past the slot's class forwards the object: the handle follows.
        let big = vec![3u8; 1000];
        store.set(b"x", &big, 30).unwrap();
        let forwards = r.stats().forwards;
        assert_eq!(lookup(r, x, Want::Newest), value(30, &big));
        assert_eq!(lookup(r, x, Want::Before(30)), value(20, b"two"));
        assert_eq!(r.stats().forwards, forwards + 1);
        assert_eq!(lookup(r, x, Want::Newest), value(30, &big));

        // `gone` is purged and its slot handed to `fresh`: the old handle must never answer
        // with the new occupant's versions.
        store.purge_deleted(8);
        store.set(b"fresh", b"not gone's", 40).unwrap();
        assert_eq!(
            store.addresses(&[b"fresh"])[0],
            Some(Addr::unpack(gone_addr(r, gone)))
        );
        let lookups = r.stats().lookups;
        assert_eq!(lookup(r, gone, Want::Newest), Lookup::Absent);
        assert_eq!(r.stats().lookups, lookups + 1, "one question to the owner");
        assert_eq!(lookup(r, gone, Want::Before(100)), Lookup::Absent);
        // Recreated, it is found again through the same handle.
        store.set(b"gone", b"back", 50).unwrap();
        assert_eq!(lookup(r, gone, Want::Newest), value(50, b"back"));

        let err = r.read_into(9999, Want::Newest, &mut small).unwrap_err();
        assert_eq!(
            err.to_string(),
            "remote read: unknown handle 9999: this reader has issued 2 handles (handles come from resolving ids)"
        );
    }

    /// Where `gone` was last seen, before the purge.
    fn gone_addr<M: RemoteMemory>(r: &RemoteStore<M>, h: Handle) -> u64 {
        r.entries.get(h).unwrap().load().addr
    }

    fn fill(store: &Store) {
        store.set(b"x", b"one", 10).unwrap();
        store.set(b"x", b"two", 20).unwrap();
        store.set(b"gone", b"was", 5).unwrap();
        store.delete(b"gone", 7).unwrap();
    }

    #[test]
    fn shm_handle_reads_answer_like_snapshots() {
        let (dir, store, _ctl) = owner("shm");
        fill(&store);
        let t = ShmTransport::new(&dir.0, SECRET).unwrap();
        handle_reads_answer_like_snapshots(&store, &RemoteStore::new(t.attach("own").unwrap()));
    }

    #[test]
    fn byte_copy_handle_reads_answer_like_snapshots() {
        let (dir, store, _ctl) = owner("bytes");
        fill(&store);
        let t = ShmTransport::new(&dir.0, SECRET).unwrap();
        let r = RemoteStore::new(ByteCopies(t.attach("own").unwrap()));
        handle_reads_answer_like_snapshots(&store, &r);
    }

    #[test]
    fn tcp_handle_reads_answer_like_snapshots() {
        let (_dir, store, _ctl) = owner("tcp");
        fill(&store);
        let server = TcpServer::start(&store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
        let peer = TcpTransport::new(SECRET)
            .unwrap()
            .attach(&server.local_addr().to_string())
            .unwrap();
        handle_reads_answer_like_snapshots(&store, &RemoteStore::new(peer));
    }

    #[test]
    fn handles_index_segments_without_gaps() {
        let mut expected = (0, 0);
        for h in 0..100_000u32 {
            let at = locate(h);
            if at.0 != expected.0 {
                assert_eq!((at.0, at.1), (expected.0 + 1, 0), "handle {h}");
                assert_eq!(expected.1, 64 << expected.0, "segment {} size", expected.0);
            } else {
                assert_eq!(at.1, expected.1, "handle {h}");
            }
            expected = (at.0, at.1 + 1);
        }
        assert!(locate(NO_HANDLE - 1).0 < SEGMENTS);
    }
}
