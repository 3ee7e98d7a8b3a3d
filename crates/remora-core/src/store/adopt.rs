//! The primary's merge, [`Store::adopt_batch`]: a run of transactions checked against the
//! store and applied, one table at a time, under one write lock.
//!
//! Kept apart from the rest of the store because most of it is a software pipeline (tables
//! parsed ahead, index entries and slot blocks prefetched a window at a time) that only the
//! merge needs, and that is easier to follow on its own. A child of `store`, so that it works
//! on the store's private state as directly as the store's other writes do, and that state
//! stays private.

use super::{Inner, Obj, Store};
use crate::adopt::{check_batch, AdoptError, AdoptRun, Stop, Table, TableError};
use crate::error::{show_id, Error, Result};
use crate::index::Entry;
use crate::slot::{self, SIZE_CLASSES};

impl Store {
    /// Adopts the transactions of a batch in order from index `from`, the primary's merge
    /// (`docs/binary-layouts.md`, "Native adoption"): transaction `i`'s table is
    /// `tables[ends[i-1]..ends[i]]` (`ends[-1]` = 0). A transaction is adopted when its table
    /// is well formed, every read's version is the newest version of that id (0: absent) and
    /// every speculative value is the newest value (`None`: absent or deleted); its writes
    /// are then applied at version `ts[i]`. The run stops at the first transaction that is not
    /// adopted, with nothing of it applied, and says why.
    ///
    /// The write lock is held for the whole call: the checks and the writes of a run see no
    /// other change, and remote readers' address lookups wait for it.
    pub fn adopt_batch(
        &self,
        tables: &[u8],
        ends: &[u32],
        ts: &[u64],
        from: usize,
    ) -> Result<AdoptRun, AdoptError> {
        check_batch(tables.len(), ends, ts.len(), from)?;
        // A software pipeline over windows of transactions: while a window is checked and
        // applied, the window two ahead is parsed and the index entries of its objects
        // prefetched, and the next window's slot blocks (their addresses are in those entries)
        // are. In an index and regions larger than the caches, cache and TLB misses are most
        // of the cost; prefetched a whole window at a time, their page walks run in parallel
        // rather than one per object, each stalling the work behind it.
        //
        // The window starts at one transaction and doubles up to WINDOW: a run that stops
        // early (a stale read under contention stops one every few transactions, and the
        // primary calls again after merging it) then parses and prefetches little that it
        // does not adopt, where a full window from the start cost each call 3 * WINDOW tables
        // parsed and their entries looked up.
        let mut inner = self.write();
        let next_start = from
            .checked_sub(1)
            .and_then(|i| ends.get(i))
            .map_or(0, |&e| e as usize);
        let mut ahead = ReadAhead {
            tables,
            ends,
            next_start,
            ring: std::array::from_fn(|_| None),
        };
        let mut queue = Prefetches::new();
        let (mut parsed_to, mut blocks_to) = (from, from);
        let (mut window, mut refill) = (0, from);
        for tx in from..ends.len() {
            if tx == refill {
                window = (2 * window).clamp(1, WINDOW);
                refill = tx + window;
                // At most RING tables from `tx` on are held: `tx + 3 * window` is within.
                for later in parsed_to..tx + 3 * window {
                    ahead.parse(&inner, later, &mut queue);
                }
                parsed_to = parsed_to.max(tx + 3 * window);
                queue.issue();
                for next in blocks_to..tx + 2 * window {
                    ahead.prefetch_blocks(&inner, next, &mut queue);
                }
                blocks_to = blocks_to.max(tx + 2 * window);
                queue.issue();
            }
            let parsed = ahead.get(tx);
            let stop = self
                .adopt_one(&mut inner, parsed, ts.get(tx).copied().unwrap_or(0))
                .map_err(|source| AdoptError::Store {
                    tx,
                    adopted: tx - from,
                    source,
                })?;
            if let Some(stop) = stop {
                let stale_after = match stop {
                    Stop::Stale => ahead.stale_after(&inner, tx),
                    _ => 0,
                };
                return Ok(AdoptRun {
                    adopted: tx - from,
                    stop,
                    stale_after,
                });
            }
        }
        Ok(AdoptRun {
            adopted: ends.len() - from,
            stop: Stop::End,
            stale_after: 0,
        })
    }

    /// Checks one table and, when it holds, applies its writes at `ts`. `Some` says why it was
    /// not adopted; then nothing of it was applied.
    fn adopt_one(&self, inner: &mut Inner, parsed: &Parsed, ts: u64) -> Result<Option<Stop>> {
        let table = match parsed {
            None => return Ok(Some(Stop::NoTable)),
            Some(Err(e)) => return Ok(Some(Stop::Malformed(e.to_string()))),
            Some(Ok(t)) => t,
        };
        // Equal versions mean equal values: the index's newest version is enough, no slot
        // read. A deleted object's version is its tombstone's.
        if table.reads().any(|(id, v)| inner.newest_ts(id) != v) {
            return Ok(Some(Stop::Stale));
        }
        // Speculative reads have no version to compare, only a value (what a pre-executor read
        // of its own results not yet applied): compared with the newest value read in place.
        let mut scratch = Vec::new();
        for (id, seen) in table.speculative() {
            let same = match (inner.current_value(id, &mut scratch), seen) {
                (Some(value), Some(seen)) => value == seen,
                (None, None) => true,
                _ => false,
            };
            if !same {
                return Ok(Some(Stop::Stale));
            }
        }
        // Everything that could refuse a write is checked before the first one, so a
        // transaction is applied whole or not at all.
        if let Some((k, id)) = first_repeat(table) {
            return Ok(Some(Stop::Malformed(format!(
                "table: write {k}: object {} is written twice",
                show_id(id)
            ))));
        }
        let mut slots = [0usize; SIZE_CLASSES];
        for (id, value) in table.writes() {
            let len = value.map(<[u8]>::len);
            let class = len.and_then(slot::class_for_len);
            match inner.index.get(id) {
                Some(obj) => {
                    let current = obj.newest_ts();
                    if ts <= current {
                        let e = Error::StaleTimestamp {
                            id: show_id(id),
                            ts,
                            current,
                        };
                        return Ok(Some(Stop::Malformed(e.to_string())));
                    }
                    if let (Some(len), Some(class)) = (len, class) {
                        if slot::class_capacity(obj.class()) < len {
                            slots[class] += 1;
                        }
                    }
                }
                None => {
                    if let Some(class) = class {
                        slots[class] += 1;
                    }
                }
            }
        }
        for (class, &n) in slots.iter().enumerate() {
            self.reserve(inner, class, n)?;
        }
        for (id, value) in table.writes() {
            self.apply(inner, id, value, ts)?;
        }
        Ok(None)
    }

    /// Makes sure `n` free slots of `class` exist, adding regions as needed, so that placing
    /// objects afterwards cannot fail halfway through a transaction.
    fn reserve(&self, inner: &mut Inner, class: usize, n: usize) -> Result<()> {
        while inner.free[class].len() < n {
            let taken = self.add_slot_region(inner, class)?;
            inner.free[class].push(taken);
        }
        Ok(())
    }
}

/// The first write of `table` whose id an earlier write of it also has: `(index, id)`.
fn first_repeat<'a>(table: &Table<'a>) -> Option<(usize, &'a [u8])> {
    // Tables write a handful of objects: comparing pairs beats hashing until they are many.
    const PAIRWISE: usize = 16;
    if table.write_count() <= PAIRWISE {
        return table.writes().enumerate().find_map(|(k, (id, _))| {
            table
                .writes()
                .take(k)
                .any(|(earlier, _)| earlier == id)
                .then_some((k, id))
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(table.write_count());
    table
        .writes()
        .enumerate()
        .find(|(_, (id, _))| !seen.insert(*id))
        .map(|(k, (id, _))| (k, id))
}

/// A transaction's table as `adopt_batch` reads it ahead: `None` when it has none.
type Parsed<'a> = Option<Result<Table<'a>, TableError>>;

/// Transactions `adopt_batch` prefetches for at a time, once a run has gone that far.
const WINDOW: usize = 8;
/// Objects `stale_after` remembers as written by the stale tables it counts: past that many,
/// a read of one not remembered ends the count a little early, which costs one more call.
const MAX_WRITTEN: usize = 64;
/// Parsed tables `adopt_batch` keeps: the window being adopted and the two read ahead.
const RING: usize = 3 * WINDOW;

/// `adopt_batch`'s parsed tables, from the one being adopted to the furthest read ahead.
struct ReadAhead<'a> {
    tables: &'a [u8],
    ends: &'a [u32],
    /// Where the next table to parse starts.
    next_start: usize,
    ring: [Parsed<'a>; RING],
}

impl<'a> ReadAhead<'a> {
    /// Parses transaction `tx`'s table (the one after the last parsed) and queues the index
    /// entries of its objects. Past the end of the batch, does nothing.
    fn parse(&mut self, inner: &Inner, tx: usize, out: &mut Prefetches) {
        let Some(&end) = self.ends.get(tx) else {
            return;
        };
        let (start, end) = (self.next_start, end as usize);
        self.next_start = end;
        // `check_batch` made every range from `from` on valid; empty is "no table".
        let bytes = self.tables.get(start..end).unwrap_or_default();
        let parsed = (!bytes.is_empty()).then(|| Table::parse(bytes));
        if let Some(Ok(table)) = &parsed {
            inner.prefetch_entries(table, out);
        }
        self.ring[tx % RING] = parsed;
    }

    /// Queues the slot blocks transaction `tx` (already parsed) will write.
    fn prefetch_blocks(&self, inner: &Inner, tx: usize, out: &mut Prefetches) {
        if tx < self.ends.len() {
            if let Some(Some(Ok(table))) = self.ring.get(tx % RING) {
                inner.prefetch_blocks(table, out);
            }
        }
    }

    fn get(&self, tx: usize) -> &Parsed<'a> {
        self.ring.get(tx % RING).unwrap_or(&None)
    }

    /// How many transactions after `stale` the caller will most likely have to merge too: no
    /// table; a read of a version the store has already passed (versions only grow, so it
    /// stays stale); or a read of an object a stale table before it wrote, which its
    /// re-execution will most likely write again, at a newer version than any table read. A
    /// malformed table ends the count (the next call reports it), as does the first table that
    /// may still hold.
    fn stale_after(&self, inner: &Inner, stale: usize) -> usize {
        let mut written: Vec<&'a [u8]> = Vec::new();
        if let Some(Some(Ok(table))) = self.ring.get(stale % RING) {
            note_writes(table, &mut written);
        }
        let mut start = self.ends.get(stale).map_or(0, |&e| e as usize);
        let mut n = 0;
        for &end in self.ends.iter().skip(stale + 1) {
            // `check_batch` made every range from `from` on valid; empty is "no table".
            let bytes = self.tables.get(start..end as usize).unwrap_or_default();
            start = end as usize;
            if !bytes.is_empty() {
                let Ok(table) = Table::parse(bytes) else {
                    break;
                };
                let passed = table
                    .reads()
                    .any(|(id, v)| inner.newest_ts(id) > v || written.contains(&id))
                    || table.speculative().any(|(id, _)| written.contains(&id));
                if !passed {
                    break;
                }
                note_writes(&table, &mut written);
            }
            n += 1;
        }
        n
    }
}

/// Adds the objects `table` writes to `written`, up to `MAX_WRITTEN` of them.
fn note_writes<'a>(table: &Table<'a>, written: &mut Vec<&'a [u8]>) {
    for (id, _) in table.writes() {
        if written.len() < MAX_WRITTEN && !written.contains(&id) {
            written.push(id);
        }
    }
}

/// Addresses to prefetch, gathered first and then issued back to back. A prefetch that misses
/// the TLB holds up the instructions behind it until its page walk is done; issued in a tight
/// loop, many walks proceed at once, where interleaved with the lookups that find the
/// addresses they would run nearly one at a time.
struct Prefetches {
    addrs: [*const u8; 64],
    len: usize,
}

impl Prefetches {
    fn new() -> Self {
        Prefetches {
            addrs: [std::ptr::null(); 64],
            len: 0,
        }
    }

    fn push(&mut self, p: *const u8) {
        if self.len == self.addrs.len() {
            self.issue();
        }
        if let Some(slot) = self.addrs.get_mut(self.len) {
            *slot = p;
            self.len += 1;
        }
    }

    fn issue(&mut self) {
        for &p in self.addrs.iter().take(self.len) {
            prefetch(p);
        }
        self.len = 0;
    }
}

impl Inner {
    /// Queues the index entries of the objects `table` names.
    fn prefetch_entries(&self, table: &Table, out: &mut Prefetches) {
        for id in table
            .reads()
            .map(|r| r.0)
            .chain(table.writes().map(|w| w.0))
        {
            if let Some(p) = self.index.entry_addr(id) {
                // Linear probing: the id is often one entry on from where its probe starts.
                out.push(p);
                out.push(p.wrapping_add(std::mem::size_of::<Entry<Obj>>()));
            }
        }
    }

    /// Queues the slot blocks the writes of `table` will overwrite (once the index entries
    /// are at hand: that is where the slots' addresses are).
    fn prefetch_blocks(&self, table: &Table, out: &mut Prefetches) {
        for (id, value) in table.writes() {
            let Some(obj) = self.index.get(id) else {
                continue;
            };
            let Some(region) = self.regions.get(obj.region as usize) else {
                continue;
            };
            let start = slot::version_offset(obj.class(), obj.next_block()) / 8;
            if let Some(block) = region.slot_words(obj.slot as usize).get(start..) {
                // The lines the write will store to: the version header and the value (a
                // large value's later lines are left to the hardware prefetcher).
                let first = block.as_ptr() as usize;
                let last = first + slot::VERSION_HEADER_BYTES + value.map_or(0, <[u8]>::len) - 1;
                out.push(block.as_ptr().cast());
                if last / 64 != first / 64 {
                    out.push(block.as_ptr().cast::<u8>().wrapping_add(64 - first % 64));
                }
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
