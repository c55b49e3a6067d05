//! `GET /api/nodes`: nodes, live first, with their recent usage.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use super::{read, Api};
use crate::core::{Core, Node};
use crate::model::*;
use crate::shared::Shared;

#[derive(Deserialize)]
pub(super) struct NodesQuery {
    pool: Option<String>,
}

#[derive(Serialize)]
pub(super) struct NodeView {
    id: String,
    pool: String,
    hostname: String,
    state: &'static str,
    reason: Option<&'static str>,
    slots: u32,
    slots_used: u32,
    cpus: u32,
    memory_bytes: u64,
    heartbeat_age_ms: Option<u64>,
    cpu_percent: f32,
    memory_used_bytes: u64,
    usage: Vec<UsageView>,
    running: Vec<RunningView>,
    /// Attempts sent ahead, waiting on it for a slot.
    queued: Vec<RunningView>,
    /// What it has beyond slots, and what its running tasks hold of it.
    resources: crate::model::Resources,
    resources_used: crate::model::Resources,
}

#[derive(Serialize)]
pub(super) struct UsageView {
    at_ms: u64,
    cpu_percent: f32,
    memory_used_bytes: u64,
}

#[derive(Serialize)]
pub(super) struct RunningView {
    job: u64,
    index: u32,
    attempt: u32,
}

impl RunningView {
    fn of(a: &crate::model::AttemptRef) -> Self {
        RunningView { job: a.task.job.0, index: a.task.index, attempt: a.attempt }
    }
}

fn node_view(core: &Core, node: &Node, now: Instant) -> NodeView {
    let r = &node.record;
    let summary = core.node_summary(node, now);
    NodeView {
        id: r.id.to_string(),
        pool: r.pool.to_string(),
        hostname: r.hostname.clone(),
        state: summary.state.as_str(),
        reason: r.reason.map(|x| x.as_str()),
        slots: r.slots,
        slots_used: summary.slots_running,
        cpus: r.cpus,
        memory_bytes: r.memory_bytes,
        heartbeat_age_ms: summary.live.then_some(summary.heartbeat_age_ms),
        cpu_percent: node.cpu_percent,
        memory_used_bytes: node.memory_used_bytes,
        // A node that is gone has no use for its last samples.
        usage: node
            .usage
            .iter()
            .filter(|_| summary.live)
            .map(|u| UsageView { at_ms: u.at_ms, cpu_percent: u.cpu_percent, memory_used_bytes: u.memory_used_bytes })
            .collect(),
        running: summary.running.iter().map(RunningView::of).collect(),
        queued: summary.queued.iter().map(RunningView::of).collect(),
        resources: r.resources.clone(),
        resources_used: node.resources_used.clone(),
    }
}

pub(super) async fn nodes(State(shared): State<Arc<Shared>>, Query(q): Query<NodesQuery>) -> Api<Vec<NodeView>> {
    let pool = q.pool.filter(|p| !p.is_empty()).map(|p| PoolName::parse("pool", &p)).transpose()?;
    read(&shared, move |core, now| {
        let mut nodes: Vec<&Node> =
            core.nodes.values().filter(|n| pool.as_ref().is_none_or(|p| n.record.pool == *p)).collect();
        // Live nodes first, then the lost and removed, newest first.
        nodes.sort_by_key(|n| (!n.status().is_live(), std::cmp::Reverse(n.record.registered_at_ms)));
        Ok(nodes.into_iter().map(|n| node_view(core, n, now)).collect())
    })
    .await
}
