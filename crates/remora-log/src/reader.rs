//! Replay: reading delivered transactions back in timestamp order.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use crate::error::{corrupt, io_err, Error, Result};
use crate::segment::{read_record, Next, READ_BUFFER};
use crate::Digest;

/// One delivered transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ts: u64,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// A segment to read: its file, where to start, the timestamp there, and its verified length
/// (the file may go on with zeros written ahead of the records).
pub(crate) type Start = (PathBuf, u64, u64, u64);

struct OpenSegment {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    len: u64,
}

/// Iterator over the entries from a timestamp up to the last one durable when it was created.
///
/// It owns its file handles and does not borrow the `Log`, so appends may go on meanwhile;
/// they are not seen. Records are verified again as they are read: damage that appeared
/// after open is an `Err` item, after which the iterator ends.
pub struct Reader {
    dir: PathBuf,
    plan: std::vec::IntoIter<Start>,
    current: Option<OpenSegment>,
    pending: VecDeque<Entry>,
    from: u64,
    end: u64,
    next_ts: u64,
    body: Vec<u8>,
    done: bool,
}

impl Reader {
    pub(crate) fn new(dir: PathBuf, plan: Vec<Start>, from: u64, end: u64) -> Self {
        let next_ts = plan.first().map_or(end.saturating_add(1), |s| s.2);
        Self {
            dir,
            plan: plan.into_iter(),
            current: None,
            pending: VecDeque::new(),
            from,
            end,
            next_ts,
            body: Vec::new(),
            done: false,
        }
    }

    /// Reads the next record into `pending`.
    fn fill(&mut self) -> Result<()> {
        loop {
            let seg = match &mut self.current {
                Some(seg) => seg,
                None => {
                    let Some((path, offset, first_ts, len)) = self.plan.next() else {
                        return Err(corrupt(
                            &self.dir,
                            0,
                            format!(
                                "the segments end before timestamp {}, which was durable",
                                self.next_ts
                            ),
                        ));
                    };
                    if first_ts != self.next_ts {
                        return Err(corrupt(
                            &path,
                            offset,
                            format!("expected timestamp {} here, found {first_ts}", self.next_ts),
                        ));
                    }
                    let mut file = File::open(&path).map_err(io_err("open", &path))?;
                    file.seek(SeekFrom::Start(offset))
                        .map_err(io_err("seek", &path))?;
                    self.current.insert(OpenSegment {
                        reader: BufReader::with_capacity(READ_BUFFER, file),
                        path,
                        offset,
                        len,
                    })
                }
            };
            let remaining = seg.len.saturating_sub(seg.offset);
            let header = match read_record(&mut seg.reader, remaining, &mut self.body)
                .map_err(io_err("read", &seg.path))?
            {
                Next::End => {
                    self.current = None;
                    continue;
                }
                Next::Bad(reason) => return Err(corrupt(&seg.path, seg.offset, reason)),
                Next::Record(header) => header,
            };
            let record = header
                .verify(&self.body)
                .map_err(|reason| corrupt(&seg.path, seg.offset, reason))?;
            if record.first_ts != self.next_ts {
                return Err(corrupt(
                    &seg.path,
                    seg.offset,
                    format!(
                        "record starts at timestamp {}, expected {}",
                        record.first_ts, self.next_ts
                    ),
                ));
            }
            seg.offset = seg.offset.saturating_add(header.total_len());
            self.next_ts = record.next_ts();
            let (from, end) = (self.from, self.end);
            self.pending.extend(
                record
                    .txs()
                    .filter(|&(ts, _, _)| ts >= from && ts <= end)
                    .map(|(ts, digest, bytes)| Entry {
                        ts,
                        digest,
                        bytes: bytes.to_vec(),
                    }),
            );
            return Ok(());
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some(entry) = self.pending.pop_front() {
                return Some(Ok(entry));
            }
            // Never read past the snapshot: a concurrent append may be half written there.
            if self.next_ts > self.end {
                break;
            }
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.done = true;
        None
    }
}
