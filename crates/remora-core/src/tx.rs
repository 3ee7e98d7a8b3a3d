//! Admission's native fast path for `tx.v1` transactions (`docs/binary-layouts.md`): the
//! framing, a canonical-form check of the body, and the digest, in one pass over the bytes.
//!
//! The JavaScript check (`ts/app/tx.ts`: decode the body, encode it again, compare) is the
//! definition of canonical form. This check does not try to mirror every corner of it: it
//! vouches only for bodies it can prove canonical with simple rules (minimal headers, valid
//! UTF-8, sorted plain keys, no bigints or extensions) and answers "not sure" for everything
//! else, which the JavaScript check then decides, with its own error messages. So the one rule
//! that must hold is one-sided: whatever this check vouches for, the JavaScript check accepts,
//! with the same digest; a property test holds it to that (`test/tx-native.test.ts`).

use sha2::{Digest, Sha256};

/// The layout byte of `tx.v1`.
const TX_LAYOUT: u8 = 1;
/// Authenticator scheme byte of ed25519.
const ED25519: u8 = 1;
/// Scheme, public key, signature.
const AUTH_BYTES: usize = 97;
const KEY_BYTES: usize = 32;
/// `LIMITS.bodyBytes` and `LIMITS.authenticators` of `ts/app/tx.ts`.
const MAX_BODY: usize = 64 * 1024;
const MAX_AUTH: usize = 8;
/// The digest's domain tag (`txDigest` in `ts/app/tx.ts`).
const DIGEST_TAG: &[u8] = b"remora.txid.v1";
/// Deeper nesting is left to the JavaScript check, whose limit is 64 levels.
const MAX_DEPTH: usize = 48;

/// The digest of `bytes`, one whole `tx.v1` transaction, if this check can vouch that it is
/// well framed (layout, lengths, known schemes, keys in strictly increasing order, nothing
/// after it) and that its body is in canonical form; `None` when it cannot, which says
/// nothing either way.
pub fn vouch(bytes: &[u8]) -> Option<[u8; 32]> {
    let body_len = u32::from_le_bytes(bytes.get(1..5)?.try_into().ok()?) as usize;
    if *bytes.first()? != TX_LAYOUT || body_len > MAX_BODY {
        return None;
    }
    let body = bytes.get(5..5 + body_len)?;
    let n = *bytes.get(5 + body_len)? as usize;
    let auth = bytes.get(6 + body_len..)?;
    if n > MAX_AUTH || auth.len() != n * AUTH_BYTES {
        return None;
    }
    let mut prev_key: Option<&[u8]> = None;
    for a in auth.chunks_exact(AUTH_BYTES) {
        let key = a.get(1..1 + KEY_BYTES)?;
        if a.first() != Some(&ED25519) || prev_key.is_some_and(|p| p >= key) {
            return None;
        }
        prev_key = Some(key);
    }
    let mut rest = body;
    canonical_value(&mut rest, 0)?;
    if !rest.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    h.update(DIGEST_TAG);
    h.update((body_len as u32).to_be_bytes());
    h.update((n as u32).to_be_bytes());
    h.update(body);
    for a in auth.chunks_exact(AUTH_BYTES) {
        h.update(a.get(1..)?);
    }
    Some(h.finalize().into())
}

/// Splits `n` bytes off the front of `b`.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = b.split_at_checked(n)?;
    *b = tail;
    Some(head)
}

/// A big-endian unsigned length or value of `n` (1, 2, 4 or 8) bytes.
fn be(b: &mut &[u8], n: usize) -> Option<u64> {
    Some(
        take(b, n)?
            .iter()
            .fold(0u64, |v, &x| (v << 8) | u64::from(x)),
    )
}

/// Takes one msgpack value off `b` if it is one the canonical encoder writes exactly so; `None`
/// for anything else (including what the encoder might also write, but not provably).
fn canonical_value(b: &mut &[u8], depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    let tag = *take(b, 1)?.first()?;
    match tag {
        // positive fixint, nil, false, true, negative fixint
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => Some(()),
        // The smallest form that holds the value, as the encoder picks for a number.
        0xcc => (be(b, 1)? >= 0x80).then_some(()),
        0xcd => (be(b, 2)? >= 0x100).then_some(()),
        0xce => (be(b, 4)? >= 0x1_0000).then_some(()),
        0xd0 => ((be(b, 1)? as u8 as i8) < -0x20).then_some(()),
        0xd1 => ((be(b, 2)? as u16 as i16) < -0x80).then_some(()),
        0xd2 => ((be(b, 4)? as u32 as i32) < -0x8000).then_some(()),
        0xcb => {
            let x = f64::from_bits(be(b, 8)?);
            // An integer in [-2^31, 2^32) (and -0) is written as one, never as a float.
            let integral = x.trunc() == x && (-2_147_483_648.0..=4_294_967_295.0).contains(&x);
            (x.is_finite() && !integral).then_some(())
        }
        0xa0..=0xbf => string(b, usize::from(tag & 0x1f)).map(drop),
        0xd9 => string_of(b, 1, 0x20).map(drop),
        0xda => string_of(b, 2, 0x100).map(drop),
        0xdb => string_of(b, 4, 0x1_0000).map(drop),
        0xc4 => bin(b, 1, 0),
        0xc5 => bin(b, 2, 0x100),
        0xc6 => bin(b, 4, 0x1_0000),
        0x90..=0x9f => array(b, usize::from(tag & 0x0f), depth),
        0x80..=0x8f => map(b, usize::from(tag & 0x0f), depth),
        // array16, array32, map16, map32: a length the smaller header could not have held.
        0xdc..=0xdf => {
            let (n, min) = if tag & 1 == 0 {
                (2, 0x10)
            } else {
                (4, 0x1_0000)
            };
            let len = length(b, n, min)?;
            if tag <= 0xdd {
                array(b, len, depth)
            } else {
                map(b, len, depth)
            }
        }
        // float32, 64-bit integers (bigints), extensions, and 0xc1: left to the JavaScript check.
        _ => None,
    }
}

/// A length of `n` bytes that a smaller header could not have held (at least `min`).
fn length(b: &mut &[u8], n: usize, min: usize) -> Option<usize> {
    let len = usize::try_from(be(b, n)?).ok()?;
    (len >= min).then_some(len)
}

fn string_of<'a>(b: &mut &'a [u8], n: usize, min: usize) -> Option<&'a [u8]> {
    let len = length(b, n, min)?;
    string(b, len)
}

/// `len` bytes of UTF-8 (which lone surrogates, as the encoder writes them, are not).
fn string<'a>(b: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let s = take(b, len)?;
    std::str::from_utf8(s).ok()?;
    Some(s)
}

fn bin(b: &mut &[u8], n: usize, min: usize) -> Option<()> {
    let len = length(b, n, min)?;
    take(b, len).map(drop)
}

fn array(b: &mut &[u8], len: usize, depth: usize) -> Option<()> {
    for _ in 0..len {
        canonical_value(b, depth + 1)?;
    }
    Some(())
}

/// A map as the encoder writes a plain object: string keys in strictly increasing order. Keys
/// a JavaScript object would reorder (index-like ones, which start with a digit), or whose
/// UTF-16 order may differ from their UTF-8 order (those with characters past U+FFFF), and
/// `__proto__`, are left to the JavaScript check.
fn map(b: &mut &[u8], len: usize, depth: usize) -> Option<()> {
    let mut prev: Option<&[u8]> = None;
    for _ in 0..len {
        let tag = *take(b, 1)?.first()?;
        let key = match tag {
            0xa0..=0xbf => string(b, usize::from(tag & 0x1f))?,
            0xd9 => string_of(b, 1, 0x20)?,
            0xda => string_of(b, 2, 0x100)?,
            0xdb => string_of(b, 4, 0x1_0000)?,
            _ => return None,
        };
        if key.first().is_some_and(u8::is_ascii_digit)
            || key.iter().any(|&x| x >= 0xf0)
            || key == b"__proto__"
            || prev.is_some_and(|p| p >= key)
        {
            return None;
        }
        prev = Some(key);
        canonical_value(b, depth + 1)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tx.v1` around `body` with no authenticators.
    fn tx(body: &[u8]) -> Vec<u8> {
        let mut out = vec![TX_LAYOUT];
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        out.push(0);
        out
    }

    fn vouched(body: &[u8]) -> bool {
        vouch(&tx(body)).is_some()
    }

    #[test]
    fn minimal_scalars_are_vouched_for() {
        for body in [
            &[0x00][..],
            &[0x7f],
            &[0xcc, 0x80],
            &[0xcd, 0x01, 0x00],
            &[0xce, 0x00, 0x01, 0x00, 0x00],
            &[0xe0],
            &[0xd0, 0xdf],
            &[0xd1, 0xff, 0x7f],
            &[0xd2, 0xff, 0xff, 0x7f, 0xff],
            &[0xc0],
            &[0xc2],
            &[0xc3],
            &[0xa3, b'a', b'b', b'c'],
            &[0xc4, 0x01, 0xff],
        ] {
            assert!(vouched(body), "{body:02x?}");
        }
        let half = 0.5f64.to_bits().to_be_bytes();
        assert!(vouched(&[&[0xcb][..], &half].concat()));
        let big = 2f64.powi(40).to_bits().to_be_bytes();
        assert!(vouched(&[&[0xcb][..], &big].concat()));
    }

    #[test]
    fn encodings_a_smaller_form_would_have_taken_are_not() {
        for body in [
            &[0xcc, 0x7f][..],
            &[0xcd, 0x00, 0xff],
            &[0xce, 0x00, 0x00, 0xff, 0xff],
            &[0xd0, 0xe0],
            &[0xd0, 0x05],
            &[0xd1, 0xff, 0x80],
            &[0xd2, 0xff, 0xff, 0x80, 0x00],
            &[0xd9, 0x01, b'a'],
            &[0xdc, 0x00, 0x01, 0xc0],
            &[0xde, 0x00, 0x00],
        ] {
            assert!(!vouched(body), "{body:02x?}");
        }
        for x in [
            1.0f64,
            -0.0,
            4_294_967_295.0,
            -2_147_483_648.0,
            f64::NAN,
            f64::INFINITY,
        ] {
            let bits = x.to_bits().to_be_bytes();
            assert!(!vouched(&[&[0xcb][..], &bits].concat()), "{x}");
        }
    }

    #[test]
    fn maps_need_sorted_plain_keys() {
        assert!(vouched(&[0x82, 0xa1, b'a', 0x01, 0xa1, b'b', 0x02]));
        assert!(!vouched(&[0x82, 0xa1, b'b', 0x01, 0xa1, b'a', 0x02]));
        assert!(!vouched(&[0x82, 0xa1, b'a', 0x01, 0xa1, b'a', 0x02]));
        assert!(!vouched(&[0x81, 0xa1, b'1', 0x01]));
        assert!(!vouched(&[0x81, 0x01, 0x01]));
        let proto = [&[0x81, 0xa9][..], b"__proto__", &[0x01]].concat();
        assert!(!vouched(&proto));
    }

    #[test]
    fn what_javascript_decides_is_left_to_it() {
        // A lone surrogate as the encoder writes it, float32, uint64, an extension, 0xc1.
        assert!(!vouched(&[0xa3, 0xed, 0xa0, 0x80]));
        assert!(!vouched(&[0xca, 0x3f, 0x00, 0x00, 0x00]));
        assert!(!vouched(&[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]));
        assert!(!vouched(&[0xd4, 0x01, 0x00]));
        assert!(!vouched(&[0xc1]));
        // Bytes after the value, and a value cut short.
        assert!(!vouched(&[0xc0, 0xc0]));
        assert!(!vouched(&[0x92, 0xc0]));
    }

    #[test]
    fn framing_is_checked_whole() {
        let body = [0x91, 0xc0];
        let good = tx(&body);
        assert!(vouch(&good).is_some());
        let mut layout = good.clone();
        layout[0] = 2;
        assert!(vouch(&layout).is_none());
        assert!(vouch(&good[..good.len() - 1]).is_none());
        assert!(vouch(&[good.as_slice(), &[0]].concat()).is_none());
        // Two authenticators: in order of key, and not.
        let auth = |key: u8| [&[ED25519][..], &[key; 32], &[7; 64]].concat();
        let mut two = tx(&body);
        *two.last_mut().unwrap() = 2;
        let sorted = [two.as_slice(), &auth(1), &auth(2)].concat();
        assert!(vouch(&sorted).is_some());
        assert!(vouch(&[two.as_slice(), &auth(2), &auth(1)].concat()).is_none());
        assert!(vouch(&[two.as_slice(), &auth(1), &auth(1)].concat()).is_none());
        let mut scheme = sorted.clone();
        scheme[good.len()] = 9;
        assert!(vouch(&scheme).is_none());
    }

    #[test]
    fn the_digest_is_txdigest() {
        // txDigest(body, []) of `ts/app/tx.ts`: SHA-256 of tag, bodyLen and n (u32 BE), body.
        let body = [0x91, 0xc0];
        let mut input = DIGEST_TAG.to_vec();
        input.extend_from_slice(&2u32.to_be_bytes());
        input.extend_from_slice(&0u32.to_be_bytes());
        input.extend_from_slice(&body);
        let expected: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(vouch(&tx(&body)), Some(expected));
    }
}
