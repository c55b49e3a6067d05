//! The application layer: the operations both edges offer, each written once in
//! domain types. The gRPC service ([`crate::service`]) and the HTTP API
//! ([`crate::http::api`]) decode their requests into these types, call here, and
//! encode what comes back as protobuf or JSON; neither calls the other, and no
//! protobuf type or `tonic::Status` crosses into this layer. The decisions
//! themselves (who may change what, what a dispatch makes) are the core's.
//!
//! [`dispatch`] (a job from a template, its payload stored first), [`schedules`]
//! (pause, resume, run now), [`tasks`] (a finished task's last attempt, for the
//! task lists).

pub mod dispatch;
pub mod schedules;
pub mod tasks;

use crate::error::Error;
use crate::runtime::RuntimeError;

/// Why an operation did not happen: refused (by the core or a check of the
/// shell), or the event loop could not carry it out.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error(transparent)]
    Refused(#[from] Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<crate::error::Invalid> for Failed {
    fn from(invalid: crate::error::Invalid) -> Self {
        Failed::Refused(invalid.into())
    }
}

impl From<crate::error::Refusal> for Failed {
    fn from(refusal: crate::error::Refusal) -> Self {
        Failed::Refused(refusal.into())
    }
}

impl From<Failed> for tonic::Status {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Refused(e) => e.into(),
            Failed::Runtime(e) => e.into(),
        }
    }
}
