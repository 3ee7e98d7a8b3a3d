//! A peer's end of `tcp`: [`TcpTransport`] attaches, [`TcpPeer`] copies slots (pipelining
//! requests) and validates the copies exactly as it would copies delivered by RDMA (see
//! `slot`).

use super::wire::{
    finish_frame, parse_reply, start_frame, MAX_READ, MAX_WRITE, OP_INFO, OP_READ, OP_WRITE,
};
use crate::control::{check_secret, decode_lookup, encode_lookup, read_frame_into, OP_LOOKUP};
use crate::error::{Error, IoContext, Result};
use crate::handshake::{handshake_client_within, Timeouts};
use crate::region::RegionInfo;
use crate::store::Addr;
use crate::transport::{RemoteMemory, Transport};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

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

/// Reaches peers' memory over TCP; `attach` takes a `host:port` a [`TcpServer`](super::TcpServer) listens on.
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
