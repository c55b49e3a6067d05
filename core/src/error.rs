//! What a core decision refuses, and why, in the words a client reads. The shell
//! adds its own failures (the store, I/O) around these and maps each to a status.

use std::fmt;

/// A refused field and the short forms of what a client sent are the shared
/// vocabulary's (`corral-types`); every refusal builds on them.
pub use corral_types::{bounded, shown, Invalid, MAX_MESSAGE};

/// Everything a core decision can refuse.
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
}

impl Error {
    pub fn not_found(what: &'static str, id: impl fmt::Display) -> Self {
        Error::NotFound { what, id: id.to_string(), hint: "" }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
