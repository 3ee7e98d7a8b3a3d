//! What a state transfer (Heron, Algorithm 3) asks of the owner's store: on the serving side,
//! which objects changed after the lagger's point (versions as of the shipped point are then
//! read with [`Store::get_before_many`], a batch at a time, so execution goes on between
//! batches); on the lagger's side, installing shipped versions with their timestamps.
//!
//! The store is the update log: every object keeps its newest version (tombstones included)
//! with that version's timestamp, so "updated after `since`" is a scan of the index, with no
//! separate log to keep in step with the writes.

use super::{check_id, check_value, write_next, Inner, Put, Store};
use crate::error::{show_id, Error, Result};
use crate::region::PAGE;
use crate::slot;
use std::sync::atomic::Ordering;

/// Slot bytes whose pages [`Store::prepare_slots`] backs per read-lock hold.
const BACK_PER_HOLD: usize = 32 << 10;
/// Words of a version block's header: sequence, timestamp, meta (kind, length), checksum.
const VERSION_HEADER_WORDS: usize = slot::VERSION_HEADER_BYTES / 8;

impl Store {
    /// Ids whose newest version (or tombstone) is after `since`: every object whose state as
    /// of a later point can differ from its state at `since`. One pass over the index under
    /// the read lock (a few ms per million objects): the owner's writes wait that long.
    pub fn changed_since(&self, since: u64) -> Vec<Vec<u8>> {
        self.read()
            .index
            .iter()
            .filter(|(_, o)| o.newest_ts() > since)
            .map(|(id, _)| id.to_vec())
            .collect()
    }

    /// Appends to `out`, for each of `ids` whose newest version before `bound` is after
    /// `since`, a record: `head(out, id, ts, len)` writes its header (`len`: the value's length,
    /// `None` for a tombstone), then the value's bytes follow. One read-lock hold for the whole
    /// batch, and one copy of each value, straight from the owner's slot (the owner's writes
    /// wait for the lock, so nothing changes under the copy). Ids absent, or first written at or
    /// after `bound`, are left out; the index in `ids` of each whose both versions are at or
    /// after `bound` (the one needed is overwritten) goes to `gone`. Returns the records
    /// appended.
    pub fn export_before(
        &self,
        ids: &[Vec<u8>],
        since: u64,
        bound: u64,
        out: &mut Vec<u8>,
        mut head: impl FnMut(&mut Vec<u8>, &[u8], u64, Option<usize>),
        gone: &mut Vec<usize>,
    ) -> Result<u64> {
        let inner = self.read();
        let mut records = 0;
        for (i, id) in ids.iter().enumerate() {
            let Some(obj) = inner.index.get(id) else {
                continue;
            };
            let corrupt = |why: &str| Error::Corrupt {
                id: show_id(id),
                why: why.to_string(),
            };
            let words = inner
                .regions
                .get(obj.region as usize)
                .ok_or_else(|| corrupt("slot in a missing region"))?
                .slot_words(obj.slot as usize);
            let class = obj.class();
            let word = |block: usize, i: usize| {
                words
                    .get(slot::version_offset(class, block) / 8 + i)
                    .map(|w| w.load(Ordering::Relaxed))
                    .ok_or_else(|| corrupt("slot shorter than its class"))
            };
            let newest = usize::from(obj.newest);
            let block = if obj.gen == 0 {
                continue;
            } else if obj.ts < bound {
                newest
            } else if obj.gen == 1 {
                // Its only version is at or after the bound: it did not exist before.
                continue;
            } else if word(1 - newest, 1)? < bound {
                1 - newest
            } else {
                gone.push(i);
                continue;
            };
            let (ts, meta) = (word(block, 1)?, word(block, 2)?);
            if ts <= since {
                continue;
            }
            match (meta >> 32) as u32 {
                slot::KIND_VALUE => {
                    let len = (meta & 0xffff_ffff) as usize;
                    if len > slot::class_capacity(class) {
                        return Err(corrupt("value longer than its slot"));
                    }
                    head(out, id, ts, Some(len));
                    let start = slot::version_offset(class, block) / 8 + VERSION_HEADER_WORDS;
                    let data = words
                        .get(start..start + len.div_ceil(8))
                        .ok_or_else(|| corrupt("slot shorter than its class"))?;
                    let end = out.len() + len;
                    out.reserve(data.len() * 8);
                    for w in data {
                        out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
                    }
                    out.truncate(end);
                }
                slot::KIND_TOMBSTONE => head(out, id, ts, None),
                _ => return Err(corrupt("an empty block holds the version")),
            }
            records += 1;
        }
        Ok(records)
    }

    /// Installs versions a peer shipped: each `(id, value, ts)` is written unless the store
    /// already holds a version at or after `ts` (so a shipment installed again, or a newer one
    /// after a partly installed one, is harmless). A shipped tombstone of an object this store
    /// never had is kept as a tombstone, as the peer has it. The batch is checked first (ids,
    /// sizes): a bad entry changes nothing. Returns how many entries were written.
    ///
    /// A shipment holds each object's newest version only: what the object was between the
    /// version this store held and `ts` is not known here (the peer may have written it several
    /// times since). So an installed version fills both blocks of the slot: `get_before` a
    /// bound at or before `ts` answers `Lagging`, and the reader asks a peer that has the
    /// history, instead of being handed the older version this store kept, overwritten
    /// meanwhile elsewhere, or "absent" for an object created before `ts` elsewhere. The first
    /// write leaves the older version in place, which is still right for bounds up to this
    /// store's own point (the only ones its peers read it for until it announces the new one).
    pub fn install(&self, entries: &[Put<'_>]) -> Result<usize> {
        for &(id, value, _) in entries {
            check_id(id)?;
            if let Some(v) = value {
                check_value(v)?;
            }
        }
        let mut inner = self.write();
        // A lagger's shipment is mostly objects it never had: the regions their slots need are
        // added for the whole batch before any is written.
        let mut new = [0usize; slot::SIZE_CLASSES];
        for &(id, value, _) in entries {
            if inner.index.get(id).is_none() {
                let len = value.map_or(0, <[u8]>::len);
                new[slot::class_for_len(len).unwrap_or(slot::SIZE_CLASSES - 1)] += 1;
            }
        }
        for (class, &n) in new.iter().enumerate().filter(|(_, &n)| n > 0) {
            // Not backed here: a page faulted in ahead costs what its first write would, and
            // a slot's pages past its value would not be written at all.
            self.ready_slots(&mut inner, class, n)?;
        }
        let inner: &mut Inner = &mut inner;
        let mut written = 0;
        for &(id, value, ts) in entries {
            match inner.index.get(id) {
                Some(obj) if obj.newest_ts() >= ts => continue,
                Some(_) => self.apply(inner, id, value, ts)?,
                None if value.is_some() => self.apply(inner, id, value, ts)?,
                None => {
                    let class = slot::class_for_len(0).unwrap_or(0);
                    let mut obj = self.place(inner, id, class)?;
                    write_next(&inner.regions, &mut obj, ts, None);
                    inner.index.insert(id, obj);
                }
            }
            // The object now lives in a slot that fits `value`: the second write fills the
            // other block with the same version.
            if let Some(obj) = inner.index.get_mut(id) {
                write_next(&inner.regions, obj, ts, value);
            }
            written += 1;
        }
        Ok(written)
    }
}

impl Store {
    /// Makes room for `count` new objects with values of `len` bytes: free slots of their size
    /// class (regions added as needed), the pages of the slots handed out next backed with
    /// memory, so that writing them faults no page in. The pages are backed a few slots per
    /// read-lock hold, so the owner's writes wait for a few page faults at most. Free slots
    /// hold nothing anyone reads; their words keep their contents.
    pub fn prepare_slots(&self, len: usize, count: usize) -> Result<()> {
        let class = slot::class_for_len(len).ok_or(Error::Oversize {
            len,
            max: slot::MAX_VALUE_LEN,
        })?;
        let next: Vec<(u32, usize)> = {
            let mut inner = self.write();
            self.ready_slots(&mut inner, class, count)?;
            let free = &inner.free[class];
            free[free.len() - count..].to_vec()
        };
        let per_hold = (BACK_PER_HOLD / slot::slot_bytes(class)).max(1);
        for batch in next.chunks(per_hold) {
            let inner = self.read();
            for &(region, index) in batch {
                let Some(r) = inner.regions.get(region as usize) else {
                    continue;
                };
                let words = r.slot_words(index);
                // One word per page of the slot (and its last): a write backs the page. A
                // store, not an idempotent read-modify-write, which compilers turn into a
                // load. The owner writes slots only under the write lock, so the word keeps
                // its value (a slot handed out meanwhile is written after this, or before).
                for w in words.iter().step_by(PAGE / 8).chain(words.last()) {
                    w.store(w.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Makes `count` slots of `class` free, adding regions as needed.
    fn ready_slots(&self, inner: &mut Inner, class: usize, count: usize) -> Result<()> {
        while inner.free[class].len() < count {
            // Adds a region's slots and takes its first: it goes back to the pool.
            let taken = self.add_slot_region(inner, class)?;
            inner.free[class].push(taken);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::slot::Lookup;
    use crate::{Store, StoreConfig};

    fn store(tag: &str) -> (std::path::PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("remora-install-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::create(&StoreConfig::new(&dir, "s")).unwrap();
        (dir, s)
    }

    #[test]
    fn changed_since_lists_newer_objects_and_tombstones() {
        let (dir, s) = store("changed");
        s.set(b"a", b"1", 3).unwrap();
        s.set(b"b", b"2", 5).unwrap();
        s.set(b"c", b"3", 7).unwrap();
        s.delete(b"a", 9).unwrap();
        let mut got = s.changed_since(5);
        got.sort();
        assert_eq!(got, vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(s.changed_since(9).is_empty());
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn export_before_copies_the_version_before_the_bound_or_says_it_is_gone() {
        let (dir, s) = store("export");
        s.set(b"a", b"a1", 3).unwrap();
        s.set(b"a", b"a2-longer", 6).unwrap();
        s.set(b"b", b"b1", 2).unwrap();
        s.delete(b"b", 5).unwrap();
        s.set(b"c", b"c1", 7).unwrap();
        let ids: Vec<Vec<u8>> = [&b"a"[..], b"b", b"c", b"none"]
            .iter()
            .map(|i| i.to_vec())
            .collect();
        let export = |since, bound| {
            let (mut out, mut gone) = (Vec::new(), Vec::new());
            let head = |out: &mut Vec<u8>, id: &[u8], ts, len: Option<usize>| {
                let id = String::from_utf8_lossy(id);
                out.extend_from_slice(format!("[{id}@{ts}:{len:?}]").as_bytes())
            };
            let n = s
                .export_before(&ids, since, bound, &mut out, head, &mut gone)
                .unwrap();
            (n, String::from_utf8(out).unwrap(), gone)
        };
        assert_eq!(
            export(0, 6),
            (2, "[a@3:Some(2)]a1[b@5:None]".into(), vec![])
        );
        assert_eq!(
            export(0, 100),
            (
                3,
                "[a@6:Some(9)]a2-longer[b@5:None][c@7:Some(2)]c1".into(),
                vec![]
            )
        );
        assert_eq!(
            export(5, 100),
            (2, "[a@6:Some(9)]a2-longer[c@7:Some(2)]c1".into(), vec![])
        );
        // Both of a's versions are at or after 3; b's first version is before it.
        assert_eq!(export(0, 3), (1, "[b@2:Some(2)]b1".into(), vec![0]));
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn prepared_slots_are_the_ones_new_objects_get() {
        let (dir, s) = store("prepare");
        s.set(b"small", b"x", 1).unwrap();
        let before = s.stats();
        s.prepare_slots(1000, 40).unwrap();
        let after = s.stats();
        // A region of 1 KB slots was added; no object, and nothing in the existing slots, moved.
        assert_eq!(
            (
                after.objects,
                after.regions,
                after.free_slots - before.free_slots > 40
            ),
            (1, before.regions + 1, true)
        );
        let values: Vec<(Vec<u8>, Vec<u8>)> = (0..40u32)
            .map(|i| (format!("o{i}").into_bytes(), vec![i as u8; 1000]))
            .collect();
        let puts: Vec<_> = values
            .iter()
            .map(|(id, v)| (&id[..], Some(&v[..]), 5))
            .collect();
        assert_eq!(s.install(&puts).unwrap(), 40);
        assert_eq!(s.stats().regions, after.regions);
        for (id, v) in &values {
            assert_eq!(
                s.get(id).unwrap(),
                Lookup::Value {
                    ts: 5,
                    value: v.clone()
                }
            );
        }
        assert_eq!(
            s.get(b"small").unwrap(),
            Lookup::Value {
                ts: 1,
                value: b"x".to_vec()
            }
        );
        assert_eq!(
            s.prepare_slots(crate::slot::MAX_VALUE_LEN + 1, 1)
                .unwrap_err()
                .to_string(),
            s.set(b"big", &vec![0; crate::slot::MAX_VALUE_LEN + 1], 9)
                .unwrap_err()
                .to_string()
        );
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn installed_values_of_every_tail_length_read_back_exactly() {
        let (dir, s) = store("tails");
        // Every length of a last partial word, around word and class boundaries.
        let lens: Vec<usize> = (0..=24)
            .chain([63, 64, 65, 1000, 1001, 1007, 1024])
            .collect();
        let values: Vec<(Vec<u8>, Vec<u8>)> = lens
            .iter()
            .map(|&n| {
                let id = format!("t{n}").into_bytes();
                (id, (0..n).map(|i| (i * 7 + n) as u8).collect())
            })
            .collect();
        let puts: Vec<_> = values
            .iter()
            .map(|(id, v)| (&id[..], Some(&v[..]), 3))
            .collect();
        assert_eq!(s.install(&puts).unwrap(), lens.len());
        for (id, v) in &values {
            assert_eq!(
                s.get(id).unwrap(),
                Lookup::Value {
                    ts: 3,
                    value: v.clone()
                },
                "{}",
                String::from_utf8_lossy(id)
            );
        }
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn shared_regions_read_back_every_offset_and_length_exactly() {
        // Shipments land through these: words where aligned, bytes around them.
        let (dir, s) = store("region");
        let id = s.add_shared_region(4096).unwrap();
        let r = crate::region::Region::attach(s.dir(), id).unwrap();
        let data: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let base = crate::region::REGION_HEADER_BYTES as u64;
        for offset in base..base + 16 {
            for len in 0..=data.len() {
                r.write(base, &[0xff; 120]).unwrap();
                r.write(offset, &data[..len]).unwrap();
                let mut got = vec![0u8; 120];
                r.read(base, &mut got).unwrap();
                let at = (offset - base) as usize;
                let mut want = vec![0xff; 120];
                want[at..at + len].copy_from_slice(&data[..len]);
                assert_eq!(got, want, "offset {offset}, length {len}");
                let mut back = vec![0u8; len];
                s.read_region(id, offset, &mut back).unwrap();
                assert_eq!(back, data[..len], "offset {offset}, length {len}");
            }
        }
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn install_skips_what_is_held_and_keeps_shipped_tombstones() {
        let (dir, s) = store("install");
        s.set(b"a", b"old", 4).unwrap();
        s.set(b"b", b"mine", 8).unwrap();
        let n = s
            .install(&[
                (b"a", Some(b"new"), 6),
                (b"b", Some(b"older"), 8),
                (b"gone", None, 7),
                (b"a", Some(b"again"), 6),
            ])
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            s.get(b"a").unwrap(),
            Lookup::Value {
                ts: 6,
                value: b"new".to_vec()
            }
        );
        // What `a` was between 4 and 6 is the peer's to say: a read before 6 lags here.
        assert_eq!(s.get_before(b"a", 6).unwrap(), Lookup::Lagging);
        assert_eq!(
            s.get_before(b"a", 7).unwrap(),
            Lookup::Value {
                ts: 6,
                value: b"new".to_vec()
            }
        );
        assert_eq!(
            s.get(b"b").unwrap(),
            Lookup::Value {
                ts: 8,
                value: b"mine".to_vec()
            }
        );
        assert_eq!(s.get(b"gone").unwrap(), Lookup::Deleted { ts: 7 });
        assert_eq!(s.get_before(b"gone", 7).unwrap(), Lookup::Lagging);
        assert_eq!(
            s.install(&[(b"", Some(b"x"), 9)]).unwrap_err().to_string(),
            s.set(b"", b"x", 9).unwrap_err().to_string()
        );
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The peer wrote `a` twice after this store's point (5, then 6) and ships only 6: a read
    /// before 6 must not be given this store's version 4, which the peer overwrote at 5; nor
    /// may `b`, created at 3 at the peer and shipped at 6, be "absent" before 6.
    #[test]
    fn an_installed_version_hides_no_history_it_skipped() {
        let (dir, s) = store("install-gap");
        s.set(b"a", b"four", 4).unwrap();
        assert_eq!(
            s.install(&[(b"a", Some(b"six"), 6), (b"b", Some(b"six"), 6)])
                .unwrap(),
            2
        );
        for id in [&b"a"[..], b"b"] {
            for bound in [5, 6] {
                assert_eq!(
                    s.get_before(id, bound).unwrap(),
                    Lookup::Lagging,
                    "{} before {bound}",
                    String::from_utf8_lossy(id)
                );
            }
            assert_eq!(
                s.get_before(id, 7).unwrap(),
                Lookup::Value {
                    ts: 6,
                    value: b"six".to_vec()
                }
            );
        }
        // Writes after the shipped point make history again: the older block goes first.
        s.set(b"a", b"eight", 8).unwrap();
        assert_eq!(
            s.get_before(b"a", 8).unwrap(),
            Lookup::Value {
                ts: 6,
                value: b"six".to_vec()
            }
        );
        assert_eq!(s.get_before(b"a", 6).unwrap(), Lookup::Lagging);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
