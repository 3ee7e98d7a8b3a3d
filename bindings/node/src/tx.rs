//! Admission's native fast path (`remora_core::tx`): one synchronous call per transaction, or
//! one per batch of transactions read together.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::invalid;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What `vouchTxs` writes for a transaction it does not vouch for: 64 characters no digest has.
const NOT_VOUCHED: u8 = b'-';

fn push_hex(out: &mut Vec<u8>, digest: &[u8; 32]) {
    for &b in digest {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
}

/// The hex digest of `bytes` (one `tx.v1` transaction) when the native check vouches for its
/// framing and canonical body; null when it cannot, and the JavaScript check decides.
#[napi(js_name = "vouchTx")]
pub fn vouch_tx(bytes: &[u8]) -> Option<String> {
    let digest = remora_core::tx::vouch(bytes)?;
    let mut out = Vec::with_capacity(64);
    push_hex(&mut out, &digest);
    // Hex digits are ASCII: never refused.
    String::from_utf8(out).ok()
}

/// `vouchTx` for a batch in one call: transaction `i` is `bytes[ends[i-1]..ends[i]]`
/// (`ends[-1]` = 0). Returns 64 ASCII characters per transaction, in order: its hex digest, or
/// 64 `-` where the native check does not vouch for it. Bytes, not a string: a digest sliced
/// out of one string is a view of it, slower as a map key than a string of its own. Ends out of
/// order or past the bytes are an error, and nothing is vouched for.
#[napi(js_name = "vouchTxs")]
pub fn vouch_txs(bytes: &[u8], ends: Uint32Array) -> Result<Buffer> {
    let mut out = Vec::with_capacity(64 * ends.len());
    let mut start = 0usize;
    for (i, &end) in ends.iter().enumerate() {
        let end = end as usize;
        let Some(tx) = bytes.get(start..end) else {
            return Err(invalid(format!(
                "vouchTxs: ends[{i}] = {end} is before {start} or past the {} bytes",
                bytes.len()
            )));
        };
        match remora_core::tx::vouch(tx) {
            Some(digest) => push_hex(&mut out, &digest),
            None => out.extend_from_slice(&[NOT_VOUCHED; 64]),
        }
        start = end;
    }
    Ok(out.into())
}
