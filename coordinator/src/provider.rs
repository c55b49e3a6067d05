//! The `local` provider: starts `corral-agent` processes on the coordinator's host and
//! stops them. Each agent registers with `--launch-id` naming the `starting` node it
//! fulfils; when one exits on its own the core hears of it at once (no need to wait
//! for the heartbeat timeout) and starts a replacement.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::core::ProviderOp;
use crate::model::*;
use crate::server::Event;

pub struct LocalProvider {
    agent_command: Vec<OsString>,
    coordinator_url: String,
    /// Work dirs and logs of the agents: `<dir>/<node>/` and `<dir>/<node>.log`.
    dir: PathBuf,
    events: mpsc::UnboundedSender<Event>,
    /// Process ids of the agents this coordinator started.
    children: HashMap<NodeId, u32>,
    /// Add commands still running, by node: a remove for that node waits for its add,
    /// so that it cannot finish first and leave the added machine behind.
    adding: HashMap<NodeId, tokio::task::JoinHandle<()>>,
}

impl LocalProvider {
    pub fn new(
        agent_command: Vec<OsString>,
        coordinator_url: String,
        dir: PathBuf,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        LocalProvider { agent_command, coordinator_url, dir, events, children: HashMap::new(), adding: HashMap::new() }
    }

    /// Carries out orders until the coordinator drops its sender, then waits (a
    /// little) for the agents it stopped.
    pub async fn run(mut self, mut orders: mpsc::UnboundedReceiver<ProviderOp>) {
        let (exited_tx, mut exited_rx) = mpsc::unbounded_channel::<NodeId>();
        loop {
            tokio::select! {
                op = orders.recv() => match op {
                    Some(ProviderOp::Launch { node, pool, slots, commands: None }) => {
                        self.launch(node, pool, slots, &exited_tx)
                    }
                    Some(ProviderOp::Launch { node, pool, slots, commands: Some(commands) }) => {
                        self.adding.retain(|_, add| !add.is_finished());
                        let add = self.run_command(Run::Add { slots }, node.clone(), pool, 0, commands, None);
                        self.adding.insert(node, add);
                    }
                    Some(ProviderOp::Stop { node, pid, commands: None, .. }) => self.stop(&node, pid),
                    Some(ProviderOp::Stop { node, pool, pid, commands: Some(commands) }) => {
                        let add = self.adding.remove(&node);
                        self.run_command(Run::Remove, node, pool, pid, commands, add);
                    }
                    None => break,
                },
                Some(node) = exited_rx.recv() => {
                    self.children.remove(&node);
                    let _ = self.events.send(Event::NodeExited { node });
                }
            }
        }
        // Give stopped agents time to kill their tasks and go.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.children.is_empty() {
            match tokio::time::timeout_at(deadline, exited_rx.recv()).await {
                Ok(Some(node)) => {
                    self.children.remove(&node);
                }
                _ => break,
            }
        }
        for (node, pid) in self.children.drain() {
            tracing::warn!(node_id = %node, pid, "agent did not stop in time; killing it");
            signal(pid, libc::SIGKILL);
        }
    }

    fn launch(&mut self, node: NodeId, pool: PoolName, slots: u32, exited: &mpsc::UnboundedSender<NodeId>) {
        let Some((program, args)) = self.agent_command.split_first() else {
            let _ = self.events.send(Event::LaunchFailed { node, error: "no agent command is configured".into() });
            return;
        };
        let work_dir = self.dir.join(node.to_string());
        let log = std::fs::create_dir_all(&work_dir)
            .and_then(|_| std::fs::File::create(self.dir.join(format!("{node}.log"))));
        let log = match log {
            Ok(log) => log,
            Err(e) => {
                let error = format!("cannot prepare {}: {e}", work_dir.display());
                let _ = self.events.send(Event::LaunchFailed { node, error });
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
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(stderr)
            // The agent outlives a coordinator that is killed: it keeps its tasks
            // and reconnects to the next one.
            .kill_on_drop(false);
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                tracing::info!(node_id = %node, pool = %pool, pid, "started a local agent");
                self.children.insert(node.clone(), pid);
                let exited = exited.clone();
                tokio::spawn(async move {
                    let status = child.wait().await;
                    tracing::info!(node_id = %node, ?status, "local agent exited");
                    let _ = exited.send(node);
                });
            }
            Err(e) => {
                let error = format!("cannot run {}: {e}", program.to_string_lossy());
                let _ = self.events.send(Event::LaunchFailed { node, error });
            }
        }
    }

    /// The `command` provider: runs the pool's add or remove command for one node,
    /// with a timeout, and records how it went. A failed add fails the node's launch
    /// (the pool backs off and shows the error); a failed remove is logged.
    fn run_command(
        &self,
        run: Run,
        node: NodeId,
        pool: PoolName,
        pid: u32,
        commands: ProviderCommands,
        after: Option<tokio::task::JoinHandle<()>>,
    ) -> tokio::task::JoinHandle<()> {
        let (what, script) = match run {
            Run::Add { .. } => ("add", commands.add.clone()),
            Run::Remove => ("remove", commands.remove.clone()),
        };
        // Output goes to files kept beside the local agents' logs (the record of each
        // run), not to pipes: an agent the command leaves running in the background
        // would hold a pipe open and make the command look like it never ended.
        let out_path = self.dir.join(format!("{node}.{what}.out"));
        let files = std::fs::create_dir_all(&self.dir).and_then(|_| {
            let out = std::fs::File::create(&out_path)?;
            Ok((out.try_clone()?, out))
        });
        let events = self.events.clone();
        let (stdout, stderr) = match files {
            Ok(files) => files,
            Err(e) => {
                let error = format!("cannot record the {what} command's output in {}: {e}", out_path.display());
                if let Run::Add { .. } = run {
                    let _ = events.send(Event::LaunchFailed { node, error });
                }
                return tokio::spawn(async {});
            }
        };
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&script)
            .env("CORRAL_POOL", pool.as_str())
            .env("CORRAL_COUNT", "1")
            .env("CORRAL_NODE_IDS", node.to_string())
            .env("CORRAL_NODE_PIDS", pid.to_string())
            .env("CORRAL_COORDINATOR", &self.coordinator_url)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            // Its own group, so that a timeout kills what it started too.
            .process_group(0)
            .kill_on_drop(true);
        if let Run::Add { slots } = run {
            cmd.env("CORRAL_SLOTS", slots.to_string());
        }
        tokio::spawn(async move {
            if let Some(add) = after {
                let _ = add.await;
            }
            let said = |path: &std::path::Path| tail(&std::fs::read(path).unwrap_or_default()).unwrap_or_default();
            let outcome = match cmd.spawn() {
                Ok(mut child) => {
                    let group = child.id().unwrap_or(0);
                    match tokio::time::timeout(commands.timeout, child.wait()).await {
                        Ok(Ok(status)) if status.success() => Ok(()),
                        Ok(Ok(status)) => Err(format!("the {what} command failed ({status}): {}", said(&out_path))),
                        Ok(Err(e)) => Err(format!("the {what} command: {e}")),
                        Err(_) => {
                            signal_group(group, libc::SIGKILL);
                            Err(format!(
                                "the {what} command did not finish within {:?} and was killed",
                                commands.timeout
                            ))
                        }
                    }
                }
                Err(e) => Err(format!("cannot run the {what} command: {e}")),
            };
            match (outcome, run) {
                (Ok(()), _) => {
                    tracing::info!(node_id = %node, pool = %pool, output = %said(&out_path), "{what} command succeeded");
                }
                (Err(error), Run::Add { .. }) => {
                    tracing::warn!(node_id = %node, pool = %pool, %error, "could not add a node");
                    let _ = events.send(Event::LaunchFailed { node, error });
                }
                (Err(error), Run::Remove) => {
                    tracing::warn!(node_id = %node, pool = %pool, %error, "could not remove a node; remove it by hand");
                }
            }
        })
    }

    /// Asks an agent to stop (it kills its tasks first). The agent was also told
    /// over its stream; the signal covers one that is hung or disconnected.
    fn stop(&mut self, node: &NodeId, pid: u32) {
        if let Some(&child) = self.children.get(node) {
            signal(child, libc::SIGTERM);
        } else if pid != 0 && is_agent_of(pid, node) {
            // Started by an earlier run of the coordinator: signal it only if that
            // pid is still that agent, never a process that reused the number.
            signal(pid, libc::SIGTERM);
        }
    }
}

/// What a command run is for.
#[derive(Debug, Clone, Copy)]
enum Run {
    Add { slots: u32 },
    Remove,
}

/// The last line or so of a command's output, for an error message.
fn tail(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect())
}

/// Signals a whole process group.
fn signal_group(pgid: u32, sig: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        if pgid > 0 {
            // SAFETY: kill(2) has no memory effects; a gone group yields ESRCH.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) has no memory effects; a stale pid only yields ESRCH.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

/// Whether process `pid` is the agent launched for `node`.
fn is_agent_of(pid: u32, node: &NodeId) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|w| w[0] == b"--launch-id" && w[1] == node.0.as_bytes())
}
