//! The coordinator's errors, and how each reaches a client as a gRPC status.

use std::fmt;

/// A request field that was refused, and why. The message names both, so a user can
/// fix the request without reading the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Invalid { field, reason: reason.into() }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for Invalid {}

/// How much of a value a client sent is said back in an error.
pub const SHOWN: usize = 100;

/// A client's value for an error message: at most [`SHOWN`] characters, with an
/// ellipsis and the full length when cut. An error that echoed a megabyte back
/// would not even fit in a gRPC status.
pub fn shown(value: impl fmt::Display) -> String {
    let value = value.to_string();
    match value.char_indices().nth(SHOWN) {
        None => value,
        Some((cut, _)) => format!("{}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// The longest message a status carries; anything longer is cut, whatever made it.
const MAX_MESSAGE: usize = 1024;

/// A message cut to [`MAX_MESSAGE`] bytes (on a character boundary).
pub fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// Everything a coordinator operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Something named in the request does not exist.
    #[error("{what} '{id}' does not exist{hint}")]
    NotFound { what: &'static str, id: String, hint: &'static str },
    #[error("{what} '{id}' already exists")]
    AlreadyExists { what: &'static str, id: String },
    #[error(
        "idempotency key '{key}' was used for a different request (it made job {job}); use a new key for a new job"
    )]
    KeyReused { key: String, job: crate::model::JobId },
    /// The request is well-formed but the current state does not allow it.
    #[error("{0}")]
    Refused(String),
    /// A limit on what the coordinator holds would be passed.
    #[error("{0}")]
    Exhausted(String),
    /// The caller's token does not allow this change.
    #[error("{0}")]
    Forbidden(String),
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn not_found(what: &'static str, id: impl fmt::Display) -> Self {
        Error::NotFound { what, id: id.to_string(), hint: "" }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let message = bounded(err.to_string());
        match err {
            Error::Invalid(_) => tonic::Status::invalid_argument(message),
            Error::NotFound { .. } => tonic::Status::not_found(message),
            Error::AlreadyExists { .. } | Error::KeyReused { .. } => tonic::Status::already_exists(message),
            Error::Refused(_) => tonic::Status::failed_precondition(message),
            Error::Forbidden(_) => tonic::Status::permission_denied(message),
            Error::Exhausted(_) => tonic::Status::resource_exhausted(message),
            Error::Store(_) | Error::Io(_) => tonic::Status::internal(message),
        }
    }
}

impl From<Invalid> for tonic::Status {
    fn from(err: Invalid) -> Self {
        tonic::Status::invalid_argument(bounded(err.to_string()))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_bad_value_is_said_back_in_short() {
        let huge = "x".repeat(1 << 20);
        let said = shown(&huge);
        assert!(said.len() < 150 && said.ends_with("… (1048576 bytes)"), "{said}");
        assert_eq!(shown("short"), "short");
        let status = tonic::Status::from(Invalid::new("name", format!("'{huge}' is bad")));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().len() <= MAX_MESSAGE + 3);
    }
}
