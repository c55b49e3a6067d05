//! A job's tasks counted by state, as every surface shows them.

use crate::model::TaskState;

/// Tasks per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub waiting: u32,
    pub ready: u32,
    /// Tasks that hold an attempt on a node: the `assigned` ones and those whose
    /// process runs ([`Counts::started`]).
    pub running: u32,
    /// Of `running`, those sent ahead and waiting on their node for a slot.
    pub assigned: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

/// As users see them: `running` is what runs now, `assigned` what waits on a
/// node for a slot, never one counted in both.
impl serde::Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut c = s.serialize_struct("Counts", 7)?;
        c.serialize_field("waiting", &self.waiting)?;
        c.serialize_field("ready", &self.ready)?;
        c.serialize_field("assigned", &self.assigned)?;
        c.serialize_field("running", &self.started())?;
        c.serialize_field("succeeded", &self.succeeded)?;
        c.serialize_field("failed", &self.failed)?;
        c.serialize_field("cancelled", &self.cancelled)?;
        c.end()
    }
}

impl Counts {
    /// Tasks whose process runs now.
    pub fn started(&self) -> u32 {
        self.running.saturating_sub(self.assigned)
    }

    pub(crate) fn slot(&mut self, state: TaskState) -> &mut u32 {
        match state {
            TaskState::Waiting => &mut self.waiting,
            TaskState::Ready => &mut self.ready,
            TaskState::Running => &mut self.running,
            TaskState::Succeeded => &mut self.succeeded,
            TaskState::Failed => &mut self.failed,
            TaskState::Cancelled => &mut self.cancelled,
        }
    }

    pub fn get(&self, state: TaskState) -> u32 {
        match state {
            TaskState::Waiting => self.waiting,
            TaskState::Ready => self.ready,
            TaskState::Running => self.running,
            TaskState::Succeeded => self.succeeded,
            TaskState::Failed => self.failed,
            TaskState::Cancelled => self.cancelled,
        }
    }

    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed + self.cancelled
    }
}
