//! Framing shared by the control channel and the `tcp` transport: a little-endian `u32`
//! length, then at most [`MAX_FRAME`] bytes of payload. The length is checked before anything
//! is allocated, so a peer cannot make us reserve memory it never sends.

use crate::error::{Error, IoContext, Result};
use std::io::{Read, Write};

pub const MAX_FRAME: usize = 1 << 20;

pub fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    w.write_all(&out)
}

/// Reads one frame; `Ok(None)` on a clean end of stream.
pub fn read_frame<R: Read>(r: &mut R, peer: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    Ok(read_frame_into(r, &mut buf, peer)?.then_some(buf))
}

/// Reads one frame's payload into `buf` (reusing its memory); `false` on a clean end of
/// stream before the frame. The length is checked before anything is allocated.
pub(crate) fn read_frame_into<R: Read>(r: &mut R, buf: &mut Vec<u8>, peer: &str) -> Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e).ctx(|| format!("reading from {peer}")),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(Error::Frame {
            peer: peer.to_string(),
            why: format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        });
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf)
        .ctx(|| format!("reading a frame from {peer}"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn read_frame_never_panics(bytes in vec(any::<u8>(), 0..64)) {
            let _ = read_frame(&mut &bytes[..], "fuzz");
        }

        #[test]
        fn read_frame_round_trips_and_refuses_truncations(payload in vec(any::<u8>(), 0..300), cut in any::<usize>()) {
            let mut wire = Vec::new();
            write_frame(&mut wire, &payload).unwrap();
            prop_assert_eq!(read_frame(&mut &wire[..], "p").unwrap(), Some(payload.clone()));
            let cut = cut % wire.len();
            match read_frame(&mut &wire[..cut], "p") {
                // A stream ending inside a length prefix has no frame to give.
                Ok(None) => prop_assert!(cut < 4),
                Ok(Some(_)) => prop_assert!(false, "a truncated frame was read whole"),
                Err(_) => prop_assert!(cut >= 4),
            }
        }

        #[test]
        fn huge_length_fields_are_refused_before_allocating(len in (MAX_FRAME as u32 + 1)..) {
            let wire = len.to_le_bytes();
            let refused = matches!(read_frame(&mut &wire[..], "p"), Err(Error::Frame { .. }));
            prop_assert!(refused);
        }
    }
}
