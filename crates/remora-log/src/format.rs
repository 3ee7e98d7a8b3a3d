//! The on-disk format. Every integer is little-endian.
//!
//! ```text
//! segment file  seg-<first ts, 20 digits>.log
//!   header  (32 bytes)  magic "RMRALOG\0" | version u32 | reserved u32 (0) | first_ts u64
//!                       | xxh3_64 of the 24 bytes before
//!   records, back to back
//! record        len u32 (bytes of body) | checksum u64 | body
//!   checksum            xxh3_64 of body, seeded with len (so a damaged len cannot pass)
//!   body                first_ts u64 | count u32 (>= 1) | count x tx
//!   tx                  digest [u8; 32] | tx_len u32 | tx_len bytes
//! ```
//!
//! Decoding never indexes with a length read from disk: every access is checked, so damaged
//! bytes become an error string, never a panic or a huge allocation.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// A transaction's digest (of its canonical encoding): the identity used for deduplication.
pub type Digest = [u8; 32];

const MAGIC: [u8; 8] = *b"RMRALOG\0";
const VERSION: u32 = 1;
pub(crate) const SEGMENT_HEADER_LEN: u64 = 32;
pub(crate) const RECORD_HEADER_LEN: u64 = 12;
pub(crate) const BODY_HEADER_LEN: u64 = 12;
const TX_HEADER_LEN: usize = 36;
/// The smallest valid body: one empty transaction.
const MIN_BODY_LEN: u64 = BODY_HEADER_LEN + TX_HEADER_LEN as u64;
/// The record length field is a u32.
pub(crate) const MAX_BODY_LEN: u64 = u32::MAX as u64;

pub(crate) fn segment_file_name(first_ts: u64) -> String {
    format!("seg-{first_ts:020}.log")
}

pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode_segment_header(first_ts: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_ts.to_le_bytes());
    let sum = xxh3_64(&h[..24]);
    h[24..].copy_from_slice(&sum.to_le_bytes());
    h
}

/// Returns the header's first timestamp.
pub(crate) fn decode_segment_header(h: &[u8]) -> Result<u64, String> {
    if h.get(..8) != Some(&MAGIC[..]) {
        return Err("bad segment magic".into());
    }
    let sum = le_u64(h, 24).ok_or("short segment header")?;
    if h.get(..24).map(xxh3_64) != Some(sum) {
        return Err("segment header checksum mismatch".into());
    }
    let version = le_u32(h, 8).ok_or("short segment header")?;
    if version != VERSION {
        return Err(format!("unsupported segment version {version}"));
    }
    le_u64(h, 16).ok_or_else(|| "short segment header".into())
}

/// Bytes a record holding these transaction lengths takes on disk, header included.
pub(crate) fn record_len(tx_lens: impl Iterator<Item = usize>) -> u64 {
    let (count, sum) = tx_lens.fold((0u64, 0u64), |(n, sum), len| {
        (n + 1, sum.saturating_add(len as u64))
    });
    record_len_of(count, sum)
}

/// Bytes a record of `count` transactions of `tx_bytes` bytes in all takes, header included.
pub(crate) fn record_len_of(count: u64, tx_bytes: u64) -> u64 {
    RECORD_HEADER_LEN
        .saturating_add(BODY_HEADER_LEN)
        .saturating_add(count.saturating_mul(TX_HEADER_LEN as u64))
        .saturating_add(tx_bytes)
}

/// Appends one record of the `count` transactions `txs` yields to `out`. The caller has
/// checked the sizes against `MAX_BODY_LEN`, which also bounds `count` below `u32::MAX`.
pub(crate) fn encode_record<'a>(
    out: &mut Vec<u8>,
    first_ts: u64,
    count: u64,
    txs: impl Iterator<Item = (&'a Digest, &'a [u8])>,
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN as usize]);
    let body_start = out.len();
    out.extend_from_slice(&first_ts.to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (digest, bytes) in txs {
        out.extend_from_slice(digest);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let body_len = (out.len() - body_start) as u32;
    let sum = checksum(body_len, &out[body_start..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..body_start].copy_from_slice(&sum.to_le_bytes());
}

fn checksum(len: u32, body: &[u8]) -> u64 {
    xxh3_64_with_seed(body, u64::from(len))
}

/// A record header: the body length, checked against what is left in the file before any
/// allocation, and the checksum.
pub(crate) struct RecordHeader {
    pub len: u32,
    sum: u64,
}

impl RecordHeader {
    pub(crate) fn decode(h: &[u8; RECORD_HEADER_LEN as usize]) -> Result<Self, String> {
        let len = le_u32(h, 0).unwrap_or(0);
        let sum = le_u64(h, 4).unwrap_or(0);
        if u64::from(len) < MIN_BODY_LEN {
            return Err(format!(
                "record length {len} is below the minimum {MIN_BODY_LEN}"
            ));
        }
        Ok(Self { len, sum })
    }

    /// Bytes the whole record takes, header included.
    pub(crate) fn total_len(&self) -> u64 {
        RECORD_HEADER_LEN + u64::from(self.len)
    }

    pub(crate) fn verify<'b>(&self, body: &'b [u8]) -> Result<Body<'b>, String> {
        if body.len() as u64 != u64::from(self.len) || checksum(self.len, body) != self.sum {
            return Err("record checksum mismatch".into());
        }
        Body::decode(body)
    }
}

/// A verified record body.
pub(crate) struct Body<'b> {
    pub first_ts: u64,
    pub count: u32,
    txs: &'b [u8],
}

impl<'b> Body<'b> {
    /// Checks the whole structure once, so that `txs` can trust it.
    fn decode(body: &'b [u8]) -> Result<Self, String> {
        let first_ts = le_u64(body, 0).ok_or("short record body")?;
        let count = le_u32(body, 8).ok_or("short record body")?;
        if count == 0 {
            return Err("record holds no transaction".into());
        }
        let txs = body
            .get(BODY_HEADER_LEN as usize..)
            .ok_or("short record body")?;
        let mut rest = txs;
        for i in 0..count {
            rest = split_tx(rest)
                .map(|(_, _, rest)| rest)
                .ok_or_else(|| format!("transaction {i} of {count} overruns the record"))?;
        }
        if !rest.is_empty() {
            return Err(format!("{} stray bytes after the transactions", rest.len()));
        }
        Ok(Self {
            first_ts,
            count,
            txs,
        })
    }

    /// Timestamp after the record's last transaction.
    pub(crate) fn next_ts(&self) -> u64 {
        self.first_ts.saturating_add(u64::from(self.count))
    }

    pub(crate) fn txs(&self) -> impl Iterator<Item = (u64, Digest, &'b [u8])> {
        let mut rest = self.txs;
        let mut ts = self.first_ts;
        std::iter::from_fn(move || {
            let (digest, bytes, next) = split_tx(rest)?;
            rest = next;
            let this = ts;
            ts = ts.saturating_add(1);
            Some((this, digest, bytes))
        })
    }
}

fn split_tx(b: &[u8]) -> Option<(Digest, &[u8], &[u8])> {
    let digest: Digest = b.get(..32)?.try_into().ok()?;
    let len = le_u32(b, 32)? as usize;
    let bytes = b.get(TX_HEADER_LEN..TX_HEADER_LEN.checked_add(len)?)?;
    let rest = b.get(TX_HEADER_LEN + len..)?;
    Some((digest, bytes, rest))
}

/// Position of the first complete, valid record in `tail` with a first timestamp of at least
/// `min_ts`. This is what tells a torn tail (nothing valid follows the damage: the last write
/// was cut short) from damage in the middle (valid records follow, so dropping would lose
/// acknowledged transactions). The cheap plausibility checks run first so that scanning a
/// tail of garbage or zeros costs little more than reading it.
pub(crate) fn find_valid_record(tail: &[u8], min_ts: u64) -> Option<usize> {
    // Each transaction takes at least TX_HEADER_LEN bytes, so a record in this tail cannot
    // start further ahead in timestamps than this.
    let max_ts = min_ts.saturating_add(tail.len() as u64 / TX_HEADER_LEN as u64);
    (0..tail.len()).find(|&p| {
        let Some(rest) = tail.get(p..) else {
            return false;
        };
        let Some(Ok(header)) = rest.first_chunk().map(RecordHeader::decode) else {
            return false;
        };
        let body_start = RECORD_HEADER_LEN as usize;
        let Some(body) = rest.get(body_start..body_start.saturating_add(header.len as usize))
        else {
            return false;
        };
        match le_u64(body, 0) {
            Some(ts) if (min_ts..=max_ts).contains(&ts) => header.verify(body).is_ok(),
            _ => false,
        }
    })
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(first_ts: u64, txs: &[(Digest, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            first_ts,
            txs.len() as u64,
            txs.iter().map(|(d, b)| (d, *b)),
        );
        out
    }

    fn decode(rec: &[u8]) -> Result<Vec<(u64, Digest, Vec<u8>)>, String> {
        let header = RecordHeader::decode(rec.first_chunk().ok_or("short")?)?;
        let body = header.verify(&rec[12..])?;
        Ok(body.txs().map(|(ts, d, b)| (ts, d, b.to_vec())).collect())
    }

    #[test]
    fn record_round_trips_with_consecutive_timestamps() {
        let rec = record(7, &[([1; 32], b"abc"), ([2; 32], b""), ([3; 32], b"z")]);
        assert_eq!(rec.len() as u64, record_len([3, 0, 1].into_iter()));
        let txs = decode(&rec).unwrap();
        assert_eq!(
            txs,
            vec![
                (7, [1; 32], b"abc".to_vec()),
                (8, [2; 32], vec![]),
                (9, [3; 32], b"z".to_vec())
            ]
        );
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let rec = record(1, &[([9; 32], b"hello"), ([8; 32], b"world!")]);
        for i in 0..rec.len() {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip of bit {bit} at byte {i} passed"
                );
            }
        }
    }

    #[test]
    fn damaged_lengths_never_panic() {
        // A body whose checksum matches but whose structure lies (count and lengths) must be
        // rejected by decode, not trusted.
        for count in [0u32, 2, u32::MAX] {
            let mut body = 5u64.to_le_bytes().to_vec();
            body.extend_from_slice(&count.to_le_bytes());
            body.extend_from_slice(&[4; 32]);
            body.extend_from_slice(&u32::MAX.to_le_bytes());
            body.extend_from_slice(b"xy");
            assert!(Body::decode(&body).is_err());
        }
        for len in 0..60 {
            let junk = vec![0xff; len];
            assert!(Body::decode(&junk).is_err());
            assert!(find_valid_record(&junk, 1).is_none());
        }
    }

    #[test]
    fn segment_header_and_names() {
        let h = encode_segment_header(42);
        assert_eq!(decode_segment_header(&h), Ok(42));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(decode_segment_header(&bad).is_err());
        assert!(decode_segment_header(&h[..20]).is_err());
        assert_eq!(segment_file_name(42), "seg-00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("seg-42.log"), None);
        assert_eq!(
            parse_segment_file_name("seg-0000000000000000004x.log"),
            None
        );
        assert_eq!(parse_segment_file_name("LOCK"), None);
    }

    #[test]
    fn finds_a_valid_record_after_damage() {
        let a = record(1, &[([1; 32], b"first")]);
        let b = record(2, &[([2; 32], b"second")]);
        let mut tail = vec![0u8; 17];
        tail.extend_from_slice(&a[3..]); // a damaged record
        let at = tail.len();
        tail.extend_from_slice(&b);
        assert_eq!(find_valid_record(&tail, 1), Some(at));
        assert_eq!(
            find_valid_record(&tail, 3),
            None,
            "timestamps before min_ts do not count"
        );
        assert_eq!(find_valid_record(&tail[..tail.len() - 1], 1), None);
    }
}
