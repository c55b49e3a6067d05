//! Tasks and their logs: `ListTasks`, `GetTask`, `ReadLog`.

use corral_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{job_of, ClientApi, MAX_TASKS_PER_PAGE};
use crate::convert;
use crate::core::Core;
use crate::error::{Error, Invalid};
use crate::model::*;

pub(super) async fn list_tasks(
    api: &ClientApi,
    req: Request<pb::ListTasksRequest>,
) -> Result<Response<pb::ListTasksResponse>, Status> {
    let req = req.into_inner();
    let state = match pb::TaskState::try_from(req.state) {
        Ok(state) => state.word(),
        Err(_) => return Err(Invalid::new("state", format!("{} is not a task state", req.state)).into()),
    };
    let limit = if req.limit == 0 { MAX_TASKS_PER_PAGE } else { req.limit.min(MAX_TASKS_PER_PAGE) };
    let resp = api
        .shared
        .runtime
        .call(move |core, _, _| {
            if req.job_id == 0 {
                return running_everywhere(core, state, req.offset, limit).map(|r| (r, false));
            }
            let job = job_of(core, req.job_id)?;
            let continuous = job.spec.policy.replicas.is_some();
            let matching = job.spec.indices().zip(&job.tasks).filter(|(_, t)| state.is_none_or(|s| t.state == s));
            let total = match state {
                Some(s) => job.counts.get(s),
                None => job.tasks.len() as u32,
            };
            let tasks = matching
                .skip(req.offset as usize)
                .take(limit as usize)
                .filter_map(|(index, _)| core.task_summary(job, index))
                .map(|t| convert::task_pb(&t))
                .collect();
            Ok::<_, Error>((pb::ListTasksResponse { tasks, total }, continuous))
        })
        .await??;
    let (resp, continuous) = resp;
    // A finished task says where and when its last attempt ran, and a failed one
    // how it ended (the dead-letter view).
    let mut resp = resp;
    let finished = resp.tasks.iter().filter_map(|t| {
        let key = TaskKey { job: JobId(t.job_id), index: t.index };
        t.state().word().map(|state| (key, state, t.attempts_count))
    });
    let last = crate::app::tasks::last_attempts(&api.shared, finished.collect::<Vec<_>>()).await?;
    for t in &mut resp.tasks {
        let attempt = AttemptRef { task: TaskKey { job: JobId(t.job_id), index: t.index }, attempt: t.attempts_count };
        if let Some(last) = last.get(&attempt) {
            (t.node_id, t.started_at_ms) = (last.node_id.clone(), last.started_at_ms);
            if t.state() == pb::TaskState::Failed {
                t.last_error = last.said.clone();
            }
        }
    }
    if continuous {
        let key = |t: &pb::Task| TaskKey { job: JobId(t.job_id), index: t.index };
        let replicas = resp.tasks.iter().filter_map(|t| t.state().word().map(|s| (key(t), s, t.attempts_count)));
        let exits = crate::app::tasks::replica_exits(&api.shared, replicas.collect::<Vec<_>>()).await?;
        for t in &mut resp.tasks {
            if let Some(e) = exits.get(&key(t)) {
                (t.last_exit, t.last_ended_at_ms) = (e.said.clone(), e.ended_at_ms);
            }
        }
    }
    Ok(Response::new(resp))
}

pub(super) async fn get_task(api: &ClientApi, req: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
    let req = req.into_inner();
    let mut task = api
        .shared
        .runtime
        .call(move |core, _, _| task_view(core, task_key(core, req.job_id, req.index, &req.name)?))
        .await??;
    let key = TaskKey { job: JobId(task.job_id), index: task.index };
    let shared = api.shared.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let mut reader = shared.reader();
        reader.attempts(key)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))??;
    task.attempts = rows
        .into_iter()
        .map(|a| pb::Attempt {
            attempt: a.attempt,
            node_id: a.node_id,
            started_at_ms: a.started_at_ms,
            ended_at_ms: a.ended_at_ms.unwrap_or(0),
            outcome: a.outcome.map_or(0, pb::Outcome::of),
            has_exit_code: a.exit_code.is_some(),
            exit_code: a.exit_code.unwrap_or(0),
            signal: a.signal.unwrap_or(0),
            message: a.message,
            members: a.members,
        })
        .collect();
    Ok(Response::new(task))
}

/// Every job's running tasks, by job and index (`task list --running`, squeue's
/// view); job 0 names no job otherwise.
fn running_everywhere(
    core: &Core,
    state: Option<crate::model::TaskState>,
    offset: u32,
    limit: u32,
) -> Result<pb::ListTasksResponse, Error> {
    if state != Some(crate::model::TaskState::Running) {
        return Err(Error::from(Invalid::new(
            "job_id",
            "give a job; only running tasks are listed across every job (job_id 0 with state running)",
        )));
    }
    let mut keys: Vec<&TaskKey> = core.running.keys().collect();
    keys.sort();
    let tasks = keys
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .filter_map(|key| core.task_summary(core.jobs.get(&key.job)?, key.index))
        .map(|t| convert::task_pb(&t))
        .collect();
    Ok(pb::ListTasksResponse { tasks, total: keys.len() as u32 })
}

pub(super) async fn cancel_task(
    api: &ClientApi,
    req: Request<pb::GetTaskRequest>,
) -> Result<Response<pb::Task>, Status> {
    let who = crate::auth::caller(&req)?;
    let req = req.into_inner();
    let task = api
        .shared
        .runtime
        .call_by(who.clone(), move |core, now, out| {
            super::may_change(core, &who, req.job_id)?;
            let key = task_key(core, req.job_id, req.index, &req.name)?;
            core.cancel_task(now, key, out)?;
            task_view(core, key)
        })
        .await??;
    Ok(Response::new(task))
}

pub(super) async fn explain_task(
    api: &ClientApi,
    req: Request<pb::GetTaskRequest>,
) -> Result<Response<pb::TaskExplanation>, Status> {
    let req = req.into_inner();
    let explained = api
        .shared
        .runtime
        .call(move |core, now, _| {
            let key = task_key(core, req.job_id, req.index, &req.name)?;
            let task = task_view(core, key)?;
            Ok::<_, Error>(pb::TaskExplanation { reasons: core.explain_task(now, key)?, task: Some(task) })
        })
        .await??;
    Ok(Response::new(explained))
}

pub(super) async fn read_log(
    api: &ClientApi,
    req: Request<pb::ReadLogRequest>,
) -> Result<Response<pb::ReadLogResponse>, Status> {
    let req = req.into_inner();
    let wanted = req.attempt;
    let name = req.name.clone();
    let (key, attempt, running) = api
        .shared
        .runtime
        .call(move |core, _, _| {
            let key = task_key(core, req.job_id, req.index, &name)?;
            let view = task_view(core, key)?;
            let nodes = job_of(core, key.job.0)?.spec.task_spec(key.index).nodes.max(1);
            if req.rank >= nodes {
                let ranks = if nodes == 1 { "rank 0 only".into() } else { format!("ranks 0 to {}", nodes - 1) };
                return Err(Error::from(Invalid::new("rank", format!("task {key} runs on {nodes} node(s): {ranks}"))));
            }
            let attempt = if wanted == 0 { view.attempts_count } else { wanted };
            if attempt > view.attempts_count {
                return Err(Error::from(Invalid::new(
                    "attempt",
                    format!("task {key} has had {} attempt(s)", view.attempts_count),
                )));
            }
            let running = core.running.get(&key).is_some_and(|r| r.attempt == attempt);
            Ok((key, attempt, running))
        })
        .await??;
    if attempt == 0 {
        // Never started: nothing was written, and nothing is being written yet.
        return Ok(Response::new(pb::ReadLogResponse::default()));
    }
    let max = match req.max_bytes {
        0 => 1 << 20,
        n => n.min(8 << 20),
    } as usize;
    let shared = api.shared.clone();
    let (data, order) = tokio::task::spawn_blocking(move || {
        let mut reader = shared.reader();
        let attempt = AttemptRef { task: key, attempt };
        let data = reader.read_log(attempt, req.rank, req.stderr, req.offset, max)?;
        // (Only the task's own output has its order recorded.)
        let order = match req.order && !running && req.rank == 0 {
            true => reader.output_order(attempt)?.map(|o| o.lengths().to_vec()).unwrap_or_default(),
            false => Vec::new(),
        };
        Ok::<_, Error>((data, order))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))??;
    let next_offset = req.offset + data.len() as u64;
    let complete = !running && data.is_empty();
    Ok(Response::new(pb::ReadLogResponse { complete, data, next_offset, attempt, order, ended: !running }))
}

/// The task a request names: by `name` when given, else by `index`.
pub(super) fn task_key(core: &Core, job_id: u64, index: u32, name: &str) -> Result<TaskKey, Error> {
    let job = job_of(core, job_id)?;
    if name.is_empty() {
        return Ok(TaskKey { job: job.id, index });
    }
    let by_index = || name.parse().ok().filter(|i| job.task(*i).is_some());
    let found = match &job.spec.graph {
        Some(graph) => graph.find(name).or_else(by_index),
        None => by_index(),
    };
    let index = found.ok_or_else(|| {
        Error::from(Invalid::new("task", format!("job {job_id} has no task '{}'", crate::error::shown(name))))
    })?;
    Ok(TaskKey { job: job.id, index })
}

fn task_view(core: &Core, key: TaskKey) -> Result<pb::Task, Error> {
    let job = job_of(core, key.job.0)?;
    let task = core.task_summary(job, key.index).ok_or_else(|| {
        Error::from(Invalid::new(
            "task",
            format!("job {} has tasks {}, not {}", key.job, job.spec.indices_text(), key.index),
        ))
    })?;
    Ok(convert::task_pb(&task))
}
