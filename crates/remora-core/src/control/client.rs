//! A peer's end of the control channel: one blocking Unix-socket connection, authenticated
//! before its first request, whose every reply is bounded in time.

use super::{
    decode_lookup, encode_lookup, read_frame, write_frame, OP_LOOKUP, REPLY_ERR, REPLY_OK,
};
use crate::error::{Error, IoContext, Result};
use crate::handshake::{check_secret, handshake_client_within, Timeouts};
use crate::store::Addr;
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A client whose peer does not finish the handshake in this time gives up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call waits for the owner's reply before the owner counts as gone, as long as a
/// `tcp` peer's default: an owner that is stopped (or hung) must not hold its reader, and the
/// thread the reader runs on, until it resumes.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer's end of the control channel. After a call fails the connection is done: the owner
/// closes it after an error reply, and after a silence a late reply would answer the next
/// request. Every later call fails too: connect again.
pub struct ControlClient {
    stream: UnixStream,
    peer: String,
    timeout: Duration,
    broken: bool,
}

impl ControlClient {
    /// Connects with replies bounded by [`CALL_TIMEOUT`].
    pub fn connect(path: &Path, secret: &[u8]) -> Result<Self> {
        Self::connect_within(path, secret, CALL_TIMEOUT)
    }

    /// Connects with the handshake and every reply bounded by `timeout` (the handshake by
    /// five seconds at most).
    pub fn connect_within(path: &Path, secret: &[u8], timeout: Duration) -> Result<Self> {
        check_secret(secret)?;
        let timeout = timeout.max(Duration::from_millis(1));
        let peer = format!("control socket {}", path.display());
        let mut stream = UnixStream::connect(path).map_err(|e| Error::PeerGone {
            peer: peer.clone(),
            why: e.to_string(),
        })?;
        handshake_client_within(&mut stream, secret, &peer, HANDSHAKE_TIMEOUT.min(timeout))?;
        stream
            .set_timeouts(Some(timeout))
            .ctx(|| "bounding the control channel's replies".into())?;
        Ok(ControlClient {
            stream,
            peer,
            timeout,
            broken: false,
        })
    }

    fn call(&mut self, req: &[u8]) -> Result<Vec<u8>> {
        if self.broken {
            return Err(Error::PeerGone {
                peer: self.peer.clone(),
                why: "an earlier call on this connection failed".into(),
            });
        }
        let r = self.exchange(req);
        self.broken = r.is_err();
        r
    }

    fn exchange(&mut self, req: &[u8]) -> Result<Vec<u8>> {
        let peer = &self.peer;
        let timeout = self.timeout;
        let gone = |why: String| Error::PeerGone {
            peer: peer.clone(),
            why,
        };
        let silent = |e: Error| match e {
            Error::Io { source, .. }
                if matches!(source.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                gone(format!("no reply within {timeout:?}"))
            }
            e => e,
        };
        write_frame(&mut self.stream, req).map_err(|e| gone(e.to_string()))?;
        let reply = read_frame(&mut self.stream, peer)
            .map_err(silent)?
            .ok_or_else(|| gone("connection closed".into()))?;
        match reply.split_first() {
            Some((&REPLY_OK, body)) => Ok(body.to_vec()),
            Some((&REPLY_ERR, msg)) => Err(Error::Remote {
                peer: peer.clone(),
                message: String::from_utf8_lossy(msg).into_owned(),
            }),
            _ => Err(Error::Frame {
                peer: peer.clone(),
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
