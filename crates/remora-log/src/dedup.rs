//! The bounded duplicate index: digests of the last `window` appended transactions.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use crate::Digest;

pub(crate) struct Dedup {
    window: usize,
    // Keyed by digests that clients choose, so keep std's randomly seeded hasher: a fixed one
    // would let crafted digests pile into one bucket.
    ts_of: HashMap<Digest, u64>,
    // Appended digests in timestamp order; the back one has timestamp `back_ts`, so positions
    // give timestamps without storing them.
    order: VecDeque<Digest>,
    back_ts: u64,
}

impl Dedup {
    pub(crate) fn new(window: usize) -> Self {
        Self {
            window,
            ts_of: HashMap::new(),
            order: VecDeque::new(),
            back_ts: 0,
        }
    }

    #[cfg(test)]
    fn get(&self, digest: &Digest) -> Option<u64> {
        self.ts_of.get(digest).copied()
    }

    /// Records the transaction appended at `ts` (always the next timestamp).
    pub(crate) fn push(&mut self, digest: Digest, ts: u64) {
        self.order.push_back(digest);
        self.ts_of.insert(digest, ts);
        self.back_ts = ts;
        self.evict();
    }

    /// The timestamp `digest` already has, or `None` after recording it at `ts` (always the
    /// next timestamp), hashing it once either way. Nothing is evicted until [`Self::evict`],
    /// so a batch checked this way sees the window as it was before the batch.
    pub(crate) fn insert_new(&mut self, digest: &Digest, ts: u64) -> Option<u64> {
        match self.ts_of.entry(*digest) {
            Entry::Occupied(first) => Some(*first.get()),
            Entry::Vacant(slot) => {
                slot.insert(ts);
                self.order.push_back(*digest);
                self.back_ts = ts;
                None
            }
        }
    }

    /// Forgets the oldest digests beyond the window.
    pub(crate) fn evict(&mut self) {
        while self.order.len() > self.window {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            let old_ts = self.back_ts.saturating_sub(self.order.len() as u64);
            // The same digest can sit in the window twice when a log written with a smaller
            // window is reopened with a larger one; the map then holds the newer timestamp,
            // which must survive the older copy's eviction.
            if self.ts_of.get(&old) == Some(&old_ts) {
                self.ts_of.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        [n; 32]
    }

    #[test]
    fn forgets_digests_older_than_the_window() {
        let mut dd = Dedup::new(2);
        dd.push(d(1), 1);
        dd.push(d(2), 2);
        assert_eq!(dd.get(&d(1)), Some(1));
        dd.push(d(3), 3);
        assert_eq!(dd.get(&d(1)), None);
        assert_eq!(dd.get(&d(2)), Some(2));
        assert_eq!(dd.get(&d(3)), Some(3));
        assert_eq!(dd.ts_of.len(), 2);
    }

    #[test]
    fn evicting_an_older_copy_keeps_the_newer() {
        let mut dd = Dedup::new(3);
        dd.push(d(1), 1);
        dd.push(d(2), 2);
        dd.push(d(1), 3);
        dd.push(d(4), 4); // evicts the copy at 1
        assert_eq!(dd.get(&d(1)), Some(3));
    }

    #[test]
    fn a_batch_sees_the_window_from_before_it() {
        let mut dd = Dedup::new(2);
        dd.push(d(1), 1);
        dd.push(d(2), 2);
        // Three new digests would push 1 out of a window of 2, but not before the batch ends.
        assert_eq!(dd.insert_new(&d(3), 3), None);
        assert_eq!(dd.insert_new(&d(4), 4), None);
        assert_eq!(dd.insert_new(&d(1), 5), Some(1));
        assert_eq!(dd.insert_new(&d(3), 5), Some(3));
        dd.evict();
        assert_eq!((dd.get(&d(1)), dd.get(&d(2))), (None, None));
        assert_eq!((dd.get(&d(3)), dd.get(&d(4))), (Some(3), Some(4)));
        assert_eq!(dd.ts_of.len(), 2);
        let mut none = Dedup::new(0);
        assert_eq!(none.insert_new(&d(1), 1), None);
        assert_eq!(none.insert_new(&d(1), 2), Some(1), "within one batch");
        none.evict();
        assert_eq!(none.get(&d(1)), None);
    }

    #[test]
    fn zero_window_remembers_nothing() {
        let mut dd = Dedup::new(0);
        dd.push(d(1), 1);
        assert_eq!(dd.get(&d(1)), None);
        assert!(dd.order.is_empty());
    }
}
