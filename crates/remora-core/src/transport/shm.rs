//! Shared memory on one host: a peer's regions are files in the cluster's private directory,
//! mapped into this process. A read is a load from the mapping: the owner's CPU does nothing.

use super::{RemoteMemory, Transport};
use crate::control::{check_secret, ControlClient, SOCKET_NAME};
use crate::error::Result;
use crate::region::{AttachedRegions, Region, RegionInfo};
use crate::slot::{self, Reject, Snapshot};
use crate::store::{check_name, Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct ShmTransport {
    dir: PathBuf,
    secret: Vec<u8>,
}

impl ShmTransport {
    /// `dir` is the cluster directory; `secret` authenticates us to peers' control channels.
    pub fn new(dir: impl Into<PathBuf>, secret: &[u8]) -> Result<Self> {
        check_secret(secret)?;
        Ok(ShmTransport {
            dir: dir.into(),
            secret: secret.to_vec(),
        })
    }
}

impl Transport for ShmTransport {
    type Peer = ShmPeer;

    fn name(&self) -> &'static str {
        "shm"
    }

    fn attach(&self, peer: &str) -> Result<ShmPeer> {
        check_name(peer)?;
        let dir = self.dir.join(peer);
        let control = ControlClient::connect(&dir.join(SOCKET_NAME), &self.secret)?;
        Ok(ShmPeer {
            name: format!("shm peer '{peer}'"),
            regions: AttachedRegions::new(dir),
            control: Mutex::new(control),
        })
    }
}

pub struct ShmPeer {
    name: String,
    regions: AttachedRegions,
    control: Mutex<ControlClient>,
}

impl ShmPeer {
    fn region(&self, id: u32) -> Result<Arc<Region>> {
        self.regions.get(id)
    }
}

impl RemoteMemory for ShmPeer {
    fn peer(&self) -> &str {
        &self.name
    }

    fn region_info(&self, region: u32) -> Result<RegionInfo> {
        Ok(self.region(region)?.info)
    }

    fn read(&self, region: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.region(region)?.read(offset, buf)
    }

    fn write(&self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        self.region(region)?.write(offset, data)
    }

    fn read_slot(
        &self,
        region: u32,
        offset: u64,
        class: usize,
        _buf: &mut Vec<u8>,
    ) -> Result<Result<Snapshot, Reject>> {
        let r = self.region(region)?;
        let words = r.words_at(offset, slot::slot_bytes(class))?;
        Ok(slot::read_slot(words, class))
    }

    fn mapped(&self, region: u32) -> Result<Option<Arc<Region>>> {
        self.region(region).map(Some)
    }

    fn lookup(&self, ids: &[&[u8]]) -> Result<Vec<Option<Addr>>> {
        self.control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(ids)
    }
}
