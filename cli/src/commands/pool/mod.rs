//! `corral pool ...`: one file per subcommand, with the shared rendering in
//! [`render`].

use clap::Subcommand;

use super::Context;
use crate::Exit;

mod autoscale;
mod create;
pub use create::parse_cpus;
mod delete;
mod list;
pub mod render;
mod resize;
mod show;

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Create a pool.
    Create(Box<create::CreateArgs>),
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
        settings: autoscale::AutoscaleSettings,
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

impl PoolCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        let client = &mut client;
        match self {
            PoolCommand::Create(args) => args.run(ctx, client).await,
            PoolCommand::List => list::run(ctx, client).await,
            PoolCommand::Autoscale { name, enable, disable, settings } => {
                autoscale::set(ctx, client, name, enable, disable, settings).await
            }
            PoolCommand::Explain { name } => autoscale::explain(ctx, client, name).await,
            PoolCommand::Show { name } => show::run(ctx, client, name).await,
            PoolCommand::Resize { name, nodes } => resize::run(ctx, client, name, nodes).await,
            PoolCommand::Delete { name, force } => delete::run(ctx, client, name, force).await,
        }
    }
}
