//! Remora's embedded sequencer log: a single-node, durable, append-only log that gives every
//! transaction a strictly increasing 64-bit timestamp and delivers each digest once.
//!
//! ```no_run
//! use remora_log::{Log, Options};
//! # fn main() -> remora_log::Result<()> {
//! let mut log = Log::open("/var/lib/remora/log", Options::default())?;
//! let done = log.append(&[([1u8; 32], b"tx one"), ([2u8; 32], b"tx two")])?;
//! assert_eq!((done[0].ts, done[1].ts), (1, 2)); // durable: fsync happened before return
//! for entry in log.read_from(1)? {
//!     let entry = entry?; // replay after a restart, in timestamp order
//!     println!("{} {:?}", entry.ts, entry.bytes);
//! }
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **Timestamps** start at 1 and increase by one per appended transaction across the whole
//!   log and across reopens; each transaction of a batch gets the next one.
//! - **Durability**: one [`Log::append`] call is one record, written with one `write` and made
//!   durable with one `fdatasync` before the call returns (group commit: the caller batches).
//!   [`Log::append_many`] takes several batches, with the results one `append` each would
//!   give, and writes them as one record with one `fdatasync` (a caller collecting batches
//!   while the last sync runs). Creating a segment also syncs the directory. Callers needing
//!   lower latency batch more transactions per call, never fewer syncs. A record is written
//!   only after the one before it is synced, so a crash can tear only the last one.
//! - **Recovery**: [`Log::open`] verifies every record of every segment. Damage at the end of
//!   the *last* segment with no valid record after it is the remains of an append that never
//!   returned (a torn write); it is cut off and reported in [`Recovery`]. Any other damage
//!   (in an earlier segment, or followed by a valid record, or a break in the timestamps) is
//!   [`Error::Corrupt`] naming the file and offset: acknowledged data is never dropped
//!   silently. A failed write or fsync makes the `Log` refuse appends ([`Error::Poisoned`]);
//!   reopening re-verifies what reached the disk.
//! - **Exactly once**: an append that returned is in the log after any crash; an append that
//!   failed or never returned may or may not be (its outcome is unknown, as with any remote
//!   sequencer). Resubmitting the same digest is what makes that safe: within the dedup window
//!   it is reported as a duplicate with its first timestamp instead of being appended again.
//!   The consumer applies entries in timestamp order and remembers the last timestamp it
//!   applied, replaying with [`Log::read_from`] from the one after.
//!
//! # The dedup window
//!
//! Duplicate detection remembers the digests of the last [`Options::dedup_window`] appended
//! transactions (default 1,000,000, about 80 bytes of memory each), rebuilt from the log on
//! open. A digest is a duplicate if it is among those, or earlier in the same batch. **A
//! duplicate older than the window is appended again** with a new timestamp, as in other
//! engines with bounded dedup (Kafka's producer state, NATS JetStream's duplicate window):
//! clients must not resubmit transactions older than the window, or the application must
//! tolerate replays (e.g. by nonces checked at execution).
//!
//! # Files
//!
//! The directory (created `0700`) holds `LOCK` (an exclusive `flock` held while a `Log` is
//! open: a second `open` gets [`Error::Locked`]) and segment files (`0600`) named
//! `seg-<first timestamp, 20 digits>.log`. A new segment starts when the next record would
//! take the current one past [`Options::segment_size`]; a record larger than that gets a
//! segment of its own. Segments are never deleted by this crate: the whole history is kept.
//! Byte layout:
//!
//! ```text
//! segment header (32 bytes)  magic "RMRALOG\0" | version u32 = 1 | reserved u32
//!                            | first_ts u64 | xxh3_64 of the previous 24 bytes
//! record                     len u32 | checksum u64 | body (len bytes)
//!   checksum                 xxh3_64 of body, seeded with len
//!   body                     first_ts u64 | count u32 | count x (digest [u8; 32] | n u32 | n bytes)
//! ```
//!
//! All integers are little-endian. Unix only (permissions, directory fsync, `flock`).

#[cfg(not(unix))]
compile_error!("remora-log supports Unix only: it relies on file modes and directory fsync");

mod dedup;
mod error;
mod format;
mod log;
mod reader;
mod segment;

pub use error::{Error, Result};
pub use format::Digest;
pub use log::{Appended, Log, Recovery, TornTail};
pub use reader::{Entry, Reader};

/// Tunables of [`Log::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// A new segment file starts when the next record would take the current one past this
    /// many bytes. Default 64 MiB.
    pub segment_size: u64,
    /// Largest transaction accepted, in bytes (at most `u32::MAX`). Default 4 MiB.
    pub max_tx_size: usize,
    /// How many of the most recently appended transactions are remembered for duplicate
    /// detection (0: only duplicates within one batch are caught). At most 2^30; default 1,000,000.
    pub dedup_window: usize,
    /// Zeros written ahead of the last segment's last record, in runs of this many bytes (0:
    /// none). An fsync after a write that grows the file must also commit its new size; one
    /// after a write into space already written flushes the data alone (docs/sequencer.md has
    /// the measurements). Recovery reads zeros after the last record as free space, not
    /// damage. At most 1 GiB. Default 0 (files hold records only); the node uses 4 MiB.
    pub preallocate: u64,
}

/// The largest dedup window: its index keeps timestamps modulo 2^31 (`dedup.rs`).
const MAX_DEDUP_WINDOW: usize = 1 << 30;

/// The most zeros written ahead at once: more would only fill the disk.
const MAX_PREALLOCATE: u64 = 1 << 30;

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
            max_tx_size: 4 << 20,
            dedup_window: 1_000_000,
            preallocate: 0,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<()> {
        if self.max_tx_size as u64 > u64::from(u32::MAX) {
            return Err(Error::InvalidOptions("max_tx_size must fit in a u32"));
        }
        if self.segment_size == 0 {
            return Err(Error::InvalidOptions("segment_size must be positive"));
        }
        if self.preallocate > MAX_PREALLOCATE {
            return Err(Error::InvalidOptions("preallocate must be at most 1 GiB"));
        }
        if self.dedup_window > MAX_DEDUP_WINDOW {
            return Err(Error::InvalidOptions("dedup_window must be at most 2^30"));
        }
        Ok(())
    }
}
