//! A replica's side of coordination: its own region (which peers write into), its peers'
//! regions (which it writes into through any `Transport`), and the majority-plus-grace wait.

use crate::entry::{decode, encode, Entry, Layout, ENTRY_BYTES};
use crate::error::{Error, Result};
use remora_core::region::REGION_HEADER_BYTES;
use remora_core::{RemoteMemory, Store, Transport};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Reads of one entry before a torn copy is an error: the single writer of an entry finishes
/// its two-word store long before this many copies.
const TORN_ATTEMPTS: u32 = 100_000;

/// One replica: `replica` of `partition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub partition: u32,
    pub replica: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct WaitOptions {
    /// After a majority of every involved partition, how long to wait for the rest (Heron's
    /// delay that keeps a slightly slow replica from becoming a lagger).
    pub grace: Duration,
    /// Give up (an error) if some involved partition has no majority by then.
    pub timeout: Duration,
}

/// What a wait found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reached {
    /// Per involved partition, in the order asked: the replicas whose entries showed the phase.
    pub replicas: Vec<(u32, Vec<u32>)>,
    /// Every replica of every involved partition showed it (no grace wait was cut short).
    pub complete: bool,
    /// From the start of the wait to a majority of every partition.
    pub majority_after: Duration,
    /// From the start of the wait to its end.
    pub waited: Duration,
    /// Writes of our entry that failed (the peer is gone); retried by attaching again next time.
    pub failed_writes: usize,
}

struct PeerSlot<P> {
    name: String,
    region: u32,
    mem: Mutex<Option<Arc<P>>>,
}

pub struct Coordinator<T: Transport> {
    layout: Layout,
    me: Member,
    store: Arc<Store>,
    region: u32,
    transport: T,
    /// By entry index; `None` at our own index.
    peers: Vec<Option<PeerSlot<T::Peer>>>,
}

fn entry_offset(index: usize) -> u64 {
    (REGION_HEADER_BYTES + index * ENTRY_BYTES) as u64
}

impl<T: Transport> Coordinator<T> {
    /// Adds this replica's coordination region to `store` (its id is [`Coordinator::region`])
    /// and prepares to write into peers' regions. `peers[i]` names the store and the region of
    /// the replica at entry index `i` (see [`Layout::index`]); our own is ignored. Nothing is
    /// attached yet: see [`Coordinator::connect`].
    pub fn create(
        store: Arc<Store>,
        transport: T,
        layout: Layout,
        me: Member,
        peers: &[(String, u32)],
    ) -> Result<Self> {
        layout.check_partition(me.partition)?;
        if me.replica >= layout.replicas {
            return Err(Error::BadLayout(format!(
                "replica {} out of range: partitions have {}",
                me.replica, layout.replicas
            )));
        }
        if peers.len() != layout.entries() {
            return Err(Error::BadLayout(format!(
                "{} peers given for {} partitions x {} replicas",
                peers.len(),
                layout.partitions,
                layout.replicas
            )));
        }
        let mine = layout.index(me.partition, me.replica);
        let region = store.add_shared_region(layout.bytes())?;
        let peers = peers
            .iter()
            .enumerate()
            .map(|(i, (name, region))| {
                (i != mine).then(|| PeerSlot {
                    name: name.clone(),
                    region: *region,
                    mem: Mutex::new(None),
                })
            })
            .collect();
        Ok(Coordinator {
            layout,
            me,
            store,
            region,
            transport,
            peers,
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn member(&self) -> Member {
        self.me
    }

    /// The id of this replica's coordination region in its store.
    pub fn region(&self) -> u32 {
        self.region
    }

    fn peer(&self, slot: &PeerSlot<T::Peer>) -> remora_core::Result<Arc<T::Peer>> {
        let mut mem = slot.mem.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = mem.as_ref() {
            return Ok(m.clone());
        }
        let m = Arc::new(self.transport.attach(&slot.name)?);
        *mem = Some(m.clone());
        Ok(m)
    }

    fn forget(slot: &PeerSlot<T::Peer>) {
        slot.mem.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Attaches to every peer, retrying until `timeout` (peers start in any order). Fails
    /// naming the peers still unreachable.
    pub fn connect(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut last = None;
            for slot in self.peers.iter().flatten() {
                if let Err(e) = self.peer(slot) {
                    last = Some((slot.name.clone(), e));
                }
            }
            match last {
                None => return Ok(()),
                Some((_, e)) if Instant::now() >= deadline => return Err(e.into()),
                Some(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn check_partitions(&self, partitions: &[u32]) -> Result<()> {
        if partitions.is_empty() {
            return Err(Error::BadRequest("no partitions given".into()));
        }
        for (i, &h) in partitions.iter().enumerate() {
            self.layout.check_partition(h)?;
            if partitions[..i].contains(&h) {
                return Err(Error::BadRequest(format!("partition {h} given twice")));
            }
        }
        Ok(())
    }

    /// Writes our entry ⟨ts, phase⟩ into the region of every replica of `partitions` (ours
    /// locally). A peer that cannot be written is skipped (it is gone, or not up yet: the
    /// majority wait is what copes with that); returns how many were skipped.
    pub fn announce(&self, ts: u64, phase: u32, partitions: &[u32]) -> Result<usize> {
        self.check_partitions(partitions)?;
        let mine = self.layout.index(self.me.partition, self.me.replica);
        let bytes = encode(Entry { ts, phase }, mine);
        let offset = entry_offset(mine);
        let mut failed = 0;
        for &h in partitions {
            for q in 0..self.layout.replicas {
                match &self.peers[self.layout.index(h, q)] {
                    None => self.store.write_region(self.region, offset, &bytes)?,
                    Some(slot) => {
                        let wrote = self
                            .peer(slot)
                            .and_then(|m| m.write(slot.region, offset, &bytes));
                        if wrote.is_err() {
                            Self::forget(slot);
                            failed += 1;
                        }
                    }
                }
            }
        }
        Ok(failed)
    }

    /// The entry at `index` of our own region, read until it is whole.
    pub fn entry(&self, index: usize) -> Result<Entry> {
        let mut buf = [0u8; ENTRY_BYTES];
        for _ in 0..TORN_ATTEMPTS {
            self.store
                .read_region(self.region, entry_offset(index), &mut buf)?;
            if let Some(e) = decode(&buf, index) {
                return Ok(e);
            }
            std::hint::spin_loop();
        }
        Err(Error::Torn {
            index,
            attempts: TORN_ATTEMPTS,
        })
    }

    /// Every entry of our region, by index.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        (0..self.layout.entries()).map(|i| self.entry(i)).collect()
    }

    /// Waits until our region shows phase `phase` of `ts` from a majority of every partition
    /// in `partitions`, then up to `opts.grace` for the rest.
    pub fn wait(
        &self,
        ts: u64,
        phase: u32,
        partitions: &[u32],
        opts: WaitOptions,
    ) -> Result<Reached> {
        self.check_partitions(partitions)?;
        let start = Instant::now();
        let need = self.layout.majority();
        let mut majority_at: Option<Instant> = None;
        let mut idle = 0u32;
        loop {
            let mut replicas = Vec::with_capacity(partitions.len());
            for &h in partitions {
                let mut got = Vec::new();
                for q in 0..self.layout.replicas {
                    if self.entry(self.layout.index(h, q))?.reached(ts, phase) {
                        got.push(q);
                    }
                }
                replicas.push((h, got));
            }
            let now = Instant::now();
            let complete = replicas
                .iter()
                .all(|(_, got)| got.len() == self.layout.replicas as usize);
            let majority = replicas.iter().all(|(_, got)| got.len() >= need);
            if majority {
                let at = *majority_at.get_or_insert(now);
                if complete || now - at >= opts.grace {
                    return Ok(Reached {
                        replicas,
                        complete,
                        majority_after: at - start,
                        waited: now - start,
                        failed_writes: 0,
                    });
                }
            } else if now - start >= opts.timeout {
                let (partition, got) = replicas
                    .iter()
                    .find(|(_, got)| got.len() < need)
                    .map(|(h, got)| (*h, got.len()))
                    .unwrap_or((partitions[0], 0));
                return Err(Error::NoMajority {
                    ts,
                    phase,
                    partition,
                    have: got,
                    need,
                    waited: now - start,
                });
            }
            pause(&mut idle);
        }
    }

    /// Algorithm 1's coordination step: announce, then wait.
    pub fn coordinate(
        &self,
        ts: u64,
        phase: u32,
        partitions: &[u32],
        opts: WaitOptions,
    ) -> Result<Reached> {
        let failed = self.announce(ts, phase, partitions)?;
        let mut reached = self.wait(ts, phase, partitions, opts)?;
        reached.failed_writes = failed;
        Ok(reached)
    }
}

/// Backs off while polling: a few spins (a peer usually writes within microseconds), then
/// yields, then short sleeps, so a wait on a busy two-core host does not starve the peers it
/// waits for.
fn pause(idle: &mut u32) {
    *idle = idle.saturating_add(1);
    match *idle {
        0..64 => std::hint::spin_loop(),
        64..512 => std::thread::yield_now(),
        _ => std::thread::sleep(Duration::from_micros(20)),
    }
}
