//! Remora's native core: registered memory regions, the dual-versioned object store that lives
//! in them, the control channel peers use to find objects, and the transports that read a
//! peer's memory one-sidedly. No Node here: `bindings/node` wraps this crate.

pub mod adopt;
pub mod control;
pub mod error;
mod handshake;
mod index;
pub mod region;
pub mod remote;
pub mod remote_versions;
mod server;
pub mod slot;
pub mod store;
pub mod stress;
pub mod transport;
pub mod tx;

pub use adopt::{AdoptError, AdoptRun, Stop, Table, TableError};
pub use control::{ControlClient, ControlServer};
pub use error::{Error, Result};
pub use remote::{RemoteStats, RemoteStore};
pub use remote_versions::Fresh;
pub use server::{ServerLimits, ServerStats};
pub use slot::Lookup;
pub use store::{
    Addr, Current, Store, StoreConfig, StoreStats, CURRENT_ABSENT, CURRENT_DELETED, CURRENT_VALUE,
};
pub use transport::shm::{ShmPeer, ShmTransport};
pub use transport::tcp::{TcpPeer, TcpServer, TcpTransport};
pub use transport::verbs::{VerbsPeer, VerbsServer, VerbsTransport};
pub use transport::{
    AnyPeer, AnyServer, AnyTransport, RemoteMemory, Transport, TransportKind, UnknownTransport,
};
