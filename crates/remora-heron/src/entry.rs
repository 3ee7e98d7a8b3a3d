//! One coordination entry: 16 bytes, two little-endian words, 16-byte aligned so no entry
//! straddles a cache line (the authors' 6-byte entries do).
//!
//! - word 0: the transaction's timestamp;
//! - word 1: the phase in the low 32 bits, a check in the high 32 bits: 32 bits of xxh3 over
//!   (timestamp, phase, entry index).
//!
//! Transports write aligned words atomically but not the two words together, so a reader may
//! see the new timestamp with the old phase word: the check then fails and the reader reads
//! again. The index in the check also rejects an entry written at the wrong place. The
//! all-zero entry is the initial one (nothing reached yet).

use crate::error::{Error, Result};

pub const ENTRY_BYTES: usize = 16;
/// The doorbell word (see `doorbell`) and the rest of its cache line.
pub const DOORBELL_BYTES: usize = 64;
/// Phase 2 of Algorithm 1: the transaction was delivered (and everything before it executed).
pub const PHASE_DELIVERED: u32 = 2;
/// Phase 4: the transaction was executed.
pub const PHASE_EXECUTED: u32 = 4;

/// Largest cluster a region describes: far beyond what majority waits make sense for.
pub const MAX_PARTITIONS: u32 = 1024;
pub const MAX_REPLICAS: u32 = 31;

/// What one replica last announced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub ts: u64,
    pub phase: u32,
}

impl Entry {
    /// Whether this entry shows phase `phase` of `ts` reached: the same transaction at that
    /// phase or later, or any later transaction (replicas of a partition handle the
    /// transactions addressed to it in timestamp order, so a later one implies this one).
    pub fn reached(&self, ts: u64, phase: u32) -> bool {
        self.ts > ts || (self.ts == ts && self.phase >= phase)
    }
}

fn check(ts: u64, phase: u32, index: usize) -> u32 {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&ts.to_le_bytes());
    bytes[8..12].copy_from_slice(&phase.to_le_bytes());
    bytes[12..].copy_from_slice(&(index as u64).to_le_bytes());
    (xxhash_rust::xxh3::xxh3_64(&bytes) >> 32) as u32
}

pub fn encode(entry: Entry, index: usize) -> [u8; ENTRY_BYTES] {
    let mut out = [0u8; ENTRY_BYTES];
    out[..8].copy_from_slice(&entry.ts.to_le_bytes());
    let word = u64::from(entry.phase) | (u64::from(check(entry.ts, entry.phase, index)) << 32);
    out[8..].copy_from_slice(&word.to_le_bytes());
    out
}

/// The entry, or `None` if the bytes are torn (or were never written by this protocol).
pub fn decode(bytes: &[u8; ENTRY_BYTES], index: usize) -> Option<Entry> {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[..8]);
    let ts = u64::from_le_bytes(w);
    w.copy_from_slice(&bytes[8..]);
    let word = u64::from_le_bytes(w);
    if ts == 0 && word == 0 {
        return Some(Entry::default());
    }
    let phase = word as u32;
    ((word >> 32) as u32 == check(ts, phase, index)).then_some(Entry { ts, phase })
}

/// Partitions × replicas: where each entry lives in a coordination region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub partitions: u32,
    pub replicas: u32,
}

impl Layout {
    pub fn new(partitions: u32, replicas: u32) -> Result<Self> {
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(Error::BadLayout(format!(
                "partitions must be 1 to {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(Error::BadLayout(format!(
                "replicas per partition must be 1 to {MAX_REPLICAS}, got {replicas}"
            )));
        }
        Ok(Layout {
            partitions,
            replicas,
        })
    }

    pub fn entries(&self) -> usize {
        (self.partitions * self.replicas) as usize
    }

    /// Entries, then the doorbell on a cache line of its own (peers bump it on every
    /// announcement; it should not move the line the owner scans entries on).
    pub fn bytes(&self) -> usize {
        self.doorbell_offset() + DOORBELL_BYTES
    }

    /// Where the doorbell word lives, from the end of the region header.
    pub fn doorbell_offset(&self) -> usize {
        (self.entries() * ENTRY_BYTES).next_multiple_of(DOORBELL_BYTES)
    }

    /// Index of the entry of `replica` of `partition` (both in range).
    pub fn index(&self, partition: u32, replica: u32) -> usize {
        (partition * self.replicas + replica) as usize
    }

    pub fn majority(&self) -> usize {
        self.replicas as usize / 2 + 1
    }

    pub fn check_partition(&self, partition: u32) -> Result<()> {
        if partition >= self.partitions {
            return Err(Error::BadRequest(format!(
                "partition {partition} out of range: the cluster has {}",
                self.partitions
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_at_their_index_only() {
        let e = Entry {
            ts: 0x0123_4567_89ab_cdef,
            phase: PHASE_EXECUTED,
        };
        let bytes = encode(e, 5);
        assert_eq!(decode(&bytes, 5), Some(e));
        assert_eq!(decode(&bytes, 6), None);
        assert_eq!(decode(&[0; ENTRY_BYTES], 3), Some(Entry::default()));
    }

    #[test]
    fn a_torn_entry_is_rejected() {
        let old = encode(
            Entry {
                ts: 41,
                phase: PHASE_EXECUTED,
            },
            2,
        );
        let new = encode(
            Entry {
                ts: 42,
                phase: PHASE_DELIVERED,
            },
            2,
        );
        let mut torn = new;
        torn[8..].copy_from_slice(&old[8..]);
        assert_eq!(decode(&torn, 2), None);
        let mut torn = old;
        torn[8..].copy_from_slice(&new[8..]);
        assert_eq!(decode(&torn, 2), None);
    }

    #[test]
    fn reached_counts_later_transactions() {
        let e = Entry {
            ts: 10,
            phase: PHASE_DELIVERED,
        };
        assert!(e.reached(10, PHASE_DELIVERED));
        assert!(!e.reached(10, PHASE_EXECUTED));
        assert!(e.reached(9, PHASE_EXECUTED));
        assert!(!e.reached(11, PHASE_DELIVERED));
    }

    #[test]
    fn layouts_are_bounded() {
        let l = Layout::new(2, 3).unwrap();
        assert_eq!((l.entries(), l.bytes(), l.majority()), (6, 192, 2));
        assert_eq!(l.doorbell_offset(), 128);
        assert_eq!(l.index(1, 2), 5);
        assert_eq!(
            Layout::new(0, 3).unwrap_err().to_string(),
            "bad coordination layout: partitions must be 1 to 1024, got 0"
        );
        assert_eq!(
            Layout::new(2, 32).unwrap_err().to_string(),
            "bad coordination layout: replicas per partition must be 1 to 31, got 32"
        );
    }
}
