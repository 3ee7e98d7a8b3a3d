//! The native half of adoption: the `table.v1` lookup-table layout (see
//! `docs/binary-layouts.md`), read in place, and what [`Store::adopt_batch`] reports.
//!
//! A table arrives from a pre-executor, another process: every length in it is checked before
//! it is used, and any table that is not exactly what the layout describes is refused with an
//! error that says where it went wrong. Parsing borrows from the input and allocates nothing,
//! because the primary checks every transaction of every batch this way.
//!
//! [`Store::adopt_batch`]: crate::Store::adopt_batch

use crate::error::Error;
use crate::slot::{MAX_ID_LEN, MAX_VALUE_LEN};
use std::fmt;

/// The layout byte this build reads and writes.
pub const TABLE_LAYOUT: u8 = 1;
/// Flags bit 0: the outcome is `ok` (only then may the table carry writes).
pub const FLAG_OK: u8 = 1;
/// `valueLen` meaning "no value": a delete, or a speculative read of nothing.
pub const NO_VALUE: u32 = u32::MAX;
/// layout, flags, nReads, nSpeculative, nWrites, restLen.
pub const TABLE_HEADER_BYTES: usize = 12;

/// Which list of a table an entry belongs to, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Read,
    Speculative,
    Write,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Read => "read",
            Section::Speculative => "speculative read",
            Section::Write => "write",
        })
    }
}

/// The field of an entry that ran past the end of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    IdLen,
    Id,
    Version,
    ValueLen,
    Value,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::IdLen => "idLen",
            Field::Id => "id",
            Field::Version => "version",
            Field::ValueLen => "valueLen",
            Field::Value => "value",
        })
    }
}

/// Why a table is malformed. Entry indexes count from 0 within their section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Fewer bytes than the fixed header.
    Header {
        len: usize,
    },
    Layout(u8),
    /// Flag bits this layout does not define.
    Flags(u8),
    /// Writes in a table whose outcome is not `ok`.
    WritesNotOk {
        writes: u16,
    },
    /// The entry needs `need` more bytes for `field` and only `left` remain.
    Truncated {
        section: Section,
        index: usize,
        field: Field,
        need: usize,
        left: usize,
    },
    IdLen {
        section: Section,
        index: usize,
        len: usize,
    },
    IdUtf8 {
        section: Section,
        index: usize,
    },
    ValueLen {
        section: Section,
        index: usize,
        len: u32,
    },
    /// `restLen` runs past the end of the table.
    RestMissing {
        rest_len: u32,
        left: usize,
    },
    /// Bytes after the `restLen` bytes of the rest.
    LeftOver {
        rest_len: u32,
        extra: usize,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table: ")?;
        match self {
            TableError::Header { len } => write!(
                f,
                "{len} bytes, shorter than the {TABLE_HEADER_BYTES}-byte header"
            ),
            TableError::Layout(v) => {
                write!(
                    f,
                    "unknown layout {v} (this build reads layout {TABLE_LAYOUT})"
                )
            }
            TableError::Flags(flags) => write!(
                f,
                "unknown flag bits 0x{:02x} (flags 0x{flags:02x})",
                flags & !FLAG_OK
            ),
            TableError::WritesNotOk { writes } => {
                write!(
                    f,
                    "{writes} writes but the outcome is not ok (flags bit 0 clear)"
                )
            }
            TableError::Truncated {
                section,
                index,
                field,
                need,
                left,
            } => write!(
                f,
                "{section} {index}: truncated in its {field} (needs {need} bytes, {left} left)"
            ),
            TableError::IdLen {
                section,
                index,
                len,
            } => write!(
                f,
                "{section} {index}: id of {len} bytes (ids are 1 to {MAX_ID_LEN} bytes)"
            ),
            TableError::IdUtf8 { section, index } => {
                write!(f, "{section} {index}: id is not UTF-8")
            }
            TableError::ValueLen {
                section,
                index,
                len,
            } => write!(
                f,
                "{section} {index}: value of {len} bytes (at most {MAX_VALUE_LEN})"
            ),
            TableError::RestMissing { rest_len, left } => write!(
                f,
                "restLen {rest_len} but only {left} bytes follow the writes"
            ),
            TableError::LeftOver { rest_len, extra } => {
                write!(f, "{extra} bytes left over after the {rest_len}-byte rest")
            }
        }
    }
}

impl std::error::Error for TableError {}

/// Splits `n` bytes off the front of `b`.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = b.split_at_checked(n)?;
    *b = tail;
    Some(head)
}

fn take_array<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
    take(b, N)?.try_into().ok()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

/// One entry's parser: knows where it is, so its errors can say so.
struct At {
    section: Section,
    index: usize,
}

impl At {
    fn take<'a>(&self, b: &mut &'a [u8], n: usize, field: Field) -> Result<&'a [u8], TableError> {
        let left = b.len();
        take(b, n).ok_or(TableError::Truncated {
            section: self.section,
            index: self.index,
            field,
            need: n,
            left,
        })
    }

    fn array<const N: usize>(&self, b: &mut &[u8], field: Field) -> Result<[u8; N], TableError> {
        let raw = self.take(b, N, field)?;
        Ok(raw.try_into().unwrap_or([0; N]))
    }

    fn id<'a>(&self, b: &mut &'a [u8]) -> Result<&'a [u8], TableError> {
        let [len] = self.array::<1>(b, Field::IdLen)?;
        let len = usize::from(len);
        if len == 0 || len > MAX_ID_LEN {
            return Err(TableError::IdLen {
                section: self.section,
                index: self.index,
                len,
            });
        }
        let id = self.take(b, len, Field::Id)?;
        // Ids are nearly always ASCII, which is checked a word at a time.
        if !id.is_ascii() && std::str::from_utf8(id).is_err() {
            return Err(TableError::IdUtf8 {
                section: self.section,
                index: self.index,
            });
        }
        Ok(id)
    }

    fn value<'a>(&self, b: &mut &'a [u8]) -> Result<Option<&'a [u8]>, TableError> {
        let len = u32::from_le_bytes(self.array(b, Field::ValueLen)?);
        if len == NO_VALUE {
            return Ok(None);
        }
        if len as usize > MAX_VALUE_LEN {
            return Err(TableError::ValueLen {
                section: self.section,
                index: self.index,
                len,
            });
        }
        self.take(b, len as usize, Field::Value).map(Some)
    }

    fn version(&self, b: &mut &[u8]) -> Result<u64, TableError> {
        Ok(u64::from_le_bytes(self.array(b, Field::Version)?))
    }
}

/// Checks `n` entries of `section` at the front of `b` and splits them off.
fn section<'a>(
    b: &mut &'a [u8],
    section: Section,
    n: u16,
    versioned: bool,
) -> Result<&'a [u8], TableError> {
    let start = *b;
    for index in 0..usize::from(n) {
        let at = At { section, index };
        at.id(b)?;
        if versioned {
            at.version(b)?;
        } else {
            at.value(b)?;
        }
    }
    // `b` is what is left of `start`: the entries are the part before it.
    Ok(start.get(..start.len() - b.len()).unwrap_or_default())
}

/// A well-formed `table.v1`, borrowed from the bytes it was parsed from. Its sections have been
/// checked whole, so iterating them cannot fail.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    flags: u8,
    n_reads: u16,
    n_speculative: u16,
    n_writes: u16,
    reads: &'a [u8],
    speculative: &'a [u8],
    writes: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Table<'a> {
    /// Checks `bytes` against the layout, exactly: every length in bounds, every id 1 to
    /// [`MAX_ID_LEN`] bytes of UTF-8, every value at most [`MAX_VALUE_LEN`] bytes, and nothing
    /// before, between or after the sections.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TableError> {
        let mut b = bytes;
        let header: [u8; TABLE_HEADER_BYTES] =
            take_array(&mut b).ok_or(TableError::Header { len: bytes.len() })?;
        if header[0] != TABLE_LAYOUT {
            return Err(TableError::Layout(header[0]));
        }
        let flags = header[1];
        if flags & !FLAG_OK != 0 {
            return Err(TableError::Flags(flags));
        }
        let (n_reads, n_speculative, n_writes) =
            (u16_at(&header, 2), u16_at(&header, 4), u16_at(&header, 6));
        if n_writes > 0 && flags & FLAG_OK == 0 {
            return Err(TableError::WritesNotOk { writes: n_writes });
        }
        let rest_len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let reads = section(&mut b, Section::Read, n_reads, true)?;
        let speculative = section(&mut b, Section::Speculative, n_speculative, false)?;
        let writes = section(&mut b, Section::Write, n_writes, false)?;
        let left = b.len();
        if (rest_len as usize) > left {
            return Err(TableError::RestMissing { rest_len, left });
        }
        if left > rest_len as usize {
            return Err(TableError::LeftOver {
                rest_len,
                extra: left - rest_len as usize,
            });
        }
        Ok(Table {
            flags,
            n_reads,
            n_speculative,
            n_writes,
            reads,
            speculative,
            writes,
            rest: b,
        })
    }

    /// The outcome was `ok` (flags bit 0).
    pub fn ok(&self) -> bool {
        self.flags & FLAG_OK != 0
    }

    /// `(id, version)` of every read, in table order.
    pub fn reads(&self) -> Reads<'a> {
        Reads {
            bytes: self.reads,
            left: self.n_reads,
        }
    }

    /// `(id, value)` of every speculative read; `None`: it read nothing.
    pub fn speculative(&self) -> Entries<'a> {
        Entries {
            bytes: self.speculative,
            left: self.n_speculative,
        }
    }

    /// `(id, value)` of every write; `None`: a delete.
    pub fn writes(&self) -> Entries<'a> {
        Entries {
            bytes: self.writes,
            left: self.n_writes,
        }
    }

    pub fn read_count(&self) -> usize {
        usize::from(self.n_reads)
    }

    pub fn speculative_count(&self) -> usize {
        usize::from(self.n_speculative)
    }

    pub fn write_count(&self) -> usize {
        usize::from(self.n_writes)
    }

    /// The msgpack `[dynamic, auth, precompiles, outcome]`, undecoded.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

/// Decodes an id from a section `parse` has already checked: only `None` at its end.
fn next_id<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::from(*take(b, 1)?.first()?);
    take(b, len)
}

/// The reads of a [`Table`].
#[derive(Clone, Debug)]
pub struct Reads<'a> {
    bytes: &'a [u8],
    left: u16,
}

impl<'a> Iterator for Reads<'a> {
    type Item = (&'a [u8], u64);
    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let id = next_id(&mut self.bytes)?;
        let version = u64::from_le_bytes(take_array(&mut self.bytes)?);
        Some((id, version))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

/// The speculative reads or the writes of a [`Table`].
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    bytes: &'a [u8],
    left: u16,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let id = next_id(&mut self.bytes)?;
        let len = u32::from_le_bytes(take_array(&mut self.bytes)?);
        if len == NO_VALUE {
            return Some((id, None));
        }
        Some((id, Some(take(&mut self.bytes, len as usize)?)))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

/// Appends `table.v1` bytes to `out`: what a pre-executor sends, for tests and benchmarks.
/// Nothing is checked here; more than 65535 entries in a section, an id over 255 bytes or a
/// value of 4 GiB would not round-trip, and `Table::parse` is what decides if the result is
/// well formed.
pub fn encode_table(
    out: &mut Vec<u8>,
    ok: bool,
    reads: &[(&[u8], u64)],
    speculative: &[(&[u8], Option<&[u8]>)],
    writes: &[(&[u8], Option<&[u8]>)],
    rest: &[u8],
) {
    out.push(TABLE_LAYOUT);
    out.push(if ok { FLAG_OK } else { 0 });
    for n in [reads.len(), speculative.len(), writes.len()] {
        out.extend_from_slice(&(n as u16).to_le_bytes());
    }
    out.extend_from_slice(&(rest.len() as u32).to_le_bytes());
    for (id, version) in reads {
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&version.to_le_bytes());
    }
    for (id, value) in speculative.iter().chain(writes) {
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        match value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&NO_VALUE.to_le_bytes()),
        }
    }
    out.extend_from_slice(rest);
}

/// Why a run of [`Store::adopt_batch`] ended.
///
/// [`Store::adopt_batch`]: crate::Store::adopt_batch
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every transaction through the end of the batch was adopted.
    End,
    /// The next transaction has no table: the caller executes it.
    NoTable,
    /// A read of the next transaction's table is no longer current: the caller re-executes.
    Stale,
    /// The next transaction's table cannot be adopted as it is (malformed, or its writes
    /// would not be newer than the objects they replace): the caller executes it itself.
    Malformed(String),
}

/// What one call of [`Store::adopt_batch`] did.
///
/// [`Store::adopt_batch`]: crate::Store::adopt_batch
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptRun {
    /// Transactions adopted, consecutive from `from`; the one at `from + adopted` (if any) is
    /// the one `stop` is about, and nothing of it was applied.
    pub adopted: usize,
    pub stop: Stop,
    /// After a [`Stop::Stale`]: how many transactions right after the stale one the caller
    /// will most likely have to merge too. Each has no table, a read whose version the store
    /// has already passed (versions only grow, so it stays stale), or a read of an object a
    /// stale table before it wrote (its re-execution most likely writes it again). The caller
    /// merges them in the same run rather than calling again to hear each one refused; it
    /// merges each by the rule, so a wrong guess costs time, never a result. 0 after other
    /// stops.
    pub stale_after: usize,
}

/// A call of [`Store::adopt_batch`] that could not run: the caller's arguments disagree, or
/// the store failed (which leaves the run's earlier transactions applied).
///
/// [`Store::adopt_batch`]: crate::Store::adopt_batch
#[derive(Debug)]
pub enum AdoptError {
    Batch(String),
    Store {
        /// Index of the transaction being applied.
        tx: usize,
        /// Transactions before it adopted and applied by this call.
        adopted: usize,
        source: Error,
    },
}

impl fmt::Display for AdoptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdoptError::Batch(why) => write!(f, "adoptBatch: {why}"),
            AdoptError::Store {
                tx,
                adopted,
                source,
            } => write!(
                f,
                "adoptBatch: transaction {tx}: {source} ({adopted} transactions before it were \
                 adopted and applied)"
            ),
        }
    }
}

impl std::error::Error for AdoptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AdoptError::Batch(_) => None,
            AdoptError::Store { source, .. } => Some(source),
        }
    }
}

/// Checks that `ends` (entries from `from - 1` on: earlier ones are not used) and `ts`
/// describe `tables_len` bytes of tables.
pub(crate) fn check_batch(
    tables_len: usize,
    ends: &[u32],
    ts_len: usize,
    from: usize,
) -> Result<(), AdoptError> {
    if ends.len() != ts_len {
        return Err(AdoptError::Batch(format!(
            "{} table ends but {ts_len} timestamps",
            ends.len()
        )));
    }
    if from > ends.len() {
        return Err(AdoptError::Batch(format!(
            "from {from} is past the {} transactions of the batch",
            ends.len()
        )));
    }
    let mut prev = 0u32;
    for (i, &end) in ends.iter().enumerate().skip(from.saturating_sub(1)) {
        if end < prev {
            return Err(AdoptError::Batch(format!(
                "ends[{i}] = {end} is before ends[{}] = {prev}",
                i.saturating_sub(1)
            )));
        }
        if end as usize > tables_len {
            return Err(AdoptError::Batch(format!(
                "ends[{i}] = {end} is past the {tables_len} bytes of tables"
            )));
        }
        prev = end;
    }
    Ok(())
}

/// What [`bench_adopt`] measured.
#[derive(Clone, Debug)]
pub struct AdoptBench {
    pub objects: usize,
    /// Transactions per round.
    pub txs: usize,
    /// Filling the store before the rounds (not part of the adoption time).
    pub fill_secs: f64,
    /// Transactions per second of each round: time inside `adopt_batch` alone.
    pub rounds: Vec<f64>,
    /// The best round's rate, and the median's: the machine may be shared, and the best
    /// is what the code can do.
    pub best_tps: f64,
    pub median_tps: f64,
}

/// Transactions per `adopt_batch` call in [`bench_adopt`], as the primary merges them.
pub const BENCH_BATCH: usize = 1024;

/// The id of benchmark object `i`: short ASCII, as applications name accounts.
pub fn bench_id(i: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "acct:{i:06}");
}

fn bench_value(rng: &mut crate::stress::XorShift, out: &mut Vec<u8>) {
    out.clear();
    let len = 16 + rng.below(17) as usize;
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
}

/// One batch as the primary hands it over: tables back to back, their ends, timestamps.
type BenchBatch = (Vec<u8>, Vec<u32>, Vec<u64>);

/// The native batch check-and-apply alone, on one core: a store in `dir` (regions of
/// `region_bytes`) filled with `objects` objects (values of 16 to 32 bytes), then `rounds`
/// rounds of `txs` transactions, each 2 reads and 2 writes of uniformly random objects (a
/// transfer), adopted in batches of [`BENCH_BATCH`]. A round's tables are all built before its
/// clock starts, and every transaction must be adopted.
pub fn bench_adopt(
    dir: &std::path::Path,
    objects: usize,
    txs: usize,
    rounds: usize,
    region_bytes: usize,
    seed: u64,
) -> Result<AdoptBench, AdoptError> {
    use crate::store::{Store, StoreConfig};
    use std::time::Instant;
    let store_err = |source| AdoptError::Store {
        tx: 0,
        adopted: 0,
        source,
    };
    if objects < 2 {
        return Err(AdoptError::Batch(
            "the benchmark needs at least 2 objects".into(),
        ));
    }
    let mut cfg = StoreConfig::new(dir, "adopt-bench");
    cfg.region_bytes = region_bytes;
    let store = Store::create(&cfg).map_err(store_err)?;
    let mut rng = crate::stress::XorShift::new(seed);

    // Filled in large batches: one lock and one pass of checks per batch.
    let fill = Instant::now();
    const FILL: usize = 1 << 16;
    let mut ids = vec![Vec::new(); FILL];
    let mut values = vec![Vec::new(); FILL];
    for chunk in (0..objects).step_by(FILL) {
        let n = FILL.min(objects - chunk);
        for k in 0..n {
            bench_id((chunk + k) as u64, &mut ids[k]);
            bench_value(&mut rng, &mut values[k]);
        }
        let puts: Vec<crate::store::Put> = (0..n)
            .map(|k| (ids[k].as_slice(), Some(values[k].as_slice()), 1))
            .collect();
        store.set_many(&puts).map_err(store_err)?;
    }
    let fill_secs = fill.elapsed().as_secs_f64();

    let mut versions = vec![1u64; objects];
    let mut next_ts = 2;
    let mut tps = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let batches = bench_batches(&mut rng, &mut versions, &mut next_ts, txs);
        let mut secs = 0.0;
        for (tables, ends, stamps) in &batches {
            let t = Instant::now();
            let run = store.adopt_batch(tables, ends, stamps, 0)?;
            secs += t.elapsed().as_secs_f64();
            if run.stop != Stop::End || run.adopted != ends.len() {
                return Err(AdoptError::Batch(format!(
                    "benchmark batch stopped after {} of {} transactions: {:?}",
                    run.adopted,
                    ends.len(),
                    run.stop
                )));
            }
        }
        tps.push(txs as f64 / secs.max(1e-9));
    }
    let mut sorted = tps.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(AdoptBench {
        objects,
        txs,
        fill_secs,
        best_tps: sorted.last().copied().unwrap_or(0.0),
        median_tps: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
        rounds: tps,
    })
}

/// `txs` transfer transactions over `versions.len()` objects, their reads at the versions the
/// previous ones leave, in batches of [`BENCH_BATCH`].
fn bench_batches(
    rng: &mut crate::stress::XorShift,
    versions: &mut [u64],
    next_ts: &mut u64,
    txs: usize,
) -> Vec<BenchBatch> {
    let objects = versions.len();
    let mut batches: Vec<BenchBatch> = Vec::new();
    let (mut a_id, mut b_id, mut a_val, mut b_val) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // A msgpack `[[], [], [], {}]`-sized rest: adoption carries it without reading it.
    let rest = [0x94, 0x90, 0x90, 0x90, 0x80];
    for k in 0..txs {
        if k % BENCH_BATCH == 0 {
            batches.push((
                Vec::with_capacity(BENCH_BATCH * 128),
                Vec::with_capacity(BENCH_BATCH),
                Vec::with_capacity(BENCH_BATCH),
            ));
        }
        let Some((tables, ends, stamps)) = batches.last_mut() else {
            break;
        };
        let ts = *next_ts;
        *next_ts += 1;
        let a = rng.below(objects as u64) as usize;
        let b = (a + 1 + rng.below(objects as u64 - 1) as usize) % objects;
        bench_id(a as u64, &mut a_id);
        bench_id(b as u64, &mut b_id);
        bench_value(rng, &mut a_val);
        bench_value(rng, &mut b_val);
        encode_table(
            tables,
            true,
            &[(&a_id, versions[a]), (&b_id, versions[b])],
            &[],
            &[(&a_id, Some(&a_val)), (&b_id, Some(&b_val))],
            &rest,
        );
        ends.push(tables.len() as u32);
        stamps.push(ts);
        versions[a] = ts;
        versions[b] = ts;
    }
    batches
}
