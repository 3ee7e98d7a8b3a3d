use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::ed25519;
use crate::error::Error;
use crate::{ED25519_VERIFY, SHA256};

type Function = fn(&[u8]) -> Result<Vec<u8>, Error>;

/// The fixed function set. It is compiled in rather than registered at run time because every
/// replica must resolve a name to the same function; a new function is a new release.
const BUILTINS: [(&str, Function); 2] = [(SHA256, sha256), (ED25519_VERIFY, ed25519::verify_call)];

fn sha256(input: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(Sha256::digest(input).to_vec())
}

/// The pre-compiled functions with one call counter per function.
///
/// Counters belong to the instance, not to the process, so that tests running in parallel (and
/// several pre-executors or primaries in one process) each see only their own calls. A
/// `Registry` is `Send + Sync`; share it behind an `Arc`.
#[derive(Debug)]
pub struct Registry {
    calls: [AtomicU64; BUILTINS.len()],
}

/// Snapshot of a [`Registry`]'s call counters.
///
/// A call is counted when it reaches a function — a known name, whatever its input and result —
/// so `get(ED25519_VERIFY) == 0` proves no signature was verified natively. Each counter is read
/// on its own (relaxed), so a snapshot taken during concurrent calls is not one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    calls: Vec<(&'static str, u64)>,
}

impl Counters {
    /// Calls made to `name`; `0` for a name that is not a function.
    pub fn get(&self, name: &str) -> u64 {
        self.calls
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |&(_, count)| count)
    }

    /// `(name, calls)` for every function, in [`Registry::names`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.calls.iter().copied()
    }

    /// Calls made to all functions together.
    pub fn total(&self) -> u64 {
        self.calls.iter().map(|&(_, count)| count).sum()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry of the built-in functions, with all counters at zero.
    pub fn new() -> Self {
        Registry {
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Names of the functions, in a fixed order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        BUILTINS.iter().map(|&(name, _)| name)
    }

    /// Whether `name` is a function; admission uses it to reject a transaction early.
    pub fn contains(&self, name: &str) -> bool {
        self.index_of(name).is_some()
    }

    /// Calls function `name` on `input`.
    ///
    /// # Errors
    /// [`Error::UnknownFunction`] when no function has that name, [`Error::MalformedInput`]
    /// when the input does not have the function's documented shape.
    pub fn call(&self, name: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let index = self
            .index_of(name)
            .ok_or_else(|| Error::unknown_function(name))?;
        self.calls[index].fetch_add(1, Ordering::Relaxed);
        (BUILTINS[index].1)(input)
    }

    /// [`call`](Self::call) for each `(name, input)`, one result per item in order; one bad item
    /// does not affect the others. This is the granularity the N-API layer crosses at.
    pub fn call_batch<N, I>(&self, calls: &[(N, I)]) -> Vec<Result<Vec<u8>, Error>>
    where
        N: AsRef<str>,
        I: AsRef<[u8]>,
    {
        calls
            .iter()
            .map(|(name, input)| self.call(name.as_ref(), input.as_ref()))
            .collect()
    }

    /// Strictly verifies each `(public_key, message, signature)`, one result per item in order.
    ///
    /// A key or signature of the wrong length, or a key that is not a valid point, gives `false`
    /// rather than an error: for an authenticator, malformed and forged mean the same thing.
    /// Items are verified one by one with `verify_strict` (see the crate's `ed25519` notes), not
    /// with batch verification, which neither is strict nor says which item failed. Every item
    /// counts as one `ed25519.verify` call.
    pub fn verify_ed25519_batch<K, M, S>(&self, items: &[(K, M, S)]) -> Vec<bool>
    where
        K: AsRef<[u8]>,
        M: AsRef<[u8]>,
        S: AsRef<[u8]>,
    {
        let index = self
            .index_of(ED25519_VERIFY)
            .expect("ed25519.verify is a built-in function");
        self.calls[index].fetch_add(items.len() as u64, Ordering::Relaxed);
        items
            .iter()
            .map(|(key, message, signature)| {
                ed25519::verify(key.as_ref(), message.as_ref(), signature.as_ref())
            })
            .collect()
    }

    /// Current call counts.
    pub fn counters(&self) -> Counters {
        Counters {
            calls: BUILTINS
                .iter()
                .zip(&self.calls)
                .map(|(&(name, _), count)| (name, count.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    /// Sets every call counter back to zero.
    pub fn reset_counters(&self) {
        for count in &self.calls {
            count.store(0, Ordering::Relaxed);
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        // Two entries: a scan beats hashing the name.
        BUILTINS.iter().position(|&(n, _)| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ed25519::tests::rfc8032_test2;
    use crate::encode_verify_input;
    use crate::test_util::hex;

    #[test]
    fn sha256_of_abc_is_the_fips_vector() {
        assert_eq!(
            Registry::new().call("sha256", b"abc"),
            Ok(hex(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            ))
        );
    }

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            Registry::new().call("sha256", b""),
            Ok(hex(
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ))
        );
    }

    #[test]
    fn ed25519_verify_accepts_rfc8032_test2_and_rejects_a_flipped_bit() {
        let registry = Registry::new();
        let (pk, msg, sig) = rfc8032_test2();
        let input = encode_verify_input(&pk, &sig, &msg);
        assert_eq!(registry.call("ed25519.verify", &input), Ok(vec![1]));

        let mut flipped = input.clone();
        flipped[32] ^= 0x01; // first byte of R
        assert_eq!(registry.call("ed25519.verify", &flipped), Ok(vec![0]));
        let mut flipped = input;
        *flipped.last_mut().unwrap() ^= 0x80; // the message
        assert_eq!(registry.call("ed25519.verify", &flipped), Ok(vec![0]));
    }

    #[test]
    fn ed25519_verify_with_an_invalid_point_key_is_zero_not_error() {
        let (_, msg, sig) = rfc8032_test2();
        // y = 2 is not the y-coordinate of any curve point.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(ed25519_dalek::VerifyingKey::from_bytes(&not_a_point).is_err());
        let input = encode_verify_input(&not_a_point, &sig, &msg);
        assert_eq!(Registry::new().call(ED25519_VERIFY, &input), Ok(vec![0]));
    }

    #[test]
    fn unknown_function_error_message() {
        let err = Registry::new().call("sha3", b"abc").unwrap_err();
        assert_eq!(
            err,
            Error::UnknownFunction {
                name: "sha3".into()
            }
        );
        assert_eq!(err.to_string(), r#"unknown pre-compiled function "sha3""#);
        // Names are matched exactly.
        assert!(Registry::new().call("SHA256", b"").is_err());
        assert!(Registry::new().call("sha256 ", b"").is_err());
    }

    #[test]
    fn unknown_function_error_cuts_a_long_name() {
        let name = "é".repeat(1000);
        let err = Registry::new().call(&name, b"").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("unknown pre-compiled function \"{}…\"", "é".repeat(64))
        );
        let err = Registry::new().call("bad\nname", b"").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown pre-compiled function "bad\nname""#
        );
    }

    #[test]
    fn malformed_ed25519_input_error_messages() {
        let registry = Registry::new();
        for len in [0, 31, 32, 95] {
            let err = registry.call(ED25519_VERIFY, &vec![0; len]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "malformed input for ed25519.verify: expected at least 96 bytes \
                     (32-byte public key, 64-byte signature, then the message), got {len}"
                )
            );
            assert!(matches!(
                err,
                Error::MalformedInput {
                    function: "ed25519.verify",
                    ..
                }
            ));
        }
        // Exactly 96 bytes is a signature over the empty message: well-formed, and invalid.
        assert_eq!(registry.call(ED25519_VERIFY, &[0; 96]), Ok(vec![0]));
    }

    #[test]
    fn no_input_length_or_content_panics() {
        let registry = Registry::new();
        for len in 0..=200usize {
            let input: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            for name in registry.names() {
                let _ = registry.call(name, &input);
            }
            let _ = registry.verify_ed25519_batch(&[(&input, &input, &input)]);
        }
        let _ = registry.call(ED25519_VERIFY, &[0xff; 96]);
    }

    #[test]
    fn call_batch_returns_one_result_per_item_in_order() {
        let registry = Registry::new();
        let (pk, msg, sig) = rfc8032_test2();
        let good = encode_verify_input(&pk, &sig, &msg);
        let calls: Vec<(&str, Vec<u8>)> = vec![
            ("sha256", b"abc".to_vec()),
            ("nope", vec![]),
            ("ed25519.verify", good),
            ("ed25519.verify", vec![1, 2, 3]),
        ];
        let results = registry.call_batch(&calls);
        assert_eq!(results.len(), 4);
        assert_eq!(results[0], registry.call("sha256", b"abc"));
        assert!(matches!(results[1], Err(Error::UnknownFunction { .. })));
        assert_eq!(results[2], Ok(vec![1]));
        assert!(matches!(results[3], Err(Error::MalformedInput { .. })));
        assert!(registry.call_batch::<&str, &[u8]>(&[]).is_empty());
    }

    #[test]
    fn verify_ed25519_batch_gives_per_item_results() {
        let registry = Registry::new();
        let (pk, msg, sig) = rfc8032_test2();
        let mut bad_sig = sig;
        bad_sig[63] ^= 0x10;
        let items: Vec<(&[u8], &[u8], &[u8])> = vec![
            (&pk, &msg, &sig),
            (&pk, &msg, &bad_sig),
            (&pk[..31], &msg, &sig), // malformed key: false, not an error
            (&pk, b"other", &sig),
            (&pk, &msg, &sig[..10]),
            (&pk, &msg, &sig),
        ];
        assert_eq!(
            registry.verify_ed25519_batch(&items),
            [true, false, false, false, false, true]
        );
        assert!(registry
            .verify_ed25519_batch::<&[u8], &[u8], &[u8]>(&[])
            .is_empty());
    }

    #[test]
    fn counters_count_calls_per_function() {
        let registry = Registry::new();
        let (pk, msg, sig) = rfc8032_test2();
        assert_eq!(registry.counters().total(), 0);

        registry.call("sha256", b"x").unwrap();
        registry.call("sha256", b"y").unwrap();
        registry.call("ed25519.verify", &[0; 3]).unwrap_err(); // reached the function: counted
        registry.call("missing", b"").unwrap_err(); // reached no function: not counted
        registry.verify_ed25519_batch(&[(&pk, &msg, &sig), (&pk, &msg, &sig)]);
        registry.call_batch(&[("sha256", &b"z"[..]), ("ed25519.verify", &b""[..])]);

        let counters = registry.counters();
        assert_eq!(counters.get("sha256"), 3);
        assert_eq!(counters.get("ed25519.verify"), 4);
        assert_eq!(counters.get("missing"), 0);
        assert_eq!(counters.total(), 7);
        assert_eq!(
            counters.iter().collect::<Vec<_>>(),
            [("sha256", 3), ("ed25519.verify", 4)]
        );

        registry.reset_counters();
        assert_eq!(registry.counters().total(), 0);
    }

    #[test]
    fn counters_belong_to_their_registry() {
        let a = Registry::new();
        let b = Registry::new();
        a.call("sha256", b"").unwrap();
        assert_eq!(a.counters().get("sha256"), 1);
        assert_eq!(b.counters().get("sha256"), 0);
    }

    #[test]
    fn counters_are_exact_under_concurrent_calls() {
        let registry = Registry::new();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..500 {
                        registry.call("sha256", b"x").unwrap();
                    }
                });
            }
        });
        assert_eq!(registry.counters().get("sha256"), 1000);
    }

    #[test]
    fn names_and_contains_agree() {
        let registry = Registry::new();
        assert_eq!(
            registry.names().collect::<Vec<_>>(),
            ["sha256", "ed25519.verify"]
        );
        assert!(registry.names().all(|n| registry.contains(n)));
        assert!(!registry.contains("ed25519"));
    }

    #[test]
    fn registry_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Registry>();
        assert_send_sync::<Error>();
    }

    /// Rough per-call cost; run with
    /// `cargo test --release -p remora-precompile -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn rough_per_call_cost() {
        use std::time::Instant;
        let registry = Registry::new();
        let (pk, msg, sig) = rfc8032_test2();
        let verify_input = encode_verify_input(&pk, &sig, &msg);
        let cases: [(&str, &[u8], u32); 3] = [
            ("sha256", &[7u8; 64], 100_000),
            ("sha256", &[7u8; 4096], 10_000),
            ("ed25519.verify", &verify_input, 2_000),
        ];
        for (name, input, iterations) in cases {
            let start = Instant::now();
            for _ in 0..iterations {
                std::hint::black_box(registry.call(name, std::hint::black_box(input)).unwrap());
            }
            let per_call = start.elapsed() / iterations;
            println!("{name} ({} B input): {per_call:?} per call", input.len());
        }
        let start = Instant::now();
        for _ in 0..10_000 {
            std::hint::black_box(crate::input_digest(
                "sha256",
                std::hint::black_box(&[7u8; 64]),
            ));
        }
        println!(
            "input_digest (64 B input): {:?} per call",
            start.elapsed() / 10_000
        );
    }
}
