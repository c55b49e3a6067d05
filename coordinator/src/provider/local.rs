//! The `local` provider: starts `corral-agent` processes on the coordinator's host and
//! stops them. When one exits on its own the core hears of it at once (no need to
//! wait for the heartbeat timeout) and starts a replacement.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::mpsc;

use super::signal;
use crate::model::*;
use crate::runtime::Input;

pub struct LocalAgents {
    agent_command: Vec<OsString>,
    coordinator_url: String,
    /// Work dirs and logs of the agents: `<dir>/<node>/` and `<dir>/<node>.log`.
    dir: PathBuf,
    /// Where the pools' agent tokens are kept.
    data_dir: PathBuf,
    /// With TLS on: what the agents pin.
    tls_fingerprint: Option<String>,
    /// How long an agent goes on without a coordinator before it stops.
    give_up: Duration,
    events: mpsc::UnboundedSender<Input>,
    /// Told the node of each agent that exits.
    exited: mpsc::UnboundedSender<NodeId>,
    /// Process ids of the agents this coordinator started.
    children: HashMap<NodeId, u32>,
}

impl LocalAgents {
    /// Local agents for the coordinator at `coordinator_url`, as `config` says.
    pub fn new(
        config: &super::ProviderConfig,
        coordinator_url: String,
        events: mpsc::UnboundedSender<Input>,
        exited: mpsc::UnboundedSender<NodeId>,
    ) -> Self {
        LocalAgents {
            agent_command: config.agent_command.clone(),
            coordinator_url,
            dir: config.dir.clone(),
            data_dir: config.data_dir.clone(),
            tls_fingerprint: config.tls_fingerprint.clone(),
            give_up: config.local_give_up,
            events,
            exited,
            children: HashMap::new(),
        }
    }

    pub fn launch(&mut self, node: NodeId, pool: PoolName, slots: u32) {
        let Some((program, args)) = self.agent_command.split_first() else {
            let _ = self.events.send(Input::LaunchFailed { node, error: "no agent command is configured".into() });
            return;
        };
        let work_dir = self.dir.join(node.to_string());
        let log = std::fs::create_dir_all(&work_dir)
            .and_then(|_| std::fs::File::create(self.dir.join(format!("{node}.log"))));
        let log = match log {
            Ok(log) => log,
            Err(e) => {
                let error = format!("cannot prepare {}: {e}", work_dir.display());
                let _ = self.events.send(Input::LaunchFailed { node, error });
                return;
            }
        };
        let stderr = log.try_clone().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .arg("--coordinator")
            .arg(&self.coordinator_url)
            .arg("--pool")
            .arg(pool.as_str())
            .arg("--slots")
            .arg(slots.to_string())
            .arg("--launch-id")
            .arg(node.to_string())
            .arg("--work-dir")
            .arg(&work_dir)
            // A coordinator killed and never restarted does not leave its agents
            // (and their tasks) running for ever.
            .arg("--give-up-after")
            .arg(humantime::format_duration(self.give_up).to_string())
            // The pool's agent token, by file: never on a command line `ps` shows,
            // and never this coordinator's own credentials.
            .env_remove("CORRAL_TOKEN")
            .env("CORRAL_TOKEN_FILE", crate::auth::bootstrap::pool_token_path(&self.data_dir, &pool))
            .env_remove("CORRAL_CA_CERT")
            .env_remove("CORRAL_CA_FINGERPRINT")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(stderr)
            // The agent outlives a coordinator that is killed: it keeps its tasks
            // and reconnects to the next one.
            .kill_on_drop(false);
        // Nor the store's: tasks run under these agents.
        for var in crate::store::STORE_SECRETS {
            cmd.env_remove(var);
        }
        if let Some(pin) = &self.tls_fingerprint {
            cmd.env("CORRAL_CA_FINGERPRINT", pin);
        }
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                tracing::info!(node_id = %node, pool = %pool, pid, "started a local agent");
                self.children.insert(node.clone(), pid);
                let exited = self.exited.clone();
                tokio::spawn(async move {
                    let status = child.wait().await;
                    tracing::info!(node_id = %node, ?status, "local agent exited");
                    let _ = exited.send(node);
                });
            }
            Err(e) => {
                let error = format!("cannot run {}: {e}", program.to_string_lossy());
                let _ = self.events.send(Input::LaunchFailed { node, error });
            }
        }
    }

    /// Asks an agent to stop (it kills its tasks first). The agent was also told
    /// over its stream; the signal covers one that is hung or disconnected.
    pub fn stop(&mut self, node: &NodeId, pid: u32) {
        if let Some(&child) = self.children.get(node) {
            signal(child.into(), libc::SIGTERM);
        } else if pid != 0 && is_agent_of(pid, node) {
            // Started by an earlier run of the coordinator: signal it only if that
            // pid is still that agent, never a process that reused the number.
            signal(pid.into(), libc::SIGTERM);
        }
    }

    /// The agent of `node` has exited.
    pub fn exited(&mut self, node: &NodeId) {
        self.children.remove(node);
    }

    /// At shutdown: gives the agents that were stopped a little time to kill their
    /// tasks and go, then kills what is left.
    pub async fn finish(mut self, mut exited: mpsc::UnboundedReceiver<NodeId>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.children.is_empty() {
            match tokio::time::timeout_at(deadline, exited.recv()).await {
                Ok(Some(node)) => self.exited(&node),
                _ => break,
            }
        }
        for (node, pid) in self.children.drain() {
            tracing::warn!(node_id = %node, pid, "agent did not stop in time; killing it");
            signal(pid.into(), libc::SIGKILL);
        }
    }
}

/// Whether process `pid` is the agent launched for `node`.
fn is_agent_of(pid: u32, node: &NodeId) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|w| w[0] == b"--launch-id" && w[1] == node.0.as_bytes())
}
