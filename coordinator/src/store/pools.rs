//! The `pools` and `nodes` tables, written and read by column name in this one
//! place: the columns are listed once, for the upsert and the restart's read alike.

use std::sync::LazyLock;

use super::sql::{in_order, upsert, Named, Sql, SqlExt, ToValue};
use super::{corrupt, from_json, to_json};
use crate::core::NodeRecord;
use crate::error::Result;
use crate::model::*;

const POOL_COLUMNS: &[&str] = &[
    "name",
    "slots_per_node",
    "provider",
    "target_nodes",
    "fill",
    "created_at_ms",
    "autoscale",
    "removal",
    "commands",
    "start_task",
    "docker",
    "deleting",
];

const NODE_COLUMNS: &[&str] = &[
    "id",
    "pool",
    "hostname",
    "slots",
    "cpus",
    "memory_bytes",
    "pid",
    "status",
    "reason",
    "registered_at_ms",
    "resources",
];

// Each row is written whole, replacing the one with its key.
static PUT_POOL: LazyLock<String> = LazyLock::new(|| upsert("pools", POOL_COLUMNS, &["name"], &[]));
static PUT_NODE: LazyLock<String> = LazyLock::new(|| upsert("nodes", NODE_COLUMNS, &["id"], &[]));

pub(super) fn put_pool(tx: &mut dyn Sql, spec: &PoolSpec, created_at_ms: u64, deleting: bool) -> Result<()> {
    let (autoscale, commands, docker) = (to_json(&spec.autoscale)?, to_json(&spec.commands)?, to_json(&spec.docker)?);
    let values = in_order(
        POOL_COLUMNS,
        vec![
            ("name", spec.name.as_str().to_value()),
            ("slots_per_node", spec.slots_per_node.to_value()),
            ("provider", spec.provider.as_str().to_value()),
            ("target_nodes", spec.target_nodes.to_value()),
            ("fill", spec.fill.as_str().to_value()),
            ("created_at_ms", created_at_ms.to_value()),
            ("autoscale", autoscale.to_value()),
            ("removal", spec.removal.as_str().to_value()),
            ("commands", commands.to_value()),
            ("start_task", spec.start_task.to_value()),
            ("docker", docker.to_value()),
            ("deleting", deleting.to_value()),
        ],
    );
    tx.execute(&PUT_POOL, values)
}

pub(super) fn put_node(tx: &mut dyn Sql, n: &NodeRecord) -> Result<()> {
    let resources = match n.resources.is_empty() {
        true => None,
        false => Some(serde_json::to_string(&n.resources).map_err(|e| corrupt(e.to_string()))?),
    };
    let reason = n.reason.map(|r| r.as_str());
    let values = in_order(
        NODE_COLUMNS,
        vec![
            ("id", n.id.0.to_value()),
            ("pool", n.pool.as_str().to_value()),
            ("hostname", n.hostname.to_value()),
            ("slots", n.slots.to_value()),
            ("cpus", n.cpus.to_value()),
            ("memory_bytes", n.memory_bytes.to_value()),
            ("pid", n.pid.to_value()),
            ("status", n.status.as_str().to_value()),
            ("reason", reason.to_value()),
            ("registered_at_ms", n.registered_at_ms.to_value()),
            ("resources", resources.to_value()),
        ],
    );
    tx.execute(&PUT_NODE, values)
}

fn pool_of(r: Named<'_>) -> Result<(PoolSpec, u64, bool)> {
    let removal: Option<String> = r.get("removal")?;
    let spec = PoolSpec {
        name: PoolName::parse("pool", &r.get::<String>("name")?).map_err(corrupt)?,
        slots_per_node: r.get("slots_per_node")?,
        provider: r.get::<String>("provider")?.parse().map_err(corrupt)?,
        target_nodes: r.get("target_nodes")?,
        fill: r.get::<String>("fill")?.parse().map_err(corrupt)?,
        autoscale: from_json(r.get("autoscale")?)?,
        removal: removal.map(|r| r.parse()).transpose().map_err(corrupt)?.unwrap_or(RemovalPolicy::TaskCompletion),
        commands: from_json(r.get("commands")?)?,
        docker: from_json(r.get("docker")?)?,
        start_task: r.get("start_task")?,
    };
    Ok((spec, r.get("created_at_ms")?, r.get("deleting")?))
}

fn node_of(r: Named<'_>) -> Result<NodeRecord> {
    let resources: Option<String> = r.get("resources")?;
    let reason: Option<String> = r.get("reason")?;
    Ok(NodeRecord {
        id: NodeId(r.get("id")?),
        pool: PoolName::parse("pool", &r.get::<String>("pool")?).map_err(corrupt)?,
        hostname: r.get("hostname")?,
        slots: r.get("slots")?,
        cpus: r.get("cpus")?,
        memory_bytes: r.get("memory_bytes")?,
        pid: r.get("pid")?,
        status: r.get::<String>("status")?.parse().map_err(corrupt)?,
        reason: reason.map(|r| r.parse()).transpose().map_err(corrupt)?,
        registered_at_ms: r.get("registered_at_ms")?,
        resources: match resources {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?,
            None => Resources::new(),
        },
    })
}

/// Every pool: its spec, when it was made, and whether it is being deleted.
pub(super) fn load_pools(sql: &mut dyn Sql) -> Result<Vec<(PoolSpec, u64, bool)>> {
    let query = format!("SELECT {} FROM pools ORDER BY name", POOL_COLUMNS.join(", "));
    sql.rows(&query, vec![], |r| pool_of(r.named(POOL_COLUMNS)))
}

/// Every node the store holds.
pub(super) fn load_nodes(sql: &mut dyn Sql) -> Result<Vec<NodeRecord>> {
    let query = format!("SELECT {} FROM nodes ORDER BY id", NODE_COLUMNS.join(", "));
    sql.rows(&query, vec![], |r| node_of(r.named(NODE_COLUMNS)))
}
