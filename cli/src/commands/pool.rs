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
        /// static: agents join by themselves; local: the coordinator starts agents on its
        /// host; command: it runs --add-command and --remove-command (any cloud CLI or
        /// SSH script) to add and remove nodes; docker: it starts one container a node
        /// from --image.
        #[arg(long, default_value = "static", value_parser = ["static", "local", "command", "docker"])]
        provider: String,
        /// Nodes to run (local and command pools).
        #[arg(long)]
        nodes: Option<u32>,
        /// Command pools: adds one node; it must start `corral-agent --coordinator
        /// $CORRAL_COORDINATOR --pool $CORRAL_POOL --slots $CORRAL_SLOTS --launch-id
        /// $CORRAL_NODE_IDS` somewhere, its output not on this command's stdout.
        #[arg(long, requires = "remove_command")]
        add_command: Option<String>,
        /// Command pools: removes the node $CORRAL_NODE_IDS (agent pid $CORRAL_NODE_PIDS).
        #[arg(long, requires = "add_command")]
        remove_command: Option<String>,
        /// Run with `sh -c` on every node as it joins, before it takes work; a node on
        /// which it fails takes no work.
        #[arg(long)]
        start_task: Option<String>,
        /// Command pools: kill a command that runs longer than this.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        command_timeout: std::time::Duration,
        /// spread: the node with the most free slots first; pack: fill busy nodes first.
        #[arg(long, default_value = "spread", value_parser = ["spread", "pack"])]
        fill: String,
        #[command(flatten)]
        autoscale: AutoscaleArgs,
        #[command(flatten)]
        docker: DockerArgs,
        /// What removing a busy node does to its tasks: task-completion (finish them
        /// first), requeue (back to the queue) or terminate (kill and fail them).
        #[arg(long, default_value = "task-completion", value_parser = ["task-completion", "requeue", "terminate"])]
        removal_policy: String,
    },
    /// Change how a pool autoscales: --enable (with bounds) or --disable.
    Autoscale {
        name: String,
        /// Turn autoscaling on (the default when bounds are given).
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Turn it off; the pool keeps its current size.
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        settings: AutoscaleSettings,
    },
    /// Say why a pool has the size it has: the autoscaler's view now and its last decisions.
    Explain { name: String },
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
    /// Delete a pool and stop its nodes (containers, processes, machines). With active
    /// jobs, its nodes go by its removal policy (task-completion: after their running
    /// tasks), then what has not run of the jobs is cancelled.
    Delete {
        name: String,
        /// Cancel the pool's jobs and stop its nodes now, killing their tasks.
        #[arg(long)]
        force: bool,
    },
}

/// `pool create --provider docker ...`.
#[derive(clap::Args, Debug)]
pub struct DockerArgs {
    /// Docker pools: the image of the nodes' containers, with corral-agent on its PATH
    /// (`bash docker/agent-image.sh` builds corral-agent:latest from this checkout;
    /// nothing is pulled).
    #[arg(long)]
    image: Option<String>,
    /// Docker pools: the network the containers join [default: bridge].
    #[arg(long, requires = "image")]
    network: Option<String>,
    /// Docker pools: memory limit of each container, e.g. 512m, 2g.
    #[arg(long, requires = "image", value_parser = corral_proto::size::parse)]
    memory: Option<u64>,
    /// Docker pools: CPU limit of each container, e.g. 1.5.
    #[arg(long, requires = "image", value_parser = parse_cpus)]
    cpus: Option<u64>,
    /// Docker pools: where the agents reach the coordinator [default:
    /// http://host.docker.internal:PORT, which needs the coordinator to listen on
    /// 0.0.0.0 or another address containers reach].
    #[arg(long, requires = "image")]
    coordinator_url: Option<String>,
}

impl DockerArgs {
    fn spec(self) -> Option<pb::DockerSpec> {
        Some(pb::DockerSpec {
            image: self.image?,
            network: self.network.unwrap_or_default(),
            memory_bytes: self.memory.unwrap_or(0),
            nano_cpus: self.cpus.unwrap_or(0),
            coordinator_url: self.coordinator_url.unwrap_or_default(),
        })
    }
}

/// CPUs as a decimal (`1.5`), in billionths.
pub fn parse_cpus(s: &str) -> Result<u64, String> {
    let cpus: f64 = s.trim().parse().map_err(|_| format!("'{s}' is not a number of CPUs; write e.g. 1 or 1.5"))?;
    if !(0.01..=4096.0).contains(&cpus) {
        return Err(format!("'{s}' CPUs: give between 0.01 and 4096"));
    }
    Ok((cpus * 1e9).round() as u64)
}

/// `pool create --autoscale ...`.
#[derive(clap::Args, Debug)]
pub struct AutoscaleArgs {
    /// Size the pool to its queue, between --min and --max nodes (local pools).
    #[arg(long, requires = "max")]
    autoscale: bool,
    #[command(flatten)]
    settings: AutoscaleSettings,
}

/// Autoscaling bounds and pace; what is not given keeps its current (or default) value.
#[derive(clap::Args, Debug)]
pub struct AutoscaleSettings {
    /// Fewest nodes [default: 0].
    #[arg(long)]
    min: Option<u32>,
    /// Most nodes.
    #[arg(long)]
    max: Option<u32>,
    /// Remove a node once idle this long [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_timeout: Option<std::time::Duration>,
    /// Start at most this many nodes an evaluation [default: up to max at once].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    scale_up_step: Option<u32>,
    /// No shrinking within this long of the last change [default: 0s].
    #[arg(long, value_parser = humantime::parse_duration)]
    cooldown: Option<std::time::Duration>,
}

impl AutoscaleSettings {
    fn given(&self) -> bool {
        self.min.is_some()
            || self.max.is_some()
            || self.idle_timeout.is_some()
            || self.scale_up_step.is_some()
            || self.cooldown.is_some()
    }

    /// These settings over `base`.
    fn over(&self, base: pb::AutoscaleSpec) -> pb::AutoscaleSpec {
        pb::AutoscaleSpec {
            min: self.min.unwrap_or(base.min),
            max: self.max.unwrap_or(base.max),
            idle_timeout_ms: self.idle_timeout.map_or(base.idle_timeout_ms, |d| d.as_millis() as u64),
            step: self.scale_up_step.unwrap_or(base.step),
            cooldown_ms: self.cooldown.map_or(base.cooldown_ms, |d| d.as_millis() as u64),
        }
    }
}

fn scale_log_json(p: &pb::Pool) -> serde_json::Value {
    p.scale_log.iter().map(|r| json!({"at_ms": r.at_ms, "from": r.from, "to": r.to, "reason": r.reason})).collect()
}

pub fn pool_json(p: &pb::Pool) -> serde_json::Value {
    let spec = p.spec.clone().unwrap_or_default();
    json!({
        "name": spec.name,
        "provider": spec.provider,
        "slots_per_node": spec.slots_per_node,
        "target_nodes": spec.target_nodes,
        "fill": spec.fill,
        "removal_policy": spec.removal_policy,
        "start_task": (!spec.start_task.is_empty()).then_some(&spec.start_task),
        "docker": spec.docker.as_ref().map(|d| json!({
            "image": d.image, "network": d.network, "memory_bytes": d.memory_bytes,
            "nano_cpus": d.nano_cpus, "coordinator_url": d.coordinator_url,
        })),
        "nodes": p.nodes_by_state,
        "slots_total": p.slots_total,
        "slots_used": p.slots_used,
        "slots_free": p.slots_free,
        "ready_tasks": p.ready_tasks,
        "active_jobs": p.active_jobs,
        "created_at_ms": p.created_at_ms,
        "last_error": (!p.last_error.is_empty()).then_some(&p.last_error),
        "deleting": p.deleting,
        "autoscale": spec.autoscale.map(|a| json!({
            "min": a.min, "max": a.max, "idle_timeout_ms": a.idle_timeout_ms, "step": a.step, "cooldown_ms": a.cooldown_ms,
        })),
        "autoscale_now": (!p.autoscale_now.is_empty()).then_some(&p.autoscale_now),
        "scale_log": scale_log_json(p),
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
        ("name", spec.name.clone() + if p.deleting { " (being deleted)" } else { "" }),
        ("provider", spec.provider.clone()),
        ("slots per node", spec.slots_per_node.to_string()),
        ("fill", spec.fill.clone()),
        ("removal policy", spec.removal_policy.clone()),
        ("start task", if spec.start_task.is_empty() { "-".into() } else { spec.start_task.clone() }),
    ];
    if spec.provider != "static" {
        rows.push(("target nodes", spec.target_nodes.to_string()));
    }
    if let Some(d) = &spec.docker {
        let mut limits = Vec::new();
        if d.memory_bytes != 0 {
            limits.push(format!("memory {} MiB", d.memory_bytes >> 20));
        }
        if d.nano_cpus != 0 {
            limits.push(format!("{} CPUs", d.nano_cpus as f64 / 1e9));
        }
        let limits = if limits.is_empty() { "no limits".to_string() } else { limits.join(", ") };
        rows.push(("containers", format!("{} on network {}, {limits}", d.image, d.network)));
    }
    if let Some(a) = &spec.autoscale {
        rows.push((
            "autoscale",
            format!(
                "{}..{} nodes, remove after {} idle, up to {} at a time, cooldown {}",
                a.min,
                a.max,
                output::duration_ms(a.idle_timeout_ms),
                a.step,
                output::duration_ms(a.cooldown_ms)
            ),
        ));
        for r in p.scale_log.iter().rev().take(3) {
            rows.push(("scaled", format!("{} {} -> {}: {}", output::timestamp(r.at_ms), r.from, r.to, r.reason)));
        }
    }
    rows.extend([
        ("nodes", nodes_summary(p)),
        ("slots used", format!("{}/{} ({} free)", p.slots_used, p.slots_total, p.slots_free)),
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
            PoolCommand::Create {
                name,
                slots_per_node,
                provider,
                nodes,
                fill,
                autoscale,
                removal_policy,
                add_command,
                remove_command,
                command_timeout,
                start_task,
                docker,
            } => {
                if provider != "static" && nodes.is_none() && !autoscale.autoscale {
                    anyhow::bail!(
                        "invalid --nodes: a {provider} pool needs --nodes N, the number of nodes to start (or --autoscale)"
                    );
                }
                let commands = match (add_command, remove_command) {
                    (Some(add), Some(remove)) => {
                        Some(pb::ProviderCommands { add, remove, timeout_ms: command_timeout.as_millis() as u64 })
                    }
                    _ => None,
                };
                if autoscale.settings.given() && !autoscale.autoscale {
                    anyhow::bail!("invalid --min/--max: they are autoscaling bounds; add --autoscale");
                }
                let auto = autoscale.autoscale.then(|| autoscale.settings.over(pb::AutoscaleSpec::default()));
                let target_nodes = nodes.unwrap_or(0);
                let spec = pb::PoolSpec {
                    name,
                    slots_per_node,
                    provider,
                    target_nodes,
                    fill,
                    autoscale: auto,
                    removal_policy,
                    commands,
                    start_task: start_task.unwrap_or_default(),
                    docker: docker.spec(),
                };
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
            PoolCommand::Autoscale { name, enable, disable, settings } => {
                let current = client.get_pool(pb::GetPoolRequest { name: name.clone() }).await.api()?;
                let base = current.spec.and_then(|s| s.autoscale);
                let autoscale = if disable {
                    None
                } else if enable || settings.given() {
                    if base.is_none() && settings.max.is_none() {
                        anyhow::bail!("invalid --max: give the most nodes the pool may have");
                    }
                    Some(settings.over(base.unwrap_or_default()))
                } else {
                    anyhow::bail!("say --enable (with --min/--max ...) or --disable");
                };
                let pool = client.set_autoscale(pb::SetAutoscaleRequest { name, autoscale }).await.api()?;
                print_pool(ctx, &pool);
            }
            PoolCommand::Explain { name } => {
                let pool = client.get_pool(pb::GetPoolRequest { name: name.clone() }).await.api()?;
                if ctx.json() {
                    output::json(
                        &json!({"name": name, "autoscale_now": pool.autoscale_now, "scale_log": scale_log_json(&pool)}),
                    );
                } else {
                    let spec = pool.spec.clone().unwrap_or_default();
                    match &spec.autoscale {
                        None => println!(
                            "pool {name} is not autoscaled: it has {} node(s) because {}",
                            spec.target_nodes,
                            if spec.provider == "static" {
                                "that many agents joined it"
                            } else {
                                "its size was set so"
                            }
                        ),
                        Some(_) => {
                            println!("now: {}", pool.autoscale_now);
                            if pool.scale_log.is_empty() {
                                println!("the autoscaler has not changed the size yet");
                            }
                            for r in &pool.scale_log {
                                println!("{}  {} -> {}  {}", output::timestamp(r.at_ms), r.from, r.to, r.reason);
                            }
                        }
                    }
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
                        "draining_nodes": resp.draining_nodes,
                    }));
                } else if resp.draining_nodes > 0 {
                    println!(
                        "deleting pool {name}: {} node(s) stopped; {} node(s) finish their running tasks first, then the pool is deleted and what has not run of its jobs is cancelled (--force stops them now)",
                        resp.stopped_nodes, resp.draining_nodes
                    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_billionths() {
        assert_eq!(parse_cpus("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("lots").unwrap_err().contains("number of CPUs"));
    }
}
