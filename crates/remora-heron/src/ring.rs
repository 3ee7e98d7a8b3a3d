//! The ordered stream in registered memory (Heron's ordering path, after RamCast's rings): the
//! launcher appends every ordered transaction once to a ring in a raw region of its own store,
//! and every replica reads that ring one-sidedly through any `Transport`, keeping the records
//! addressed to its partition. One copy of each transaction is written, none is pushed per
//! replica, and nothing is decoded before it reaches the replica that runs it.
//!
//! Layout after the region header (all words little-endian, written with aligned word stores):
//!
//! - control: magic, capacity, partitions, replicas, then `head`: the stream position (bytes
//!   ever appended) up to which records are published;
//! - one doorbell word per partition: bumped after records addressed to that partition are
//!   published. On one host a waiting reader sleeps on it with a cross-process futex;
//! - one 64-byte line per consumer (replica `q` of partition `h` is consumer `h * replicas + q`):
//!   word 0 is how far that consumer read, which only it writes (one-sidedly, into the
//!   producer's region); word 1 is set by the producer when it gave up waiting for it;
//! - the data area: `capacity` bytes of records, each 32-byte aligned and never wrapping: a
//!   record that does not fit before the end is preceded by a pad record filling it.
//!
//! A record: position (its stream offset: a copy the producer overwrote since shows a later
//! position), timestamp, a meta word (payload length, destination count, kind), an xxh3 check of
//! all of it, the destinations (u16 each), then the payload. Flow control: the producer never
//! writes over bytes a live consumer has not read; waiting for space it wakes every reader (so
//! replicas of idle partitions move on too) and, past its stall budget, drops the consumers
//! still in the way, handing back what they had not read so the caller can deliver it some
//! other way (a lagger is caught up by its partition anyway).

use crate::doorbell::Doorbell;
use remora_core::region::{Region, PAGE, REGION_HEADER_BYTES};
use remora_core::{RemoteMemory, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAGIC: u64 = u64::from_le_bytes(*b"HRNRING1");
const CTRL: usize = REGION_HEADER_BYTES;
const CTRL_BYTES: usize = 40;
const HEAD: usize = CTRL + 32;
const BELLS: usize = CTRL + 64;
const LINE: usize = 64;
const RECORD_ALIGN: usize = 32;
const RECORD_HEADER: usize = 32;
const KIND_TX: u64 = 1;
const KIND_PAD: u64 = 2;
/// Smallest and largest data areas.
pub const MIN_RING_BYTES: usize = 4096;
pub const MAX_RING_BYTES: usize = 1 << 30;
const MAX_PARTITIONS: u32 = crate::entry::MAX_PARTITIONS;
const MAX_REPLICAS: u32 = crate::entry::MAX_REPLICAS;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error(transparent)]
    Core(#[from] remora_core::Error),
    #[error("bad ring layout: {0}")]
    BadLayout(String),
    #[error("bad ring request: {0}")]
    BadRequest(String),
    #[error("the ring's memory is not a ring: {0}")]
    NotARing(String),
    #[error("malformed ring record at position {pos}: {why}")]
    Malformed { pos: u64, why: String },
    #[error(
        "consumer {consumer} fell behind the ring at position {pos}: the producer stopped \
         waiting for it and overwrote what it had not read"
    )]
    Overrun { consumer: u32, pos: u64 },
}

pub type RingResult<T> = std::result::Result<T, RingError>;

/// Partitions × replicas, and the size of the data area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLayout {
    pub partitions: u32,
    pub replicas: u32,
    /// Bytes of records (a multiple of 32).
    pub capacity: usize,
}

impl RingLayout {
    pub fn new(partitions: u32, replicas: u32, capacity: usize) -> RingResult<Self> {
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(RingError::BadLayout(format!(
                "partitions must be 1 to {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(RingError::BadLayout(format!(
                "replicas per partition must be 1 to {MAX_REPLICAS}, got {replicas}"
            )));
        }
        if !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&capacity) {
            return Err(RingError::BadLayout(format!(
                "the ring must hold {MIN_RING_BYTES} to {MAX_RING_BYTES} bytes, got {capacity}"
            )));
        }
        Ok(RingLayout {
            partitions,
            replicas,
            capacity: capacity.next_multiple_of(RECORD_ALIGN),
        })
    }

    pub fn consumers(&self) -> u32 {
        self.partitions * self.replicas
    }

    fn bell(&self, partition: u32) -> usize {
        BELLS + partition as usize * 8
    }

    fn line(&self, consumer: u32) -> usize {
        BELLS + (self.partitions as usize * 8).next_multiple_of(LINE) + consumer as usize * LINE
    }

    fn data(&self) -> usize {
        self.line(self.consumers()).next_multiple_of(PAGE)
    }

    /// Bytes to ask `Store::add_shared_region` for (it adds the header page).
    pub fn region_bytes(&self) -> usize {
        self.data() + self.capacity - REGION_HEADER_BYTES
    }

    /// The partition of consumer `consumer`.
    pub fn partition_of(&self, consumer: u32) -> u32 {
        consumer / self.replicas
    }
}

/// One ordered transaction as written into the ring.
#[derive(Clone, Copy, Debug)]
pub struct RecordIn<'a> {
    pub ts: u64,
    /// Destination partitions (each in range, at least one).
    pub dest: &'a [u32],
    pub payload: &'a [u8],
}

/// One record as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its stream position.
    pub pos: u64,
    pub ts: u64,
    pub dest: Vec<u32>,
    pub payload: Vec<u8>,
}

/// A consumer the producer stopped waiting for, and what it had not read (addressed to its
/// partition). `lost`: its position did not name a record (it wrote nonsense), so what it had
/// not read cannot be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub consumer: u32,
    pub from: u64,
    pub records: Vec<Record>,
    pub lost: bool,
}

fn record_bytes(dests: usize, payload: usize) -> usize {
    (RECORD_HEADER + (2 * dests).next_multiple_of(8) + payload).next_multiple_of(RECORD_ALIGN)
}

fn meta(kind: u64, dests: usize, len: usize) -> u64 {
    len as u64 | (dests as u64) << 32 | kind << 48
}

fn check(pos: u64, ts: u64, meta: u64, body: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&pos.to_le_bytes());
    h.update(&ts.to_le_bytes());
    h.update(&meta.to_le_bytes());
    h.update(body);
    h.digest()
}

fn word(bytes: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

/// Where records are read from: the producer's own mapping, or a peer's memory.
trait Source {
    fn read_at(&self, offset: usize, buf: &mut [u8]) -> RingResult<()>;
}

struct Mapped<'a>(&'a Region);

impl Source for Mapped<'_> {
    fn read_at(&self, offset: usize, buf: &mut [u8]) -> RingResult<()> {
        Ok(self.0.read(offset as u64, buf)?)
    }
}

struct Remote<'a, M> {
    mem: &'a M,
    region: u32,
}

impl<M: RemoteMemory> Source for Remote<'_, M> {
    fn read_at(&self, offset: usize, buf: &mut [u8]) -> RingResult<()> {
        Ok(self.mem.read(self.region, offset as u64, buf)?)
    }
}

/// What sits at one stream position.
enum Item {
    Pad { next: u64 },
    Tx { record: Record, next: u64 },
}

/// Reads and checks the record at `pos` (which must be below the published head). `keep`
/// says whether a record addressed to those destinations is wanted (its payload is copied).
fn read_item(
    src: &dyn Source,
    layout: &RingLayout,
    pos: u64,
    keep: &dyn Fn(&[u32]) -> bool,
    buf: &mut Vec<u8>,
) -> RingResult<Item> {
    let cap = layout.capacity as u64;
    let at = (pos % cap) as usize;
    let malformed = |why: String| RingError::Malformed { pos, why };
    let mut header = [0u8; RECORD_HEADER];
    src.read_at(layout.data() + at, &mut header)?;
    let (p, ts, m, sum) = (
        word(&header, 0),
        word(&header, 1),
        word(&header, 2),
        word(&header, 3),
    );
    if p != pos {
        return Err(malformed(format!("it carries position {p}")));
    }
    let kind = m >> 48;
    let dests = ((m >> 32) & 0xffff) as usize;
    let len = (m & 0xffff_ffff) as usize;
    if kind == KIND_PAD {
        if check(pos, ts, m, &[]) != sum {
            return Err(malformed("a pad record fails its check".into()));
        }
        return Ok(Item::Pad {
            next: pos + (cap - at as u64),
        });
    }
    if kind != KIND_TX {
        return Err(malformed(format!("unknown kind {kind}")));
    }
    if dests == 0 || dests > layout.partitions as usize {
        return Err(malformed(format!(
            "{dests} destinations in a ring of {} partitions",
            layout.partitions
        )));
    }
    let size = record_bytes(dests, len);
    if at + size > layout.capacity {
        return Err(malformed(format!(
            "{size} bytes at offset {at} run past the end of a {}-byte ring",
            layout.capacity
        )));
    }
    let dest_bytes = (2 * dests).next_multiple_of(8);
    buf.resize(dest_bytes + len, 0);
    src.read_at(layout.data() + at + RECORD_HEADER, buf)?;
    if check(pos, ts, m, buf) != sum {
        return Err(malformed("it fails its check (torn or damaged)".into()));
    }
    let mut dest = Vec::with_capacity(dests);
    for i in 0..dests {
        let h = u32::from(u16::from_le_bytes([buf[2 * i], buf[2 * i + 1]]));
        if h >= layout.partitions {
            return Err(malformed(format!("destination {h} out of range")));
        }
        dest.push(h);
    }
    let next = pos + size as u64;
    if !keep(&dest) {
        return Ok(Item::Tx {
            record: Record {
                pos,
                ts,
                dest,
                payload: Vec::new(),
            },
            next,
        });
    }
    let payload = buf[dest_bytes..].to_vec();
    Ok(Item::Tx {
        record: Record {
            pos,
            ts,
            dest,
            payload,
        },
        next,
    })
}

/// The launcher's side: appends records, never over what a live consumer has not read.
pub struct RingProducer {
    layout: RingLayout,
    region_id: u32,
    /// Our own second mapping of the region: plain atomic stores, and a futex address.
    map: Region,
    head: u64,
    live: Vec<bool>,
    body: Vec<u8>,
}

impl RingProducer {
    /// Adds the ring's region to `store` (its id is [`RingProducer::region`]).
    pub fn create(store: &Arc<Store>, layout: RingLayout) -> RingResult<Self> {
        let region_id = store.add_shared_region(layout.region_bytes())?;
        let map = Region::attach(store.dir(), region_id)?;
        let mut ctrl = [0u8; CTRL_BYTES];
        for (i, w) in [
            0,
            layout.capacity as u64,
            u64::from(layout.partitions),
            u64::from(layout.replicas),
            0,
        ]
        .iter()
        .enumerate()
        {
            ctrl[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        map.write(CTRL as u64, &ctrl)?;
        // Touch every page now: the first store to a page of a file mapping makes the file
        // system allocate it (on a journalling one, behind whatever commit runs, such as the
        // log's fsync), a stall that must not land on an append.
        let zeros = vec![0u8; PAGE];
        let mut at = layout.data();
        while at < layout.data() + layout.capacity {
            map.write(at as u64, &zeros)?;
            at += PAGE;
        }
        // The magic last: a reader that sees it sees the layout words too.
        map.write(CTRL as u64, &MAGIC.to_le_bytes())?;
        Ok(RingProducer {
            layout,
            region_id,
            map,
            head: 0,
            live: vec![true; layout.consumers() as usize],
            body: Vec::new(),
        })
    }

    pub fn region(&self) -> u32 {
        self.region_id
    }

    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// Bytes appended so far (the published head).
    pub fn head(&self) -> u64 {
        self.head
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        &self.map.words()[offset / 8]
    }

    /// How far `consumer` read, as it says; never past the head (a claim beyond it is
    /// nonsense, and counting it would let us overwrite what it has not read).
    pub fn consumed(&self, consumer: u32) -> u64 {
        self.word(self.layout.line(consumer))
            .load(Ordering::Acquire)
            .min(self.head)
    }

    /// Readers of `partition` counted in to sleep on its doorbell (diagnostics, tests).
    pub fn sleepers(&self, partition: u32) -> u32 {
        if partition >= self.layout.partitions {
            return 0;
        }
        Doorbell::new(self.word(self.layout.bell(partition))).sleepers()
    }

    /// Consumers the producer still waits for.
    pub fn is_live(&self, consumer: u32) -> bool {
        self.live.get(consumer as usize).copied().unwrap_or(false)
    }

    fn ring(&self, partition: u32) {
        Doorbell::new(self.word(self.layout.bell(partition))).ring();
    }

    fn ring_all(&self) {
        for h in 0..self.layout.partitions {
            self.ring(h);
        }
    }

    fn publish(&mut self, pos: u64, ts: u64, m: u64, body_len: usize) -> RingResult<()> {
        let at = self.layout.data() + (pos % self.layout.capacity as u64) as usize;
        let sum = check(pos, ts, m, &self.body[..body_len]);
        let mut header = [0u8; RECORD_HEADER];
        for (i, w) in [pos, ts, m, sum].iter().enumerate() {
            header[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        self.map.write(at as u64, &header)?;
        if body_len > 0 {
            self.map
                .write((at + RECORD_HEADER) as u64, &self.body[..body_len])?;
        }
        Ok(())
    }

    fn set_head(&mut self, head: u64) {
        self.head = head;
        // Release: the record's words are visible before the head that covers them.
        self.word(HEAD).store(head, Ordering::Release);
    }

    /// Appends `records` in order and wakes the readers of their destinations. Waits up to
    /// `stall` for consumers to make room; consumers still in the way after that are dropped
    /// (returned, with what they had not read). Fails, writing nothing more, on a record that
    /// cannot fit or names a partition out of range.
    pub fn push(&mut self, records: &[RecordIn<'_>], stall: Duration) -> RingResult<Vec<Dropped>> {
        for r in records {
            if r.dest.is_empty() || r.dest.len() > self.layout.partitions as usize {
                return Err(RingError::BadRequest(format!(
                    "transaction {} has {} destinations",
                    r.ts,
                    r.dest.len()
                )));
            }
            if let Some(h) = r.dest.iter().find(|&&h| h >= self.layout.partitions) {
                return Err(RingError::BadRequest(format!(
                    "transaction {} is addressed to partition {h}, but the ring has {}",
                    r.ts, self.layout.partitions
                )));
            }
            let size = record_bytes(r.dest.len(), r.payload.len());
            if size > self.layout.capacity || r.payload.len() > u32::MAX as usize {
                return Err(RingError::BadRequest(format!(
                    "a record of {size} bytes does not fit a ring of {} bytes: give the cluster a larger ring",
                    self.layout.capacity
                )));
            }
        }
        let cap = self.layout.capacity as u64;
        let mut dropped = Vec::new();
        let mut rung = vec![false; self.layout.partitions as usize];
        for r in records {
            let size = record_bytes(r.dest.len(), r.payload.len()) as u64;
            let at = self.head % cap;
            let pad = if at + size > cap { cap - at } else { 0 };
            self.reserve(pad + size, stall, &mut dropped)?;
            if pad > 0 {
                let pos = self.head;
                self.publish(pos, 0, meta(KIND_PAD, 0, 0), 0)?;
                self.set_head(pos + pad);
            }
            let dest_bytes = (2 * r.dest.len()).next_multiple_of(8);
            self.body.clear();
            self.body.resize(dest_bytes, 0);
            for (i, &h) in r.dest.iter().enumerate() {
                self.body[2 * i..2 * i + 2].copy_from_slice(&(h as u16).to_le_bytes());
            }
            self.body.extend_from_slice(r.payload);
            let pos = self.head;
            let len = self.body.len();
            self.publish(pos, r.ts, meta(KIND_TX, r.dest.len(), r.payload.len()), len)?;
            self.set_head(pos + size);
            for &h in r.dest {
                rung[h as usize] = true;
            }
        }
        for (h, _) in rung.iter().enumerate().filter(|(_, &r)| r) {
            self.ring(h as u32);
        }
        Ok(dropped)
    }

    /// Waits until `need` bytes past the head are free of unread records.
    fn reserve(
        &mut self,
        need: u64,
        stall: Duration,
        dropped: &mut Vec<Dropped>,
    ) -> RingResult<()> {
        let cap = self.layout.capacity as u64;
        let free = |p: &Self, c: u32| cap - (p.head - p.consumed(c)).min(cap);
        let mut started: Option<Instant> = None;
        let mut idle = 0u32;
        let mut last_ring = Instant::now();
        loop {
            let blocking: Vec<u32> = (0..self.layout.consumers())
                .filter(|&c| self.is_live(c) && free(self, c) < need)
                .collect();
            if blocking.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            let start = *started.get_or_insert_with(|| {
                // Readers of partitions with nothing to do sleep: wake them to move on.
                self.ring_all();
                last_ring = now;
                now
            });
            if now - start >= stall {
                for c in blocking {
                    dropped.push(self.drop_consumer(c)?);
                }
                continue;
            }
            if now - last_ring >= Duration::from_millis(1) {
                self.ring_all();
                last_ring = now;
            }
            // Local memory: never the idle reader's long sleeps.
            pause(&mut idle, Duration::from_micros(50));
        }
    }

    fn drop_consumer(&mut self, consumer: u32) -> RingResult<Dropped> {
        let from = self.consumed(consumer);
        self.live[consumer as usize] = false;
        // Tell the consumer (it checks when a record no longer reads back).
        self.word(self.layout.line(consumer) + 8)
            .store(from + 1, Ordering::Release);
        let partition = self.layout.partition_of(consumer);
        let mut records = Vec::new();
        let mut pos = from;
        let mut buf = Vec::new();
        let keep = |d: &[u32]| d.contains(&partition);
        while pos < self.head {
            match read_item(&Mapped(&self.map), &self.layout, pos, &keep, &mut buf) {
                Ok(Item::Pad { next }) => pos = next,
                Ok(Item::Tx { record, next }) => {
                    if keep(&record.dest) {
                        records.push(record);
                    }
                    pos = next;
                }
                Err(RingError::Malformed { .. }) => {
                    return Ok(Dropped {
                        consumer,
                        from,
                        records: Vec::new(),
                        lost: true,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Dropped {
            consumer,
            from,
            records,
            lost: false,
        })
    }

    /// Takes `consumer` back (a restarted replica): the producer waits for it again, from the
    /// head on, and its dropped mark is cleared. Returns the head: a reader attaching as
    /// `consumer` now starts there, and everything before it must reach that replica some
    /// other way (state transfer). Whatever the consumer's line said before is forgotten.
    pub fn reattach(&mut self, consumer: u32) -> RingResult<u64> {
        if consumer >= self.layout.consumers() {
            return Err(RingError::BadRequest(format!(
                "no consumer {consumer}: the ring has {}",
                self.layout.consumers()
            )));
        }
        let line = self.layout.line(consumer);
        // Both words before the reader can attach: it takes its position from the line, and a
        // stale mark would turn its first unreadable record into an overrun.
        self.word(line).store(self.head, Ordering::Release);
        self.word(line + 8).store(0, Ordering::Release);
        self.live[consumer as usize] = true;
        Ok(self.head)
    }

    /// Stops waiting for `consumer` (it is gone); returns what it had not read.
    pub fn retire(&mut self, consumer: u32) -> RingResult<Dropped> {
        if consumer >= self.layout.consumers() {
            return Err(RingError::BadRequest(format!(
                "no consumer {consumer}: the ring has {}",
                self.layout.consumers()
            )));
        }
        self.drop_consumer(consumer)
    }
}

/// A replica's side: reads the producer's ring through `M`, records addressed to its
/// partition only. On one host pass the ring's region mapped (`bell`) to sleep on a futex;
/// without it, waiting polls.
pub struct RingReader<M: RemoteMemory> {
    mem: M,
    region: u32,
    layout: RingLayout,
    consumer: u32,
    partition: u32,
    pos: u64,
    bell: Option<Arc<Region>>,
    buf: Vec<u8>,
    /// Polls without a record since the last one, across waits (no doorbell: how long the
    /// partition has been idle, to back off).
    idle: u32,
}

impl<M: RemoteMemory> RingReader<M> {
    /// Attaches as `consumer`, resuming where that consumer last said it read.
    pub fn attach(
        mem: M,
        region: u32,
        consumer: u32,
        bell: Option<Arc<Region>>,
    ) -> RingResult<Self> {
        let mut ctrl = [0u8; CTRL_BYTES];
        mem.read(region, CTRL as u64, &mut ctrl)?;
        if word(&ctrl, 0) != MAGIC {
            return Err(RingError::NotARing(format!(
                "region {region} of {} has no ring magic",
                mem.peer()
            )));
        }
        let capacity = usize::try_from(word(&ctrl, 1)).unwrap_or(usize::MAX);
        let partitions = u32::try_from(word(&ctrl, 2)).unwrap_or(u32::MAX);
        let replicas = u32::try_from(word(&ctrl, 3)).unwrap_or(u32::MAX);
        let layout = RingLayout::new(partitions, replicas, capacity)
            .map_err(|e| RingError::NotARing(e.to_string()))?;
        if layout.capacity != capacity {
            return Err(RingError::NotARing(format!(
                "capacity {capacity} is not a multiple of {RECORD_ALIGN}"
            )));
        }
        let info = mem.region_info(region)?;
        if info.bytes < layout.data() + layout.capacity {
            return Err(RingError::NotARing(format!(
                "region {region} has {} bytes, the ring needs {}",
                info.bytes,
                layout.data() + layout.capacity
            )));
        }
        if consumer >= layout.consumers() {
            return Err(RingError::BadRequest(format!(
                "no consumer {consumer}: the ring has {}",
                layout.consumers()
            )));
        }
        let mut r = RingReader {
            mem,
            region,
            layout,
            consumer,
            partition: layout.partition_of(consumer),
            pos: 0,
            bell,
            buf: Vec::new(),
            idle: 0,
        };
        let mut line = [0u8; 8];
        r.read_at(layout.line(consumer), &mut line)?;
        let pos = u64::from_le_bytes(line);
        if pos > r.head()? {
            return Err(RingError::NotARing(format!(
                "consumer {consumer} is at {pos}, past the head"
            )));
        }
        r.pos = pos;
        Ok(r)
    }

    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The stream position read up to.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> RingResult<()> {
        Ok(self.mem.read(self.region, offset as u64, buf)?)
    }

    fn head(&self) -> RingResult<u64> {
        let mut w = [0u8; 8];
        self.read_at(HEAD, &mut w)?;
        Ok(u64::from_le_bytes(w))
    }

    /// The producer dropped us: records past our position may be gone.
    fn dropped(&self) -> RingResult<bool> {
        let mut w = [0u8; 8];
        self.read_at(self.layout.line(self.consumer) + 8, &mut w)?;
        Ok(u64::from_le_bytes(w) != 0)
    }

    /// A record that does not read back is an overrun if the producer dropped us, damage if
    /// not.
    fn explain(&self, e: RingError) -> RingError {
        match e {
            RingError::Malformed { pos, .. } if matches!(self.dropped(), Ok(true)) => {
                RingError::Overrun {
                    consumer: self.consumer,
                    pos,
                }
            }
            e => e,
        }
    }

    /// Takes up to `max` published records addressed to our partition, without waiting, and
    /// tells the producer how far we read.
    pub fn poll(&mut self, max: usize) -> RingResult<Vec<Record>> {
        let head = self.head()?;
        let cap = self.layout.capacity as u64;
        if head < self.pos {
            return Err(RingError::Malformed {
                pos: self.pos,
                why: format!("the head went back to {head}"),
            });
        }
        if head - self.pos > cap && self.dropped()? {
            return Err(RingError::Overrun {
                consumer: self.consumer,
                pos: self.pos,
            });
        }
        let mut out = Vec::new();
        let start = self.pos;
        let partition = self.partition;
        let keep = |d: &[u32]| d.contains(&partition);
        while self.pos < head && out.len() < max {
            let src = Remote {
                mem: &self.mem,
                region: self.region,
            };
            let item = read_item(&src, &self.layout, self.pos, &keep, &mut self.buf);
            match item.map_err(|e| self.explain(e))? {
                Item::Pad { next } => self.pos = next,
                Item::Tx { record, next } => {
                    if keep(&record.dest) {
                        out.push(record);
                    }
                    self.pos = next;
                }
            }
        }
        if self.pos != start {
            let line = self.layout.line(self.consumer) as u64;
            self.mem.write(self.region, line, &self.pos.to_le_bytes())?;
        }
        Ok(out)
    }

    /// As [`RingReader::poll`], waiting up to `timeout` for a record: polling for `spin`,
    /// then asleep on our partition's doorbell (a futex on one host, a slower poll
    /// elsewhere). An empty result means the time ran out.
    pub fn wait(
        &mut self,
        max: usize,
        spin: Duration,
        timeout: Duration,
    ) -> RingResult<Vec<Record>> {
        let start = Instant::now();
        loop {
            let got = self.poll(max)?;
            if !got.is_empty() {
                self.idle = 0;
                return Ok(got);
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Ok(got);
            }
            if waited < spin {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                continue;
            }
            match self.bell.clone() {
                Some(map) => {
                    let door = Doorbell::new(&map.words()[self.layout.bell(self.partition) / 8]);
                    // Counted in before the last look: a record published after it rings us.
                    let sleeper = door.prepare();
                    let got = self.poll(max)?;
                    if !got.is_empty() {
                        return Ok(got);
                    }
                    sleeper.sleep((timeout - waited).min(Duration::from_millis(50)));
                }
                None => pause(&mut self.idle, timeout - waited),
            }
        }
    }
}

/// Polls without a doorbell (a reader over `tcp`/`verbs`: every look is a round trip to the
/// producer's server) backing off: spins, yields, sleeps of 50 µs, then, once its partition has
/// been idle for a few thousand looks (some 150 ms), of 1 ms, so an idle reader costs the
/// producer's server about a thousand reads a second, not tens of thousands.
fn pause(idle: &mut u32, limit: Duration) {
    *idle = idle.saturating_add(1);
    match *idle {
        0..64 => std::hint::spin_loop(),
        64..256 => std::thread::yield_now(),
        256..2048 => std::thread::sleep(Duration::from_micros(50).min(limit)),
        _ => std::thread::sleep(Duration::from_millis(1).min(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_bounded_and_records_aligned() {
        let l = RingLayout::new(2, 3, 5000).unwrap();
        assert_eq!(l.capacity, 5024);
        assert_eq!(l.consumers(), 6);
        assert_eq!(l.data() % PAGE, 0);
        assert_eq!(record_bytes(1, 0), 64);
        assert_eq!(record_bytes(2, 24), 64);
        assert_eq!(record_bytes(2, 25), 96);
        assert_eq!(
            RingLayout::new(2, 3, 100).unwrap_err().to_string(),
            "bad ring layout: the ring must hold 4096 to 1073741824 bytes, got 100"
        );
    }
}
