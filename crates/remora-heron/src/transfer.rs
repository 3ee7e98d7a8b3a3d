//! State transfer (Heron, Algorithm 3) between the replicas of one partition, one-sided both
//! ways, served by a native thread while the replica keeps executing:
//!
//! - **Requests**: every replica owns a request region: a doorbell line, then one 64-byte line
//!   per replica of its partition holding that lagger's request (the entry encoding of
//!   coordination memory: `ts` = the lagger's last applied timestamp, `phase` = its request
//!   number) and its acknowledgement word (request number << 32 | chunks consumed). A lagger
//!   writes only its own line, then rings the doorbell.
//! - **Shipments**: every replica owns a landing region: a doorbell line, then one slot per
//!   server of its partition, of two lanes. A shipment is a byte stream (the server's objects,
//!   then a trailer: an end mark, the prefix shipped and the record count) cut into chunks of
//!   at most a lane, shipped as they are read from the store (short ones first); chunk `k`
//!   goes to lane `k % 2`, data first, header last (request number, chunk number, length,
//!   last-chunk flag, and an xxh3 of all of them and the data), then the server rings the
//!   lagger's doorbell. The server writes chunk `k` only once the lagger acknowledged chunk
//!   `k - 2`, so a lagger installs a chunk while the next one is read and lands, and any size
//!   transfers through a bounded slot. A torn, stale or malformed chunk never passes the
//!   check, and a trailer that is not the stream's end or miscounts refuses its chunk; a late
//!   server answering an earlier request writes only into its own slot, under an old request
//!   number. A waiting lagger watches its lane a while before it sleeps on its doorbell.
//! - **Consistency**: the replica publishes its applied prefix ([`Prefix`]: timestamp T,
//!   applied count, digest) after each transaction's writes. The server ships exactly the
//!   state as of the latest published T: for every object whose newest version is after the
//!   lagger's `since`, the newest version before T + 1, read from the store a batch at a time
//!   while execution writes newer versions. Dual versions keep that version readable until the
//!   object is written twice after T; such objects are collected by another pass, at the then
//!   latest prefix, over what changed since T, whose records follow the first pass's (see
//!   `collect`). The lagger installs each version at its own timestamp, skipping what it holds
//!   already, and resumes after the prefix the trailer names.
//!
//! - **Catch-up**: [`Transfer::begin_catch_up`] and [`Transfer::catch_up_until`] are the
//!   lagger's whole Algorithm 3 in one resumable call: peers in order (those whose coordination
//!   entries show the transaction executed first), request, wait, install, adopt and publish
//!   each longer prefix, next peer on failure; run with a budget on the caller's thread and
//!   resumed elsewhere when it runs out. Installing brings objects the lagger never had: each
//!   needs a new slot, whose pages would fault in one by one on first write, so every replica
//!   backs a reserve of free slots of the small classes ahead of time ([`Transfer::warm`]).
//!
//! Doorbells are futexes on the regions' files: a replica rings a peer through its own
//! mapping of that peer's region file ([`Transfer::ring_peers_in`]). Without it (transports
//! other than `shm`) waits poll: yields, then sleeps growing from 20 µs to [`POLL`].

use crate::doorbell::Doorbell;
use crate::entry::{decode, encode, Entry, ENTRY_BYTES};
use crate::error::{Error, Result};
use remora_core::region::{region_path, Region, REGION_HEADER_BYTES};
use remora_core::{RemoteMemory, Store, Transport};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A line: the doorbell's, a lagger's request line, a lane header.
const LINE: usize = 64;
/// Offset of a lagger's acknowledgement word in its request line.
const ACK_AT: usize = ENTRY_BYTES;
/// Lane header words: request number, chunk number, length, last flag, check.
const LANE_HEADER: usize = LINE;
/// A stream's trailer after its end mark: up-to timestamp, applied count, digest, record count.
const TRAILER: usize = 8 + 8 + 32 + 8;
/// Longest a wait sleeps between looks when no doorbell rings (a peer that cannot ring us).
pub const POLL: Duration = Duration::from_millis(10);
/// Objects read from the store per read-lock hold while collecting a shipment (and between
/// looks at whether a chunk is ready to ship).
const COLLECT_BATCH: usize = 16;
/// A shipment's first chunk at most; each next one may be twice as long, up to a lane: the
/// lagger starts installing soon, and later chunks amortise their round trips. A 64 KB
/// shipment goes in three chunks, each installed while the next is collected when the
/// server's thread and the lagger run on different cores (measured: 155 µs from request to
/// installed, against 180-240 when they share one, as one chunk always did).
const FIRST_CHUNK: usize = 16 << 10;
/// How long a lagger watches its landing lane for the next chunk before it sleeps on its
/// doorbell (see `spin_for_chunk`).
const SPIN: Duration = Duration::from_micros(250);
/// Capacity of the collecting and receiving buffers kept between shipments.
const KEEP_COLLECT_BYTES: usize = 4 << 20;
/// Collections restarted because objects were overwritten twice meanwhile, before giving up.
const COLLECT_ATTEMPTS: u32 = 64;
/// How long a server waits for a lagger to consume a chunk before giving that request up.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes at the head of each lane mapped and backed with memory ahead of the first shipment.
const PREFAULT_BYTES: usize = 1 << 20;
/// Free slots of each small size class whose pages a replica backs with memory ahead of any
/// catch-up ([`Transfer::warm`]): a lagger's shipment is mostly objects new to its store, and
/// a new slot's first write otherwise faults its pages in, one by one (about 2 µs a page on
/// tmpfs, three quarters of installing a 1 KB object). Bytes per class; a replica's own writes
/// use the same slots first, so this is a head start, not a guarantee.
pub const RESERVE_BYTES: usize = 256 << 10;
/// Classes whose reserve would hold fewer slots are left to fault in as they are used.
const RESERVE_MIN_SLOTS: usize = 16;
/// Pause between rounds of a catch-up's requests to every peer.
const ROUND_PAUSE: Duration = Duration::from_millis(1);
/// A deletion's value length in a shipped record.
const DELETED: u32 = u32::MAX;

/// A lagger's request as the server sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The lagger (a replica of this partition).
    pub replica: u32,
    pub number: u32,
    /// The lagger's last applied timestamp: it needs every object updated after it.
    pub since: u64,
}

/// Where the regions are and how large a landing slot is.
#[derive(Clone, Copy, Debug)]
pub struct TransferLayout {
    pub replicas: u32,
    /// Data bytes of one server's landing slot at one lagger (two lanes of half each): any
    /// shipment transfers through it, chunk by chunk.
    pub slot_bytes: usize,
}

impl TransferLayout {
    /// The largest chunk: half a slot.
    pub fn lane_bytes(&self) -> usize {
        self.slot_bytes.div_ceil(2)
    }
    fn lane_stride(&self) -> usize {
        LANE_HEADER + self.lane_bytes().next_multiple_of(LINE)
    }
    fn landing_bytes(&self) -> usize {
        LINE + self.replicas as usize * 2 * self.lane_stride()
    }
    fn request_bytes(&self) -> usize {
        LINE + self.replicas as usize * LINE
    }
    /// Where lane `lane % 2` of `server`'s slot starts in a landing region: its header line,
    /// then up to half the slot's bytes of data.
    pub fn lane_offset(&self, server: u32, lane: u64) -> u64 {
        let slot = server as usize * 2 * self.lane_stride();
        (REGION_HEADER_BYTES + LINE + slot + (lane % 2) as usize * self.lane_stride()) as u64
    }
}

fn request_offset(replica: u32) -> u64 {
    (REGION_HEADER_BYTES + LINE + replica as usize * LINE) as u64
}

const BELL_OFFSET: usize = REGION_HEADER_BYTES;

/// The prefix of the transaction sequence a replica applied: what a lagger adopts with the
/// state as of `ts`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefix {
    pub ts: u64,
    pub applied: u64,
    pub digest: [u8; 32],
}

/// A shipment installed at the lagger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The server's prefix: the lagger resumes after `prefix.ts`.
    pub prefix: Prefix,
    pub objects: u64,
    /// Stream bytes received (records and trailer).
    pub bytes: u64,
    pub chunks: u64,
}

/// How a wait for a shipment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    Installed(Installed),
    /// Nothing whole in time; the last chunk refused and why, if any was.
    TimedOut {
        rejected: Option<String>,
    },
}

/// A wait for one shipment, installing it as it lands ([`Transfer::start_receive`]).
pub struct Receiving {
    server: u32,
    number: u32,
    deadline: Instant,
    stream: Decoder,
    /// Chunks installed.
    seq: u64,
    /// The last chunk refused, and why.
    rejected: Option<String>,
}

/// A lagger's catch-up (Heron, Algorithm 3) under way: it asks the peers of its partition in
/// turn, those whose coordination entries show the transaction executed first, until one
/// ships a prefix covering it ([`Transfer::begin_catch_up`]).
pub struct CatchUp {
    ts: u64,
    why: String,
    /// The prefix the next request starts from: the lagger's, then the longest installed.
    at: u64,
    since: u64,
    deadline: Instant,
    timeout: Duration,
    per_peer: Duration,
    order: Vec<u32>,
    next: usize,
    current: Option<Receiving>,
    tried: Vec<String>,
    adopted: Option<Prefix>,
    objects: u64,
    bytes: u64,
    chunks: u64,
    /// When the first request went out.
    first_request: Option<Instant>,
}

/// A catch-up that reached a prefix covering its transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaughtUp {
    /// The peer whose shipment covered it.
    pub from: u32,
    /// The lagger's prefix when it began.
    pub since: u64,
    /// The prefix installed (and published): the lagger resumes after `prefix.ts`.
    pub prefix: Prefix,
    /// Over every shipment installed on the way.
    pub objects: u64,
    pub bytes: u64,
    pub chunks: u64,
    /// From the first request going out to the covering shipment installed: the transfer
    /// itself, without choosing the peers before it or what the caller does around the call.
    pub elapsed: Duration,
}

/// Peers to ask for a prefix covering `ts`, in order: from `me`'s right around the partition,
/// those whose entry (`entries[q]`, `None` when unknown or torn) shows `ts` executed first.
pub fn peer_order(me: u32, replicas: u32, ts: u64, entries: &[Option<Entry>]) -> Vec<u32> {
    let ring = (1..replicas).map(|k| (me + k) % replicas);
    let done = |q: &u32| {
        entries
            .get(*q as usize)
            .copied()
            .flatten()
            .is_some_and(|e| e.reached(ts, crate::entry::PHASE_EXECUTED))
    };
    let (mut first, rest): (Vec<u32>, Vec<u32>) = ring.partition(done);
    first.extend(rest);
    first
}

/// A request served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    pub request: Request,
    pub up_to: u64,
    pub objects: u64,
    pub bytes: u64,
    pub chunks: u64,
    /// Collections started (more than one when objects were overwritten twice meanwhile).
    pub attempts: u32,
}

fn chunk_check(number: u64, seq: u64, last: u64, data: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&number.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&(data.len() as u64).to_le_bytes());
    h.update(&last.to_le_bytes());
    h.update(data);
    h.digest()
}

fn word(bytes: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

fn ack_word(number: u32, consumed: u64) -> u64 {
    (u64::from(number) << 32) | consumed.min(u64::from(u32::MAX))
}

/// Polling without a doorbell (`tcp`, `verbs`: no peer can wake us): yields, then sleeps of
/// 20 µs for a while, then of [`POLL`]; so a request or chunk under way is seen within tens of
/// µs, and an idle serving thread costs one wake-up per `POLL`.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn pause(&mut self, limit: Duration) {
        self.0 = self.0.saturating_add(1);
        match self.0 {
            0..64 => std::thread::yield_now(),
            64..2048 => std::thread::sleep(Duration::from_micros(20).min(limit)),
            _ => std::thread::sleep(POLL.min(limit)),
        }
    }
}

/// A peer's memory once attached (again after a failed write).
type Attached<P> = Mutex<Option<Arc<P>>>;

struct Peer<P> {
    /// What the transport attaches to: a store name (`shm`) or an address (`tcp`), which a
    /// restarted peer may change ([`Transfer::reattach`]).
    name: Mutex<String>,
    mem: Attached<P>,
    /// Our own mappings of the peer's request region (we ask it) and landing region (we serve
    /// it), to ring their doorbells, with the inode of the file mapped: a restarted peer's new
    /// file is mapped anew.
    bells: [Mutex<Option<Mapped>>; 2],
}

impl<P> Peer<P> {
    fn name(&self) -> String {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A peer's region file as we mapped it, and that file's inode.
type Mapped = (Arc<Region>, u64);

/// Which of a peer's doorbells.
#[derive(Clone, Copy)]
enum Bell {
    Requests = 0,
    Landing = 1,
}

pub struct Transfer<T: Transport> {
    layout: TransferLayout,
    me: u32,
    store: Arc<Store>,
    requests: u32,
    landing: u32,
    /// Our own regions, mapped once more: read and slept on without the store's lock.
    own_requests: Region,
    own_landing: Region,
    transport: T,
    /// This partition's replicas, by replica index.
    peers: Vec<Peer<T::Peer>>,
    /// The cluster directory, when peers' region files can be mapped to ring them.
    ring_dir: Option<PathBuf>,
    /// Our coordination region in the store and the index of this partition's first entry:
    /// where a catch-up learns which peers executed what.
    coordination: Option<(u32, usize)>,
    prefix: Mutex<Prefix>,
    /// Tombstones before this were purged: state since an earlier point cannot be served.
    horizon: AtomicU64,
    /// Last request number taken from each lagger.
    taken: Mutex<Vec<u32>>,
    next_number: Mutex<u32>,
    served: AtomicU64,
    /// The serving side's stream buffer, reused (see [`Transfer::serve`]).
    collecting: Mutex<Vec<u8>>,
    /// The lagger's receive buffer, reused (see [`Transfer::start_receive`]).
    receiving: Mutex<Vec<u8>>,
    stop: AtomicBool,
}

impl<T: Transport> Transfer<T> {
    /// Adds the request region and then the landing region to `store` (their ids are
    /// [`Transfer::regions`]; every replica must create them at the same point so peers know
    /// the ids). `peers[q]` is the store name of replica `q` of this partition.
    pub fn create(
        store: Arc<Store>,
        transport: T,
        layout: TransferLayout,
        me: u32,
        peers: &[String],
    ) -> Result<Self> {
        if peers.len() != layout.replicas as usize || me >= layout.replicas {
            return Err(Error::BadLayout(format!(
                "replica {me} with {} peer names for {} replicas",
                peers.len(),
                layout.replicas
            )));
        }
        if layout.slot_bytes < 2 || layout.slot_bytes > 1 << 30 {
            return Err(Error::BadLayout(format!(
                "transfer slots must be 2 bytes to 1 GiB, got {}",
                layout.slot_bytes
            )));
        }
        let requests = store.add_shared_region(layout.request_bytes())?;
        let landing = store.add_shared_region(layout.landing_bytes())?;
        let own_requests = Region::attach(store.dir(), requests)?;
        let own_landing = Region::attach(store.dir(), landing)?;
        // Backs the head of every lane with memory now: a small shipment should not wait for
        // the file system to allocate the pages it lands in (a large one amortises them).
        for server in 0..layout.replicas {
            for lane in 0..2 {
                let len = layout.lane_stride().min(PREFAULT_BYTES);
                let zeros = vec![0u8; len];
                own_landing.write(layout.lane_offset(server, lane), &zeros)?;
            }
        }
        Ok(Transfer {
            layout,
            me,
            store,
            requests,
            landing,
            own_requests,
            own_landing,
            transport,
            peers: peers
                .iter()
                .map(|n| Peer {
                    name: Mutex::new(n.clone()),
                    mem: Mutex::new(None),
                    bells: [Mutex::new(None), Mutex::new(None)],
                })
                .collect(),
            ring_dir: None,
            coordination: None,
            prefix: Mutex::new(Prefix::default()),
            horizon: AtomicU64::new(0),
            taken: Mutex::new(vec![0; layout.replicas as usize]),
            next_number: Mutex::new(0),
            served: AtomicU64::new(0),
            collecting: Mutex::new(Vec::new()),
            receiving: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        })
    }

    /// Rings peers' doorbells through mappings of their region files in the cluster directory
    /// `dir` (peers on this host, as `shm` reaches them).
    pub fn ring_peers_in(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ring_dir = Some(dir.into());
        self
    }

    /// Numbers this incarnation's requests from after `start` (default 0: the first is 1). A
    /// server takes each lagger's request once, by number: a lagger that restarted and numbered
    /// from 1 again would have its first request ignored wherever the dead incarnation's last
    /// one was also 1, and lose a per-peer timeout there. A replica process starts from a value
    /// of its own (the clock and its pid), so incarnations do not repeat each other's numbers.
    pub fn numbering_from(self, start: u32) -> Self {
        *self.next_number.lock().unwrap_or_else(|e| e.into_inner()) = start;
        self
    }

    /// Orders the peers a catch-up asks by the coordination entries in region `region` of the
    /// store, this partition's starting at entry `first` (partition × replicas).
    pub fn with_coordination(mut self, region: u32, first: usize) -> Self {
        self.coordination = Some((region, first));
        self
    }

    /// This partition's coordination entries, by replica (`None` each when unknown or torn:
    /// the order is only a hint).
    fn partition_entries(&self) -> Vec<Option<Entry>> {
        let Some((region, first)) = self.coordination else {
            return Vec::new();
        };
        (0..self.layout.replicas as usize)
            .map(|q| {
                let index = first + q;
                let mut buf = [0u8; ENTRY_BYTES];
                // Laid out as the coordinator lays them: entries from the end of the header.
                let at = (REGION_HEADER_BYTES + index * ENTRY_BYTES) as u64;
                self.store.read_region(region, at, &mut buf).ok()?;
                decode(&buf, index)
            })
            .collect()
    }

    /// This replica's index in its partition.
    pub fn me(&self) -> u32 {
        self.me
    }

    /// Ids of (request region, landing region) in this store.
    pub fn regions(&self) -> (u32, u32) {
        (self.requests, self.landing)
    }

    /// Records the prefix this replica applied; call it after the prefix's writes are in the
    /// store. What the server ships is the state as of the latest one.
    pub fn publish(&self, prefix: Prefix) {
        *self.prefix.lock().unwrap_or_else(|e| e.into_inner()) = prefix;
    }

    fn published(&self) -> Prefix {
        *self.prefix.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares that tombstones before `ts` were purged from the store: a lagger behind that
    /// point cannot be served from here (it asks another peer).
    pub fn set_horizon(&self, ts: u64) {
        self.horizon.fetch_max(ts, Ordering::AcqRel);
    }

    /// Requests served to completion (every chunk written).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn peer(&self, q: u32) -> Result<&Peer<T::Peer>> {
        if q == self.me {
            return Err(Error::Transfer(
                "a replica does not transfer state to itself".into(),
            ));
        }
        self.peers
            .get(q as usize)
            .ok_or_else(|| Error::Transfer(format!("no replica {q} in this partition")))
    }

    fn write_peer(&self, q: u32, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        let peer = self.peer(q)?;
        let mut mem = peer.mem.lock().unwrap_or_else(|e| e.into_inner());
        let p = match mem.as_ref() {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(self.transport.attach(&peer.name())?);
                *mem = Some(p.clone());
                p
            }
        };
        let wrote = p.write(region, offset, data);
        if wrote.is_err() {
            // Gone, perhaps restarted: attach again next time.
            mem.take();
        }
        Ok(wrote?)
    }

    /// Maps `q`'s doorbell region to ring it later, unless the file mapped is still the one
    /// there (nothing when peers cannot be mapped, or this one cannot now: its waits then end
    /// by their timeouts). Says whether it mapped a file anew: what was written to `q` before
    /// may have gone to a dead incarnation.
    fn attach_bell(&self, q: u32, which: Bell) -> bool {
        let (Ok(peer), Some(dir)) = (self.peer(q), self.ring_dir.as_ref()) else {
            return false;
        };
        let region = match which {
            Bell::Requests => self.requests,
            Bell::Landing => self.landing,
        };
        let store_dir = dir.join(peer.name());
        let ino = std::fs::metadata(region_path(&store_dir, region))
            .ok()
            .map(|m| m.ino());
        let mut bell = peer.bells[which as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match (bell.as_ref(), ino) {
            (Some((_, mapped)), Some(ino)) if *mapped == ino => false,
            (_, Some(ino)) => {
                *bell = Region::attach(&store_dir, region)
                    .ok()
                    .map(|r| (Arc::new(r), ino));
                // A new file is a new incarnation of the peer (a restarted replica creates its
                // store afresh): what we attached before writes into the dead one's memory,
                // where nothing fails to tell us. Attach again on the next write.
                peer.mem.lock().unwrap_or_else(|e| e.into_inner()).take();
                true
            }
            (_, None) => {
                *bell = None;
                false
            }
        }
    }

    fn ring(&self, q: u32, which: Bell) {
        self.with_bell(q, which, |b| b.ring());
    }

    /// Calls `f` with `q`'s doorbell `which`, if it is mapped.
    fn with_bell(&self, q: u32, which: Bell, f: impl FnOnce(Doorbell<'_>)) {
        let Ok(peer) = self.peer(q) else { return };
        let bell = peer.bells[which as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(r, _)| r.clone());
        if let Some(region) = bell {
            if let Some(w) = region.words().get(BELL_OFFSET / 8) {
                f(Doorbell::new(w));
            }
        }
    }

    /// Attaches to every peer and maps its doorbells ahead of the first transfer, and makes
    /// room in the store for a catch-up's first new objects (see [`RESERVE_BYTES`]); best
    /// effort: what fails now is done when needed.
    pub fn warm(&self) {
        for q in (0..self.layout.replicas).filter(|&q| q != self.me) {
            // Bells first: mapping one drops what was attached before (see `attach_bell`).
            // Each is read once, which maps its page into this process: the first ring, on a
            // catch-up's path, otherwise takes that fault (10-25 µs measured).
            for which in [Bell::Requests, Bell::Landing] {
                self.attach_bell(q, which);
                self.with_bell(q, which, |b| {
                    b.sleepers();
                });
            }
            if let Ok(peer) = self.peer(q) {
                let mut mem = peer.mem.lock().unwrap_or_else(|e| e.into_inner());
                if mem.is_none() {
                    *mem = self.transport.attach(&peer.name()).ok().map(Arc::new);
                }
                // The peer's request region, which a catch-up's request is the first to write,
                // is mapped (`shm`) or looked up now rather than then, and the page of our line
                // there is faulted in by reading it (a write would race with a catch-up under
                // way): the request found that fault on its path, 4–10 µs of the ~13 it took.
                if let Some(p) = mem.as_ref() {
                    let _ = p.region_info(self.requests);
                    let _ = p.read(self.requests, request_offset(self.me), &mut [0u8; 8]);
                }
            }
            // Maps the head of our lanes in the peer's landing region into this process (their
            // pages fault in now rather than under a shipment); zeros are no chunk of any
            // request.
            let zeros = vec![0u8; self.layout.lane_stride().min(PREFAULT_BYTES)];
            for lane in 0..2 {
                let at = self.layout.lane_offset(self.me, lane);
                let _ = self.write_peer(q, self.landing, at, &zeros);
            }
        }
        // Both buffers backed now: each would otherwise fault in under a shipment.
        let backed = |n: usize| {
            let mut buf = Vec::with_capacity(n);
            buf.resize(n, 1u8);
            buf.clear();
            buf
        };
        let n = (2 * self.layout.lane_bytes()).min(KEEP_COLLECT_BYTES);
        for b in [&self.collecting, &self.receiving] {
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            if b.capacity() < n {
                *b = backed(n);
            }
        }
        // Last: peers may need us attached sooner than we need the room.
        for class in 0..remora_core::slot::SIZE_CLASSES {
            let slots = RESERVE_BYTES / remora_core::slot::slot_bytes(class);
            if slots >= RESERVE_MIN_SLOTS {
                let len = remora_core::slot::class_capacity(class);
                let _ = self.store.prepare_slots(len, slots);
            }
        }
    }

    /// Replica `q` restarted: drops what was attached (it may write into the dead
    /// incarnation's memory) and attaches next time, at `address` when given (`tcp`: its new
    /// server). On `shm` a new region file is noticed by itself (see `attach_bell`); this makes
    /// it certain, and is how a new address is learnt.
    pub fn reattach(&self, q: u32, address: Option<&str>) -> Result<()> {
        let peer = self.peer(q)?;
        let mut mem = peer.mem.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = address {
            *peer.name.lock().unwrap_or_else(|e| e.into_inner()) = a.to_string();
        }
        mem.take();
        Ok(())
    }

    /// Waits for a peer's next move, at most `limit`: asleep on our doorbell when peers ring it
    /// (`sleeper`, counted in before the caller's last look), polling when they cannot.
    fn pause(&self, sleeper: crate::doorbell::Sleeper<'_>, idle: &mut Backoff, limit: Duration) {
        if self.ring_dir.is_some() {
            sleeper.sleep(limit);
        } else {
            drop(sleeper);
            idle.pause(limit);
        }
    }

    fn own_bell(region: &Region) -> Result<Doorbell<'_>> {
        let w = region
            .words()
            .get(BELL_OFFSET / 8)
            .ok_or_else(|| Error::BadLayout("transfer region without a doorbell".into()))?;
        Ok(Doorbell::new(w))
    }

    // ----- the lagger's side -----

    /// Asks replica `server` for the state as of its latest prefix, every object updated after
    /// `since`; returns the request number to [`Transfer::receive`] with.
    pub fn request(&self, server: u32, since: u64) -> Result<u32> {
        self.peer(server)?;
        let number = {
            let mut n = self.next_number.lock().unwrap_or_else(|e| e.into_inner());
            *n = n.wrapping_add(1).max(1);
            *n
        };
        let bytes = encode(
            Entry {
                ts: since,
                phase: number,
            },
            self.me as usize,
        );
        // Requests sit in the server's request region, which has the same id as ours.
        let at = request_offset(self.me);
        let sent = self.write_peer(server, self.requests, at, &bytes);
        if sent.is_ok() {
            self.ring(server, Bell::Requests);
        }
        // Whether the server restarted (a new region file) is looked at once the request is
        // under way, not before: a request that went to a dead incarnation, or failed, is
        // written again into what is there now (a number is taken once, so twice is harmless).
        if self.attach_bell(server, Bell::Requests) || sent.is_err() {
            self.write_peer(server, self.requests, at, &bytes)?;
            self.ring(server, Bell::Requests);
        }
        Ok(number)
    }

    /// Waits for `server`'s shipment answering request `number` and installs it chunk by
    /// chunk into the store; [`Received::TimedOut`] if it is not whole within `timeout`.
    /// Objects of a shipment not received whole stay installed: they are versions at or before
    /// the server's prefix, which a later shipment overwrites or repeats (and repeats are
    /// skipped).
    pub fn receive(&self, server: u32, number: u32, timeout: Duration) -> Result<Received> {
        let mut r = self.start_receive(server, number, timeout)?;
        let deadline = r.deadline;
        loop {
            if let Some(got) = self.receive_until(&mut r, deadline)? {
                return Ok(got);
            }
        }
    }

    /// A wait for `server`'s shipment answering request `number`, to go on with
    /// [`Transfer::receive_until`]; it times out `timeout` from now.
    pub fn start_receive(&self, server: u32, number: u32, timeout: Duration) -> Result<Receiving> {
        self.peer(server)?;
        let mut pending =
            std::mem::take(&mut *self.receiving.lock().unwrap_or_else(|e| e.into_inner()));
        pending.clear();
        Ok(Receiving {
            server,
            number,
            deadline: Instant::now() + timeout,
            stream: Decoder {
                pending,
                ..Decoder::default()
            },
            seq: 0,
            rejected: None,
        })
    }

    /// Goes on with the wait `r` (installing chunks as they land) until it ends or `until`
    /// passes: `None` when `until` came first and the wait's own deadline has not passed.
    pub fn receive_until(&self, r: &mut Receiving, until: Instant) -> Result<Option<Received>> {
        let (server, number) = (r.server, r.number);
        let bell = Self::own_bell(&self.own_landing)?;
        let until = until.min(r.deadline);
        let mut idle = Backoff::default();
        let mut spin_until = Instant::now() + SPIN;
        loop {
            let sleeper = bell.prepare();
            match self.read_chunk(server, number, r.seq, &mut r.stream.pending) {
                Ok(Some(last)) => {
                    drop(sleeper);
                    let seq = r.seq;
                    let records = r
                        .stream
                        .feed(last)
                        .map_err(|why| malformed(server, number, seq, &why))?;
                    r.seq += 1;
                    // The chunk is copied out and checked: the server may reuse its lane while
                    // this one installs. Nobody waits on the last one's acknowledgement, so it
                    // rings no one.
                    self.write_peer(
                        server,
                        self.requests,
                        request_offset(self.me) + ACK_AT as u64,
                        &ack_word(number, r.seq).to_le_bytes(),
                    )?;
                    if !last {
                        self.ring(server, Bell::Requests);
                    }
                    let stream = &r.stream;
                    let at = |range: &std::ops::Range<usize>| &stream.pending[range.clone()];
                    let puts: Vec<_> = records
                        .iter()
                        .map(|rec| (at(&rec.id), rec.value.as_ref().map(at), rec.ts))
                        .collect();
                    self.store.install(&puts)?;
                    r.stream.consumed();
                    idle = Backoff::default();
                    spin_until = Instant::now() + SPIN;
                    if last {
                        let prefix = r
                            .stream
                            .prefix
                            .ok_or_else(|| malformed(server, number, seq, "no trailer"))?;
                        self.recycle(&mut r.stream.pending);
                        return Ok(Some(Received::Installed(Installed {
                            prefix,
                            objects: r.stream.objects,
                            bytes: r.stream.bytes,
                            chunks: r.seq,
                        })));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(why) => r.rejected = Some(why),
            }
            let now = Instant::now();
            if now >= r.deadline {
                self.recycle(&mut r.stream.pending);
                return Ok(Some(Received::TimedOut {
                    rejected: r.rejected.take(),
                }));
            }
            if now >= until {
                return Ok(None);
            }
            if now < spin_until {
                // Nobody counted asleep: the server's ring costs it no system call.
                drop(sleeper);
                self.spin_for_chunk(server, number, r.seq, spin_until.min(until));
                continue;
            }
            self.pause(sleeper, &mut idle, until - now);
        }
    }

    /// Watches the header of chunk `seq`'s lane until it names request `number` and that chunk,
    /// or `until` passes. A lagger has nothing else to do, and a chunk under way lands within
    /// tens of µs: sooner seen here than by a wake-up from the doorbell. Yields between looks,
    /// so that a process waiting for this core (the server, perhaps) runs.
    fn spin_for_chunk(&self, server: u32, number: u32, seq: u64, until: Instant) {
        let at = self.layout.lane_offset(server, seq) as usize / 8;
        let words = self.own_landing.words();
        let (Some(n), Some(s)) = (words.get(at), words.get(at + 1)) else {
            return;
        };
        loop {
            if n.load(Ordering::Acquire) == u64::from(number) && s.load(Ordering::Acquire) == seq {
                return;
            }
            if Instant::now() >= until {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Keeps `buf` (emptied) for the next receive: its pages stay backed.
    fn recycle(&self, buf: &mut Vec<u8>) {
        let mut buf = std::mem::take(buf);
        buf.clear();
        buf.shrink_to(KEEP_COLLECT_BYTES);
        *self.receiving.lock().unwrap_or_else(|e| e.into_inner()) = buf;
    }

    /// A catch-up to a prefix covering `ts` from this replica's prefix `since`, to run with
    /// [`Transfer::catch_up_until`]: it fails when no peer shipped one within `timeout`, and
    /// asks the next peer when one shipped nothing whole within `per_peer`. `why` (the replica
    /// lagged because…) goes into its failure.
    pub fn begin_catch_up(
        &self,
        ts: u64,
        since: u64,
        why: &str,
        timeout: Duration,
        per_peer: Duration,
    ) -> CatchUp {
        CatchUp {
            ts,
            why: why.to_string(),
            at: since,
            since,
            deadline: Instant::now() + timeout,
            timeout,
            per_peer,
            order: Vec::new(),
            next: 0,
            current: None,
            tried: Vec::new(),
            adopted: None,
            objects: 0,
            bytes: 0,
            chunks: 0,
            first_request: None,
        }
    }

    /// Goes on with catch-up `c` until it ends or `until` passes (`None`: go on later). Each
    /// shipment is installed as it lands; one short of `c`'s transaction is still adopted and
    /// published (a longer prefix), and the next peer is asked. A peer that fails (refuses,
    /// ships something malformed, stays silent) is noted and the next one asked; fails once
    /// the catch-up's timeout passed with no covering shipment, naming what each peer did.
    pub fn catch_up_until(&self, c: &mut CatchUp, until: Instant) -> Result<Option<CaughtUp>> {
        loop {
            if let Some(r) = c.current.as_mut() {
                let server = r.server;
                let number = r.number;
                let got = match self.receive_until(r, until) {
                    Ok(None) => return Ok(None),
                    Ok(Some(got)) => got,
                    Err(e) => {
                        c.current = None;
                        c.tried.push(format!("{server}: {e}"));
                        continue;
                    }
                };
                c.current = None;
                let i = match got {
                    Received::Installed(i) => i,
                    Received::TimedOut { rejected } => {
                        c.tried.push(match rejected {
                            None => format!("{server}: no shipment in time"),
                            Some(why) => format!(
                                "{server}: no whole shipment for request {number} within {:?}: refused {why}",
                                c.per_peer
                            ),
                        });
                        continue;
                    }
                };
                c.objects += i.objects;
                c.bytes += i.bytes;
                c.chunks += i.chunks;
                // Installed already: the store holds the server's state as of its prefix, at
                // least as long as ours even when it does not reach `ts` yet.
                if i.prefix.ts > c.at {
                    c.at = i.prefix.ts;
                    c.adopted = Some(i.prefix);
                    self.publish(i.prefix);
                }
                if i.prefix.ts < c.ts {
                    c.tried
                        .push(format!("{server}: shipped only up to {}", i.prefix.ts));
                    continue;
                }
                return Ok(Some(CaughtUp {
                    from: server,
                    since: c.since,
                    prefix: c.adopted.unwrap_or(i.prefix),
                    objects: c.objects,
                    bytes: c.bytes,
                    chunks: c.chunks,
                    elapsed: c.first_request.map_or(Duration::ZERO, |t| t.elapsed()),
                }));
            }
            let now = Instant::now();
            if now >= c.deadline {
                return Err(Error::Transfer(format!(
                    "transaction {}: lagging ({}) and no peer shipped state within {:?} ({})",
                    c.ts,
                    c.why,
                    c.timeout,
                    c.tried.join("; ")
                )));
            }
            if now >= until {
                return Ok(None);
            }
            if c.next >= c.order.len() {
                if !c.order.is_empty() {
                    // Every peer was asked and none covered `ts`: a round that failed at once
                    // (peers unreachable) should not spin.
                    std::thread::sleep(ROUND_PAUSE.min(until - now));
                }
                c.order = peer_order(
                    self.me,
                    self.layout.replicas,
                    c.ts,
                    &self.partition_entries(),
                );
                c.next = 0;
                if c.order.is_empty() {
                    return Err(Error::Transfer(format!(
                        "transaction {}: lagging ({}) and no peer to ask for state",
                        c.ts, c.why
                    )));
                }
            }
            let server = c.order[c.next];
            c.next += 1;
            let per_peer = c.per_peer.min(c.deadline.saturating_duration_since(now));
            c.first_request.get_or_insert_with(Instant::now);
            match self
                .request(server, c.at)
                .and_then(|number| self.start_receive(server, number, per_peer))
            {
                Ok(r) => c.current = Some(r),
                Err(e) => c.tried.push(format!("{server}: {e}")),
            }
        }
    }

    /// Appends chunk `seq` of request `number` from `server`'s slot to `into` and says whether
    /// it is the last: `None` while it is not there, `Err` (why) for a chunk that claims to be it
    /// and fails the checks (`into` is then as it was).
    fn read_chunk(
        &self,
        server: u32,
        number: u32,
        seq: u64,
        into: &mut Vec<u8>,
    ) -> std::result::Result<Option<bool>, String> {
        let at = self.layout.lane_offset(server, seq);
        let mut header = [0u8; LANE_HEADER];
        self.own_landing
            .read(at, &mut header)
            .map_err(|e| e.to_string())?;
        let (n, s, len, last, check) = (
            word(&header, 0),
            word(&header, 1),
            word(&header, 2),
            word(&header, 3),
            word(&header, 4),
        );
        if n != u64::from(number) || s != seq {
            // Nothing yet, an earlier chunk in this lane, or another request's.
            return Ok(None);
        }
        let lane = self.layout.lane_bytes() as u64;
        if len > lane || last > 1 {
            return Err(format!(
                "chunk {seq}: length {len} over the lane's {lane} bytes, or bad last flag {last}"
            ));
        }
        let from = into.len();
        into.resize(from + len as usize, 0);
        let read = self
            .own_landing
            .read(at + LANE_HEADER as u64, &mut into[from..]);
        if let Err(e) = read {
            into.truncate(from);
            return Err(e.to_string());
        }
        if chunk_check(n, s, last, &into[from..]) != check {
            into.truncate(from);
            return Err(format!("chunk {seq}: check mismatch (torn or corrupt)"));
        }
        Ok(Some(last == 1))
    }

    // ----- the server's side -----

    /// Requests not taken yet, each taken once.
    pub fn take_requests(&self) -> Result<Vec<Request>> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for q in 0..self.layout.replicas {
            if q == self.me {
                continue;
            }
            let Some(e) = self.request_entry(q)? else {
                continue;
            };
            let last = &mut taken[q as usize];
            if e.phase != 0 && e.phase != *last {
                *last = e.phase;
                out.push(Request {
                    replica: q,
                    number: e.phase,
                    since: e.ts,
                });
            }
        }
        Ok(out)
    }

    /// What lagger `q` last asked for, taken or not (diagnostics): `None` when it never asked.
    pub fn request_of(&self, q: u32) -> Result<Option<Request>> {
        self.peer(q)?;
        Ok(self
            .request_entry(q)?
            .filter(|e| e.phase != 0)
            .map(|e| Request {
                replica: q,
                number: e.phase,
                since: e.ts,
            }))
    }

    /// `q`'s request entry; `None` while torn (being written: the next look takes it).
    fn request_entry(&self, q: u32) -> Result<Option<Entry>> {
        let mut buf = [0u8; ENTRY_BYTES];
        self.own_requests.read(request_offset(q), &mut buf)?;
        Ok(decode(&buf, q as usize))
    }

    /// Serves requests as they come until [`Transfer::stop`]: sleeps on the request doorbell,
    /// serves each request in turn, and reports failures (a lagger gone, a purged horizon)
    /// to `failed`; the lagger asks another peer.
    pub fn serve_forever(&self, failed: impl Fn(Request, Error)) -> Result<()> {
        let bell = Self::own_bell(&self.own_requests)?;
        let mut idle = Backoff::default();
        while !self.stop.load(Ordering::Acquire) {
            let sleeper = bell.prepare();
            let got = self.take_requests()?;
            if got.is_empty() {
                // Laggers that map our region ring us (the timeout is a safety net); others are
                // seen within a poll.
                self.pause(sleeper, &mut idle, Duration::from_millis(100));
                continue;
            }
            drop(sleeper);
            idle = Backoff::default();
            for r in got {
                if let Err(e) = self.serve(r) {
                    failed(r, e);
                }
            }
        }
        Ok(())
    }

    /// Ends [`Transfer::serve_forever`] (and a serve waiting for a lagger) soon.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Ok(b) = Self::own_bell(&self.own_requests) {
            b.ring();
        }
    }

    /// Ships the state as of the latest published prefix to `r.replica`, chunk by chunk as it
    /// is read from the store: the lagger installs one chunk while the next is collected, and
    /// the first chunks are short ([`FIRST_CHUNK`]) so that it starts early.
    pub fn serve(&self, r: Request) -> Result<Served> {
        self.peer(r.replica)?;
        let horizon = self.horizon.load(Ordering::Acquire);
        if r.since < horizon {
            return Err(Error::Transfer(format!(
                "cannot serve state since {}: its log starts at {horizon} (tombstones before it were purged)",
                r.since
            )));
        }
        let mut out =
            std::mem::take(&mut *self.collecting.lock().unwrap_or_else(|e| e.into_inner()));
        out.clear();
        let mut ship = Shipping {
            request: r,
            lane: self.layout.lane_bytes(),
            chunks: 0,
            bytes: 0,
        };
        let got = self
            .collect(r.since, &mut out, &mut |out| {
                self.ship(&mut ship, out, false)
            })
            .and_then(|got| {
                self.ship(&mut ship, &mut out, true)?;
                Ok(got)
            });
        // Kept for the next request, its pages backed: a fresh buffer faults in page by page.
        out.clear();
        out.shrink_to(KEEP_COLLECT_BYTES);
        *self.collecting.lock().unwrap_or_else(|e| e.into_inner()) = out;
        let (prefix, objects, attempts) = got?;
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(Served {
            request: r,
            up_to: prefix.ts,
            objects,
            bytes: ship.bytes,
            chunks: ship.chunks,
            attempts,
        })
    }

    /// Writes the chunks at the front of `out` to the lagger and drops them from `out`: whole
    /// ones only while collecting, everything (the last chunk flagged) when `last`.
    fn ship(&self, s: &mut Shipping, out: &mut Vec<u8>, last: bool) -> Result<()> {
        let mut at = 0;
        loop {
            let size = (FIRST_CHUNK << s.chunks.min(16)).min(s.lane);
            let left = out.len() - at;
            if !last && left < size {
                break;
            }
            let n = left.min(size);
            let end = last && n == left;
            if s.chunks >= 2 {
                // Its lane is free once the lagger consumed the chunk before the previous one.
                self.wait_ack(s.request, s.chunks - 1)?;
            }
            self.write_chunk(s.request, s.chunks, end, &out[at..at + n])?;
            s.chunks += 1;
            s.bytes += n as u64;
            at += n;
            if end {
                break;
            }
        }
        out.drain(..at);
        Ok(())
    }

    fn write_chunk(&self, r: Request, seq: u64, last: bool, data: &[u8]) -> Result<()> {
        let sent = self.put_chunk(r, seq, last, data);
        // Whether the lagger restarted (a new region file) is looked at once the first chunk
        // is under way, not before: the `stat` (5–20 µs) is off the first chunk's path. A
        // chunk that went to a dead incarnation, or failed, is written again into what is
        // there now (the same bytes: a lagger that read it already reads no chunk twice).
        if seq == 0 && (self.attach_bell(r.replica, Bell::Landing) || sent.is_err()) {
            return self.put_chunk(r, seq, last, data);
        }
        sent
    }

    fn put_chunk(&self, r: Request, seq: u64, last: bool, data: &[u8]) -> Result<()> {
        let at = self.layout.lane_offset(self.me, seq);
        let n = u64::from(r.number);
        let last = u64::from(last);
        self.write_peer(r.replica, self.landing, at + LANE_HEADER as u64, data)?;
        let mut header = [0u8; 40];
        for (i, w) in [
            n,
            seq,
            data.len() as u64,
            last,
            chunk_check(n, seq, last, data),
        ]
        .into_iter()
        .enumerate()
        {
            header[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        self.write_peer(r.replica, self.landing, at, &header)?;
        self.ring(r.replica, Bell::Landing);
        Ok(())
    }

    /// Waits until the lagger consumed `need` chunks of request `r`.
    fn wait_ack(&self, r: Request, need: u64) -> Result<()> {
        let bell = Self::own_bell(&self.own_requests)?;
        let at = request_offset(r.replica) as usize + ACK_AT;
        let ack = self
            .own_requests
            .words()
            .get(at / 8)
            .ok_or_else(|| Error::BadLayout("request region too small".into()))?;
        let start = Instant::now();
        let consumed = || {
            let a = ack.load(Ordering::Acquire);
            a >= ack_word(r.number, need) && a >> 32 == u64::from(r.number)
        };
        // The lagger consumes a chunk within tens of µs of its landing: watched for that long,
        // the acknowledgement is seen as it comes rather than a wake-up later.
        while start.elapsed() < SPIN {
            if consumed() {
                return Ok(());
            }
            std::thread::yield_now();
        }
        let mut idle = Backoff::default();
        loop {
            let sleeper = bell.prepare();
            if consumed() {
                return Ok(());
            }
            if self.stop.load(Ordering::Acquire) {
                return Err(Error::Transfer(format!(
                    "stopped while serving replica {}",
                    r.replica
                )));
            }
            if let Some(e) = self.request_entry(r.replica)? {
                if e.phase != r.number {
                    return Err(Error::Transfer(format!(
                        "replica {} replaced request {} by {} while it was served",
                        r.replica, r.number, e.phase
                    )));
                }
            }
            if start.elapsed() >= ACK_TIMEOUT {
                return Err(Error::Transfer(format!(
                    "replica {} consumed no chunk {need} of request {} within {ACK_TIMEOUT:?}",
                    r.replica, r.number
                )));
            }
            self.pause(sleeper, &mut idle, POLL);
        }
    }

    /// Appends the shipment stream as of the latest published prefix to `out`, handing it to
    /// `ship` after every batch read from the store: every object whose version as of the
    /// prefix is after `since`, then the trailer (prefix and record count). Objects
    /// overwritten twice since the prefix a pass began with are left for another pass, at the
    /// then latest prefix, over every object changed since the previous pass's prefix (so a
    /// pass is short, and passes converge however hot an object is). A later pass's record of
    /// an object is newer than an earlier one's, so installing the records in order leaves the
    /// state as of the last pass's prefix, which the trailer names. Returns that prefix, the
    /// records and the passes.
    fn collect(
        &self,
        since: u64,
        out: &mut Vec<u8>,
        ship: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>,
    ) -> Result<(Prefix, u64, u32)> {
        let mut prefix = self.published();
        let mut changed_after = since;
        let mut objects = 0;
        for attempt in 1..=COLLECT_ATTEMPTS {
            if attempt > 1 {
                let newer = self.published();
                if newer.ts == prefix.ts {
                    // Only our own install writes twice under one prefix: let it finish.
                    std::thread::yield_now();
                }
                prefix = newer;
            }
            let mut gone = Vec::new();
            if prefix.ts > since {
                let bound = prefix.ts.saturating_add(1);
                let ids = self.store.changed_since(changed_after);
                // A batch per read-lock hold: execution writes in between.
                for batch in ids.chunks(COLLECT_BATCH) {
                    objects += self.store.export_before(
                        batch,
                        since,
                        bound,
                        out,
                        record_head,
                        &mut gone,
                    )?;
                    ship(out)?;
                }
            }
            if gone.is_empty() {
                trailer(out, prefix, objects);
                return Ok((prefix, objects, attempt));
            }
            changed_after = prefix.ts;
        }
        Err(Error::Transfer(format!(
            "objects kept being overwritten twice while collecting state since {since} ({COLLECT_ATTEMPTS} attempts)"
        )))
    }
}

/// A shipment under way: the chunks written so far.
struct Shipping {
    request: Request,
    lane: usize,
    chunks: u64,
    bytes: u64,
}

/// Ends a stream: the end mark (an id length of 0, which no record has), then the prefix
/// shipped (timestamp, applied count, digest) and how many records came before.
fn trailer(out: &mut Vec<u8>, prefix: Prefix, objects: u64) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&prefix.ts.to_le_bytes());
    out.extend_from_slice(&prefix.applied.to_le_bytes());
    out.extend_from_slice(&prefix.digest);
    out.extend_from_slice(&objects.to_le_bytes());
}

fn malformed(server: u32, number: u32, seq: u64, why: &str) -> Error {
    Error::Transfer(format!(
        "malformed shipment from replica {server} (request {number}, chunk {seq}): {why}"
    ))
}

/// A record's header: id length (u16), id, timestamp (u64), value length (u32; all ones:
/// deleted); the value follows.
fn record_head(out: &mut Vec<u8>, id: &[u8], ts: u64, len: Option<usize>) {
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&len.map_or(DELETED, |l| l as u32).to_le_bytes());
}

/// A decoded record, as ranges of the decoder's buffer.
struct Record {
    id: std::ops::Range<usize>,
    ts: u64,
    value: Option<std::ops::Range<usize>>,
}

/// Decodes the stream as chunks arrive; a record may span chunks.
#[derive(Default)]
struct Decoder {
    /// Bytes received and not consumed yet: chunks are read straight into it.
    pending: Vec<u8>,
    /// Bytes of `pending` that the last `feed` saw (and decoded, up to `decoded`).
    seen: usize,
    decoded: usize,
    /// The trailer's prefix, once decoded.
    prefix: Option<Prefix>,
    /// Records decoded so far.
    objects: u64,
    bytes: u64,
}

impl Decoder {
    /// Decodes the whole records of `pending` once a chunk was appended to it; they stay in
    /// `pending` until [`Decoder::consumed`]. The records of a chunk that fails a check are
    /// not returned: a lying trailer refuses the chunk that holds it.
    fn feed(&mut self, last: bool) -> std::result::Result<Vec<Record>, String> {
        let new = self.pending.len().saturating_sub(self.seen);
        self.bytes = self.bytes.saturating_add(new as u64);
        self.seen = self.pending.len();
        let mut at = 0;
        let mut out = Vec::new();
        while self.prefix.is_none() {
            match decode_item(&self.pending[at..], at)? {
                None => break,
                Some((Item::Record(record), used)) => {
                    self.objects += 1;
                    out.push(record);
                    at += used;
                }
                Some((Item::End { prefix, records }, used)) => {
                    if records != self.objects {
                        return Err(format!(
                            "{} records shipped, the trailer says {records}",
                            self.objects
                        ));
                    }
                    self.prefix = Some(prefix);
                    at += used;
                }
            }
        }
        let stray = self.pending.len() - at;
        match (self.prefix.is_some(), last) {
            (true, true) if stray == 0 => {}
            (true, _) => {
                return Err(format!(
                    "the trailer is followed by {stray} bytes{}",
                    if last { "" } else { " and more chunks" }
                ))
            }
            (false, true) => {
                return Err(format!(
                    "ended without a trailer, after {} records and {stray} stray bytes",
                    self.objects
                ))
            }
            (false, false) => {}
        }
        self.decoded = at;
        Ok(out)
    }

    /// Drops what the last `feed` decoded, keeping a record's beginning.
    fn consumed(&mut self) {
        self.pending.drain(..self.decoded);
        self.decoded = 0;
        self.seen = self.pending.len();
    }
}

/// What a stream holds: records, then the trailer.
enum Item {
    Record(Record),
    End { prefix: Prefix, records: u64 },
}

/// One record or the trailer from the front of `b` (which starts at `base` of the buffer)
/// and its length; `None` while incomplete.
fn decode_item(b: &[u8], base: usize) -> std::result::Result<Option<(Item, usize)>, String> {
    let Some(len) = b.get(..2) else {
        return Ok(None);
    };
    let id_len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    if id_len == 0 {
        let Some(t) = b.get(2..2 + TRAILER) else {
            return Ok(None);
        };
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&t[16..48]);
        let prefix = Prefix {
            ts: word(t, 0),
            applied: word(t, 1),
            digest,
        };
        let records = word(t, 6);
        return Ok(Some((Item::End { prefix, records }, 2 + TRAILER)));
    }
    if id_len > remora_core::slot::MAX_ID_LEN {
        return Err(format!("id of {id_len} bytes"));
    }
    let head = 2 + id_len + 12;
    let Some(h) = b.get(..head) else {
        return Ok(None);
    };
    let id = base + 2..base + 2 + id_len;
    let ts = word(&h[2 + id_len..], 0);
    let mut v = [0u8; 4];
    v.copy_from_slice(&h[head - 4..]);
    let vlen = u32::from_le_bytes(v);
    if vlen == DELETED {
        let record = Record {
            id,
            ts,
            value: None,
        };
        return Ok(Some((Item::Record(record), head)));
    }
    let vlen = vlen as usize;
    if vlen > remora_core::slot::MAX_VALUE_LEN {
        return Err(format!("value of {vlen} bytes"));
    }
    if b.len() < head + vlen {
        return Ok(None);
    }
    let value = Some(base + head..base + head + vlen);
    Ok(Some((Item::Record(Record { id, ts, value }), head + vlen)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(out: &mut Vec<u8>, id: &[u8], ts: u64, value: Option<&[u8]>) {
        record_head(out, id, ts, value.map(<[u8]>::len));
        out.extend_from_slice(value.unwrap_or_default());
    }

    /// A decoded record copied out: id, timestamp, value.
    type Owned = (Vec<u8>, u64, Option<Vec<u8>>);

    /// Feeds `parts` as chunks; returns each record, copied out.
    fn decode(d: &mut Decoder, parts: &[&[u8]]) -> std::result::Result<Vec<Owned>, String> {
        let mut got = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            d.pending.extend_from_slice(part);
            for r in d.feed(i + 1 == parts.len())? {
                let at = |range: std::ops::Range<usize>| d.pending[range].to_vec();
                got.push((at(r.id), r.ts, r.value.map(at)));
            }
            d.consumed();
        }
        Ok(got)
    }

    #[test]
    fn peers_that_executed_the_transaction_are_asked_first_in_ring_order() {
        let e = |ts, phase| Some(Entry { ts, phase });
        let executed = crate::entry::PHASE_EXECUTED;
        // Replica 1 of 5: the ring is 2, 3, 4, 0; 3 and 0 executed 40 (0 went past it).
        let entries = [e(41, 1), None, e(40, 2), e(40, executed), None];
        assert_eq!(peer_order(1, 5, 40, &entries), vec![3, 0, 2, 4]);
        // Unknown entries (no coordination, or torn): the ring alone.
        assert_eq!(peer_order(1, 5, 40, &[]), vec![2, 3, 4, 0]);
        assert_eq!(peer_order(0, 1, 40, &[]), Vec::<u32>::new());
    }

    fn prefix() -> Prefix {
        Prefix {
            ts: 9,
            applied: 3,
            digest: [7; 32],
        }
    }

    #[test]
    fn records_decode_across_any_split() {
        let mut s = Vec::new();
        record(&mut s, b"a", 5, Some(b"hello"));
        record(&mut s, b"bb", 6, None);
        trailer(&mut s, prefix(), 2);
        for cut in 1..s.len() {
            let mut d = Decoder::default();
            let got = decode(&mut d, &[&s[..cut], &s[cut..]]).unwrap();
            assert_eq!(
                got,
                vec![
                    (b"a".to_vec(), 5, Some(b"hello".to_vec())),
                    (b"bb".to_vec(), 6, None)
                ],
                "cut {cut}"
            );
            assert_eq!(d.prefix, Some(prefix()));
            assert_eq!(d.bytes, s.len() as u64);
        }
        assert_eq!(
            decode(&mut Decoder::default(), &[&s[..s.len() - 1]])
                .err()
                .as_deref(),
            Some("ended without a trailer, after 2 records and 57 stray bytes")
        );
        let too_long = remora_core::slot::MAX_ID_LEN as u16 + 1;
        assert_eq!(
            decode(&mut Decoder::default(), &[&too_long.to_le_bytes(), b""]).err(),
            Some(format!("id of {too_long} bytes"))
        );
    }

    #[test]
    fn a_trailer_that_lies_or_is_not_the_end_refuses_its_chunk() {
        let mut one = Vec::new();
        record(&mut one, b"a", 5, Some(b"hello"));
        let with = |records: u64, after: &[u8]| {
            let mut s = one.clone();
            trailer(&mut s, prefix(), records);
            s.extend_from_slice(after);
            s
        };
        // A count that is not the records': the chunk holding it installs nothing.
        for records in [0, 2] {
            let mut d = Decoder {
                pending: with(records, b""),
                ..Decoder::default()
            };
            assert_eq!(
                d.feed(true).err(),
                Some(format!("1 records shipped, the trailer says {records}"))
            );
        }
        let mut d = Decoder {
            pending: with(1, b"x"),
            ..Decoder::default()
        };
        assert_eq!(
            d.feed(true).err().as_deref(),
            Some("the trailer is followed by 1 bytes")
        );
        let mut d = Decoder {
            pending: with(1, b""),
            ..Decoder::default()
        };
        assert_eq!(
            d.feed(false).err().as_deref(),
            Some("the trailer is followed by 0 bytes and more chunks")
        );
        // Records in one chunk, the trailer in the next: what came first is installed.
        let mut d = Decoder::default();
        let s = with(1, b"");
        let got = decode(&mut d, &[&s[..one.len()], &s[one.len()..]]).unwrap();
        assert_eq!(got, vec![(b"a".to_vec(), 5, Some(b"hello".to_vec()))]);
        assert_eq!((d.prefix, d.objects), (Some(prefix()), 1));
    }
}
