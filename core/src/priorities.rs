//! A job's priority changed after submission (`job update --priority`, the
//! Priority Queue pattern): its queued tasks take their new place in the pool's
//! order at once; running ones go on.

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
}
