use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] remora_core::Error),
    #[error("bad coordination layout: {0}")]
    BadLayout(String),
    #[error("bad coordination request: {0}")]
    BadRequest(String),
    /// A state transfer that cannot go on: a bad request, a malformed shipment, a server that
    /// stopped or could not collect a consistent state.
    #[error("state transfer: {0}")]
    Transfer(String),
    #[error(
        "no majority for phase {phase} of transaction {ts} within {waited:?}: partition {partition} \
         has {have} of the {need} replicas needed"
    )]
    NoMajority {
        ts: u64,
        phase: u32,
        partition: u32,
        have: usize,
        need: usize,
        waited: Duration,
    },
    #[error("coordination entry {index} stayed torn for {attempts} reads")]
    Torn { index: usize, attempts: u32 },
}

pub type Result<T> = std::result::Result<T, Error>;
