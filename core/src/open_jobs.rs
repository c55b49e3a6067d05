//! Open jobs: graph jobs that take more tasks (`job add-tasks`) until closed.

use std::time::Instant;

use super::*;
use crate::error::{Error, Result};

impl Core {
    /// Adds tasks to an open graph job. They may depend on the job's existing tasks
    /// (one that already failed dooms them at once) and on each other. Returns the
    /// index of the first new task and how many were added.
    pub fn add_tasks(
        &mut self,
        now: Instant,
        id: JobId,
        groups: Vec<corral_types::graph::TaskGroup>,
        out: &mut Outbox,
    ) -> Result<(u32, u32)> {
        let job = self.jobs.get(&id).ok_or_else(|| Error::not_found("job", id))?;
        let graph = match &job.spec.graph {
            Some(graph) if job.spec.open && job.state == JobState::Active => graph.clone(),
            _ => {
                return Err(Error::Refused(format!(
                    "job {id} is not open: only jobs submitted with --open take more tasks, until they are closed"
                )))
            }
        };
        if groups.is_empty() {
            return Err(crate::error::Invalid::new("tasks", "there are no tasks to add").into());
        }
        let pool = &job.spec.pool;
        let biggest = self.pools.get(pool).map_or(0, |p| {
            p.nodes
                .iter()
                .filter_map(|n| self.nodes.get(n))
                .map(|n| n.record.slots)
                .chain([p.spec.slots_per_node])
                .max()
                .unwrap_or(0)
        });
        self.refuse_beyond_queue_limit(groups.iter().map(|g| g.task_count()).sum())?;
        if let Some(g) = groups.iter().find(|g| g.spec.slots > biggest) {
            return Err(Error::Refused(format!(
                "task.slots: task '{}' needs {} slots but the nodes of pool '{pool}' have at most {biggest}",
                g.id, g.spec.slots
            )));
        }
        let first_group = graph.groups.len() as u32;
        let mut all = graph.groups.clone();
        all.extend(groups.iter().cloned());
        let grown =
            corral_types::graph::resolve(all).map_err(|e| crate::error::Invalid::new("tasks", e.to_string()))?;
        let grown = std::sync::Arc::new(grown);
        let at_ms = self.wall_ms(now);
        let Some(job) = self.jobs.get_mut(&id) else { return Err(Error::not_found("job", id)) };
        let first = job.tasks.len() as u32;
        let added = grown.len() as u32 - first;
        let mut doomed_by = Vec::new();
        for index in first..first + added {
            let upstream = &grown.upstream[index as usize];
            let pending = upstream.iter().filter(|&&u| job.tasks[u as usize].state != TaskState::Succeeded).count();
            let state = if pending > 0 { TaskState::Waiting } else { TaskState::Ready };
            job.tasks.push(Task { state, attempt: 0, failures: 0, node_losses: 0 });
            job.waiting_on.push(pending as u32);
            *job.counts.slot(state) += 1;
            if state == TaskState::Ready {
                job.queue(index, at_ms);
            }
            let failed = upstream
                .iter()
                .find(|&&u| matches!(job.tasks[u as usize].state, TaskState::Failed | TaskState::Cancelled));
            if let Some(&failed) = failed {
                doomed_by.push(failed);
            }
        }
        let last_index = grown.len() as u32 - 1;
        job.spec.last_index = last_index;
        job.spec.graph = Some(grown);
        out.store.push(StoreOp::AddTaskGroups { job: id, first_group, groups, last_index });
        for failed in doomed_by {
            self.cancel_downstream(TaskKey { job: id, index: failed }, out);
        }
        Ok((first, added))
    }

    /// Closes an open job: it ends as soon as all its tasks have (at once, if they
    /// already have).
    pub fn close_job(&mut self, now: Instant, id: JobId, out: &mut Outbox) -> Result<()> {
        let job = self.jobs.get_mut(&id).ok_or_else(|| Error::not_found("job", id))?;
        if job.spec.open {
            job.spec.open = false;
            out.store.push(StoreOp::CloseJob(id));
            self.maybe_finish_job(now, id, out);
        }
        Ok(())
    }
}
