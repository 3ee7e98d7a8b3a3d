//! The owner's index from object id to what the store knows of the object: a hash map of its
//! own rather than `std`'s, because the merge looks up objects at random in an index far larger
//! than the caches, and only a map whose layout it knows can tell it where a lookup will land
//! before it is made (see `store::adopt`). Generic over what it maps to, so that its probing,
//! growth and deletion can be read, and tested, without the store.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Ids up to this long live inside the index entry (see [`IdKey`]).
const INLINE_ID: usize = 22;

/// An id as the index keeps it. Short ids, which is what applications use, are stored in the
/// entry itself: a lookup then compares keys without a second cache miss on the heap.
#[derive(Clone, Default)]
enum IdKey {
    /// An unused entry of the index (ids are never empty).
    #[default]
    Empty,
    Inline {
        len: u8,
        bytes: [u8; INLINE_ID],
    },
    Heap(Box<[u8]>),
}

impl IdKey {
    fn new(id: &[u8]) -> Self {
        let mut bytes = [0u8; INLINE_ID];
        match bytes.get_mut(..id.len()) {
            Some(head) => {
                head.copy_from_slice(id);
                IdKey::Inline {
                    len: id.len() as u8,
                    bytes,
                }
            }
            None => IdKey::Heap(id.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            IdKey::Empty => &[],
            IdKey::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            IdKey::Heap(b) => b,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, IdKey::Empty)
    }
}

/// Whether the first `id.len()` (at most [`INLINE_ID`]) bytes of `bytes` are `id`, compared
/// as a few overlapping words: a lookup makes several such comparisons, and a call to
/// `memcmp` for a dozen bytes costs more than the comparison itself.
fn same_short(bytes: &[u8; INLINE_ID], id: &[u8]) -> bool {
    fn word<const N: usize>(s: &[u8], at: usize) -> [u8; N] {
        s.get(at..at + N)
            .and_then(|w| w.try_into().ok())
            .unwrap_or([0xff; N])
    }
    let n = id.len();
    match n {
        0..=3 => bytes.get(..n) == Some(id),
        4..=8 => {
            word::<4>(bytes, 0) == word::<4>(id, 0)
                && word::<4>(bytes, n - 4) == word::<4>(id, n - 4)
        }
        9..=16 => {
            word::<8>(bytes, 0) == word::<8>(id, 0)
                && word::<8>(bytes, n - 8) == word::<8>(id, n - 8)
        }
        _ => {
            word::<16>(bytes, 0) == word::<16>(id, 0)
                && word::<8>(bytes, n - 8) == word::<8>(id, n - 8)
        }
    }
}

/// The index's hasher: foldhash, several times faster than SipHash on short ids, keyed from
/// the OS's random source. Ids come from clients, so the key must be unpredictable (foldhash's
/// own seeding draws on the clock and the address layout only); the `quality` variant, because
/// linear probing needs well-mixed low bits.
#[derive(Clone)]
pub(crate) struct IdHasher(foldhash::quality::SeedableRandomState);

impl IdHasher {
    /// A hasher keyed with the process's secret seed, varied per map so that no two maps
    /// probe alike (maps are made per `set_many` call: no system call each time).
    fn random() -> Self {
        static SHARED: OnceLock<(foldhash::SharedSeed, u64)> = OnceLock::new();
        static MAPS: AtomicU64 = AtomicU64::new(0);
        let (shared, base) =
            SHARED.get_or_init(|| (foldhash::SharedSeed::from_u64(random_u64()), random_u64()));
        let n = MAPS.fetch_add(1, Ordering::Relaxed);
        IdHasher(foldhash::quality::SeedableRandomState::with_seed(
            base ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            shared,
        ))
    }
}

impl Default for IdHasher {
    fn default() -> Self {
        Self::random()
    }
}

impl BuildHasher for IdHasher {
    type Hasher = foldhash::quality::FoldHasher<'static>;
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::getrandom(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        // Still keyed unpredictably: std seeds its SipHash keys from the OS too.
        Err(_) => std::collections::hash_map::RandomState::new().hash_one(0u8),
    }
}

/// One entry of the index: one cache line, aligned, so that finding an object and what the
/// index knows of it costs one memory access, which can be prefetched from the id's hash.
/// (The store checks that its entries fit one line.)
#[derive(Clone, Default)]
#[repr(C, align(64))]
pub(crate) struct Entry<V> {
    key: IdKey,
    value: V,
}

/// The owner's index from id to object: open addressing with linear probing over one array
/// of [`Entry`]. Written for the merge, which looks up objects at random in an index far
/// larger than the caches: unlike `std`'s map, it can prefetch an id's entry from its hash, so
/// the lookups of many transactions overlap (see `Store::adopt_batch`).
#[derive(Default)]
pub(crate) struct Index<V> {
    /// A power of two long (or empty), never more than 3/4 full: every probe ends at an empty
    /// entry.
    entries: Vec<Entry<V>>,
    len: usize,
    hasher: IdHasher,
}

impl<V: Clone + Default> Index<V> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn hash(&self, id: &[u8]) -> u64 {
        self.hasher.hash_one(id)
    }

    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// Where `id` is, or the empty entry where it would go.
    fn probe(&self, id: &[u8], hash: u64) -> (usize, bool) {
        if id.len() <= INLINE_ID {
            self.probe_by(hash, |k| match k {
                IdKey::Inline { len, bytes } => {
                    usize::from(*len) == id.len() && same_short(bytes, id)
                }
                _ => false,
            })
        } else {
            self.probe_by(hash, |k| k.as_bytes() == id)
        }
    }

    fn probe_by(&self, hash: u64, is: impl Fn(&IdKey) -> bool) -> (usize, bool) {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        // At most `entries.len()` steps: the table is never full, so one is empty.
        for _ in 0..self.entries.len() {
            match self.entries.get(i) {
                Some(e) if e.key.is_empty() => return (i, false),
                Some(e) if is(&e.key) => return (i, true),
                Some(_) => i = (i + 1) & mask,
                None => break,
            }
        }
        (i, false)
    }

    fn find(&self, id: &[u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        match self.probe(id, self.hash(id)) {
            (i, true) => Some(i),
            _ => None,
        }
    }

    pub(crate) fn get(&self, id: &[u8]) -> Option<&V> {
        let i = self.find(id)?;
        self.entries.get(i).map(|e| &e.value)
    }

    pub(crate) fn get_mut(&mut self, id: &[u8]) -> Option<&mut V> {
        let i = self.find(id)?;
        self.entries.get_mut(i).map(|e| &mut e.value)
    }

    /// The entry where a lookup of `id` begins, to prefetch.
    pub(crate) fn entry_addr(&self, id: &[u8]) -> Option<*const u8> {
        let i = self.hash(id) as usize & self.mask();
        self.entries.get(i).map(|e| (e as *const Entry<V>).cast())
    }

    /// Sets `id`'s value, adding the id if it is new.
    pub(crate) fn insert(&mut self, id: &[u8], value: V) {
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.grow();
        }
        let (i, found) = self.probe(id, self.hash(id));
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        if !found {
            e.key = IdKey::new(id);
            self.len += 1;
        }
        e.value = value;
    }

    fn grow(&mut self) {
        let size = (self.entries.len() * 2).max(16);
        let mut entries: Vec<Entry<V>> = Vec::with_capacity(size);
        advise_huge_pages(
            entries.as_ptr().cast(),
            size * std::mem::size_of::<Entry<V>>(),
        );
        entries.resize(size, Entry::default());
        let old = std::mem::replace(&mut self.entries, entries);
        for e in old.into_iter().filter(|e| !e.key.is_empty()) {
            let (i, _) = self.probe(e.key.as_bytes(), self.hash(e.key.as_bytes()));
            if let Some(slot) = self.entries.get_mut(i) {
                *slot = e;
            }
        }
    }

    pub(crate) fn remove(&mut self, id: &[u8]) -> Option<V> {
        let mut hole = self.find(id)?;
        let removed = std::mem::take(self.entries.get_mut(hole)?);
        self.len -= 1;
        // Backward-shift deletion: entries after the hole that may live in it move back, so
        // that no probe meets an empty entry before the id it looks for.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(e) = self.entries.get(j) else {
                break;
            };
            if e.key.is_empty() {
                break;
            }
            let home = self.hash(e.key.as_bytes()) as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.entries.swap(hole, j);
                hole = j;
            }
        }
        Some(removed.value)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.entries
            .iter()
            .filter(|e| !e.key.is_empty())
            .map(|e| (e.key.as_bytes(), &e.value))
    }
}

/// Asks the kernel to back `len` bytes from `p` (untouched yet) with huge pages where it can:
/// a large index probed at random otherwise misses the TLB on nearly every lookup.
fn advise_huge_pages(p: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (p as usize).next_multiple_of(HUGE);
        let end = (p as usize).saturating_add(len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside an allocation the caller owns, and MADV_HUGEPAGE
            // is advice: it changes how the kernel backs the pages, never what they hold or
            // whether they are valid. A refusal (e.g. THP disabled) changes nothing.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::MAX_ID_LEN;
    use crate::stress::XorShift;
    use std::collections::HashMap;

    /// Ids short and long (inline and on the heap), many sharing prefixes and lengths, so
    /// that probes collide and comparisons must look at every byte.
    fn some_id(rng: &mut XorShift) -> Vec<u8> {
        let n = rng.below(600);
        let len = [1, 4, 8, 9, 16, 17, 22, 23, 40, MAX_ID_LEN][rng.below(10) as usize];
        let mut id = vec![b'k'; len];
        for (k, b) in id.iter_mut().rev().take(3).enumerate() {
            *b = b'0' + ((n >> (3 * k)) & 7) as u8;
        }
        id
    }

    #[test]
    fn the_index_agrees_with_a_map_through_inserts_removes_and_growth() {
        let mut rng = XorShift::new(0x1dea);
        let mut index: Index<u64> = Index::default();
        let mut model: HashMap<Vec<u8>, u64> = HashMap::new();
        for step in 0..60_000u64 {
            let id = some_id(&mut rng);
            match rng.below(10) {
                0..=5 => {
                    index.insert(&id, step);
                    model.insert(id.clone(), step);
                }
                6..=8 => {
                    assert_eq!(index.remove(&id), model.remove(&id));
                }
                _ => {
                    if let Some(v) = index.get_mut(&id) {
                        *v = step;
                        model.insert(id.clone(), step);
                    } else {
                        assert!(!model.contains_key(&id));
                    }
                }
            }
            assert_eq!(index.get(&id), model.get(&id));
            assert_eq!(index.len(), model.len());
        }
        for (id, ts) in &model {
            assert_eq!(index.get(id), Some(ts));
        }
        let mut listed: Vec<(Vec<u8>, u64)> =
            index.iter().map(|(id, &v)| (id.to_vec(), v)).collect();
        let mut want: Vec<(Vec<u8>, u64)> = model.into_iter().collect();
        listed.sort();
        want.sort();
        assert_eq!(listed, want);
    }

    #[test]
    fn short_ids_compare_every_byte() {
        for len in 1..=INLINE_ID {
            let id: Vec<u8> = (0..len as u8).map(|b| b + 1).collect();
            let IdKey::Inline { bytes, .. } = IdKey::new(&id) else {
                panic!("{len} bytes should be inline");
            };
            assert!(same_short(&bytes, &id));
            for at in 0..len {
                let mut other = id.clone();
                other[at] ^= 0x80;
                assert!(!same_short(&bytes, &other), "len {len}, byte {at}");
            }
        }
    }
}
