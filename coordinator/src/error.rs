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
    /// The request is well-formed but the current state does not allow it.
    #[error("{0}")]
    Refused(String),
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
        let message = err.to_string();
        match err {
            Error::Invalid(_) => tonic::Status::invalid_argument(message),
            Error::NotFound { .. } => tonic::Status::not_found(message),
            Error::AlreadyExists { .. } => tonic::Status::already_exists(message),
            Error::Refused(_) => tonic::Status::failed_precondition(message),
            Error::Forbidden(_) => tonic::Status::permission_denied(message),
            Error::Store(_) | Error::Io(_) => tonic::Status::internal(message),
        }
    }
}

impl From<Invalid> for tonic::Status {
    fn from(err: Invalid) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
