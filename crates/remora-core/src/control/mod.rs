//! The control channel: how a peer learns where an object lives (Heron's `query_obj_addr`)
//! before reading it one-sidedly. Every connection starts with the cluster's handshake
//! (`handshake`); the server is the shared event loop (`server`) on the store's Unix socket.
//!
//! Frames are a little-endian `u32` length then the payload, at most [`MAX_FRAME`] bytes.
//! Requests: `[op u8] body`. Replies: `[0] body` or `[1] utf-8 message`. A malformed request
//! gets an error reply, the connection is closed, and the server keeps serving others.
//!
//! `frame` and `cursor` are the wire layer the `tcp` transport shares; `lookup` the one
//! request; `server` and `client` the two ends.

mod client;
mod cursor;
#[cfg(test)]
mod fixture;
mod frame;
mod lookup;
mod server;

pub use crate::handshake::{check_secret, handshake_client, handshake_server, MIN_SECRET};
pub use client::{ControlClient, CALL_TIMEOUT};
pub use cursor::Cursor;
pub(crate) use frame::read_frame_into;
pub use frame::{read_frame, write_frame, MAX_FRAME};
pub(crate) use lookup::{answer, decode_lookup, encode_lookup};
pub use server::ControlServer;

pub const SOCKET_NAME: &str = "control.sock";

pub(crate) const OP_LOOKUP: u8 = 1;
pub(crate) const REPLY_OK: u8 = 0;
pub(crate) const REPLY_ERR: u8 = 1;
