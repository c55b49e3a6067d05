//! `corral up`: a coordinator and a local pool in the foreground, like `nomad agent -dev`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use corral_coordinator::{Config, Coordinator};
use corral_proto::v1 as pb;

use super::Context;
use crate::client::{self, ApiResult};
use crate::Exit;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// gRPC address to listen on.
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Where to serve the web dashboard and /metrics ("off": nowhere).
    #[arg(long, env = "CORRAL_HTTP", default_value = "127.0.0.1:7080")]
    http: String,
    /// Where the store and logs live; kept between runs.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "corral-data")]
    data_dir: PathBuf,
    /// The local pool to create if it does not exist.
    #[arg(long, default_value = "local")]
    pool: String,
    /// Agents in the local pool.
    #[arg(long, default_value_t = 2)]
    nodes: u32,
    /// Slots per agent [default: CPUs / nodes, at least 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    slots_per_node: Option<u32>,
}

/// Starts a coordinator whose local pools run this very binary as `corral agent`,
/// serving the dashboard on `http` if given.
pub async fn start_coordinator(
    listen: SocketAddr,
    http: Option<SocketAddr>,
    data_dir: &Path,
) -> anyhow::Result<Coordinator> {
    let mut config = Config::new(listen, data_dir.to_path_buf());
    config.http = http;
    let exe = std::env::current_exe().context("cannot find the corral executable to start agents with")?;
    config.agent_command = vec![exe.into_os_string(), "agent".into()];
    Coordinator::start(config)
        .await
        .with_context(|| format!("cannot start a coordinator on {listen} with data dir {}", data_dir.display()))
}

/// The coordinator's first admin token, which it wrote to `DATA_DIR/admin.token`.
pub fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = corral_coordinator::auth::bootstrap::admin_token_path(data_dir);
    corral_proto::credentials::load(Some(&path)).map_err(anyhow::Error::msg)?.context("no admin token")
}

/// Creates a local pool unless one of that name exists.
pub async fn ensure_local_pool(client: &mut client::Client, name: &str, nodes: u32, slots: u32) -> anyhow::Result<()> {
    if client.get_pool(pb::GetPoolRequest { name: name.into() }).await.is_ok() {
        return Ok(());
    }
    let spec = pb::PoolSpec {
        name: name.into(),
        slots_per_node: slots,
        provider: corral_types::Provider::Local.to_string(),
        target_nodes: nodes,
        fill: corral_types::Fill::Spread.to_string(),
        ..Default::default()
    };
    client.create_pool(pb::CreatePoolRequest { spec: Some(spec) }).await.api()?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

impl UpArgs {
    pub async fn run(self, _ctx: &Context) -> anyhow::Result<Exit> {
        let http = match self.http.as_str() {
            "off" => None,
            addr => Some(addr.parse().with_context(|| {
                format!("invalid --http '{addr}': expected an address like 127.0.0.1:7080, or off")
            })?),
        };
        let coordinator = start_coordinator(self.listen, http, &self.data_dir).await?;
        let url = format!("http://{}", coordinator.addr());
        let token = admin_token(&self.data_dir)?;
        let mut client = client::connect(&url, Some(&token), &Default::default()).await?;
        let slots = self.slots_per_node.unwrap_or_else(|| (cpus() / self.nodes.max(1)).max(1));
        ensure_local_pool(&mut client, &self.pool, self.nodes, slots).await?;
        println!("Corral is up at {url}, data in {}", self.data_dir.display());
        if let Some(http) = coordinator.http_addr() {
            println!("Dashboard: http://{http}/");
        }
        println!("Pool '{}': local, {} node(s) x {slots} slot(s). Press Ctrl-C to stop.", self.pool, self.nodes);
        println!();
        let token_file = std::fs::canonicalize(corral_coordinator::auth::bootstrap::admin_token_path(&self.data_dir))?;
        println!("Try, in another terminal:");
        println!("  export CORRAL_COORDINATOR={url}");
        println!("  export CORRAL_TOKEN_FILE={}", token_file.display());
        println!("  export CORRAL_POOL={}", self.pool);
        println!(
            "  corral job submit --array 1-20 --wait -- sh -c 'echo hello from task $CORRAL_TASK_INDEX on $CORRAL_NODE_ID'"
        );
        println!("  corral job list");
        println!("  corral node list");
        println!("  corral events --follow");
        wait_for_stop().await?;
        println!("stopping...");
        coordinator.shutdown().await;
        Ok(Exit::Ok)
    }
}
