//! The lookup request (Heron's `query_obj_addr`): its wire encoding both ways, and the owner's
//! answer. The `tcp` transport carries the same request inside its own frames.
//!
//! Request body (after `OP_LOOKUP`): `count u32`, then per id `len u16` and the id. Reply body
//! (after `REPLY_OK`): `count u32`, then per id `0` (no such object) or `1, region u32,
//! offset u64`.

use super::{Cursor, OP_LOOKUP, REPLY_OK};
use crate::error::{Error, Result};
use crate::store::{check_id, Addr, Store};

/// Answers one control request (`[op] body`) with `[REPLY_OK] body`. Shared with the `tcp`
/// transport, which carries the same lookup request inside its own frames. An
/// `Error::Frame` means the request was malformed; other errors are well-formed bad requests.
pub(crate) fn answer(store: &Store, req: &[u8], peer: &str) -> Result<Vec<u8>> {
    let mut c = Cursor::new(req, peer);
    match c.u8()? {
        OP_LOOKUP => {
            let n = c.u32()? as usize;
            let mut ids = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                let len = c.u16()? as usize;
                let id = c.take(len)?;
                check_id(id)?;
                ids.push(id);
            }
            c.end()?;
            let mut out = vec![REPLY_OK];
            encode_lookup_reply(&mut out, &store.addresses(&ids));
            Ok(out)
        }
        op => Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("unknown command {op}"),
        }),
    }
}

/// Appends the body of a lookup request for `ids` (after its op byte).
pub(crate) fn encode_lookup(req: &mut Vec<u8>, ids: &[&[u8]]) -> Result<()> {
    req.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        check_id(id)?;
        req.extend_from_slice(&(id.len() as u16).to_le_bytes());
        req.extend_from_slice(id);
    }
    Ok(())
}

/// Appends the body of a lookup reply (after its status byte).
pub(crate) fn encode_lookup_reply(out: &mut Vec<u8>, addrs: &[Option<Addr>]) {
    out.extend_from_slice(&(addrs.len() as u32).to_le_bytes());
    for addr in addrs {
        match addr {
            Some(a) => {
                out.push(1);
                out.extend_from_slice(&a.region.to_le_bytes());
                out.extend_from_slice(&a.offset.to_le_bytes());
            }
            None => out.push(0),
        }
    }
}

/// Parses the body of a lookup reply (after its status byte) that must hold `wanted` answers.
pub(crate) fn decode_lookup(body: &[u8], wanted: usize, peer: &str) -> Result<Vec<Option<Addr>>> {
    let mut c = Cursor::new(body, peer);
    let n = c.u32()? as usize;
    if n != wanted {
        return Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("asked for {wanted} addresses, got {n}"),
        });
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(match c.u8()? {
            0 => None,
            _ => Some(Addr {
                region: c.u32()?,
                offset: c.u64()?,
            }),
        });
    }
    c.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fixture::Fixture;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn addr() -> impl Strategy<Value = Option<Addr>> {
        proptest::option::of(
            (any::<u32>(), any::<u64>()).prop_map(|(region, offset)| Addr { region, offset }),
        )
    }

    /// A valid lookup request: ids that exist, that do not, and repeats.
    fn lookup_request() -> impl Strategy<Value = Vec<Vec<u8>>> {
        vec(
            prop_oneof![
                (0..60usize).prop_map(|i| format!("obj/{i}").into_bytes()),
                vec(any::<u8>(), 1..=88),
            ],
            0..20,
        )
    }

    /// Checks an answer to arbitrary bytes: an `Ok` is a well-formed reply of as many
    /// addresses as the request names.
    fn check_answer(store: &Store, req: &[u8]) -> std::result::Result<(), TestCaseError> {
        if let Ok(reply) = answer(store, req, "fuzz") {
            prop_assert_eq!(reply[0], REPLY_OK);
            let n = u32::from_le_bytes([req[1], req[2], req[3], req[4]]) as usize;
            let addrs = decode_lookup(&reply[1..], n, "fuzz");
            prop_assert!(addrs.is_ok(), "{:?}", addrs);
        }
        Ok(())
    }

    fn flip(bytes: &mut [u8], bit: usize) {
        if !bytes.is_empty() {
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
    }

    proptest! {
        #[test]
        fn decode_lookup_never_panics(body in vec(any::<u8>(), 0..80), wanted in 0usize..10) {
            if let Ok(addrs) = decode_lookup(&body, wanted, "fuzz") {
                prop_assert_eq!(addrs.len(), wanted);
            }
        }

        #[test]
        fn lookup_replies_round_trip(addrs in vec(addr(), 0..30), bit in any::<usize>(), cut in any::<usize>()) {
            let mut body = Vec::new();
            encode_lookup_reply(&mut body, &addrs);
            prop_assert_eq!(decode_lookup(&body, addrs.len(), "p").unwrap(), addrs.clone());
            let cut = cut % body.len();
            prop_assert!(decode_lookup(&body[..cut], addrs.len(), "p").is_err());
            let mut flipped = body.clone();
            flip(&mut flipped, bit);
            if let Ok(got) = decode_lookup(&flipped, addrs.len(), "p") {
                prop_assert_eq!(got.len(), addrs.len());
            }
        }
    }

    #[test]
    fn answer_never_panics_on_arbitrary_requests() {
        let fx = Fixture::new("arbitrary");
        proptest!(|(req in vec(any::<u8>(), 0..120))| {
            check_answer(&fx.store, &req)?;
        });
    }

    #[test]
    fn lookups_round_trip_and_damaged_ones_are_refused_or_valid() {
        let fx = Fixture::new("roundtrip");
        proptest!(|(ids in lookup_request(), bit in any::<usize>(), cut in any::<usize>())| {
            let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
            let mut req = vec![OP_LOOKUP];
            encode_lookup(&mut req, &refs).unwrap();
            let reply = answer(&fx.store, &req, "p").unwrap();
            prop_assert_eq!(
                decode_lookup(&reply[1..], ids.len(), "p").unwrap(),
                fx.store.addresses(&refs)
            );
            check_answer(&fx.store, &req[..cut % req.len()])?;
            let mut flipped = req.clone();
            flip(&mut flipped, bit);
            check_answer(&fx.store, &flipped)?;
        });
    }
}
