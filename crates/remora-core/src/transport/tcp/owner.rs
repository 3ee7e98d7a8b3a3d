//! The owner's end of `tcp`: a [`TcpServer`] answers peers' requests on the shared event loop
//! (`crate::server`), copying bytes out of (and into) the store's regions, so a read never
//! involves the owner's application thread.

use super::wire::{finish_frame, start_frame, INFO_BYTES, MAX_READ, OP_INFO, OP_READ, OP_WRITE};
use crate::control::{self, Cursor, OP_LOOKUP, REPLY_ERR, REPLY_OK};
use crate::error::{Error, Result};
use crate::region::{AttachedRegions, Region};
use crate::server::{self, Flow, Listener, ServerLimits, ServerStats, Service};
use crate::store::Store;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

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
        let shared = Shared {
            store: Arc::downgrade(store),
            name: store.name().to_string(),
            regions: AttachedRegions::new(store.dir().to_path_buf()),
            extension,
        };
        let bind = || {
            let listener = Listener::tcp(addr)?;
            // Port 0 picks one: peers need the one picked.
            let bound = listener.local_addr()?;
            Ok((listener, bound))
        };
        let (server, addr) =
            server::serve_accepts(bind, shared, secret, limits, "tcp", store.name())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{decode_lookup, encode_lookup, read_frame};
    use crate::store::StoreConfig;
    use crate::transport::tcp::wire::parse_reply;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::path::PathBuf;

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
