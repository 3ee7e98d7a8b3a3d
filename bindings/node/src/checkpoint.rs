//! Checkpoints of the owner's store for JavaScript (docs/checkpoints.md): written on the libuv
//! pool, so the JS thread keeps merging while the store is exported a chunk at a time.

use napi::bindgen_prelude::{AsyncTask, BigInt, BigUint64Array, Buffer, Uint32Array};
use napi::{Env, Result, Task};
use napi_derive::napi;
use remora_core::store::checkpoint::{
    read_checkpoint as read_all, read_checkpoint_header as read_header,
    verify_checkpoint as verify, write_checkpoint, CheckpointHeader, Exported, ExportedState,
    DEFAULT_CHUNK,
};
use remora_core::Store;
use std::path::PathBuf;
use std::sync::Arc;

use crate::{invalid, js_err, NativeStore};

/// What a checkpoint wrote. `gone` > 0: that many objects were overwritten twice after `ts`
/// during the export, so nothing was written (`records` and `bytes` are 0).
#[napi(object)]
pub struct CheckpointWritten {
    pub records: f64,
    pub bytes: f64,
    pub gone: f64,
}

/// A restored checkpoint: the state as of `ts` is now in the store.
#[napi(object)]
pub struct CheckpointRestored {
    pub ts: BigInt,
    pub meta: Buffer,
    pub records: f64,
}

/// A checkpoint file's header, checked (its records are checked on restore).
#[napi(object)]
pub struct CheckpointHeaderJs {
    pub format: u32,
    pub ts: BigInt,
    pub records: f64,
    pub meta: Buffer,
}

fn ts_u64(what: &str, ts: &BigInt) -> Result<u64> {
    let (signed, v, lossless) = ts.get_u64();
    if signed || !lossless {
        return Err(invalid(format!(
            "{what}: ts must be a 64-bit unsigned integer"
        )));
    }
    Ok(v)
}

fn written(e: Exported) -> CheckpointWritten {
    match e {
        Exported::Whole { records, bytes } => CheckpointWritten {
            records: records as f64,
            bytes: bytes as f64,
            gone: 0.0,
        },
        Exported::Gone { objects } => CheckpointWritten {
            records: 0.0,
            bytes: 0.0,
            gone: objects as f64,
        },
    }
}

enum Source {
    /// Exported on the pool, `chunk` ids per read-lock hold.
    Store {
        store: Arc<Store>,
        ts: u64,
        chunk: usize,
    },
    /// Exported already, under one hold on the caller's thread.
    Taken(ExportedState),
}

pub struct WriteCheckpoint {
    source: Option<Source>,
    path: PathBuf,
    meta: Vec<u8>,
}

impl Task for WriteCheckpoint {
    type Output = Exported;
    type JsValue = CheckpointWritten;
    fn compute(&mut self) -> Result<Exported> {
        match self.source.take() {
            Some(Source::Store { store, ts, chunk }) => store
                .checkpoint(&self.path, ts, &self.meta, chunk)
                .map_err(js_err),
            Some(Source::Taken(state)) => {
                write_checkpoint(&self.path, &state, &self.meta).map_err(js_err)
            }
            None => Err(invalid("checkpoint task ran twice")),
        }
    }
    fn resolve(&mut self, _: Env, out: Exported) -> Result<CheckpointWritten> {
        Ok(written(out))
    }
}

#[napi]
impl NativeStore {
    /// Writes the state as of `ts` to `path` from the libuv pool, `chunkObjects` ids per
    /// read-lock hold (default 4096), so the owner's writes go on meanwhile. Resolves with
    /// `gone` > 0 (and no file) if the state as of `ts` was overwritten during the export.
    #[napi(ts_return_type = "Promise<CheckpointWritten>")]
    pub fn checkpoint(
        &self,
        path: String,
        ts: BigInt,
        meta: Buffer,
        chunk_objects: Option<u32>,
    ) -> Result<AsyncTask<WriteCheckpoint>> {
        let chunk = chunk_objects.map_or(DEFAULT_CHUNK, |c| c.max(1) as usize);
        Ok(AsyncTask::new(WriteCheckpoint {
            source: Some(Source::Store {
                store: self.store()?,
                ts: ts_u64("checkpoint", &ts)?,
                chunk,
            }),
            path: path.into(),
            meta: meta.to_vec(),
        }))
    }

    /// Exports the state as of `ts` now, under one read-lock hold on this thread (the caller,
    /// the only writer, must be at `ts`: then nothing can be gone), and writes it to `path`
    /// from the libuv pool. The caller's writes wait for the export, not for the disk.
    #[napi(ts_return_type = "Promise<CheckpointWritten>")]
    pub fn checkpoint_held(
        &self,
        path: String,
        ts: BigInt,
        meta: Buffer,
    ) -> Result<AsyncTask<WriteCheckpoint>> {
        let state = self
            .store()?
            .export_checkpoint(ts_u64("checkpointHeld", &ts)?)
            .map_err(js_err)?;
        Ok(AsyncTask::new(WriteCheckpoint {
            source: Some(Source::Taken(state)),
            path: path.into(),
            meta: meta.to_vec(),
        }))
    }

    /// Installs the checkpoint at `path` into this store, which must be empty; the whole file
    /// is checked first, so a damaged one leaves the store empty.
    #[napi]
    pub fn restore(&self, path: String) -> Result<CheckpointRestored> {
        let r = self
            .store()?
            .restore_checkpoint(path.as_ref())
            .map_err(js_err)?;
        Ok(CheckpointRestored {
            ts: BigInt::from(r.ts),
            meta: r.meta.into(),
            records: r.records as f64,
        })
    }
}

fn header_js(h: CheckpointHeader) -> CheckpointHeaderJs {
    CheckpointHeaderJs {
        format: h.format,
        ts: BigInt::from(h.ts),
        records: h.records as f64,
        meta: h.meta.into(),
    }
}

/// Reads and checks a checkpoint file's header and meta, without its records.
#[napi]
pub fn read_checkpoint_header(path: String) -> Result<CheckpointHeaderJs> {
    read_header(path.as_ref()).map(header_js).map_err(js_err)
}

/// Reads and checks a whole checkpoint file (header, meta and every record) without installing
/// it: to choose a file before the store it will go to exists.
#[napi]
pub fn verify_checkpoint(path: String) -> Result<CheckpointHeaderJs> {
    verify(path.as_ref()).map(header_js).map_err(js_err)
}

/// A checkpoint's records laid flat (no object per record crosses the binding): record i has
/// id `ids[idEnds[i-1]..idEnds[i]]`, version `versions[i]`, and value
/// `values[valueEnds[i-1]..valueEnds[i]]`, or none when `tombstones[i]` is 1.
#[napi(object)]
pub struct CheckpointRecords {
    pub ts: BigInt,
    pub meta: Buffer,
    pub ids: Buffer,
    pub id_ends: Uint32Array,
    pub versions: BigUint64Array,
    pub values: Buffer,
    pub value_ends: Uint32Array,
    pub tombstones: Buffer,
}

/// Reads and checks a whole checkpoint file and returns its records, for a copy of the state
/// kept outside a store (a pre-executor's).
#[napi]
pub fn read_checkpoint(path: String) -> Result<CheckpointRecords> {
    let (mut ids, mut id_ends, mut versions) = (Vec::new(), Vec::new(), Vec::new());
    let (mut values, mut value_ends, mut tombstones) = (Vec::new(), Vec::new(), Vec::new());
    let h = read_all(path.as_ref(), |id, value, ts| {
        ids.extend_from_slice(id);
        id_ends.push(ids.len());
        versions.push(ts);
        tombstones.push(u8::from(value.is_none()));
        values.extend_from_slice(value.unwrap_or_default());
        value_ends.push(values.len());
    })
    .map_err(js_err)?;
    let ends = |v: Vec<usize>, what: &str| -> Result<Uint32Array> {
        let out: Option<Vec<u32>> = v.into_iter().map(|e| u32::try_from(e).ok()).collect();
        out.map(Uint32Array::new).ok_or_else(|| {
            invalid(format!(
                "readCheckpoint: the {what} of {path} exceed 4 GiB; restore it into a store instead"
            ))
        })
    };
    Ok(CheckpointRecords {
        ts: BigInt::from(h.ts),
        meta: h.meta.into(),
        id_ends: ends(id_ends, "ids")?,
        value_ends: ends(value_ends, "values")?,
        ids: ids.into(),
        versions: BigUint64Array::new(versions),
        values: values.into(),
        tombstones: tombstones.into(),
    })
}

/// Where this store shares its newest checkpoint: peers (a primary starting empty, a
/// pre-executor joining from another host) copy it one-sidedly over the store's transport.
#[napi(object)]
pub struct SharedCheckpoint {
    pub region: u32,
    /// The file's length; it starts `SHARE_HEADER` bytes into the region's data.
    pub bytes: f64,
    /// Counts the files shared into `region`: a copy whose generation changed under it is torn.
    pub generation: f64,
}

/// The shared region's data starts with the generation (u64) and the file's length (u64,
/// 0 while a file is being written), then the file.
const SHARE_HEADER: u64 = 16;
const SHARE_AT: u64 = remora_core::region::REGION_HEADER_BYTES as u64;

#[napi]
impl NativeStore {
    /// Copies the checkpoint file at `path` into a shared region of this store, `region` if it
    /// is given and large enough, else a new one half as large again as needed. Returns where.
    #[napi]
    pub fn share_checkpoint(&self, path: String, region: Option<u32>) -> Result<SharedCheckpoint> {
        let store = self.store()?;
        let file = std::fs::read(&path)
            .map_err(|e| invalid(format!("cannot read checkpoint {path}: {e}")))?;
        let need = SHARE_HEADER + file.len() as u64;
        let fits = |r: u32| {
            store
                .read_region(r, SHARE_AT + need - 1, &mut [0u8; 1])
                .is_ok()
        };
        let region = match region {
            Some(r) if fits(r) => r,
            _ => store
                .add_shared_region((need + need / 2) as usize)
                .map_err(js_err)?,
        };
        let mut word = [0u8; 8];
        store
            .read_region(region, SHARE_AT, &mut word)
            .map_err(js_err)?;
        let generation = u64::from_le_bytes(word) + 1;
        // Length 0 while the file is replaced: a peer copying meanwhile finds its copy invalid.
        store
            .write_region(region, SHARE_AT + 8, &0u64.to_le_bytes())
            .map_err(js_err)?;
        store
            .write_region(region, SHARE_AT + SHARE_HEADER, &file)
            .map_err(js_err)?;
        store
            .write_region(region, SHARE_AT, &generation.to_le_bytes())
            .map_err(js_err)?;
        store
            .write_region(region, SHARE_AT + 8, &(file.len() as u64).to_le_bytes())
            .map_err(js_err)?;
        Ok(SharedCheckpoint {
            region,
            bytes: file.len() as f64,
            generation: generation as f64,
        })
    }
}
