//! The one place a task's state changes. Every move goes through
//! [`Job::move_task`], which allows only the transitions of
//! [`TaskState::can_become`] and keeps the job's counts and ready queue in step with
//! the task. Restoring from the store is the one other way in
//! ([`Job::restore_task`]), since the store may hold any state.

use super::{Core, Job};
use crate::model::{TaskKey, TaskState};

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
