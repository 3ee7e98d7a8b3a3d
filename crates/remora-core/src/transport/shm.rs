//! Shared memory on one host: a peer's regions are files in the cluster's private directory,
//! mapped into this process. A read is a load from the mapping: the owner's CPU does nothing.

use super::{RemoteMemory, Transport};
use crate::control::{check_secret, ControlClient, CALL_TIMEOUT, SOCKET_NAME};
use crate::error::Result;
use crate::region::{AttachedRegions, Region, RegionInfo};
use crate::slot::{self, Reject, Snapshot};
use crate::store::{check_name, Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct ShmTransport {
    dir: PathBuf,
    secret: Vec<u8>,
    timeout: Duration,
}

impl ShmTransport {
    /// `dir` is the cluster directory; `secret` authenticates us to peers' control channels.
    pub fn new(dir: impl Into<PathBuf>, secret: &[u8]) -> Result<Self> {
        check_secret(secret)?;
        Ok(ShmTransport {
            dir: dir.into(),
            secret: secret.to_vec(),
            timeout: CALL_TIMEOUT,
        })
    }

    /// How long a peer's control channel may stay silent (handshake, each reply) before the
    /// peer counts as gone; default [`CALL_TIMEOUT`]. Reads and writes are loads and stores
    /// in the mapping and wait on no one.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
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
        let socket = dir.join(SOCKET_NAME);
        let control = ControlClient::connect_within(&socket, &self.secret, self.timeout)?;
        Ok(ShmPeer {
            name: format!("shm peer '{peer}'"),
            regions: AttachedRegions::new(dir),
            socket,
            secret: self.secret.clone(),
            timeout: self.timeout,
            control: Mutex::new(Some(control)),
        })
    }
}

/// A peer's mapped regions and its control channel. A control call that fails drops the
/// connection (the owner closed it, or it is out of step); the next lookup connects again, so
/// a peer that was stopped for a while serves lookups once it resumes.
pub struct ShmPeer {
    name: String,
    regions: AttachedRegions,
    socket: PathBuf,
    secret: Vec<u8>,
    timeout: Duration,
    control: Mutex<Option<ControlClient>>,
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
        let mut guard = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let control = match &mut *guard {
            Some(c) => c,
            None => guard.insert(ControlClient::connect_within(
                &self.socket,
                &self.secret,
                self.timeout,
            )?),
        };
        let r = control.lookup(ids);
        if r.is_err() {
            *guard = None;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{handshake_server, read_frame, write_frame};
    use crate::Error;
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;
    use std::time::Instant;

    const SECRET: &[u8] = b"shm-transport-test-secret-0123";

    /// A test double of a peer's control server: its first connection takes one request and
    /// never answers (an owner stopped mid-call); the next two each answer one request with an
    /// error reply and are closed, as the owner closes a connection after an error reply.
    fn silent_once_owner(socket: PathBuf) -> mpsc::Sender<()> {
        let listener = UnixListener::bind(&socket).unwrap();
        let (done, wait) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut s) = conn else { return };
                if handshake_server(&mut s, SECRET, "test client").is_err() {
                    return;
                }
                if n == 0 {
                    let _ = read_frame(&mut s, "test client");
                    held.push(s);
                    continue;
                }
                // As the owner does after an error reply, the connection is closed.
                if let Ok(Some(_)) = read_frame(&mut s, "test client") {
                    let _ = write_frame(&mut s, b"\x01fresh connection");
                }
                if n == 2 {
                    let _ = wait.recv();
                    return;
                }
            }
        });
        done
    }

    #[test]
    fn a_silent_owner_fails_a_lookup_in_time_and_the_next_lookup_connects_again() {
        let dir = std::env::temp_dir().join(format!("remora-shm-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("owner")).unwrap();
        let done = silent_once_owner(dir.join("owner").join(SOCKET_NAME));
        let timeout = Duration::from_millis(200);
        let peer = ShmTransport::new(&dir, SECRET)
            .unwrap()
            .with_timeout(timeout)
            .attach("owner")
            .unwrap();

        let started = Instant::now();
        let first = peer.lookup(&[b"obj/1"]).unwrap_err();
        assert!(
            matches!(&first, Error::PeerGone { why, .. } if why == &format!("no reply within {timeout:?}")),
            "{first}"
        );
        // Bounded by the timeout, not by the owner: it never answers this connection.
        assert!(started.elapsed() < Duration::from_secs(5));
        // Each answered with an error reply, after which the owner closes the connection: each
        // on a connection of its own.
        for _ in 0..2 {
            let again = peer.lookup(&[b"obj/1"]).unwrap_err();
            assert!(
                matches!(&again, Error::Remote { message, .. } if message == "fresh connection"),
                "{again}"
            );
        }
        let _ = done.send(());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_control_client_whose_call_timed_out_refuses_later_calls() {
        let dir =
            std::env::temp_dir().join(format!("remora-shm-unit-client-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join(SOCKET_NAME);
        let done = silent_once_owner(socket.clone());
        let mut client =
            ControlClient::connect_within(&socket, SECRET, Duration::from_millis(100)).unwrap();
        assert!(matches!(
            client.lookup(&[b"a"]),
            Err(Error::PeerGone { .. })
        ));
        let later = client.lookup(&[b"a"]).unwrap_err().to_string();
        assert!(
            later.contains("an earlier call on this connection failed"),
            "{later}"
        );
        let _ = done.send(());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
