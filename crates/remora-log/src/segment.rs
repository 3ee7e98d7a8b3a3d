//! One segment file: its in-memory summary, reading a record from it, and the verifying scan
//! done on open.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{corrupt, io_err, Result};
use crate::format::{
    decode_segment_header, find_valid_record, RecordHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::Digest;

/// Replay seeks to the nearest indexed record and reads forward from there, so this bounds the
/// bytes read before the first wanted entry while keeping the index at a few dozen entries
/// per 64 MiB segment.
const INDEX_STRIDE: u64 = 1 << 20;

pub(crate) const READ_BUFFER: usize = 256 << 10;

#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub path: PathBuf,
    pub first_ts: u64,
    /// Timestamp the next record appended here would start at.
    pub next_ts: u64,
    /// Verified length of the file.
    pub len: u64,
    pub records: u64,
    /// (first timestamp, offset) of some records, sparse, in order.
    index: Vec<(u64, u64)>,
}

impl Segment {
    pub(crate) fn new(path: PathBuf, first_ts: u64) -> Self {
        Self {
            path,
            first_ts,
            next_ts: first_ts,
            len: SEGMENT_HEADER_LEN,
            records: 0,
            index: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub(crate) fn push_record(&mut self, first_ts: u64, next_ts: u64, total_len: u64) {
        let offset = self.len;
        if self
            .index
            .last()
            .is_none_or(|&(_, at)| offset.saturating_sub(at) >= INDEX_STRIDE)
        {
            self.index.push((first_ts, offset));
        }
        self.len = offset.saturating_add(total_len);
        self.next_ts = next_ts;
        self.records += 1;
    }

    #[cfg(test)]
    pub(crate) fn index_len(&self) -> usize {
        self.index.len()
    }

    /// (offset, first timestamp) of an indexed record at or before the one holding `ts`.
    pub(crate) fn seek_point(&self, ts: u64) -> (u64, u64) {
        let after = self.index.partition_point(|&(first, _)| first <= ts);
        match after.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(&(first, offset)) => (offset, first),
            None => (SEGMENT_HEADER_LEN, self.first_ts),
        }
    }
}

pub(crate) enum Next {
    /// Clean end of file, on a record boundary.
    End,
    /// A record of the right shape was read into the body buffer; its checksum is not yet
    /// checked.
    Record(RecordHeader),
    /// The bytes here are not a record.
    Bad(String),
}

/// Reads the record at the reader's position, `remaining` bytes before the end of the file.
/// The body is only allocated once its length is known to fit in the file.
pub(crate) fn read_record(
    r: &mut impl Read,
    remaining: u64,
    body: &mut Vec<u8>,
) -> io::Result<Next> {
    if remaining == 0 {
        return Ok(Next::End);
    }
    if remaining < RECORD_HEADER_LEN {
        return Ok(Next::Bad(format!(
            "{remaining} bytes left, too few for a record header"
        )));
    }
    let mut h = [0u8; RECORD_HEADER_LEN as usize];
    r.read_exact(&mut h)?;
    let header = match RecordHeader::decode(&h) {
        Ok(header) => header,
        Err(reason) => return Ok(Next::Bad(reason)),
    };
    if header.total_len() > remaining {
        return Ok(Next::Bad(format!(
            "record of {} bytes runs past the end of the file ({remaining} bytes left)",
            header.total_len()
        )));
    }
    body.clear();
    body.resize(header.len as usize, 0);
    r.read_exact(body)?;
    Ok(Next::Record(header))
}

pub(crate) struct Scanned {
    pub segment: Segment,
    /// Where verification stopped before the end of the file, and why.
    pub bad: Option<(u64, String)>,
}

/// Verifies a segment expected to start at `expected_ts`, handing every transaction to
/// `on_tx`. Damage is returned in `bad` for the caller to judge (torn tail or corruption);
/// a record that verifies but breaks the timestamp sequence is an error at once, since no
/// torn write can produce it.
pub(crate) fn scan(
    path: &Path,
    name_ts: u64,
    expected_ts: u64,
    mut on_tx: impl FnMut(Digest, u64),
) -> Result<Scanned> {
    if name_ts != expected_ts {
        return Err(corrupt(
            path,
            0,
            format!(
                "segment starts at timestamp {name_ts} but the log before it ends at {}: \
                 a segment is missing or does not belong here",
                expected_ts.saturating_sub(1)
            ),
        ));
    }
    let file = File::open(path).map_err(io_err("open", path))?;
    let file_len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut r = BufReader::with_capacity(READ_BUFFER, file);
    let mut segment = Segment::new(path.to_path_buf(), name_ts);
    let stop = |segment, offset, reason| {
        Ok(Scanned {
            segment,
            bad: Some((offset, reason)),
        })
    };

    if file_len < SEGMENT_HEADER_LEN {
        return stop(
            segment,
            0,
            format!("{file_len} bytes, too few for a segment header"),
        );
    }
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    r.read_exact(&mut h).map_err(io_err("read", path))?;
    match decode_segment_header(&h) {
        Err(reason) => return stop(segment, 0, reason),
        Ok(ts) if ts != name_ts => {
            return Err(corrupt(
                path,
                0,
                format!("header says first timestamp {ts}, file name says {name_ts}"),
            ))
        }
        Ok(_) => {}
    }

    let mut body = Vec::new();
    // What is not a record is damage unless it is zeros to the end of the file: space written
    // ahead of the records (`Options::preallocate`), or blocks the file system added and
    // never wrote. No record starts with zeros, so none was lost there.
    let stop = |segment: Segment, offset: u64, reason: String| {
        if zeros_from(path, offset)? {
            return Ok(Scanned { segment, bad: None });
        }
        stop(segment, offset, reason)
    };
    loop {
        let offset = segment.len;
        let remaining = file_len.saturating_sub(offset);
        let header =
            match read_record(&mut r, remaining, &mut body).map_err(io_err("read", path))? {
                Next::End => return Ok(Scanned { segment, bad: None }),
                Next::Bad(reason) => return stop(segment, offset, reason),
                Next::Record(header) => header,
            };
        let record = match header.verify(&body) {
            Ok(record) => record,
            Err(reason) => return stop(segment, offset, reason),
        };
        if record.first_ts != segment.next_ts {
            return Err(corrupt(
                path,
                offset,
                format!(
                    "record starts at timestamp {}, expected {}",
                    record.first_ts, segment.next_ts
                ),
            ));
        }
        for (ts, digest, _) in record.txs() {
            on_tx(digest, ts);
        }
        segment.push_record(record.first_ts, record.next_ts(), header.total_len());
    }
}

/// Whether the file holds nothing but zero bytes from `offset` to its end.
fn zeros_from(path: &Path, offset: u64) -> Result<bool> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io_err("seek", path))?;
    let mut chunk = vec![0u8; READ_BUFFER];
    loop {
        let n = file.read(&mut chunk).map_err(io_err("read", path))?;
        if n == 0 {
            return Ok(true);
        }
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

/// Offset of a valid record with a timestamp of at least `min_ts` after `offset`, if any.
pub(crate) fn valid_record_after(path: &Path, offset: u64, min_ts: u64) -> Result<Option<u64>> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io_err("seek", path))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(io_err("read", path))?;
    Ok(find_valid_record(&tail, min_ts).map(|at| offset + at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_point_is_the_last_indexed_record_at_or_before() {
        let mut seg = Segment::new(PathBuf::from("x"), 1);
        // Records of 600 KiB: every other one crosses the stride and is indexed.
        for i in 0..6 {
            seg.push_record(1 + 10 * i, 11 + 10 * i, 600 << 10);
        }
        let offsets: Vec<u64> = seg.index.iter().map(|&(_, o)| o).collect();
        assert_eq!(offsets.len(), 3);
        assert_eq!(seg.seek_point(1), (SEGMENT_HEADER_LEN, 1));
        assert_eq!(seg.seek_point(20), (SEGMENT_HEADER_LEN, 1));
        assert_eq!(seg.seek_point(21), (offsets[1], 21));
        assert_eq!(seg.seek_point(59), (offsets[2], 41));
        assert_eq!(seg.seek_point(0), (SEGMENT_HEADER_LEN, 1));
        assert_eq!((seg.next_ts, seg.records), (61, 6));
    }
}
