//! Reading another process's store one-sidedly: resolve an object's address once over the
//! control channel, cache it, then copy its slot through any transport and validate the copy.

use crate::error::{show_id, Error, Result};
use crate::region::RegionInfo;
use crate::slot::{self, Lookup, Reject, Snapshot};
use crate::store::{check_id, Addr};
use crate::transport::RemoteMemory;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Copies of one slot tried before giving up (the owner may be stopped mid-write) ...
pub const MAX_ATTEMPTS: u32 = 100_000;
/// ... and for at least this long.
pub const MIN_UNSTABLE_TIME: Duration = Duration::from_secs(2);

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

pub struct RemoteStore<M> {
    mem: M,
    addrs: RwLock<HashMap<Vec<u8>, Addr>>,
    infos: RwLock<HashMap<u32, RegionInfo>>,
    counters: Counters,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl<M: RemoteMemory> RemoteStore<M> {
    pub fn new(mem: M) -> Self {
        RemoteStore {
            mem,
            addrs: RwLock::default(),
            infos: RwLock::default(),
            counters: Counters::default(),
        }
    }

    pub fn memory(&self) -> &M {
        &self.mem
    }

    fn cached(&self, id: &[u8]) -> Option<Addr> {
        self.addrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
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

    fn refresh(&self, ids: &[&[u8]]) -> Result<()> {
        bump(&self.counters.lookups);
        let found = self.mem.lookup(ids)?;
        let mut addrs = self.addrs.write().unwrap_or_else(|e| e.into_inner());
        for (id, addr) in ids.iter().zip(found) {
            match addr {
                Some(a) => addrs.insert(id.to_vec(), a),
                None => addrs.remove(*id),
            };
        }
        Ok(())
    }

    /// Whether `id`'s address is cached (a read of it needs no control round trip).
    pub fn is_resolved(&self, id: &[u8]) -> bool {
        self.cached(id).is_some()
    }

    fn info(&self, region: u32) -> Result<RegionInfo> {
        if let Some(i) = self
            .infos
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&region)
        {
            return Ok(*i);
        }
        let info = self.mem.region_info(region)?;
        self.infos
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(region, info);
        Ok(info)
    }

    /// A validated copy of `id`'s slot, or `None` when the owner has no such object.
    pub fn snapshot(&self, id: &[u8]) -> Result<Option<Snapshot>> {
        check_id(id)?;
        let mut addr = match self.cached(id) {
            Some(a) => a,
            None => {
                self.refresh(&[id])?;
                match self.cached(id) {
                    Some(a) => a,
                    None => return Ok(None),
                }
            }
        };
        bump(&self.counters.reads);
        let mut buf = Vec::new();
        let started = Instant::now();
        let mut attempt = 0u32;
        // Give up only after many attempts *and* some wall time: a reader starved of CPU (more
        // runnable threads than cores) must not mistake its own stalls for an unstable object.
        while attempt < MAX_ATTEMPTS || started.elapsed() < MIN_UNSTABLE_TIME {
            attempt = attempt.saturating_add(1);
            let info = self.info(addr.region)?;
            let Some(class) = info.class else {
                return Err(Error::Remote {
                    peer: self.mem.peer().to_string(),
                    message: format!(
                        "address of {} points into raw region {}",
                        show_id(id),
                        addr.region
                    ),
                });
            };
            match self
                .mem
                .read_slot(addr.region, addr.offset, class, &mut buf)?
            {
                Ok(snap) if snap.id == id && snap.state == slot::STATE_LIVE => {
                    return Ok(Some(snap))
                }
                Ok(snap) if snap.id == id && snap.state == slot::STATE_FORWARDED => {
                    bump(&self.counters.forwards);
                    addr = Addr::unpack(snap.forward);
                    self.addrs
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.to_vec(), addr);
                }
                Ok(_) => {
                    // Freed or handed to another object since we cached it: ask again.
                    self.refresh(&[id])?;
                    match self.cached(id) {
                        Some(a) => addr = a,
                        None => return Ok(None),
                    }
                }
                Err(reject) => {
                    bump(match reject {
                        Reject::Busy => &self.counters.busy,
                        Reject::Checksum => &self.counters.checksum,
                        Reject::Skew => &self.counters.skew,
                        Reject::Malformed => &self.counters.malformed,
                    });
                    if attempt <= 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
        Err(Error::Unstable {
            id: show_id(id),
            attempts: attempt,
        })
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
