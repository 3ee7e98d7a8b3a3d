//! The torn-read stress workload, shared by the Rust test, the Node test and the benchmark:
//! an owner rewrites objects with self-checking values (sizes vary, so objects also move
//! between size classes and get deleted), while a reader in another process reads them
//! one-sidedly and verifies every value it accepts.

use crate::error::Result;
use crate::remote::{RemoteStore, NO_HANDLE};
use crate::slot::{Lookup, Status, Want};
use crate::store::Store;
use crate::transport::RemoteMemory;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Small, fast, seedable generator for workload choices (not for anything secret).
#[derive(Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

pub fn object_id(index: u32) -> Vec<u8> {
    format!("stress/{index:05}").into_bytes()
}

/// A value that proves itself: `[ts u64][object u32][len u32]` then bytes drawn from a
/// generator seeded by (ts, object). Any mix of two writes breaks the check.
pub fn make_value(object: u32, ts: u64, len: usize) -> Vec<u8> {
    let len = len.max(16);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&ts.to_le_bytes());
    v.extend_from_slice(&object.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    let mut g = XorShift::new(ts ^ (u64::from(object) << 40) ^ 0x9e37_79b9_7f4a_7c15);
    while v.len() < len {
        v.extend_from_slice(&g.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Checks a value read as version `ts` of `object`.
pub fn check_value(object: u32, ts: u64, value: &[u8]) -> std::result::Result<(), String> {
    if value.len() < 16 {
        return Err(format!(
            "object {object} @{ts}: value of {} bytes is too short",
            value.len()
        ));
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&value[..8]);
    let vts = u64::from_le_bytes(w);
    let mut o = [0u8; 4];
    o.copy_from_slice(&value[8..12]);
    let (vobj, vlen) = (u32::from_le_bytes(o), {
        o.copy_from_slice(&value[12..16]);
        u32::from_le_bytes(o) as usize
    });
    if vts != ts || vobj != object || vlen != value.len() {
        return Err(format!(
            "object {object} @{ts}: header says object {vobj} @{vts}, {vlen} bytes (read {})",
            value.len()
        ));
    }
    if make_value(object, ts, vlen) != value {
        return Err(format!(
            "object {object} @{ts}: payload does not match its timestamp"
        ));
    }
    Ok(())
}

/// Sizes that cross size classes often: mostly small, sometimes large enough to move.
fn pick_len(g: &mut XorShift) -> usize {
    match g.below(16) {
        0 => 1500 + g.below(2500) as usize,
        1..=3 => 200 + g.below(800) as usize,
        _ => 16 + g.below(100) as usize,
    }
}

/// Writes every object once at timestamps 1..=objects.
pub fn populate(store: &Store, objects: u32) -> Result<u64> {
    for i in 0..objects {
        let ts = u64::from(i) + 1;
        store.set(&object_id(i), &make_value(i, ts, 64), ts)?;
    }
    Ok(u64::from(objects))
}

/// Owner side: rewrites random objects with fresh timestamps (after `start_ts`) until `stop`
/// is set or `limit` passes; one write in 64 is a delete, and long-deleted objects are purged.
/// Returns (writes, last timestamp).
pub fn run_writer(
    store: &Store,
    objects: u32,
    seed: u64,
    start_ts: u64,
    stop: &AtomicBool,
    limit: Duration,
) -> Result<(u64, u64)> {
    let mut g = XorShift::new(seed);
    let (began, mut ts, mut writes) = (Instant::now(), start_ts, 0u64);
    while !stop.load(Ordering::Relaxed) && began.elapsed() < limit {
        for _ in 0..256 {
            ts += 1;
            let obj = g.below(u64::from(objects)) as u32;
            let id = object_id(obj);
            if g.below(64) == 0 {
                store.delete(&id, ts)?;
            } else {
                store.set(&id, &make_value(obj, ts, pick_len(&mut g)), ts)?;
            }
            writes += 1;
        }
        // Free long-deleted objects so their slots get reused and recreated objects grow and
        // move again: readers then race slot reuse and forwarding, not only rewrites.
        store.purge_deleted(ts.saturating_sub(64));
    }
    Ok((writes, ts))
}

/// What a stress reader saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    pub reads: u64,
    pub verified: u64,
    pub deleted: u64,
    pub absent: u64,
    pub lagging: u64,
    /// Accepted values that failed their self-check, or reads that went back in time. Must
    /// stay empty.
    pub violations: Vec<String>,
}

/// Reader side: `reads` one-sided reads, verifying every accepted value and that each
/// object's newest timestamp never goes backwards for this reader. Three reads in four go
/// through handles into one reused buffer (`read_into`), alternating the newest version and
/// the newest before a bound just under what was last seen; the fourth takes the
/// allocating `snapshot` path.
pub fn run_reader<M: RemoteMemory>(
    remote: &RemoteStore<M>,
    objects: u32,
    seed: u64,
    reads: u64,
) -> Result<ReadReport> {
    let mut g = XorShift::new(seed);
    let mut seen = vec![0u64; objects as usize];
    let mut report = ReadReport::default();
    let ids: Vec<Vec<u8>> = (0..objects).map(object_id).collect();
    let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    let handles = remote.handles(&refs)?;
    let mut buf = vec![0u8; 8192];
    for n in 0..reads {
        let obj = g.below(u64::from(objects)) as usize;
        report.reads += 1;
        let (found, newest) = if n % 4 == 3 || handles[obj] == NO_HANDLE {
            // A slot with no versions yet is an object being recreated after a purge (its
            // header is written before its first version): to a reader, absent.
            match remote.snapshot(&ids[obj])? {
                Some(s) if !s.versions.is_empty() => {
                    let newest = s.versions.first().map_or(0, |v| v.ts);
                    (s.get(), Some(newest))
                }
                _ => (Lookup::Absent, None),
            }
        } else {
            let before = n % 2 == 1;
            let bound = seen[obj].saturating_sub(g.below(3));
            let want = if before {
                Want::Before(bound)
            } else {
                Want::Newest
            };
            let meta = remote.read_into(handles[obj], want, &mut buf)?;
            if !meta.fits(buf.len()) {
                report
                    .violations
                    .push(format!("object {obj}: value of {} bytes", meta.len));
                continue;
            }
            let found = match meta.status {
                Status::Value => Lookup::Value {
                    ts: meta.ts,
                    value: buf[..meta.len].to_vec(),
                },
                Status::Deleted => Lookup::Deleted { ts: meta.ts },
                Status::Absent => Lookup::Absent,
                Status::Lagging => Lookup::Lagging,
            };
            if before {
                if let Lookup::Value { ts, .. } | Lookup::Deleted { ts } = found {
                    if ts >= bound {
                        report
                            .violations
                            .push(format!("object {obj}: get_before({bound}) returned @{ts}"));
                    }
                }
                (found, None)
            } else {
                let newest = match found {
                    Lookup::Value { ts, .. } | Lookup::Deleted { ts } => Some(ts),
                    _ => None,
                };
                (found, newest)
            }
        };
        if let Some(newest) = newest {
            if newest < seen[obj] {
                report.violations.push(format!(
                    "object {obj}: newest version went back from @{} to @{newest}",
                    seen[obj]
                ));
            }
            seen[obj] = seen[obj].max(newest);
        }
        match found {
            Lookup::Value { ts, value } => match check_value(obj as u32, ts, &value) {
                Ok(()) => report.verified += 1,
                Err(e) => report.violations.push(e),
            },
            Lookup::Deleted { .. } => report.deleted += 1,
            Lookup::Absent => report.absent += 1,
            Lookup::Lagging => report.lagging += 1,
        }
        if report.violations.len() > 20 {
            break;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_check_themselves() {
        let v = make_value(3, 77, 100);
        assert_eq!(check_value(3, 77, &v), Ok(()));
        assert!(check_value(3, 78, &v).is_err());
        assert!(check_value(4, 77, &v).is_err());
        let mut torn = v.clone();
        torn[60..].copy_from_slice(&make_value(3, 78, 100)[60..]);
        assert!(check_value(3, 77, &torn).is_err());
    }
}
