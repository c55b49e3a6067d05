//! `GET /api/jobs[/{id}[/tasks[/{index}[/log]]]]`: jobs, their tasks paged on the
//! server, attempt history and logs.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{blocking, page_limit, read, Api};
use crate::core::{Core, Job};
use crate::error::{Error, Invalid};
use crate::model::*;
use crate::shared::Shared;

#[derive(Deserialize)]
pub(super) struct PageQuery {
    state: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// `GET /api/jobs`: a page, and which jobs (all, or of one pool, schedule or template).
/// (Not a flattened `PageQuery`: flattened, query numbers arrive as strings.)
#[derive(Deserialize)]
pub(super) struct JobsQuery {
    state: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
    pool: Option<String>,
    schedule: Option<String>,
    template: Option<String>,
}

impl JobsQuery {
    fn filter(&self) -> Result<crate::core::views::JobFilter, Invalid> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(crate::core::views::JobFilter {
            states: given(&self.state)
                .map(|s| s.parse::<JobState>())
                .transpose()
                .map_err(|e| Invalid::new("state", e))?
                .into_iter()
                .collect(),
            pool: given(&self.pool).map(|p| PoolName::parse("pool", &p)).transpose()?,
            schedule: given(&self.schedule).map(|s| ScheduleName::parse("schedule", &s)).transpose()?,
            template: given(&self.template).map(|t| TemplateName::parse("template", &t)).transpose()?,
            ..Default::default()
        })
    }
}

#[derive(Serialize)]
pub(super) struct JobView {
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
    /// The schedule that made it, and the slot it was made for.
    schedule: Option<String>,
    /// The template it was dispatched from.
    template: Option<String>,
    scheduled_for_ms: Option<u64>,
    /// No task starts before this (`job submit --begin`).
    begin_at_ms: Option<u64>,
    /// Exit rules, retry delay, throttle (omitted when none was asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<JobPolicy>,
    /// Its pool was made for it (`--auto-pool`) and goes when it ends.
    auto_pool: bool,
}

#[derive(Serialize)]
pub(super) struct NotifyView {
    url: String,
    delivered: bool,
    attempts: u32,
    last_error: Option<String>,
    delivered_at_ms: Option<u64>,
}

fn job_view(core: &Core, job: &Job, now: Instant) -> JobView {
    let progress = core.job_progress(job, now);
    JobView {
        id: job.id.0,
        name: job.spec.name.clone(),
        pool: job.spec.pool.to_string(),
        owner: job.spec.owner.clone(),
        priority: job.spec.priority,
        state: job.state.as_str(),
        submitted_at_ms: job.submitted_at_ms,
        finished_at_ms: job.finished_at_ms,
        tasks: progress.tasks,
        counts: job.counts,
        throughput_per_s: progress.throughput_per_s,
        eta_s: progress.eta_s,
        notify: job.spec.notify.as_ref().map(|url| NotifyView {
            url: url.clone(),
            delivered: job.delivery.delivered_at_ms.is_some(),
            attempts: job.delivery.attempts,
            last_error: job.delivery.last_error.clone(),
            delivered_at_ms: job.delivery.delivered_at_ms,
        }),
        schedule: job.spec.schedule.as_ref().map(|r| r.schedule.to_string()),
        template: job.spec.template.as_ref().map(|t| t.to_string()),
        scheduled_for_ms: job.spec.schedule.as_ref().map(|r| r.slot_ms),
        begin_at_ms: job.spec.begin_at_ms,
        policy: (!job.spec.policy.is_default()).then(|| job.spec.policy.clone()),
        auto_pool: job.spec.auto_pool.is_some(),
    }
}

#[derive(Serialize)]
pub(super) struct JobsPage {
    total: usize,
    offset: usize,
    jobs: Vec<JobView>,
}

pub(super) async fn jobs(State(shared): State<Arc<Shared>>, Query(q): Query<JobsQuery>) -> Api<JobsPage> {
    let filter = q.filter()?;
    let (offset, limit) = (q.offset.unwrap_or(0), page_limit(q.limit)?);
    read(&shared, move |core, now| {
        let matching = || core.jobs.values().rev().filter(|j| filter.matches(j));
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

pub(super) async fn job(State(shared): State<Arc<Shared>>, Path(id): Path<u64>) -> Api<JobView> {
    read(&shared, move |core, now| Ok(job_view(core, job_of(core, id)?, now))).await
}

// ----------------------------------------------------------------------- tasks

#[derive(Serialize)]
pub(super) struct TaskView {
    index: u32,
    name: String,
    state: &'static str,
    /// The state it is in, for the shell's own decisions (`state` is what users read).
    #[serde(skip)]
    task_state: TaskState,
    attempt: u32,
    failures: u32,
    node_losses: u32,
    reason: Option<String>,
    /// A failed task's last attempt: how it ended (in task lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// A continuous job's replica: how and when its last ended attempt ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_exit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_ended_at_ms: Option<u64>,
    node: Option<String>,
    started_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptView>>,
}

#[derive(Serialize)]
pub(super) struct AttemptView {
    attempt: u32,
    node: String,
    started_at_ms: u64,
    ended_at_ms: Option<u64>,
    outcome: Option<String>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    message: String,
    /// A multi-node task's other ranks' nodes, rank 1 first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    members: Vec<String>,
}

fn task_view(core: &Core, job: &Job, offset: usize) -> Option<TaskView> {
    let t = core.task_summary(job, job.spec.index_at(offset)?)?;
    Some(TaskView {
        index: t.key.index,
        name: t.name,
        state: if t.assigned { "assigned" } else { t.state.as_str() },
        task_state: t.state,
        attempt: t.attempts,
        failures: t.failures,
        node_losses: t.node_losses,
        reason: t.reason,
        last_error: None,
        last_exit: None,
        last_ended_at_ms: None,
        node: t.node.map(|n| n.to_string()),
        started_at_ms: t.started_at_ms,
        attempts: None,
    })
}

#[derive(Serialize)]
pub(super) struct TasksPage {
    total: u32,
    offset: usize,
    tasks: Vec<TaskView>,
    /// Of a continuous job: each replica's last exit is added.
    #[serde(skip)]
    continuous: bool,
}

pub(super) async fn tasks(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Query(q): Query<PageQuery>,
) -> Api<TasksPage> {
    let state = q.state.filter(|s| !s.is_empty()).map(|s| s.parse::<TaskState>()).transpose();
    let state = state.map_err(|e| Invalid::new("state", e))?;
    let (offset, limit) = (q.offset.unwrap_or(0), page_limit(q.limit)?);
    let mut page = read(&shared, move |core, _| {
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
            tasks: page.into_iter().filter_map(|i| task_view(core, job, i)).collect(),
            continuous: job.spec.policy.replicas.is_some(),
        })
    })
    .await?
    .0;
    // A finished task says where and when its last attempt ran, and a failed one
    // how it ended (the dead-letter view).
    let key = |t: &TaskView| TaskKey { job: JobId(id), index: t.index };
    let finished: Vec<_> = page.tasks.iter().map(|t| (key(t), t.task_state, t.attempt)).collect();
    let last = crate::app::tasks::last_attempts(&shared, finished).await?;
    for t in &mut page.tasks {
        if let Some(last) = last.get(&AttemptRef { task: key(t), attempt: t.attempt }) {
            (t.node, t.started_at_ms) = (Some(last.node_id.clone()), Some(last.started_at_ms));
            if t.task_state == TaskState::Failed {
                t.last_error = Some(last.said.clone());
            }
        }
    }
    if page.continuous {
        let replicas: Vec<_> = page.tasks.iter().map(|t| (key(t), t.task_state, t.attempt)).collect();
        let exits = crate::app::tasks::replica_exits(&shared, replicas).await?;
        for t in &mut page.tasks {
            if let Some(e) = exits.get(&key(t)) {
                (t.last_exit, t.last_ended_at_ms) = (Some(e.said.clone()), Some(e.ended_at_ms));
            }
        }
    }
    Ok(Json(page))
}

/// The task's place in its job's task list.
fn task_offset(job: &Job, index: u32) -> Result<usize, Error> {
    job.spec.offset_of(index).filter(|&o| o < job.tasks.len()).ok_or_else(|| {
        Error::from(Invalid::new("index", format!("job {} has tasks {}, not {index}", job.id, job.spec.indices_text())))
    })
}

pub(super) async fn task(State(shared): State<Arc<Shared>>, Path((id, index)): Path<(u64, u32)>) -> Api<TaskView> {
    let Json(mut view) = read(&shared, move |core, _| {
        let job = job_of(core, id)?;
        task_view(core, job, task_offset(job, index)?).ok_or_else(|| Error::not_found("task", index))
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
                members: a.members,
            })
            .collect(),
    );
    Ok(Json(view))
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    attempt: Option<u32>,
    /// A multi-node task's rank (0, the task's own output, if absent).
    rank: Option<u32>,
    stream: Option<String>,
    offset: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct LogChunkView {
    text: String,
    offset: u64,
    next_offset: u64,
}

/// The most log bytes one read returns.
const MAX_LOG_READ: usize = 256 << 10;

pub(super) async fn log(
    State(shared): State<Arc<Shared>>,
    Path((id, index)): Path<(u64, u32)>,
    Query(q): Query<LogQuery>,
) -> Api<LogChunkView> {
    let stderr = match q.stream.as_deref() {
        None | Some("stdout") => false,
        Some("stderr") => true,
        Some(other) => return Err(Invalid::new("stream", format!("must be stdout or stderr, not '{other}'")).into()),
    };
    let rank = q.rank.unwrap_or(0);
    let Json(latest) = read(&shared, move |core, _| {
        let job = job_of(core, id)?;
        let at = task_offset(job, index)?;
        let nodes = job.spec.task_spec(index).nodes.max(1);
        if rank >= nodes {
            return Err(Invalid::new("rank", format!("the task runs on {nodes} node(s): ranks below {nodes}")).into());
        }
        Ok(job.tasks[at].attempt)
    })
    .await?;
    let attempt = q.attempt.unwrap_or(latest);
    let offset = q.offset.unwrap_or(0);
    if attempt == 0 || attempt > latest {
        return Ok(Json(LogChunkView { text: String::new(), offset, next_offset: offset }));
    }
    let at = AttemptRef { task: TaskKey { job: JobId(id), index }, attempt };
    let s = shared.clone();
    let data = blocking(move || s.reader().read_log(at, rank, stderr, offset, MAX_LOG_READ)).await?;
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
