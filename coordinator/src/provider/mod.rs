//! Providers start and stop the nodes of the pools whose size the coordinator keeps:
//! - [`local`]: `corral-agent` processes on the coordinator's host;
//! - [`command`]: the pool's own shell commands (a cloud CLI, an SSH script);
//! - [`docker`]: one container a node, through the Docker Engine API.
//!
//! One task carries out the core's [`ProviderOp`]s in order. Every agent a provider
//! starts registers with `--launch-id <node>`, which is how the core pairs it with
//! its `starting` node; a provider that sees a node's process or container end says
//! so at once ([`Input::NodeExited`]), and one that cannot start a node says why
//! ([`Input::LaunchFailed`]), so the pool backs off and shows the error.

mod command;
mod docker;
mod local;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::core::ProviderOp;
use crate::model::*;
use crate::runtime::Input;

/// What the providers need to know about the coordinator they work for.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Program and leading arguments that start an agent, for local pools.
    pub agent_command: Vec<OsString>,
    /// The address the coordinator listens on.
    pub listen: SocketAddr,
    /// Where local agents keep their work dirs and logs, and commands their output.
    pub dir: PathBuf,
    /// Names this coordinator's containers apart from another's on the same engine.
    pub instance: String,
    /// The data dir, where each provider pool's agent token is kept
    /// ([`crate::auth::bootstrap::pool_token_path`]).
    pub data_dir: PathBuf,
    /// With TLS on: the fingerprint the agents it starts pin (`CORRAL_CA_FINGERPRINT`).
    pub tls_fingerprint: Option<String>,
    /// How long a local agent goes on without a coordinator before it stops.
    pub local_give_up: std::time::Duration,
}

/// The agent token of a provider pool, as its file holds it.
pub fn pool_token(data_dir: &std::path::Path, pool: &PoolName) -> Result<String, String> {
    let path = crate::auth::bootstrap::pool_token_path(data_dir, pool);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
        Ok(_) => Err(format!("the pool's agent token file {} is empty", path.display())),
        Err(e) => Err(format!("cannot read the pool's agent token {}: {e}", path.display())),
    }
}

/// Carries out the core's orders until the coordinator drops its sender.
pub async fn run(
    config: ProviderConfig,
    events: mpsc::UnboundedSender<Input>,
    mut orders: mpsc::UnboundedReceiver<ProviderOp>,
) {
    let url = local_url(config.listen, config.tls_fingerprint.is_some());
    let (exited_tx, mut exited) = mpsc::unbounded_channel();
    let mut local = local::LocalAgents::new(&config, url.clone(), events.clone(), exited_tx);
    let mut commands = command::Commands::new(
        url,
        config.dir.clone(),
        config.data_dir.clone(),
        config.tls_fingerprint.clone(),
        events.clone(),
    );
    let mut docker = docker::Containers::new(
        config.listen,
        config.instance.clone(),
        config.data_dir.clone(),
        config.tls_fingerprint.clone(),
        events.clone(),
    );
    loop {
        tokio::select! {
            op = orders.recv() => match op {
                Some(ProviderOp::Launch { node, pool, slots, how }) => match how {
                    Launcher::Local => local.launch(node, pool, slots),
                    Launcher::Command(c) => commands.add(node, pool, slots, c),
                    Launcher::Docker(d) => docker.launch(node, pool, slots, d),
                },
                Some(ProviderOp::Stop { node, pool, pid, how }) => match how {
                    Launcher::Local => local.stop(&node, pid),
                    Launcher::Command(c) => commands.remove(node, pool, pid, c),
                    Launcher::Docker(_) => docker.remove(node, pool),
                },
                Some(ProviderOp::Sweep { live, first_new }) => docker.sweep(live, first_new),
                None => break,
            },
            Some(node) = exited.recv() => {
                local.exited(&node);
                let _ = events.send(Input::NodeExited { node });
            }
        }
    }
    tokio::join!(local.finish(exited), docker.finish());
}

/// The URL agents on this host use: a coordinator listening on every address is
/// reached on loopback.
fn local_url(listen: SocketAddr, tls: bool) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

/// The last line or so of a command's or container's output, for an error message.
fn tail(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect())
}

/// Signals a process (`pid > 0`) or a process group (`pid < 0`).
fn signal(pid: i64, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid != 0 {
            // SAFETY: kill(2) has no memory effects; a stale pid only yields ESRCH.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_on_this_host_reach_a_wildcard_listener_on_loopback() {
        assert_eq!(local_url("0.0.0.0:7070".parse().unwrap(), false), "http://127.0.0.1:7070");
        assert_eq!(local_url("[::]:7070".parse().unwrap(), false), "http://[::1]:7070");
        assert_eq!(local_url("10.1.2.3:7070".parse().unwrap(), true), "https://10.1.2.3:7070");
    }

    #[test]
    fn tail_keeps_the_end_of_long_output() {
        assert_eq!(tail(b"  \n"), None);
        let long = "x".repeat(600) + "END";
        assert!(tail(long.as_bytes()).unwrap().ends_with("END"));
        assert_eq!(tail(long.as_bytes()).unwrap().chars().count(), 500);
    }
}
