//! `corral pool ...`

use clap::Subcommand;
use corral_proto::v1 as pb;
use serde_json::json;

use super::Context;
use crate::client::ApiResult;
use crate::output;
use crate::Exit;

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Create a pool.
    Create {
        name: String,
        /// Tasks (of one slot each) a node runs at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        slots_per_node: u32,
        /// static: agents join by themselves; local: the coordinator starts agents on its host.
        #[arg(long, default_value = "static", value_parser = ["static", "local"])]
        provider: String,
        /// Nodes to run (local pools only).
        #[arg(long)]
        nodes: Option<u32>,
        /// spread: the node with the most free slots first; pack: fill busy nodes first.
        #[arg(long, default_value = "spread", value_parser = ["spread", "pack"])]
        fill: String,
    },
    /// List pools.
    List,
    /// Show one pool.
    Show { name: String },
    /// Change the number of nodes of a local pool.
    Resize {
        name: String,
        #[arg(long)]
        nodes: u32,
    },
    /// Delete a pool and stop its nodes (refused while it has active jobs, unless --force).
    Delete {
        name: String,
        /// Cancel the pool's active jobs.
        #[arg(long)]
        force: bool,
    },
}

pub fn pool_json(p: &pb::Pool) -> serde_json::Value {
    let spec = p.spec.clone().unwrap_or_default();
    json!({
        "name": spec.name,
        "provider": spec.provider,
        "slots_per_node": spec.slots_per_node,
        "target_nodes": spec.target_nodes,
        "fill": spec.fill,
        "nodes": p.nodes_by_state,
        "slots_total": p.slots_total,
        "slots_used": p.slots_used,
        "ready_tasks": p.ready_tasks,
        "active_jobs": p.active_jobs,
        "created_at_ms": p.created_at_ms,
        "last_error": (!p.last_error.is_empty()).then_some(&p.last_error),
    })
}

fn nodes_summary(p: &pb::Pool) -> String {
    let mut parts: Vec<String> = p.nodes_by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    parts.sort();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn print_pool(ctx: &Context, p: &pb::Pool) {
    if ctx.json() {
        return output::json(&pool_json(p));
    }
    let spec = p.spec.clone().unwrap_or_default();
    let mut rows = vec![
        ("name", spec.name.clone()),
        ("provider", spec.provider.clone()),
        ("slots per node", spec.slots_per_node.to_string()),
        ("fill", spec.fill.clone()),
    ];
    if spec.provider == "local" {
        rows.push(("target nodes", spec.target_nodes.to_string()));
    }
    rows.extend([
        ("nodes", nodes_summary(p)),
        ("slots used", format!("{}/{}", p.slots_used, p.slots_total)),
        ("ready tasks", p.ready_tasks.to_string()),
        ("active jobs", p.active_jobs.to_string()),
        ("created", output::timestamp(p.created_at_ms)),
    ]);
    if !p.last_error.is_empty() {
        rows.push(("last error", p.last_error.clone()));
    }
    output::fields(&rows);
}

impl PoolCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        match self {
            PoolCommand::Create { name, slots_per_node, provider, nodes, fill } => {
                if provider == "local" && nodes.is_none() {
                    anyhow::bail!("invalid --nodes: a local pool needs --nodes N, the number of agents to start");
                }
                let spec = pb::PoolSpec { name, slots_per_node, provider, target_nodes: nodes.unwrap_or(0), fill };
                let pool = client.create_pool(pb::CreatePoolRequest { spec: Some(spec) }).await.api()?;
                print_pool(ctx, &pool);
            }
            PoolCommand::List => {
                let pools = client.list_pools(pb::ListPoolsRequest {}).await.api()?.pools;
                if ctx.json() {
                    output::json(&pools.iter().map(pool_json).collect());
                } else {
                    let rows: Vec<Vec<String>> = pools
                        .iter()
                        .map(|p| {
                            let spec = p.spec.clone().unwrap_or_default();
                            vec![
                                spec.name,
                                spec.provider,
                                nodes_summary(p),
                                format!("{}/{}", p.slots_used, p.slots_total),
                                p.ready_tasks.to_string(),
                                p.active_jobs.to_string(),
                            ]
                        })
                        .collect();
                    output::table(&["NAME", "PROVIDER", "NODES", "SLOTS", "READY", "JOBS"], &rows);
                }
            }
            PoolCommand::Show { name } => {
                let pool = client.get_pool(pb::GetPoolRequest { name }).await.api()?;
                print_pool(ctx, &pool);
            }
            PoolCommand::Resize { name, nodes } => {
                let pool = client.resize_pool(pb::ResizePoolRequest { name, target_nodes: nodes }).await.api()?;
                print_pool(ctx, &pool);
            }
            PoolCommand::Delete { name, force } => {
                let resp = client.delete_pool(pb::DeletePoolRequest { name: name.clone(), force }).await.api()?;
                if ctx.json() {
                    output::json(&json!({
                        "deleted": name,
                        "cancelled_jobs": resp.cancelled_jobs,
                        "stopped_nodes": resp.stopped_nodes,
                    }));
                } else {
                    println!(
                        "deleted pool {name}: {} node(s) stopped, {} job(s) cancelled",
                        resp.stopped_nodes,
                        resp.cancelled_jobs.len()
                    );
                }
            }
        }
        Ok(Exit::Ok)
    }
}
