//! One interface for "attach to a peer, read or write its registered memory at
//! (region, offset, length)", whatever carries the bytes.

use crate::error::Result;
use crate::region::{Region, RegionInfo};
use crate::slot::{self, Reject, Snapshot};
use crate::store::Addr;
use std::sync::Arc;

pub mod any;
pub mod shm;
pub mod tcp;
pub mod verbs;

pub use any::{AnyPeer, AnyServer, AnyTransport, ServeError, TransportKind, UnknownTransport};

/// A peer's registered memory, as seen from this process.
pub trait RemoteMemory: Send + Sync {
    /// The peer, for messages.
    fn peer(&self) -> &str;
    /// The header of one of the peer's regions (fetched once, then cached by callers).
    fn region_info(&self, region: u32) -> Result<RegionInfo>;
    /// Copies bytes of a region. The copy may interleave with the owner's writes: callers
    /// validate what they read (see `slot`).
    fn read(&self, region: u32, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes bytes into a region the peer made remote-writable.
    fn write(&self, region: u32, offset: u64, data: &[u8]) -> Result<()>;
    /// Asks the peer, over its control channel, where objects live (`query_obj_addr`).
    fn lookup(&self, ids: &[&[u8]]) -> Result<Vec<Option<Addr>>>;

    /// The region mapped into this process, when the transport reads by loading from a
    /// mapping (`shm`): readers then validate slots in place with the sequence words alone
    /// (`slot::read_seqlocked`) instead of copying them and checking checksums. Wrappers of a
    /// transport must pass this on, or reads fall back to byte copies.
    fn mapped(&self, region: u32) -> Result<Option<Arc<Region>>> {
        let _ = region;
        Ok(None)
    }

    /// Copies and validates one slot of size class `class`. The outer error is the transport
    /// failing; the inner one a copy to retry. Transports that move bytes copy them and rely
    /// on the checksums; `shm` overrides this to also re-check sequence words in place.
    fn read_slot(
        &self,
        region: u32,
        offset: u64,
        class: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Result<Snapshot, Reject>> {
        buf.resize(slot::slot_bytes(class), 0);
        self.read(region, offset, buf)?;
        Ok(slot::decode_slot(buf, class))
    }
}

// A boxed memory is the memory: callers that pick among memories of different kinds at run
// time (`Box<dyn RemoteMemory>`) keep each one's overrides, which a hand-written wrapper
// would have to remember to pass on.
impl<M: RemoteMemory + ?Sized> RemoteMemory for Box<M> {
    fn peer(&self) -> &str {
        (**self).peer()
    }
    fn region_info(&self, region: u32) -> Result<RegionInfo> {
        (**self).region_info(region)
    }
    fn read(&self, region: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read(region, offset, buf)
    }
    fn write(&self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        (**self).write(region, offset, data)
    }
    fn lookup(&self, ids: &[&[u8]]) -> Result<Vec<Option<Addr>>> {
        (**self).lookup(ids)
    }
    fn mapped(&self, region: u32) -> Result<Option<Arc<Region>>> {
        (**self).mapped(region)
    }
    fn read_slot(
        &self,
        region: u32,
        offset: u64,
        class: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Result<Snapshot, Reject>> {
        (**self).read_slot(region, offset, class, buf)
    }
}

/// A way to reach peers' memory: `shm` on one host, `tcp` anywhere, `verbs` over RDMA.
pub trait Transport: Send + Sync {
    type Peer: RemoteMemory;
    fn name(&self) -> &'static str;
    /// Attaches to the peer named `peer` (for `shm`, a store name in the cluster directory).
    fn attach(&self, peer: &str) -> Result<Self::Peer>;
}
