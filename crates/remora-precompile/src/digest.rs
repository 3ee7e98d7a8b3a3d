use sha2::{Digest, Sha256};

/// Domain tag that starts every [`input_digest`] preimage, so a pre-compile key can never equal
/// another SHA-256 the system computes (transaction digests, state digests) over the same bytes.
pub const INPUT_DIGEST_DOMAIN: &[u8] = b"remora.precompile.input.v1\0";

/// Key of a pre-compiled function result in a lookup table.
///
/// `SHA-256(INPUT_DIGEST_DOMAIN ‖ u64_le(len(name)) ‖ name ‖ input)`, with `name` in UTF-8.
/// The name's length prefix fixes where the name ends, so the encoding is injective: the same
/// bytes under two names, or a byte moved across the name/input boundary, give different keys.
/// The input needs no prefix because it runs to the end. This is a wire format shared by
/// pre-executors and primaries: changing it needs a new domain tag.
pub fn input_digest(name: &str, input: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(INPUT_DIGEST_DOMAIN);
    hasher.update((name.len() as u64).to_le_bytes());
    hasher.update(name.as_bytes());
    hasher.update(input);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;

    #[test]
    fn digest_separates_names_for_the_same_input() {
        assert_ne!(
            input_digest("sha256", b"abc"),
            input_digest("ed25519.verify", b"abc")
        );
    }

    #[test]
    fn digest_separates_the_name_input_boundary() {
        assert_ne!(input_digest("ab", b"c"), input_digest("a", b"bc"));
        assert_ne!(input_digest("", b"abc"), input_digest("abc", b""));
    }

    #[test]
    fn digest_is_not_a_plain_sha256_of_the_input() {
        let plain: [u8; 32] = Sha256::digest(b"abc").into();
        assert_ne!(input_digest("sha256", b"abc"), plain);
    }

    #[test]
    fn digest_matches_the_documented_encoding() {
        let mut preimage = INPUT_DIGEST_DOMAIN.to_vec();
        preimage.extend_from_slice(&6u64.to_le_bytes());
        preimage.extend_from_slice(b"sha256");
        preimage.extend_from_slice(b"abc");
        let expected: [u8; 32] = Sha256::digest(&preimage).into();
        assert_eq!(input_digest("sha256", b"abc"), expected);
    }

    /// Pins the wire format: pre-executors and primaries of different builds must agree.
    #[test]
    fn digest_golden_value_is_stable() {
        assert_eq!(
            input_digest("sha256", b"abc").to_vec(),
            hex("2e5966badfd5675e6e911f1f304229e8d1e979a0d400efb29e9103cd33bccd04")
        );
    }
}
