//! Continuous jobs (`job submit --continuous --replicas N`): tasks that are always
//! running, as a WebJob run continuously or a queue consumer is. Replica `i` is
//! the job's task `i`; a replica that ends, however it ends, starts again after a
//! backoff, and `job scale` changes how many there are.

use std::time::{Duration, Instant};

use corral_types::policy::{MAX_REPLICAS, REPLICA_RESET_AFTER};

use super::*;
use crate::error::{Error, Invalid, Result};
use crate::transitions::expected;

/// How many of its latest attempts each replica keeps (rows and output).
pub const KEPT_ATTEMPTS: u32 = 100;

/// Why a replica above the job's count is cancelled.
const SCALED_DOWN: &str = "scaled down";

impl Core {
    /// A replica's attempt ended on its own (an exit, any code, or its timeout;
    /// `exit` is none when it never started): an exit rule that says `fail` or
    /// `fail-job` still decides; otherwise the
    /// replica starts again after a backoff that doubles with each end in a row
    /// and starts over once it ran for [`REPLICA_RESET_AFTER`].
    pub(super) fn on_replica_ended(
        &mut self,
        now: Instant,
        key: TaskKey,
        exit: Option<Exit>,
        ran: Duration,
        out: &mut Outbox,
    ) {
        let Some(job) = self.jobs.get_mut(&key.job) else { return };
        let action = exit.and_then(|e| job.spec.policy.action_for(e));
        if matches!(action, Some(ExitAction::Fail | ExitAction::FailJob)) {
            self.on_attempt_failed(now, key, exit, out);
            return;
        }
        let Some(task) = job.task_mut(key.index) else { return };
        task.failures = restarts_in_a_row(task.failures, ran);
        let in_a_row = task.failures;
        let delay = self.retry_delay(&self.jobs[&key.job].spec.policy, in_a_row);
        expected(self.set_task_state(key, TaskState::Ready));
        self.delayed.insert((now + delay, key));
        self.put_task(key, out);
    }

    /// Sets how many replicas a continuous job runs: more start at once (those
    /// scaled down before come back first), the highest-numbered go (killed if
    /// running; SIGTERM, then SIGKILL after the agent's kill grace).
    pub fn scale_job(&mut self, now: Instant, id: JobId, replicas: u32, out: &mut Outbox) -> Result<()> {
        let job = self.jobs.get(&id).ok_or_else(|| Error::not_found("job", id))?;
        let Some(current) = job.spec.policy.replicas else {
            return Err(Error::Refused(format!(
                "job {id} is not continuous: only jobs submitted with --continuous have replicas to scale"
            )));
        };
        if job.state != JobState::Active {
            return Err(Error::Refused(format!("job {id} has ended ({}); submit it again", job.state)));
        }
        if replicas == 0 || replicas > MAX_REPLICAS {
            let why = format!("must be 1 to {MAX_REPLICAS} (is {replicas}); `job cancel` stops every replica");
            return Err(Invalid::new("replicas", why).into());
        }
        if replicas == current {
            return Ok(());
        }
        let had = job.tasks.len() as u32;
        self.refuse_beyond_queue_limit(u64::from(replicas.saturating_sub(had)))?;
        for index in replicas..had {
            if self.cancel_task(now, TaskKey { job: id, index }, out)? {
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.reasons.insert(index, format!("{SCALED_DOWN} to {replicas}"));
                }
                self.put_task(TaskKey { job: id, index }, out);
            }
        }
        let at_ms = self.wall_ms(now);
        let Some(job) = self.jobs.get_mut(&id) else { return Ok(()) };
        let mut back = Vec::new();
        for index in 0..replicas.min(had) {
            let scaled = job.reasons.get(&index).is_some_and(|r| r.starts_with(SCALED_DOWN));
            let cancelled = job.task(index).is_some_and(|t| t.state == TaskState::Cancelled);
            if scaled && cancelled && expected(job.move_task(index, TaskState::Ready)) {
                job.reasons.remove(&index);
                if let Some(task) = job.task_mut(index) {
                    (task.failures, task.node_losses) = (0, 0);
                }
                job.queue(index, at_ms);
                back.push(index);
            }
        }
        for index in had..replicas {
            job.tasks.push(Task { state: TaskState::Ready, attempt: 0, failures: 0, node_losses: 0 });
            job.waiting_on.push(0);
            *job.counts.slot(TaskState::Ready) += 1;
            job.queue(index, at_ms);
        }
        job.spec.last_index = job.spec.last_index.max(replicas - 1);
        job.spec.policy.replicas = Some(replicas);
        out.store.push(StoreOp::ScaleJob { id, policy: job.spec.policy.clone(), last_index: job.spec.last_index });
        for index in back {
            self.put_task(TaskKey { job: id, index }, out);
        }
        Ok(())
    }
}

/// What starting attempt `attempt` of `job`'s task `index` forgets: for a
/// continuous job, the attempt [`KEPT_ATTEMPTS`] before it.
pub(crate) fn forget_before(job: &Job, index: u32, attempt: u32) -> Option<StoreOp> {
    let old = attempt.checked_sub(KEPT_ATTEMPTS).filter(|&a| a > 0 && job.spec.policy.replicas.is_some())?;
    Some(StoreOp::ForgetAttempt {
        attempt: AttemptRef { task: TaskKey { job: job.id, index }, attempt: old },
        ranks: job.spec.task_spec(index).nodes.max(1),
    })
}

/// How many times in a row a replica has ended quickly, counting this end: one
/// again after a long run, so its next start waits only the first delay.
pub fn restarts_in_a_row(before: u32, ran: Duration) -> u32 {
    if ran >= REPLICA_RESET_AFTER {
        1
    } else {
        before.saturating_add(1)
    }
}
