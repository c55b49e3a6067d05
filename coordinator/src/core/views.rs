//! The numbers users see, computed once here and serialized by every surface (gRPC,
//! the dashboard's JSON, `/metrics`), so `corral pool show` and the dashboard agree.

use std::collections::BTreeMap;

use super::{Core, Pool};
use crate::model::{NodeState, NodeStatus};

/// A pool's nodes, slots and queue at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSummary {
    /// Its live nodes (starting, idle, running, draining) by state.
    pub nodes: BTreeMap<NodeState, u32>,
    /// Its nodes declared lost (kept until removed).
    pub lost: u32,
    pub slots: Slots,
    /// Tasks of its active jobs, queued and running.
    pub ready: u64,
    pub running: u64,
    pub active_jobs: u32,
}

/// The slots of a pool's registered nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slots {
    /// Every slot of an up or draining node (a starting node has not said how many).
    pub total: u32,
    /// Those running a task, on up and draining nodes alike.
    pub used: u32,
    /// Those a new task can take now: the unused slots of up nodes. A draining node's
    /// unused slots are neither used nor free, so `free <= total - used`.
    pub free: u32,
}

impl Core {
    /// The summary of `pool`, as every surface shows it.
    pub fn pool_summary(&self, pool: &Pool) -> PoolSummary {
        let mut s = PoolSummary { active_jobs: pool.jobs.len() as u32, ..PoolSummary::default() };
        for node in pool.nodes.iter().filter_map(|id| self.nodes.get(id)) {
            *s.nodes.entry(node.state()).or_default() += 1;
            match node.status() {
                NodeStatus::Up => {
                    s.slots.total += node.record.slots;
                    s.slots.used += node.slots_used;
                    s.slots.free += node.record.slots.saturating_sub(node.slots_used);
                }
                NodeStatus::Draining => {
                    s.slots.total += node.record.slots;
                    s.slots.used += node.slots_used;
                }
                NodeStatus::Starting | NodeStatus::Lost | NodeStatus::Removed => {}
            }
        }
        s.lost =
            self.nodes.values().filter(|n| n.status() == NodeStatus::Lost && n.record.pool == pool.spec.name).count()
                as u32;
        for job in pool.jobs.iter().filter_map(|(_, id)| self.jobs.get(id)) {
            s.ready += u64::from(job.counts.ready);
            s.running += u64::from(job.counts.running);
        }
        s
    }
}
