//! TCP, for hosts without RDMA hardware: the owner runs a [`TcpServer`] whose native thread
//! copies bytes out of (and into) its registered regions on request, so a read still never
//! involves the owner's application thread. Peers copy slots with [`TcpPeer`] and validate
//! the copies exactly as they would copies delivered by RDMA (see `slot`).
//!
//! Every connection starts with the cluster's HMAC handshake (`handshake`), then carries
//! frames as the control channel does (little-endian `u32` length, payload of at most
//! [`MAX_FRAME`](crate::control::MAX_FRAME) bytes):
//!
//! * request: `[request id u64][op u8] body`
//!   - `OP_LOOKUP` (1): the control channel's lookup body, answered by the same code;
//!   - `OP_INFO` (2): `region u32` → the region's 64-byte header;
//!   - `OP_READ` (3): `region u32, offset u64, len u32` (len ≤ [`MAX_READ`]) → `len` bytes;
//!   - `OP_WRITE` (4): `region u32, offset u64` then the bytes (at most [`MAX_WRITE`]) → empty.
//! * reply: `[request id u64][0] body` or `[request id u64][1] utf-8 message`.
//!
//! The server answers a connection's requests in order, so a client may pipeline. A request
//! that parses but cannot be served (no such region, out of bounds, not writable, too long)
//! gets an error reply and the connection carries on; a frame that does not parse gets an
//! error reply when it has a request id and closes the connection. Connections are served by
//! the shared event loop (`server`): one thread per server, whatever the number of peers,
//! with the limits of [`ServerLimits`](crate::ServerLimits).
//!
//! `wire` is the format both ends share, `owner` the server, `peer` the client.

mod owner;
mod peer;
mod wire;

pub use owner::TcpServer;
pub(crate) use owner::{ConnExtension, Extension};
pub use peer::{TcpPeer, TcpTransport, DEFAULT_TIMEOUT};
pub use wire::{MAX_READ, MAX_WRITE};
