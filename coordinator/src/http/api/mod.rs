//! The JSON API under `/api`, which the dashboard is built on (reads), the
//! dispatch of a template ([`templates`]), and the dashboard's actions
//! ([`actions`]: cancel, retry, drain, resize), the routes that change anything. Each answer is
//! read from the core in one call of the event loop (so it is consistent) or, for
//! attempt history, logs and events, from the store's read connection. Task lists
//! are paged here, on the server, so a job of a million tasks costs one page.
//!
//! The routes and their fields are documented in `docs/HTTP_API.md`; one module per
//! subject: [`pools`], [`nodes`], [`jobs`] (with tasks and logs), [`events`],
//! [`schedules`] (with pause, resume and run), [`templates`] (with dispatch),
//! [`triggers`], [`actions`].

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::core::Core;
use crate::error::{Error, Invalid, Refusal};
use crate::shared::Shared;

mod actions;
mod events;
mod jobs;
mod nodes;
mod pools;
mod schedules;
mod templates;
mod triggers;

pub(super) type Api<T> = Result<Json<T>, ApiError>;

/// The most rows (tasks, events) one page of the JSON API returns, for a browser.
pub const MAX_ROWS_PER_PAGE: usize = 1000;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/pools", get(pools::pools))
        .route("/api/nodes", get(nodes::nodes))
        .route("/api/jobs", get(jobs::jobs))
        .route("/api/jobs/{id}", get(jobs::job))
        .route("/api/jobs/{id}/tasks", get(jobs::tasks))
        .route("/api/jobs/{id}/tasks/{index}", get(jobs::task))
        .route("/api/jobs/{id}/tasks/{index}/log", get(jobs::log))
        .route("/api/events", get(events::events))
        .route("/api/stream", get(events::stream))
        .route("/api/pools/{name}", get(pools::pool))
        .route("/api/schedules", get(schedules::schedules))
        .route("/api/schedules/{name}", get(schedules::schedule))
        .route("/api/schedules/{name}/pause", post(schedules::pause))
        .route("/api/schedules/{name}/resume", post(schedules::resume))
        .route("/api/schedules/{name}/run", post(schedules::run))
        .route("/api/templates", get(templates::templates))
        .route("/api/templates/{name}", get(templates::template))
        .route("/api/triggers", get(triggers::triggers))
        .route("/api/triggers/{name}", get(triggers::trigger))
        .route("/api/templates/{name}/dispatch", post(templates::dispatch))
        .route("/api/whoami", get(actions::whoami))
        .route("/api/jobs/{id}/cancel", post(actions::cancel_job))
        .route("/api/jobs/{id}/retry", post(actions::retry_job))
        .route("/api/nodes/{id}/drain", post(actions::drain_node))
        .route("/api/pools/{name}/resize", post(actions::resize_pool))
}

/// An error as JSON, `{"error": "..."}`, with the status that fits it.
pub struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Core(Refusal::Invalid(_)) => StatusCode::BAD_REQUEST,
            Error::Core(Refusal::NotFound { .. }) => StatusCode::NOT_FOUND,
            Error::Core(Refusal::AlreadyExists { .. } | Refusal::KeyReused { .. } | Refusal::Refused(_)) => {
                StatusCode::CONFLICT
            }
            Error::Core(Refusal::Forbidden(_)) => StatusCode::FORBIDDEN,
            Error::Core(Refusal::Exhausted(_)) => StatusCode::TOO_MANY_REQUESTS,
            Error::Store(crate::store::StoreError::Unavailable(_)) | Error::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Store(_) | Error::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, crate::error::bounded(e.to_string()))
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Error::from(e).into()
    }
}

impl From<crate::runtime::RuntimeError> for ApiError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        use crate::runtime::RuntimeError;
        let status = match e {
            RuntimeError::ShuttingDown | RuntimeError::StoreCannotWrite { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RuntimeError::NotSaved(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RuntimeError::Revoked => StatusCode::UNAUTHORIZED,
        };
        ApiError(status, e.to_string())
    }
}

impl From<crate::app::Failed> for ApiError {
    fn from(failed: crate::app::Failed) -> Self {
        match failed {
            crate::app::Failed::Refused(e) => e.into(),
            crate::app::Failed::Runtime(e) => e.into(),
        }
    }
}

/// Runs `f` on the core and answers with what it returns.
pub(super) async fn read<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce(&Core, Instant) -> Result<T, Error> + Send + 'static,
) -> Api<T> {
    Ok(Json(shared.runtime.call(move |core, now, _| f(core, now)).await??))
}

/// Runs a store read off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

/// `limit`: 50 when absent, else 1..=MAX_ROWS_PER_PAGE (anything else is refused, not
/// quietly changed into something the client did not ask for).
pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, Invalid> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=MAX_ROWS_PER_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(Invalid::new("limit", format!("is {n}; it must be from 1 to {MAX_ROWS_PER_PAGE}"))),
    }
}
