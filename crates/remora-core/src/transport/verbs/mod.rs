//! RDMA through rdma-core's verbs (InfiniBand, RoCE, soft-RoCE/rxe): a peer copies slots out
//! of the owner's registered memory with RDMA READ and writes remote-writable regions with
//! RDMA WRITE; the owner's CPU takes no part in either. libibverbs is loaded at run time
//! ([`ffi`]), so without rdma-core or a device, [`VerbsTransport::new`] and
//! [`VerbsServer::start`] fail with [`Error::NoRdma`] and nothing else changes.
//!
//! Set-up rides on the tcp transport's authenticated connection (its HMAC handshake): the
//! owner runs a [`TcpServer`] extended with two requests, and a peer sends them only after
//! the handshake, so queue pairs and remote keys go to cluster members only.
//!
//! * `OP_CONNECT` (16): the peer's endpoint (qpn, psn, lid, gid, mtu) → the owner's, for a
//!   reliable-connection queue pair the owner creates for this connection and destroys when
//!   the connection ends;
//! * `OP_REGION` (17): `region u32` → `addr u64, len u64, rkey u32, writable u8`: the owner
//!   registers the region on first request (REMOTE_READ; REMOTE_WRITE too when the region is
//!   remote-writable, so the device itself refuses other writes).
//!
//! Lookups and region headers use the same connection's tcp requests. Every RDMA operation is
//! bounds-checked by the peer before it is posted and by the device against the registration.

pub mod ffi;

use super::tcp::{ConnExtension, Extension, TcpPeer, TcpServer, TcpTransport, DEFAULT_TIMEOUT};
use super::{RemoteMemory, Transport};
use crate::control::{check_secret, Cursor};
use crate::error::{Error, IoContext, Result};
use crate::region::{AttachedRegions, Region, RegionInfo};
use crate::store::{Addr, Store};
use ffi::{Device, Endpoint, Mr, Qp, Wc};
use memmap2::MmapMut;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use ffi::probe;

const OP_CONNECT: u8 = 16;
const OP_REGION: u8 = 17;
/// Work requests a peer's queue pair may have outstanding.
const DEPTH: u32 = 16;
/// A peer's registered staging buffer: RDMA moves bytes between registered memory only, and
/// registering each caller's buffer would cost more than the copy. Holds the largest slot.
const BOUNCE_BYTES: usize = 4 << 20;
/// How often a peer waiting on a completion checks that the owner still serves it.
const LIVENESS_CHECK: Duration = Duration::from_millis(50);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Owner side.

/// A region registered with the device. The registration goes first: it must be dropped
/// before the mapping it covers.
struct Registered {
    mr: Mr,
    region: Arc<Region>,
}

struct OwnerInner {
    dev: Arc<Device>,
    name: String,
    regions: AttachedRegions,
    registered: Mutex<HashMap<u32, Arc<Registered>>>,
}

impl OwnerInner {
    fn register(&self, id: u32) -> Result<Arc<Registered>> {
        let mut map = lock(&self.registered);
        if let Some(r) = map.get(&id) {
            return Ok(r.clone());
        }
        let region = self.regions.get(id).map_err(|e| match e {
            Error::NoRegion { region, .. } => Error::NoRegion {
                store: self.name.clone(),
                region,
            },
            e => e,
        })?;
        let access = if region.info.writable {
            ffi::ACCESS_REMOTE_READ | ffi::ACCESS_REMOTE_WRITE | ffi::ACCESS_LOCAL_WRITE
        } else {
            ffi::ACCESS_REMOTE_READ
        };
        // SAFETY: the mapping is `info.bytes` long and read-write (`AttachedRegions::owner`);
        // `Registered` drops the registration before the mapping.
        let mr =
            unsafe { Mr::register(&self.dev, region.as_mut_ptr(), region.info.bytes, access) }?;
        let r = Arc::new(Registered { mr, region });
        map.insert(id, r.clone());
        Ok(r)
    }
}

struct Owner(Arc<OwnerInner>);

impl Extension for Owner {
    fn open(&self, _peer: &str) -> Box<dyn ConnExtension> {
        Box::new(OwnerConn {
            inner: self.0.clone(),
            qp: None,
        })
    }
}

struct OwnerConn {
    inner: Arc<OwnerInner>,
    /// This connection's queue pair: destroyed with the connection, so a peer that leaves
    /// (or is cut off) loses its RDMA access too.
    qp: Option<Qp>,
}

impl ConnExtension for OwnerConn {
    fn answer(&mut self, op: u8, body: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let mut c = Cursor::new(body, "verbs peer");
        match op {
            OP_CONNECT => {
                let remote = Endpoint::decode(&mut c)?;
                c.end()?;
                self.qp = None;
                let mut qp = Qp::create(&self.inner.dev, 1)?;
                qp.connect(&remote, ffi::ACCESS_REMOTE_READ | ffi::ACCESS_REMOTE_WRITE)?;
                qp.local.encode(out);
                self.qp = Some(qp);
            }
            OP_REGION => {
                let id = c.u32()?;
                c.end()?;
                let r = self.inner.register(id)?;
                out.extend_from_slice(&r.mr.addr.to_le_bytes());
                out.extend_from_slice(&(r.mr.len as u64).to_le_bytes());
                out.extend_from_slice(&r.mr.rkey.to_le_bytes());
                out.push(u8::from(r.region.info.writable));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Serves one store over RDMA: a [`TcpServer`] (lookups, headers, and the RDMA set-up) whose
/// peers then read and write the registered regions directly. Dropping it ends every
/// connection, destroys their queue pairs and deregisters the regions.
pub struct VerbsServer {
    tcp: TcpServer,
    device: String,
}

impl VerbsServer {
    /// Opens the RDMA device and listens on `addr` for the set-up connections.
    pub fn start(store: &Arc<Store>, secret: &[u8], addr: SocketAddr) -> Result<Self> {
        check_secret(secret)?;
        let dev = Device::open()?;
        let device = dev.name.clone();
        let owner = Owner(Arc::new(OwnerInner {
            dev,
            name: store.name().to_string(),
            regions: AttachedRegions::owner(store.dir().to_path_buf()),
            registered: Mutex::default(),
        }));
        let tcp = TcpServer::start_with(store, secret, addr, Some(Arc::new(owner)))?;
        Ok(VerbsServer { tcp, device })
    }

    /// The address peers attach to.
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr()
    }

    /// The RDMA device serving the regions.
    pub fn device(&self) -> &str {
        &self.device
    }
}

// ---------------------------------------------------------------------------------------------
// Peer side.

/// Reaches peers' memory by RDMA; `attach` takes the `host:port` of a [`VerbsServer`].
pub struct VerbsTransport {
    dev: Arc<Device>,
    secret: Vec<u8>,
    timeout: Duration,
}

impl VerbsTransport {
    /// Opens the RDMA device; fails with [`Error::NoRdma`] when there is none (or no
    /// rdma-core).
    pub fn new(secret: &[u8]) -> Result<Self> {
        check_secret(secret)?;
        Ok(VerbsTransport {
            dev: Device::open()?,
            secret: secret.to_vec(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// How long to wait for a silent peer (set-up and each completion). Default
    /// [`DEFAULT_TIMEOUT`]; a dead peer usually shows sooner, as a failed completion.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The RDMA device in use.
    pub fn device(&self) -> &str {
        &self.dev.name
    }
}

impl Transport for VerbsTransport {
    type Peer = VerbsPeer;

    fn name(&self) -> &'static str {
        "verbs"
    }

    fn attach(&self, peer: &str) -> Result<VerbsPeer> {
        let p = VerbsPeer {
            name: format!("verbs peer {peer}"),
            addr: peer.to_string(),
            dev: self.dev.clone(),
            secret: self.secret.clone(),
            timeout: self.timeout,
            link: Mutex::new(None),
        };
        // Connect now, so a wrong address or secret shows at attach time.
        *lock(&p.link) = Some(p.open()?);
        Ok(p)
    }
}

/// Where a peer's region is, as its owner registered it.
#[derive(Clone, Copy)]
struct RemoteRegion {
    addr: u64,
    len: u64,
    rkey: u32,
    writable: bool,
}

/// The staging buffer; the registration is dropped before the memory.
struct Bounce {
    mr: Mr,
    mem: MmapMut,
}

/// One connection to a peer: the authenticated tcp side channel and the queue pair it set up.
struct Link {
    side: TcpPeer,
    qp: Qp,
    bounce: Bounce,
    regions: HashMap<u32, RemoteRegion>,
    next_wr: u64,
}

/// A peer's memory over one RDMA queue pair (requests from several threads take turns). A
/// link that fails is dropped; the next request sets up a new one.
pub struct VerbsPeer {
    name: String,
    addr: String,
    dev: Arc<Device>,
    secret: Vec<u8>,
    timeout: Duration,
    link: Mutex<Option<Link>>,
}

/// Errors after which the link is still good.
fn keeps_link(e: &Error) -> bool {
    matches!(
        e,
        Error::Remote { .. } | Error::OutOfBounds { .. } | Error::NotWritable { .. }
    )
}

impl VerbsPeer {
    fn open(&self) -> Result<Link> {
        let side = TcpTransport::new(&self.secret)?
            .with_timeout(self.timeout)
            .attach(&self.addr)?;
        let mut qp = Qp::create(&self.dev, DEPTH)?;
        let mut req = vec![OP_CONNECT];
        qp.local.encode(&mut req);
        let reply = side.call(&req)?;
        let mut c = Cursor::new(&reply, &self.name);
        let remote = Endpoint::decode(&mut c)?;
        c.end()?;
        // Our side accepts no remote access: peers only ever touch the owner's memory.
        qp.connect(&remote, 0)?;
        let mut mem =
            MmapMut::map_anon(BOUNCE_BYTES).ctx(|| "allocating the RDMA staging buffer".into())?;
        // SAFETY: `mem` stays mapped read-write for as long as `Bounce` holds the
        // registration, which it drops first.
        let mr = unsafe {
            Mr::register(
                &self.dev,
                mem.as_mut_ptr(),
                BOUNCE_BYTES,
                ffi::ACCESS_LOCAL_WRITE,
            )
        }?;
        Ok(Link {
            side,
            qp,
            bounce: Bounce { mr, mem },
            regions: HashMap::new(),
            next_wr: 1,
        })
    }

    /// Runs `f` on the link, setting one up first if needed; drops the link on failure.
    fn with_link<T>(&self, f: impl FnOnce(&mut Link, &Self) -> Result<T>) -> Result<T> {
        let mut guard = lock(&self.link);
        let link = match &mut *guard {
            Some(l) => l,
            None => guard.insert(self.open()?),
        };
        let r = f(link, self);
        if matches!(&r, Err(e) if !keeps_link(e)) {
            *guard = None;
        }
        r
    }

    fn gone(&self, why: String) -> Error {
        Error::PeerGone {
            peer: self.name.clone(),
            why,
        }
    }
}

impl Link {
    fn region(&mut self, id: u32, peer: &VerbsPeer) -> Result<RemoteRegion> {
        if let Some(r) = self.regions.get(&id) {
            return Ok(*r);
        }
        let mut req = vec![OP_REGION];
        req.extend_from_slice(&id.to_le_bytes());
        let reply = self.side.call(&req)?;
        let mut c = Cursor::new(&reply, &peer.name);
        let r = RemoteRegion {
            addr: c.u64()?,
            len: c.u64()?,
            rkey: c.u32()?,
            writable: c.u8()? == 1,
        };
        c.end()?;
        self.regions.insert(id, r);
        Ok(r)
    }

    /// Checks `[offset, offset + len)` against region `id` and returns its remote address.
    fn target(
        &mut self,
        id: u32,
        offset: u64,
        len: usize,
        write: bool,
        peer: &VerbsPeer,
    ) -> Result<(RemoteRegion, u64)> {
        let r = self.region(id, peer)?;
        let out = || Error::OutOfBounds {
            region: id,
            offset,
            len,
            size: usize::try_from(r.len).unwrap_or(usize::MAX),
        };
        let end = offset.checked_add(len as u64).ok_or_else(out)?;
        if end > r.len {
            return Err(out());
        }
        if write && !r.writable {
            return Err(Error::NotWritable { region: id });
        }
        // The owner's address plus an in-bounds end must not wrap (a sane owner never says so).
        match r.addr.checked_add(end) {
            Some(_) => Ok((r, r.addr + offset)),
            None => Err(Error::Frame {
                peer: peer.name.clone(),
                why: format!("region {id} registered at an impossible address"),
            }),
        }
    }

    /// One signaled RDMA op of `len` bytes between the start of the staging buffer and
    /// `remote`, waited for by polling (on this thread, in native code).
    fn transfer(
        &mut self,
        opcode: u32,
        r: RemoteRegion,
        remote: u64,
        len: usize,
        peer: &VerbsPeer,
    ) -> Result<()> {
        let what = if opcode == ffi::WR_RDMA_READ {
            "READ"
        } else {
            "WRITE"
        };
        let wr_id = self.next_wr;
        self.next_wr += 1;
        let len32 = u32::try_from(len)
            .map_err(|_| Error::Verbs(format!("RDMA {what} of {len} bytes is too long")))?;
        self.qp
            .post(opcode, wr_id, &self.bounce.mr, len32, remote, r.rkey)?;
        let deadline = Instant::now() + peer.timeout;
        let mut wc = [Wc::default(); 4];
        let mut spins = 0u32;
        let mut next_liveness_check = Instant::now() + LIVENESS_CHECK;
        loop {
            let n = self.qp.poll(&mut wc)?;
            for c in &wc[..n] {
                if c.status != 0 {
                    return Err(peer.gone(format!(
                        "RDMA {what} of {len} bytes failed: {} (vendor error {:#x})",
                        ffi::status_text(c.status),
                        c.vendor_err
                    )));
                }
                if c.wr_id == wr_id {
                    return Ok(());
                }
            }
            spins = spins.wrapping_add(1);
            if spins < 256 {
                std::hint::spin_loop();
                continue;
            }
            // Poll without hogging the core: software RDMA (rxe) needs it to make progress.
            std::thread::yield_now();
            if !spins.is_multiple_of(64) {
                continue;
            }
            let now = Instant::now();
            if now > deadline {
                return Err(peer.gone(format!(
                    "no completion of an RDMA {what} within {:?}",
                    peer.timeout
                )));
            }
            // An owner that stops serving closes the side channel and destroys our queue
            // pair's partner; the device would only notice after its retries run out.
            if now >= next_liveness_check {
                next_liveness_check = now + LIVENESS_CHECK;
                if self.side.closed_by_peer() {
                    return Err(peer.gone(format!(
                        "the owner closed the connection during an RDMA {what}"
                    )));
                }
            }
        }
    }
}

impl RemoteMemory for VerbsPeer {
    fn peer(&self) -> &str {
        &self.name
    }

    fn region_info(&self, region: u32) -> Result<RegionInfo> {
        self.with_link(|l, _| l.side.region_info(region))
    }

    fn read(&self, region: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.with_link(|l, peer| {
            let (r, base) = l.target(region, offset, buf.len(), false, peer)?;
            let mut done = 0usize;
            for part in buf.chunks_mut(BOUNCE_BYTES) {
                l.transfer(ffi::WR_RDMA_READ, r, base + done as u64, part.len(), peer)?;
                part.copy_from_slice(&l.bounce.mem[..part.len()]);
                done += part.len();
            }
            Ok(())
        })
    }

    fn write(&self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        self.with_link(|l, peer| {
            let (r, base) = l.target(region, offset, data.len(), true, peer)?;
            let mut done = 0usize;
            for part in data.chunks(BOUNCE_BYTES) {
                l.bounce.mem[..part.len()].copy_from_slice(part);
                l.transfer(ffi::WR_RDMA_WRITE, r, base + done as u64, part.len(), peer)?;
                done += part.len();
            }
            Ok(())
        })
    }

    fn lookup(&self, ids: &[&[u8]]) -> Result<Vec<Option<Addr>>> {
        self.with_link(|l, _| l.side.lookup(ids))
    }
}
