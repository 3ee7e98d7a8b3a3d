//! The `tcp` wire format both ends share: request and reply headers, the ops, and the
//! per-request limits that keep every reply inside one frame.

use crate::control::{Cursor, MAX_FRAME, REPLY_ERR, REPLY_OK};
use crate::error::{Error, Result};

pub(super) const OP_INFO: u8 = 2;
pub(super) const OP_READ: u8 = 3;
pub(super) const OP_WRITE: u8 = 4;
/// `[request id u64][op u8]` / `[request id u64][status u8]`.
pub(super) const HEADER: usize = 9;
/// Bytes of a region header that `OP_INFO` returns (what `RegionInfo::decode` parses).
pub(super) const INFO_BYTES: usize = 64;
/// Most bytes one read request may ask for: its reply must fit in a frame. Larger reads
/// (a slot of the largest class is over 2 MiB) are split and pipelined by the client.
pub const MAX_READ: usize = MAX_FRAME - HEADER;
/// Most bytes one write request may carry, after its region and offset.
pub const MAX_WRITE: usize = MAX_FRAME - HEADER - 12;

/// Starts a frame: length placeholder, request id, op or status byte.
pub(super) fn start_frame(out: &mut Vec<u8>, id: u64, first: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_le_bytes());
    out.push(first);
    at
}

/// Fills in the length of the frame started at `at`.
pub(super) fn finish_frame(out: &mut [u8], at: usize, peer: &str) -> Result<()> {
    let len = out.len() - at - 4;
    if len > MAX_FRAME {
        return Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        });
    }
    out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Parses the reply frame `reply`, which must answer request `want`: the outer error is a
/// reply that does not parse (the connection is then unusable), the inner one the owner's
/// error reply.
pub(super) fn parse_reply<'r>(reply: &'r [u8], want: u64, peer: &str) -> Result<Result<&'r [u8]>> {
    let mut c = Cursor::new(reply, peer);
    let (id, status) = (c.u64()?, c.u8()?);
    if id != want {
        return Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("reply to request {id}, expected {want}"),
        });
    }
    let body = &reply[HEADER..];
    match status {
        REPLY_OK => Ok(Ok(body)),
        REPLY_ERR => Ok(Err(Error::Remote {
            peer: peer.to_string(),
            message: String::from_utf8_lossy(body).into_owned(),
        })),
        s => Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("unknown reply status {s}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::read_frame;
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_reply_never_panics(reply in vec(any::<u8>(), 0..40), want in any::<u64>()) {
            if let Ok(Ok(body)) = parse_reply(&reply, want, "fuzz") {
                prop_assert_eq!(body.len(), reply.len() - HEADER);
            }
        }

        #[test]
        fn replies_round_trip_and_damaged_ones_are_refused_or_valid(
            id in any::<u64>(), ok in any::<bool>(), body in vec(any::<u8>(), 0..100),
            bit in any::<usize>(), cut in any::<usize>(),
        ) {
            let mut out = Vec::new();
            let at = start_frame(&mut out, id, if ok { REPLY_OK } else { REPLY_ERR });
            out.extend_from_slice(&body);
            finish_frame(&mut out, at, "p").unwrap();
            let reply = read_frame(&mut &out[..], "p").unwrap().unwrap();
            match parse_reply(&reply, id, "p").unwrap() {
                Ok(got) => prop_assert!(ok && got == &body[..]),
                Err(Error::Remote { message, .. }) => {
                    prop_assert!(!ok);
                    prop_assert_eq!(message, String::from_utf8_lossy(&body));
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
            prop_assert!(parse_reply(&reply[..cut % HEADER], id, "p").is_err());
            let mut flipped = reply.clone();
            let bit = bit % (HEADER * 8);
            flipped[bit / 8] ^= 1 << (bit % 8);
            // A flipped id or status is refused; nothing else in the header to damage.
            prop_assert!(parse_reply(&flipped, id, "p").is_err() || flipped[8] <= REPLY_ERR);
        }
    }
}
