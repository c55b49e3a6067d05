//! Who may change what: a job, schedule, template or trigger belongs to the token
//! that made it; only that token, or an admin token, changes it. One rule, used by
//! every edge (gRPC, the dashboard's actions).

use super::*;
use crate::error::{Error, Result};

/// Who asks for a change: a token's name, and whether it is an admin's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub admin: bool,
}

/// Refuses `who` a change to `what` `name`, made by `owner`, unless it is that owner
/// or an admin.
fn owned_by(who: &Caller, what: &str, name: impl std::fmt::Display, owner: &str) -> Result<()> {
    if who.admin || who.name == owner {
        return Ok(());
    }
    Err(Error::Forbidden(format!(
        "{what} {name} belongs to token '{owner}'; a submit token changes only its own {what}s (an admin token may change any)"
    )))
}

impl Core {
    pub fn may_change_job(&self, who: &Caller, id: JobId) -> Result<()> {
        let job = self.jobs.get(&id).ok_or_else(|| Error::not_found("job", id))?;
        owned_by(who, "job", id, &job.spec.owner)
    }

    pub fn may_change_schedule(&self, who: &Caller, name: &ScheduleName) -> Result<()> {
        let s = self.schedules.get(name).ok_or_else(|| Error::not_found("schedule", name))?;
        owned_by(who, "schedule", format_args!("'{name}'"), &s.spec.job.owner)
    }

    pub fn may_change_template(&self, who: &Caller, name: &TemplateName) -> Result<()> {
        let t = self.templates.get(name).ok_or_else(|| Error::not_found("template", name))?;
        owned_by(who, "template", format_args!("'{name}'"), &t.spec.job.owner)
    }

    /// A trigger may also be changed by the owner of its template (who may free
    /// the template of it).
    pub fn may_change_trigger(&self, who: &Caller, name: &TriggerName) -> Result<()> {
        let t = self.triggers.get(name).ok_or_else(|| Error::not_found("trigger", name))?;
        let spec = &t.record.spec;
        if self.templates.get(&spec.template).is_some_and(|tpl| tpl.spec.job.owner == who.name) {
            return Ok(());
        }
        owned_by(who, "trigger", format_args!("'{name}'"), &spec.owner)
    }
}
