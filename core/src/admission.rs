//! What a job must be to be accepted: a pool that exists and is not being deleted,
//! and tasks its nodes could run (slots, resources, and for a multi-node task,
//! enough nodes). A job refused here changes nothing.

use super::*;
use crate::error::{Error, Result};

impl Core {
    /// Refuses a job (or the job of a template or schedule) that could never run:
    /// one that brings its own pool (`--auto-pool`, not made yet) by that pool's
    /// nodes, any other by [`Core::check_submittable`].
    pub(super) fn check_runnable(&self, spec: &JobSpec) -> Result<()> {
        match &spec.auto_pool {
            Some(auto) if spec.max_slots() > auto.slots_per_node => Err(Error::Refused(format!(
                "task.slots: a task needs {} slots but the auto pool's nodes have {}; no node could ever run it",
                spec.max_slots(),
                auto.slots_per_node
            ))),
            Some(_) => Ok(()),
            None => self.check_submittable(spec),
        }
    }

    /// Refuses a job no node of its pool could ever run, or whose pool is missing
    /// or being deleted.
    pub(super) fn check_submittable(&self, spec: &JobSpec) -> Result<()> {
        let pool = self.pools.get(&spec.pool).ok_or(Error::NotFound {
            what: "pool",
            id: spec.pool.to_string(),
            hint: "; create it with `corral pool create`",
        })?;
        super::pools::refuse_if_deleting(pool)?;
        let biggest = pool
            .nodes
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .map(|n| n.record.slots)
            .chain([pool.spec.slots_per_node])
            .max()
            .unwrap_or(0);
        // A node that has registered says what it has; none yet, and nothing is
        // known to refuse by (an autoscaled pool, agents still to come).
        let registered: Vec<&Node> = pool
            .nodes
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .filter(|n| n.status() != NodeStatus::Starting)
            .collect();
        if !registered.is_empty() {
            for want in spec.resource_requests() {
                if !registered
                    .iter()
                    .any(|n| corral_types::resources::fits(&n.record.resources, &Resources::new(), want))
                {
                    let show = |r: &Resources| corral_types::resources::describe(r, corral_types::size::show);
                    let most = registered
                        .iter()
                        .map(|n| show(&n.record.resources))
                        .max_by_key(|s| s.len())
                        .unwrap_or_default();
                    return Err(Error::Refused(format!(
                        "task.resources: a task needs {} but no node of pool '{}' has that (one has: {most}); no node could ever run it",
                        show(want),
                        spec.pool
                    )));
                }
            }
        }
        for task in spec.task_specs() {
            check_nodes(task, pool)?;
        }
        if spec.max_slots() > biggest {
            return Err(Error::Refused(format!(
                "task.slots: a task needs {} slots but the nodes of pool '{}' have at most {}; no node could ever run it",
                spec.max_slots(),
                spec.pool,
                biggest
            )));
        }
        Ok(())
    }
}

/// Refuses a multi-node task its pool could never hold: `nodes` of 0, more nodes
/// than the pool may ever have (its fixed size, or its autoscaling maximum; a
/// static pool has what joins it, so it is not refused), or a map or reduce task
/// across nodes.
fn check_nodes(task: &TaskSpec, pool: &Pool) -> Result<()> {
    if task.nodes == 0 {
        return Err(Error::Refused("task.nodes: must be at least 1".into()));
    }
    if task.nodes == 1 {
        if task.coordination.is_some() {
            return Err(Error::Refused("task.coordination: only a multi-node task (nodes 2 or more) has one".into()));
        }
        return Ok(());
    }
    if task.kind != TaskKind::Command {
        return Err(Error::Refused("task.nodes: a map or reduce task runs on one node".into()));
    }
    let most = match (&pool.spec.autoscale, pool.spec.provider) {
        (Some(auto), _) => Some((auto.max, "its autoscaling maximum (--max)")),
        (None, Provider::Static) => None,
        (None, _) => Some((pool.spec.target_nodes, "its size")),
    };
    match most {
        Some((most, what)) if task.nodes > most => Err(Error::Refused(format!(
            "task.nodes: a task needs {} whole nodes but pool '{}' has at most {most} ({what}); it could never start",
            task.nodes, pool.spec.name
        ))),
        _ => Ok(()),
    }
}
