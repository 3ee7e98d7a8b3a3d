//! A replica's side of coordination: its own region (which peers write into), its peers'
//! regions (which it writes into through any `Transport`), and the majority-plus-grace wait.
//!
//! The wait spins first (a peer in lockstep announces within microseconds, far less than a
//! sleep and wake-up), then sleeps: on the doorbell of its own region when peers ring it (`shm`,
//! see [`Coordinator::ring_doorbells`]), else in a bounded poll (`tcp`, `verbs`: a remote
//! write wakes nobody). A wait can also stop after a time budget and be resumed later
//! ([`Coordinator::coordinate_within`], [`Coordinator::advance`]), so a caller can wait on its
//! own thread while that is cheap and hand the rest to another.

use crate::doorbell::Doorbell;
use crate::entry::{decode, encode, Entry, Layout, ENTRY_BYTES};
use crate::error::{Error, Result};
use remora_core::region::{Region, REGION_HEADER_BYTES};
use remora_core::{RemoteMemory, Store, Transport};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Reads of one entry before `entry` calls a torn copy an error. The single writer of an entry
/// usually finishes its two-word store long before this many copies, but a writer descheduled
/// between the two words leaves the entry torn for as long as it is off the CPU (milliseconds
/// on a loaded host): waits therefore never fail on a torn entry, they count it as not there
/// yet (`look`), and their own timeout bounds them.
const TORN_ATTEMPTS: u32 = 100_000;

/// Longest single sleep on the doorbell: a peer that died between writing its entry and
/// ringing costs at most this much, not the whole grace or timeout.
const SLEEP_CAP: Duration = Duration::from_millis(50);

/// Spin before sleeping, by default: a few round trips of a peer in lockstep on another core.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(30);

/// How well spinning paid off lately, per phase, 0 to `SCORE_MAX`: a moving average of waits
/// that ended while spinning (up) or had to sleep after their spin (down).
const SCORE_MAX: u32 = 256;
/// Below this score a wait does not spin (its peer shares its core, or is slower than a
/// spin): spinning would only delay the peer it waits for. A spin costs at most its length.
const SCORE_SPIN: u32 = 64;
/// Waits that skip the spin still spin one time in this many, to notice it pays again.
const PROBE_EVERY: u32 = 16;
/// Phases are scored in this many slots (`phase % SLOTS`): 2 and 4 apart.
const SLOTS: usize = 8;

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
    /// Check the entries without sleeping for up to this long from the start of the wait. The
    /// coordinator skips the spin while spinning keeps failing for this phase (it then only
    /// delays a peer sharing the core), trying it again now and then.
    pub spin: Duration,
}

impl WaitOptions {
    /// `grace` and `timeout` with the default spin.
    pub const fn new(grace: Duration, timeout: Duration) -> Self {
        WaitOptions {
            grace,
            timeout,
            spin: DEFAULT_SPIN,
        }
    }
}

/// What a wait found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reached {
    /// Per involved partition, in the order asked: the replicas whose entries showed the phase.
    pub replicas: Vec<(u32, Vec<u32>)>,
    /// Per involved partition, in the order asked: the same replicas as a bitmap (bit `q` is
    /// replica `q`; replicas per partition are at most 31).
    pub masks: Vec<u32>,
    /// Every replica of every involved partition showed it (no grace wait was cut short).
    pub complete: bool,
    /// From the start of the wait to a majority of every partition.
    pub majority_after: Duration,
    /// From the start of the wait to its end.
    pub waited: Duration,
    /// Writes of our entry that failed (the peer is gone); retried by attaching again next time.
    pub failed_writes: usize,
    /// Times the wait went to sleep (counted itself in on the doorbell, or paused between
    /// polls) after spinning.
    pub sleeps: u32,
    /// The spin it got: `opts.spin`, or zero while spinning did not pay for this phase.
    pub spin: Duration,
}

/// A wait that ran out of its time budget before it ended; [`Coordinator::advance`] goes on
/// with it, keeping its start (the grace wait and timeout count from there).
#[derive(Clone, Debug)]
pub struct Pending {
    ts: u64,
    phase: u32,
    partitions: Vec<u32>,
    opts: WaitOptions,
    start: Instant,
    majority_at: Option<Instant>,
    failed_writes: usize,
    sleeps: u32,
    /// The spin this wait got (`opts.spin` or none, see [`WaitOptions::spin`]).
    spin: Duration,
    /// It had a spin and did not end at its first look.
    spun: bool,
}

impl Pending {
    /// The transaction and phase waited for.
    pub fn target(&self) -> (u64, u32) {
        (self.ts, self.phase)
    }

    /// The partitions waited for, in the order asked.
    pub fn partitions(&self) -> &[u32] {
        &self.partitions
    }
}

/// Where a budgeted wait stands.
#[derive(Clone, Debug)]
pub enum Progress {
    Reached(Reached),
    Pending(Pending),
}

/// A peer, attached: its memory through the transport, and on `shm` our own mapping of its
/// coordination region to ring its doorbell.
struct Linked<P> {
    mem: Arc<P>,
    bell: Option<Arc<Region>>,
}

impl<P> Clone for Linked<P> {
    fn clone(&self) -> Self {
        Linked {
            mem: self.mem.clone(),
            bell: self.bell.clone(),
        }
    }
}

struct PeerSlot<P> {
    region: u32,
    /// What the transport attaches to (a store name for `shm`, an address for `tcp`), and the
    /// attachment; one lock, so a re-attach never pairs a new name with an old attachment.
    linked: Mutex<(String, Option<Linked<P>>)>,
    /// Over the network: our latest entry for a peer whose last write failed, which a thread
    /// of its own keeps writing (see [`Coordinator::defer`]); `None` while writes go inline.
    deferred: Mutex<Option<[u8; ENTRY_BYTES]>>,
}

/// A deferred write is retried after this pause, doubling up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(100);

pub struct Coordinator<T: Transport + 'static> {
    layout: Layout,
    me: Member,
    _store: Arc<Store>,
    region: u32,
    /// Our own region, mapped again here: scans read it directly, without the store's lock,
    /// and the doorbell needs its address.
    own: Region,
    transport: Arc<T>,
    /// By entry index; `None` at our own index.
    peers: Vec<Option<Arc<PeerSlot<T::Peer>>>>,
    /// Tells threads retrying deferred writes to end (the coordinator is dropped).
    stop: Arc<AtomicBool>,
    /// The cluster directory when peers ring doorbells (all on one host, over `shm`).
    bells: Option<PathBuf>,
    /// Whether spinning paid off lately, by phase slot; waits since the last probe.
    spin_score: [AtomicU32; SLOTS],
    unspun: AtomicU32,
}

fn entry_offset(index: usize) -> u64 {
    (REGION_HEADER_BYTES + index * ENTRY_BYTES) as u64
}

/// The doorbell word of a coordination region of `layout`, if the region holds it.
fn doorbell_word(region: &Region, layout: Layout) -> Option<&AtomicU64> {
    let offset = (REGION_HEADER_BYTES + layout.doorbell_offset()) as u64;
    region.words_at(offset, 8).ok()?.first()
}

/// `t + d`, or `None` for never (`d` too large to represent).
fn after(t: Instant, d: Duration) -> Option<Instant> {
    t.checked_add(d)
}

impl<T: Transport + 'static> Coordinator<T> {
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
        let own = Region::attach(store.dir(), region)?;
        let peers = peers
            .iter()
            .enumerate()
            .map(|(i, (name, region))| {
                (i != mine).then(|| {
                    Arc::new(PeerSlot {
                        region: *region,
                        linked: Mutex::new((name.clone(), None)),
                        deferred: Mutex::new(None),
                    })
                })
            })
            .collect();
        Ok(Coordinator {
            layout,
            me,
            _store: store,
            region,
            own,
            transport: Arc::new(transport),
            peers,
            stop: Arc::new(AtomicBool::new(false)),
            bells: None,
            spin_score: std::array::from_fn(|_| AtomicU32::new(SCORE_MAX)),
            unspun: AtomicU32::new(0),
        })
    }

    /// Every peer is a store in the cluster directory `dir` on this host (the `shm`
    /// transport's directory): after announcing, ring each peer's doorbell through our own
    /// mapping of its region, and sleep on our own doorbell instead of polling. Every replica
    /// of a cluster must agree on this: a peer that does not ring is only noticed when a sleep
    /// ends by its timeout.
    pub fn ring_doorbells(mut self, dir: &Path) -> Self {
        self.bells = Some(dir.to_path_buf());
        self
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

    /// Our doorbell, when peers ring it.
    fn doorbell(&self) -> Option<Doorbell<'_>> {
        self.bells.as_ref()?;
        doorbell_word(&self.own, self.layout).map(Doorbell::new)
    }

    /// How many waits are asleep on this replica's doorbell (or about to be); 0 without
    /// doorbells. For tests and diagnostics.
    pub fn sleepers(&self) -> u32 {
        self.doorbell().map_or(0, |d| d.sleepers())
    }

    fn peer(&self, slot: &PeerSlot<T::Peer>) -> remora_core::Result<Linked<T::Peer>> {
        let mut guard = slot.linked.lock().unwrap_or_else(|e| e.into_inner());
        let (name, linked) = &mut *guard;
        if let Some(l) = linked.as_ref() {
            return Ok(l.clone());
        }
        let mem = Arc::new(self.transport.attach(name)?);
        let bell = match &self.bells {
            None => None,
            Some(dir) => {
                let region = Region::attach(&dir.join(&*name), slot.region)?;
                if doorbell_word(&region, self.layout).is_none() {
                    return Err(remora_core::Error::OutOfBounds {
                        region: slot.region,
                        offset: (REGION_HEADER_BYTES + self.layout.doorbell_offset()) as u64,
                        len: 8,
                        size: region.info.bytes,
                    });
                }
                Some(Arc::new(region))
            }
        };
        let l = Linked { mem, bell };
        *linked = Some(l.clone());
        Ok(l)
    }

    fn forget(slot: &PeerSlot<T::Peer>) {
        slot.linked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .take();
    }

    /// The peer at entry `index` restarted (a new incarnation with a new coordination region:
    /// a new file on `shm`, a new server, perhaps at a new `address`, on `tcp`): drops what was
    /// attached, which may still write into the dead incarnation's memory without an error,
    /// attaches again and writes our latest entry there (announcements since its restart went
    /// to the dead one; the latest covers them, entries only move forward), ringing its
    /// doorbell. Returns whether that write failed (the peer is then attached on the next
    /// announcement, as any peer that could not be written).
    pub fn reattach(&self, index: usize, address: Option<&str>) -> Result<bool> {
        let slot = match self.peers.get(index) {
            Some(Some(slot)) => slot,
            Some(None) => {
                return Err(Error::BadRequest(format!(
                    "entry {index} is this replica's own: it does not re-attach to itself"
                )))
            }
            None => {
                return Err(Error::BadRequest(format!(
                    "entry {index} out of range: the layout has {}",
                    self.layout.entries()
                )))
            }
        };
        {
            let mut guard = slot.linked.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = address {
                guard.0 = a.to_string();
            }
            guard.1 = None;
        }
        // A new incarnation: written inline at once (a thread retrying the dead one ends).
        slot.deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mine = self.layout.index(self.me.partition, self.me.replica);
        let latest = self.entry(mine)?;
        if latest.ts == 0 {
            return Ok(false);
        }
        Ok(!self.send(slot, &encode(latest, mine)))
    }

    /// Writes our entry `bytes` into `slot`'s region and rings it; returns whether it was
    /// written now. Over the network a peer that cannot be written (gone, or stopped: a write
    /// waits for its answer until the transport's timeout) gets a thread that keeps writing
    /// our latest entry until one lands, and meanwhile our writes to it only update what that
    /// thread writes: a stopped peer costs one timeout, not one per announcement. Entries only
    /// move forward, so writing just the latest loses nothing.
    fn send(&self, slot: &Arc<PeerSlot<T::Peer>>, bytes: &[u8; ENTRY_BYTES]) -> bool {
        if self.bells.is_none() {
            let mut deferred = slot.deferred.lock().unwrap_or_else(|e| e.into_inner());
            if deferred.is_some() {
                *deferred = Some(*bytes);
                return false;
            }
        }
        let mine = self.layout.index(self.me.partition, self.me.replica);
        let wrote = self.peer(slot).and_then(|l| {
            l.mem.write(slot.region, entry_offset(mine), bytes)?;
            if let Some(word) = l
                .bell
                .as_deref()
                .and_then(|r| doorbell_word(r, self.layout))
            {
                Doorbell::new(word).ring();
            }
            Ok(())
        });
        if wrote.is_ok() {
            return true;
        }
        Self::forget(slot);
        if self.bells.is_none() {
            self.defer(slot, *bytes, entry_offset(mine));
        }
        false
    }

    /// Starts the thread that writes `slot`'s deferred entry until one lands (see `send`).
    fn defer(&self, slot: &Arc<PeerSlot<T::Peer>>, bytes: [u8; ENTRY_BYTES], offset: u64) {
        *slot.deferred.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        let (peer, transport, stop) = (slot.clone(), self.transport.clone(), self.stop.clone());
        let spawned = std::thread::Builder::new()
            .name("heron-coord-retry".into())
            .spawn(move || {
                let mut pause = RETRY_FIRST;
                while !stop.load(Ordering::Acquire) {
                    let Some(bytes) = *peer.deferred.lock().unwrap_or_else(|e| e.into_inner())
                    else {
                        return;
                    };
                    let wrote = Self::attach_net(&*transport, &peer)
                        .and_then(|mem| mem.write(peer.region, offset, &bytes));
                    if wrote.is_ok() {
                        let mut deferred = peer.deferred.lock().unwrap_or_else(|e| e.into_inner());
                        // Done unless a newer entry came meanwhile: writes go inline again.
                        if *deferred == Some(bytes) {
                            *deferred = None;
                            return;
                        }
                        pause = RETRY_FIRST;
                        continue;
                    }
                    Self::forget(&peer);
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(RETRY_MAX);
                }
            });
        if spawned.is_err() {
            // No thread: writes go inline again (each costing its timeout while the peer is stopped).
            *slot.deferred.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// A network peer's memory, attached if it is not (no doorbell to map: see `peer`).
    fn attach_net(transport: &T, slot: &PeerSlot<T::Peer>) -> remora_core::Result<Arc<T::Peer>> {
        let mut guard = slot.linked.lock().unwrap_or_else(|e| e.into_inner());
        let (name, linked) = &mut *guard;
        if let Some(l) = linked.as_ref() {
            return Ok(l.mem.clone());
        }
        let mem = Arc::new(transport.attach(name)?);
        *linked = Some(Linked {
            mem: mem.clone(),
            bell: None,
        });
        Ok(mem)
    }

    /// Attaches to every peer, retrying until `timeout` (peers start in any order). Fails
    /// naming the peers still unreachable.
    pub fn connect(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut last = None;
            for slot in self.peers.iter().flatten() {
                if let Err(e) = self.peer(slot) {
                    last = Some(e);
                }
            }
            match last {
                None => return Ok(()),
                Some(e) if Instant::now() >= deadline => return Err(e.into()),
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
    /// locally), ringing each peer's doorbell after its write. A peer that cannot be written is
    /// skipped (it is gone, or not up yet: the majority wait is what copes with that); returns
    /// how many were skipped.
    pub fn announce(&self, ts: u64, phase: u32, partitions: &[u32]) -> Result<usize> {
        self.check_partitions(partitions)?;
        let mine = self.layout.index(self.me.partition, self.me.replica);
        let bytes = encode(Entry { ts, phase }, mine);
        let offset = entry_offset(mine);
        let mut failed = 0;
        for &h in partitions {
            for q in 0..self.layout.replicas {
                match &self.peers[self.layout.index(h, q)] {
                    None => self.own.write(offset, &bytes)?,
                    Some(slot) => {
                        if !self.send(slot, &bytes) {
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
            self.own.read(entry_offset(index), &mut buf)?;
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

    /// Entry `index` as one read finds it; `None` while torn (its writer is mid-store).
    fn look(&self, index: usize) -> Result<Option<Entry>> {
        let mut buf = [0u8; ENTRY_BYTES];
        self.own.read(entry_offset(index), &mut buf)?;
        Ok(decode(&buf, index))
    }

    /// Every entry of our region, by index.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        (0..self.layout.entries()).map(|i| self.entry(i)).collect()
    }

    /// Fills `masks` (one per partition of `p`) with the replicas whose entries show the phase;
    /// returns how many replicas that is in all.
    fn scan(&self, p: &Pending, masks: &mut Vec<u32>) -> Result<u32> {
        masks.clear();
        let mut total = 0;
        for &h in &p.partitions {
            let mut mask = 0u32;
            for q in 0..self.layout.replicas {
                // A torn entry has not shown the phase yet: the next look sees it whole.
                let seen = self.look(self.layout.index(h, q))?;
                if seen.is_some_and(|e| e.reached(p.ts, p.phase)) {
                    mask |= 1 << q;
                }
            }
            total += mask.count_ones();
            masks.push(mask);
        }
        Ok(total)
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
        let mut p = self.pending(ts, phase, partitions, opts, Instant::now(), 0);
        loop {
            if let Some(r) = self.run(&mut p, None)? {
                return Ok(r);
            }
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

    /// Announces, then waits for at most `budget`: the wait's end, or where it stands, to be
    /// finished by [`Coordinator::advance`] (on another thread, say).
    pub fn coordinate_within(
        &self,
        ts: u64,
        phase: u32,
        partitions: &[u32],
        opts: WaitOptions,
        budget: Duration,
    ) -> Result<Progress> {
        let start = Instant::now();
        let failed_writes = self.announce(ts, phase, partitions)?;
        let p = self.pending(ts, phase, partitions, opts, start, failed_writes);
        self.advance(p, budget)
    }

    /// [`Coordinator::coordinate_within`] without the announcement: for a phase announced
    /// earlier, whose wait was put off (a replica waits for phase 4 of a transaction only before
    /// a write that could hide a version its peers read). Announcing again could move our
    /// entry back past a later one.
    pub fn wait_within(
        &self,
        ts: u64,
        phase: u32,
        partitions: &[u32],
        opts: WaitOptions,
        budget: Duration,
    ) -> Result<Progress> {
        self.check_partitions(partitions)?;
        let p = self.pending(ts, phase, partitions, opts, Instant::now(), 0);
        self.advance(p, budget)
    }

    fn pending(
        &self,
        ts: u64,
        phase: u32,
        partitions: &[u32],
        opts: WaitOptions,
        start: Instant,
        failed_writes: usize,
    ) -> Pending {
        let score = self.spin_score[phase as usize % SLOTS].load(Ordering::Relaxed);
        let spin = if score >= SCORE_SPIN
            || self.unspun.fetch_add(1, Ordering::Relaxed) % PROBE_EVERY == PROBE_EVERY - 1
        {
            opts.spin
        } else {
            Duration::ZERO
        };
        Pending {
            ts,
            phase,
            partitions: partitions.to_vec(),
            opts,
            start,
            majority_at: None,
            failed_writes,
            sleeps: 0,
            spin,
            spun: false,
        }
    }

    /// Scores how the spin of a wait that ended did (see [`WaitOptions::spin`]). A wait that
    /// ended at its first look says nothing about spinning.
    fn score_spin(&self, p: &Pending) {
        if !p.spun {
            return;
        }
        let slot = &self.spin_score[p.phase as usize % SLOTS];
        let old = slot.load(Ordering::Relaxed).min(SCORE_MAX);
        let new = if p.sleeps == 0 {
            old + (SCORE_MAX - old) / 4
        } else {
            old - old / 4
        };
        // Racing waits of one phase may lose an update: the score is only a hint.
        slot.store(new, Ordering::Relaxed);
    }

    /// Goes on with a pending wait for at most `budget` more (`Duration::MAX`: to its end).
    pub fn advance(&self, mut p: Pending, budget: Duration) -> Result<Progress> {
        let until = after(Instant::now(), budget);
        loop {
            match self.run(&mut p, until)? {
                Some(r) => return Ok(Progress::Reached(r)),
                None if until.is_some_and(|u| Instant::now() >= u) => {
                    return Ok(Progress::Pending(p))
                }
                None => {}
            }
        }
    }

    /// The wait itself: spins until `p.spin` after the start, then sleeps on the doorbell
    /// (or polls). Returns `None` once `until` has passed.
    fn run(&self, p: &mut Pending, until: Option<Instant>) -> Result<Option<Reached>> {
        let need = self.layout.majority() as u32;
        let all = self.layout.replicas;
        let spin_end = after(p.start, p.spin);
        let mut masks = Vec::with_capacity(p.partitions.len());
        let mut idle = 0u32;
        loop {
            let seen = self.scan(p, &mut masks)?;
            let now = Instant::now();
            let majority = masks.iter().all(|m| m.count_ones() >= need);
            let deadline = if majority {
                let at = *p.majority_at.get_or_insert(now);
                let complete = masks.iter().all(|m| m.count_ones() == all);
                if complete || now - at >= p.opts.grace {
                    return Ok(Some(self.reached(p, masks, complete, now)));
                }
                after(at, p.opts.grace)
            } else {
                if now - p.start >= p.opts.timeout {
                    return Err(self.no_majority(p, &masks, need, now));
                }
                after(p.start, p.opts.timeout)
            };
            if until.is_some_and(|u| now >= u) {
                return Ok(None);
            }
            // Not at the first look: how the spin does from here is what its score measures.
            p.spun |= !p.spin.is_zero();
            if spin_end.is_none_or(|e| now < e) {
                std::hint::spin_loop();
                continue;
            }
            let Some(bell) = self.doorbell() else {
                pause(&mut idle);
                p.sleeps = p.sleeps.saturating_add(1);
                continue;
            };
            let sleeper = bell.prepare();
            // Counted as a sleep from here: the spin did not end the wait.
            p.sleeps = p.sleeps.saturating_add(1);
            // Checked again once counted in: an announcement from here on rings us awake.
            if self.scan(p, &mut masks)? != seen {
                continue;
            }
            let wake = [deadline, until, Some(now + SLEEP_CAP)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now);
            sleeper.sleep(wake.saturating_duration_since(now));
        }
    }

    fn reached(&self, p: &Pending, masks: Vec<u32>, complete: bool, now: Instant) -> Reached {
        self.score_spin(p);
        let replicas = p
            .partitions
            .iter()
            .zip(&masks)
            .map(|(&h, &m)| {
                (
                    h,
                    (0..self.layout.replicas)
                        .filter(|q| m >> q & 1 == 1)
                        .collect(),
                )
            })
            .collect();
        Reached {
            replicas,
            masks,
            complete,
            majority_after: p.majority_at.unwrap_or(now) - p.start,
            waited: now - p.start,
            failed_writes: p.failed_writes,
            sleeps: p.sleeps,
            spin: p.spin,
        }
    }

    fn no_majority(&self, p: &Pending, masks: &[u32], need: u32, now: Instant) -> Error {
        let (partition, have) = p
            .partitions
            .iter()
            .zip(masks)
            .find(|(_, m)| m.count_ones() < need)
            .map(|(&h, m)| (h, m.count_ones() as usize))
            .unwrap_or((p.partitions.first().copied().unwrap_or(0), 0));
        Error::NoMajority {
            ts: p.ts,
            phase: p.phase,
            partition,
            have,
            need: need as usize,
            waited: now - p.start,
        }
    }
}

impl<T: Transport + 'static> Drop for Coordinator<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Backs off while polling (no doorbell: `tcp`, `verbs`): yields, then short sleeps, so a
/// wait on a busy two-core host does not starve the peers it waits for.
fn pause(idle: &mut u32) {
    *idle = idle.saturating_add(1);
    match *idle {
        0..448 => std::thread::yield_now(),
        _ => std::thread::sleep(Duration::from_micros(20)),
    }
}
