//! `corral pool autoscale` and `corral pool explain`, and the autoscaling flags of
//! `pool create`.

use serde_json::json;

use corral_proto::v1 as pb;
use corral_types::words::Provider;

use super::super::Context;
use super::render::{print_pool, scale_log_json};
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

/// `pool create --autoscale ...`.
#[derive(clap::Args, Debug)]
pub struct AutoscaleArgs {
    /// Size the pool to its queue, between --min and --max nodes (local pools).
    #[arg(long, requires = "max")]
    pub autoscale: bool,
    #[command(flatten)]
    pub settings: AutoscaleSettings,
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
    #[arg(long, value_parser = corral_types::duration::parse)]
    idle_timeout: Option<std::time::Duration>,
    /// Start at most this many nodes an evaluation [default: up to max at once].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    scale_up_step: Option<u32>,
    /// No shrinking within this long of the last change [default: 0s].
    #[arg(long, value_parser = corral_types::duration::parse)]
    cooldown: Option<std::time::Duration>,
}

impl AutoscaleSettings {
    pub fn given(&self) -> bool {
        self.min.is_some()
            || self.max.is_some()
            || self.idle_timeout.is_some()
            || self.scale_up_step.is_some()
            || self.cooldown.is_some()
    }

    /// These settings over `base`.
    pub fn over(&self, base: pb::AutoscaleSpec) -> pb::AutoscaleSpec {
        pb::AutoscaleSpec {
            min: self.min.unwrap_or(base.min),
            max: self.max.unwrap_or(base.max),
            idle_timeout_ms: self.idle_timeout.map_or(base.idle_timeout_ms, corral_types::duration::ms),
            step: self.scale_up_step.unwrap_or(base.step),
            cooldown_ms: self.cooldown.map_or(base.cooldown_ms, corral_types::duration::ms),
        }
    }
}

/// `pool autoscale NAME --enable|--disable ...`.
pub async fn set(
    ctx: &Context,
    client: &mut Client,
    name: String,
    enable: bool,
    disable: bool,
    settings: AutoscaleSettings,
) -> anyhow::Result<Exit> {
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
    Ok(Exit::Ok)
}

/// `pool explain NAME`: why the pool has the size it has.
pub async fn explain(ctx: &Context, client: &mut Client, name: String) -> anyhow::Result<Exit> {
    let pool = client.get_pool(pb::GetPoolRequest { name: name.clone() }).await.api()?;
    if ctx.json() {
        output::json(&json!({"name": name, "autoscale_now": pool.autoscale_now, "scale_log": scale_log_json(&pool)}));
    } else {
        let spec = pool.spec.clone().unwrap_or_default();
        match &spec.autoscale {
            None => println!(
                "pool {name} is not autoscaled: it has {} node(s) because {}",
                spec.target_nodes,
                if spec.provider.parse() == Ok(Provider::Static) {
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
    Ok(Exit::Ok)
}
