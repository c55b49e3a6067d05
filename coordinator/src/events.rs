//! The event feed: every change of a pool, node, job, task or attempt, numbered.
//!
//! Events are not produced by the core: the store writer derives one from each
//! change it makes durable ([`describe`]) and inserts it in the same transaction.
//! So the feed holds exactly what happened, in the order it became durable, and an
//! event is never seen for a change a crash could take back. Ids are the store's
//! (`crate::store`'s events table): they only grow, with no gaps, so a consumer that
//! resumes after its last id misses nothing and sees nothing twice.
//!
//! The feed keeps the last [`KEEP`] events; older ones are trimmed as new ones come.

use serde::Serialize;

use crate::core::StoreOp;
use crate::model::*;

/// How many events the store keeps (about 100 bytes each on disk).
pub const KEEP: u64 = 1_000_000;

/// What an event is about (the vocabulary's word, spelled once).
pub use corral_types::words::EventKind as Kind;

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: u64,
    pub at_ms: u64,
    pub kind: Kind,
    pub pool: Option<String>,
    pub job: Option<u64>,
    pub task: Option<u32>,
    pub attempt: Option<u32>,
    pub node: Option<String>,
    /// The new state (see the `Event` message in the proto for the words).
    pub state: String,
    /// Why, or what changed, for people.
    pub detail: String,
    /// The name of the token whose request made the change; none for what the
    /// coordinator decided by itself (scheduling, heartbeats, retries).
    pub actor: Option<String>,
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub job: Option<JobId>,
    pub pool: Option<PoolName>,
}

/// The event a change makes, without its id and time; `pool_of` names a job's pool
/// (`None` for a job the store does not have), and its failure is the caller's.
pub fn describe<E>(
    op: &StoreOp,
    mut pool_of: impl FnMut(JobId) -> Result<Option<PoolName>, E>,
) -> Result<Option<Event>, E> {
    let event = |kind, state: &str| Event {
        id: 0,
        at_ms: 0,
        kind,
        pool: None,
        job: None,
        task: None,
        attempt: None,
        node: None,
        state: state.to_string(),
        detail: String::new(),
        actor: None,
    };
    Ok(Some(match op {
        StoreOp::PutPool { spec, deleting, .. } => Event {
            pool: Some(spec.name.to_string()),
            detail: match &spec.autoscale {
                Some(a) => format!(
                    "{} pool, {} node(s) now, autoscale {}..{}",
                    spec.provider.as_str(),
                    spec.target_nodes,
                    a.min,
                    a.max
                ),
                None => format!("{} pool, target {} node(s)", spec.provider.as_str(), spec.target_nodes),
            },
            ..event(Kind::Pool, if *deleting { "deleting" } else { "active" })
        },
        StoreOp::DeletePool(name) => Event { pool: Some(name.to_string()), ..event(Kind::Pool, "deleted") },
        StoreOp::ScaleRecord { pool, record } => Event {
            pool: Some(pool.to_string()),
            detail: format!("{} -> {} node(s): {}", record.from, record.to, record.reason),
            ..event(Kind::Pool, "scaled")
        },
        StoreOp::PutNode(n) => Event {
            pool: Some(n.pool.to_string()),
            node: Some(n.id.0.clone()),
            detail: n.reason.map(|r| r.as_str().to_string()).unwrap_or_default(),
            ..event(Kind::Node, n.status.as_str())
        },
        StoreOp::InsertJob(j) => Event {
            pool: Some(j.spec.pool.to_string()),
            job: Some(j.id.0),
            detail: match &j.spec.schedule {
                Some(run) => format!(
                    "{} submitted with {} task(s) by schedule {} for {}",
                    j.spec.name,
                    j.spec.task_count(),
                    run.schedule,
                    crate::core::cadence::utc(run.slot_ms)
                ),
                None => format!("{} submitted with {} task(s)", j.spec.name, j.spec.task_count()),
            },
            ..event(Kind::Job, j.state.as_str())
        },
        StoreOp::PutSchedule { change: None, .. } => return Ok(None),
        StoreOp::PutSchedule { record, change: Some(change) } => Event {
            pool: Some(record.spec.job.pool.to_string()),
            detail: format!("schedule {}", record.spec.name),
            ..event(Kind::Schedule, change)
        },
        StoreOp::DeleteSchedule(name) => {
            Event { detail: format!("schedule {name}"), ..event(Kind::Schedule, "deleted") }
        }
        StoreOp::InsertScheduleSlot { .. } | StoreOp::PruneScheduleSlots { .. } => return Ok(None),
        StoreOp::PutTemplate(t) => Event {
            pool: Some(t.spec.job.pool.to_string()),
            detail: format!("template {}", t.spec.name),
            ..event(Kind::Template, "created")
        },
        StoreOp::DeleteTemplate(name) => {
            Event { detail: format!("template {name}"), ..event(Kind::Template, "deleted") }
        }
        StoreOp::PutTrigger { change: None, .. } | StoreOp::SeeTriggerObject { .. } => return Ok(None),
        StoreOp::PutTrigger { record, change: Some(change) } => Event {
            detail: format!(
                "trigger {} on '{}' dispatching {}",
                record.spec.name, record.spec.prefix, record.spec.template
            ),
            ..event(Kind::Trigger, change)
        },
        StoreOp::DeleteTrigger(name) => Event { detail: format!("trigger {name}"), ..event(Kind::Trigger, "deleted") },
        StoreOp::SetJobState { id, state, reason, .. } => Event {
            pool: pool_of(*id)?.map(|p| p.to_string()),
            job: Some(id.0),
            detail: reason.clone().unwrap_or_default(),
            ..event(Kind::Job, state.as_str())
        },
        StoreOp::DeleteJob(id) => {
            Event { pool: pool_of(*id)?.map(|p| p.to_string()), job: Some(id.0), ..event(Kind::Job, "deleted") }
        }
        StoreOp::SetDelivery { job, delivery } => Event {
            pool: pool_of(*job)?.map(|p| p.to_string()),
            job: Some(job.0),
            detail: match (&delivery.delivered_at_ms, &delivery.last_error) {
                (Some(_), _) => format!("callback accepted on post {}", delivery.attempts),
                (None, Some(why)) => format!("callback post {} failed: {why}", delivery.attempts),
                (None, None) => String::new(),
            },
            ..event(Kind::Job, if delivery.delivered_at_ms.is_some() { "notified" } else { "notify_failed" })
        },
        StoreOp::SetJobPriority { id, priority } => Event {
            pool: pool_of(*id)?.map(|p| p.to_string()),
            job: Some(id.0),
            detail: format!("priority {priority}"),
            ..event(Kind::Job, "priority_changed")
        },
        StoreOp::ScaleJob { id, policy, .. } => Event {
            pool: pool_of(*id)?.map(|p| p.to_string()),
            job: Some(id.0),
            detail: format!("{} replicas", policy.replicas.unwrap_or(0)),
            ..event(Kind::Job, "scaled")
        },
        StoreOp::CloseJob(id) => {
            Event { pool: pool_of(*id)?.map(|p| p.to_string()), job: Some(id.0), ..event(Kind::Job, "closed") }
        }
        StoreOp::AddTaskGroups { job, last_index, .. } => Event {
            pool: pool_of(*job)?.map(|p| p.to_string()),
            job: Some(job.0),
            detail: format!("tasks up to index {last_index}"),
            ..event(Kind::Job, "tasks_added")
        },
        // A task starts running with its attempt, which names the node: that one
        // event says it all.
        StoreOp::PutTask(t) if t.state == TaskState::Running => return Ok(None),
        StoreOp::PutTask(t) => Event {
            pool: pool_of(t.key.job)?.map(|p| p.to_string()),
            job: Some(t.key.job.0),
            task: Some(t.key.index),
            attempt: Some(t.attempt),
            detail: t.reason.clone().unwrap_or_default(),
            ..event(Kind::Task, t.state.as_str())
        },
        StoreOp::StartAttempt { attempt, node, .. } => Event {
            pool: pool_of(attempt.task.job)?.map(|p| p.to_string()),
            job: Some(attempt.task.job.0),
            task: Some(attempt.task.index),
            attempt: Some(attempt.attempt),
            node: Some(node.0.clone()),
            ..event(Kind::Task, TaskState::Running.as_str())
        },
        StoreOp::EndAttempt { attempt, outcome, exit_code, signal, message, .. } => Event {
            pool: pool_of(attempt.task.job)?.map(|p| p.to_string()),
            job: Some(attempt.task.job.0),
            task: Some(attempt.task.index),
            attempt: Some(attempt.attempt),
            detail: match (exit_code, signal) {
                (Some(code), _) if message.is_empty() => format!("exit code {code}"),
                (Some(code), _) => format!("exit code {code}: {message}"),
                (None, Some(sig)) => format!("signal {sig} {message}").trim_end().to_string(),
                (None, None) => message.clone(),
            },
            ..event(Kind::Attempt, outcome.as_str())
        },
        StoreOp::PutToken(t) => Event {
            pool: t.pool.as_ref().map(|p| p.to_string()),
            detail: format!("token '{}', role {}, by '{}'", t.name, t.role, t.created_by),
            ..event(Kind::Token, "created")
        },
        StoreOp::DeleteToken { name, .. } => {
            Event { detail: format!("token '{name}'"), ..event(Kind::Token, "revoked") }
        }
        StoreOp::ObjectChanged { path, size } => Event {
            detail: match size {
                Some(bytes) => format!("{path} ({bytes} bytes)"),
                None => path.clone(),
            },
            ..event(Kind::Object, if size.is_some() { "put" } else { "deleted" })
        },
        StoreOp::PutNodeCredential(_) | StoreOp::ForgetNodeCredential(_) | StoreOp::Actor(_) => return Ok(None),
        StoreOp::PutSession(_) | StoreOp::DeleteSessions(_) | StoreOp::ForgetAttempt { .. } => return Ok(None),
        StoreOp::Log(_) | StoreOp::PutIdempotencyKey(_) | StoreOp::ExpireIdempotencyKeys { .. } => return Ok(None),
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::TaskRecord;

    pub(crate) fn task(job: u64, index: u32, state: TaskState) -> StoreOp {
        StoreOp::PutTask(TaskRecord {
            key: TaskKey { job: JobId(job), index },
            state,
            attempt: 1,
            failures: 0,
            node_losses: 0,
            reason: None,
        })
    }

    #[test]
    fn a_running_task_is_told_once_by_its_attempt() {
        let pool = |_| Ok::<_, ()>(Some(PoolName::parse("pool", "cpu").unwrap()));
        assert_eq!(describe(&task(1, 0, TaskState::Running), pool), Ok(None));
        let start = StoreOp::StartAttempt {
            attempt: AttemptRef { task: TaskKey { job: JobId(1), index: 0 }, attempt: 1 },
            node: NodeId("n-1".into()),
            members: vec![],
            started_at_ms: 5,
            queued_at_ms: 1,
            gpus: vec![],
        };
        let e = describe(&start, pool).unwrap().unwrap();
        assert_eq!(
            (e.kind, e.state.as_str(), e.node.as_deref(), e.pool.as_deref()),
            (Kind::Task, "running", Some("n-1"), Some("cpu"))
        );
        let done = describe(&task(1, 0, TaskState::Succeeded), pool).unwrap().unwrap();
        // A lookup that fails is the caller's failure, not an event without its pool.
        assert_eq!(
            describe(&task(1, 0, TaskState::Succeeded), |_| Err::<Option<PoolName>, _>("locked")),
            Err("locked")
        );
        assert_eq!((done.task, done.state.as_str()), (Some(0), "succeeded"));
    }
}
