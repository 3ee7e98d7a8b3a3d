//! State transfer (Heron, Algorithm 3) between the replicas of one partition, one-sided both
//! ways:
//!
//! - **Requests**: every replica owns a request region with one 16-byte entry per replica of
//!   its partition (the entry encoding of coordination memory, `ts` = the lagger's last applied
//!   timestamp, `phase` = the lagger's request number). A lagger writes its entry into the
//!   region of the replica it asks; that replica is its entry's only writer.
//! - **Shipments**: every replica owns a landing region with one slot per replica of its
//!   partition. A server writes the shipment into its own slot of the lagger's landing region,
//!   data first, header last. The header carries the request number, the length and an xxh3 of
//!   (request number, length, data), so a lagger never accepts a torn or stale shipment, and a
//!   late server that was given up on writes only into its own slot.
//!
//! What a shipment holds is the caller's business (the replica's update log, encoded).

use crate::entry::{decode, encode, Entry, ENTRY_BYTES};
use crate::error::{Error, Result};
use remora_core::region::REGION_HEADER_BYTES;
use remora_core::{RemoteMemory, Store, Transport};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shipment header: request number (u64), data length (u64), check (u64).
const SHIPMENT_HEADER: usize = 24;

/// A lagger's request as the server sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The lagger (a replica of this partition).
    pub replica: u32,
    pub number: u32,
    /// The lagger's last applied timestamp: it needs every object updated after it.
    pub since: u64,
}

/// Where the regions are and how big a shipment may be.
#[derive(Clone, Copy, Debug)]
pub struct TransferLayout {
    pub replicas: u32,
    /// Largest shipment (data bytes) one server can land at one lagger.
    pub slot_bytes: usize,
}

impl TransferLayout {
    fn slot_stride(&self) -> usize {
        (SHIPMENT_HEADER + self.slot_bytes).next_multiple_of(64)
    }
    fn landing_bytes(&self) -> usize {
        self.replicas as usize * self.slot_stride()
    }
    fn request_bytes(&self) -> usize {
        self.replicas as usize * ENTRY_BYTES
    }
    fn slot_offset(&self, server: u32) -> u64 {
        (REGION_HEADER_BYTES + server as usize * self.slot_stride()) as u64
    }
}

fn request_offset(replica: u32) -> u64 {
    (REGION_HEADER_BYTES + replica as usize * ENTRY_BYTES) as u64
}

fn shipment_check(number: u64, data: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&number.to_le_bytes());
    h.update(&(data.len() as u64).to_le_bytes());
    h.update(data);
    h.digest()
}

fn word(bytes: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

/// A peer's memory once attached (again after a failed write).
type Attached<P> = Mutex<Option<Arc<P>>>;

pub struct Transfer<T: Transport> {
    layout: TransferLayout,
    me: u32,
    store: Arc<Store>,
    requests: u32,
    landing: u32,
    transport: T,
    /// Store names of this partition's replicas, by replica index, and attached peers.
    peers: Vec<(String, Attached<T::Peer>)>,
    /// Last request number taken from each lagger.
    taken: Mutex<Vec<u32>>,
    next_number: Mutex<u32>,
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
        if layout.slot_bytes == 0 || layout.slot_bytes > 1 << 30 {
            return Err(Error::BadLayout(format!(
                "shipment slots must be 1 byte to 1 GiB, got {}",
                layout.slot_bytes
            )));
        }
        let requests = store.add_shared_region(layout.request_bytes())?;
        let landing = store.add_shared_region(layout.landing_bytes())?;
        Ok(Transfer {
            layout,
            me,
            store,
            requests,
            landing,
            transport,
            peers: peers
                .iter()
                .map(|n| (n.clone(), Mutex::new(None)))
                .collect(),
            taken: Mutex::new(vec![0; layout.replicas as usize]),
            next_number: Mutex::new(0),
        })
    }

    /// Ids of (request region, landing region) in this store.
    pub fn regions(&self) -> (u32, u32) {
        (self.requests, self.landing)
    }

    fn write_peer(&self, q: u32, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        let (name, slot) = self
            .peers
            .get(q as usize)
            .ok_or_else(|| Error::BadRequest(format!("no replica {q} in this partition")))?;
        if q == self.me {
            return Err(Error::BadRequest(
                "a replica does not transfer state to itself".into(),
            ));
        }
        let mut mem = slot.lock().unwrap_or_else(|e| e.into_inner());
        let peer = match mem.as_ref() {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(self.transport.attach(name)?);
                *mem = Some(p.clone());
                p
            }
        };
        let wrote = peer.write(region, offset, data);
        if wrote.is_err() {
            // Gone, perhaps restarted: attach again next time.
            mem.take();
        }
        Ok(wrote?)
    }

    /// Asks replica `server` for every object updated after `since`; returns the request
    /// number to wait for with [`Transfer::wait_shipment`].
    pub fn request(&self, server: u32, since: u64) -> Result<u32> {
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
        self.write_peer(server, self.requests, request_offset(self.me), &bytes)?;
        Ok(number)
    }

    /// Requests not taken yet, each taken once.
    pub fn take_requests(&self) -> Result<Vec<Request>> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for q in 0..self.layout.replicas {
            if q == self.me {
                continue;
            }
            let mut buf = [0u8; ENTRY_BYTES];
            self.store
                .read_region(self.requests, request_offset(q), &mut buf)?;
            // A torn entry is being written right now: the next look takes it.
            let Some(e) = decode(&buf, q as usize) else {
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

    /// Waits until some request arrives or `timeout` passes (then an empty list).
    pub fn wait_requests(&self, timeout: Duration) -> Result<Vec<Request>> {
        let start = Instant::now();
        let mut idle = 0u32;
        loop {
            let got = self.take_requests()?;
            if !got.is_empty() || start.elapsed() >= timeout {
                return Ok(got);
            }
            pause(&mut idle);
        }
    }

    /// Lands `data` in our slot of `lagger`'s landing region, answering request `number`.
    pub fn ship(&self, lagger: u32, number: u32, data: &[u8]) -> Result<()> {
        if data.len() > self.layout.slot_bytes {
            return Err(Error::BadRequest(format!(
                "a shipment of {} bytes does not fit a slot of {} bytes: give the cluster larger transfer slots",
                data.len(),
                self.layout.slot_bytes
            )));
        }
        let offset = self.layout.slot_offset(self.me);
        self.write_peer(lagger, self.landing, offset + SHIPMENT_HEADER as u64, data)?;
        let n = u64::from(number);
        let mut header = [0u8; SHIPMENT_HEADER];
        header[..8].copy_from_slice(&n.to_le_bytes());
        header[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
        header[16..].copy_from_slice(&shipment_check(n, data).to_le_bytes());
        self.write_peer(lagger, self.landing, offset, &header)
    }

    /// The shipment `server` landed for request `number`, once whole; `None` after `timeout`.
    pub fn wait_shipment(
        &self,
        server: u32,
        number: u32,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>> {
        if server >= self.layout.replicas || server == self.me {
            return Err(Error::BadRequest(format!(
                "replica {server} cannot ship to replica {}",
                self.me
            )));
        }
        let offset = self.layout.slot_offset(server);
        let start = Instant::now();
        let mut idle = 0u32;
        let mut header = [0u8; SHIPMENT_HEADER];
        loop {
            self.store.read_region(self.landing, offset, &mut header)?;
            let (n, len) = (word(&header, 0), word(&header, 1));
            if n == u64::from(number) && len <= self.layout.slot_bytes as u64 {
                let mut data = vec![0u8; len as usize];
                self.store
                    .read_region(self.landing, offset + SHIPMENT_HEADER as u64, &mut data)?;
                if shipment_check(n, &data) == word(&header, 2) {
                    return Ok(Some(data));
                }
            }
            if start.elapsed() >= timeout {
                return Ok(None);
            }
            pause(&mut idle);
        }
    }
}

/// Requests and shipments are rare: after a short spin, poll every 50 µs growing to 1 ms, so
/// an idle replica costs its peers little CPU on a small host.
fn pause(idle: &mut u32) {
    *idle = idle.saturating_add(1);
    match *idle {
        0..64 => std::hint::spin_loop(),
        64..256 => std::thread::yield_now(),
        n => std::thread::sleep(Duration::from_micros(u64::from((n - 255).min(20)) * 50)),
    }
}
