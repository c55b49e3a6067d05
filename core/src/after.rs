//! Jobs that wait for other jobs (`job submit --after JOB[:ok|any]`, Slurm's
//! `afterok`/`afterany`): none of their tasks starts until every job they name has
//! ended; a job that needed another to complete is cancelled, saying why, when that
//! one ends otherwise.

use std::time::Instant;

use super::*;
use crate::error::{Error, Result};

impl Core {
    /// Refuses an `--after` naming a job that does not exist, or one that has
    /// already ended in a way that can never satisfy it.
    pub(super) fn check_after(&self, spec: &JobSpec) -> Result<()> {
        for dep in &spec.after {
            let job = self.jobs.get(&dep.job).ok_or(Error::NotFound {
                what: "job",
                id: dep.job.to_string(),
                hint: " (named by --after)",
            })?;
            if !dep.any && matches!(job.state, JobState::Failed | JobState::Cancelled) {
                return Err(Error::Refused(format!(
                    "after: job {} already ended {}, so an --after {}:ok job could never start; use {}:any, or `corral job retry {}` first",
                    dep.job, job.state, dep.job, dep.job, dep.job
                )));
            }
        }
        Ok(())
    }

    /// Notes what the new (or restored) active job `id` still waits for.
    pub(super) fn hold_for_after(&mut self, id: JobId) {
        let Some(job) = self.jobs.get(&id) else { return };
        let held: BTreeSet<JobId> = job
            .spec
            .after
            .iter()
            .filter(|d| self.jobs.get(&d.job).is_some_and(|j| j.state == JobState::Active))
            .map(|d| d.job)
            .collect();
        for dep in &held {
            self.waited_for.entry(*dep).or_default().insert(id);
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.held_by = held;
        }
    }

    /// Job `id` ended: what waited for it goes on, or is cancelled if it needed
    /// `id` to complete and it did not.
    pub(super) fn release_after(&mut self, now: Instant, id: JobId, out: &mut Outbox) {
        // It waits for nothing any more (it may have ended before those did).
        let held = self.jobs.get_mut(&id).map(|j| std::mem::take(&mut j.held_by)).unwrap_or_default();
        for dep in held {
            if let Some(waiting) = self.waited_for.get_mut(&dep) {
                waiting.remove(&id);
                if waiting.is_empty() {
                    self.waited_for.remove(&dep);
                }
            }
        }
        let Some(waiting) = self.waited_for.remove(&id) else { return };
        let state = self.jobs.get(&id).map_or(JobState::Completed, |j| j.state);
        for dependent in waiting {
            let Some(job) = self.jobs.get_mut(&dependent) else { continue };
            job.held_by.remove(&id);
            let needs_ok = job.spec.after.iter().any(|d| d.job == id && !d.any);
            if needs_ok && state != JobState::Completed && job.state == JobState::Active {
                tracing::info!(job_id = %dependent, after = %id, "job cancelled: the job it waited for did not complete");
                let why = format!("after: job {id} ended {state}, not completed");
                job.reason = Some(why.clone());
                self.stop_job(now, dependent, JobState::Cancelled, &why, out);
            }
        }
    }
}
