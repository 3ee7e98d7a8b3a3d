//! `NativeRemote`: another process's store, read one-sidedly. Besides the per-object reads
//! (`read`, `readBefore`, `readSync`: one JS object per result), handles: `handles` resolves
//! ids once into a `Uint32Array`, and `readInto` reads a batch of handles synchronously into
//! buffers the caller owns (values back to back, numbers in typed arrays), creating no JS
//! object per read.

use crate::{invalid, js_err, net, offset_u64, same_len, to_js, ReadResult};
use napi::bindgen_prelude::{
    AsyncTask, BigUint64Array, BigUint64ArraySlice, Buffer, BufferSlice, Uint32Array,
    Uint32ArraySlice, Uint8Array,
};
use napi::{Env, Result, Task};
use napi_derive::napi;
use remora_core::remote::{Handle, NO_HANDLE};
use remora_core::slot::{Status, Want};
use remora_core::{AnyPeer, Lookup, RemoteMemory, RemoteStore};
use std::sync::Arc;

pub type Remote = Arc<RemoteStore<AnyPeer>>;

/// `readInto`'s per-object status codes (`meta[3 * i]`).
pub const READ_VALUE: u32 = 0;
pub const READ_DELETED: u32 = 1;
pub const READ_ABSENT: u32 = 2;
pub const READ_LAGGING: u32 = 3;
/// The value did not fit in what was left of `out`: its length is in `meta[3 * i + 2]`.
pub const READ_NO_ROOM: u32 = 4;

#[napi(object)]
pub struct RemoteStatsJs {
    pub reads: f64,
    pub rejected_busy: f64,
    pub rejected_checksum: f64,
    pub rejected_skew: f64,
    pub rejected_malformed: f64,
    pub lookups: f64,
    pub forwards: f64,
}

/// Another process's store, read one-sidedly through shared memory, TCP or RDMA.
#[napi]
pub struct NativeRemote {
    pub(crate) remote: Remote,
}

pub struct Connect {
    target: net::Target,
    secret: Vec<u8>,
}

impl Task for Connect {
    type Output = Remote;
    type JsValue = NativeRemote;
    fn compute(&mut self) -> Result<Remote> {
        let peer = self.target.attach(&self.secret)?;
        Ok(Arc::new(RemoteStore::new(peer)))
    }
    fn resolve(&mut self, _: Env, remote: Remote) -> Result<NativeRemote> {
        Ok(NativeRemote { remote })
    }
}

/// Which read a `Read` task performs.
enum ReadKind {
    Resolve,
    Newest,
    Before(Vec<u64>),
}

pub struct Read {
    remote: Remote,
    ids: Vec<Vec<u8>>,
    kind: ReadKind,
}

impl Task for Read {
    type Output = Vec<Lookup>;
    type JsValue = Vec<ReadResult>;
    fn compute(&mut self) -> Result<Vec<Lookup>> {
        let ids: Vec<&[u8]> = self.ids.iter().map(Vec::as_slice).collect();
        match &self.kind {
            ReadKind::Resolve => self.remote.resolve(&ids).map(|_| Vec::new()),
            ReadKind::Newest => self.remote.get_many(&ids),
            ReadKind::Before(bounds) => {
                let reqs: Vec<(&[u8], u64)> =
                    ids.iter().copied().zip(bounds.iter().copied()).collect();
                self.remote.get_before_many(&reqs)
            }
        }
        .map_err(js_err)
    }
    fn resolve(&mut self, _: Env, out: Vec<Lookup>) -> Result<Vec<ReadResult>> {
        Ok(out.into_iter().map(to_js).collect())
    }
}

pub struct Handles {
    remote: Remote,
    ids: Vec<Vec<u8>>,
}

impl Task for Handles {
    type Output = Vec<Handle>;
    type JsValue = Uint32Array;
    fn compute(&mut self) -> Result<Vec<Handle>> {
        let ids: Vec<&[u8]> = self.ids.iter().map(Vec::as_slice).collect();
        self.remote.handles(&ids).map_err(js_err)
    }
    fn resolve(&mut self, _: Env, out: Vec<Handle>) -> Result<Uint32Array> {
        Ok(Uint32Array::new(out))
    }
}

pub(crate) fn owned_ids(ids: &[Uint8Array]) -> Vec<Vec<u8>> {
    ids.iter().map(|i| i.to_vec()).collect()
}

#[napi]
impl NativeRemote {
    /// Attaches to a store: over `shm`, a store of this host (its control channel, then its
    /// regions mapped as needed); over `tcp` or `verbs`, the server at `address`. Either way
    /// the peer must hold the cluster secret.
    #[napi(ts_return_type = "Promise<NativeRemote>")]
    pub fn connect(opts: net::RemoteOptions) -> Result<AsyncTask<Connect>> {
        Ok(AsyncTask::new(Connect {
            target: net::Target::from_options(&opts)?,
            secret: opts.secret.to_vec(),
        }))
    }

    /// The transport reads go through: `shm`, `tcp` or `verbs`.
    #[napi(getter, ts_return_type = "'shm' | 'tcp' | 'verbs'")]
    pub fn transport(&self) -> &'static str {
        self.remote.memory().kind().name()
    }

    /// Asks the owner once where `ids` live; later reads of them need no round trip.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn resolve(&self, ids: Vec<Uint8Array>) -> AsyncTask<Read> {
        self.task(&ids, ReadKind::Resolve)
    }

    /// Resolves `ids` (one round trip for those not resolved yet) into handles for
    /// `readInto`; an id the owner does not know gets 0xFFFFFFFF.
    #[napi(ts_return_type = "Promise<Uint32Array>")]
    pub fn handles(&self, ids: Vec<Uint8Array>) -> AsyncTask<Handles> {
        AsyncTask::new(Handles {
            remote: self.remote.clone(),
            ids: owned_ids(&ids),
        })
    }

    /// The newest version of each id, read one-sidedly.
    #[napi(ts_return_type = "Promise<Array<ReadResult>>")]
    pub fn read(&self, ids: Vec<Uint8Array>) -> AsyncTask<Read> {
        self.task(&ids, ReadKind::Newest)
    }

    /// For each id, the newest version with timestamp < its bound, or `lagging`.
    #[napi(ts_return_type = "Promise<Array<ReadResult>>")]
    pub fn read_before(
        &self,
        ids: Vec<Uint8Array>,
        bounds: BigUint64Array,
    ) -> Result<AsyncTask<Read>> {
        same_len("readBefore bounds", ids.len(), bounds.len())?;
        Ok(self.task(&ids, ReadKind::Before(bounds.to_vec())))
    }

    fn task(&self, ids: &[Uint8Array], kind: ReadKind) -> AsyncTask<Read> {
        AsyncTask::new(Read {
            remote: self.remote.clone(),
            ids: owned_ids(ids),
            kind,
        })
    }

    fn need_local(&self, what: &str, instead: &str) -> Result<()> {
        let peer = self.remote.memory();
        if !peer.is_local() {
            return Err(invalid(format!(
                "{what} needs the shm transport (this peer reads over {}): use {instead}",
                peer.kind()
            )));
        }
        Ok(())
    }

    /// `read` without leaving the JS thread, for ids already resolved: a shared-memory copy
    /// and its validation, no I/O. An unresolved id is an error, and so is a transport that
    /// would block the JS thread on the network.
    #[napi]
    pub fn read_sync(&self, ids: Vec<Uint8Array>) -> Result<Vec<ReadResult>> {
        self.need_local("readSync", "read()")?;
        if let Some(id) = ids.iter().find(|id| !self.remote.is_resolved(id)) {
            return Err(invalid(format!(
                "the address of object {} is not resolved yet: await resolve() or read() first",
                remora_core::error::show_id(id)
            )));
        }
        let ids: Vec<&[u8]> = ids.iter().map(|i| &i[..]).collect();
        let found = self.remote.get_many(&ids).map_err(js_err)?;
        Ok(found.into_iter().map(to_js).collect())
    }

    /// Reads the objects behind `handles` (from `handles`) on the JS thread, over `shm` only,
    /// allocating nothing: values go back to back into `out`; for object i, `meta[3i]` is
    /// its status (0 value, 1 deleted, 2 absent, 3 lagging, 4 no room left in `out`),
    /// `meta[3i+1]` the offset of its value in `out`, `meta[3i+2]` its length, and `ts[i]`
    /// the version's timestamp (0 when absent or lagging). With `bounds`, object i gets the
    /// newest version before `bounds[i]` (`readBefore`), else the newest. Handle 0xFFFFFFFF
    /// (an id the owner did not know) reads as absent. Returns the bytes used in `out`.
    /// A slot freed or moved since its handle was made costs one control round trip.
    #[napi]
    pub fn read_into(
        &self,
        handles: Uint32ArraySlice<'_>,
        mut out: BufferSlice<'_>,
        mut meta: Uint32ArraySlice<'_>,
        mut ts: BigUint64ArraySlice<'_>,
        bounds: Option<BigUint64ArraySlice<'_>>,
    ) -> Result<u32> {
        self.need_local("readInto", "read() or readBefore()")?;
        let n = handles.len();
        if meta.len() < 3 * n || ts.len() < n {
            return Err(invalid(format!(
                "readInto: {n} handles need meta of {} numbers and ts of {n} (got {} and {})",
                3 * n,
                meta.len(),
                ts.len()
            )));
        }
        if let Some(b) = &bounds {
            same_len("readInto bounds", n, b.len())?;
        }
        if out.len() > u32::MAX as usize {
            return Err(invalid("readInto: out must be under 4 GiB"));
        }
        // SAFETY: this runs synchronously on the JavaScript thread, so no JavaScript touches
        // `meta` or `ts` until the call returns; the slices live only until then.
        let (meta, ts) = unsafe { (meta.as_mut(), ts.as_mut()) };
        let out: &mut [u8] = &mut out;
        let mut used = 0usize;
        for (i, &h) in handles.iter().enumerate() {
            let want = match &bounds {
                Some(b) => Want::Before(b[i]),
                None => Want::Newest,
            };
            let m = if h == NO_HANDLE {
                None
            } else {
                Some(
                    self.remote
                        .read_into(h, want, &mut out[used..])
                        .map_err(js_err)?,
                )
            };
            let (status, at, len, t) = match m {
                None => (READ_ABSENT, used, 0, 0),
                Some(m) => match m.status {
                    Status::Value if !m.fits(out.len() - used) => (READ_NO_ROOM, used, m.len, m.ts),
                    Status::Value => {
                        let at = used;
                        used += m.len;
                        (READ_VALUE, at, m.len, m.ts)
                    }
                    Status::Deleted => (READ_DELETED, used, 0, m.ts),
                    Status::Absent => (READ_ABSENT, used, 0, 0),
                    Status::Lagging => (READ_LAGGING, used, 0, 0),
                },
            };
            // Offsets and lengths are below `out.len()` (checked under 4 GiB) or a value
            // length (at most 1 MiB).
            meta[3 * i] = status;
            meta[3 * i + 1] = at as u32;
            meta[3 * i + 2] = len as u32;
            ts[i] = t;
        }
        Ok(used as u32)
    }

    /// Raw one-sided read of a peer region (e.g. coordination memory).
    #[napi]
    pub fn read_region(&self, region: u32, offset: f64, len: u32) -> Result<Buffer> {
        let mut buf = vec![0u8; len as usize];
        self.remote
            .memory()
            .read(region, offset_u64(offset)?, &mut buf)
            .map_err(js_err)?;
        Ok(buf.into())
    }

    #[napi]
    pub fn stats(&self) -> RemoteStatsJs {
        let s = self.remote.stats();
        RemoteStatsJs {
            reads: s.reads as f64,
            rejected_busy: s.rejected_busy as f64,
            rejected_checksum: s.rejected_checksum as f64,
            rejected_skew: s.rejected_skew as f64,
            rejected_malformed: s.rejected_malformed as f64,
            lookups: s.lookups as f64,
            forwards: s.forwards as f64,
        }
    }
}
