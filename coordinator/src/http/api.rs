//! The JSON read API under `/api`, which the dashboard is built on. Each answer is
//! read from the core in one call of the event loop (so it is consistent) or, for
//! attempt history, logs and events, from the store's read connection. Task lists
//! are paged here, on the server, so a job of a million tasks costs one page.
//!
//! The routes and their fields are documented in `docs/HTTP_API.md`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::core::{Core, Job, Node};
use crate::error::{Error, Invalid};
use crate::events::Filter;
use crate::model::*;
use crate::shared::Shared;

type Api<T> = Result<Json<T>, ApiError>;

/// The most rows one page returns.
pub const MAX_PAGE: usize = 1000;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/pools", get(pools))
        .route("/api/nodes", get(nodes))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/tasks", get(tasks))
        .route("/api/jobs/{id}/tasks/{index}", get(task))
        .route("/api/jobs/{id}/tasks/{index}/log", get(log))
        .route("/api/events", get(events))
        .route("/api/stream", get(stream))
}

/// An error as JSON, `{"error": "..."}`, with the status that fits it.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::AlreadyExists { .. } | Error::KeyReused { .. } | Error::Refused(_) => StatusCode::CONFLICT,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Exhausted(_) => StatusCode::TOO_MANY_REQUESTS,
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

/// Runs `f` on the core and answers with what it returns.
async fn read<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce(&Core, Instant) -> Result<T, Error> + Send + 'static,
) -> Api<T> {
    Ok(Json(shared.runtime.call(move |core, now, _| f(core, now)).await??))
}

/// Runs a store read off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> crate::Result<T> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

/// `limit`: 50 when absent, else 1..=MAX_PAGE (anything else is refused, not
/// quietly changed into something the client did not ask for).
fn page_limit(limit: Option<usize>) -> Result<usize, Invalid> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(Invalid::new("limit", format!("is {n}; it must be from 1 to {MAX_PAGE}"))),
    }
}

// ----------------------------------------------------------------------- pools

#[derive(Serialize)]
struct PoolView {
    name: String,
    provider: &'static str,
    slots_per_node: u32,
    fill: &'static str,
    target_nodes: u32,
    autoscale: Option<AutoscaleView>,
    deleting: bool,
    last_error: Option<String>,
    nodes: BTreeMap<&'static str, u32>,
    slots: Slots,
    queue: Queue,
    scale_log: Vec<ScaleView>,
}

#[derive(Serialize)]
struct AutoscaleView {
    min_nodes: u32,
    max_nodes: u32,
    target: u32,
}

#[derive(Serialize)]
struct Slots {
    total: u32,
    used: u32,
    free: u32,
}

#[derive(Serialize)]
struct Queue {
    ready: u64,
    running: u64,
}

#[derive(Serialize)]
struct ScaleView {
    at_ms: u64,
    from: u32,
    to: u32,
    reason: String,
}

async fn pools(State(shared): State<Arc<Shared>>) -> Api<Vec<PoolView>> {
    read(&shared, |core, _| {
        Ok(core
            .pools
            .values()
            .map(|pool| {
                let summary = core.pool_summary(pool);
                let live = [NodeState::Starting, NodeState::Idle, NodeState::Running, NodeState::Draining];
                let mut nodes: BTreeMap<&'static str, u32> =
                    live.into_iter().map(|s| (s.as_str(), summary.nodes.get(&s).copied().unwrap_or(0))).collect();
                nodes.insert(NodeState::Lost.as_str(), summary.lost);
                let slots = summary.slots;
                PoolView {
                    name: pool.spec.name.to_string(),
                    provider: pool.spec.provider.as_str(),
                    slots_per_node: pool.spec.slots_per_node,
                    fill: pool.spec.fill.as_str(),
                    target_nodes: pool.spec.target_nodes,
                    autoscale: pool.spec.autoscale.as_ref().map(|a| AutoscaleView {
                        min_nodes: a.min,
                        max_nodes: a.max,
                        target: pool.spec.target_nodes,
                    }),
                    deleting: pool.deleting,
                    last_error: pool.last_error.clone(),
                    nodes,
                    slots: Slots { total: slots.total, used: slots.used, free: slots.free },
                    queue: Queue { ready: summary.ready, running: summary.running },
                    scale_log: pool
                        .scale_log
                        .iter()
                        .map(|r| ScaleView { at_ms: r.at_ms, from: r.from, to: r.to, reason: r.reason.clone() })
                        .collect(),
                }
            })
            .collect())
    })
    .await
}

// ----------------------------------------------------------------------- nodes

#[derive(Deserialize)]
struct NodesQuery {
    pool: Option<String>,
}

#[derive(Serialize)]
struct NodeView {
    id: String,
    pool: String,
    hostname: String,
    state: &'static str,
    reason: Option<&'static str>,
    slots: u32,
    slots_used: u32,
    cpus: u32,
    memory_bytes: u64,
    heartbeat_age_ms: Option<u64>,
    cpu_percent: f32,
    memory_used_bytes: u64,
    usage: Vec<UsageView>,
    running: Vec<RunningView>,
}

#[derive(Serialize)]
struct UsageView {
    at_ms: u64,
    cpu_percent: f32,
    memory_used_bytes: u64,
}

#[derive(Serialize)]
struct RunningView {
    job: u64,
    index: u32,
    attempt: u32,
}

fn node_view(core: &Core, node: &Node, now: Instant) -> NodeView {
    let r = &node.record;
    NodeView {
        id: r.id.to_string(),
        pool: r.pool.to_string(),
        hostname: r.hostname.clone(),
        state: node.state().as_str(),
        reason: r.reason.map(|x| x.as_str()),
        slots: r.slots,
        slots_used: node.slots_used,
        cpus: r.cpus,
        memory_bytes: r.memory_bytes,
        heartbeat_age_ms: node
            .status()
            .is_live()
            .then(|| now.saturating_duration_since(node.last_seen).as_millis() as u64),
        cpu_percent: node.cpu_percent,
        memory_used_bytes: node.memory_used_bytes,
        // A node that is gone has no use for its last samples.
        usage: node
            .usage
            .iter()
            .filter(|_| node.status().is_live())
            .map(|u| UsageView { at_ms: u.at_ms, cpu_percent: u.cpu_percent, memory_used_bytes: u.memory_used_bytes })
            .collect(),
        running: node
            .running
            .iter()
            .map(|key| RunningView {
                job: key.job.0,
                index: key.index,
                attempt: core.running.get(key).map_or(0, |a| a.attempt),
            })
            .collect(),
    }
}

async fn nodes(State(shared): State<Arc<Shared>>, Query(q): Query<NodesQuery>) -> Api<Vec<NodeView>> {
    let pool = q.pool.filter(|p| !p.is_empty()).map(|p| PoolName::parse("pool", &p)).transpose()?;
    read(&shared, move |core, now| {
        let mut nodes: Vec<&Node> =
            core.nodes.values().filter(|n| pool.as_ref().is_none_or(|p| n.record.pool == *p)).collect();
        // Live nodes first, then the lost and removed, newest first.
        nodes.sort_by_key(|n| (!n.status().is_live(), std::cmp::Reverse(n.record.registered_at_ms)));
        Ok(nodes.into_iter().map(|n| node_view(core, n, now)).collect())
    })
    .await
}

// ------------------------------------------------------------------------ jobs

#[derive(Deserialize)]
struct PageQuery {
    state: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct JobView {
    id: u64,
    name: String,
    pool: String,
    /// The name of the token that submitted it.
    owner: String,
    priority: i32,
    state: &'static str,
    submitted_at_ms: u64,
    finished_at_ms: Option<u64>,
    tasks: u32,
    counts: crate::core::Counts,
    /// Tasks finished per second since submission.
    throughput_per_s: f64,
    /// Seconds left at that rate, while active.
    eta_s: Option<f64>,
    notify: Option<NotifyView>,
}

#[derive(Serialize)]
struct NotifyView {
    url: String,
    delivered: bool,
    attempts: u32,
    last_error: Option<String>,
    delivered_at_ms: Option<u64>,
}

fn job_view(core: &Core, job: &Job, now: Instant) -> JobView {
    let end = job.finished_at_ms.unwrap_or_else(|| core.wall_ms(now));
    let elapsed_s = end.saturating_sub(job.submitted_at_ms) as f64 / 1000.0;
    let finished = job.counts.finished();
    let throughput = if elapsed_s > 0.0 { f64::from(finished) / elapsed_s } else { 0.0 };
    let left = job.tasks.len() as u32 - finished.min(job.tasks.len() as u32);
    JobView {
        id: job.id.0,
        name: job.spec.name.clone(),
        pool: job.spec.pool.to_string(),
        owner: job.spec.owner.clone(),
        priority: job.spec.priority,
        state: job.state.as_str(),
        submitted_at_ms: job.submitted_at_ms,
        finished_at_ms: job.finished_at_ms,
        tasks: job.tasks.len() as u32,
        counts: job.counts,
        throughput_per_s: (throughput * 10.0).round() / 10.0,
        eta_s: (job.state == JobState::Active && throughput > 0.0).then(|| (f64::from(left) / throughput).round()),
        notify: job.spec.notify.as_ref().map(|url| NotifyView {
            url: url.clone(),
            delivered: job.delivery.delivered_at_ms.is_some(),
            attempts: job.delivery.attempts,
            last_error: job.delivery.last_error.clone(),
            delivered_at_ms: job.delivery.delivered_at_ms,
        }),
    }
}

#[derive(Serialize)]
struct JobsPage {
    total: usize,
    offset: usize,
    jobs: Vec<JobView>,
}

async fn jobs(State(shared): State<Arc<Shared>>, Query(q): Query<PageQuery>) -> Api<JobsPage> {
    let state = q.state.filter(|s| !s.is_empty()).map(|s| s.parse::<JobState>()).transpose();
    let state = state.map_err(|e| Invalid::new("state", e))?;
    let (offset, limit) = (q.offset.unwrap_or(0), page_limit(q.limit)?);
    read(&shared, move |core, now| {
        let matching = || core.jobs.values().rev().filter(|j| state.is_none_or(|s| j.state == s));
        Ok(JobsPage {
            total: matching().count(),
            offset,
            jobs: matching().skip(offset).take(limit).map(|j| job_view(core, j, now)).collect(),
        })
    })
    .await
}

fn job_of(core: &Core, id: u64) -> Result<&Job, Error> {
    core.jobs.get(&JobId(id)).ok_or_else(|| Error::not_found("job", id))
}

async fn job(State(shared): State<Arc<Shared>>, Path(id): Path<u64>) -> Api<JobView> {
    read(&shared, move |core, now| Ok(job_view(core, job_of(core, id)?, now))).await
}

// ----------------------------------------------------------------------- tasks

#[derive(Serialize)]
struct TaskView {
    index: u32,
    name: String,
    state: &'static str,
    attempt: u32,
    failures: u32,
    node_losses: u32,
    reason: Option<String>,
    node: Option<String>,
    started_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptView>>,
}

#[derive(Serialize)]
struct AttemptView {
    attempt: u32,
    node: String,
    started_at_ms: u64,
    ended_at_ms: Option<u64>,
    outcome: Option<String>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    message: String,
}

fn task_view(core: &Core, job: &Job, offset: usize) -> TaskView {
    let index = job.spec.first_index + offset as u32;
    let task = job.tasks[offset];
    let running = core.running.get(&TaskKey { job: job.id, index });
    TaskView {
        index,
        name: job.spec.task_name(index),
        state: task.state.as_str(),
        attempt: task.attempt,
        failures: task.failures,
        node_losses: task.node_losses,
        reason: job.reasons.get(&index).cloned(),
        node: running.map(|r| r.node.to_string()),
        started_at_ms: running.map(|r| r.started_at_ms),
        attempts: None,
    }
}

#[derive(Serialize)]
struct TasksPage {
    total: u32,
    offset: usize,
    tasks: Vec<TaskView>,
}

async fn tasks(State(shared): State<Arc<Shared>>, Path(id): Path<u64>, Query(q): Query<PageQuery>) -> Api<TasksPage> {
    let state = q.state.filter(|s| !s.is_empty()).map(|s| s.parse::<TaskState>()).transpose();
    let state = state.map_err(|e| Invalid::new("state", e))?;
    let (offset, limit) = (q.offset.unwrap_or(0), page_limit(q.limit)?);
    read(&shared, move |core, _| {
        let job = job_of(core, id)?;
        let page: Vec<usize> = match state {
            // Every task: the page is a slice.
            None => (offset.min(job.tasks.len())..offset.saturating_add(limit).min(job.tasks.len())).collect(),
            // One state: a scan of compact in-memory states, a few ms for a million.
            Some(s) => job
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.state == s)
                .skip(offset)
                .take(limit)
                .map(|(i, _)| i)
                .collect(),
        };
        Ok(TasksPage {
            total: state.map_or(job.tasks.len() as u32, |s| job.counts.get(s)),
            offset,
            tasks: page.into_iter().map(|i| task_view(core, job, i)).collect(),
        })
    })
    .await
}

/// The task's place in its job's task list.
fn task_offset(job: &Job, index: u32) -> Result<usize, Error> {
    index.checked_sub(job.spec.first_index).map(|o| o as usize).filter(|&o| o < job.tasks.len()).ok_or_else(|| {
        Error::Invalid(Invalid::new(
            "index",
            format!("job {} has tasks {}..{}, not {index}", job.id, job.spec.first_index, job.spec.last_index),
        ))
    })
}

async fn task(State(shared): State<Arc<Shared>>, Path((id, index)): Path<(u64, u32)>) -> Api<TaskView> {
    let Json(mut view) = read(&shared, move |core, _| {
        let job = job_of(core, id)?;
        Ok(task_view(core, job, task_offset(job, index)?))
    })
    .await?;
    let key = TaskKey { job: JobId(id), index };
    let s = shared.clone();
    let rows = blocking(move || s.reader().attempts(key)).await?;
    view.attempts = Some(
        rows.into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                node: a.node_id,
                started_at_ms: a.started_at_ms,
                ended_at_ms: a.ended_at_ms,
                outcome: a.outcome.map(|o| o.as_str().to_string()),
                exit_code: a.exit_code,
                signal: a.signal,
                message: a.message,
            })
            .collect(),
    );
    Ok(Json(view))
}

#[derive(Deserialize)]
struct LogQuery {
    attempt: Option<u32>,
    stream: Option<String>,
    offset: Option<u64>,
}

#[derive(Serialize)]
struct LogChunkView {
    text: String,
    offset: u64,
    next_offset: u64,
}

/// The most log bytes one read returns.
const MAX_LOG_READ: usize = 256 << 10;

async fn log(
    State(shared): State<Arc<Shared>>,
    Path((id, index)): Path<(u64, u32)>,
    Query(q): Query<LogQuery>,
) -> Api<LogChunkView> {
    let stderr = match q.stream.as_deref() {
        None | Some("stdout") => false,
        Some("stderr") => true,
        Some(other) => return Err(Invalid::new("stream", format!("must be stdout or stderr, not '{other}'")).into()),
    };
    let Json(latest) = read(&shared, move |core, _| {
        let job = job_of(core, id)?;
        Ok(job.tasks[task_offset(job, index)?].attempt)
    })
    .await?;
    let attempt = q.attempt.unwrap_or(latest);
    let offset = q.offset.unwrap_or(0);
    if attempt == 0 || attempt > latest {
        return Ok(Json(LogChunkView { text: String::new(), offset, next_offset: offset }));
    }
    let at = AttemptRef { task: TaskKey { job: JobId(id), index }, attempt };
    let s = shared.clone();
    let data = blocking(move || s.reader().read_log(at, stderr, offset, MAX_LOG_READ)).await?;
    // Cut at the last whole UTF-8 character, so a character split across reads is
    // not mangled: the rest comes with the next read.
    let whole = match std::str::from_utf8(&data) {
        Ok(_) => data.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => data.len(),
    };
    Ok(Json(LogChunkView {
        text: String::from_utf8_lossy(&data[..whole]).into_owned(),
        offset,
        next_offset: offset + whole as u64,
    }))
}

// ---------------------------------------------------------------------- events

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
    job: Option<u64>,
    pool: Option<String>,
}

#[derive(Serialize)]
struct EventsPage {
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

async fn events(State(shared): State<Arc<Shared>>, Query(q): Query<EventsQuery>) -> Api<EventsPage> {
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
async fn stream(
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
