//! The `command` provider: runs the pool's add command to add a node and its remove
//! command to remove one, each with the node in its environment, a timeout, and its
//! output kept in a file. A node's remove waits for its add, so that it cannot
//! finish first and leave the added machine behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{signal, tail};
use crate::model::*;
use crate::runtime::Input;

pub struct Commands {
    coordinator_url: String,
    /// Each run's output: `<dir>/<node>.add.out`, `<dir>/<node>.remove.out`.
    dir: PathBuf,
    /// Where the pools' agent tokens are kept.
    data_dir: PathBuf,
    /// With TLS on: what the agents pin.
    tls_fingerprint: Option<String>,
    events: mpsc::UnboundedSender<Input>,
    /// Add commands still running, by node.
    adding: HashMap<NodeId, JoinHandle<()>>,
}

/// What a command run is for.
#[derive(Debug, Clone, Copy)]
enum Run {
    Add { slots: u32 },
    Remove { pid: u32 },
}

impl Commands {
    pub fn new(
        coordinator_url: String,
        dir: PathBuf,
        data_dir: PathBuf,
        tls_fingerprint: Option<String>,
        events: mpsc::UnboundedSender<Input>,
    ) -> Self {
        Commands { coordinator_url, dir, data_dir, tls_fingerprint, events, adding: HashMap::new() }
    }

    pub fn add(&mut self, node: NodeId, pool: PoolName, slots: u32, commands: ProviderCommands) {
        self.adding.retain(|_, add| !add.is_finished());
        let add = self.run(Run::Add { slots }, node.clone(), pool, commands, None);
        self.adding.insert(node, add);
    }

    pub fn remove(&mut self, node: NodeId, pool: PoolName, pid: u32, commands: ProviderCommands) {
        let add = self.adding.remove(&node);
        self.run(Run::Remove { pid }, node, pool, commands, add);
    }

    /// Runs one command (after `after`) and reports how it went: a failed add fails
    /// the node's launch (the pool backs off and shows the error); a failed remove
    /// is shown on the pool.
    fn run(
        &self,
        run: Run,
        node: NodeId,
        pool: PoolName,
        commands: ProviderCommands,
        after: Option<JoinHandle<()>>,
    ) -> JoinHandle<()> {
        let (what, script) = match run {
            Run::Add { .. } => ("add", commands.add.clone()),
            Run::Remove { .. } => ("remove", commands.remove.clone()),
        };
        // Output goes to files, not to pipes: an agent the command leaves running in
        // the background would hold a pipe open and make the command look like it
        // never ended.
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
                let _ = events.send(failure(run, node, pool, error));
                return tokio::spawn(async {});
            }
        };
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&script)
            .env("CORRAL_POOL", pool.as_str())
            .env("CORRAL_COUNT", "1")
            .env("CORRAL_NODE_IDS", node.to_string())
            .env("CORRAL_COORDINATOR", &self.coordinator_url)
            // The pool's agent token, for the agents the command starts.
            .env_remove("CORRAL_TOKEN")
            .env("CORRAL_TOKEN_FILE", crate::auth::bootstrap::pool_token_path(&self.data_dir, &pool))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            // Its own group, so that a timeout kills what it started too.
            .process_group(0)
            .kill_on_drop(true);
        // The store's secrets stay with the coordinator.
        for var in crate::store::STORE_SECRETS {
            cmd.env_remove(var);
        }
        match &self.tls_fingerprint {
            Some(pin) => cmd.env("CORRAL_CA_FINGERPRINT", pin),
            None => cmd.env_remove("CORRAL_CA_FINGERPRINT"),
        };
        match run {
            Run::Add { slots } => cmd.env("CORRAL_SLOTS", slots.to_string()),
            Run::Remove { pid } => cmd.env("CORRAL_NODE_PIDS", pid.to_string()),
        };
        tokio::spawn(async move {
            if let Some(add) = after {
                let _ = add.await;
            }
            let said = |path: &Path| tail(&std::fs::read(path).unwrap_or_default()).unwrap_or_default();
            let outcome = match cmd.spawn() {
                Ok(mut child) => {
                    let group = child.id().unwrap_or(0);
                    match tokio::time::timeout(commands.timeout, child.wait()).await {
                        Ok(Ok(status)) if status.success() => Ok(()),
                        Ok(Ok(status)) => Err(format!("the {what} command failed ({status}): {}", said(&out_path))),
                        Ok(Err(e)) => Err(format!("the {what} command: {e}")),
                        Err(_) => {
                            signal(-i64::from(group), libc::SIGKILL);
                            Err(format!(
                                "the {what} command did not finish within {:?} and was killed",
                                commands.timeout
                            ))
                        }
                    }
                }
                Err(e) => Err(format!("cannot run the {what} command: {e}")),
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(node_id = %node, pool = %pool, output = %said(&out_path), "{what} command succeeded");
                }
                Err(error) => {
                    tracing::warn!(node_id = %node, pool = %pool, %error, "the {what} command failed");
                    let _ = events.send(failure(run, node, pool, error));
                }
            }
        })
    }
}

fn failure(run: Run, node: NodeId, pool: PoolName, error: String) -> Input {
    match run {
        Run::Add { .. } => Input::LaunchFailed { node, error },
        Run::Remove { .. } => Input::RemoveFailed { node, pool, error },
    }
}
