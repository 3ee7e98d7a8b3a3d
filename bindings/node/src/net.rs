//! Transport options as JavaScript passes them, checked on the JS thread so that bad options
//! fail at once. The transports themselves, and the choice among them, are `remora-core`'s
//! (`AnyTransport`, `AnyPeer`, `AnyServer`).

use crate::{invalid, js_err};
use napi::bindgen_prelude::Buffer;
use napi::{Error, Result};
use napi_derive::napi;
use remora_core::transport::ServeError;
use remora_core::{AnyPeer, AnyServer, AnyTransport, Store, Transport, TransportKind};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

/// `name` as a transport, or JS's default (`shm`) when absent.
pub fn kind(name: Option<&str>) -> Result<TransportKind> {
    TransportKind::parse(name.unwrap_or("shm")).map_err(|e| invalid(e.to_string()))
}

/// The cluster's transport, opened as JS names it (default `shm`); `dir` is the cluster
/// directory, where `shm` finds peers' stores.
pub fn transport(name: Option<&str>, dir: &str, secret: &[u8]) -> Result<AnyTransport> {
    AnyTransport::new(kind(name)?, Path::new(dir), secret).map_err(js_err)
}

#[napi(object)]
pub struct ServeOptions {
    /// `tcp` or `verbs` (`shm` needs no server: peers on this host use the cluster directory).
    pub transport: String,
    /// `host:port` to listen on; port 0 picks a free one.
    pub listen: String,
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
pub fn serve(store: &Arc<Store>, secret: &[u8], opts: &ServeOptions) -> Result<AnyServer> {
    let kind = kind(Some(&opts.transport))?;
    let addr = socket_addr("serve", &opts.listen)?;
    AnyServer::start(kind, store, secret, addr).map_err(|e| match e {
        ServeError::NotNetwork => invalid(format!("serve: {e}")),
        ServeError::Start(e) => js_err(e),
    })
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

/// Where to attach: the transport, the cluster directory (`shm` only) and the peer's name
/// there (a store name over `shm`, a `host:port` otherwise).
pub struct Target {
    kind: TransportKind,
    dir: String,
    peer: String,
}

fn need(v: &Option<String>, field: &str, kind: TransportKind) -> Result<String> {
    v.clone()
        .ok_or_else(|| invalid(format!("connect: the {kind} transport needs '{field}'")))
}

impl Target {
    pub fn from_options(opts: &RemoteOptions) -> Result<Target> {
        let kind = kind(opts.transport.as_deref())?;
        if !kind.is_network() {
            if opts.address.is_some() {
                return Err(invalid(
                    "connect: shm attaches through a directory, not an address: give 'dir', or transport 'tcp' or 'verbs'",
                ));
            }
            return Ok(Target {
                kind,
                dir: need(&opts.dir, "dir", kind)?,
                peer: need(&opts.store, "store", kind)?,
            });
        }
        if opts.dir.is_some() {
            return Err(invalid(
                "connect: tcp and verbs attach to an address, not a directory: give 'address'",
            ));
        }
        let address = need(&opts.address, "address", kind)?;
        // Resolving here reports a malformed address as such, not as a peer gone.
        socket_addr("connect", &address)?;
        Ok(Target {
            kind,
            dir: String::new(),
            peer: address,
        })
    }

    /// Connects (blocking: run it off the JS thread).
    pub fn attach(&self, secret: &[u8]) -> std::result::Result<AnyPeer, Error> {
        AnyTransport::new(self.kind, Path::new(&self.dir), secret)
            .and_then(|t| t.attach(&self.peer))
            .map_err(js_err)
    }
}
