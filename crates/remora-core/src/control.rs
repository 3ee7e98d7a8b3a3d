//! The control channel: how a peer learns where an object lives (Heron's `query_obj_addr`)
//! before reading it one-sidedly, and the authenticated handshake every connection between
//! cluster members starts with.
//!
//! Frames are a little-endian `u32` length then the payload, at most [`MAX_FRAME`] bytes.
//! Requests: `[op u8] body`. Replies: `[0] body` or `[1] utf-8 message`. A malformed request
//! gets an error reply, the connection is closed, and the server keeps serving others.

use crate::error::{Error, IoContext, Result};
use crate::store::{check_id, Addr, Store};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

pub const SOCKET_NAME: &str = "control.sock";
pub const MAX_FRAME: usize = 1 << 20;
pub const MIN_SECRET: usize = 16;
const MAGIC: &[u8; 4] = b"RMRA";
const PROTOCOL: u16 = 1;
const NONCE: usize = 32;
const MAC: usize = 32;
/// A peer that does not finish the handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const OP_LOOKUP: u8 = 1;
pub(crate) const REPLY_OK: u8 = 0;
pub(crate) const REPLY_ERR: u8 = 1;

pub fn check_secret(secret: &[u8]) -> Result<()> {
    if secret.len() < MIN_SECRET {
        return Err(Error::WeakSecret);
    }
    Ok(())
}

fn mac(secret: &[u8], label: &[u8], a: &[u8], b: &[u8]) -> Result<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Error::WeakSecret)?;
    m.update(label);
    m.update(a);
    m.update(b);
    Ok(m)
}

fn nonce() -> Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    getrandom::getrandom(&mut n).map_err(|e| Error::Io {
        context: "drawing a handshake nonce".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(n)
}

fn hs_err(peer: &str, why: impl Into<String>) -> Error {
    Error::Handshake {
        peer: peer.to_string(),
        why: why.into(),
    }
}

/// Client side of the mutual challenge-response: both ends prove they hold the cluster secret
/// without sending it. Labels differ per side so neither proof can be reflected.
pub fn handshake_client<S: Read + Write>(s: &mut S, secret: &[u8], peer: &str) -> Result<()> {
    let io = |e: std::io::Error| hs_err(peer, e.to_string());
    let nc = nonce()?;
    let mut hello = Vec::with_capacity(6 + NONCE);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&PROTOCOL.to_le_bytes());
    hello.extend_from_slice(&nc);
    s.write_all(&hello).map_err(io)?;
    let mut reply = [0u8; NONCE + MAC];
    s.read_exact(&mut reply).map_err(io)?;
    let (ns, proof) = reply.split_at(NONCE);
    mac(secret, b"remora-server", &nc, ns)?
        .verify_slice(proof)
        .map_err(|_| hs_err(peer, "the peer does not hold the cluster secret"))?;
    let mine = mac(secret, b"remora-client", &nc, ns)?
        .finalize()
        .into_bytes();
    s.write_all(&mine).map_err(io)?;
    let mut verdict = [0u8; 1];
    s.read_exact(&mut verdict)
        .map_err(|_| hs_err(peer, "the peer rejected our proof of the cluster secret"))?;
    if verdict[0] != 1 {
        return Err(hs_err(
            peer,
            "the peer rejected our proof of the cluster secret",
        ));
    }
    Ok(())
}

/// Server side of [`handshake_client`].
pub fn handshake_server<S: Read + Write>(s: &mut S, secret: &[u8], peer: &str) -> Result<()> {
    let io = |e: std::io::Error| hs_err(peer, e.to_string());
    let mut hello = [0u8; 6 + NONCE];
    s.read_exact(&mut hello).map_err(io)?;
    if &hello[..4] != MAGIC {
        return Err(hs_err(peer, "not a Remora peer (bad magic)"));
    }
    let version = u16::from_le_bytes([hello[4], hello[5]]);
    if version != PROTOCOL {
        return Err(hs_err(
            peer,
            format!("protocol version {version}, expected {PROTOCOL}"),
        ));
    }
    let nc = &hello[6..];
    let ns = nonce()?;
    let proof = mac(secret, b"remora-server", nc, &ns)?
        .finalize()
        .into_bytes();
    let mut reply = Vec::with_capacity(NONCE + MAC);
    reply.extend_from_slice(&ns);
    reply.extend_from_slice(&proof);
    s.write_all(&reply).map_err(io)?;
    let mut theirs = [0u8; MAC];
    s.read_exact(&mut theirs).map_err(io)?;
    if mac(secret, b"remora-client", nc, &ns)?
        .verify_slice(&theirs)
        .is_err()
    {
        let _ = s.write_all(&[0]);
        return Err(hs_err(peer, "the peer does not hold the cluster secret"));
    }
    s.write_all(&[1]).map_err(io)?;
    Ok(())
}

pub fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    w.write_all(&out)
}

/// Reads one frame; `Ok(None)` on a clean end of stream.
pub fn read_frame<R: Read>(r: &mut R, peer: &str) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).ctx(|| format!("reading from {peer}")),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)
        .ctx(|| format!("reading a frame from {peer}"))?;
    Ok(Some(buf))
}

/// A bounds-checked reader over a frame body: malformed input becomes an error, never a panic.
pub struct Cursor<'a> {
    buf: &'a [u8],
    peer: &'a str,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], peer: &'a str) -> Self {
        Cursor { buf, peer }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Frame {
                peer: self.peer.to_string(),
                why: format!("truncated: wanted {n} more bytes, {} left", self.buf.len()),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    pub fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    pub fn end(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::Frame {
                peer: self.peer.to_string(),
                why: format!("{} trailing bytes", self.buf.len()),
            })
        }
    }
}

/// Answers one control request (`[op] body`) with `[REPLY_OK] body`. Shared with the `tcp`
/// transport, which carries the same lookup request inside its own frames. An
/// `Error::Frame` means the request was malformed; other errors are well-formed bad requests.
pub(crate) fn answer(store: &Store, req: &[u8], peer: &str) -> Result<Vec<u8>> {
    let mut c = Cursor::new(req, peer);
    match c.u8()? {
        OP_LOOKUP => {
            let n = c.u32()? as usize;
            let mut ids = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                let len = c.u16()? as usize;
                let id = c.take(len)?;
                check_id(id)?;
                ids.push(id);
            }
            c.end()?;
            let mut out = vec![REPLY_OK];
            out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for addr in store.addresses(&ids) {
                match addr {
                    Some(a) => {
                        out.push(1);
                        out.extend_from_slice(&a.region.to_le_bytes());
                        out.extend_from_slice(&a.offset.to_le_bytes());
                    }
                    None => out.push(0),
                }
            }
            Ok(out)
        }
        op => Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("unknown command {op}"),
        }),
    }
}

fn serve(mut stream: UnixStream, store: Weak<Store>, secret: &[u8], peer: &str) -> Result<()> {
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .ctx(|| "setting a timeout".into())?;
    handshake_server(&mut stream, secret, peer)?;
    stream
        .set_read_timeout(None)
        .ctx(|| "clearing a timeout".into())?;
    while let Some(req) = read_frame(&mut stream, peer)? {
        let Some(store) = store.upgrade() else {
            return Ok(());
        };
        match answer(&store, &req, peer) {
            Ok(reply) => write_frame(&mut stream, &reply).ctx(|| format!("replying to {peer}"))?,
            Err(e) => {
                let mut reply = vec![REPLY_ERR];
                reply.extend_from_slice(e.to_string().as_bytes());
                let _ = write_frame(&mut stream, &reply);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Serves the control channel of one store from threads of its own, so peers resolve
/// addresses without the owner's application thread.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<usize, UnixStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    pub fn start(store: &Arc<Store>, secret: &[u8]) -> Result<Self> {
        check_secret(secret)?;
        let path = store.dir().join(SOCKET_NAME);
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).ctx(|| format!("listening on {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<usize, UnixStream>>> = Arc::default();
        let (weak, secret) = (Arc::downgrade(store), secret.to_vec());
        let (stop2, conns2, name) = (stop.clone(), conns.clone(), store.name().to_string());
        let thread = std::thread::Builder::new()
            .name(format!("remora-control-{name}"))
            .spawn(move || {
                for (n, stream) in listener.incoming().enumerate() {
                    if stop2.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    // Kept so that stopping the server can end connections blocked in a read.
                    if let Ok(clone) = stream.try_clone() {
                        lock(&conns2).insert(n, clone);
                    }
                    let (weak, secret, conns) = (weak.clone(), secret.clone(), conns2.clone());
                    let peer = format!("control peer #{n} of store '{name}'");
                    let _ = std::thread::Builder::new()
                        .name(format!("remora-control-conn-{n}"))
                        .spawn(move || {
                            if let Err(e) = serve(stream, weak, &secret, &peer) {
                                eprintln!("remora: {e}; connection closed");
                            }
                            lock(&conns).remove(&n);
                        });
                }
            })
            .ctx(|| "starting the control thread".into())?;
        Ok(ControlServer {
            path,
            stop,
            conns,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop, then end every open connection.
        let woken = UnixStream::connect(&self.path).is_ok();
        for (_, c) in lock(&self.conns).drain() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        // If the socket is already gone (its store was dropped first), the accept loop cannot
        // be woken: leave it detached rather than hang; it exits on its next connection.
        if let Some(t) = self.thread.take().filter(|_| woken) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A peer's end of the control channel.
pub struct ControlClient {
    stream: UnixStream,
    peer: String,
}

impl ControlClient {
    pub fn connect(path: &Path, secret: &[u8]) -> Result<Self> {
        check_secret(secret)?;
        let peer = format!("control socket {}", path.display());
        let mut stream = UnixStream::connect(path).map_err(|e| Error::PeerGone {
            peer: peer.clone(),
            why: e.to_string(),
        })?;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .ctx(|| "setting a timeout".into())?;
        handshake_client(&mut stream, secret, &peer)?;
        stream
            .set_read_timeout(None)
            .ctx(|| "clearing a timeout".into())?;
        Ok(ControlClient { stream, peer })
    }

    fn call(&mut self, req: &[u8]) -> Result<Vec<u8>> {
        let gone = |e: &dyn std::fmt::Display| Error::PeerGone {
            peer: self.peer.clone(),
            why: e.to_string(),
        };
        write_frame(&mut self.stream, req).map_err(|e| gone(&e))?;
        let reply =
            read_frame(&mut self.stream, &self.peer)?.ok_or_else(|| gone(&"connection closed"))?;
        match reply.split_first() {
            Some((&REPLY_OK, body)) => Ok(body.to_vec()),
            Some((&REPLY_ERR, msg)) => Err(Error::Remote {
                peer: self.peer.clone(),
                message: String::from_utf8_lossy(msg).into_owned(),
            }),
            _ => Err(Error::Frame {
                peer: self.peer.clone(),
                why: "reply without a status byte".into(),
            }),
        }
    }

    /// Addresses of `ids` at the owner (`None`: the owner has no such object).
    pub fn lookup(&mut self, ids: &[&[u8]]) -> Result<Vec<Option<Addr>>> {
        let mut req = vec![OP_LOOKUP];
        encode_lookup(&mut req, ids)?;
        let body = self.call(&req)?;
        decode_lookup(&body, ids.len(), &self.peer)
    }

    /// Sends raw bytes as one frame and returns the raw reply: for tests of bad input.
    pub fn call_raw(&mut self, req: &[u8]) -> Result<Vec<u8>> {
        self.call(req)
    }
}

/// Appends the body of a lookup request for `ids` (after its op byte).
pub(crate) fn encode_lookup(req: &mut Vec<u8>, ids: &[&[u8]]) -> Result<()> {
    req.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        check_id(id)?;
        req.extend_from_slice(&(id.len() as u16).to_le_bytes());
        req.extend_from_slice(id);
    }
    Ok(())
}

/// Parses the body of a lookup reply (after its status byte) that must hold `wanted` answers.
pub(crate) fn decode_lookup(body: &[u8], wanted: usize, peer: &str) -> Result<Vec<Option<Addr>>> {
    let mut c = Cursor::new(body, peer);
    let n = c.u32()? as usize;
    if n != wanted {
        return Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("asked for {wanted} addresses, got {n}"),
        });
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(match c.u8()? {
            0 => None,
            _ => Some(Addr {
                region: c.u32()?,
                offset: c.u64()?,
            }),
        });
    }
    c.end()?;
    Ok(out)
}
