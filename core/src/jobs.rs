//! Jobs and task outcomes: submit, cancel, results from agents, retries.

use std::time::{Duration, Instant};

use super::*;
use crate::error::{Error, Result};
use crate::transitions::expected;
use corral_types::paths;

impl Core {
    /// Accepts a job; its tasks are queued at once. The id is final only once the
    /// outbox's store rows are durable.
    pub fn submit_job(&mut self, now: Instant, mut spec: JobSpec, out: &mut Outbox) -> Result<JobId> {
        if spec.name.trim().is_empty() {
            spec.name = default_name(&spec.task.argv);
        }
        self.check_after(&spec)?;
        self.refuse_beyond_queue_limit(u64::from(spec.task_count()))?;
        // Its own pool first, in the same batch: both are durable, or neither. All
        // that could refuse the job on a new pool is checked before it is made.
        self.check_runnable(&spec)?;
        if let Some(auto) = spec.auto_pool.take() {
            // job-<id>, or job-<id>-2... if someone took that name for a pool of theirs.
            let base = format!("job-{}", self.next_job);
            let free = (1..).map(|k| if k == 1 { base.clone() } else { format!("{base}-{k}") });
            let name = free
                .map(|n| PoolName::parse("pool", &n))
                .find(|n| n.as_ref().map_or(true, |n| !self.pools.contains_key(n)))
                .unwrap_or_else(|| PoolName::parse("pool", &base))?;
            let auto = PoolSpec { name: name.clone(), ..*auto };
            self.create_pool(now, auto.clone(), out)?;
            spec.pool = name;
            spec.auto_pool = Some(Box::new(auto));
        }
        self.check_submittable(&spec)?;
        let id = JobId(self.next_job);
        self.next_job += 1;
        let submitted_at_ms = self.wall_ms(now);
        out.store.push(StoreOp::InsertJob(JobRecord {
            id,
            spec: spec.clone(),
            state: JobState::Active,
            submitted_at_ms,
            finished_at_ms: None,
            delivery: Delivery::default(),
            reason: None,
        }));
        let mut job = new_job(id, spec, submitted_at_ms, TaskState::Ready);
        job.settle_graph(|_| true);
        if let Some(pool) = self.pools.get_mut(&job.spec.pool) {
            pool.jobs.insert(job.priority_key());
        }
        self.jobs.insert(id, job);
        self.hold_for_after(id);
        Ok(id)
    }

    /// Cancels every unfinished task of a job and kills the running ones.
    pub fn cancel_job(&mut self, now: Instant, id: JobId, out: &mut Outbox) -> Result<()> {
        self.jobs.get(&id).ok_or_else(|| Error::not_found("job", id))?;
        self.stop_job(now, id, JobState::Cancelled, "job cancelled", out);
        Ok(())
    }

    /// Cancels one task (`scancel 12_7`): a queued, delayed or waiting one is
    /// dropped, a running one killed; in a graph what depends on it is cancelled
    /// too, and the job ends once nothing is left. False for a task that had
    /// finished already (it is left as it is).
    pub fn cancel_task(&mut self, now: Instant, key: TaskKey, out: &mut Outbox) -> Result<bool> {
        let job = self.jobs.get(&key.job).ok_or_else(|| Error::not_found("job", key.job))?;
        let state = job.task(key.index).map(|t| t.state).ok_or_else(|| Error::not_found("task", key))?;
        match state {
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled => return Ok(false),
            TaskState::Running => {
                self.kill_attempt(now, key, "task cancelled", out);
            }
            TaskState::Ready | TaskState::Waiting => {
                let delayed: Vec<(Instant, TaskKey)> =
                    self.delayed.iter().filter(|(_, k)| *k == key).copied().collect();
                for entry in delayed {
                    self.delayed.remove(&entry);
                }
            }
        }
        // Ended meanwhile: nothing to cancel.
        if self.set_task_state(key, TaskState::Cancelled).is_err() {
            return Ok(false);
        }
        if let Some(job) = self.jobs.get_mut(&key.job) {
            job.reasons.insert(key.index, "task cancelled".into());
        }
        self.put_task(key, out);
        self.cancel_downstream(key, out);
        self.maybe_finish_job(now, key.job, out);
        Ok(true)
    }

    /// Ends an active job as `state`: its unfinished tasks are cancelled (the
    /// running ones killed, their attempts ended with `why`).
    pub(super) fn stop_job(&mut self, now: Instant, id: JobId, state: JobState, why: &str, out: &mut Outbox) {
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if job.state != JobState::Active {
            return;
        }
        // Queued tasks need no row each: a finished job's unrecorded tasks are
        // restored as cancelled. This keeps cancelling a million tasks cheap.
        let queued: Vec<u32> = job.ready.iter().copied().collect();
        for index in queued {
            expected(self.set_task_state(TaskKey { job: id, index }, TaskState::Cancelled));
        }
        let delayed: Vec<(Instant, TaskKey)> = self.delayed.iter().filter(|(_, k)| k.job == id).copied().collect();
        for entry in delayed {
            self.delayed.remove(&entry);
            expected(self.set_task_state(entry.1, TaskState::Cancelled));
            self.put_task(entry.1, out);
        }
        let running: Vec<TaskKey> = self.running.keys().filter(|k| k.job == id).copied().collect();
        for key in running {
            if self.kill_attempt(now, key, why, out) {
                expected(self.set_task_state(key, TaskState::Cancelled));
                self.put_task(key, out);
            }
        }
        // Graph tasks waiting for others, likewise without rows.
        if let Some(job) = self.jobs.get(&id) {
            let waiting: Vec<u32> = job
                .tasks
                .iter()
                .zip(job.spec.indices())
                .filter(|(t, _)| t.state == TaskState::Waiting)
                .map(|(_, index)| index)
                .collect();
            for index in waiting {
                expected(self.set_task_state(TaskKey { job: id, index }, TaskState::Cancelled));
            }
        }
        self.finish_job(now, id, state, out);
    }

    /// Results reported by a node. Only the current attempt of a task, on the node it
    /// was assigned to, counts; every result is acknowledged so the agent can forget
    /// it, and a stale one changes nothing.
    pub fn on_task_results(&mut self, now: Instant, node: &NodeId, results: Vec<TaskResult>, out: &mut Outbox) {
        for mut result in results {
            let attempt = result.attempt;
            let run = self.running.get(&attempt.task).filter(|r| r.attempt == attempt.attempt);
            let current = run.is_some_and(|r| &r.node == node);
            // A multi-node task's other ranks: one that fails fails the attempt;
            // one that ended well leaves it to the primary.
            let rank = run.and_then(|r| r.members.iter().position(|m| m == node)).map(|i| i + 1);
            out.agents.push((node.clone(), ToAgent::Ack(attempt)));
            match rank {
                Some(_) if result.outcome == Outcome::Succeeded => continue,
                Some(rank) => {
                    self.mark_truncated(attempt, rank as u32, result.written, out);
                    let outcome = if result.outcome == Outcome::Cancelled { Outcome::Failed } else { result.outcome };
                    result = TaskResult {
                        outcome,
                        message: format!("rank {rank} (node {node}) ended: {}", result.message),
                        written: [0, 0],
                        order: Default::default(),
                        ..result
                    };
                }
                None if !current => {
                    // A rank's own output cut at `--max-output` ends with the marker
                    // once its rank's result says how much it wrote.
                    if let Some(rank) = self.ended_on.rank_on(&attempt, node).filter(|r| *r > 0) {
                        self.mark_truncated(attempt, rank, result.written, out);
                        continue;
                    }
                    tracing::info!(task = %attempt.task, attempt = attempt.attempt, node_id = %node, "ignoring a late result: that attempt no longer owns the task");
                    continue;
                }
                None => {}
            }
            // MPI notices a member's death (its daemon's connection drops) about
            // as soon as the coordinator does: a primary that fails while a
            // member's agent is gone, or goes within a heartbeat timeout, ended
            // by the node's loss, not by its own fault.
            let gang_failed =
                run.is_some_and(|r| !r.members.is_empty()) && rank.is_none() && result.outcome.counts_against_retries();
            if gang_failed {
                let gone = run
                    .and_then(|r| r.members.iter().find(|m| !self.nodes.get(*m).is_some_and(|n| n.connected)).cloned());
                if let Some(gone) = gone {
                    self.gang_failures.remove(&attempt.task);
                    let why = format!("node {gone} of this multi-node task went away while it ran; {}", result.message);
                    self.end_attempt_lost(now, attempt.task, &why, true, out);
                    continue;
                }
                let due = self.gang_failures.get(&attempt.task).is_some_and(|(at, _, _)| *at <= now);
                if !due {
                    let at = now + self.config.heartbeat_timeout;
                    self.gang_failures.insert(attempt.task, (at, node.clone(), result));
                    continue;
                }
                self.gang_failures.remove(&attempt.task);
            }
            let Some(run) = self.take_running(now, attempt.task) else { continue };
            // Every other rank of a multi-node task stops with it.
            for other in run.places().filter(|n| *n != node) {
                out.agents.push((other.clone(), ToAgent::Kill(attempt)));
            }
            self.ended_on.insert(attempt, &run);
            if let Some(job) = self.jobs.get_mut(&attempt.task.job) {
                let ran = result.ended_at_ms.saturating_sub(result.started_at_ms);
                job.runs.total_ms = job.runs.total_ms.saturating_add(ran);
                job.runs.count = job.runs.count.saturating_add(1);
            }
            let ran = Duration::from_millis(result.ended_at_ms.saturating_sub(result.started_at_ms));
            let mut message = result.message;
            for note in self.mark_truncated(attempt, 0, result.written, out) {
                message = if message.is_empty() { note } else { format!("{message}; {note}") };
            }
            out.store.push(StoreOp::EndAttempt {
                attempt,
                started_at_ms: Some(result.started_at_ms).filter(|&t| t > 0),
                outcome: result.outcome,
                exit_code: result.exit_code,
                signal: result.signal,
                message,
                ended_at_ms: result.ended_at_ms.max(result.started_at_ms),
                order: (result.order.lengths().len() > 1).then_some(result.order),
            });
            let exit = match result.outcome {
                Outcome::TimedOut => Some(Exit::Timeout),
                _ => result.exit_code.map(Exit::Code).or(result.signal.map(Exit::Signal)),
            };
            let ended_itself = result.outcome == Outcome::Succeeded || result.outcome.counts_against_retries();
            if ended_itself && self.jobs.get(&attempt.task.job).is_some_and(|j| j.spec.policy.replicas.is_some()) {
                self.on_replica_ended(now, attempt.task, exit, ran, out);
                continue;
            }
            match result.outcome {
                Outcome::Succeeded => {
                    expected(self.set_task_state(attempt.task, TaskState::Succeeded));
                    self.put_task(attempt.task, out);
                    self.release_downstream(attempt.task, now);
                    self.maybe_finish_job(now, attempt.task.job, out);
                }
                outcome if outcome.counts_against_retries() => self.on_attempt_failed(now, attempt.task, exit, out),
                // An agent cancels only when told to, and by then the attempt is no
                // longer current; if one ever reports it for a current attempt, the
                // task was interrupted, not at fault: queue it again.
                _ => {
                    expected(self.set_task_state(attempt.task, TaskState::Ready));
                    let at_ms = self.wall_ms(now);
                    if let Some(job) = self.jobs.get_mut(&attempt.task.job) {
                        job.queue(attempt.task.index, at_ms);
                    }
                    self.put_task(attempt.task, out);
                }
            }
        }
    }

    /// Ends the attempt because its node is gone; the task is queued again at once
    /// and the loss is not held against its retries. With `count_loss`, the loss is
    /// counted, and a task that keeps losing its nodes fails.
    pub(super) fn end_attempt_lost(
        &mut self,
        now: Instant,
        key: TaskKey,
        why: &str,
        count_loss: bool,
        out: &mut Outbox,
    ) {
        let Some(run) = self.take_running(now, key) else { return };
        // A multi-node task ends on every node when one is gone.
        if !run.members.is_empty() {
            for node in run.places() {
                out.agents.push((node.clone(), ToAgent::Kill(AttemptRef { task: key, attempt: run.attempt })));
            }
        }
        out.store.push(StoreOp::EndAttempt {
            attempt: AttemptRef { task: key, attempt: run.attempt },
            started_at_ms: None,
            outcome: Outcome::NodeLost,
            exit_code: None,
            signal: None,
            message: why.to_string(),
            ended_at_ms: self.wall_ms(now),
            order: None,
        });
        let limit = self.config.max_node_losses;
        let ran = Duration::from_millis(self.wall_ms(now).saturating_sub(run.started_at_ms));
        let Some(job) = self.jobs.get_mut(&key.job) else { return };
        // A continuous job's replica that ran long before its node died starts
        // its count of losses over, as its backoff does: it lives for months.
        let long_lived = job.spec.policy.replicas.is_some() && ran >= corral_types::policy::REPLICA_RESET_AFTER;
        let Some(task) = job.task_mut(key.index) else { return };
        if long_lived {
            task.node_losses = 0;
        }
        if count_loss {
            task.node_losses += 1;
        }
        if task.node_losses > limit {
            tracing::warn!(task = %key, losses = task.node_losses, "task failed: its node was lost too many times; it may be what kills them");
            self.fail_task(now, key, out);
        } else {
            expected(self.set_task_state(key, TaskState::Ready));
            let at_ms = self.wall_ms(now);
            if let Some(job) = self.jobs.get_mut(&key.job) {
                job.queue(key.index, at_ms);
            }
            self.put_task(key, out);
        }
    }

    /// Fails a task for good; in a graph, what depends on it will not run.
    pub(super) fn fail_task(&mut self, now: Instant, key: TaskKey, out: &mut Outbox) {
        expected(self.set_task_state(key, TaskState::Failed));
        self.put_task(key, out);
        self.cancel_downstream(key, out);
        self.maybe_finish_job(now, key.job, out);
    }

    /// A graph task succeeded: what waited only for it is ready now. (No rows: a
    /// restart recomputes waiting and ready from the upstream states.)
    pub(super) fn release_downstream(&mut self, key: TaskKey, now: Instant) {
        let at_ms = self.wall_ms(now);
        let Some(job) = self.jobs.get_mut(&key.job) else { return };
        let Some(graph) = job.spec.graph.clone() else { return };
        for &d in &graph.downstream[key.index as usize] {
            let waiting = &mut job.waiting_on[d as usize];
            *waiting = waiting.saturating_sub(1);
            let released = *waiting == 0;
            let was_waiting = job.task(d).is_some_and(|t| t.state == TaskState::Waiting);
            if released && was_waiting && expected(job.move_task(d, TaskState::Ready)) {
                job.queue(d, at_ms);
            }
        }
    }

    /// A graph task failed for good: everything downstream of it is cancelled, with
    /// the reason naming it.
    pub(super) fn cancel_downstream(&mut self, failed: TaskKey, out: &mut Outbox) {
        let Some(job) = self.jobs.get(&failed.job) else { return };
        let Some(graph) = job.spec.graph.clone() else { return };
        let state = job.task(failed.index).map_or(TaskState::Failed, |t| t.state);
        let why = format!("upstream_failed: task '{}' {state}", graph.name(failed.index));
        let mut stack = vec![failed.index];
        while let Some(t) = stack.pop() {
            for &d in &graph.downstream[t as usize] {
                let key = TaskKey { job: failed.job, index: d };
                let waiting = self.jobs[&failed.job].task(d).is_some_and(|t| t.state == TaskState::Waiting);
                if waiting && expected(self.set_task_state(key, TaskState::Cancelled)) {
                    if let Some(job) = self.jobs.get_mut(&failed.job) {
                        job.reasons.insert(d, why.clone());
                    }
                    self.put_task(key, out);
                    stack.push(d);
                }
            }
        }
    }

    /// Ends a running attempt as cancelled, with `why`, and tells its node to kill
    /// it. The task's own state is the caller's to set. False if it was not running.
    pub(super) fn kill_attempt(&mut self, now: Instant, key: TaskKey, why: &str, out: &mut Outbox) -> bool {
        let Some(run) = self.take_running(now, key) else { return false };
        let attempt = AttemptRef { task: key, attempt: run.attempt };
        // What it prints while it is killed is still its output.
        self.ended_on.insert(attempt, &run);
        out.store.push(StoreOp::EndAttempt {
            attempt,
            started_at_ms: None,
            outcome: Outcome::Cancelled,
            exit_code: None,
            signal: None,
            message: why.to_string(),
            ended_at_ms: self.wall_ms(now),
            order: None,
        });
        for node in run.places() {
            out.agents.push((node.clone(), ToAgent::Kill(attempt)));
        }
        true
    }

    /// Queues the retries whose backoff is over.
    pub(super) fn release_delayed(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            let at_ms = self.wall_ms(now);
            if let Some(job) = self.jobs.get_mut(&key.job) {
                if job.task(key.index).is_some_and(|t| t.state == TaskState::Ready) {
                    job.queue(key.index, at_ms);
                }
            }
        }
    }

    pub(super) fn maybe_finish_job(&mut self, now: Instant, id: JobId, out: &mut Outbox) {
        let Some(job) = self.jobs.get(&id) else { return };
        if job.state != JobState::Active || job.spec.open || job.counts.finished() < job.tasks.len() as u32 {
            return;
        }
        let state = if job.counts.failed > 0 {
            JobState::Failed
        } else if job.counts.cancelled > 0 {
            JobState::Cancelled
        } else {
            JobState::Completed
        };
        self.finish_job(now, id, state, out);
    }

    pub(super) fn finish_job(&mut self, now: Instant, id: JobId, state: JobState, out: &mut Outbox) {
        let finished_at_ms = self.wall_ms(now);
        let Some(job) = self.jobs.get_mut(&id) else { return };
        job.state = state;
        job.finished_at_ms = Some(finished_at_ms);
        job.queued_at = HashMap::new();
        let key = job.priority_key();
        if let Some(pool) = self.pools.get_mut(&job.spec.pool) {
            pool.jobs.remove(&key);
        }
        let reason = job.reason.clone();
        tracing::info!(job_id = %id, state = %state, "job finished");
        out.store.push(StoreOp::SetJobState { id, state, finished_at_ms: Some(finished_at_ms), reason });
        self.notify_if_asked(id, out);
        self.on_run_finished(now, id, out);
        self.release_after(now, id, out);
        // A pool made for this job goes with it, its nodes stopped by its provider.
        let own = self.jobs.get(&id).and_then(|j| j.spec.auto_pool.as_ref().map(|p| p.name.clone()));
        if let Some(pool) = own.filter(|p| self.pools.get(p).is_some_and(|p| !p.deleting)) {
            tracing::info!(job_id = %id, %pool, "deleting the job's own pool");
            if let Err(e) = self.delete_pool(now, &pool, false, out) {
                tracing::warn!(job_id = %id, %pool, error = %e, "the job's own pool was not deleted");
            }
        }
    }

    /// Orders the job's completion callback, if it has one not yet delivered.
    pub(super) fn notify_if_asked(&self, id: JobId, out: &mut Outbox) {
        let Some(job) = self.jobs.get(&id) else { return };
        let Some(url) = &job.spec.notify else { return };
        if job.state == JobState::Active || job.delivery.delivered_at_ms.is_some() {
            return;
        }
        let body = serde_json::json!({
            "event": "job.finished",
            "job": job.id.0,
            "name": job.spec.name,
            "pool": job.spec.pool.as_str(),
            "state": job.state.as_str(),
            "tasks": job.tasks.len(),
            "counts": job.counts,
            "submitted_at_ms": job.submitted_at_ms,
            "finished_at_ms": job.finished_at_ms,
        });
        out.notify.push(Notification { job: id, url: url.clone(), body: body.to_string() });
    }

    /// One post of a job's callback ended: accepted (`Ok`), or failed with why.
    /// Once accepted, it is never posted again.
    pub fn on_notify_result(
        &mut self,
        now: Instant,
        id: JobId,
        result: std::result::Result<(), String>,
        out: &mut Outbox,
    ) {
        let at_ms = self.wall_ms(now);
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if job.delivery.delivered_at_ms.is_some() {
            return;
        }
        job.delivery.attempts += 1;
        match result {
            Ok(()) => job.delivery.delivered_at_ms = Some(at_ms),
            Err(why) => job.delivery.last_error = Some(why),
        }
        out.store.push(StoreOp::SetDelivery { job: id, delivery: job.delivery.clone() });
    }
}

impl Core {
    /// Tasks of active jobs that have not finished (waiting, ready or running).
    pub fn unfinished_tasks(&self) -> u64 {
        // Each active job is in its pool's order; the finished ones kept for
        // their record (any number of them) hold none and are not looked at.
        self.pools
            .values()
            .flat_map(|p| p.jobs.iter())
            .filter_map(|(_, id)| self.jobs.get(id))
            .map(|j| u64::from(j.counts.waiting) + u64::from(j.counts.ready) + u64::from(j.counts.running))
            .sum()
    }

    /// Refuses `more` tasks if they would take the coordinator past
    /// `max_queued_tasks`: what one client can make it hold is bounded.
    pub(super) fn refuse_beyond_queue_limit(&self, more: u64) -> Result<()> {
        let limit = self.config.max_queued_tasks;
        let held = self.unfinished_tasks();
        if held.saturating_add(more) > limit {
            return Err(Error::Exhausted(format!(
                "the coordinator holds {held} unfinished tasks and may hold {limit} (--max-queued-tasks); these {more} more are refused until some finish"
            )));
        }
        Ok(())
    }
}

/// How often retention looks for finished jobs past `retain`.
const RETENTION_EVERY: Duration = Duration::from_secs(10);

impl Core {
    /// Deletes a finished job with everything of it: record, tasks, attempts,
    /// logs and events (the store op), and its objects (`jobs/<id>/`, by whoever
    /// carries out the op). An active job is refused: cancel it first.
    pub fn delete_job(&mut self, _now: Instant, id: JobId, out: &mut Outbox) -> Result<()> {
        let job = self.jobs.get(&id).ok_or_else(|| Error::not_found("job", id))?;
        if job.state == JobState::Active {
            return Err(Error::Refused(format!(
                "job {id} is active; cancel it first (corral job cancel {id}), then delete it"
            )));
        }
        // Its objects go with it: what its tasks wrote, and a dispatch's payload.
        out.delete_objects.push(paths::job(id));
        out.delete_objects
            .extend(job.spec.task.inputs.iter().filter_map(|i| paths::payload_folder(&i.object)).map(str::to_string));
        self.jobs.remove(&id);
        out.store.push(StoreOp::DeleteJob(id));
        Ok(())
    }

    /// Deletes finished jobs that ended more than `retain` ago; looks every
    /// [`RETENTION_EVERY`].
    pub fn apply_retention(&mut self, now: Instant, out: &mut Outbox) {
        if self.retention_checked.is_some_and(|at| now.saturating_duration_since(at) < RETENTION_EVERY) {
            return;
        }
        self.retention_checked = Some(now);
        let cutoff = self.wall_ms(now).saturating_sub(self.config.retain.as_millis() as u64);
        let expired: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.state != JobState::Active && j.finished_at_ms.is_some_and(|at| at <= cutoff))
            .map(|j| j.id)
            .collect();
        for id in expired {
            tracing::info!(job_id = %id, "deleting a finished job past its retention");
            let _ = self.delete_job(now, id, out);
        }
        // Which slots ran is kept as long as jobs are: a backfill reaches no further.
        if !self.schedules.is_empty() {
            out.store.push(StoreOp::PruneScheduleSlots { before_ms: cutoff });
        }
    }
}

/// What a job given no name is called (by a schedule, template or trigger it is
/// named after them first): its command's first word, without its directory; for
/// `sh -c SCRIPT` (or bash, zsh...), the script's first word when it is one.
pub fn default_name(argv: &[String]) -> String {
    let base = |w: &str| w.rsplit('/').next().unwrap_or(w).chars().take(64).collect::<String>();
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_alphanumeric() || "-_./+".contains(c));
    match argv {
        [shell, flag, script, ..] if ["sh", "bash", "zsh", "dash"].contains(&base(shell).as_str()) && flag == "-c" => {
            match script.split_whitespace().next() {
                Some(first) if word(first) => base(first),
                _ => base(shell),
            }
        }
        [program, ..] => base(program),
        [] => String::new(),
    }
}

impl Core {
    /// Decides the multi-node failures whose wait is over ([`Core::gang_failures`]):
    /// as the task's own failure, or as a loss if a member's node went away.
    pub(super) fn settle_gang_failures(&mut self, now: Instant, out: &mut Outbox) {
        let due: Vec<TaskKey> =
            self.gang_failures.iter().filter(|(_, (at, _, _))| *at <= now).map(|(key, _)| *key).collect();
        for key in due {
            let Some((_, node, result)) = self.gang_failures.get(&key).cloned() else { continue };
            let current = self.running.get(&key).is_some_and(|r| r.attempt == result.attempt.attempt);
            if !current {
                // Ended meanwhile (a member's node was lost, the job cancelled).
                self.gang_failures.remove(&key);
                continue;
            }
            self.on_task_results(now, &node, vec![result], out);
        }
    }
}
