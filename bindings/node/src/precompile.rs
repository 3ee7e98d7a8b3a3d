//! Thin N-API face of `remora-precompile`. Calls are synchronous: each function is CPU-bound and
//! microseconds long (ed25519 ≈ 50 µs), less than a trip to the libuv pool would add, so
//! batches cross the boundary in one call instead.

use napi::bindgen_prelude::{Buffer, Uint8Array};
use napi::{Error, Result, Status};
use napi_derive::napi;
use remora_precompile::{Registry, ED25519_VERIFY, SHA256};
use std::sync::OnceLock;

/// One registry for the process, so its counters see every call made through JS.
static REGISTRY: OnceLock<Registry> = OnceLock::new();

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(Registry::new)
}

fn precompile_err(e: remora_precompile::Error) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

#[napi(object, object_to_js = false)]
pub struct PrecompileCall {
    pub name: String,
    pub input: Uint8Array,
}

/// Exactly one of `output` and `error` is set.
#[napi(object)]
pub struct PrecompileResult {
    pub output: Option<Buffer>,
    pub error: Option<String>,
}

#[napi(object, object_to_js = false)]
pub struct Ed25519Item {
    pub public_key: Uint8Array,
    pub message: Uint8Array,
    pub signature: Uint8Array,
}

/// Calls made through this process's registry since start or the last reset.
#[napi(object)]
pub struct PrecompileCounters {
    pub sha256: f64,
    #[napi(js_name = "ed25519Verify")]
    pub ed25519_verify: f64,
    pub total: f64,
}

#[napi]
pub fn precompile_call(name: String, input: Uint8Array) -> Result<Buffer> {
    registry()
        .call(&name, &input)
        .map(Buffer::from)
        .map_err(precompile_err)
}

/// One result per call, in order; a failing call does not affect the others.
#[napi]
pub fn precompile_batch(calls: Vec<PrecompileCall>) -> Vec<PrecompileResult> {
    let calls: Vec<(&str, &[u8])> = calls.iter().map(|c| (&c.name[..], &c.input[..])).collect();
    registry()
        .call_batch(&calls)
        .into_iter()
        .map(|r| match r {
            Ok(out) => PrecompileResult {
                output: Some(out.into()),
                error: None,
            },
            Err(e) => PrecompileResult {
                output: None,
                error: Some(e.to_string()),
            },
        })
        .collect()
}

/// Strict verification of each item; malformed keys or signatures are `false`, not errors.
#[napi(js_name = "verifyEd25519Batch")]
pub fn verify_ed25519_batch(items: Vec<Ed25519Item>) -> Vec<bool> {
    let items: Vec<(&[u8], &[u8], &[u8])> = items
        .iter()
        .map(|i| (&i.public_key[..], &i.message[..], &i.signature[..]))
        .collect();
    registry().verify_ed25519_batch(&items)
}

#[napi]
pub fn precompile_counters() -> PrecompileCounters {
    let c = registry().counters();
    PrecompileCounters {
        sha256: c.get(SHA256) as f64,
        ed25519_verify: c.get(ED25519_VERIFY) as f64,
        total: c.total() as f64,
    }
}

#[napi]
pub fn reset_precompile_counters() {
    registry().reset_counters();
}

/// The lookup-table key of a call's result: see `remora_precompile::input_digest`.
#[napi]
pub fn precompile_input_digest(name: String, input: Uint8Array) -> Buffer {
    remora_precompile::input_digest(&name, &input)
        .to_vec()
        .into()
}
