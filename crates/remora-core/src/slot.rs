//! The dual-versioned slot: its memory layout and the protocol that lets a reader in another
//! process (or across a network, byte by byte) copy a slot while its owner writes it, and never
//! accept a torn version.
//!
//! A slot is a header block followed by two version blocks, all made of little-endian `u64`
//! words so that the owner can write them with atomic stores and peers can copy them with any
//! transport:
//!
//! ```text
//! header  : hseq | state<<32 | id_len | forward | incarnation | checksum | id (88 bytes)
//! version : seq  | ts | kind<<32 | len | checksum | data (capacity bytes)
//! ```
//!
//! * `seq` is `2 * gen` when the block is stable and odd while the owner rewrites it; `gen`
//!   counts the sets of this slot, so the two blocks of a consistent snapshot always hold
//!   consecutive generations. A snapshot whose blocks are further apart was copied across two
//!   or more writes and is retried (it could otherwise pair a stale older version with a newer
//!   one that never coexisted with it).
//! * Every block carries an xxh3 checksum of its words and data, seeded with the slot's
//!   incarnation, so a copy that mixes two writes, or a version written for an earlier
//!   occupant of a reused slot, fails verification. This does not depend on the order in which
//!   a transport moves bytes (RDMA gives no such order).
//!
//! * Readers that load the words in place (`shm`) read through [`read_seqlocked`] once the
//!   slot's occupant has passed one [`checked_read_slot`]: the sequence words alone then prove
//!   a copy whole, and the header's sequence word guards against reuse (see there). Byte
//!   copies (`tcp`, `verbs`) always take [`checked_decode`]. Both answer into a caller's
//!   buffer and allocate nothing; [`read_slot`] and [`decode_slot`] return a [`Snapshot`].
//!
//! The functions here are generic over [`Word`] so that the `loom` model runs this very code.

use std::sync::atomic::Ordering;
use xxhash_rust::xxh3::Xxh3;

/// Bytes in the slot header block.
pub const HEADER_BYTES: usize = 128;
/// Words before the id in the header block.
const HEADER_FIXED_WORDS: usize = 5;
/// Longest object id a slot holds.
pub const MAX_ID_LEN: usize = HEADER_BYTES - HEADER_FIXED_WORDS * 8;
/// Bytes in a version block before its data.
pub const VERSION_HEADER_BYTES: usize = 32;
const VERSION_HEADER_WORDS: usize = VERSION_HEADER_BYTES / 8;

/// Smallest value capacity; capacities double from here.
pub const MIN_CAPACITY: usize = 64;
/// Number of size classes: 64 B .. 1 MiB.
pub const SIZE_CLASSES: usize = 15;
/// Largest value the store accepts.
pub const MAX_VALUE_LEN: usize = MIN_CAPACITY << (SIZE_CLASSES - 1);

pub const STATE_FREE: u32 = 0;
pub const STATE_LIVE: u32 = 1;
pub const STATE_FORWARDED: u32 = 2;

pub const KIND_EMPTY: u32 = 0;
pub const KIND_VALUE: u32 = 1;
pub const KIND_TOMBSTONE: u32 = 2;

/// Value capacity of size class `class`.
pub fn class_capacity(class: usize) -> usize {
    MIN_CAPACITY << class
}

/// The smallest size class holding `len` bytes, or `None` when `len` exceeds [`MAX_VALUE_LEN`].
pub fn class_for_len(len: usize) -> Option<usize> {
    (0..SIZE_CLASSES).find(|&c| class_capacity(c) >= len)
}

/// Bytes of one slot of class `class`: a multiple of 64, so slots stay cache-line aligned.
pub fn slot_bytes(class: usize) -> usize {
    HEADER_BYTES + 2 * (VERSION_HEADER_BYTES + class_capacity(class))
}

/// Byte offset of version block `which` (0 or 1) inside a slot of class `class`.
pub fn version_offset(class: usize, which: usize) -> usize {
    HEADER_BYTES + which * (VERSION_HEADER_BYTES + class_capacity(class))
}

/// One 64-bit word of shared memory. Implemented for `AtomicU64` here and for loom's atomic in
/// the model.
pub trait Word {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
    fn fence(order: Ordering);
}

impl Word for std::sync::atomic::AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        std::sync::atomic::AtomicU64::load(self, order)
    }
    fn store(&self, value: u64, order: Ordering) {
        std::sync::atomic::AtomicU64::store(self, value, order)
    }
    fn fence(order: Ordering) {
        std::sync::atomic::fence(order)
    }
}

/// A version as a reader accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub ts: u64,
    pub gen: u64,
    /// `None` for a tombstone (the object was deleted at `ts`).
    pub value: Option<Vec<u8>>,
}

/// A consistent copy of a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub state: u32,
    pub id: Vec<u8>,
    pub forward: u64,
    /// Non-empty versions, newest first (at most two).
    pub versions: Vec<Version>,
}

/// What a read of one object finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A value, written at `ts`.
    Value { ts: u64, value: Vec<u8> },
    /// The object was deleted at `ts`.
    Deleted { ts: u64 },
    /// The object has no version here (never written, or none before the bound).
    Absent,
    /// `get_before` only: both kept versions are at or after the bound, so the one it needs
    /// has been overwritten: the reader lags.
    Lagging,
}

impl From<&Version> for Lookup {
    fn from(v: &Version) -> Self {
        match &v.value {
            Some(value) => Lookup::Value {
                ts: v.ts,
                value: value.clone(),
            },
            None => Lookup::Deleted { ts: v.ts },
        }
    }
}

impl Snapshot {
    /// The newest version (`get`).
    pub fn get(&self) -> Lookup {
        self.versions.first().map_or(Lookup::Absent, Lookup::from)
    }

    /// The newest version with `ts < bound` (`get_before`), per Heron's Algorithm 2, line 22.
    pub fn before(&self, bound: u64) -> Lookup {
        if let Some(v) = self.versions.iter().find(|v| v.ts < bound) {
            return v.into();
        }
        // Two kept versions both at or after the bound: the slot has overwritten what we need.
        // One version (the slot's first write) at or after the bound: nothing existed before.
        if self.versions.len() == 2 {
            Lookup::Lagging
        } else {
            Lookup::Absent
        }
    }
}

/// Why a copy of a slot was not accepted: every variant means "copy it again".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// A block was being written (odd sequence word).
    Busy,
    /// A checksum did not match: the copy mixes writes.
    Checksum,
    /// The two versions are not consecutive generations: the copy spans several writes.
    Skew,
    /// Header fields out of range (only a torn copy can show these).
    Malformed,
}

fn header_checksum(hseq: u64, meta: u64, forward: u64, incarnation: u64, id: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&hseq.to_le_bytes());
    h.update(&meta.to_le_bytes());
    h.update(&forward.to_le_bytes());
    h.update(&incarnation.to_le_bytes());
    h.update(id);
    h.digest()
}

fn version_checksum(incarnation: u64, seq: u64, ts: u64, meta: u64, data: &[u8]) -> u64 {
    let mut h = Xxh3::with_seed(incarnation);
    h.update(&seq.to_le_bytes());
    h.update(&ts.to_le_bytes());
    h.update(&meta.to_le_bytes());
    h.update(data);
    h.digest()
}

fn store_bytes<W: Word>(words: &[W], bytes: &[u8]) {
    // Whole words as fixed-size copies, the tail apart: a copy of a length not known at compile
    // time is a `memcpy` call per word (most of the time of installing 1 KB values).
    let mut whole = bytes.chunks_exact(8);
    for (w, chunk) in words.iter().zip(&mut whole) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        w.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
    let tail = whole.remainder();
    if let (false, Some(w)) = (tail.is_empty(), words.get(bytes.len() / 8)) {
        let mut b = [0u8; 8];
        b[..tail.len()].copy_from_slice(tail);
        w.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
}

fn load_bytes<W: Word>(words: &[W], len: usize, out: &mut Vec<u8>) {
    out.clear();
    for w in words.iter().take(len.div_ceil(8)) {
        out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    out.truncate(len);
}

/// Owner side: appends the data of version block `which` of a slot of class `class` (its
/// words from the slot's start) to `out`, and returns the block's kind and timestamp. Read in
/// place, unchecked: only for the owner, whose writes hold the lock it reads under, so the
/// block is whole. Peers take [`checked_read_slot`] or [`checked_decode`].
pub fn append_own_version<W: Word>(
    slot: &[W],
    class: usize,
    which: usize,
    out: &mut Vec<u8>,
) -> (u32, u64) {
    let at = version_offset(class, which) / 8;
    let word = |i: usize| slot.get(at + i).map_or(0, |w| w.load(Ordering::Relaxed));
    let (ts, meta) = (word(1), word(2));
    let kind = (meta >> 32) as u32;
    let len = ((meta & 0xffff_ffff) as usize).min(class_capacity(class));
    let start = out.len();
    let data = slot.get(at + VERSION_HEADER_WORDS..).unwrap_or_default();
    for w in data.iter().take(len.div_ceil(8)) {
        out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    out.truncate(start + len);
    (kind, ts)
}

/// Runs `write` between the odd and the even store of the block's sequence word, with the
/// fences that keep the data stores inside that window for a reader that re-checks it.
fn sequenced<W: Word>(seq_word: &W, new_seq: u64, write: impl FnOnce()) {
    // Any odd value marks "being written"; an emptied block (new seq 0) needs one too.
    seq_word.store(new_seq | 1, Ordering::Relaxed);
    W::fence(Ordering::Release);
    write();
    seq_word.store(new_seq, Ordering::Release);
}

/// Owner side: write the slot header (allocate, forward or free the slot).
pub fn write_header<W: Word>(header: &[W], state: u32, id: &[u8], forward: u64, incarnation: u64) {
    debug_assert!(id.len() <= MAX_ID_LEN);
    let hseq = header[0].load(Ordering::Relaxed) + 2;
    let meta = (u64::from(state) << 32) | id.len() as u64;
    let sum = header_checksum(hseq, meta, forward, incarnation, id);
    sequenced(&header[0], hseq, || {
        header[1].store(meta, Ordering::Relaxed);
        header[2].store(forward, Ordering::Relaxed);
        header[3].store(incarnation, Ordering::Relaxed);
        header[4].store(sum, Ordering::Relaxed);
        store_bytes(&header[HEADER_FIXED_WORDS..], id);
    });
}

/// Owner side: write one version block with generation `gen`: a value, or a tombstone
/// (`value: None`: the object was deleted at `ts`).
pub fn write_version<W: Word>(
    block: &[W],
    incarnation: u64,
    gen: u64,
    ts: u64,
    value: Option<&[u8]>,
) {
    match value {
        Some(v) => write_block(block, incarnation, gen, ts, KIND_VALUE, v),
        None => write_block(block, incarnation, gen, ts, KIND_TOMBSTONE, &[]),
    }
}

/// Owner side: mark a version block empty for the slot's current incarnation (a slot handed
/// to a new object). Empty blocks are checksummed too, so a reader cannot pair them with the
/// header of a previous occupant.
pub fn clear_version<W: Word>(block: &[W], incarnation: u64) {
    write_block(block, incarnation, 0, 0, KIND_EMPTY, &[]);
}

fn write_block<W: Word>(block: &[W], incarnation: u64, gen: u64, ts: u64, kind: u32, data: &[u8]) {
    let seq = 2 * gen;
    let meta = (u64::from(kind) << 32) | data.len() as u64;
    let sum = version_checksum(incarnation, seq, ts, meta, data);
    sequenced(&block[0], seq, || {
        block[1].store(ts, Ordering::Relaxed);
        block[2].store(meta, Ordering::Relaxed);
        block[3].store(sum, Ordering::Relaxed);
        store_bytes(&block[VERSION_HEADER_WORDS..], data);
    });
}

/// Reads a whole slot of class `class` from words that may be changing under us.
pub fn read_slot<W: Word>(slot: &[W], class: usize) -> Result<Snapshot, Reject> {
    read_with(
        class,
        |i| slot[i].load(Ordering::Relaxed),
        |start, len, out| load_bytes(&slot[start..], len, out),
        || W::fence(Ordering::Acquire),
    )
}

/// Reads a slot from a byte copy made by a transport (no ordering among the bytes assumed).
pub fn decode_slot(bytes: &[u8], class: usize) -> Result<Snapshot, Reject> {
    if bytes.len() < slot_bytes(class) {
        return Err(Reject::Malformed);
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    read_with(
        class,
        word,
        |start, len, out| {
            out.clear();
            out.extend_from_slice(&bytes[start * 8..start * 8 + len]);
        },
        || {},
    )
}

/// The reader's validation, over any way of fetching words (`word`) and byte runs (`bytes`,
/// from a word index). `acquire` runs between the fetches and the final sequence re-checks.
fn read_with(
    class: usize,
    word: impl Fn(usize) -> u64,
    bytes: impl Fn(usize, usize, &mut Vec<u8>),
    acquire: impl Fn(),
) -> Result<Snapshot, Reject> {
    let cap = class_capacity(class);
    let hseq = word(0);
    if hseq & 1 == 1 {
        return Err(Reject::Busy);
    }
    if hseq == 0 {
        // Never handed out since the region was created.
        return Ok(Snapshot {
            state: STATE_FREE,
            id: Vec::new(),
            forward: 0,
            versions: Vec::new(),
        });
    }
    let meta = word(1);
    let (state, id_len) = ((meta >> 32) as u32, (meta & 0xffff_ffff) as usize);
    if id_len > MAX_ID_LEN || state > STATE_FORWARDED {
        return Err(Reject::Malformed);
    }
    let forward = word(2);
    let incarnation = word(3);
    let hsum = word(4);
    let mut id = Vec::with_capacity(id_len);
    bytes(HEADER_FIXED_WORDS, id_len, &mut id);

    let mut raw = Vec::with_capacity(2);
    for which in 0..2 {
        let base = version_offset(class, which) / 8;
        let seq = word(base);
        if seq & 1 == 1 {
            return Err(Reject::Busy);
        }
        let ts = word(base + 1);
        let vmeta = word(base + 2);
        let vsum = word(base + 3);
        let (kind, len) = ((vmeta >> 32) as u32, (vmeta & 0xffff_ffff) as usize);
        if kind > KIND_TOMBSTONE || len > cap {
            return Err(Reject::Malformed);
        }
        let mut data = Vec::new();
        if kind == KIND_VALUE {
            bytes(base + VERSION_HEADER_WORDS, len, &mut data);
        }
        raw.push((base, seq, ts, vmeta, vsum, kind, data));
    }
    acquire();
    // Sequence words unchanged since we started: for word-level readers (shared memory) this
    // alone proves the copy is whole; byte copies rely on the checksums below.
    if word(0) != hseq || raw.iter().any(|r| word(r.0) != r.1) {
        return Err(Reject::Busy);
    }
    if header_checksum(hseq, meta, forward, incarnation, &id) != hsum {
        return Err(Reject::Checksum);
    }
    let mut versions = Vec::with_capacity(2);
    for (_, seq, ts, vmeta, vsum, kind, data) in raw {
        if version_checksum(incarnation, seq, ts, vmeta, &data) != vsum {
            return Err(Reject::Checksum);
        }
        if kind == KIND_EMPTY {
            continue;
        }
        versions.push(Version {
            ts,
            gen: seq / 2,
            value: (kind == KIND_VALUE).then_some(data),
        });
    }
    // The owner writes generations 1, 2, 3, ... alternating blocks, so the two blocks always
    // hold consecutive generations, or generation 1 beside an empty block. Anything else is a
    // copy that saw one block after a write and the other before it: with no ordering between
    // the words of a copy (RDMA, or relaxed loads), checksums alone cannot catch that.
    let consistent = match versions.as_slice() {
        [a, b] => a.gen.abs_diff(b.gen) == 1,
        [a] => a.gen == 1,
        _ => true,
    };
    if !consistent {
        return Err(Reject::Skew);
    }
    versions.sort_by_key(|v| std::cmp::Reverse(v.gen));
    Ok(Snapshot {
        state,
        id,
        forward,
        versions,
    })
}

// ---- Reads into a caller's buffer: nothing allocated ----

/// Which version a read wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The newest version (`get`).
    Newest,
    /// The newest version with `ts < bound` (`get_before`).
    Before(u64),
}

/// What a read of one object found (the allocation-free counterpart of [`Lookup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Value,
    Deleted,
    Absent,
    Lagging,
}

/// The result of a read into a caller's buffer. For `Value`, `len` is the value's length and
/// the value is in `out[..len]`, unless `len > out.len()`: then nothing was copied and the
/// read must be repeated with a buffer of at least `len` bytes. `ts` is 0 for `Absent` and
/// `Lagging`, and `len` is 0 for everything but `Value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadMeta {
    pub status: Status,
    pub ts: u64,
    pub len: usize,
}

impl ReadMeta {
    pub const ABSENT: ReadMeta = ReadMeta {
        status: Status::Absent,
        ts: 0,
        len: 0,
    };

    /// Whether the value (if any) was copied: the buffer was large enough.
    pub fn fits(&self, out_len: usize) -> bool {
        self.len <= out_len
    }
}

/// What a slot said about the object a reader expected in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRead {
    /// The slot holds the object: the read's answer.
    Live(ReadMeta),
    /// The object moved to a larger slot: the packed address of its new one.
    Forwarded(u64),
    /// The slot is free or holds another object: ask the owner again where it lives.
    Gone,
}

/// A checked read, with the header sequence word it was validated under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    pub hseq: u64,
    pub read: SlotRead,
}

/// The fixed words of one version block, as a reader loaded them.
#[derive(Clone, Copy)]
struct Head {
    seq: u64,
    ts: u64,
    meta: u64,
    kind: u32,
    len: usize,
}

impl Head {
    const EMPTY: Head = Head {
        seq: 0,
        ts: 0,
        meta: 0,
        kind: KIND_EMPTY,
        len: 0,
    };
}

fn head(seq: u64, ts: u64, meta: u64, cap: usize) -> Result<Head, Reject> {
    if seq & 1 == 1 {
        return Err(Reject::Busy);
    }
    let (kind, len) = ((meta >> 32) as u32, (meta & 0xffff_ffff) as usize);
    if kind > KIND_TOMBSTONE || len > cap {
        return Err(Reject::Malformed);
    }
    Ok(Head {
        seq,
        ts,
        meta,
        kind,
        len,
    })
}

/// Picks the version `want` asks for from the two blocks' heads, after the same generation
/// check as [`read_slot`]. Returns the answer and, for a value, the block holding it.
fn pick(heads: &[Head; 2], want: Want) -> Result<(ReadMeta, Option<usize>), Reject> {
    let live = |w: usize| heads[w].kind != KIND_EMPTY;
    // Newest first: at most two non-empty blocks.
    let (first, second) = match (live(0), live(1)) {
        (true, true) => {
            let (g0, g1) = (heads[0].seq / 2, heads[1].seq / 2);
            if g0.abs_diff(g1) != 1 {
                return Err(Reject::Skew);
            }
            if g0 > g1 {
                (Some(0), Some(1))
            } else {
                (Some(1), Some(0))
            }
        }
        (true, false) | (false, true) => {
            let w = usize::from(live(1));
            if heads[w].seq / 2 != 1 {
                return Err(Reject::Skew);
            }
            (Some(w), None)
        }
        (false, false) => (None, None),
    };
    let chosen = match want {
        Want::Newest => first,
        Want::Before(bound) => match [first, second]
            .into_iter()
            .flatten()
            .find(|&w| heads[w].ts < bound)
        {
            Some(w) => Some(w),
            None if second.is_some() => {
                return Ok((
                    ReadMeta {
                        status: Status::Lagging,
                        ts: 0,
                        len: 0,
                    },
                    None,
                ))
            }
            None => None,
        },
    };
    Ok(match chosen {
        None => (ReadMeta::ABSENT, None),
        Some(w) if heads[w].kind == KIND_VALUE => (
            ReadMeta {
                status: Status::Value,
                ts: heads[w].ts,
                len: heads[w].len,
            },
            Some(w),
        ),
        Some(w) => (
            ReadMeta {
                status: Status::Deleted,
                ts: heads[w].ts,
                len: 0,
            },
            None,
        ),
    })
}

/// Copies the first `out.len()` bytes held by `words` (little-endian) into `out`.
fn copy_words(word: impl Fn(usize) -> u64, start: usize, out: &mut [u8]) {
    let mut chunks = out.chunks_exact_mut(8);
    let mut i = start;
    for c in &mut chunks {
        c.copy_from_slice(&word(i).to_le_bytes());
        i += 1;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let n = rest.len();
        rest.copy_from_slice(&word(i).to_le_bytes()[..n]);
    }
}

/// Feeds `len` bytes held by words from `start` into `h`, loading each word once, and hands
/// each chunk to `each` (with its byte offset) as well.
fn hash_words(
    h: &mut Xxh3,
    word: &impl Fn(usize) -> u64,
    start: usize,
    len: usize,
    mut each: impl FnMut(usize, &[u8]),
) {
    let mut at = 0;
    let mut i = start;
    while at < len {
        let n = (len - at).min(8);
        let w = word(i).to_le_bytes();
        h.update(&w[..n]);
        each(at, &w[..n]);
        at += n;
        i += 1;
    }
}

/// The shared-memory fast read: a seqlock read of a slot whose occupant was already checked
/// (by [`checked_read_slot`], which returned `hseq`). Loads the header's sequence word and
/// both blocks' heads, copies the wanted value into `out`, then re-reads the three sequence
/// words: unchanged and even, the copy is whole. No checksum is computed.
///
/// `Ok(None)`: the header changed since `hseq` (the slot was freed, reused or forwarded):
/// check it again. `Err`: a copy to retry.
///
/// Why the blocks cannot belong to an earlier occupant of the slot: the check that returned
/// `hseq` validated both blocks with checksums seeded by the occupant's incarnation, so it
/// observed a write of this occupant in each block's sequence word; a read ordered after that
/// check (same thread, or published to this one with release/acquire) cannot observe an
/// older write of the same word (read-read coherence). Blocks written by a later occupant
/// come after its header write, which the acquire load of their sequence word then makes
/// visible to the final header re-check.
pub fn read_seqlocked<W: Word>(
    slot: &[W],
    class: usize,
    hseq: u64,
    want: Want,
    out: &mut [u8],
) -> Result<Option<ReadMeta>, Reject> {
    if slot.len() < slot_bytes(class) / 8 {
        return Err(Reject::Malformed);
    }
    let cap = class_capacity(class);
    if slot[0].load(Ordering::Acquire) != hseq {
        return Ok(None);
    }
    let bases = [version_offset(class, 0) / 8, version_offset(class, 1) / 8];
    let mut heads = [Head::EMPTY; 2];
    for (h, &base) in heads.iter_mut().zip(&bases) {
        let seq = slot[base].load(Ordering::Acquire);
        *h = head(
            seq,
            slot[base + 1].load(Ordering::Relaxed),
            slot[base + 2].load(Ordering::Relaxed),
            cap,
        )?;
    }
    let (meta, block) = pick(&heads, want)?;
    if let Some(w) = block {
        if meta.len <= out.len() {
            copy_words(
                |i| slot[i].load(Ordering::Relaxed),
                bases[w] + VERSION_HEADER_WORDS,
                &mut out[..meta.len],
            );
        }
    }
    W::fence(Ordering::Acquire);
    if slot[bases[0]].load(Ordering::Relaxed) != heads[0].seq
        || slot[bases[1]].load(Ordering::Relaxed) != heads[1].seq
    {
        return Err(Reject::Busy);
    }
    if slot[0].load(Ordering::Relaxed) != hseq {
        return Ok(None);
    }
    Ok(Some(meta))
}

/// The checked read of object `id`'s slot, in place: sequence words and checksums, as
/// [`read_slot`], but answering `want` into `out` and allocating nothing. Returns the header
/// sequence word it validated, for later [`read_seqlocked`] reads.
pub fn checked_read_slot<W: Word>(
    slot: &[W],
    class: usize,
    id: &[u8],
    want: Want,
    out: &mut [u8],
) -> Result<Checked, Reject> {
    if slot.len() < slot_bytes(class) / 8 {
        return Err(Reject::Malformed);
    }
    checked_with(
        class,
        |i| slot[i].load(Ordering::Relaxed),
        || W::fence(Ordering::Acquire),
        id,
        want,
        out,
    )
}

/// The checked read of object `id` from a byte copy of its slot made by a transport (no
/// ordering among the bytes assumed): what `tcp` and `verbs` reads validate with.
pub fn checked_decode(
    bytes: &[u8],
    class: usize,
    id: &[u8],
    want: Want,
    out: &mut [u8],
) -> Result<Checked, Reject> {
    if bytes.len() < slot_bytes(class) {
        return Err(Reject::Malformed);
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    checked_with(class, word, || {}, id, want, out)
}

fn checked_with(
    class: usize,
    word: impl Fn(usize) -> u64,
    acquire: impl Fn(),
    id: &[u8],
    want: Want,
    out: &mut [u8],
) -> Result<Checked, Reject> {
    let cap = class_capacity(class);
    let hseq = word(0);
    if hseq & 1 == 1 {
        return Err(Reject::Busy);
    }
    if hseq == 0 {
        return Ok(Checked {
            hseq,
            read: SlotRead::Gone,
        });
    }
    let meta = word(1);
    let (state, id_len) = ((meta >> 32) as u32, (meta & 0xffff_ffff) as usize);
    if id_len > MAX_ID_LEN || state > STATE_FORWARDED {
        return Err(Reject::Malformed);
    }
    let forward = word(2);
    let incarnation = word(3);
    let hsum = word(4);
    let mut h = Xxh3::new();
    for w in [hseq, meta, forward, incarnation] {
        h.update(&w.to_le_bytes());
    }
    let mut ours = id_len == id.len();
    hash_words(&mut h, &word, HEADER_FIXED_WORDS, id_len, |at, chunk| {
        ours &= id.get(at..at + chunk.len()) == Some(chunk);
    });
    let bases = [version_offset(class, 0) / 8, version_offset(class, 1) / 8];
    let mut heads = [Head::EMPTY; 2];
    let mut answer = (ReadMeta::ABSENT, None);
    let live = ours && state == STATE_LIVE;
    // Each block's checksum word and the digest of what we loaded, both taken inside the
    // window the sequence re-check below closes.
    let mut sums = [(0u64, 0u64); 2];
    if live {
        for (hd, &base) in heads.iter_mut().zip(&bases) {
            *hd = head(word(base), word(base + 1), word(base + 2), cap)?;
        }
        answer = pick(&heads, want)?;
        for (which, ((hd, sum), &base)) in heads.iter().zip(&mut sums).zip(&bases).enumerate() {
            let mut v = Xxh3::with_seed(incarnation);
            for w in [hd.seq, hd.ts, hd.meta] {
                v.update(&w.to_le_bytes());
            }
            let data_len = if hd.kind == KIND_VALUE { hd.len } else { 0 };
            // The wanted value is copied out as it is hashed: one load per word.
            let copy = answer.1 == Some(which) && answer.0.len <= out.len();
            let data = base + VERSION_HEADER_WORDS;
            hash_words(&mut v, &word, data, data_len, |at, chunk| {
                if copy {
                    out[at..at + chunk.len()].copy_from_slice(chunk);
                }
            });
            *sum = (word(base + 3), v.digest());
        }
    }
    acquire();
    if word(0) != hseq || (live && heads.iter().zip(&bases).any(|(hd, &b)| word(b) != hd.seq)) {
        return Err(Reject::Busy);
    }
    if h.digest() != hsum {
        return Err(Reject::Checksum);
    }
    let read = if !ours || state == STATE_FREE {
        SlotRead::Gone
    } else if state == STATE_FORWARDED {
        SlotRead::Forwarded(forward)
    } else {
        if sums.iter().any(|(stored, computed)| stored != computed) {
            return Err(Reject::Checksum);
        }
        SlotRead::Live(answer.0)
    };
    Ok(Checked { hseq, read })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn slot(class: usize) -> Vec<AtomicU64> {
        (0..slot_bytes(class) / 8)
            .map(|_| AtomicU64::new(0))
            .collect()
    }

    fn block(s: &[AtomicU64], class: usize, which: usize) -> &[AtomicU64] {
        let start = version_offset(class, which) / 8;
        &s[start..start + (VERSION_HEADER_BYTES + class_capacity(class)) / 8]
    }

    #[test]
    fn classes_cover_every_length_up_to_the_maximum() {
        assert_eq!(class_for_len(0), Some(0));
        assert_eq!(class_for_len(64), Some(0));
        assert_eq!(class_for_len(65), Some(1));
        assert_eq!(class_for_len(MAX_VALUE_LEN), Some(SIZE_CLASSES - 1));
        assert_eq!(class_for_len(MAX_VALUE_LEN + 1), None);
        for c in 0..SIZE_CLASSES {
            assert_eq!(slot_bytes(c) % 64, 0);
        }
    }

    /// A slot handed to object `id` in incarnation `inc`, both blocks empty.
    fn fresh(class: usize, id: &[u8], inc: u64) -> Vec<AtomicU64> {
        let s = slot(class);
        write_header(&s[..16], STATE_LIVE, id, 0, inc);
        clear_version(block(&s, class, 0), inc);
        clear_version(block(&s, class, 1), inc);
        s
    }

    fn value(l: Lookup) -> Option<(u64, Vec<u8>)> {
        match l {
            Lookup::Value { ts, value } => Some((ts, value)),
            _ => None,
        }
    }

    #[test]
    fn before_picks_newest_below_bound_or_reports_lagging() {
        let s = fresh(0, b"acct/1", 7);
        assert_eq!(read_slot(&s, 0).unwrap().get(), Lookup::Absent);
        write_version(block(&s, 0, 0), 7, 1, 10, Some(b"ten"));
        write_version(block(&s, 0, 1), 7, 2, 20, Some(b"twenty"));
        let snap = read_slot(&s, 0).unwrap();
        assert_eq!(snap.id, b"acct/1");
        assert_eq!(value(snap.get()), Some((20, b"twenty".to_vec())));
        assert_eq!(value(snap.before(21)), Some((20, b"twenty".to_vec())));
        assert_eq!(value(snap.before(20)), Some((10, b"ten".to_vec())));
        assert_eq!(value(snap.before(11)), Some((10, b"ten".to_vec())));
        assert_eq!(snap.before(10), Lookup::Lagging);
        // The third write (a delete) overwrites the older block (ts 10).
        write_version(block(&s, 0, 0), 7, 3, 30, None);
        let snap = read_slot(&s, 0).unwrap();
        assert_eq!(snap.get(), Lookup::Deleted { ts: 30 });
        assert_eq!(value(snap.before(30)), Some((20, b"twenty".to_vec())));
        assert_eq!(snap.before(15), Lookup::Lagging);
    }

    #[test]
    fn a_first_version_after_the_bound_means_absent_not_lagging() {
        let s = fresh(0, b"k", 1);
        write_version(block(&s, 0, 0), 1, 1, 50, Some(b"v"));
        assert_eq!(read_slot(&s, 0).unwrap().before(40), Lookup::Absent);
    }

    #[test]
    fn byte_copies_reject_torn_or_foreign_versions() {
        let class = 0;
        let s = fresh(class, b"k", 1);
        write_version(block(&s, class, 0), 1, 1, 5, Some(&[1u8; 64]));
        let bytes: Vec<u8> = s
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .collect();
        assert!(decode_slot(&bytes, class).is_ok());

        let data_at = version_offset(class, 0) + VERSION_HEADER_BYTES + 10;
        let mut torn = bytes.clone();
        torn[data_at] ^= 0xff;
        assert_eq!(decode_slot(&torn, class), Err(Reject::Checksum));

        let mut busy = bytes.clone();
        busy[version_offset(class, 0)] |= 1;
        assert_eq!(decode_slot(&busy, class), Err(Reject::Busy));

        // Same versions under a new incarnation of the slot (reused for another object).
        write_header(&s[..16], STATE_LIVE, b"k", 0, 2);
        let reused: Vec<u8> = s
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .collect();
        assert_eq!(decode_slot(&reused, class), Err(Reject::Checksum));

        assert_eq!(decode_slot(&bytes[..100], class), Err(Reject::Malformed));
    }

    #[test]
    fn versions_more_than_one_write_apart_are_skew() {
        let class = 0;
        let s = fresh(class, b"k", 1);
        write_version(block(&s, class, 0), 1, 1, 5, Some(b"a"));
        let old_a: Vec<u64> = block(&s, class, 0)
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        write_version(block(&s, class, 1), 1, 2, 6, Some(b"b"));
        write_version(block(&s, class, 0), 1, 3, 7, Some(b"c"));
        write_version(block(&s, class, 1), 1, 4, 8, Some(b"d"));
        // A reader that copied block 0 before the second write and block 1 after the fourth.
        for (w, v) in block(&s, class, 0).iter().zip(old_a) {
            w.store(v, Ordering::Relaxed);
        }
        assert_eq!(read_slot(&s, class), Err(Reject::Skew));
    }

    #[test]
    fn a_lone_version_after_the_first_is_skew() {
        let class = 0;
        let s = fresh(class, b"k", 1);
        let empty: Vec<u64> = block(&s, class, 1)
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        write_version(block(&s, class, 0), 1, 1, 5, Some(b"a"));
        assert_eq!(read_slot(&s, class).map(|s| s.versions.len()), Ok(1));
        write_version(block(&s, class, 1), 1, 2, 6, Some(b"b"));
        write_version(block(&s, class, 0), 1, 3, 7, Some(b"c"));
        // A copy that saw block 0 after the third write and block 1 before the second.
        for (w, v) in block(&s, class, 1).iter().zip(empty) {
            w.store(v, Ordering::Relaxed);
        }
        assert_eq!(read_slot(&s, class), Err(Reject::Skew));
    }
}
