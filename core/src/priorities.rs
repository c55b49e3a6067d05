//! Priorities changed after submission (the Priority Queue pattern): a job's
//! (`job update --priority`) puts its queued tasks in their new place in the
//! pool's order at once, running ones going on; a schedule's or a template's is
//! the priority of the jobs it will make.

use super::*;
use crate::error::{Error, Result};

impl Core {
    pub fn set_job_priority(&mut self, id: JobId, priority: i32, out: &mut Outbox) -> Result<()> {
        let job = self.jobs.get_mut(&id).ok_or_else(|| Error::not_found("job", id))?;
        if job.spec.priority == priority {
            return Ok(());
        }
        let old = job.priority_key();
        job.spec.priority = priority;
        let new = job.priority_key();
        if let Some(pool) = self.pools.get_mut(&job.spec.pool) {
            // (A finished job is in no pool's order.)
            if pool.jobs.remove(&old) {
                pool.jobs.insert(new);
            }
        }
        out.store.push(StoreOp::SetJobPriority { id, priority });
        Ok(())
    }

    pub fn set_schedule_priority(&mut self, name: &ScheduleName, priority: i32, out: &mut Outbox) -> Result<()> {
        let s = self.schedules.get_mut(name).ok_or_else(|| Error::not_found("schedule", name))?;
        if s.spec.job.priority != priority {
            s.spec.job.priority = priority;
            out.store.push(StoreOp::PutSchedule { record: s.record(), change: Some("priority_changed") });
        }
        Ok(())
    }

    pub fn set_template_priority(&mut self, name: &TemplateName, priority: i32, out: &mut Outbox) -> Result<()> {
        let t = self.templates.get_mut(name).ok_or_else(|| Error::not_found("template", name))?;
        if t.spec.job.priority != priority {
            t.spec.job.priority = priority;
            out.store.push(StoreOp::PutTemplate(t.clone()));
        }
        Ok(())
    }
}
