//! The transport is chosen per cluster: an owner's store can also serve its regions over `tcp`
//! or `verbs` (servers whose own native threads answer peers), and a `NativeRemote` reads
//! through whichever transport it was connected with, behind one peer type.

use crate::{invalid, js_err};
use napi::bindgen_prelude::Buffer;
use napi::Result;
use napi_derive::napi;
use remora_core::region::{Region, RegionInfo};
use remora_core::slot::{Reject, Snapshot};
use remora_core::{
    Addr, RemoteMemory, ShmPeer, ShmTransport, Store, TcpPeer, TcpServer, TcpTransport, Transport,
    VerbsPeer, VerbsServer, VerbsTransport,
};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// A transport name as JS passes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Shm,
    Tcp,
    Verbs,
}

impl Kind {
    pub fn parse(name: &str) -> Result<Kind> {
        match name {
            "shm" => Ok(Kind::Shm),
            "tcp" => Ok(Kind::Tcp),
            "verbs" => Ok(Kind::Verbs),
            other => Err(invalid(format!(
                "unknown transport '{other}': expected shm, tcp or verbs"
            ))),
        }
    }
}

#[napi(object)]
pub struct ServeOptions {
    /// `tcp` or `verbs` (`shm` needs no server: peers on this host use the cluster directory).
    pub transport: String,
    /// `host:port` to listen on; port 0 picks a free one.
    pub listen: String,
}

/// A server of one store's regions; dropping it ends every connection.
pub enum Served {
    Tcp(TcpServer),
    Verbs(VerbsServer),
}

impl Served {
    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Served::Tcp(s) => s.local_addr(),
            Served::Verbs(s) => s.local_addr(),
        }
    }
}

fn socket_addr(what: &str, addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| {
            invalid(format!(
                "{what}: bad address '{addr}' (expected host:port): {e}"
            ))
        })?
        .next()
        .ok_or_else(|| invalid(format!("{what}: address '{addr}' resolved to nothing")))
}

/// Starts serving `store` as `opts` asks; peers must hold `secret`.
pub fn serve(store: &Arc<Store>, secret: &[u8], opts: &ServeOptions) -> Result<Served> {
    let kind = Kind::parse(&opts.transport)?;
    let addr = socket_addr("serve", &opts.listen)?;
    match kind {
        Kind::Shm => Err(invalid(
            "serve: shm needs no server: peers on this host attach through the cluster directory",
        )),
        Kind::Tcp => TcpServer::start(store, secret, addr)
            .map(Served::Tcp)
            .map_err(js_err),
        Kind::Verbs => VerbsServer::start(store, secret, addr)
            .map(Served::Verbs)
            .map_err(js_err),
    }
}

#[napi(object)]
pub struct RemoteOptions {
    /// `shm` (default), `tcp` or `verbs`.
    pub transport: Option<String>,
    /// `shm`: the cluster directory on this host.
    pub dir: Option<String>,
    /// `tcp` and `verbs`: the `host:port` the owner serves on.
    pub address: Option<String>,
    /// `shm`: the name of the store to attach to (a tcp or verbs server serves one store).
    pub store: Option<String>,
    pub secret: Buffer,
}

/// Where to attach, checked on the JS thread so that bad options fail at once.
pub enum Target {
    Shm { dir: String, store: String },
    Tcp(String),
    Verbs(String),
}

impl Target {
    pub fn from_options(opts: &RemoteOptions) -> Result<Target> {
        let kind = Kind::parse(opts.transport.as_deref().unwrap_or("shm"))?;
        let need = |v: &Option<String>, field: &str, transport: &str| {
            v.clone().ok_or_else(|| {
                invalid(format!(
                    "connect: the {transport} transport needs '{field}'"
                ))
            })
        };
        match kind {
            Kind::Shm => {
                if opts.address.is_some() {
                    return Err(invalid(
                        "connect: shm attaches through a directory, not an address: give 'dir', or transport 'tcp' or 'verbs'",
                    ));
                }
                Ok(Target::Shm {
                    dir: need(&opts.dir, "dir", "shm")?,
                    store: need(&opts.store, "store", "shm")?,
                })
            }
            Kind::Tcp | Kind::Verbs => {
                if opts.dir.is_some() {
                    return Err(invalid(
                        "connect: tcp and verbs attach to an address, not a directory: give 'address'",
                    ));
                }
                let name = if kind == Kind::Tcp { "tcp" } else { "verbs" };
                let address = need(&opts.address, "address", name)?;
                // Resolving here reports a malformed address as such, not as a peer gone.
                socket_addr("connect", &address)?;
                Ok(if kind == Kind::Tcp {
                    Target::Tcp(address)
                } else {
                    Target::Verbs(address)
                })
            }
        }
    }

    /// Connects (blocking: run it off the JS thread).
    pub fn attach(&self, secret: &[u8]) -> remora_core::Result<AnyPeer> {
        match self {
            Target::Shm { dir, store } => ShmTransport::new(dir, secret)?
                .attach(store)
                .map(AnyPeer::Shm),
            Target::Tcp(a) => TcpTransport::new(secret)?.attach(a).map(AnyPeer::Tcp),
            Target::Verbs(a) => VerbsTransport::new(secret)?
                .attach(a)
                .map(|p| AnyPeer::Verbs(Box::new(p))),
        }
    }
}

/// A peer's memory over any transport.
pub enum AnyPeer {
    Shm(ShmPeer),
    Tcp(TcpPeer),
    Verbs(Box<VerbsPeer>),
}

impl AnyPeer {
    /// Whether reads are memory copies in this process (no I/O, fine on the JS thread).
    pub fn is_local(&self) -> bool {
        matches!(self, AnyPeer::Shm(_))
    }

    pub fn transport(&self) -> &'static str {
        match self {
            AnyPeer::Shm(_) => "shm",
            AnyPeer::Tcp(_) => "tcp",
            AnyPeer::Verbs(_) => "verbs",
        }
    }

    fn inner(&self) -> &dyn RemoteMemory {
        match self {
            AnyPeer::Shm(p) => p,
            AnyPeer::Tcp(p) => p,
            AnyPeer::Verbs(p) => p.as_ref(),
        }
    }
}

impl RemoteMemory for AnyPeer {
    fn peer(&self) -> &str {
        self.inner().peer()
    }
    fn region_info(&self, region: u32) -> remora_core::Result<RegionInfo> {
        self.inner().region_info(region)
    }
    fn read(&self, region: u32, offset: u64, buf: &mut [u8]) -> remora_core::Result<()> {
        self.inner().read(region, offset, buf)
    }
    fn write(&self, region: u32, offset: u64, data: &[u8]) -> remora_core::Result<()> {
        self.inner().write(region, offset, data)
    }
    fn lookup(&self, ids: &[&[u8]]) -> remora_core::Result<Vec<Option<Addr>>> {
        self.inner().lookup(ids)
    }
    // Delegated too: `shm` overrides it to re-check sequence words in place.
    fn read_slot(
        &self,
        region: u32,
        offset: u64,
        class: usize,
        buf: &mut Vec<u8>,
    ) -> remora_core::Result<std::result::Result<Snapshot, Reject>> {
        self.inner().read_slot(region, offset, class, buf)
    }
    // Passed on so that reads through handles validate `shm` slots in place.
    fn mapped(&self, region: u32) -> remora_core::Result<Option<Arc<Region>>> {
        self.inner().mapped(region)
    }
}
