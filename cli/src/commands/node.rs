//! `corral node ...`

use clap::Subcommand;
use corral_proto::v1 as pb;
use serde_json::json;

use super::Context;
use crate::client::ApiResult;
use crate::output;
use crate::Exit;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List nodes (all pools, or one).
    List {
        #[arg(long)]
        pool: Option<String>,
    },
    /// Show one node, with the tasks it runs.
    Show { id: String },
    /// Stop giving a node new tasks; what it runs finishes.
    Drain { id: String },
    /// Remove a node (its agent is stopped if the coordinator started it).
    Remove {
        id: String,
        /// What happens to its tasks [default: its pool's removal policy].
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(corral_types::RemovalPolicy::ALL.iter().map(|r| r.as_str())))]
        policy: Option<String>,
    },
}

pub fn node_json(n: &pb::Node) -> serde_json::Value {
    json!({
        "id": n.id,
        "pool": n.pool,
        "state": n.state().as_word(),
        "reason": (!n.reason.is_empty()).then_some(&n.reason),
        "hostname": n.hostname,
        "slots": n.slots,
        "slots_used": n.slots_used,
        "cpus": n.cpus,
        "memory_bytes": n.memory_bytes,
        "cpu_percent": n.cpu_percent,
        "memory_used_bytes": n.memory_used_bytes,
        "heartbeat_age_ms": n.heartbeat_age_ms,
        "registered_at_ms": n.registered_at_ms,
        "pid": n.pid,
        "running": n.running.iter().map(|t| json!({"job_id": t.job_id, "index": t.index, "attempt": t.attempt})).collect::<Vec<_>>(),
        "queued": n.queued.iter().map(|t| json!({"job_id": t.job_id, "index": t.index, "attempt": t.attempt})).collect::<Vec<_>>(),
        "resources": resources_json(n),
    })
}

/// Each resource with what the node has, what its tasks hold, and what is free.
fn resources_json(n: &pb::Node) -> serde_json::Value {
    let mut all = serde_json::Map::new();
    for (name, has) in resources(n) {
        let used = n.resources_used.get(&name).copied().unwrap_or(0);
        all.insert(name, json!({"total": has, "used": used, "free": has.saturating_sub(used)}));
    }
    serde_json::Value::Object(all)
}

fn resources(n: &pb::Node) -> std::collections::BTreeMap<String, u64> {
    n.resources.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// `gpus 1/4 used, licenses 0/2 used, mem 4.0 GiB/62.8 GiB used`.
fn resources_line(n: &pb::Node) -> String {
    let items: Vec<String> = resources(n)
        .into_iter()
        .map(|(name, has)| {
            let used = n.resources_used.get(&name).copied().unwrap_or(0);
            if name == corral_types::resources::MEM {
                format!("{name} {}/{} used", corral_types::size::show(used), corral_types::size::show(has))
            } else {
                format!("{name} {used}/{has} used")
            }
        })
        .collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

fn state_with_reason(n: &pb::Node) -> String {
    if n.reason.is_empty() {
        n.state().as_word().to_string()
    } else {
        format!("{} ({})", n.state().as_word(), n.reason)
    }
}

impl NodeCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        match self {
            NodeCommand::List { pool } => {
                let nodes =
                    client.list_nodes(pb::ListNodesRequest { pool: pool.unwrap_or_default() }).await.api()?.nodes;
                if ctx.json() {
                    output::json(&nodes.iter().map(node_json).collect());
                } else {
                    let rows: Vec<Vec<String>> = nodes
                        .iter()
                        .map(|n| {
                            vec![
                                n.id.clone(),
                                n.pool.clone(),
                                state_with_reason(n),
                                format!("{}/{}", n.slots_used, n.slots),
                                n.queued.len().to_string(),
                                format!("{:.0}%", n.cpu_percent),
                                format!("{} MiB", n.memory_used_bytes >> 20),
                                output::duration_ms(n.heartbeat_age_ms),
                                n.hostname.clone(),
                            ]
                        })
                        .collect();
                    output::table(&["ID", "POOL", "STATE", "SLOTS", "QUEUED", "CPU", "MEM", "HEARD", "HOST"], &rows);
                }
            }
            NodeCommand::Show { id } => {
                let n = client.get_node(pb::GetNodeRequest { id }).await.api()?;
                if ctx.json() {
                    output::json(&node_json(&n));
                } else {
                    let running: Vec<String> =
                        n.running.iter().map(|t| format!("{}.{} (attempt {})", t.job_id, t.index, t.attempt)).collect();
                    output::fields(&[
                        ("id", n.id.clone()),
                        ("pool", n.pool.clone()),
                        ("state", state_with_reason(&n)),
                        ("host", format!("{} (pid {})", n.hostname, n.pid)),
                        ("slots", format!("{}/{} used", n.slots_used, n.slots)),
                        ("queued", format!("{} task(s) sent ahead, waiting for a slot", n.queued.len())),
                        ("cpus", n.cpus.to_string()),
                        ("memory", format!("{} MiB used of {} MiB", n.memory_used_bytes >> 20, n.memory_bytes >> 20)),
                        ("cpu use", format!("{:.0}%", n.cpu_percent)),
                        ("last heard", format!("{} ago", output::duration_ms(n.heartbeat_age_ms))),
                        ("registered", output::timestamp(n.registered_at_ms)),
                        ("resources", resources_line(&n)),
                        ("running", if running.is_empty() { "-".into() } else { running.join(", ") }),
                    ]);
                }
            }
            NodeCommand::Remove { id, policy } => {
                let n =
                    client.remove_node(pb::RemoveNodeRequest { id, policy: policy.unwrap_or_default() }).await.api()?;
                if ctx.json() {
                    output::json(&node_json(&n));
                } else if n.state() == pb::NodeState::Draining {
                    println!("node {} will be removed when its {} running slot(s) are done", n.id, n.slots_used);
                } else {
                    println!("node {} removed", n.id);
                }
            }
            NodeCommand::Drain { id } => {
                let n = client.drain_node(pb::DrainNodeRequest { id }).await.api()?;
                if ctx.json() {
                    output::json(&node_json(&n));
                } else {
                    println!("node {} is draining: it takes no new tasks; {} slot(s) still busy", n.id, n.slots_used);
                }
            }
        }
        Ok(Exit::Ok)
    }
}
