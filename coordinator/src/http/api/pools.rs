//! `GET /api/pools[/{name}]`: every pool (or one), with the numbers of `core::views`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Serialize;

use super::{read, Api};
use crate::model::*;
use crate::shared::Shared;

#[derive(Serialize)]
pub(super) struct PoolView {
    name: String,
    provider: &'static str,
    slots_per_node: u32,
    fill: &'static str,
    target_nodes: u32,
    autoscale: Option<AutoscaleView>,
    deleting: bool,
    last_error: Option<String>,
    nodes: BTreeMap<&'static str, u32>,
    slots: Slots,
    queue: Queue,
    scale_log: Vec<ScaleView>,
}

#[derive(Serialize)]
pub(super) struct AutoscaleView {
    min_nodes: u32,
    max_nodes: u32,
    target: u32,
}

#[derive(Serialize)]
pub(super) struct Slots {
    total: u32,
    used: u32,
    free: u32,
}

#[derive(Serialize)]
pub(super) struct Queue {
    ready: u64,
    running: u64,
    /// Sent ahead to a node and waiting there for a slot.
    assigned: u64,
}

#[derive(Serialize)]
pub(super) struct ScaleView {
    at_ms: u64,
    from: u32,
    to: u32,
    reason: String,
}

fn view(core: &crate::core::Core, pool: &crate::core::Pool, lost: u32) -> PoolView {
    let summary = core.pool_summary(pool);
    let live = [NodeState::Starting, NodeState::Idle, NodeState::Running, NodeState::Draining];
    let mut nodes: BTreeMap<&'static str, u32> =
        live.into_iter().map(|s| (s.as_str(), summary.nodes.get(&s).copied().unwrap_or(0))).collect();
    nodes.insert(NodeState::Lost.as_str(), lost);
    let slots = summary.slots;
    PoolView {
        name: pool.spec.name.to_string(),
        provider: pool.spec.provider.as_str(),
        slots_per_node: pool.spec.slots_per_node,
        fill: pool.spec.fill.as_str(),
        target_nodes: pool.spec.target_nodes,
        autoscale: pool.spec.autoscale.as_ref().map(|a| AutoscaleView {
            min_nodes: a.min,
            max_nodes: a.max,
            target: pool.spec.target_nodes,
        }),
        deleting: pool.deleting,
        last_error: pool.last_error.clone(),
        nodes,
        slots: Slots { total: slots.total, used: slots.used, free: slots.free },
        queue: Queue { ready: summary.ready, running: summary.running, assigned: summary.assigned },
        scale_log: pool
            .scale_log
            .iter()
            .map(|r| ScaleView { at_ms: r.at_ms, from: r.from, to: r.to, reason: r.reason.clone() })
            .collect(),
    }
}

pub(super) async fn pools(State(shared): State<Arc<Shared>>) -> Api<Vec<PoolView>> {
    read(&shared, |core, _| {
        let lost = core.lost_nodes_by_pool();
        Ok(core.pools.values().map(|pool| view(core, pool, lost.get(&pool.spec.name).copied().unwrap_or(0))).collect())
    })
    .await
}

/// `GET /api/pools/{name}`: one pool (its jobs are `GET /api/jobs?pool=NAME`).
pub(super) async fn pool(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Api<PoolView> {
    let name = PoolName::parse("name", &name).map_err(crate::error::Error::from)?;
    read(&shared, move |core, _| {
        let pool = core.pool(&name)?;
        let lost = core.lost_nodes_by_pool().get(&name).copied().unwrap_or(0);
        Ok(view(core, pool, lost))
    })
    .await
}
