//! Version checks of remote objects: which version a read would choose, without its value.
//!
//! A version of an object is immutable once written: the owner writes `(id, ts)` once, with
//! one value (or a tombstone), and a later write gets a later timestamp. So a reader that kept
//! a copy of the version of `id` written at `ts` may use it again for any read whose answer
//! is the version written at `ts`; only the timestamp has to be read to know that. These
//! reads go through [`RemoteStore::read_into`] with an empty buffer: the same validation
//! (sequence words, checksums, the header guard against a freed or reused slot, forwarding),
//! minus the copy of the value.

use crate::error::Result;
use crate::remote::{Handle, RemoteStore};
use crate::slot::{ReadMeta, Status, Want};
use crate::transport::RemoteMemory;

/// What [`RemoteStore::read_unless_current`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    /// The version `want` chooses is the value written at the `known` timestamp: nothing
    /// was copied. `len` is that value's length.
    Current(ReadMeta),
    /// Anything else, read as [`RemoteStore::read_into`] reads it (a value lands in `out`,
    /// unless it does not fit: see [`ReadMeta::fits`]).
    Read(ReadMeta),
}

impl<M: RemoteMemory> RemoteStore<M> {
    /// The version `want` chooses for the object behind `handle`, with its timestamp, kind
    /// and length but not its value: a `Value` answer has `len` set and nothing copied.
    pub fn version_into(&self, handle: Handle, want: Want) -> Result<ReadMeta> {
        self.read_into(handle, want, &mut [])
    }

    /// Reads the object behind `handle` as `read_into` does, except that when the version
    /// `want` chooses is a value written at `known` (nonzero), its value is not copied: the
    /// caller holds it already. `known == 0` means the caller holds nothing (0 is never a
    /// version's timestamp).
    ///
    /// A version check that finds another version is followed by a full read: the version
    /// may have moved in between, so the second read's answer is the one returned (for a
    /// bound the owner has passed, both reads answer the same).
    pub fn read_unless_current(
        &self,
        handle: Handle,
        want: Want,
        known: u64,
        out: &mut [u8],
    ) -> Result<Fresh> {
        if known == 0 {
            return self.read_into(handle, want, out).map(Fresh::Read);
        }
        let meta = self.version_into(handle, want)?;
        match meta.status {
            Status::Value if meta.ts == known => Ok(Fresh::Current(meta)),
            // Only a value has bytes to copy: every other answer is whole already.
            Status::Value if meta.len > 0 => self.read_into(handle, want, out).map(Fresh::Read),
            _ => Ok(Fresh::Read(meta)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::tests::{owner, ByteCopies, SECRET};
    use crate::remote::NO_HANDLE;
    use crate::transport::Transport;
    use crate::{ShmTransport, Store};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn meta(status: Status, ts: u64, len: usize) -> ReadMeta {
        ReadMeta { status, ts, len }
    }

    fn versions_and_reuse<M: RemoteMemory>(store: &Store, r: &RemoteStore<M>) {
        store.set(b"x", b"one", 10).unwrap();
        store.set(b"x", b"two!", 20).unwrap();
        store.set(b"gone", b"was", 5).unwrap();
        store.delete(b"gone", 7).unwrap();
        store.set(b"empty", b"", 3).unwrap();
        let hs = r.handles(&[b"x", b"gone", b"empty", b"nobody"]).unwrap();
        let (x, gone, empty) = (hs[0], hs[1], hs[2]);
        assert_eq!(hs[3], NO_HANDLE);
        let cases = [
            (x, Want::Newest, meta(Status::Value, 20, 4)),
            (x, Want::Before(21), meta(Status::Value, 20, 4)),
            (x, Want::Before(20), meta(Status::Value, 10, 3)),
            (x, Want::Before(10), meta(Status::Lagging, 0, 0)),
            (gone, Want::Newest, meta(Status::Deleted, 7, 0)),
            (gone, Want::Before(7), meta(Status::Value, 5, 3)),
            (gone, Want::Before(5), meta(Status::Lagging, 0, 0)),
            (empty, Want::Newest, meta(Status::Value, 3, 0)),
            (empty, Want::Before(3), meta(Status::Absent, 0, 0)),
        ];
        // Twice: the second round reads slots already checked (the seqlock path over `shm`).
        for _ in 0..2 {
            for (h, want, expected) in cases {
                assert_eq!(r.version_into(h, want).unwrap(), expected, "{want:?}");
            }
        }

        let mut out = [0u8; 64];
        // Known at the version chosen: nothing copied.
        out.fill(0xaa);
        assert_eq!(
            r.read_unless_current(x, Want::Before(21), 20, &mut out)
                .unwrap(),
            Fresh::Current(meta(Status::Value, 20, 4))
        );
        assert_eq!(out[..4], [0xaa; 4]);
        // Known at another version: the chosen one is read in full.
        assert_eq!(
            r.read_unless_current(x, Want::Before(20), 20, &mut out)
                .unwrap(),
            Fresh::Read(meta(Status::Value, 10, 3))
        );
        assert_eq!(&out[..3], b"one");
        assert_eq!(
            r.read_unless_current(x, Want::Newest, 10, &mut out)
                .unwrap(),
            Fresh::Read(meta(Status::Value, 20, 4))
        );
        assert_eq!(&out[..4], b"two!");
        // A tombstone is never "current": the answer is whole without a value.
        assert_eq!(
            r.read_unless_current(gone, Want::Newest, 7, &mut out)
                .unwrap(),
            Fresh::Read(meta(Status::Deleted, 7, 0))
        );
        assert_eq!(
            r.read_unless_current(x, Want::Before(10), 10, &mut out)
                .unwrap(),
            Fresh::Read(meta(Status::Lagging, 0, 0))
        );
        // Nothing known: a plain read.
        out.fill(0);
        assert_eq!(
            r.read_unless_current(x, Want::Newest, 0, &mut out).unwrap(),
            Fresh::Read(meta(Status::Value, 20, 4))
        );
        assert_eq!(&out[..4], b"two!");

        // A new version moves the check.
        store.set(b"x", b"three", 30).unwrap();
        assert_eq!(
            r.read_unless_current(x, Want::Newest, 20, &mut out)
                .unwrap(),
            Fresh::Read(meta(Status::Value, 30, 5))
        );
        assert_eq!(&out[..5], b"three");
        // Growing past the slot's class forwards the object: the check follows it.
        let big = vec![9u8; 500];
        store.set(b"x", &big, 40).unwrap();
        assert_eq!(
            r.version_into(x, Want::Newest).unwrap(),
            meta(Status::Value, 40, 500)
        );
        assert_eq!(
            r.version_into(x, Want::Before(40)).unwrap(),
            meta(Status::Value, 30, 5)
        );

        // `gone`'s slot is purged and handed to `fresh`, written at the very timestamp the
        // reader holds for `gone`: the check must answer for `gone`, never `fresh`.
        store.purge_deleted(8);
        store.set(b"fresh", b"not gone", 5).unwrap();
        assert_eq!(
            r.version_into(gone, Want::Newest).unwrap(),
            ReadMeta::ABSENT
        );
        assert_eq!(
            r.read_unless_current(gone, Want::Before(100), 5, &mut out)
                .unwrap(),
            Fresh::Read(ReadMeta::ABSENT)
        );
        store.set(b"gone", b"back", 50).unwrap();
        assert_eq!(
            r.version_into(gone, Want::Newest).unwrap(),
            meta(Status::Value, 50, 4)
        );
    }

    #[test]
    fn shm_version_checks_are_exact() {
        let (dir, store, _ctl) = owner("versions-shm");
        let t = ShmTransport::new(&dir.0, SECRET).unwrap();
        versions_and_reuse(&store, &RemoteStore::new(t.attach("own").unwrap()));
    }

    #[test]
    fn byte_copy_version_checks_are_exact() {
        let (dir, store, _ctl) = owner("versions-bytes");
        let t = ShmTransport::new(&dir.0, SECRET).unwrap();
        versions_and_reuse(
            &store,
            &RemoteStore::new(ByteCopies(t.attach("own").unwrap())),
        );
    }

    /// A writer rewrites the object as fast as it can while the reader checks versions: every
    /// answer must be a version that existed (value = its timestamp), never a torn pairing,
    /// and an answer "current" must be one for the timestamp the reader holds.
    #[test]
    fn version_checks_under_concurrent_writes_are_whole() {
        let (dir, store, _ctl) = owner("versions-race");
        store.set(b"hot", &1u64.to_le_bytes(), 1).unwrap();
        let t = ShmTransport::new(&dir.0, SECRET).unwrap();
        let r = RemoteStore::new(t.attach("own").unwrap());
        let h = r.handles(&[b"hot"]).unwrap()[0];
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut ts = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    ts += 1;
                    store.set(b"hot", &ts.to_le_bytes(), ts).unwrap();
                }
                ts
            })
        };
        let (mut last, mut held, mut current) = (0u64, 0u64, 0u64);
        let mut out = [0u8; 8];
        // At least 50 000 checks, and on until the writer is well under way (it may start late
        // on a loaded host).
        let mut checks = 0u64;
        while checks < 50_000 || last < 20_000 {
            checks += 1;
            let m = r.version_into(h, Want::Newest).unwrap();
            assert_eq!((m.status, m.len), (Status::Value, 8));
            assert!(m.ts >= last, "newest went back from {last} to {}", m.ts);
            last = m.ts;
            match r
                .read_unless_current(h, Want::Newest, held, &mut out)
                .unwrap()
            {
                Fresh::Current(m) => {
                    assert_eq!(m.ts, held);
                    current += 1;
                }
                Fresh::Read(m) => {
                    assert_eq!(m.status, Status::Value);
                    assert_eq!(u64::from_le_bytes(out), m.ts, "value of another version");
                    held = m.ts;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().unwrap();
        assert!(last <= written);
        // Whether any check found the same version depends on scheduling; the count is only
        // reported.
        eprintln!(
            "{current} of {checks} checks found the held version current (newest seen {last})"
        );
    }
}
