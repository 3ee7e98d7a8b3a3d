//! The transport chosen at run time, by name: a cluster picks one (`shm`, `tcp` or `verbs`)
//! in its configuration, so callers that serve every cluster (the Node binding, Heron's
//! coordination and state transfer) need one type for all three. Static dispatch through an
//! enum keeps each transport's own `read_slot` and `mapped` (the `shm` fast paths).

use super::{RemoteMemory, Transport};
use crate::error::Result;
use crate::region::{Region, RegionInfo};
use crate::slot::{Reject, Snapshot};
use crate::store::{Addr, Store};
use crate::{
    ShmPeer, ShmTransport, TcpPeer, TcpServer, TcpTransport, VerbsPeer, VerbsServer, VerbsTransport,
};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// A transport by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// Shared memory on one host: peers are store names in the cluster directory.
    Shm,
    /// TCP anywhere: peers are the `host:port` their stores are served at.
    Tcp,
    /// RDMA: peers are the `host:port` of their stores' verbs servers.
    Verbs,
}

/// A transport name that is none of `shm`, `tcp` or `verbs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTransport(pub String);

impl fmt::Display for UnknownTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown transport '{}': expected shm, tcp or verbs",
            self.0
        )
    }
}

impl std::error::Error for UnknownTransport {}

impl FromStr for TransportKind {
    type Err = UnknownTransport;
    fn from_str(name: &str) -> std::result::Result<Self, UnknownTransport> {
        match name {
            "shm" => Ok(TransportKind::Shm),
            "tcp" => Ok(TransportKind::Tcp),
            "verbs" => Ok(TransportKind::Verbs),
            other => Err(UnknownTransport(other.to_string())),
        }
    }
}

impl TransportKind {
    /// `name.parse()`, for callers that do not import `FromStr`.
    pub fn parse(name: &str) -> std::result::Result<Self, UnknownTransport> {
        name.parse()
    }

    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Shm => "shm",
            TransportKind::Tcp => "tcp",
            TransportKind::Verbs => "verbs",
        }
    }

    /// Whether peers are reached by network address (and a store must be served to be read).
    pub fn is_network(self) -> bool {
        self != TransportKind::Shm
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Any of the three transports, as a cluster's configuration names it.
pub enum AnyTransport {
    Shm(ShmTransport),
    Tcp(TcpTransport),
    Verbs(VerbsTransport),
}

impl AnyTransport {
    /// Opens `kind` with the cluster `secret`. `cluster_dir` is where `shm` finds peers' stores;
    /// the network transports name peers by address and ignore it. `verbs` fails with
    /// [`crate::Error::NoRdma`] on a host without an RDMA device.
    pub fn new(kind: TransportKind, cluster_dir: &Path, secret: &[u8]) -> Result<Self> {
        Ok(match kind {
            TransportKind::Shm => AnyTransport::Shm(ShmTransport::new(cluster_dir, secret)?),
            TransportKind::Tcp => AnyTransport::Tcp(TcpTransport::new(secret)?),
            TransportKind::Verbs => AnyTransport::Verbs(VerbsTransport::new(secret)?),
        })
    }

    /// How long a peer may stay silent (set-up, each reply or completion) before it counts
    /// as gone. Over `shm` only the control channel's lookups wait on the peer.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        match self {
            AnyTransport::Shm(t) => AnyTransport::Shm(t.with_timeout(timeout)),
            AnyTransport::Tcp(t) => AnyTransport::Tcp(t.with_timeout(timeout)),
            AnyTransport::Verbs(t) => AnyTransport::Verbs(t.with_timeout(timeout)),
        }
    }

    pub fn kind(&self) -> TransportKind {
        match self {
            AnyTransport::Shm(_) => TransportKind::Shm,
            AnyTransport::Tcp(_) => TransportKind::Tcp,
            AnyTransport::Verbs(_) => TransportKind::Verbs,
        }
    }
}

impl Transport for AnyTransport {
    type Peer = AnyPeer;

    fn name(&self) -> &'static str {
        self.kind().name()
    }

    fn attach(&self, peer: &str) -> Result<AnyPeer> {
        match self {
            AnyTransport::Shm(t) => t.attach(peer).map(AnyPeer::Shm),
            AnyTransport::Tcp(t) => t.attach(peer).map(AnyPeer::Tcp),
            AnyTransport::Verbs(t) => t.attach(peer).map(|p| AnyPeer::Verbs(Box::new(p))),
        }
    }
}

/// A peer's memory over any transport.
pub enum AnyPeer {
    Shm(ShmPeer),
    Tcp(TcpPeer),
    // Boxed: a verbs peer carries its device and link state, several times the others' size.
    Verbs(Box<VerbsPeer>),
}

impl AnyPeer {
    pub fn kind(&self) -> TransportKind {
        match self {
            AnyPeer::Shm(_) => TransportKind::Shm,
            AnyPeer::Tcp(_) => TransportKind::Tcp,
            AnyPeer::Verbs(_) => TransportKind::Verbs,
        }
    }

    /// Whether reads are loads from memory mapped into this process: no I/O, never blocking
    /// on the peer.
    pub fn is_local(&self) -> bool {
        self.kind() == TransportKind::Shm
    }

    fn inner(&self) -> &dyn RemoteMemory {
        match self {
            AnyPeer::Shm(p) => p,
            AnyPeer::Tcp(p) => p,
            AnyPeer::Verbs(p) => p.as_ref(),
        }
    }
}

// Every method is passed on, the provided ones too: `shm` overrides `read_slot` (to re-check
// sequence words in place) and `mapped` (so handle reads validate slots in place).
impl RemoteMemory for AnyPeer {
    fn peer(&self) -> &str {
        self.inner().peer()
    }
    fn region_info(&self, region: u32) -> Result<RegionInfo> {
        self.inner().region_info(region)
    }
    fn read(&self, region: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner().read(region, offset, buf)
    }
    fn write(&self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        self.inner().write(region, offset, data)
    }
    fn lookup(&self, ids: &[&[u8]]) -> Result<Vec<Option<Addr>>> {
        self.inner().lookup(ids)
    }
    fn mapped(&self, region: u32) -> Result<Option<Arc<Region>>> {
        self.inner().mapped(region)
    }
    fn read_slot(
        &self,
        region: u32,
        offset: u64,
        class: usize,
        buf: &mut Vec<u8>,
    ) -> Result<std::result::Result<Snapshot, Reject>> {
        self.inner().read_slot(region, offset, class, buf)
    }
}

/// A server of one store's regions over a network transport; dropping it ends every
/// connection.
pub enum AnyServer {
    Tcp(TcpServer),
    Verbs(VerbsServer),
}

/// Why a store cannot be served as asked.
#[derive(Debug)]
pub enum ServeError {
    /// `shm` peers attach through the cluster directory: there is nothing to serve.
    NotNetwork,
    Start(crate::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::NotNetwork => f.write_str(
                "shm needs no server: peers on this host attach through the cluster directory",
            ),
            ServeError::Start(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ServeError {}

impl AnyServer {
    /// Serves `store` over `kind` at `addr` (port 0 picks a free one), from the server's own
    /// threads; peers must hold `secret`.
    pub fn start(
        kind: TransportKind,
        store: &Arc<Store>,
        secret: &[u8],
        addr: SocketAddr,
    ) -> std::result::Result<Self, ServeError> {
        match kind {
            TransportKind::Shm => Err(ServeError::NotNetwork),
            TransportKind::Tcp => TcpServer::start(store, secret, addr)
                .map(AnyServer::Tcp)
                .map_err(ServeError::Start),
            TransportKind::Verbs => VerbsServer::start(store, secret, addr)
                .map(AnyServer::Verbs)
                .map_err(ServeError::Start),
        }
    }

    pub fn kind(&self) -> TransportKind {
        match self {
            AnyServer::Tcp(_) => TransportKind::Tcp,
            AnyServer::Verbs(_) => TransportKind::Verbs,
        }
    }

    /// The bound address peers attach to.
    pub fn local_addr(&self) -> SocketAddr {
        match self {
            AnyServer::Tcp(s) => s.local_addr(),
            AnyServer::Verbs(s) => s.local_addr(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    const SECRET: &[u8] = b"any-transport-test-secret";

    #[test]
    fn names_round_trip_and_unknown_names_say_what_is_expected() {
        for kind in [TransportKind::Shm, TransportKind::Tcp, TransportKind::Verbs] {
            assert_eq!(TransportKind::parse(kind.name()), Ok(kind));
        }
        assert!(!TransportKind::Shm.is_network());
        assert!(TransportKind::Tcp.is_network() && TransportKind::Verbs.is_network());
        let err = TransportKind::parse("udp").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown transport 'udp': expected shm, tcp or verbs"
        );
        assert!(TransportKind::parse("SHM").is_err());
    }

    fn fixture(name: &str) -> (tempdir::Dir, Arc<Store>) {
        let dir = tempdir::Dir::new(name);
        let store = Arc::new(Store::create(&StoreConfig::new(dir.path(), "owner")).unwrap());
        store
            .set_many(&[(b"k".as_slice(), Some(b"value".as_slice()), 3)])
            .unwrap();
        (dir, store)
    }

    fn check_reads(peer: AnyPeer, kind: TransportKind) {
        assert_eq!(peer.kind(), kind);
        assert_eq!(peer.is_local(), kind == TransportKind::Shm);
        let remote = crate::RemoteStore::new(peer);
        match remote.get_many(&[b"k", b"nope"]).unwrap().as_slice() {
            [crate::Lookup::Value { ts: 3, value }, crate::Lookup::Absent] => {
                assert_eq!(value, b"value")
            }
            other => panic!("unexpected reads over {kind}: {other:?}"),
        }
    }

    #[test]
    fn shm_and_tcp_peers_read_through_one_type() {
        let (dir, store) = fixture("any-transport");
        let _control = crate::ControlServer::start(&store, SECRET).unwrap();
        let shm = AnyTransport::new(TransportKind::Shm, dir.path(), SECRET).unwrap();
        assert_eq!(shm.name(), "shm");
        let peer = shm.attach("owner").unwrap();
        assert!(peer.mapped(0).unwrap().is_some(), "shm keeps its mapping");
        check_reads(peer, TransportKind::Shm);

        let loopback = "127.0.0.1:0".parse().unwrap();
        let server = AnyServer::start(TransportKind::Tcp, &store, SECRET, loopback).unwrap();
        assert_eq!(server.kind(), TransportKind::Tcp);
        let tcp = AnyTransport::new(TransportKind::Tcp, dir.path(), SECRET)
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        let peer = tcp.attach(&server.local_addr().to_string()).unwrap();
        assert!(peer.mapped(0).unwrap().is_none());
        check_reads(peer, TransportKind::Tcp);
    }

    #[test]
    fn shm_is_not_served() {
        let (_dir, store) = fixture("any-serve");
        let loopback = "127.0.0.1:0".parse().unwrap();
        let err = AnyServer::start(TransportKind::Shm, &store, SECRET, loopback)
            .err()
            .expect("shm has no server");
        assert!(err.to_string().starts_with("shm needs no server"), "{err}");
    }

    /// A private directory removed at the end of the test (no dev-dependency for this).
    mod tempdir {
        use std::path::{Path, PathBuf};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new(name: &str) -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "remora-{name}-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&p);
                Dir(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
