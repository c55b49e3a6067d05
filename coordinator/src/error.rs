//! The coordinator's errors, and how each reaches a client as a gRPC status.

use std::fmt;

/// A refused field and the short forms of what a client sent are the shared
/// vocabulary's (`corral-types`); every coordinator error builds on them.
pub use corral_core::error::{bounded, shown, Invalid, MAX_MESSAGE};
/// What the core refuses, by its own name where both kinds meet.
pub use corral_core::Error as Refusal;

/// Everything a coordinator operation can refuse or fail with: what the core
/// refuses, and the shell's own failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] Refusal),
    /// (Not a `source`: the message says it all, once.)
    #[error("store: {0}")]
    Store(crate::store::StoreError),
    /// Said once: its message is the I/O error's (a `{0}` message with the error as
    /// its source too would print it twice in a chain).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A service the coordinator relies on (the object store) cannot do it now.
    #[error("{0}")]
    Unavailable(String),
}

/// The core's refusals, made where the shell refuses too (a handler's checks).
impl Error {
    pub fn not_found(what: &'static str, id: impl fmt::Display) -> Self {
        Error::Core(Refusal::not_found(what, id))
    }

    pub fn refused(why: impl Into<String>) -> Self {
        Error::Core(Refusal::Refused(why.into()))
    }

    pub fn forbidden(why: impl Into<String>) -> Self {
        Error::Core(Refusal::Forbidden(why.into()))
    }

    pub fn exhausted(why: impl Into<String>) -> Self {
        Error::Core(Refusal::Exhausted(why.into()))
    }

    pub fn already_exists(what: &'static str, id: impl fmt::Display) -> Self {
        Error::Core(Refusal::AlreadyExists { what, id: id.to_string() })
    }
}

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        Error::Core(Refusal::Invalid(invalid))
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let message = bounded(err.to_string());
        match err {
            Error::Core(Refusal::Invalid(_)) => tonic::Status::invalid_argument(message),
            Error::Core(Refusal::NotFound { .. }) => tonic::Status::not_found(message),
            Error::Core(Refusal::AlreadyExists { .. } | Refusal::KeyReused { .. }) => {
                tonic::Status::already_exists(message)
            }
            Error::Core(Refusal::Refused(_)) => tonic::Status::failed_precondition(message),
            Error::Core(Refusal::Forbidden(_)) => tonic::Status::permission_denied(message),
            Error::Core(Refusal::Exhausted(_)) => tonic::Status::resource_exhausted(message),
            Error::Store(crate::store::StoreError::Unavailable(_)) | Error::Unavailable(_) => {
                tonic::Status::unavailable(message)
            }
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
