//! A peer's end of the control channel: one blocking Unix-socket connection, authenticated
//! before its first request.

use super::{
    decode_lookup, encode_lookup, read_frame, write_frame, OP_LOOKUP, REPLY_ERR, REPLY_OK,
};
use crate::error::{Error, IoContext, Result};
use crate::handshake::{check_secret, handshake_client_within, Timeouts};
use crate::store::Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A client whose peer does not finish the handshake in this time gives up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A peer's end of the control channel.
pub struct ControlClient {
    stream: UnixStream,
    peer: String,
}

impl ControlClient {
    pub fn connect(path: &Path, secret: &[u8]) -> Result<Self> {
        check_secret(secret)?;
        let peer = format!("control socket {}", path.display());
        let mut stream = UnixStream::connect(path).map_err(|e| Error::PeerGone {
            peer: peer.clone(),
            why: e.to_string(),
        })?;
        handshake_client_within(&mut stream, secret, &peer, HANDSHAKE_TIMEOUT)?;
        stream
            .set_timeouts(None)
            .ctx(|| "clearing a timeout".into())?;
        Ok(ControlClient { stream, peer })
    }

    fn call(&mut self, req: &[u8]) -> Result<Vec<u8>> {
        let gone = |e: &dyn std::fmt::Display| Error::PeerGone {
            peer: self.peer.clone(),
            why: e.to_string(),
        };
        write_frame(&mut self.stream, req).map_err(|e| gone(&e))?;
        let reply =
            read_frame(&mut self.stream, &self.peer)?.ok_or_else(|| gone(&"connection closed"))?;
        match reply.split_first() {
            Some((&REPLY_OK, body)) => Ok(body.to_vec()),
            Some((&REPLY_ERR, msg)) => Err(Error::Remote {
                peer: self.peer.clone(),
                message: String::from_utf8_lossy(msg).into_owned(),
            }),
            _ => Err(Error::Frame {
                peer: self.peer.clone(),
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
