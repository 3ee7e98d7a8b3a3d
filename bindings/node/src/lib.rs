//! Thin N-API conversions over `remora-core`. Calls are coarse (batches of objects); anything
//! that may wait (control-channel round trips, long loops) runs on the libuv pool and returns
//! a Promise. Inputs are checked here or in the core, and every failure becomes a JS `Error`
//! with the core's message.

use napi::bindgen_prelude::{
    BigInt, BigUint64Array, BigUint64ArraySlice, Buffer, BufferSlice, Uint32ArraySlice, Uint8Array,
};
use napi::{Error, Result, Status};
use napi_derive::napi;
use remora_core::{AdoptError, AnyServer, ControlServer, Lookup, Stop, Store, StoreConfig};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

// Timing loops and stress drivers for `remora bench` and the tests: not needed to run a
// cluster, so a packaged addon can leave them out (`--no-default-features`).
#[cfg(feature = "bench")]
pub mod bench;
pub mod checkpoint;
pub mod heron;
pub mod heron_ring;
pub mod heron_transfer;
pub mod log;
pub mod net;
pub mod precompile;
pub mod remote;
pub mod remote_versions;
pub mod tx;

fn js_err(e: remora_core::Error) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, msg.into())
}

/// One object as a read found it: a value or a deletion (`version` is the timestamp of the
/// write that made it); no such object; or, reading before a bound, no version kept that old.
#[napi(
    discriminant = "status",
    discriminant_case = "lowercase",
    object_from_js = false
)]
pub enum ReadResult {
    Value { version: BigInt, value: Buffer },
    Deleted { version: BigInt },
    Absent,
    Lagging,
}

fn to_js(l: Lookup) -> ReadResult {
    match l {
        Lookup::Value { ts, value } => ReadResult::Value {
            version: BigInt::from(ts),
            value: value.into(),
        },
        Lookup::Deleted { ts } => ReadResult::Deleted {
            version: BigInt::from(ts),
        },
        Lookup::Absent => ReadResult::Absent,
        Lookup::Lagging => ReadResult::Lagging,
    }
}

fn same_len(what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(invalid(format!("{what}: {a} ids but {b} entries")));
    }
    Ok(())
}

/// What one `adoptBatch` call did: it adopted `adopted` transactions, then stopped because
/// every transaction through the end was adopted (`end`), the next one has no table (`none`),
/// a read of the next one is no longer current (`stale`), or its table cannot be adopted as it
/// is (`malformed`, `error` says why). The transaction it stopped at is `from + adopted`;
/// nothing of it was applied.
#[napi(
    discriminant = "stop",
    discriminant_case = "lowercase",
    object_from_js = false
)]
pub enum AdoptResult {
    End {
        adopted: u32,
    },
    None {
        adopted: u32,
    },
    /// `stale_after`: how many transactions after the stale one will most likely not be
    /// adopted either (`AdoptRun::stale_after`): merge them in the same run.
    Stale {
        adopted: u32,
        stale_after: u32,
    },
    Malformed {
        adopted: u32,
        error: String,
    },
}

#[napi(object)]
pub struct StoreOptions {
    /// The cluster directory on this host (created private to the user: 0700).
    pub dir: String,
    /// The store's name; peers attach to it by this name.
    pub name: String,
    /// At least 16 bytes, shared by the cluster; guards the control channel.
    pub secret: Buffer,
    /// Size of each registered region (default 4 MiB).
    pub region_bytes: Option<u32>,
}

#[napi(object)]
pub struct StoreStatsJs {
    pub objects: u32,
    pub regions: u32,
    pub region_bytes: f64,
    pub free_slots: u32,
}

/// Fields drop in order: the servers must stop while the regions and the socket still exist.
struct Owned {
    served: Vec<AnyServer>,
    _control: ControlServer,
    store: Arc<Store>,
    /// For servers started later (`serve`).
    secret: Vec<u8>,
}

/// A store owned by this process, serving its control channel from native threads.
#[napi]
pub struct NativeStore {
    name: String,
    owned: Mutex<Option<Owned>>,
    /// Set by `close`: native loops still running for this store (stress writers) end.
    pub(crate) closing: Arc<AtomicBool>,
}

#[napi]
impl NativeStore {
    #[napi(factory)]
    pub fn create(opts: StoreOptions) -> Result<Self> {
        let mut cfg = StoreConfig::new(&opts.dir, &opts.name);
        if let Some(b) = opts.region_bytes {
            cfg.region_bytes = b as usize;
        }
        let store = Arc::new(Store::create(&cfg).map_err(js_err)?);
        let control = ControlServer::start(&store, &opts.secret).map_err(js_err)?;
        Ok(NativeStore {
            name: opts.name,
            closing: Arc::default(),
            owned: Mutex::new(Some(Owned {
                served: Vec::new(),
                _control: control,
                store,
                secret: opts.secret.to_vec(),
            })),
        })
    }

    pub(crate) fn store(&self) -> Result<Arc<Store>> {
        let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        owned
            .as_ref()
            .map(|o| o.store.clone())
            .ok_or_else(|| invalid(format!("store '{}' is closed", self.name)))
    }

    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Also serves the regions over `tcp` or `verbs`, from the server's own native threads,
    /// until `close`. Returns the bound `host:port` peers attach to.
    #[napi]
    pub fn serve(&self, opts: net::ServeOptions) -> Result<String> {
        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        let o = owned
            .as_mut()
            .ok_or_else(|| invalid(format!("store '{}' is closed", self.name)))?;
        let served = net::serve(&o.store, &o.secret, &opts)?;
        let addr = served.local_addr().to_string();
        o.served.push(served);
        Ok(addr)
    }

    /// Sets `values[i]` as the version `ts[i]` of `ids[i]`, in order; all or nothing.
    #[napi]
    pub fn set_many(
        &self,
        ids: Vec<Uint8Array>,
        values: Vec<Uint8Array>,
        ts: BigUint64Array,
    ) -> Result<()> {
        same_len("setMany values", ids.len(), values.len())?;
        same_len("setMany timestamps", ids.len(), ts.len())?;
        let puts: Vec<_> = ids
            .iter()
            .zip(&values)
            .zip(ts.iter())
            .map(|((id, v), ts)| (&id[..], Some(&v[..]), *ts))
            .collect();
        self.store()?.set_many(&puts).map_err(js_err)
    }

    /// As `setMany` and `deleteMany` in one call, flat for the primary's writes (the first
    /// `ids.length` entries of each array): entry i sets
    /// `values[ends[i-1]..ends[i]]` as version `ts[i]` of `ids[i]`, or deletes it at `ts[i]` when
    /// `deleted[i]` is 1 (an absent object's deletion does nothing). In order; all or nothing.
    #[napi]
    pub fn write_flat(
        &self,
        ids: Vec<String>,
        values: BufferSlice<'_>,
        ends: Uint32ArraySlice<'_>,
        ts: BigUint64ArraySlice<'_>,
        deleted: BufferSlice<'_>,
    ) -> Result<()> {
        let n = ids.len();
        if ends.len() < n || ts.len() < n || deleted.len() < n {
            return Err(invalid(format!(
                "writeFlat: {n} ids need ends, timestamps and deleted of {n} (got {}, {} and {})",
                ends.len(),
                ts.len(),
                deleted.len()
            )));
        }
        let mut start = 0usize;
        let mut puts = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let end = ends[i] as usize;
            let value = values.get(start..end).ok_or_else(|| {
                invalid(format!(
                    "writeFlat: entry {i} ends at {end}, before {start} or past the {} value bytes",
                    values.len()
                ))
            })?;
            start = end;
            puts.push((id.as_bytes(), (deleted[i] == 0).then_some(value), ts[i]));
        }
        self.store()?.set_many(&puts).map_err(js_err)
    }

    /// Deletes each id at its timestamp (a tombstone version); all or nothing.
    #[napi]
    pub fn delete_many(&self, ids: Vec<Uint8Array>, ts: BigUint64Array) -> Result<()> {
        same_len("deleteMany timestamps", ids.len(), ts.len())?;
        let store = self.store()?;
        let present: Vec<bool> = store
            .addresses(&ids.iter().map(|i| &i[..]).collect::<Vec<_>>())
            .iter()
            .map(Option::is_some)
            .collect();
        let puts: Vec<_> = ids
            .iter()
            .zip(ts.iter())
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|((id, ts), _)| (&id[..], None, *ts))
            .collect();
        store.set_many(&puts).map_err(js_err)
    }

    /// The primary's merge of a batch, natively (`docs/binary-layouts.md`, "Native
    /// adoption"): from transaction `from`, adopts each whose `table.v1` (`tables` from
    /// `ends[i-1]` to `ends[i]`, empty for none) reads only current versions and values,
    /// applying its writes at `ts[i]`, and stops at the first it does not adopt. Synchronous:
    /// no I/O, and the batch stays consistent with the JS thread's view of the state.
    #[napi]
    pub fn adopt_batch(
        &self,
        tables: BufferSlice<'_>,
        ends: Uint32ArraySlice<'_>,
        ts: BigUint64ArraySlice<'_>,
        from: u32,
    ) -> Result<AdoptResult> {
        let run = self
            .store()?
            .adopt_batch(&tables, &ends, &ts, from as usize)
            .map_err(|e| match e {
                AdoptError::Batch(_) => invalid(e.to_string()),
                AdoptError::Store { .. } => Error::new(Status::GenericFailure, e.to_string()),
            })?;
        // At most `ends.length`, which a JS typed array keeps below 2^32.
        let adopted = run.adopted as u32;
        Ok(match run.stop {
            Stop::End => AdoptResult::End { adopted },
            Stop::NoTable => AdoptResult::None { adopted },
            Stop::Stale => AdoptResult::Stale {
                adopted,
                stale_after: run.stale_after as u32,
            },
            Stop::Malformed(error) => AdoptResult::Malformed { adopted, error },
        })
    }

    /// Every object id in the store (deleted ones too, until purged), sorted bytewise.
    #[napi]
    pub fn ids(&self) -> Result<Vec<Buffer>> {
        Ok(self.store()?.ids().into_iter().map(Buffer::from).collect())
    }

    #[napi]
    pub fn get_many(&self, ids: Vec<Uint8Array>) -> Result<Vec<ReadResult>> {
        let ids: Vec<&[u8]> = ids.iter().map(|i| &i[..]).collect();
        let found = self.store()?.get_many(&ids).map_err(js_err)?;
        Ok(found.into_iter().map(to_js).collect())
    }

    /// The newest version of each id into the caller's buffers, for the primary's merge: the
    /// owner's own read, the same answers as `getMany` without a JavaScript object per id or a
    /// buffer per call. Entry i is `kinds[i]` (0 absent, 1 a value, 2 deleted) at version `versions[i]`,
    /// its value `values[ends[i-1]..ends[i]]`. Returns the value bytes: when more than
    /// `values` holds, nothing but `kinds` and `versions` is written, and the caller asks again
    /// with room for that many.
    #[napi]
    pub fn current_into(
        &self,
        ids: Vec<String>,
        mut kinds: BufferSlice<'_>,
        mut versions: BigUint64ArraySlice<'_>,
        mut values: BufferSlice<'_>,
        mut ends: Uint32ArraySlice<'_>,
    ) -> Result<u32> {
        let n = ids.len();
        if kinds.len() < n || versions.len() < n || ends.len() < n {
            return Err(invalid(format!(
                "currentInto: {n} ids need kinds, versions and ends of {n} (got {}, {} and {})",
                kinds.len(),
                versions.len(),
                ends.len()
            )));
        }
        let c = self.store()?.current_many(ids.iter().map(String::as_bytes));
        let used = u32::try_from(c.values.len())
            .map_err(|_| invalid("currentInto: the values exceed 4 GiB; ask for fewer ids"))?;
        // SAFETY: this runs synchronously on the JavaScript thread, so no JavaScript touches
        // `versions` or `ends` until the call returns; the slices live only until then.
        let (versions, ends) = unsafe { (versions.as_mut(), ends.as_mut()) };
        let kinds: &mut [u8] = &mut kinds;
        kinds[..n].copy_from_slice(&c.kinds);
        versions[..n].copy_from_slice(&c.versions);
        let values: &mut [u8] = &mut values;
        if let Some(room) = values.get_mut(..c.values.len()) {
            room.copy_from_slice(&c.values);
            for (e, &end) in ends.iter_mut().zip(&c.ends) {
                // At most `used`, which is below 2^32.
                *e = end as u32;
            }
        }
        Ok(used)
    }

    #[napi]
    pub fn get_before_many(
        &self,
        ids: Vec<Uint8Array>,
        bounds: BigUint64Array,
    ) -> Result<Vec<ReadResult>> {
        same_len("getBeforeMany bounds", ids.len(), bounds.len())?;
        let reqs: Vec<(&[u8], u64)> = ids
            .iter()
            .map(|i| &i[..])
            .zip(bounds.iter().copied())
            .collect();
        let found = self.store()?.get_before_many(&reqs).map_err(js_err)?;
        Ok(found.into_iter().map(to_js).collect())
    }

    /// Timestamps of the kept versions of `id`, newest first.
    #[napi]
    pub fn versions(&self, id: Uint8Array) -> Result<Vec<BigInt>> {
        Ok(self
            .store()?
            .versions(&id)
            .into_iter()
            .map(BigInt::from)
            .collect())
    }

    #[napi]
    pub fn purge_deleted(&self, horizon: BigInt) -> Result<u32> {
        let (_, h, lossless) = horizon.get_u64();
        if !lossless {
            return Err(invalid("purgeDeleted: horizon must fit in 64 bits"));
        }
        Ok(self.store()?.purge_deleted(h) as u32)
    }

    /// This replica's Heron coordination memory: a new remote-writable region of this store.
    #[napi]
    pub fn heron_coordinator(
        &self,
        opts: heron::CoordinatorOptions,
    ) -> Result<heron::NativeCoordinator> {
        heron::create(self.store()?, opts)
    }

    /// This replica's Heron state-transfer memory: two new remote-writable regions.
    #[napi]
    pub fn heron_transfer(
        &self,
        opts: heron_transfer::TransferOptions,
    ) -> Result<heron_transfer::NativeTransfer> {
        heron_transfer::create_transfer(self.store()?, opts)
    }

    /// The launcher's ordered stream: a new remote-writable region replicas read one-sidedly.
    #[napi]
    pub fn heron_ring(
        &self,
        opts: heron_ring::RingOptions,
    ) -> Result<heron_ring::NativeRingProducer> {
        heron_ring::create_producer(self.store()?, opts)
    }

    #[napi]
    pub fn read_region(&self, region: u32, offset: f64, len: u32) -> Result<Buffer> {
        let mut buf = vec![0u8; len as usize];
        self.store()?
            .read_region(region, offset_u64(offset)?, &mut buf)
            .map_err(js_err)?;
        Ok(buf.into())
    }

    #[napi]
    pub fn stats(&self) -> Result<StoreStatsJs> {
        let s = self.store()?.stats();
        Ok(StoreStatsJs {
            objects: s.objects as u32,
            regions: s.regions as u32,
            region_bytes: s.region_bytes as f64,
            free_slots: s.free_slots as u32,
        })
    }

    /// Stops serving: ends native loops on this store, removes the regions and the control
    /// socket. Idempotent.
    #[napi]
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.owned.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

fn offset_u64(offset: f64) -> Result<u64> {
    if !(offset >= 0.0 && offset.fract() == 0.0 && offset <= 2f64.powi(53)) {
        return Err(invalid(format!(
            "offset must be a non-negative integer, got {offset}"
        )));
    }
    Ok(offset as u64)
}
