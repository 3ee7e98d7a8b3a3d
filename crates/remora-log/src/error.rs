use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong opening, appending to or reading the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Bytes on disk that are not a torn tail failed verification. Nothing was dropped: the
    /// operator has to look at (or restore) the file.
    #[error("corrupt log: {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Another `Log` (this process or another) holds the directory.
    #[error("log directory {} is locked by another open Log", .0.display())]
    Locked(PathBuf),
    #[error("empty batch: append needs at least one transaction")]
    EmptyBatch,
    #[error("transaction {index} of the batch is {len} bytes, over the {max}-byte limit")]
    TxTooLarge {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("batch encodes to {bytes} bytes, over the {max}-byte record limit; split it")]
    BatchTooLarge { bytes: u64, max: u64 },
    /// A write or fsync failed earlier. What reached the disk is unknown (a failed fsync may
    /// have dropped dirty pages), so the only safe continuation is to reopen, which verifies
    /// the files again.
    #[error("log unusable after a failed write or fsync; reopen it to recover")]
    Poisoned,
    #[error("invalid options: {0}")]
    InvalidOptions(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}
