//! The coordinator's errors, and how each reaches a client as a gRPC status.

use std::fmt;

/// A refused field and the short forms of what a client sent are the shared
/// vocabulary's (`corral-types`); every coordinator error builds on them.
pub use corral_types::{bounded, shown, Invalid, MAX_MESSAGE};

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
    /// (Not a `source`: the message says it all, once.)
    #[error("store: {0}")]
    Store(crate::store::StoreError),
    /// Said once: its message is the I/O error's (a `{0}` message with the error as
    /// its source too would print it twice in a chain).
    #[error(transparent)]
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
            Error::Store(crate::store::StoreError::Unavailable(_)) => tonic::Status::unavailable(message),
            Error::Store(_) | Error::Io(_) => tonic::Status::internal(message),
        }
    }
}

/// The event loop's refusals, as a gRPC client reads them.
impl From<crate::runtime::RuntimeError> for tonic::Status {
    fn from(err: crate::runtime::RuntimeError) -> Self {
        use crate::runtime::RuntimeError;
        let message = err.to_string();
        match err {
            RuntimeError::ShuttingDown | RuntimeError::StoreCannotWrite { .. } => tonic::Status::unavailable(message),
            RuntimeError::NotSaved(_) => tonic::Status::internal(message),
            RuntimeError::Revoked => tonic::Status::unauthenticated(message),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        Error::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_bad_value_is_refused_in_short() {
        let huge = "x".repeat(1 << 20);
        let status = tonic::Status::from(Error::from(Invalid::new("name", format!("'{huge}' is bad"))));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().len() <= MAX_MESSAGE + 3);
    }
}
