//! Reading the fields of a frame body without trusting its length: every read is
//! bounds-checked, so malformed input becomes an error, never a panic.

use crate::error::{Error, Result};

/// A bounds-checked reader over a frame body: malformed input becomes an error, never a panic.
pub struct Cursor<'a> {
    buf: &'a [u8],
    peer: &'a str,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], peer: &'a str) -> Self {
        Cursor { buf, peer }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Frame {
                peer: self.peer.to_string(),
                why: format!("truncated: wanted {n} more bytes, {} left", self.buf.len()),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    pub fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    pub fn end(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::Frame {
                peer: self.peer.to_string(),
                why: format!("{} trailing bytes", self.buf.len()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cursor_takes_exactly_what_is_there(bytes in vec(any::<u8>(), 0..40), ops in vec(0u8..6, 0..20)) {
            let mut c = Cursor::new(&bytes, "fuzz");
            let mut left = bytes.len();
            for op in ops {
                let (want, got) = match op {
                    0 => (1, c.u8().is_ok()),
                    1 => (2, c.u16().is_ok()),
                    2 => (4, c.u32().is_ok()),
                    3 => (8, c.u64().is_ok()),
                    4 => (3, c.take(3).is_ok()),
                    _ => {
                        prop_assert_eq!(c.end().is_ok(), left == 0);
                        continue;
                    }
                };
                prop_assert_eq!(got, want <= left);
                if got {
                    left -= want;
                }
            }
        }
    }
}
