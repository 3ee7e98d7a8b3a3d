//! `NativeRemote`'s reads for a reader that keeps copies of versions (a cache by version
//! timestamp): which version a read would choose, without copying its value (`versionsInto`),
//! and a batch read copying only the values the caller does not hold already
//! (`readUnlessCurrent`).
//! Both run on the JS thread (over `tcp`/`verbs` blocking it for the round trips) and create no JS object per read.

use crate::remote::{
    NativeRemote, READ_ABSENT, READ_DELETED, READ_LAGGING, READ_NO_ROOM, READ_VALUE,
};
use crate::{invalid, js_err, same_len};
use napi::bindgen_prelude::{BigUint64ArraySlice, BufferSlice, Uint32ArraySlice};
use napi::Result;
use napi_derive::napi;
use remora_core::remote::NO_HANDLE;
use remora_core::slot::{ReadMeta, Status, Want};
use remora_core::Fresh;

/// `readUnlessCurrent`: the chosen version is the value written at `known[i]`; not copied.
pub const READ_CURRENT: u32 = 5;

/// Status code, offset and length for `meta`, and the timestamp, of one answer.
fn encode(m: ReadMeta, at: usize, room: usize) -> (u32, usize, usize, u64) {
    match m.status {
        Status::Value if !m.fits(room) => (READ_NO_ROOM, at, m.len, m.ts),
        Status::Value => (READ_VALUE, at, m.len, m.ts),
        Status::Deleted => (READ_DELETED, at, 0, m.ts),
        Status::Absent => (READ_ABSENT, at, 0, 0),
        Status::Lagging => (READ_LAGGING, at, 0, 0),
    }
}

/// The cache's reads, on the same peer store as every other one-sided read.
#[napi]
impl NativeRemote {
    // Any transport: over `tcp`/`verbs` the call blocks this thread for the round trips, which
    // costs less than a pool hop, and a Heron replica has nothing else to do until its remote
    // reads are in (as with `coordinateSync`).
    fn check(&self, what: &str, n: usize, meta: usize, ts: usize) -> Result<()> {
        if meta < 3 * n || ts < n {
            return Err(invalid(format!(
                "{what}: {n} handles need meta of {} numbers and ts of {n} (got {meta} and {ts})",
                3 * n
            )));
        }
        Ok(())
    }

    /// For each handle, the version a read would choose (the newest before `bounds[i]`, or
    /// the newest), without its value: `meta[3i]` is its status (0 value, 1 deleted,
    /// 2 absent, 3 lagging), `meta[3i+2]` the value's length, `ts[i]` its timestamp (0 when
    /// absent or lagging). Handle 0xFFFFFFFF reads as absent.
    #[napi]
    pub fn versions_into(
        &self,
        handles: Uint32ArraySlice<'_>,
        mut meta: Uint32ArraySlice<'_>,
        mut ts: BigUint64ArraySlice<'_>,
        bounds: Option<BigUint64ArraySlice<'_>>,
    ) -> Result<()> {
        let n = handles.len();
        self.check("versionsInto", n, meta.len(), ts.len())?;
        if let Some(b) = &bounds {
            same_len("versionsInto bounds", n, b.len())?;
        }
        // SAFETY: this runs synchronously on the JavaScript thread, so no JavaScript touches
        // `meta` or `ts` until the call returns; the slices live only until then.
        let (meta, ts) = unsafe { (meta.as_mut(), ts.as_mut()) };
        for (i, &h) in handles.iter().enumerate() {
            let want = bounds.as_ref().map_or(Want::Newest, |b| Want::Before(b[i]));
            let m = if h == NO_HANDLE {
                ReadMeta::ABSENT
            } else {
                self.remote.version_into(h, want).map_err(js_err)?
            };
            // A version-only answer always "fits": nothing is copied.
            let (status, _, len, t) = encode(m, 0, usize::MAX);
            meta[3 * i] = status;
            meta[3 * i + 1] = 0;
            // A value's length is at most 1 MiB (checked by the slot read).
            meta[3 * i + 2] = len as u32;
            ts[i] = t;
        }
        Ok(())
    }

    /// Reads the objects behind `handles` as `NativeRemote.readInto` does (the newest version
    /// before `bounds[i]`, values back to back into `out`, same `meta` and `ts` layout),
    /// except where the version chosen is a value written at `known[i]` (nonzero): then its
    /// value is not copied and `meta[3i]` is 5 (current), with its length in `meta[3i+2]`.
    /// Returns the bytes used in `out`.
    #[napi]
    pub fn read_unless_current(
        &self,
        handles: Uint32ArraySlice<'_>,
        bounds: BigUint64ArraySlice<'_>,
        known: BigUint64ArraySlice<'_>,
        mut out: BufferSlice<'_>,
        mut meta: Uint32ArraySlice<'_>,
        mut ts: BigUint64ArraySlice<'_>,
    ) -> Result<u32> {
        let n = handles.len();
        self.check("readUnlessCurrent", n, meta.len(), ts.len())?;
        same_len("readUnlessCurrent bounds", n, bounds.len())?;
        same_len("readUnlessCurrent known", n, known.len())?;
        if out.len() > u32::MAX as usize {
            return Err(invalid("readUnlessCurrent: out must be under 4 GiB"));
        }
        // SAFETY: as in `versions_into`: synchronous on the JavaScript thread.
        let (meta, ts) = unsafe { (meta.as_mut(), ts.as_mut()) };
        let out: &mut [u8] = &mut out;
        let mut used = 0usize;
        for (i, &h) in handles.iter().enumerate() {
            let (status, at, len, t) = if h == NO_HANDLE {
                (READ_ABSENT, used, 0, 0)
            } else {
                let room = out.len() - used;
                match self
                    .remote
                    .read_unless_current(h, Want::Before(bounds[i]), known[i], &mut out[used..])
                    .map_err(js_err)?
                {
                    Fresh::Current(m) => (READ_CURRENT, used, m.len, m.ts),
                    Fresh::Read(m) => {
                        let e = encode(m, used, room);
                        if e.0 == READ_VALUE {
                            used += m.len;
                        }
                        e
                    }
                }
            };
            // Offsets are below `out.len()` (under 4 GiB), lengths at most 1 MiB.
            meta[3 * i] = status;
            meta[3 * i + 1] = at as u32;
            meta[3 * i + 2] = len as u32;
            ts[i] = t;
        }
        Ok(used as u32)
    }
}
