//! The accept/handshake/serve skeleton both servers share: the control channel (Unix socket)
//! and the `tcp` transport (TCP). A service only answers frames; everything a hostile peer
//! could use to hold the owner's resources is handled here, once.
//!
//! **One event-loop thread per server**, nonblocking sockets (`mio`, epoll on Linux). A
//! request is a bounded memory copy (at most one frame, 1 MiB) or a lookup in the store's
//! index, never a wait, so handing it to a worker thread would only add a thread wake-up (a
//! few µs) to every read, and on the 2-core hosts this runs on a pool would have no core to
//! run on anyway. An idle connection, authenticated or not, costs a slot and a few hundred
//! bytes, never a thread. Fairness between busy connections: each gets a turn of at most
//! [`FRAMES_PER_TURN`](conn::FRAMES_PER_TURN) frames, and stops taking requests while
//! [`OUT_HIGH`](conn::OUT_HIGH) bytes of its replies wait for it to read them.
//!
//! Limits ([`ServerLimits`]):
//! - a deadline for the **whole** handshake, counted from the connection's accept;
//! - at most `max_connections` connections and `max_unauthenticated` of them still in their
//!   handshake. Over either cap a new connection is closed at once, unless an address holds
//!   at least two more unauthenticated connections than the newcomer's: then its oldest one
//!   is closed to make room. So a squatting address never starves one that holds none (a
//!   member), an authenticated connection is never displaced, and a member's connection in
//!   its handshake is displaced by no single newcomer;
//! - a connection whose replies sit unread for `stall_timeout` is closed.
//!
//! `serve_accepts` starts a server; `event_loop` accepts, admits and expires connections;
//! `conn` runs one connection's turn (handshake, frames, replies); `socket` wraps the Unix and
//! TCP sockets alike; `limits` holds the caps and counters, `log` the rate-limited log.

mod conn;
mod event_loop;
mod limits;
mod log;
mod socket;

use crate::control::MAX_FRAME;
use crate::error::{Error, Result};
use crate::handshake::check_secret;
use limits::Counters;
use mio::Waker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use limits::{ServerLimits, ServerStats};
pub(crate) use socket::Listener;

/// What to do with a connection after one of its frames.
pub(crate) enum Flow {
    Continue,
    /// Send what was queued, then close; the error, if any, is logged.
    Close(Option<Error>),
}

/// The requests a server answers, on connections that passed the handshake.
pub(crate) trait Service: Send + 'static {
    /// A connection's own state, dropped when it closes.
    type Conn: Send + 'static;
    fn open(&self, peer: &str) -> Self::Conn;
    /// Answers one frame's payload, appending whole reply frames to `out`.
    fn frame(&self, conn: &mut Self::Conn, payload: &[u8], out: &mut Vec<u8>, peer: &str) -> Flow;
}

/// Appends one frame (length, payload) to `out`. Payloads are built under [`MAX_FRAME`].
pub(crate) fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// A running server's thread: dropping it stops the loop and closes every connection.
pub(crate) struct Handle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    pub(crate) fn stats(&self) -> ServerStats {
        let c = &self.counters;
        ServerStats {
            open: c.open.load(Ordering::Relaxed),
            unauthenticated: c.unauthenticated.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if self.waker.wake().is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        // A waker that failed (it cannot on Linux: an eventfd write) leaves the thread
        // detached; it sees `stop` on its next event.
    }
}

/// Starts a server, the same steps for every kind: the secret is checked before anything is
/// bound (so a bad one leaves no socket behind, nor removes one), `bind` makes the listener
/// (and whatever else the caller wants from binding, such as the port picked), and the loop
/// runs on a thread named `remora-{kind}-{store}`. `kind` and `store` name peers in messages
/// (`"tcp peer #3 (10.0.0.2:4711) of store 'x'"`).
pub(crate) fn serve_accepts<S: Service, T>(
    bind: impl FnOnce() -> Result<(Listener, T)>,
    service: S,
    secret: &[u8],
    limits: ServerLimits,
    kind: &'static str,
    store: &str,
) -> Result<(Handle, T)> {
    check_secret(secret)?;
    let (listener, bound) = bind()?;
    let handle = event_loop::spawn(listener, service, secret, limits, kind, store)?;
    Ok((handle, bound))
}
