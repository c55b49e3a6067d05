//! `GET /api/events` (a page of the feed) and `GET /api/stream` (server-sent
//! events as they are committed).

use std::convert::Infallible;

use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use super::{blocking, page_limit, Api, ApiError};
use crate::error::Invalid;
use crate::events::Filter;
use crate::model::*;
use crate::shared::Shared;

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
    job: Option<u64>,
    pool: Option<String>,
}

#[derive(Serialize)]
pub(super) struct EventsPage {
    events: Vec<crate::events::Event>,
    /// The newest event recorded, matching or not.
    last_id: u64,
}

fn filter(job: Option<u64>, pool: Option<String>) -> Result<Filter, Invalid> {
    Ok(Filter {
        job: job.filter(|&j| j != 0).map(JobId),
        pool: pool.filter(|p| !p.is_empty()).map(|p| PoolName::parse("pool", &p)).transpose()?,
    })
}

pub(super) async fn events(State(shared): State<Arc<Shared>>, Query(q): Query<EventsQuery>) -> Api<EventsPage> {
    let filter = filter(q.job, q.pool)?;
    let (after, limit) = (q.after.unwrap_or(0), page_limit(q.limit)?);
    crate::feed::check_resume(&shared, after).await?;
    let last_id = *shared.last_event.borrow();
    let s = shared.clone();
    let events = blocking(move || s.reader().events(after, &filter, limit)).await?;
    Ok(Json(EventsPage { events, last_id }))
}

/// Server-sent events: each new event as `event: corral`, with its id. A browser
/// that reconnects sends `Last-Event-ID` and resumes there; a new one starts from
/// now (the page loads the present state from the API, not from history).
pub(super) async fn stream(
    State(shared): State<Arc<Shared>>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let filter = filter(q.job, q.pool)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.after)
        .filter(|&after| after > 0);
    let now = *shared.last_event.borrow();
    let after = match resume {
        Some(after) if crate::feed::check_resume(&shared, after).await.is_ok() => after,
        _ => now,
    };
    let auth = shared.auth.clone();
    let events = crate::feed::subscribe(shared, after, filter, true);
    // A revoked or expired token ends the stream.
    let events = futures::StreamExt::take_until(tokio_stream::wrappers::ReceiverStream::new(events), async move {
        auth.ended(&who).await
    });
    let sse = tokio_stream::StreamExt::map(events, |e| {
        Ok::<_, Infallible>(match e {
            Ok(e) => SseEvent::default().event("corral").id(e.id.to_string()).json_data(&e).unwrap_or_default(),
            Err(err) => SseEvent::default().event("error").data(err.to_string()),
        })
    });
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()).into_response())
}
