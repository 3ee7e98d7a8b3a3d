//! TCP, for hosts without RDMA hardware: the owner runs a [`TcpServer`] whose native thread
//! copies bytes out of (and into) its registered regions on request, so a read still never
//! involves the owner's application thread. Peers copy slots with [`TcpPeer`] and validate
//! the copies exactly as they would copies delivered by RDMA (see `slot`).
//!
//! Every connection starts with the cluster's HMAC handshake (`handshake`), then carries
//! frames as the control channel does (little-endian `u32` length, payload of at most
//! [`MAX_FRAME`] bytes):
//!
//! * request: `[request id u64][op u8] body`
//!   - `OP_LOOKUP` (1): the control channel's lookup body, answered by the same code;
//!   - `OP_INFO` (2): `region u32` → the region's 64-byte header;
//!   - `OP_READ` (3): `region u32, offset u64, len u32` (len ≤ [`MAX_READ`]) → `len` bytes;
//!   - `OP_WRITE` (4): `region u32, offset u64` then the bytes (at most [`MAX_WRITE`]) → empty.
//! * reply: `[request id u64][0] body` or `[request id u64][1] utf-8 message`.
//!
//! The server answers a connection's requests in order, so a client may pipeline. A request
//! that parses but cannot be served (no such region, out of bounds, not writable, too long)
//! gets an error reply and the connection carries on; a frame that does not parse gets an
//! error reply when it has a request id and closes the connection. Connections are served by
//! the shared event loop (`server`): one thread per server, whatever the number of peers,
//! with the limits of [`ServerLimits`].

use super::{RemoteMemory, Transport};
use crate::control::{
    self, check_secret, decode_lookup, encode_lookup, read_frame_into, Cursor, MAX_FRAME,
    OP_LOOKUP, REPLY_ERR, REPLY_OK,
};
use crate::error::{Error, IoContext, Result};
use crate::handshake::{handshake_client_within, Timeouts};
use crate::region::{AttachedRegions, Region, RegionInfo};
use crate::server::{self, Flow, Listener, ServerLimits, ServerStats, Service};
use crate::store::{Addr, Store};
use std::io::{BufReader, Write};
use std::net::ToSocketAddrs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

const OP_INFO: u8 = 2;
const OP_READ: u8 = 3;
const OP_WRITE: u8 = 4;
/// `[request id u64][op u8]` / `[request id u64][status u8]`.
const HEADER: usize = 9;
/// Bytes of a region header that `OP_INFO` returns (what `RegionInfo::decode` parses).
const INFO_BYTES: usize = 64;
/// Most bytes one read request may ask for: its reply must fit in a frame. Larger reads
/// (a slot of the largest class is over 2 MiB) are split and pipelined by the client.
pub const MAX_READ: usize = MAX_FRAME - HEADER;
/// Most bytes one write request may carry, after its region and offset.
pub const MAX_WRITE: usize = MAX_FRAME - HEADER - 12;
/// Ids per lookup request: keeps a request (≤ 90 bytes per id) well inside a frame.
const LOOKUP_CHUNK: usize = 4096;
/// Requests a client sends ahead of the replies it has read. Read requests are tiny, so a
/// window this size never fills a socket buffer while the server blocks writing replies.
const WINDOW: usize = 32;
/// How long a client waits on a silent peer before reporting it gone.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a frame: length placeholder, request id, op or status byte.
fn start_frame(out: &mut Vec<u8>, id: u64, first: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_le_bytes());
    out.push(first);
    at
}

/// Fills in the length of the frame started at `at`.
fn finish_frame(out: &mut [u8], at: usize, peer: &str) -> Result<()> {
    let len = out.len() - at - 4;
    if len > MAX_FRAME {
        return Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        });
    }
    out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Owner side.

/// Why a request got an error reply: a malformed frame also ends the connection.
enum Fault {
    Malformed(Error),
    Bad(String),
}

impl From<Error> for Fault {
    fn from(e: Error) -> Self {
        match e {
            Error::Frame { .. } => Fault::Malformed(e),
            e => Fault::Bad(e.to_string()),
        }
    }
}

/// Requests beyond this transport's own, served on the same authenticated connections: the
/// verbs transport sets up its queue pairs and hands out remote keys this way, so only peers
/// that passed the handshake ever learn them.
pub(crate) trait Extension: Send + Sync {
    /// State for one connection, dropped when the connection ends.
    fn open(&self, peer: &str) -> Box<dyn ConnExtension>;
}

/// One connection's share of an [`Extension`].
pub(crate) trait ConnExtension: Send {
    /// Answers `op` (body after the op byte), appending the OK reply's body to `out`.
    /// `Ok(false)`: not an op this extension knows.
    fn answer(&mut self, op: u8, body: &[u8], out: &mut Vec<u8>) -> Result<bool>;
}

/// What every connection of one server shares.
struct Shared {
    store: Weak<Store>,
    name: String,
    /// The store's regions, mapped the way an `shm` peer maps them: read-only unless the
    /// region's header says remote-writable, so `Region::write` enforces writability here
    /// exactly as it does for `shm` peers. A region never changes size while its owner lives.
    regions: AttachedRegions,
    extension: Option<Arc<dyn Extension>>,
}

impl Shared {
    fn region(&self, id: u32) -> Result<Arc<Region>> {
        self.regions.get(id).map_err(|e| match e {
            // Name the store, not this host's directory layout.
            Error::NoRegion { region, .. } => Error::NoRegion {
                store: self.name.clone(),
                region,
            },
            e => e,
        })
    }

    /// Appends the reply body (status byte first) for `req` (`[op] body`) to `out`.
    fn answer(
        &self,
        store: &Store,
        req: &[u8],
        out: &mut Vec<u8>,
        peer: &str,
        ext: &mut Option<Box<dyn ConnExtension>>,
    ) -> Result<(), Fault> {
        let mut c = Cursor::new(req, peer);
        match c.u8()? {
            OP_LOOKUP => out.extend_from_slice(&control::answer(store, req, peer)?),
            OP_INFO => {
                let region = c.u32()?;
                c.end()?;
                let r = self.region(region)?;
                out.push(REPLY_OK);
                let at = out.len();
                out.resize(at + INFO_BYTES, 0);
                r.read(0, &mut out[at..])?;
            }
            OP_READ => {
                let (region, offset, len) = (c.u32()?, c.u64()?, c.u32()? as usize);
                c.end()?;
                if len > MAX_READ {
                    return Err(Fault::Bad(format!(
                        "read of {len} bytes exceeds the limit of {MAX_READ} per request"
                    )));
                }
                let r = self.region(region)?;
                out.push(REPLY_OK);
                let at = out.len();
                out.resize(at + len, 0);
                // Bounds are checked before anything is copied (`Region::check`).
                r.read(offset, &mut out[at..])?;
            }
            OP_WRITE => {
                let (region, offset) = (c.u32()?, c.u64()?);
                let data = c.take(req.len().saturating_sub(13))?;
                c.end()?;
                self.region(region)?.write(offset, data)?;
                out.push(REPLY_OK);
            }
            op => {
                if let Some(e) = &self.extension {
                    out.push(REPLY_OK);
                    let conn = ext.get_or_insert_with(|| e.open(peer));
                    if conn.answer(op, &req[1..], out)? {
                        return Ok(());
                    }
                }
                return Err(Fault::Malformed(Error::Frame {
                    peer: peer.to_string(),
                    why: format!("unknown command {op}"),
                }));
            }
        }
        Ok(())
    }
}

impl Service for Shared {
    /// The extension's state for this connection, opened on its first extension request.
    type Conn = Option<Box<dyn ConnExtension>>;

    fn open(&self, _peer: &str) -> Self::Conn {
        None
    }

    fn frame(&self, ext: &mut Self::Conn, req: &[u8], out: &mut Vec<u8>, peer: &str) -> Flow {
        let Some(store) = self.store.upgrade() else {
            return Flow::Close(None); // the owner is gone: so is its memory
        };
        let mut c = Cursor::new(req, peer);
        let id = match c.u64() {
            Ok(id) => id,
            Err(e) => return Flow::Close(Some(e)), // without an id there is nothing to reply to
        };
        let at = start_frame(out, id, REPLY_OK);
        out.pop(); // the status byte comes with the answer
        let fault = match self.answer(&store, &req[8..], out, peer, ext) {
            Ok(()) => None,
            Err(f) => {
                out.truncate(at + 4 + 8);
                out.push(REPLY_ERR);
                let message = match &f {
                    Fault::Malformed(e) => e.to_string(),
                    Fault::Bad(m) => m.clone(),
                };
                out.extend_from_slice(message.as_bytes());
                Some(f)
            }
        };
        drop(store);
        if finish_frame(out, at, peer).is_err() {
            // Only an error message could be this long: send a short one instead.
            out.truncate(at + 4 + 8);
            out.push(REPLY_ERR);
            out.extend_from_slice(b"error message too long");
            if let Err(e) = finish_frame(out, at, peer) {
                out.truncate(at);
                return Flow::Close(Some(e));
            }
        }
        match fault {
            Some(Fault::Malformed(e)) => Flow::Close(Some(e)),
            _ => Flow::Continue,
        }
    }
}

/// Serves one store's regions and lookups over TCP from one thread of its own, whatever the
/// number of connections (see `server`). Dropping it stops the listener and ends every
/// connection.
pub struct TcpServer {
    addr: SocketAddr,
    server: server::Handle,
}

impl TcpServer {
    /// Listens on `addr` (port 0 picks a free port: see [`TcpServer::local_addr`]).
    pub fn start(store: &Arc<Store>, secret: &[u8], addr: SocketAddr) -> Result<Self> {
        Self::launch(store, secret, addr, None, ServerLimits::default())
    }

    /// As [`TcpServer::start`], with other connection limits.
    pub fn start_limited(
        store: &Arc<Store>,
        secret: &[u8],
        addr: SocketAddr,
        limits: ServerLimits,
    ) -> Result<Self> {
        Self::launch(store, secret, addr, None, limits)
    }

    /// As [`TcpServer::start`], also serving `extension`'s requests.
    pub(crate) fn start_with(
        store: &Arc<Store>,
        secret: &[u8],
        addr: SocketAddr,
        extension: Option<Arc<dyn Extension>>,
    ) -> Result<Self> {
        Self::launch(store, secret, addr, extension, ServerLimits::default())
    }

    fn launch(
        store: &Arc<Store>,
        secret: &[u8],
        addr: SocketAddr,
        extension: Option<Arc<dyn Extension>>,
        limits: ServerLimits,
    ) -> Result<Self> {
        check_secret(secret)?;
        let listener = Listener::tcp(addr)?;
        let addr = listener.local_addr()?;
        let name = store.name().to_string();
        let shared = Shared {
            store: Arc::downgrade(store),
            name: name.clone(),
            regions: AttachedRegions::new(store.dir().to_path_buf()),
            extension,
        };
        let server = server::spawn(
            listener,
            shared,
            secret,
            limits,
            format!("remora-tcp-{name}"),
            ("tcp", name),
        )?;
        Ok(TcpServer { addr, server })
    }

    /// The address peers attach to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections and what became of them.
    pub fn stats(&self) -> ServerStats {
        self.server.stats()
    }
}

// ---------------------------------------------------------------------------------------------
// Peer side.

/// Reaches peers' memory over TCP; `attach` takes a `host:port` a [`TcpServer`] listens on.
pub struct TcpTransport {
    secret: Vec<u8>,
    timeout: Duration,
}

impl TcpTransport {
    /// `secret` authenticates us to peers (and them to us).
    pub fn new(secret: &[u8]) -> Result<Self> {
        check_secret(secret)?;
        Ok(TcpTransport {
            secret: secret.to_vec(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// How long to wait on a silent peer (connect, handshake, each reply) before reporting
    /// it gone. Default [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }
}

impl Transport for TcpTransport {
    type Peer = TcpPeer;

    fn name(&self) -> &'static str {
        "tcp"
    }

    fn attach(&self, peer: &str) -> Result<TcpPeer> {
        let name = format!("tcp peer {peer}");
        let addrs: Vec<SocketAddr> = peer
            .to_socket_addrs()
            .map_err(|e| Error::PeerGone {
                peer: name.clone(),
                why: format!("cannot resolve the address: {e}"),
            })?
            .collect();
        let p = TcpPeer {
            name,
            addrs,
            secret: self.secret.clone(),
            timeout: self.timeout,
            conn: Mutex::new(None),
        };
        // Connect now, so a wrong address or secret shows at attach time.
        *lock(&p.conn) = Some(p.connect()?);
        Ok(p)
    }
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_id: u64,
    /// Requests and the last reply, kept between batches: a read allocates nothing.
    out: Vec<u8>,
    reply: Vec<u8>,
}

/// Appends the op byte and body of request `i` of a batch.
type Make<'a> = dyn FnMut(usize, &mut Vec<u8>) + 'a;
/// Takes the body of the OK reply to request `i`.
type OnReply<'a> = dyn FnMut(usize, &[u8]) -> Result<()> + 'a;

impl Conn {
    /// Sends `n` requests (`make(i, out)` appends the op byte and body of request `i`),
    /// keeping at most [`WINDOW`] in flight, and hands each OK reply's body to `on_reply`.
    /// An error reply stops further sends; the replies already owed are drained so the
    /// connection stays usable, and the first error is returned as `Error::Remote`. Any
    /// other error leaves the connection in an unknown state: the caller drops it.
    fn batch(
        &mut self,
        n: usize,
        make: &mut Make,
        on_reply: &mut OnReply,
        peer: &str,
    ) -> Result<()> {
        let mut out = std::mem::take(&mut self.out);
        let r = self.exchange(&mut out, n, make, on_reply, peer);
        // A large write's buffer is not kept.
        if out.capacity() <= 1 << 20 {
            self.out = out;
        }
        r
    }

    fn exchange(
        &mut self,
        out: &mut Vec<u8>,
        n: usize,
        make: &mut Make,
        on_reply: &mut OnReply,
        peer: &str,
    ) -> Result<()> {
        let gone = |why: String| Error::PeerGone {
            peer: peer.to_string(),
            why,
        };
        let first = self.next_id;
        let (mut sent, mut got) = (0usize, 0usize);
        let mut failed: Option<Error> = None;
        loop {
            out.clear();
            while failed.is_none() && sent < n && sent - got < WINDOW {
                let at = start_frame(out, first + sent as u64, 0);
                out.pop(); // `make` writes the op byte
                make(sent, out);
                finish_frame(out, at, peer)?;
                sent += 1;
            }
            self.next_id = first + sent as u64;
            if !out.is_empty() {
                self.writer
                    .write_all(out)
                    .map_err(|e| gone(format!("sending a request: {e}")))?;
            }
            if got == sent {
                break;
            }
            let whole =
                read_frame_into(&mut self.reader, &mut self.reply, peer).map_err(|e| match e {
                    Error::Io { source, .. } => gone(format!("reading a reply: {source}")),
                    e => e,
                })?;
            if !whole {
                return Err(gone("the connection closed".into()));
            }
            match parse_reply(&self.reply, first + got as u64, peer)? {
                Ok(body) if failed.is_none() => on_reply(got, body)?,
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
            got += 1;
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Parses the reply frame `reply`, which must answer request `want`: the outer error is a
/// reply that does not parse (the connection is then unusable), the inner one the owner's
/// error reply.
fn parse_reply<'r>(reply: &'r [u8], want: u64, peer: &str) -> Result<Result<&'r [u8]>> {
    let mut c = Cursor::new(reply, peer);
    let (id, status) = (c.u64()?, c.u8()?);
    if id != want {
        return Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("reply to request {id}, expected {want}"),
        });
    }
    let body = &reply[HEADER..];
    match status {
        REPLY_OK => Ok(Ok(body)),
        REPLY_ERR => Ok(Err(Error::Remote {
            peer: peer.to_string(),
            message: String::from_utf8_lossy(body).into_owned(),
        })),
        s => Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("unknown reply status {s}"),
        }),
    }
}

/// A peer's memory over one TCP connection (requests from several threads take turns). A
/// connection that fails is dropped; the next request connects again.
pub struct TcpPeer {
    name: String,
    addrs: Vec<SocketAddr>,
    secret: Vec<u8>,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
}

/// Where one read chunk goes.
struct Chunk {
    region: u32,
    offset: u64,
    len: usize,
}

impl TcpPeer {
    fn connect(&self) -> Result<Conn> {
        let mut last = String::from("the address resolved to nothing");
        for addr in &self.addrs {
            let mut s = match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(s) => s,
                Err(e) => {
                    last = format!("{addr}: {e}");
                    continue;
                }
            };
            s.set_nodelay(true)
                .ctx(|| format!("configuring the connection to {}", self.name))?;
            // The whole handshake, not each read of it, gets the timeout: a peer answering a
            // byte at a time cannot hold us longer.
            handshake_client_within(&mut s, &self.secret, &self.name, self.timeout)?;
            s.set_timeouts(Some(self.timeout))
                .ctx(|| format!("configuring the connection to {}", self.name))?;
            let reader = BufReader::new(
                s.try_clone()
                    .ctx(|| format!("cloning the connection to {}", self.name))?,
            );
            return Ok(Conn {
                reader,
                writer: s,
                next_id: 0,
                out: Vec::new(),
                reply: Vec::new(),
            });
        }
        Err(Error::PeerGone {
            peer: self.name.clone(),
            why: last,
        })
    }

    /// Runs one batch on the connection, connecting first if the last one failed.
    fn batch(&self, n: usize, make: &mut Make, on_reply: &mut OnReply) -> Result<()> {
        let mut guard = lock(&self.conn);
        let conn = match &mut *guard {
            Some(c) => c,
            None => guard.insert(self.connect()?),
        };
        let r = conn.batch(n, make, on_reply, &self.name);
        if matches!(&r, Err(e) if !matches!(e, Error::Remote { .. })) {
            *guard = None;
        }
        r
    }

    /// Whether the server has closed this connection (checked without blocking). An owner
    /// that stops serving closes its connections, which a transport layered on this one can
    /// notice sooner than its own timeouts.
    pub(crate) fn closed_by_peer(&self) -> bool {
        let guard = lock(&self.conn);
        let Some(conn) = &*guard else {
            return true;
        };
        let s = &conn.writer;
        if s.set_nonblocking(true).is_err() {
            return false;
        }
        let closed =
            matches!(s.peek(&mut [0u8; 1]), Ok(0)) || matches!(s.take_error(), Ok(Some(_)));
        let _ = s.set_nonblocking(false);
        closed
    }

    /// Sends one request (`[op] body`) and returns the body of its OK reply.
    pub(crate) fn call(&self, req: &[u8]) -> Result<Vec<u8>> {
        let mut reply = Vec::new();
        self.batch(
            1,
            &mut |_, out| out.extend_from_slice(req),
            &mut |_, body| {
                reply = body.to_vec();
                Ok(())
            },
        )?;
        Ok(reply)
    }

    /// Copies several ranges in one pipelined batch: `(region, offset, buffer)` each. Either
    /// every buffer is filled or an error is returned.
    pub fn read_many(&self, reads: &mut [(u32, u64, &mut [u8])]) -> Result<()> {
        if let [(region, offset, buf)] = reads {
            if buf.len() <= MAX_READ {
                // The common case, one read in one request, without the bookkeeping below.
                return self.read_one(*region, *offset, buf);
            }
        }
        let mut chunks = Vec::new();
        let mut dests: Vec<&mut [u8]> = Vec::new();
        for (region, offset, buf) in reads.iter_mut() {
            let (region, offset, len) = (*region, *offset, buf.len());
            let out_of_bounds = || Error::OutOfBounds {
                region,
                offset,
                len,
                size: 0,
            };
            if buf.is_empty() {
                // Still asked, so an empty read is bounds-checked as it is by `shm`.
                chunks.push(Chunk {
                    region,
                    offset,
                    len: 0,
                });
                dests.push(&mut buf[..]);
                continue;
            }
            for (i, part) in buf.chunks_mut(MAX_READ).enumerate() {
                let at = offset
                    .checked_add((i * MAX_READ) as u64)
                    .ok_or_else(out_of_bounds)?;
                chunks.push(Chunk {
                    region,
                    offset: at,
                    len: part.len(),
                });
                dests.push(part);
            }
        }
        let peer = &self.name;
        self.batch(
            chunks.len(),
            &mut |i, out| {
                let c = &chunks[i];
                out.push(OP_READ);
                out.extend_from_slice(&c.region.to_le_bytes());
                out.extend_from_slice(&c.offset.to_le_bytes());
                out.extend_from_slice(&(c.len as u32).to_le_bytes());
            },
            &mut |i, body| {
                let dest = &mut dests[i];
                if body.len() != dest.len() {
                    return Err(Error::Frame {
                        peer: peer.clone(),
                        why: format!("asked for {} bytes, got {}", dest.len(), body.len()),
                    });
                }
                dest.copy_from_slice(body);
                Ok(())
            },
        )
    }
}

impl TcpPeer {
    fn read_one(&self, region: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let peer = &self.name;
        let len = buf.len() as u32;
        self.batch(
            1,
            &mut |_, out| {
                out.push(OP_READ);
                out.extend_from_slice(&region.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            },
            &mut |_, body| {
                if body.len() != buf.len() {
                    return Err(Error::Frame {
                        peer: peer.clone(),
                        why: format!("asked for {} bytes, got {}", buf.len(), body.len()),
                    });
                }
                buf.copy_from_slice(body);
                Ok(())
            },
        )
    }
}

fn expect_empty(body: &[u8], peer: &str) -> Result<()> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("{} unexpected bytes in a reply", body.len()),
        })
    }
}

impl RemoteMemory for TcpPeer {
    fn peer(&self) -> &str {
        &self.name
    }

    fn region_info(&self, region: u32) -> Result<RegionInfo> {
        let mut header = None;
        self.batch(
            1,
            &mut |_, out| {
                out.push(OP_INFO);
                out.extend_from_slice(&region.to_le_bytes());
            },
            &mut |_, body| {
                header = Some(body.to_vec());
                Ok(())
            },
        )?;
        let what = PathBuf::from(format!("{} region {region}", self.name));
        let info = RegionInfo::decode(&header.unwrap_or_default(), Path::new(&what))?;
        if info.id != region {
            return Err(Error::BadRegion {
                path: what,
                why: format!("header names region {}", info.id),
            });
        }
        Ok(info)
    }

    fn read(&self, region: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_many(&mut [(region, offset, buf)])
    }

    fn write(&self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        let parts: Vec<&[u8]> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(MAX_WRITE).collect()
        };
        let mut offsets = Vec::with_capacity(parts.len());
        for i in 0..parts.len() {
            offsets.push(offset.checked_add((i * MAX_WRITE) as u64).ok_or({
                Error::OutOfBounds {
                    region,
                    offset,
                    len: data.len(),
                    size: 0,
                }
            })?);
        }
        let peer = &self.name;
        self.batch(
            parts.len(),
            &mut |i, out| {
                out.push(OP_WRITE);
                out.extend_from_slice(&region.to_le_bytes());
                out.extend_from_slice(&offsets[i].to_le_bytes());
                out.extend_from_slice(parts[i]);
            },
            &mut |_, body| expect_empty(body, peer),
        )
    }

    fn lookup(&self, ids: &[&[u8]]) -> Result<Vec<Option<Addr>>> {
        let groups: Vec<&[&[u8]]> = ids.chunks(LOOKUP_CHUNK).collect();
        // Encoded up front so a bad id fails before anything is sent.
        let mut reqs = Vec::with_capacity(groups.len());
        for g in &groups {
            let mut req = vec![OP_LOOKUP];
            encode_lookup(&mut req, g)?;
            reqs.push(req);
        }
        let mut found = Vec::with_capacity(ids.len());
        let peer = &self.name;
        self.batch(
            reqs.len(),
            &mut |i, out| out.extend_from_slice(&reqs[i]),
            &mut |i, body| {
                found.extend(decode_lookup(body, groups[i].len(), peer)?);
                Ok(())
            },
        )?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::read_frame;
    use crate::store::StoreConfig;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// A store with objects in a few size classes and one remote-writable region (id 2), its
    /// regions served as a `TcpServer` serves them; removed with its directory.
    struct Fixture {
        store: Arc<Store>,
        shared: Shared,
        dir: PathBuf,
        writable: u32,
    }

    impl Fixture {
        fn new(test: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("remora-tcp-unit-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut cfg = StoreConfig::new(&dir, "unit");
            cfg.region_bytes = 64 * 1024;
            let store = Arc::new(Store::create(&cfg).unwrap());
            store.set(b"small", &[1; 40], 1).unwrap();
            store.set(b"large", &[2; 3000], 1).unwrap();
            let writable = store.add_shared_region(8192).unwrap();
            let shared = Shared {
                store: Arc::downgrade(&store),
                name: "unit".into(),
                regions: AttachedRegions::new(store.dir().to_path_buf()),
                extension: None,
            };
            Fixture {
                store,
                shared,
                dir,
                writable,
            }
        }

        /// Every byte of every region peers may not write.
        fn read_only_bytes(&self) -> Vec<u8> {
            let mut all = Vec::new();
            for id in 0..self.store.stats().regions as u32 {
                if id == self.writable {
                    continue;
                }
                let mut buf = vec![0u8; 64 * 1024];
                self.store.read_region(id, 0, &mut buf).unwrap();
                all.extend_from_slice(&buf);
            }
            all
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A well-formed request payload (request id first) of any op.
    fn request() -> impl Strategy<Value = Vec<u8>> {
        let region = prop_oneof![0u32..4, any::<u32>()];
        let offset = prop_oneof![0u64..70_000, any::<u64>()];
        let len = prop_oneof![0u32..5000, any::<u32>()];
        (
            any::<u64>(),
            0u8..6,
            region,
            offset,
            len,
            vec(any::<u8>(), 0..64),
        )
            .prop_map(|(id, op, region, offset, len, data)| {
                let mut r = id.to_le_bytes().to_vec();
                r.push(op);
                match op {
                    OP_LOOKUP => {
                        let ids: [&[u8]; 3] = [b"small", b"large", b"absent"];
                        encode_lookup(&mut r, &ids[..(len % 4) as usize]).unwrap();
                    }
                    OP_INFO => r.extend_from_slice(&region.to_le_bytes()),
                    OP_READ => {
                        r.extend_from_slice(&region.to_le_bytes());
                        r.extend_from_slice(&offset.to_le_bytes());
                        r.extend_from_slice(&len.to_le_bytes());
                    }
                    _ => {
                        r.extend_from_slice(&region.to_le_bytes());
                        r.extend_from_slice(&offset.to_le_bytes());
                        r.extend_from_slice(&data);
                    }
                }
                r
            })
    }

    /// A request damaged the way the fuzzer damages them.
    fn damaged() -> impl Strategy<Value = Vec<u8>> {
        (request(), any::<usize>(), any::<usize>(), 0u8..3).prop_map(|(mut r, a, b, how)| {
            match how {
                0 => {
                    let bit = a % (r.len() * 8);
                    r[bit / 8] ^= 1 << (bit % 8);
                }
                1 => r.truncate(a % r.len()),
                _ => r.extend(std::iter::repeat_n(b as u8, a % 9)),
            }
            r
        })
    }

    /// Runs `req` through the server's frame handler and checks what it sent: nothing when
    /// there is no request id (the connection just closes), otherwise exactly one reply frame
    /// for that id, which the client's parser accepts.
    fn serve_one(fx: &Fixture, req: &[u8]) -> std::result::Result<Vec<u8>, TestCaseError> {
        let mut out = Vec::new();
        let flow = fx.shared.frame(&mut None, req, &mut out, "fuzz");
        if req.len() < 8 {
            prop_assert!(out.is_empty());
            prop_assert!(matches!(flow, Flow::Close(Some(_))));
            return Ok(out);
        }
        let id = u64::from_le_bytes(req[..8].try_into().unwrap());
        let reply = read_frame(&mut &out[..], "fuzz").unwrap().unwrap();
        prop_assert_eq!(out.len(), 4 + reply.len());
        let parsed = parse_reply(&reply, id, "fuzz");
        prop_assert!(parsed.is_ok(), "{:?}", parsed);
        if matches!(flow, Flow::Close(_)) {
            prop_assert_eq!(
                reply[8],
                REPLY_ERR,
                "a connection closes after an error only"
            );
        }
        Ok(reply)
    }

    proptest! {
        #[test]
        fn parse_reply_never_panics(reply in vec(any::<u8>(), 0..40), want in any::<u64>()) {
            if let Ok(Ok(body)) = parse_reply(&reply, want, "fuzz") {
                prop_assert_eq!(body.len(), reply.len() - HEADER);
            }
        }

        #[test]
        fn replies_round_trip_and_damaged_ones_are_refused_or_valid(
            id in any::<u64>(), ok in any::<bool>(), body in vec(any::<u8>(), 0..100),
            bit in any::<usize>(), cut in any::<usize>(),
        ) {
            let mut out = Vec::new();
            let at = start_frame(&mut out, id, if ok { REPLY_OK } else { REPLY_ERR });
            out.extend_from_slice(&body);
            finish_frame(&mut out, at, "p").unwrap();
            let reply = read_frame(&mut &out[..], "p").unwrap().unwrap();
            match parse_reply(&reply, id, "p").unwrap() {
                Ok(got) => prop_assert!(ok && got == &body[..]),
                Err(Error::Remote { message, .. }) => {
                    prop_assert!(!ok);
                    prop_assert_eq!(message, String::from_utf8_lossy(&body));
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
            prop_assert!(parse_reply(&reply[..cut % HEADER], id, "p").is_err());
            let mut flipped = reply.clone();
            let bit = bit % (HEADER * 8);
            flipped[bit / 8] ^= 1 << (bit % 8);
            // A flipped id or status is refused; nothing else in the header to damage.
            prop_assert!(parse_reply(&flipped, id, "p").is_err() || flipped[8] <= REPLY_ERR);
        }
    }

    #[test]
    fn the_server_answers_arbitrary_frames_with_one_reply_or_a_close() {
        let fx = Fixture::new("arbitrary");
        let before = fx.read_only_bytes();
        proptest!(|(req in vec(any::<u8>(), 0..80))| {
            serve_one(&fx, &req)?;
        });
        assert!(fx.read_only_bytes() == before, "a read-only region changed");
    }

    #[test]
    fn damaged_requests_are_refused_or_served_and_never_write_read_only_memory() {
        let fx = Fixture::new("damaged");
        let before = fx.read_only_bytes();
        proptest!(|(req in damaged())| {
            serve_one(&fx, &req)?;
        });
        assert!(fx.read_only_bytes() == before, "a read-only region changed");
    }

    #[test]
    fn valid_requests_are_answered_exactly() {
        let fx = Fixture::new("valid");
        let before = fx.read_only_bytes();
        proptest!(|(req in request())| {
            let reply = serve_one(&fx, &req)?;
            let (op, body) = (req[8], &req[9..]);
            let status = reply[8];
            match op {
                OP_LOOKUP => {
                    prop_assert_eq!(status, REPLY_OK);
                    let n = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
                    prop_assert_eq!(decode_lookup(&reply[9..], n, "p").unwrap().len(), n);
                }
                OP_READ => {
                    let mut c = Cursor::new(body, "p");
                    let (region, offset, len) = (c.u32().unwrap(), c.u64().unwrap(), c.u32().unwrap() as usize);
                    let mut want = vec![0u8; len.min(MAX_READ)];
                    let served = len <= MAX_READ && fx.store.read_region(region, offset, &mut want).is_ok();
                    prop_assert_eq!(status == REPLY_OK, served);
                    if served {
                        prop_assert!(reply[9..] == want[..]);
                    }
                }
                OP_WRITE => {
                    let region = u32::from_le_bytes(body[..4].try_into().unwrap());
                    if region != fx.writable {
                        prop_assert_eq!(status, REPLY_ERR);
                    }
                }
                OP_INFO => {}
                _ => prop_assert_eq!(status, REPLY_ERR),
            }
        });
        assert!(fx.read_only_bytes() == before, "a read-only region changed");
    }
}
