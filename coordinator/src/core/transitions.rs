//! The one place a task's state changes. Every move goes through
//! [`Job::move_task`], which allows only the transitions of
//! [`TaskState::can_become`] and keeps the job's counts and ready queue in step with
//! the task. Restoring from the store is the one other way in
//! ([`Job::restore_task`]), since the store may hold any state; `job retry` uses it
//! too, to reopen finished tasks (the one move out of a final state).
//!
//! Where a running task runs (the core's running map, its node's tasks and slots,
//! and its concurrency key's count) changes here too, in [`occupy`] and
//! [`Core::take_running`]; `sanity_check` holds them to each other (a task is
//! running exactly when it is in the running map, on a node that lists it, counted
//! under its job's key).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::{Core, Job, Node, RunningAttempt};
use crate::model::{NodeId, TaskKey, TaskState};

impl Job {
    /// Moves task `index` to `next`, keeping the counts and the ready queue in step
    /// (a task leaving `ready` leaves the queue; one entering it is queued by the
    /// caller, who knows when it became ready). Returns false, and changes nothing,
    /// for a move that is not allowed.
    pub(super) fn move_task(&mut self, index: u32, next: TaskState) -> bool {
        let Some(task) = self.task_mut(index) else { return false };
        let old = task.state;
        if !old.can_become(next) {
            return false;
        }
        task.state = next;
        *self.counts.slot(old) -= 1;
        *self.counts.slot(next) += 1;
        if old == TaskState::Ready {
            self.ready.remove(&index);
            self.queued_at.remove(&index);
        }
        true
    }

    /// Puts task `index` in the state the store (or a repair at restore) says,
    /// whatever it was, keeping the counts and the ready queue in step.
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
    pub(super) fn set_task_state(&mut self, key: TaskKey, next: TaskState) -> bool {
        self.jobs.get_mut(&key.job).is_some_and(|job| job.move_task(key.index, next))
    }
}

/// Records that `key` runs on `run.node` taking `slots`: in the running map, on
/// the node (if the node is still known) and in its job's concurrency key's count.
/// A free function over the maps, so the scheduler can call it while it holds the
/// job.
pub(super) fn occupy(
    running: &mut HashMap<TaskKey, RunningAttempt>,
    nodes: &mut BTreeMap<NodeId, Node>,
    keyed: &mut HashMap<String, u32>,
    key: TaskKey,
    run: RunningAttempt,
    (slots, concurrency_key): (u32, Option<&str>),
) {
    if let Some(node) = nodes.get_mut(&run.node) {
        node.running.insert(key);
        node.slots_used += slots;
    }
    if let Some(k) = concurrency_key {
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
        if let Some(node) = self.nodes.get_mut(&run.node) {
            node.running.remove(&key);
            node.slots_used = node.slots_used.saturating_sub(slots);
            if node.running.is_empty() {
                node.idle_since = now;
            }
        }
        Some(run)
    }
}
