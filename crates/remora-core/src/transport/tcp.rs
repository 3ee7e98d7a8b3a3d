//! TCP, for hosts without RDMA hardware: the owner runs a [`TcpServer`] whose native threads
//! copy bytes out of (and into) its registered regions on request, so a read still never
//! involves the owner's application thread. Peers copy slots with [`TcpPeer`] and validate
//! the copies exactly as they would copies delivered by RDMA (see `slot`).
//!
//! Every connection starts with the cluster's HMAC handshake (`control::handshake_server`),
//! then carries frames as the control channel does (little-endian `u32` length, payload of at
//! most [`MAX_FRAME`] bytes):
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
//! error reply when it has a request id and closes the connection.

use super::{RemoteMemory, Transport};
use crate::control::{
    self, check_secret, decode_lookup, encode_lookup, handshake_client, handshake_server,
    read_frame, Cursor, MAX_FRAME, OP_LOOKUP, REPLY_ERR, REPLY_OK,
};
use crate::error::{Error, IoContext, Result};
use crate::region::{AttachedRegions, Region, RegionInfo};
use crate::store::{Addr, Store};
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::ToSocketAddrs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
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
/// A peer that does not finish the handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that stops reading its replies for this long is dropped, freeing its thread.
const SERVER_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
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
    secret: Vec<u8>,
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

fn serve(stream: TcpStream, shared: &Shared, peer: &str) -> Result<()> {
    let mut writer = stream;
    writer
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .and_then(|_| writer.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
        .and_then(|_| writer.set_nodelay(true))
        .ctx(|| format!("configuring the connection of {peer}"))?;
    handshake_server(&mut writer, &shared.secret, peer)?;
    // An authenticated peer may stay idle as long as it likes: stopping the server shuts the
    // socket down, which ends the blocked read.
    writer
        .set_read_timeout(None)
        .and_then(|_| writer.set_write_timeout(Some(SERVER_WRITE_TIMEOUT)))
        .ctx(|| format!("configuring the connection of {peer}"))?;
    let mut reader = BufReader::new(
        writer
            .try_clone()
            .ctx(|| format!("cloning the connection of {peer}"))?,
    );
    let mut out = Vec::new();
    let mut ext = None;
    while let Some(req) = read_frame(&mut reader, peer)? {
        let Some(store) = shared.store.upgrade() else {
            return Ok(()); // the owner is gone: so is its memory
        };
        let mut c = Cursor::new(&req, peer);
        let id = c.u64()?; // without an id there is nothing to reply to
        out.clear();
        let at = start_frame(&mut out, id, REPLY_OK);
        out.pop(); // the status byte comes with the answer
        let fault = match shared.answer(&store, &req[8..], &mut out, peer, &mut ext) {
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
        if finish_frame(&mut out, at, peer).is_err() {
            // Only an error message could be this long: send a short one instead.
            out.truncate(at + 4 + 8);
            out.push(REPLY_ERR);
            out.extend_from_slice(b"error message too long");
            finish_frame(&mut out, at, peer)?;
        }
        let sent = writer.write_all(&out).ctx(|| format!("replying to {peer}"));
        if let Some(Fault::Malformed(e)) = fault {
            return Err(e);
        }
        sent?;
    }
    Ok(())
}

/// Serves one store's regions and lookups over TCP from threads of its own (one per
/// connection). Dropping it stops the listener and ends every connection.
pub struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<usize, TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `addr` (port 0 picks a free port: see [`TcpServer::local_addr`]).
    pub fn start(store: &Arc<Store>, secret: &[u8], addr: SocketAddr) -> Result<Self> {
        Self::start_with(store, secret, addr, None)
    }

    /// As [`TcpServer::start`], also serving `extension`'s requests.
    pub(crate) fn start_with(
        store: &Arc<Store>,
        secret: &[u8],
        addr: SocketAddr,
        extension: Option<Arc<dyn Extension>>,
    ) -> Result<Self> {
        check_secret(secret)?;
        let listener = TcpListener::bind(addr).ctx(|| format!("listening on {addr}"))?;
        let addr = listener
            .local_addr()
            .ctx(|| "reading the listening address".into())?;
        let shared = Arc::new(Shared {
            store: Arc::downgrade(store),
            name: store.name().to_string(),
            secret: secret.to_vec(),
            regions: AttachedRegions::new(store.dir().to_path_buf()),
            extension,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<usize, TcpStream>>> = Arc::default();
        let (stop2, conns2, name) = (stop.clone(), conns.clone(), store.name().to_string());
        let thread = std::thread::Builder::new()
            .name(format!("remora-tcp-{name}"))
            .spawn(move || {
                let mut workers: Vec<JoinHandle<()>> = Vec::new();
                for (n, stream) in listener.incoming().enumerate() {
                    if stop2.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    workers.retain(|w| !w.is_finished());
                    // Kept so that stopping the server can end a connection blocked in a read;
                    // a connection we could not end that way is refused.
                    let Ok(clone) = stream.try_clone() else {
                        continue;
                    };
                    {
                        // Checked under the lock `Drop` drains with: no connection registers
                        // after the drain and escapes the shutdown.
                        let mut live = lock(&conns2);
                        if stop2.load(Ordering::Acquire) {
                            break;
                        }
                        live.insert(n, clone);
                    }
                    let (shared, conns) = (shared.clone(), conns2.clone());
                    let who = stream
                        .peer_addr()
                        .map_or_else(|_| "?".to_string(), |a| a.to_string());
                    let peer = format!("tcp peer #{n} ({who}) of store '{name}'");
                    let spawned = std::thread::Builder::new()
                        .name(format!("remora-tcp-conn-{n}"))
                        .spawn(move || {
                            if let Err(e) = serve(stream, &shared, &peer) {
                                eprintln!("remora: {e}; connection closed");
                            }
                            lock(&conns).remove(&n);
                        });
                    match spawned {
                        Ok(w) => workers.push(w),
                        Err(_) => {
                            if let Some(s) = lock(&conns2).remove(&n) {
                                let _ = s.shutdown(Shutdown::Both);
                            }
                        }
                    }
                }
                // Their sockets are shut down: each ends its current request and returns.
                for w in workers {
                    let _ = w.join();
                }
            })
            .ctx(|| "starting the tcp listener thread".into())?;
        Ok(TcpServer {
            addr,
            stop,
            conns,
            thread: Some(thread),
        })
    }

    /// The address peers attach to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        {
            let mut live = lock(&self.conns);
            self.stop.store(true, Ordering::Release);
            for (_, c) in live.drain() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        // Wake the accept loop with a connection of our own (std cannot shut a listener down).
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let woken = TcpStream::connect_timeout(&wake, Duration::from_secs(2)).is_ok();
        // If it cannot be woken (no file descriptors left?), leave it detached rather than
        // hang: it exits on its next connection.
        if let Some(t) = self.thread.take().filter(|_| woken) {
            let _ = t.join();
        }
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
        let gone = |why: String| Error::PeerGone {
            peer: peer.to_string(),
            why,
        };
        let first = self.next_id;
        let (mut sent, mut got) = (0usize, 0usize);
        let mut failed: Option<Error> = None;
        let mut out = Vec::new();
        loop {
            out.clear();
            while failed.is_none() && sent < n && sent - got < WINDOW {
                let at = start_frame(&mut out, first + sent as u64, 0);
                out.pop(); // `make` writes the op byte
                make(sent, &mut out);
                finish_frame(&mut out, at, peer)?;
                sent += 1;
            }
            self.next_id = first + sent as u64;
            if !out.is_empty() {
                self.writer
                    .write_all(&out)
                    .map_err(|e| gone(format!("sending a request: {e}")))?;
            }
            if got == sent {
                break;
            }
            let reply = read_frame(&mut self.reader, peer)
                .map_err(|e| match e {
                    Error::Io { source, .. } => gone(format!("reading a reply: {source}")),
                    e => e,
                })?
                .ok_or_else(|| gone("the connection closed".into()))?;
            let mut c = Cursor::new(&reply, peer);
            let (id, status) = (c.u64()?, c.u8()?);
            let want = first + got as u64;
            if id != want {
                return Err(Error::Frame {
                    peer: peer.to_string(),
                    why: format!("reply to request {id}, expected {want}"),
                });
            }
            let body = &reply[HEADER..];
            match status {
                REPLY_OK if failed.is_none() => on_reply(got, body)?,
                REPLY_OK => {}
                REPLY_ERR => {
                    failed.get_or_insert(Error::Remote {
                        peer: peer.to_string(),
                        message: String::from_utf8_lossy(body).into_owned(),
                    });
                }
                s => {
                    return Err(Error::Frame {
                        peer: peer.to_string(),
                        why: format!("unknown reply status {s}"),
                    })
                }
            }
            got += 1;
        }
        failed.map_or(Ok(()), Err)
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
            s.set_read_timeout(Some(self.timeout))
                .and_then(|_| s.set_write_timeout(Some(self.timeout)))
                .and_then(|_| s.set_nodelay(true))
                .ctx(|| format!("configuring the connection to {}", self.name))?;
            handshake_client(&mut s, &self.secret, &self.name)?;
            let reader = BufReader::new(
                s.try_clone()
                    .ctx(|| format!("cloning the connection to {}", self.name))?,
            );
            return Ok(Conn {
                reader,
                writer: s,
                next_id: 0,
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
