//! What follows a failure: the job's exit rules, its retry delay, failing the whole
//! job, and putting finished tasks back in the queue (`job retry`).

use std::time::{Duration, Instant};

use super::*;
use crate::error::{Error, Result};
use crate::transitions::expected;

/// Which finished tasks of a job `job retry` puts back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetrySelection {
    pub failed: bool,
    pub cancelled: bool,
    /// Indices of tasks named one by one (any finished state).
    pub tasks: Vec<u32>,
}

impl Core {
    /// Counts a failure and does what the job's first matching exit rule says;
    /// without one, retries after a backoff while retries are left, else fails the
    /// task. `exit` is how the attempt ended (none: it never started).
    pub(super) fn on_attempt_failed(&mut self, now: Instant, key: TaskKey, exit: Option<Exit>, out: &mut Outbox) {
        let Some(job) = self.jobs.get_mut(&key.job) else { return };
        let max_retries = job.spec.task_spec(key.index).max_retries;
        let action = exit.and_then(|e| job.spec.policy.action_for(e));
        let Some(task) = job.task_mut(key.index) else { return };
        task.failures += 1;
        let failures = task.failures;
        let said = |what: &str| match exit {
            Some(Exit::Code(c)) => format!("exit code {c}: {what} (exit policy)"),
            Some(Exit::Signal(s)) => format!("killed by signal {s}: {what} (exit policy)"),
            _ => format!("timed out: {what} (exit policy)"),
        };
        match action {
            Some(ExitAction::Succeed) => {
                job.reasons.insert(key.index, said("counted as success"));
                expected(self.set_task_state(key, TaskState::Succeeded));
                self.put_task(key, out);
                self.release_downstream(key, now);
                self.maybe_finish_job(now, key.job, out);
            }
            Some(ExitAction::Fail) => {
                job.reasons.insert(key.index, said("failed without retrying"));
                self.fail_task(now, key, out);
            }
            Some(ExitAction::FailJob) => {
                let why = said("the job fails");
                job.reasons.insert(key.index, why.clone());
                let name = job.spec.task_name(key.index);
                job.reason = Some(format!("task {name}: {why}"));
                self.fail_task(now, key, out);
                self.stop_job(now, key.job, JobState::Failed, &format!("job failed: task {name}: {why}"), out);
            }
            Some(ExitAction::Retry) | None if failures > max_retries => self.fail_task(now, key, out),
            Some(ExitAction::Retry) | None => {
                expected(self.set_task_state(key, TaskState::Ready));
                let delay = self.retry_delay(&self.jobs[&key.job].spec.policy, failures);
                self.delayed.insert((now + delay, key));
                self.put_task(key, out);
            }
        }
    }

    /// The delay before retry number `failures`: the job's first delay (or the
    /// coordinator's `retry_backoff`), doubled for each earlier failure, capped by
    /// the job's cap (or `retry_backoff_max`, five minutes for a continuous job's
    /// replicas, or the first delay if that is longer).
    pub fn retry_delay(&self, policy: &JobPolicy, failures: u32) -> Duration {
        let first = policy.retry_delay.unwrap_or(self.config.retry_backoff);
        let default_cap = match policy.replicas {
            Some(_) => corral_types::policy::REPLICA_DELAY_MAX,
            None => self.config.retry_backoff_max,
        };
        let cap = policy.retry_delay_max.unwrap_or(default_cap.max(first));
        let doublings = failures.saturating_sub(1).min(16);
        first.saturating_mul(2u32.pow(doublings)).min(cap)
    }

    /// Puts the selected finished tasks of a job back in the queue, each with its
    /// retries renewed and its attempts kept (the next one is numbered on). In a
    /// graph, what was cancelled only because they failed waits for them again.
    /// A finished job becomes active again. Returns how many tasks went back.
    pub fn retry_job(&mut self, now: Instant, id: JobId, selection: &RetrySelection, out: &mut Outbox) -> Result<u32> {
        let job = self.jobs.get(&id).ok_or_else(|| Error::not_found("job", id))?;
        if job.spec.auto_pool.is_some() && job.state != JobState::Active {
            return Err(Error::Refused(format!(
                "job {id} ran on its own pool (--auto-pool), which went when it ended; submit it again"
            )));
        }
        let pool = self.pools.get(&job.spec.pool).ok_or(Error::NotFound {
            what: "pool",
            id: job.spec.pool.to_string(),
            hint: "; the job's pool is gone: submit the job again on another pool",
        })?;
        super::pools::refuse_if_deleting(pool)?;
        if job.state != JobState::Active {
            // Reopened, it waits for its --after jobs as a new one would.
            self.check_after(&job.spec)?;
            // A schedule's run may not overlap the one that has started since.
            if let Some(run) = job.spec.schedule.as_ref() {
                if let Some(other) = self.schedules.get(&run.schedule).and_then(|s| s.active.iter().next()) {
                    return Err(Error::Refused(format!(
                        "schedule '{}' has run job {other} active; retry job {id} once it has ended",
                        run.schedule
                    )));
                }
            }
        }
        let mut chosen: BTreeSet<u32> = BTreeSet::new();
        let everything = !selection.failed && !selection.cancelled && selection.tasks.is_empty();
        for (index, task) in job.spec.indices().zip(&job.tasks) {
            let pick = match task.state {
                TaskState::Failed => selection.failed || everything,
                TaskState::Cancelled => selection.cancelled,
                _ => false,
            };
            if pick {
                chosen.insert(index);
            }
        }
        for &index in &selection.tasks {
            let task = job.task(index).ok_or_else(|| Error::not_found("task", format!("{id}/{index}")))?;
            if !task.state.is_final() {
                return Err(Error::Refused(format!(
                    "task {} of job {id} is {}; only finished tasks are retried",
                    job.spec.task_name(index),
                    task.state
                )));
            }
            chosen.insert(index);
        }
        // What was cancelled because something upstream failed comes back when
        // nothing upstream of it stays failed or cancelled.
        if let Some(graph) = job.spec.graph.clone() {
            let gone = |t: &Task| matches!(t.state, TaskState::Failed | TaskState::Cancelled);
            loop {
                let mut more = Vec::new();
                for (i, task) in job.tasks.iter().enumerate() {
                    let index = i as u32;
                    let doomed = job.reasons.get(&index).is_some_and(|r| r.starts_with("upstream_failed"));
                    if chosen.contains(&index) || task.state != TaskState::Cancelled || !doomed {
                        continue;
                    }
                    let clear = graph.upstream[i].iter().all(|&u| chosen.contains(&u) || !gone(&job.tasks[u as usize]));
                    if clear {
                        more.push(index);
                    }
                }
                if more.is_empty() {
                    break;
                }
                chosen.extend(more);
            }
        }
        if chosen.is_empty() {
            return Err(Error::Refused(format!("job {id} has no task to retry in that selection")));
        }
        // A task that would wait for one that stays failed could never run.
        if let Some(graph) = job.spec.graph.as_deref() {
            for &index in &chosen {
                let stuck = graph.upstream[index as usize].iter().find(|&&u| {
                    !chosen.contains(&u)
                        && matches!(job.tasks[u as usize].state, TaskState::Failed | TaskState::Cancelled)
                });
                if let Some(&u) = stuck {
                    return Err(Error::Refused(format!(
                        "task {} waits for {}, which stays {}: retry that one too (--task '{}', or --failed/--cancelled)",
                        graph.name(index),
                        graph.name(u),
                        job.tasks[u as usize].state,
                        graph.name(u)
                    )));
                }
            }
        }
        let reopened = job.state != JobState::Active;
        self.refuse_beyond_queue_limit(chosen.len() as u64)?;
        let at_ms = self.wall_ms(now);
        let Some(job) = self.jobs.get_mut(&id) else { return Ok(0) };
        for &index in &chosen {
            job.reasons.remove(&index);
            if let Some(task) = job.task_mut(index) {
                task.failures = 0;
                task.node_losses = 0;
            }
            // Waiting if anything upstream has not succeeded; `settle_graph` below
            // recounts what each task waits for.
            let upstream_pending = job.spec.graph.as_ref().is_some_and(|g| {
                g.upstream[index as usize].iter().any(|&u| job.tasks[u as usize].state != TaskState::Succeeded)
            });
            let next = if upstream_pending { TaskState::Waiting } else { TaskState::Ready };
            // Only finished tasks are chosen, and a finished task may be reopened.
            if expected(job.move_task(index, next)) && next == TaskState::Ready {
                job.queue(index, at_ms);
            }
        }
        job.settle_graph(|index| chosen.contains(&index));
        if reopened {
            job.state = JobState::Active;
            job.finished_at_ms = None;
            job.delivery = Delivery::default();
            job.reason = None;
            out.store.push(StoreOp::SetJobState { id, state: JobState::Active, finished_at_ms: None, reason: None });
            out.store.push(StoreOp::SetDelivery { job: id, delivery: Delivery::default() });
        }
        let key = job.priority_key();
        // Every task's row, so that a restart sees exactly this: an active job's
        // tasks without rows would come back queued.
        let rows: Vec<u32> = job
            .spec
            .indices()
            .filter(|i| {
                chosen.contains(i) || (reopened && job.task(*i).is_some_and(|t| t.state == TaskState::Cancelled))
            })
            .collect();
        let schedule = job.spec.schedule.as_ref().map(|s| s.schedule.clone());
        let pool = job.spec.pool.clone();
        for index in rows {
            self.put_task(TaskKey { job: id, index }, out);
        }
        if reopened {
            if let Some(pool) = self.pools.get_mut(&pool) {
                pool.jobs.insert(key);
            }
            if let Some(s) = schedule.and_then(|name| self.schedules.get_mut(&name)) {
                s.active.insert(id);
            }
            self.hold_for_after(id);
        }
        tracing::info!(job_id = %id, tasks = chosen.len(), "tasks put back in the queue");
        Ok(chosen.len() as u32)
    }
}
