//! The control channel: how a peer learns where an object lives (Heron's `query_obj_addr`)
//! before reading it one-sidedly. Every connection starts with the cluster's handshake
//! (`handshake`); the server is the shared event loop (`server`) on the store's Unix socket.
//!
//! Frames are a little-endian `u32` length then the payload, at most [`MAX_FRAME`] bytes.
//! Requests: `[op u8] body`. Replies: `[0] body` or `[1] utf-8 message`. A malformed request
//! gets an error reply, the connection is closed, and the server keeps serving others.

use crate::error::{Error, IoContext, Result};
use crate::handshake::{handshake_client_within, Timeouts};
use crate::server::{self, put_frame, Flow, Listener, ServerLimits, ServerStats, Service};
use crate::store::{check_id, Addr, Store};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use crate::handshake::{check_secret, handshake_client, handshake_server, MIN_SECRET};

pub const SOCKET_NAME: &str = "control.sock";
pub const MAX_FRAME: usize = 1 << 20;
/// A client whose peer does not finish the handshake in this time gives up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const OP_LOOKUP: u8 = 1;
pub(crate) const REPLY_OK: u8 = 0;
pub(crate) const REPLY_ERR: u8 = 1;

pub fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    w.write_all(&out)
}

/// Reads one frame; `Ok(None)` on a clean end of stream.
pub fn read_frame<R: Read>(r: &mut R, peer: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    Ok(read_frame_into(r, &mut buf, peer)?.then_some(buf))
}

/// Reads one frame's payload into `buf` (reusing its memory); `false` on a clean end of
/// stream before the frame. The length is checked before anything is allocated.
pub(crate) fn read_frame_into<R: Read>(r: &mut R, buf: &mut Vec<u8>, peer: &str) -> Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e).ctx(|| format!("reading from {peer}")),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        });
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf)
        .ctx(|| format!("reading a frame from {peer}"))?;
    Ok(true)
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
            encode_lookup_reply(&mut out, &store.addresses(&ids));
            Ok(out)
        }
        op => Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("unknown command {op}"),
        }),
    }
}

/// The control channel's requests, on the shared event loop.
struct ControlService {
    store: Weak<Store>,
}

impl Service for ControlService {
    type Conn = ();

    fn open(&self, _peer: &str) {}

    fn frame(&self, _: &mut (), req: &[u8], out: &mut Vec<u8>, peer: &str) -> Flow {
        let Some(store) = self.store.upgrade() else {
            return Flow::Close(None);
        };
        match answer(&store, req, peer) {
            Ok(reply) => {
                put_frame(out, &reply);
                Flow::Continue
            }
            Err(e) => {
                let mut reply = vec![REPLY_ERR];
                reply.extend_from_slice(e.to_string().as_bytes());
                reply.truncate(MAX_FRAME);
                put_frame(out, &reply);
                Flow::Close(Some(e))
            }
        }
    }
}

/// Serves the control channel of one store from a thread of its own (see `server`), so peers
/// resolve addresses without the owner's application thread.
pub struct ControlServer {
    path: PathBuf,
    server: server::Handle,
}

impl ControlServer {
    pub fn start(store: &Arc<Store>, secret: &[u8]) -> Result<Self> {
        Self::start_limited(store, secret, ServerLimits::default())
    }

    /// As [`ControlServer::start`], with other connection limits.
    pub fn start_limited(store: &Arc<Store>, secret: &[u8], limits: ServerLimits) -> Result<Self> {
        check_secret(secret)?;
        let path = store.dir().join(SOCKET_NAME);
        let _ = std::fs::remove_file(&path);
        let listener = Listener::unix(&path)?;
        let name = store.name().to_string();
        let server = server::spawn(
            listener,
            ControlService {
                store: Arc::downgrade(store),
            },
            secret,
            limits,
            format!("remora-control-{name}"),
            ("control", name),
        )?;
        Ok(ControlServer { path, server })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections and what became of them.
    pub fn stats(&self) -> ServerStats {
        self.server.stats()
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // No new peer finds the socket; the loop, stopped when `server` drops right after,
        // closes the connections it has.
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
        handshake_client_within(&mut stream, secret, &peer, HANDSHAKE_TIMEOUT)?;
        stream
            .set_timeouts(None)
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

/// Appends the body of a lookup reply (after its status byte).
pub(crate) fn encode_lookup_reply(out: &mut Vec<u8>, addrs: &[Option<Addr>]) {
    out.extend_from_slice(&(addrs.len() as u32).to_le_bytes());
    for addr in addrs {
        match addr {
            Some(a) => {
                out.push(1);
                out.extend_from_slice(&a.region.to_le_bytes());
                out.extend_from_slice(&a.offset.to_le_bytes());
            }
            None => out.push(0),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// A store of 40 objects `obj/0` … `obj/39`, removed with its directory.
    struct Fixture {
        store: Arc<Store>,
        dir: PathBuf,
    }

    impl Fixture {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("remora-control-unit-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let store = Store::create(&StoreConfig::new(&dir, "unit")).unwrap();
            for i in 0..40 {
                store
                    .set(format!("obj/{i}").as_bytes(), &[i as u8; 10], 1)
                    .unwrap();
            }
            Fixture {
                store: Arc::new(store),
                dir,
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn addr() -> impl Strategy<Value = Option<Addr>> {
        proptest::option::of(
            (any::<u32>(), any::<u64>()).prop_map(|(region, offset)| Addr { region, offset }),
        )
    }

    /// A valid lookup request: ids that exist, that do not, and repeats.
    fn lookup_request() -> impl Strategy<Value = Vec<Vec<u8>>> {
        vec(
            prop_oneof![
                (0..60usize).prop_map(|i| format!("obj/{i}").into_bytes()),
                vec(any::<u8>(), 1..=88),
            ],
            0..20,
        )
    }

    /// Checks an answer to arbitrary bytes: an `Ok` is a well-formed reply of as many
    /// addresses as the request names.
    fn check_answer(store: &Store, req: &[u8]) -> std::result::Result<(), TestCaseError> {
        if let Ok(reply) = answer(store, req, "fuzz") {
            prop_assert_eq!(reply[0], REPLY_OK);
            let n = u32::from_le_bytes([req[1], req[2], req[3], req[4]]) as usize;
            let addrs = decode_lookup(&reply[1..], n, "fuzz");
            prop_assert!(addrs.is_ok(), "{:?}", addrs);
        }
        Ok(())
    }

    fn flip(bytes: &mut [u8], bit: usize) {
        if !bytes.is_empty() {
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
    }

    proptest! {
        #[test]
        fn read_frame_never_panics(bytes in vec(any::<u8>(), 0..64)) {
            let _ = read_frame(&mut &bytes[..], "fuzz");
        }

        #[test]
        fn read_frame_round_trips_and_refuses_truncations(payload in vec(any::<u8>(), 0..300), cut in any::<usize>()) {
            let mut wire = Vec::new();
            write_frame(&mut wire, &payload).unwrap();
            prop_assert_eq!(read_frame(&mut &wire[..], "p").unwrap(), Some(payload.clone()));
            let cut = cut % wire.len();
            match read_frame(&mut &wire[..cut], "p") {
                // A stream ending inside a length prefix has no frame to give.
                Ok(None) => prop_assert!(cut < 4),
                Ok(Some(_)) => prop_assert!(false, "a truncated frame was read whole"),
                Err(_) => prop_assert!(cut >= 4),
            }
        }

        #[test]
        fn huge_length_fields_are_refused_before_allocating(len in (MAX_FRAME as u32 + 1)..) {
            let wire = len.to_le_bytes();
            let refused = matches!(read_frame(&mut &wire[..], "p"), Err(Error::Frame { .. }));
            prop_assert!(refused);
        }

        #[test]
        fn cursor_takes_exactly_what_is_there(bytes in vec(any::<u8>(), 0..40), ops in vec(0u8..6, 0..20)) {
            let mut c = Cursor::new(&bytes, "fuzz");
            let mut left = bytes.len();
            for op in ops {
                let (want, got) = match op {
                    0 => (1, c.u8().is_ok()),
                    1 => (2, c.u16().is_ok()),
                    2 => (4, c.u32().is_ok()),
                    3 => (8, c.u64().is_ok()),
                    4 => (3, c.take(3).is_ok()),
                    _ => {
                        prop_assert_eq!(c.end().is_ok(), left == 0);
                        continue;
                    }
                };
                prop_assert_eq!(got, want <= left);
                if got {
                    left -= want;
                }
            }
        }

        #[test]
        fn decode_lookup_never_panics(body in vec(any::<u8>(), 0..80), wanted in 0usize..10) {
            if let Ok(addrs) = decode_lookup(&body, wanted, "fuzz") {
                prop_assert_eq!(addrs.len(), wanted);
            }
        }

        #[test]
        fn lookup_replies_round_trip(addrs in vec(addr(), 0..30), bit in any::<usize>(), cut in any::<usize>()) {
            let mut body = Vec::new();
            encode_lookup_reply(&mut body, &addrs);
            prop_assert_eq!(decode_lookup(&body, addrs.len(), "p").unwrap(), addrs.clone());
            let cut = cut % body.len();
            prop_assert!(decode_lookup(&body[..cut], addrs.len(), "p").is_err());
            let mut flipped = body.clone();
            flip(&mut flipped, bit);
            if let Ok(got) = decode_lookup(&flipped, addrs.len(), "p") {
                prop_assert_eq!(got.len(), addrs.len());
            }
        }
    }

    #[test]
    fn answer_never_panics_on_arbitrary_requests() {
        let fx = Fixture::new("arbitrary");
        proptest!(|(req in vec(any::<u8>(), 0..120))| {
            check_answer(&fx.store, &req)?;
        });
    }

    #[test]
    fn lookups_round_trip_and_damaged_ones_are_refused_or_valid() {
        let fx = Fixture::new("roundtrip");
        proptest!(|(ids in lookup_request(), bit in any::<usize>(), cut in any::<usize>())| {
            let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
            let mut req = vec![OP_LOOKUP];
            encode_lookup(&mut req, &refs).unwrap();
            let reply = answer(&fx.store, &req, "p").unwrap();
            prop_assert_eq!(
                decode_lookup(&reply[1..], ids.len(), "p").unwrap(),
                fx.store.addresses(&refs)
            );
            check_answer(&fx.store, &req[..cut % req.len()])?;
            let mut flipped = req.clone();
            flip(&mut flipped, bit);
            check_answer(&fx.store, &flipped)?;
        });
    }

    /// The service behind the socket: one whole reply frame per request, and the connection
    /// ends exactly when the reply is an error.
    #[test]
    fn the_service_answers_every_frame_with_one_frame() {
        let fx = Fixture::new("service");
        let service = ControlService {
            store: Arc::downgrade(&fx.store),
        };
        proptest!(|(req in vec(any::<u8>(), 0..120))| {
            let mut out = Vec::new();
            let flow = service.frame(&mut (), &req, &mut out, "fuzz");
            let reply = read_frame(&mut &out[..], "fuzz").unwrap().unwrap();
            prop_assert_eq!(out.len(), 4 + reply.len());
            prop_assert_eq!(matches!(flow, Flow::Close(_)), reply[0] == REPLY_ERR);
        });
    }
}
