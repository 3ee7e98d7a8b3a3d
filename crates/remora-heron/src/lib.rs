//! Heron's coordination memory (Heron, Section III-A and Algorithm 1): every replica owns a
//! remote-writable region with one entry per (partition, replica) of the cluster; a replica
//! announces "I reached phase k of transaction ts" by writing its own entry, one-sidedly, in the
//! region of every replica of every partition the transaction involves, and waits until its own
//! region shows a majority of every involved partition there, plus a short grace wait for the
//! rest. A replica that fell behind catches up by state transfer (`transfer`, Algorithm 3),
//! one-sided too. No Node here: `bindings/node` runs the waits on native threads.

pub mod coord;
pub mod doorbell;
pub mod entry;
pub mod error;
pub mod ring;
pub mod transfer;

pub use coord::{Coordinator, Member, Pending, Progress, Reached, WaitOptions, DEFAULT_SPIN};
pub use entry::{Entry, Layout, ENTRY_BYTES, PHASE_DELIVERED, PHASE_EXECUTED};
pub use error::{Error, Result};
pub use ring::{Dropped, Record, RecordIn, RingError, RingLayout, RingProducer, RingReader};
pub use transfer::{Request, Transfer, TransferLayout};
