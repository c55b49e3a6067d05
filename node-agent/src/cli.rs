//! The agent's command line, shared by `corral-agent` and `corral agent`.

use std::path::PathBuf;
use std::time::Duration;

use crate::AgentConfig;

/// Run a Corral node agent: join POOL at the coordinator and run its tasks.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "corral-agent", version)]
pub struct AgentArgs {
    /// The coordinator's URL, or several separated by commas (coordinators sharing
    /// one PostgreSQL database): the agent talks to the one that leads, and moves
    /// to another when it goes away or a standby names a new leader.
    #[arg(long, env = "CORRAL_COORDINATOR", default_value = "http://127.0.0.1:7070")]
    pub coordinator: String,
    /// The pool to join (it must exist and use the static provider).
    #[arg(long, env = "CORRAL_POOL")]
    pub pool: String,
    /// Task slots on this node [default: the number of CPUs].
    #[arg(long, env = "CORRAL_SLOTS", value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: Option<u32>,
    /// What this node offers beyond slots, NAME=VALUE (repeatable): `gpus=4` (or
    /// `gpus=auto`, counted with `nvidia-smi -L`), `mem=64GiB` [default: all of this
    /// host's memory], or any counter (`licenses=2`). Tasks ask with
    /// `job submit --resource`; a GPU goes to one task at a time.
    #[arg(long = "resource", env = "CORRAL_RESOURCES", value_delimiter = ',', value_name = "NAME=VALUE", value_parser = crate::resources::parse)]
    pub resources: Vec<(String, crate::resources::Amount)>,
    /// Where tasks get their working directories.
    #[arg(long, env = "CORRAL_WORK_DIR", default_value = "corral-work")]
    pub work_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL when a task times out or is cancelled.
    #[arg(long, env = "CORRAL_KILL_GRACE", default_value = "5s", value_parser = corral_types::duration::parse)]
    pub kill_grace: Duration,
    /// A file holding the agent (or admin) token to register with. Without it the
    /// token comes from CORRAL_TOKEN, or the file CORRAL_TOKEN_FILE names; never
    /// from the command line.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// For an https:// coordinator: trust this CA certificate (PEM) [default: the
    /// system's roots].
    #[arg(long, env = "CORRAL_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// For an https:// coordinator: trust the CA with this fingerprint (sha256:HEX,
    /// as the coordinator prints it).
    #[arg(long, env = "CORRAL_CA_FINGERPRINT", conflicts_with = "ca_cert")]
    pub ca_fingerprint: Option<String>,
    /// Stop, killing its tasks, after this long with no coordinator answering (e.g.
    /// 10m) [default: keep trying for ever, as a machine's agent should].
    #[arg(long, env = "CORRAL_GIVE_UP_AFTER", value_parser = corral_types::duration::parse)]
    pub give_up_after: Option<Duration>,
    /// The address a multi-node task's other ranks reach this node at (its
    /// `CORRAL_HOSTS` entry), where the one it connects from is not it (NAT, a
    /// proxy) [default: the address the coordinator sees it connect from].
    #[arg(long, env = "CORRAL_ADVERTISE_ADDRESS", value_name = "HOST", value_parser = parse_address)]
    pub advertise_address: Option<String>,
    /// Test mode: run nothing, and report every assigned task as succeeded at
    /// once, with no output. For measuring the coordinator alone; never on a pool
    /// whose tasks should run.
    #[arg(long)]
    pub simulate: bool,
    /// With --simulate: stand in for this many nodes from one process, each with
    /// its own registration, connection, session and heartbeats.
    #[arg(long, default_value_t = 1, requires = "simulate", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub nodes: u32,
    /// Set by a coordinator's local provider: the node this agent was started as.
    #[arg(long, hide = true)]
    pub launch_id: Option<String>,
}

/// A host name or address: letters, digits and `.-:_[]`, at most 255 bytes.
fn parse_address(s: &str) -> Result<String, String> {
    match corral_types::is_host_address(s) {
        true => Ok(s.to_string()),
        false => Err(format!("'{s}' is not a host name or address")),
    }
}

impl AgentArgs {
    pub fn config(&self) -> Result<AgentConfig, crate::session::Error> {
        let token =
            corral_proto::credentials::load(self.token_file.as_deref()).map_err(crate::session::Error::Token)?;
        Ok(AgentConfig {
            coordinator: self.coordinator.clone(),
            pool: self.pool.clone(),
            slots: self.slots,
            work_dir: self.work_dir.clone(),
            launch_id: self.launch_id.clone(),
            kill_grace: self.kill_grace,
            token,
            give_up_after: self.give_up_after,
            advertise_address: self.advertise_address.clone(),
            simulate: self.simulate,
            hostname: None,
            resources: crate::resources::resolve(&self.resources),
            tls: corral_proto::tls::ClientTls {
                ca_cert: self.ca_cert.clone(),
                ca_fingerprint: self.ca_fingerprint.clone().filter(|f| !f.is_empty()),
            },
        })
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: AgentArgs) -> Result<(), crate::session::Error> {
    let config = args.config()?;
    if config.simulate {
        tracing::warn!(nodes = args.nodes, "simulating: assigned tasks are reported as succeeded and never run");
        return crate::simulate::run_many(config, args.nodes, stopped()).await;
    }
    crate::run(config, stopped()).await
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
