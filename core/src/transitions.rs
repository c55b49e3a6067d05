//! The one place a task's state changes. Every move goes through
//! [`Job::move_task`], which allows only the transitions of
//! [`TaskState::can_become`] (all of them, `job retry`'s reopening included) and
//! keeps the job's counts and ready queue in step with the task; a move it refuses
//! is a [`BadMove`] the caller must handle. Restoring from the store is the one
//! other way in ([`Job::restore_task`], used by `restore` alone), since the store may
//! hold any state.
//!
//! Where a running task runs (the core's running map, its node's tasks, slots,
//! resources and devices, and its concurrency key's count) changes here too, in [`occupy`] and
//! [`Core::take_running`]; `sanity_check` holds them to each other (a task is
//! running exactly when it is in the running map, on a node that lists it, counted
//! under its job's key).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::{Core, Job, Node, RunningAttempt};
use crate::model::{JobId, JobSpec, NodeId, Resources, TaskKey, TaskState};

/// A move [`TaskState::can_become`] does not allow, or of a task the job lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task {index} of job {job} cannot go from {from} to {to}", from = from.map_or("nowhere (no such task)", |s| s.as_str()))]
pub struct BadMove {
    pub job: JobId,
    pub index: u32,
    pub from: Option<TaskState>,
    pub to: TaskState,
}

/// The result of a move the caller's own checks make certain: a refusal can only
/// be a bug, which is logged (and fails the tests, where debug assertions are on).
/// Returns whether the task moved.
pub(super) fn expected(moved: Result<(), BadMove>) -> bool {
    match moved {
        Ok(()) => true,
        Err(bad) => {
            tracing::error!(%bad, "a task move the core had checked was refused; the task stays where it was");
            debug_assert!(false, "{bad}");
            false
        }
    }
}

impl Job {
    /// Moves task `index` to `next`, keeping the counts and the ready queue in step
    /// (a task leaving `ready` leaves the queue; one entering it is queued by the
    /// caller, who knows when it became ready). A move that is not allowed changes
    /// nothing and is refused.
    pub(super) fn move_task(&mut self, index: u32, next: TaskState) -> Result<(), BadMove> {
        let job = self.id;
        let Some(task) = self.task_mut(index) else { return Err(BadMove { job, index, from: None, to: next }) };
        let old = task.state;
        if !old.can_become(next) {
            return Err(BadMove { job, index, from: Some(old), to: next });
        }
        task.state = next;
        *self.counts.slot(old) -= 1;
        *self.counts.slot(next) += 1;
        if old == TaskState::Ready {
            self.ready.remove(&index);
            self.queued_at.remove(&index);
        }
        Ok(())
    }

    /// Puts task `index` in the state the store (or a repair at restore) says,
    /// whatever it was, keeping the counts and the ready queue in step. For
    /// `restore` only: every other change is a [`Job::move_task`].
    pub(super) fn restore_task(&mut self, index: u32, next: TaskState) {
        let Some(task) = self.task_mut(index) else { return };
        let old = task.state;
        task.state = next;
        *self.counts.slot(old) -= 1;
        *self.counts.slot(next) += 1;
        if old == TaskState::Ready {
            self.ready.remove(&index);
        }
        if next == TaskState::Ready {
            self.ready.insert(index);
        }
    }
}

impl Core {
    /// [`Job::move_task`] for a task named by its key.
    pub(super) fn set_task_state(&mut self, key: TaskKey, next: TaskState) -> Result<(), BadMove> {
        match self.jobs.get_mut(&key.job) {
            Some(job) => job.move_task(key.index, next),
            None => Err(BadMove { job: key.job, index: key.index, from: None, to: next }),
        }
    }
}

/// What a running task holds: its slots, its resources, a place under its job's
/// concurrency key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Need<'a> {
    pub slots: u32,
    pub resources: &'a Resources,
    pub concurrency_key: Option<&'a str>,
}

impl<'a> Need<'a> {
    pub fn of(spec: &'a JobSpec, index: u32) -> Need<'a> {
        let task = spec.task_spec(index);
        Need { slots: task.slots, resources: &task.resources, concurrency_key: spec.policy.concurrency_key.as_deref() }
    }
}

/// Records that `key` runs on `run.node` holding `need` (and the devices in
/// `run.gpus`): in the running map, on the node (if the node is still known) and
/// in its concurrency key's count. A free function over the maps, so the
/// scheduler can call it while it holds the job.
pub(super) fn occupy(
    running: &mut HashMap<TaskKey, RunningAttempt>,
    nodes: &mut BTreeMap<NodeId, Node>,
    keyed: &mut HashMap<String, u32>,
    key: TaskKey,
    run: RunningAttempt,
    need: Need<'_>,
) {
    // A multi-node task holds each of its nodes whole.
    let whole = !run.members.is_empty();
    for (rank, id) in run.places().enumerate() {
        let Some(node) = nodes.get_mut(id) else { continue };
        node.running.insert(key);
        let slots = if whole { node.record.slots } else { need.slots };
        node.slots_used += slots;
        if run.queued {
            node.queued_slots += slots;
            node.queued += 1;
        }
        if rank == 0 {
            for (name, amount) in need.resources {
                *node.resources_used.entry(name.clone()).or_default() += amount;
            }
            node.gpus_taken.extend(run.gpus.iter().copied());
        }
    }
    if let Some(k) = need.concurrency_key {
        *keyed.entry(k.to_string()).or_default() += 1;
    }
    running.insert(key, run);
}

impl Core {
    /// Removes a task from the running map and its node; returns where it ran.
    pub(super) fn take_running(&mut self, now: Instant, key: TaskKey) -> Option<RunningAttempt> {
        let run = self.running.remove(&key)?;
        let job = self.jobs.get(&key.job);
        let slots = job.map_or(0, |j| j.spec.task_spec(key.index).slots);
        if let Some(k) = job.and_then(|j| j.spec.policy.concurrency_key.as_deref()) {
            if let Some(count) = self.keyed.get_mut(k) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.keyed.remove(k);
                }
            }
        }
        let resources = job.map(|j| &j.spec.task_spec(key.index).resources);
        let whole = !run.members.is_empty();
        for (rank, id) in run.places().enumerate() {
            let Some(node) = self.nodes.get_mut(id) else { continue };
            node.running.remove(&key);
            let slots = if whole { node.record.slots } else { slots };
            node.slots_used = node.slots_used.saturating_sub(slots);
            if run.queued {
                node.queued_slots = node.queued_slots.saturating_sub(slots);
                node.queued = node.queued.saturating_sub(1);
            }
            if rank == 0 {
                for (name, amount) in resources.into_iter().flatten() {
                    if let Some(used) = node.resources_used.get_mut(name) {
                        *used = used.saturating_sub(*amount);
                        if *used == 0 {
                            node.resources_used.remove(name);
                        }
                    }
                }
                for gpu in &run.gpus {
                    node.gpus_taken.remove(gpu);
                }
            }
            if node.running.is_empty() {
                node.idle_since = now;
            }
        }
        if run.queued {
            if let Some(job) = self.jobs.get_mut(&key.job) {
                job.counts.assigned = job.counts.assigned.saturating_sub(1);
            }
        }
        Some(run)
    }

    /// Whether the current attempt of `key` waits on its node for a slot (`true`)
    /// or has started, at `started_at_ms` if known. Moves its slots and its job's
    /// count between queued and running; a report about another attempt or node
    /// changes nothing.
    pub(super) fn set_queued(
        &mut self,
        node: &NodeId,
        attempt: crate::model::AttemptRef,
        queued: bool,
        started_at_ms: Option<u64>,
    ) {
        let Some(run) = self.running.get_mut(&attempt.task) else { return };
        if &run.node != node || run.attempt != attempt.attempt || run.queued == queued {
            return;
        }
        run.queued = queued;
        if let Some(at) = started_at_ms.filter(|&at| at > 0) {
            run.started_at_ms = at;
        }
        let Some(job) = self.jobs.get_mut(&attempt.task.job) else { return };
        let slots = job.spec.task_spec(attempt.task.index).slots;
        if let Some(n) = self.nodes.get_mut(node) {
            if queued {
                n.queued_slots += slots;
                n.queued += 1;
            } else {
                n.queued_slots = n.queued_slots.saturating_sub(slots);
                n.queued = n.queued.saturating_sub(1);
            }
        }
        if queued {
            job.counts.assigned += 1;
        } else {
            job.counts.assigned = job.counts.assigned.saturating_sub(1);
        }
    }
}
