//! The core's state as protobuf: pools (from `core::views`), nodes, jobs, task
//! specs, tokens and events.

use std::time::Instant;

use corral_proto::v1 as pb;

use super::autoscale_to_pb;
use crate::core::{Core, Job, Node};
use crate::model::*;

pub fn pool_view(core: &Core, name: &PoolName, now: Instant) -> Option<pb::Pool> {
    let pool = core.pools.get(name)?;
    let summary = core.pool_summary(pool);
    Some(pb::Pool {
        spec: Some(pb::PoolSpec {
            name: pool.spec.name.to_string(),
            slots_per_node: pool.spec.slots_per_node,
            provider: pool.spec.provider.to_string(),
            target_nodes: pool.spec.target_nodes,
            fill: pool.spec.fill.to_string(),
            autoscale: pool.spec.autoscale.as_ref().map(autoscale_to_pb),
            removal_policy: pool.spec.removal.to_string(),
            start_task: pool.spec.start_task.clone().unwrap_or_default(),
            commands: pool.spec.commands.as_ref().map(|c| pb::ProviderCommands {
                add: c.add.clone(),
                remove: c.remove.clone(),
                timeout_ms: c.timeout.as_millis() as u64,
            }),
            docker: pool.spec.docker.as_ref().map(|d| pb::DockerSpec {
                image: d.image.clone(),
                network: d.network.clone(),
                memory_bytes: d.memory_bytes.unwrap_or(0),
                nano_cpus: d.nano_cpus.unwrap_or(0),
                coordinator_url: d.coordinator_url.clone().unwrap_or_default(),
            }),
        }),
        nodes_by_state: summary.nodes.iter().map(|(state, n)| (state.to_string(), *n)).collect(),
        slots_total: summary.slots.total,
        slots_used: summary.slots.used,
        slots_free: summary.slots.free,
        tasks_assigned: summary.assigned.min(u64::from(u32::MAX)) as u32,
        ready_tasks: summary.ready.min(u64::from(u32::MAX)) as u32,
        active_jobs: summary.active_jobs,
        created_at_ms: pool.created_at_ms,
        last_error: pool.last_error.clone().unwrap_or_default(),
        deleting: pool.deleting,
        scale_log: pool
            .scale_log
            .iter()
            .map(|r| pb::ScaleRecord { at_ms: r.at_ms, from: r.from, to: r.to, reason: r.reason.clone() })
            .collect(),
        autoscale_now: match &pool.spec.autoscale {
            Some(auto) => {
                let snapshot = core.autoscale_snapshot(pool, now);
                crate::core::autoscale::decide(auto, &snapshot, now).reason().to_string()
            }
            None => String::new(),
        },
    })
}

pub fn node_view(core: &Core, node: &Node, now: Instant) -> pb::Node {
    let r = &node.record;
    let summary = core.node_summary(node, now);
    pb::Node {
        id: r.id.to_string(),
        pool: r.pool.to_string(),
        hostname: r.hostname.clone(),
        slots: r.slots,
        slots_used: summary.slots_running,
        cpus: r.cpus,
        memory_bytes: r.memory_bytes,
        state: pb::NodeState::of(summary.state),
        reason: r.reason.map(|r| r.to_string()).unwrap_or_default(),
        registered_at_ms: r.registered_at_ms,
        heartbeat_age_ms: summary.heartbeat_age_ms,
        cpu_percent: node.cpu_percent,
        memory_used_bytes: node.memory_used_bytes,
        pid: r.pid,
        running: summary.running.into_iter().map(super::attempt_to_pb).collect(),
        queued: summary.queued.into_iter().map(super::attempt_to_pb).collect(),
        resources: r.resources.clone().into_iter().collect(),
        resources_used: node.resources_used.clone().into_iter().collect(),
    }
}

/// A task as `corral task list/show` read it (attempts are added from the store).
pub fn task_pb(t: &crate::core::views::TaskSummary) -> pb::Task {
    pb::Task {
        job_id: t.key.job.0,
        index: t.key.index,
        state: pb::TaskState::of(t.state),
        attempts_count: t.attempts,
        node_id: t.node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
        attempts: Vec::new(),
        name: t.name.clone(),
        reason: t.reason.clone().unwrap_or_default(),
        last_error: String::new(),
        started_at_ms: t.started_at_ms.unwrap_or(0),
        assigned: t.assigned,
        last_exit: String::new(),
        last_ended_at_ms: 0,
    }
}

pub fn task_spec_to_pb(t: &TaskSpec) -> pb::TaskSpec {
    pb::TaskSpec {
        argv: t.argv.clone(),
        env: t.env.clone().into_iter().collect(),
        slots: t.slots,
        max_retries: t.max_retries,
        timeout_ms: t.timeout.map_or(0, |d| d.as_millis() as u64),
        inputs: t.inputs.iter().map(|i| pb::TaskInput { object: i.object.clone(), path: i.path.clone() }).collect(),
        outputs: t.outputs.clone(),
        outputs_when: t.outputs_when.as_str().into(),
        resources: t.resources.clone().into_iter().collect(),
        checkpoint: t.checkpoint.clone().unwrap_or_default(),
        checkpoint_interval_ms: t.checkpoint_interval.map_or(0, |d| d.as_millis() as u64),
        nodes: t.nodes,
        coordination: t.coordination.clone().unwrap_or_default(),
    }
}

pub fn job_view(job: &Job) -> pb::Job {
    let c = job.counts;
    pb::Job {
        id: job.id.0,
        name: job.spec.name.clone(),
        pool: job.spec.pool.to_string(),
        priority: job.spec.priority,
        state: pb::JobState::of(job.state),
        counts: Some(pb::TaskCounts {
            waiting: c.waiting,
            ready: c.ready,
            running: c.started(),
            assigned: c.assigned,
            succeeded: c.succeeded,
            failed: c.failed,
            cancelled: c.cancelled,
        }),
        task: Some(task_spec_to_pb(&job.spec.task)),
        array_start: job.spec.first_index,
        array_end: job.spec.last_index,
        array_runs: job.spec.array.as_ref().map_or_else(Vec::new, |a| corral_proto::words::array_runs(a)),
        submitted_at_ms: job.submitted_at_ms,
        finished_at_ms: job.finished_at_ms.unwrap_or(0),
        graph: job.spec.graph.is_some(),
        open: job.spec.open,
        tasks: job.tasks.len() as u32,
        notify: job.spec.notify.as_ref().map(|url| pb::Notify {
            url: url.clone(),
            attempts: job.delivery.attempts,
            last_error: job.delivery.last_error.clone().unwrap_or_default(),
            delivered_at_ms: job.delivery.delivered_at_ms.unwrap_or(0),
        }),
        owner: job.spec.owner.clone(),
        max_output_bytes: job.spec.max_output,
        schedule: job.spec.schedule.as_ref().map(|r| r.schedule.to_string()).unwrap_or_default(),
        scheduled_for_ms: job.spec.schedule.as_ref().map_or(0, |r| r.slot_ms),
        template: job.spec.template.as_ref().map(|t| t.to_string()).unwrap_or_default(),
        begin_at_ms: job.spec.begin_at_ms.unwrap_or(0),
        policy: super::policy::policy_to_pb(&job.spec.policy),
        after: job.spec.after.iter().map(|a| pb::After { job_id: a.job.0, any: a.any }).collect(),
        waiting_for: job.held_by.iter().map(|j| j.0).collect(),
        reason: job.reason.clone().unwrap_or_default(),
        auto_pool: job.spec.auto_pool.is_some(),
    }
}

/// A token as clients see it: never its secret or hash.
pub fn token_pb(t: &crate::auth::TokenRecord) -> pb::Token {
    pb::Token {
        name: t.name.clone(),
        role: t.role.to_string(),
        pool: t.pool.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms.unwrap_or(0),
        created_by: t.created_by.clone(),
    }
}

/// An event as the API sends it.
pub fn event_pb(e: crate::events::Event) -> pb::Event {
    pb::Event {
        id: e.id,
        at_ms: e.at_ms,
        kind: e.kind.as_str().into(),
        pool: e.pool.unwrap_or_default(),
        job_id: e.job.unwrap_or_default(),
        task: e.task,
        attempt: e.attempt,
        node_id: e.node.unwrap_or_default(),
        state: e.state,
        detail: e.detail,
        actor: e.actor.unwrap_or_default(),
    }
}
