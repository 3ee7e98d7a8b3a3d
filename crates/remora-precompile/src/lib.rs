//! Remora's pre-compiled functions: deterministic, named native functions (hashing, signature
//! verification) that transactions call through the execution context.
//!
//! A pre-executor calls them while executing a transaction and records each result in the
//! transaction's lookup table under [`input_digest`]`(name, input)`; on re-execution the primary
//! takes the recorded result when the digest matches instead of calling the function again (seed
//! 000, "Merge Operation"). Authenticator checks follow the same pattern through
//! [`Registry::verify_ed25519_batch`]. Each [`Registry`] counts the calls it made, so a test can
//! prove that a merge reused results rather than recomputing them.
//!
//! Built-in functions (see [`Registry::names`]):
//!
//! | name | input | output |
//! | --- | --- | --- |
//! | [`SHA256`] `"sha256"` | any bytes | 32-byte SHA-256 digest |
//! | [`ED25519_VERIFY`] `"ed25519.verify"` | public key (32 B) ‖ signature (64 B) ‖ message | one byte: `1` valid, `0` invalid |
//!
//! Rough cost, measured on a shared 2-core development machine with the release profile (`cargo
//! test --release -p remora-precompile -- --ignored --nocapture`): sha256 of 64 B ≈ 0.12 µs, of
//! 4 KiB ≈ 2.6 µs; `ed25519.verify` ≈ 50 µs; [`input_digest`] of 64 B ≈ 0.12 µs. A verification
//! costs as much as hashing ~80 KiB, which is why re-execution skips the ones a pre-executor
//! already did, and why keying results by a digest of the input is cheap by comparison.

mod digest;
mod ed25519;
mod error;
mod registry;

pub use digest::{input_digest, INPUT_DIGEST_DOMAIN};
pub use ed25519::{encode_verify_input, PUBLIC_KEY_LEN, SIGNATURE_LEN, VERIFY_INPUT_MIN_LEN};
pub use error::Error;
pub use registry::{Counters, Registry};

/// Name of the SHA-256 pre-compiled function.
pub const SHA256: &str = "sha256";
/// Name of the strict ed25519 verification pre-compiled function.
pub const ED25519_VERIFY: &str = "ed25519.verify";

#[cfg(test)]
pub(crate) mod test_util {
    /// Test vectors are written in hex as in the RFCs; a dev-dependency for this is not worth it.
    pub fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    }
}
