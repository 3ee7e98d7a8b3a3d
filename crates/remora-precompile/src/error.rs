/// Names echoed into errors are cut to this many characters: the name comes from a transaction,
/// and an oversized one should not be copied whole into every log line.
const MAX_ECHOED_NAME_CHARS: usize = 64;

/// Why a pre-compiled function call produced no output.
///
/// Both variants are deterministic functions of the call, so every replica and pre-executor
/// reaches the same error for the same call, and it can be recorded like an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No function of that name is registered. `name` is the requested name, cut to 64
    /// characters with a trailing `…` when longer.
    #[error("unknown pre-compiled function {name:?}")]
    UnknownFunction { name: String },
    /// The input does not have the shape the function documents.
    #[error("malformed input for {function}: {reason}")]
    MalformedInput {
        function: &'static str,
        reason: String,
    },
}

impl Error {
    pub(crate) fn unknown_function(name: &str) -> Self {
        let name = match name.char_indices().nth(MAX_ECHOED_NAME_CHARS) {
            Some((cut, _)) => format!("{}…", &name[..cut]),
            None => name.to_owned(),
        };
        Error::UnknownFunction { name }
    }
}
