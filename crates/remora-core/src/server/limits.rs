//! What a server lets its peers hold, and what it has seen.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How much a server lets its peers hold. The defaults suit a cluster of up to a few
/// hundred members per owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections, authenticated or not. Default 256.
    pub max_connections: usize,
    /// Connections still in their handshake. Default 32.
    pub max_unauthenticated: usize,
    /// Time from accept to the end of the handshake. Default 5 s.
    pub handshake_timeout: Duration,
    /// Time a connection may leave its replies unread before it is closed. Default 30 s.
    pub stall_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 256,
            max_unauthenticated: 32,
            handshake_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerLimits {
    /// At least one connection of each kind, so a server is always reachable.
    pub(super) fn normalized(mut self) -> Self {
        self.max_connections = self.max_connections.max(1);
        self.max_unauthenticated = self.max_unauthenticated.clamp(1, self.max_connections);
        self
    }
}

/// What a server has seen, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections open now.
    pub open: usize,
    /// Of those, still in their handshake.
    pub unauthenticated: usize,
    pub accepted: u64,
    /// Closed at once: over a cap.
    pub refused: u64,
    /// Closed in their handshake to make room for an address that held none.
    pub evicted: u64,
    /// Closed at the handshake deadline.
    pub timed_out: u64,
    /// Failed the handshake (not a Remora peer, or the wrong secret).
    pub rejected: u64,
}

/// The loop's side of [`ServerStats`]: it writes, `Handle::stats` reads.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) open: AtomicUsize,
    pub(super) unauthenticated: AtomicUsize,
    pub(super) accepted: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) evicted: AtomicU64,
    pub(super) timed_out: AtomicU64,
    pub(super) rejected: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
