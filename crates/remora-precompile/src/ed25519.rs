//! Strict ed25519 verification and the `ed25519.verify` input encoding.
//!
//! Verification uses [`VerifyingKey::verify_strict`]: it rejects small-order public keys and
//! small-order `R` on top of RFC 8032's checks. Replicas must agree on every signature, and the
//! permissive rules are where ed25519 implementations (and dalek's batch verification) diverge;
//! strict rules also close the "weak key" trick where one signature verifies for many messages.

use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::Error;
use crate::ED25519_VERIFY;

/// Length of an ed25519 public key (compressed Edwards point).
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an ed25519 signature (`R ‖ S`).
pub const SIGNATURE_LEN: usize = 64;
/// Shortest valid `ed25519.verify` input: a key and a signature over the empty message.
pub const VERIFY_INPUT_MIN_LEN: usize = PUBLIC_KEY_LEN + SIGNATURE_LEN;

/// Builds the input of `ed25519.verify`: `public_key ‖ signature ‖ message`.
///
/// The message goes last so that it needs no length prefix.
pub fn encode_verify_input(
    public_key: &[u8; PUBLIC_KEY_LEN],
    signature: &[u8; SIGNATURE_LEN],
    message: &[u8],
) -> Vec<u8> {
    let mut input = Vec::with_capacity(VERIFY_INPUT_MIN_LEN + message.len());
    input.extend_from_slice(public_key);
    input.extend_from_slice(signature);
    input.extend_from_slice(message);
    input
}

/// The `ed25519.verify` pre-compiled function. Only a too-short input is an error; a key that
/// is not a valid point is a failed verification (`0`), as in [`verify`].
pub(crate) fn verify_call(input: &[u8]) -> Result<Vec<u8>, Error> {
    let Some((public_key, rest)) = input.split_first_chunk::<PUBLIC_KEY_LEN>() else {
        return Err(too_short(input.len()));
    };
    let Some((signature, message)) = rest.split_first_chunk::<SIGNATURE_LEN>() else {
        return Err(too_short(input.len()));
    };
    Ok(vec![u8::from(verify_fixed(public_key, signature, message))])
}

fn too_short(len: usize) -> Error {
    Error::MalformedInput {
        function: ED25519_VERIFY,
        reason: format!(
            "expected at least {VERIFY_INPUT_MIN_LEN} bytes \
             (32-byte public key, 64-byte signature, then the message), got {len}"
        ),
    }
}

/// Strict verification of loosely typed parts, as they arrive from the N-API layer: a key or
/// signature of the wrong length is simply not a valid signature.
pub(crate) fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    match (
        <&[u8; PUBLIC_KEY_LEN]>::try_from(public_key),
        <&[u8; SIGNATURE_LEN]>::try_from(signature),
    ) {
        (Ok(public_key), Ok(signature)) => verify_fixed(public_key, signature, message),
        _ => false,
    }
}

fn verify_fixed(
    public_key: &[u8; PUBLIC_KEY_LEN],
    signature: &[u8; SIGNATURE_LEN],
    message: &[u8],
) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_util::hex;
    use ed25519_dalek::{Signer, SigningKey, Verifier};

    /// RFC 8032 section 7.1, TEST 2: (secret key, public key, message, signature).
    pub const RFC8032_TEST2: (&str, &str, &str, &str) = (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
         085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    );

    /// RFC 8032 TEST 2 as (public key, message, signature) bytes.
    pub fn rfc8032_test2() -> ([u8; 32], Vec<u8>, [u8; 64]) {
        let (_, pk, msg, sig) = RFC8032_TEST2;
        (
            hex(pk).try_into().unwrap(),
            hex(msg),
            hex(sig).try_into().unwrap(),
        )
    }

    #[test]
    fn rfc8032_test2_vector_is_consistent_with_its_secret_key() {
        // Guards the transcription of the vector itself: deterministic signing must reproduce it.
        let (sk, _, _, _) = RFC8032_TEST2;
        let (pk, msg, sig) = rfc8032_test2();
        let signing = SigningKey::from_bytes(&hex(sk).try_into().unwrap());
        assert_eq!(signing.verifying_key().to_bytes(), pk);
        assert_eq!(signing.sign(&msg).to_bytes(), sig);
    }

    #[test]
    fn rfc8032_test1_verifies_with_empty_message() {
        let pk = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let sig = hex(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        );
        assert!(verify(&pk, b"", &sig));
        assert!(!verify(&pk, b"\0", &sig));
    }

    #[test]
    fn rfc8032_test2_verifies_and_any_flipped_bit_fails() {
        let (pk, msg, sig) = rfc8032_test2();
        assert!(verify(&pk, &msg, &sig));
        for bit in [0, 7, 100, 255] {
            let mut bad = pk;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify(&bad, &msg, &sig), "public key bit {bit}");
        }
        for bit in [0, 255, 256, 511] {
            let mut bad = sig;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify(&pk, &msg, &bad), "signature bit {bit}");
        }
        for bit in 0..8 {
            let bad = [msg[0] ^ (1 << bit)];
            assert!(!verify(&pk, &bad, &sig), "message bit {bit}");
        }
    }

    #[test]
    fn wrong_lengths_are_invalid_not_panics() {
        let (pk, msg, sig) = rfc8032_test2();
        assert!(!verify(&pk[..31], &msg, &sig));
        assert!(!verify(&[pk.as_slice(), &[0]].concat(), &msg, &sig));
        assert!(!verify(&pk, &msg, &sig[..63]));
        assert!(!verify(&[], &[], &[]));
    }

    #[test]
    fn verification_is_strict_about_small_order_keys() {
        // Identity point as key, R = identity, S = 0: the cofactorless equation [S]B = R + [k]A
        // holds for every message, so permissive verification accepts it; strict must not.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity);
        let key = VerifyingKey::from_bytes(&identity).unwrap();
        let signature = Signature::from_bytes(&sig);
        assert!(key.verify(b"any message", &signature).is_ok());
        assert!(!verify(&identity, b"any message", &sig));
    }

    #[test]
    fn encode_verify_input_round_trips_through_verify_call() {
        let (pk, msg, sig) = rfc8032_test2();
        let input = encode_verify_input(&pk, &sig, &msg);
        assert_eq!(input.len(), VERIFY_INPUT_MIN_LEN + msg.len());
        assert_eq!(verify_call(&input), Ok(vec![1]));
    }
}
