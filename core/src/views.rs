//! What users see of pools, jobs, nodes and tasks, computed once here and serialized
//! by every surface (gRPC, the dashboard's JSON, `/metrics`), so `corral pool show`
//! and the dashboard agree.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Core, Job, Node, Pool};
use crate::model::{AttemptRef, JobState, NodeId, NodeState, NodeStatus, PoolName, TaskKey, TaskState};

/// A pool's nodes, slots and queue at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSummary {
    /// Its live nodes (starting, idle, running, draining) by state.
    pub nodes: BTreeMap<NodeState, u32>,
    pub slots: Slots,
    /// Tasks of its active jobs: queued, running now, and sent ahead to a node
    /// and waiting there for a slot (`assigned`).
    pub ready: u64,
    pub running: u64,
    pub assigned: u64,
    pub active_jobs: u32,
}

/// The slots of a pool's registered nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slots {
    /// Every slot of an up or draining node (a starting node has not said how many).
    pub total: u32,
    /// Those running a task, on up and draining nodes alike (not those that
    /// tasks queued on a node wait for).
    pub used: u32,
    /// Those a new task can take now: the unused slots of up nodes. A draining node's
    /// unused slots are neither used nor free, so `free <= total - used`.
    pub free: u32,
}

impl Core {
    /// How many nodes of each pool are declared lost (a pool keeps only its live
    /// nodes, so this is one pass over all of them, for every pool at once).
    pub fn lost_nodes_by_pool(&self) -> BTreeMap<&PoolName, u32> {
        let mut lost = BTreeMap::new();
        for node in self.nodes.values().filter(|n| n.status() == NodeStatus::Lost) {
            *lost.entry(&node.record.pool).or_default() += 1;
        }
        lost
    }

    /// The summary of `pool`, as every surface shows it.
    pub fn pool_summary(&self, pool: &Pool) -> PoolSummary {
        let mut s = PoolSummary { active_jobs: pool.jobs.len() as u32, ..PoolSummary::default() };
        for node in pool.nodes.iter().filter_map(|id| self.nodes.get(id)) {
            *s.nodes.entry(node.state()).or_default() += 1;
            match node.status() {
                NodeStatus::Up => {
                    s.slots.total += node.record.slots;
                    s.slots.used += node.slots_running();
                    s.slots.free += node.free_slots();
                }
                NodeStatus::Draining => {
                    s.slots.total += node.record.slots;
                    s.slots.used += node.slots_running();
                }
                NodeStatus::Starting | NodeStatus::Lost | NodeStatus::Removed => {}
            }
        }
        for job in pool.jobs.iter().filter_map(|(_, id)| self.jobs.get(id)) {
            s.ready += u64::from(job.counts.ready);
            s.running += u64::from(job.counts.started());
            s.assigned += u64::from(job.counts.assigned);
        }
        s
    }
}

/// How far a job has come at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobProgress {
    pub tasks: u32,
    /// Succeeded, failed or cancelled.
    pub finished: u32,
    /// Tasks finished per second since submission (until the job ended), to 0.1.
    pub throughput_per_s: f64,
    /// Seconds left at that rate, while the job is active and moving.
    pub eta_s: Option<f64>,
}

/// A node at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    pub state: NodeState,
    /// Starting, up or draining: it counts toward its pool, and its heartbeats matter.
    pub live: bool,
    /// Since the coordinator last heard from it.
    pub heartbeat_age_ms: u64,
    /// The attempts it runs now, and those queued on it for a slot.
    pub running: Vec<AttemptRef>,
    pub queued: Vec<AttemptRef>,
    /// The slots its running attempts hold.
    pub slots_running: u32,
}

/// A task as users see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSummary {
    pub key: TaskKey,
    /// Its id in its job: the index, or its name in a graph.
    pub name: String,
    pub state: TaskState,
    /// Attempts so far (the current one's number).
    pub attempts: u32,
    pub failures: u32,
    pub node_losses: u32,
    /// Why it is in its state, when that is not obvious (e.g. upstream_failed).
    pub reason: Option<String>,
    /// Where and since when it runs, while it does.
    pub node: Option<NodeId>,
    pub started_at_ms: Option<u64>,
    /// Running on the record, but sent ahead and waiting on its node for a slot:
    /// users see it as `assigned`.
    pub assigned: bool,
}

impl Core {
    pub fn job_progress(&self, job: &Job, now: Instant) -> JobProgress {
        let tasks = job.tasks.len() as u32;
        let finished = job.counts.finished().min(tasks);
        let end = job.finished_at_ms.unwrap_or_else(|| self.wall_ms(now));
        let elapsed_s = end.saturating_sub(job.submitted_at_ms) as f64 / 1000.0;
        let throughput = if elapsed_s > 0.0 { f64::from(finished) / elapsed_s } else { 0.0 };
        JobProgress {
            tasks,
            finished,
            throughput_per_s: (throughput * 10.0).round() / 10.0,
            eta_s: (job.state == JobState::Active && throughput > 0.0)
                .then(|| (f64::from(tasks - finished) / throughput).round()),
        }
    }

    pub fn node_summary(&self, node: &Node, now: Instant) -> NodeSummary {
        NodeSummary {
            state: node.state(),
            live: node.status().is_live(),
            heartbeat_age_ms: now.saturating_duration_since(node.last_seen).as_millis() as u64,
            running: self.attempts_on(node, false),
            queued: self.attempts_on(node, true),
            slots_running: node.slots_running(),
        }
    }

    /// The attempts on `node` that wait for a slot (`queued`) or run.
    fn attempts_on(&self, node: &Node, queued: bool) -> Vec<AttemptRef> {
        node.running
            .iter()
            .filter_map(|key| self.running.get(key).map(|r| (key, r)))
            .filter(|(_, r)| r.queued == queued)
            .map(|(key, r)| AttemptRef { task: *key, attempt: r.attempt })
            .collect()
    }

    /// Task `index` of `job`, if it has one.
    pub fn task_summary(&self, job: &Job, index: u32) -> Option<TaskSummary> {
        let task = job.task(index)?;
        let key = TaskKey { job: job.id, index };
        let running = self.running.get(&key);
        Some(TaskSummary {
            key,
            name: job.spec.task_name(index),
            state: task.state,
            attempts: task.attempt,
            failures: task.failures,
            node_losses: task.node_losses,
            reason: job.reasons.get(&index).cloned(),
            node: running.map(|r| r.node.clone()),
            started_at_ms: running.filter(|r| !r.queued).map(|r| r.started_at_ms),
            assigned: running.is_some_and(|r| r.queued),
        })
    }
}

/// Which jobs a list shows (`job list --state ... --owner ... --pool ... --name ...`).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Jobs in one of these states...
    pub states: Vec<JobState>,
    /// ... or that ended at or after this time; with neither, jobs in any state.
    pub ended_since_ms: Option<u64>,
    pub owner: Option<String>,
    pub pool: Option<PoolName>,
    pub name: Option<glob::Pattern>,
    pub schedule: Option<crate::model::ScheduleName>,
    /// Jobs dispatched from this template.
    pub template: Option<crate::model::TemplateName>,
    /// At most this many, the newest first; none: all, oldest first.
    pub limit: Option<usize>,
}

impl JobFilter {
    pub fn matches(&self, job: &Job) -> bool {
        let by_state = match (self.states.is_empty(), self.ended_since_ms) {
            (true, None) => true,
            _ => {
                self.states.contains(&job.state)
                    || self.ended_since_ms.is_some_and(|since| job.finished_at_ms.is_some_and(|at| at >= since))
            }
        };
        by_state
            && self.owner.as_ref().is_none_or(|o| *o == job.spec.owner)
            && self.pool.as_ref().is_none_or(|p| *p == job.spec.pool)
            && self.name.as_ref().is_none_or(|g| g.matches(&job.spec.name))
            && self.schedule.as_ref().is_none_or(|s| job.spec.schedule.as_ref().map(|r| &r.schedule) == Some(s))
            && self.template.as_ref().is_none_or(|t| job.spec.template.as_ref() == Some(t))
    }
}

impl Core {
    /// The jobs `filter` lets through: oldest first, or the newest `limit` first.
    pub fn jobs_matching<'a>(&'a self, filter: &'a JobFilter) -> Vec<&'a Job> {
        let matching = self.jobs.values().filter(|j| filter.matches(j));
        match filter.limit {
            Some(n) => matching.rev().take(n).collect(),
            None => matching.collect(),
        }
    }
}
