//! `corral pool create`: a pool of static, local, command or docker nodes.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use corral_types::{Fill, Provider, RemovalPolicy};

use corral_proto::v1 as pb;

use super::super::Context;
use super::autoscale::AutoscaleArgs;
use super::render::print_pool;
use crate::client::{ApiResult, Client};
use crate::Exit;

/// `pool create NAME ...`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    name: String,
    /// Tasks (of one slot each) a node runs at once.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    slots_per_node: u32,
    /// static: agents join by themselves; local: the coordinator starts agents on its
    /// host; command: it runs --add-command and --remove-command (any cloud CLI or
    /// SSH script) to add and remove nodes; docker: it starts one container a node
    /// from --image.
    #[arg(long, default_value = "static", value_parser = PossibleValuesParser::new(Provider::ALL.iter().map(|p| p.as_str())).try_map(|p| p.parse::<Provider>()))]
    provider: Provider,
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
    #[arg(long, default_value = "60s", value_parser = corral_types::duration::parse)]
    command_timeout: std::time::Duration,
    /// spread: the node with the most free slots first; pack: fill busy nodes first.
    #[arg(long, default_value = "spread", value_parser = PossibleValuesParser::new(Fill::ALL.iter().map(|f| f.as_str())))]
    fill: String,
    #[command(flatten)]
    autoscale: AutoscaleArgs,
    #[command(flatten)]
    docker: DockerArgs,
    /// What removing a busy node does to its tasks: task-completion (finish them
    /// first), requeue (back to the queue) or terminate (kill and fail them).
    #[arg(long, default_value = "task-completion", value_parser = PossibleValuesParser::new(RemovalPolicy::ALL.iter().map(|r| r.as_str())))]
    removal_policy: String,
}

impl CreateArgs {
    pub async fn run(self, ctx: &Context, client: &mut Client) -> anyhow::Result<Exit> {
        let CreateArgs {
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
        } = self;
        if provider != Provider::Static && nodes.is_none() && !autoscale.autoscale {
            anyhow::bail!(
                "invalid --nodes: a {provider} pool needs --nodes N, the number of nodes to start (or --autoscale)"
            );
        }
        let commands = match (add_command, remove_command) {
            (Some(add), Some(remove)) => {
                Some(pb::ProviderCommands { add, remove, timeout_ms: corral_types::duration::ms(command_timeout) })
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
            provider: provider.to_string(),
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
        Ok(Exit::Ok)
    }
}

/// `pool create --provider docker ...`.
#[derive(clap::Args, Debug)]
pub struct DockerArgs {
    /// Docker pools: the image of the nodes' containers, with corral-agent on its PATH
    /// (`bash docker/agent-image.sh` builds corral-agent:latest from this checkout;
    /// nothing is pulled).
    #[arg(long)]
    pub image: Option<String>,
    /// Docker pools: the network the containers join [default: bridge].
    #[arg(long, requires = "image")]
    network: Option<String>,
    /// Docker pools: memory limit of each container, e.g. 512m, 2g.
    #[arg(long, requires = "image", value_parser = corral_types::size::parse)]
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
