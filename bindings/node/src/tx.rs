//! Admission's native fast path (`remora_core::tx`): one synchronous call per transaction, as
//! it takes well under a microsecond.

use napi_derive::napi;

/// The hex digest of `bytes` (one `tx.v1` transaction) when the native check vouches for its
/// framing and canonical body; null when it cannot, and the JavaScript check decides.
#[napi(js_name = "vouchTx")]
pub fn vouch_tx(bytes: &[u8]) -> Option<String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = remora_core::tx::vouch(bytes)?;
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    Some(out)
}
