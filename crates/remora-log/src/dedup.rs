//! The bounded duplicate index: digests of the last `window` appended transactions.
//!
//! The digests themselves sit in a ring in timestamp order, written and dropped in sequence.
//! The index over them is an open-addressing table of 8-byte slots, each a 32-bit tag of the
//! digest's keyed hash and the low 31 bits of its timestamp (which locate it in the ring). A
//! map from digest to timestamp (`std`'s, 40 bytes an entry and a control byte) made each
//! check and each eviction a cache miss into 84 MB at the default window of a million; this
//! table is 16 MB, and the ring is only read to confirm a tag's match.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;

use crate::Digest;

/// A slot holding an entry has this bit set; an empty slot is 0.
const FULL: u64 = 1 << 31;
/// Timestamps are kept modulo 2^31: every entry is within the window (plus a batch) of the
/// newest, which `Options::validate` keeps far below that.
const TS_BITS: u64 = FULL - 1;
/// The most slots sized for at open (2^24: 128 MiB); a larger window grows as it fills.
const PRESIZE_MAX_SLOTS: usize = 1 << 24;
/// How many digests ahead of the one being checked or evicted its slot is prefetched: each
/// probe is a cache miss into megabytes of table, and with this many in flight their loads
/// overlap instead of following one another.
const AHEAD: usize = 16;

pub(crate) struct Dedup {
    window: usize,
    // Keyed by digests that clients choose, so hashed with std's randomly seeded hasher: a
    // fixed one would let crafted digests pile into one run of slots.
    hasher: RandomState,
    /// `tag << 32 | FULL | ts mod 2^31`, or 0; at most 7/8 full. The slot an entry's probe
    /// starts at is `tag & mask`, so moving or regrowing needs no hashing.
    slots: Vec<u64>,
    mask: usize,
    entries: usize,
    // Appended digests in timestamp order; the back one has timestamp `back_ts`, so positions
    // give timestamps without storing them.
    order: VecDeque<Digest>,
    back_ts: u64,
    /// `insert_batch`'s tags of the batch, kept to be reused.
    tags: Vec<u64>,
}

impl Dedup {
    /// Sized for the window at twice as many slots, so the table neither grows nor fills while
    /// the log writer holds it: its pages cost only address space until used.
    pub(crate) fn new(window: usize) -> Self {
        let slots = window
            .saturating_mul(2)
            .max(16)
            .checked_next_power_of_two()
            .unwrap_or(PRESIZE_MAX_SLOTS)
            .min(PRESIZE_MAX_SLOTS);
        Self {
            window,
            hasher: RandomState::new(),
            slots: huge_pages(vec![0; slots]),
            mask: slots - 1,
            entries: 0,
            order: VecDeque::with_capacity(window.saturating_add(1).min(PRESIZE_MAX_SLOTS / 2)),
            back_ts: 0,
            tags: Vec::new(),
        }
    }

    /// Starts loading the cache line of the slot a probe for `tag` starts at.
    fn prefetch(&self, tag: u64) {
        prefetch(
            self.slots
                .as_ptr()
                .wrapping_add((tag as usize) & self.mask)
                .cast(),
        );
    }

    /// The low 32 bits of the digest's keyed hash.
    fn tag(&self, digest: &Digest) -> u64 {
        self.hasher.hash_one(digest) & 0xffff_ffff
    }

    /// The full timestamp of an entry (within 2^31 of `back_ts`).
    fn ts_of(&self, slot: u64) -> u64 {
        self.back_ts - (self.back_ts.wrapping_sub(slot) & TS_BITS)
    }

    /// The digest appended at `ts`, if the ring still holds it.
    fn digest_at(&self, ts: u64) -> Option<&Digest> {
        let back = self.back_ts.checked_sub(ts)?;
        let i = (self.order.len() as u64).checked_sub(back + 1)?;
        self.order.get(usize::try_from(i).ok()?)
    }

    /// The slot holding `digest` and its timestamp, if indexed.
    fn find(&self, digest: &Digest, tag: u64) -> Option<(usize, u64)> {
        let mut i = (tag as usize) & self.mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if slot >> 32 == tag {
                let ts = self.ts_of(slot);
                if self.digest_at(ts) == Some(digest) {
                    return Some((i, ts));
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Indexes a digest not indexed yet at timestamp `ts` (its place in the ring is pushed by
    /// the caller).
    fn place(&mut self, tag: u64, ts: u64) {
        if (self.entries + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        let mut i = (tag as usize) & self.mask;
        while self.slots[i] != 0 {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = tag << 32 | FULL | (ts & TS_BITS);
        self.entries += 1;
    }

    fn grow(&mut self) {
        let doubled = huge_pages(vec![0; self.slots.len() * 2]);
        let old = std::mem::replace(&mut self.slots, doubled);
        self.mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|&s| s != 0) {
            let mut i = ((slot >> 32) as usize) & self.mask;
            while self.slots[i] != 0 {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = slot;
        }
    }

    /// Empties slot `hole`, moving back the entries after it that it would cut off from where
    /// their probe starts (backward-shift deletion: no tombstones to accumulate).
    fn remove_at(&mut self, mut hole: usize) {
        let mut k = hole;
        loop {
            k = (k + 1) & self.mask;
            let slot = self.slots[k];
            if slot == 0 {
                break;
            }
            let home = ((slot >> 32) as usize) & self.mask;
            if (k.wrapping_sub(home) & self.mask) >= (k.wrapping_sub(hole) & self.mask) {
                self.slots[hole] = slot;
                hole = k;
            }
        }
        self.slots[hole] = 0;
        self.entries -= 1;
    }

    #[cfg(test)]
    fn get(&self, digest: &Digest) -> Option<u64> {
        self.find(digest, self.tag(digest)).map(|(_, ts)| ts)
    }

    /// Records the transaction appended at `ts` (always the next timestamp).
    pub(crate) fn push(&mut self, digest: Digest, ts: u64) {
        let tag = self.tag(&digest);
        match self.find(&digest, tag) {
            // The same digest twice in the window (a log written with a smaller window,
            // reopened with a larger one): the index keeps the newer timestamp.
            Some((i, _)) => self.slots[i] = tag << 32 | FULL | (ts & TS_BITS),
            None => self.place(tag, ts),
        }
        self.order.push_back(digest);
        self.back_ts = ts;
        self.evict();
    }

    /// The timestamp `digest` already has, or `None` after recording it at `ts` (always the
    /// next timestamp), hashing it once either way. Nothing is evicted until [`Self::evict`],
    /// so a batch checked this way sees the window as it was before the batch.
    #[cfg(test)]
    pub(crate) fn insert_new(&mut self, digest: &Digest, ts: u64) -> Option<u64> {
        let tag = self.tag(digest);
        self.insert_tagged(digest, tag, ts)
    }

    /// `insert_new` for the digest of each of `items` in order, the fresh ones taking
    /// timestamps from `next_ts` up; `each` hears each answer. Their slots are loaded `AHEAD`
    /// digests early.
    pub(crate) fn insert_batch<T>(
        &mut self,
        items: &[T],
        digest: impl Fn(&T) -> &Digest,
        mut next_ts: u64,
        mut each: impl FnMut(Option<u64>),
    ) {
        let mut tags = std::mem::take(&mut self.tags);
        tags.clear();
        tags.extend(items.iter().map(|it| self.tag(digest(it))));
        for &t in tags.iter().take(AHEAD) {
            self.prefetch(t);
        }
        for (k, (item, &tag)) in items.iter().zip(&tags).enumerate() {
            if let Some(&ahead) = tags.get(k + AHEAD) {
                self.prefetch(ahead);
            }
            let found = self.insert_tagged(digest(item), tag, next_ts);
            if found.is_none() {
                next_ts += 1;
            }
            each(found);
        }
        self.tags = tags;
    }

    fn insert_tagged(&mut self, digest: &Digest, tag: u64, ts: u64) -> Option<u64> {
        if let Some((_, first)) = self.find(digest, tag) {
            return Some(first);
        }
        self.place(tag, ts);
        self.order.push_back(*digest);
        self.back_ts = ts;
        None
    }

    /// Forgets the oldest digests beyond the window.
    pub(crate) fn evict(&mut self) {
        let excess = self.order.len().saturating_sub(self.window);
        for old in self.order.iter().take(excess.min(AHEAD)) {
            self.prefetch(self.tag(old));
        }
        let mut left = excess;
        while self.order.len() > self.window {
            if left > AHEAD {
                if let Some(ahead) = self.order.get(AHEAD) {
                    self.prefetch(self.tag(ahead));
                }
            }
            left = left.saturating_sub(1);
            let Some(old) = self.order.pop_front() else {
                break;
            };
            let old_ts = self.back_ts.saturating_sub(self.order.len() as u64);
            // Its entry, unless a newer copy of the digest replaced it: one timestamp, one
            // entry, so a slot on its probe path with this timestamp is the one.
            let tag = self.tag(&old);
            let mut i = (tag as usize) & self.mask;
            loop {
                let slot = self.slots[i];
                if slot == 0 {
                    break;
                }
                if slot >> 32 == tag && self.ts_of(slot) == old_ts {
                    self.remove_at(i);
                    break;
                }
                i = (i + 1) & self.mask;
            }
        }
    }
}

/// Asks the CPU to start loading the cache line at `p`: a hint, so any address will do.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address, and reads nothing the program
    // sees; SSE, the feature it needs, is part of every x86_64 target.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the kernel to back `table`'s whole 2 MiB pages with huge pages, where transparent huge
/// pages are enabled on request (`madvise`): every probe of a table of many megabytes in 4 KiB
/// pages also misses the TLB. A request only: refused or unsupported, the table works the same.
fn huge_pages(table: Vec<u64>) -> Vec<u64> {
    const HUGE: usize = 2 << 20;
    let start = table.as_ptr() as usize;
    let end = start + table.len() * std::mem::size_of::<u64>();
    let (from, to) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if from < to {
        // SAFETY: `[from, to)` lies inside `table`'s allocation, which lives on; MADV_HUGEPAGE
        // changes how the kernel backs those pages, never their contents or their mapping.
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
        }
    }
    table
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
        assert_eq!(dd.entries, 2);
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
        assert_eq!(dd.entries, 2);
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

    /// The index as a map from digest to timestamp beside the ring: the reference the table is
    /// held to (a test double, the implementation this one replaced).
    struct Model {
        window: usize,
        ts_of: std::collections::HashMap<Digest, u64>,
        order: VecDeque<(Digest, u64)>,
    }

    impl Model {
        fn push(&mut self, digest: Digest, ts: u64) {
            self.ts_of.insert(digest, ts);
            self.order.push_back((digest, ts));
            self.evict();
        }

        fn insert_new(&mut self, digest: &Digest, ts: u64) -> Option<u64> {
            if let Some(&first) = self.ts_of.get(digest) {
                return Some(first);
            }
            self.ts_of.insert(*digest, ts);
            self.order.push_back((*digest, ts));
            None
        }

        fn evict(&mut self) {
            while self.order.len() > self.window {
                let Some((old, old_ts)) = self.order.pop_front() else {
                    break;
                };
                if self.ts_of.get(&old) == Some(&old_ts) {
                    self.ts_of.remove(&old);
                }
            }
        }
    }

    proptest::proptest! {
        /// Batches of digests drawn from a small set (so duplicates are common), appended as
        /// the log appends them, after a recovery that pushed a history possibly holding a
        /// digest twice: every answer and every lookup agrees with the map.
        #[test]
        fn answers_as_a_map_does(
            window in 0usize..40,
            history in proptest::collection::vec(0u8..24, 0..60),
            batches in proptest::collection::vec(proptest::collection::vec(0u8..24, 0..12), 0..40),
        ) {
            let mut dd = Dedup::new(window);
            let mut model = Model { window, ts_of: Default::default(), order: VecDeque::new() };
            let mut ts = 0;
            for n in history {
                ts += 1;
                dd.push(d(n), ts);
                model.push(d(n), ts);
            }
            for batch in batches {
                for n in batch {
                    let got = dd.insert_new(&d(n), ts + 1);
                    proptest::prop_assert_eq!(got, model.insert_new(&d(n), ts + 1));
                    if got.is_none() {
                        ts += 1;
                    }
                }
                dd.evict();
                model.evict();
                for n in 0..24 {
                    proptest::prop_assert_eq!(dd.get(&d(n)), model.ts_of.get(&d(n)).copied(), "digest {}", n);
                }
                proptest::prop_assert_eq!(dd.entries, model.ts_of.len());
            }
        }
    }

    #[test]
    fn grows_past_its_presized_slots_and_keeps_every_entry() {
        // A window larger than the table sized at open grows it; every digest stays findable.
        let mut dd = Dedup::new(8);
        let n = 1000u32;
        for i in 0..n {
            let mut digest = [0u8; 32];
            digest[..4].copy_from_slice(&i.to_le_bytes());
            assert_eq!(dd.insert_new(&digest, u64::from(i) + 1), None);
        }
        assert!(dd.slots.len() >= 1024);
        for i in 0..n {
            let mut digest = [0u8; 32];
            digest[..4].copy_from_slice(&i.to_le_bytes());
            assert_eq!(dd.get(&digest), Some(u64::from(i) + 1));
        }
        dd.evict();
        assert_eq!(dd.entries, 8);
    }
}
