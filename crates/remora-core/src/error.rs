use std::path::PathBuf;

/// Every failure the core reports; messages are written for the person reading the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object id must be 1 to {max} bytes, got {len}")]
    BadId { len: usize, max: usize },
    #[error("value of {len} bytes exceeds the maximum of {max} bytes")]
    Oversize { len: usize, max: usize },
    #[error("timestamp {ts} for object {id} is not after its current version {current}")]
    StaleTimestamp { id: String, ts: u64, current: u64 },
    #[error("region {region} does not exist in store '{store}'")]
    NoRegion { store: String, region: u32 },
    #[error("access of {len} bytes at offset {offset} is outside region {region} ({size} bytes)")]
    OutOfBounds {
        region: u32,
        offset: u64,
        len: usize,
        size: usize,
    },
    #[error("region {region} is not remote-writable")]
    NotWritable { region: u32 },
    #[error("{path}: not a Remora region ({why})")]
    BadRegion { path: PathBuf, why: String },
    #[error("store '{0}' is owned by a live process")]
    Owned(String),
    #[error("invalid store name '{0}': use 1-64 characters from [A-Za-z0-9._-]")]
    BadName(String),
    #[error("the cluster secret must be at least 16 bytes")]
    WeakSecret,
    #[error("handshake with {peer} failed: {why}")]
    Handshake { peer: String, why: String },
    #[error("malformed frame from {peer}: {why}")]
    Frame { peer: String, why: String },
    #[error("peer {peer} answered with an error: {message}")]
    Remote { peer: String, message: String },
    #[error("object {id} kept changing for {attempts} read attempts")]
    Unstable { id: String, attempts: u32 },
    #[error("peer {peer} is unreachable: {why}")]
    PeerGone { peer: String, why: String },
    #[error(
        "slot of object {id} failed validation ({why}): its region was changed outside its owner"
    )]
    Corrupt { id: String, why: String },
    #[error("verbs transport: no RDMA device available ({0})")]
    NoRdma(String),
    #[error("verbs transport: {0}")]
    Verbs(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a description of what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

/// An object id as it appears in messages: UTF-8 if it is, hex otherwise.
pub fn show_id(id: &[u8]) -> String {
    match std::str::from_utf8(id) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("'{s}'"),
        _ => format!(
            "0x{}",
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}
