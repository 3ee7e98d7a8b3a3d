//! The owner's end of the control channel: lookups answered on the shared event loop
//! (`crate::server`), on the store's Unix socket.

use super::{answer, MAX_FRAME, REPLY_ERR, SOCKET_NAME};
use crate::error::Result;
use crate::server::{self, put_frame, Flow, Listener, ServerLimits, ServerStats, Service};
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

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
        let path = store.dir().join(SOCKET_NAME);
        let service = ControlService {
            store: Arc::downgrade(store),
        };
        let bind = || {
            // A socket file left behind (by an owner that died, say) cannot be bound over.
            let _ = std::fs::remove_file(&path);
            Ok((Listener::unix(&path)?, ()))
        };
        let (server, ()) =
            server::serve_accepts(bind, service, secret, limits, "control", store.name())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fixture::Fixture;
    use crate::control::read_frame;
    use proptest::collection::vec;
    use proptest::prelude::*;

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
