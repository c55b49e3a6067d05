//! The `docker` provider: one container a node, through the Docker Engine API
//! (`bollard`; `DOCKER_HOST` or the local socket). Nothing is pulled: the image must
//! be on the engine already (`docker/agent-image.sh` builds one from this checkout).
//!
//! A container is named `corral-<instance>-<node>` (the instance names this
//! coordinator apart from others on the same engine, and stays the same across its
//! restarts, so a restarted coordinator still finds its containers), labelled with
//! its pool and node, limited to the pool's memory and CPUs, and started with
//! `docker-init` as PID 1 so that the processes tasks leave behind are reaped. Its
//! agent registers with `--launch-id <node>`. When the container stops by itself the
//! core hears of it at once; when its node is removed or lost, the container is
//! stopped (the agent kills its tasks) and removed.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::{mpsc, OnceCell};
use tokio::task::JoinHandle;

use crate::model::*;
use crate::runtime::Input;

/// Where the agent keeps its work inside the container.
const WORK_DIR: &str = "/var/lib/corral";
/// Between `docker stop`'s SIGTERM and its SIGKILL: time for the agent to stop its
/// tasks (it gives each a few seconds) and go.
const STOP_GRACE_SECS: i32 = 15;
/// Label keys on every container.
pub const LABEL_POOL: &str = "corral.pool";
pub const LABEL_NODE: &str = "corral.node";
pub const LABEL_INSTANCE: &str = "corral.coordinator";

pub struct Containers {
    /// The coordinator's listening address, from which the agents' URL is made.
    listen: SocketAddr,
    instance: String,
    /// Where the pools' agent tokens are kept.
    data_dir: std::path::PathBuf,
    /// With TLS on: what the agents pin.
    tls_fingerprint: Option<String>,
    events: mpsc::UnboundedSender<Input>,
    /// Connected on first use, so a coordinator without Docker runs fine until a
    /// docker pool needs it.
    engine: Arc<OnceCell<Docker>>,
    /// Launches in flight, by node: a node's removal waits for its launch.
    launching: HashMap<NodeId, JoinHandle<()>>,
    /// Removals in flight: shutdown waits for them.
    removing: Vec<JoinHandle<()>>,
    /// The start-up sweep, if running: shutdown stops it.
    sweeping: Option<JoinHandle<()>>,
}

impl Containers {
    pub fn new(
        listen: SocketAddr,
        instance: String,
        data_dir: std::path::PathBuf,
        tls_fingerprint: Option<String>,
        events: mpsc::UnboundedSender<Input>,
    ) -> Self {
        Containers {
            listen,
            instance,
            data_dir,
            tls_fingerprint,
            events,
            engine: Arc::new(OnceCell::new()),
            launching: HashMap::new(),
            removing: Vec::new(),
            sweeping: None,
        }
    }

    pub fn launch(&mut self, node: NodeId, pool: PoolName, slots: u32, spec: DockerSpec) {
        self.launching.retain(|_, launch| !launch.is_finished());
        let engine = self.engine.clone();
        let events = self.events.clone();
        let name = container_name(&self.instance, &node);
        let plan = agent_url(&spec, self.listen, self.tls_fingerprint.is_some()).and_then(|(url, via_gateway)| {
            let mut env = vec![format!("CORRAL_TOKEN={}", super::pool_token(&self.data_dir, &pool)?)];
            if let Some(pin) = &self.tls_fingerprint {
                env.push(format!("CORRAL_CA_FINGERPRINT={pin}"));
            }
            Ok(container_body(&spec, &self.instance, &pool, &node, slots, &url, via_gateway, env))
        });
        let launched = node.clone();
        let launch = tokio::spawn(async move {
            let started = async {
                let body = plan?;
                let docker = connect(&engine).await?;
                start(&docker, &name, body, &spec.image).await?;
                Ok::<_, String>(docker)
            };
            match started.await {
                Ok(docker) => {
                    tracing::info!(node_id = %node, pool = %pool, container = %name, "started a container");
                    // Hear at once when it ends by itself (killed, out of memory, crashed).
                    tokio::spawn(watch(docker, name, node, events));
                }
                Err(error) => {
                    tracing::warn!(node_id = %node, pool = %pool, %error, "could not start a container");
                    let _ = events.send(Input::LaunchFailed { node, error });
                }
            }
        });
        self.launching.insert(launched, launch);
    }

    /// Stops and removes the node's container (after its launch, if that is still
    /// going). A container that is already gone is fine; any other failure is shown
    /// on the pool.
    pub fn remove(&mut self, node: NodeId, pool: PoolName) {
        let launch = self.launching.remove(&node);
        let engine = self.engine.clone();
        let events = self.events.clone();
        let name = container_name(&self.instance, &node);
        self.removing.retain(|removal| !removal.is_finished());
        self.removing.push(tokio::spawn(async move {
            if let Some(launch) = launch {
                let _ = launch.await;
            }
            let removed = async {
                let docker = connect(&engine).await?;
                stop_and_remove(&docker, &name).await
            };
            match removed.await {
                Ok(()) => tracing::info!(node_id = %node, pool = %pool, container = %name, "removed the container"),
                Err(error) => {
                    tracing::warn!(node_id = %node, pool = %pool, %error, "could not remove a container");
                    let _ = events.send(Input::RemoveFailed { node, pool, error });
                }
            }
        }));
    }

    /// Removes this coordinator's containers whose node is not live: their removal
    /// was ordered and then cut off (the coordinator was killed, the engine was
    /// down). Containers without a node label (agents started by hand) are left be.
    /// Quietly does nothing where there is no Docker engine.
    pub fn sweep(&mut self, live: BTreeSet<NodeId>, first_new: u64) {
        let engine = self.engine.clone();
        let instance = self.instance.clone();
        let events = self.events.clone();
        let mine = format!("{LABEL_INSTANCE}={instance}");
        self.sweeping = Some(tokio::spawn(async move {
            // Connect only if there is an engine to talk to; a coordinator without
            // Docker has nothing to sweep.
            let Ok(docker) = connect(&engine).await else { return };
            let filters = HashMap::from([("label".to_string(), vec![mine])]);
            let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
            let containers = match docker.list_containers(Some(options)).await {
                Ok(containers) => containers,
                Err(e) => {
                    tracing::warn!("cannot list this coordinator's containers to remove leftovers: {e}");
                    return;
                }
            };
            for container in containers {
                let labels = container.labels.unwrap_or_default();
                let Some(node) = labels.get(LABEL_NODE).map(|n| NodeId(n.clone())) else { continue };
                // Live, or started since (their containers may be listed already).
                if live.contains(&node) || node.seq().is_none_or(|seq| seq >= first_new) {
                    continue;
                }
                let name = container.id.clone().unwrap_or_else(|| container_name(&instance, &node));
                let pool = labels.get(LABEL_POOL).and_then(|p| PoolName::parse("pool", p).ok());
                tracing::info!(node_id = %node, container = %name, "removing a container left by a removal that was cut off");
                if let Err(error) = stop_and_remove(&docker, &name).await {
                    tracing::warn!(node_id = %node, %error, "could not remove a leftover container");
                    if let Some(pool) = pool {
                        let _ = events.send(Input::RemoveFailed { node, pool, error });
                    }
                }
            }
        }));
    }

    /// At shutdown: waits (a while) for removals in flight.
    pub async fn finish(self) {
        if let Some(sweep) = &self.sweeping {
            sweep.abort();
        }
        let all = futures::future::join_all(self.removing);
        let grace = Duration::from_secs(STOP_GRACE_SECS as u64 + 5);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("some containers were not removed before shutdown; `docker ps --filter label={LABEL_INSTANCE}` lists them");
        }
    }
}

/// The container of `node`.
pub fn container_name(instance: &str, node: &NodeId) -> String {
    format!("corral-{instance}-{node}")
}

/// The URL the agent in a container dials, and whether it goes through the Docker
/// host's gateway (`host.docker.internal`).
fn agent_url(spec: &DockerSpec, listen: SocketAddr, tls: bool) -> Result<(String, bool), String> {
    let scheme = if tls { "https" } else { "http" };
    if let Some(url) = &spec.coordinator_url {
        return Ok((url.clone(), false));
    }
    let ip = listen.ip();
    if ip.is_loopback() {
        return Err(format!(
            "the coordinator listens on {listen}, which containers cannot reach: start it with \
             --listen 0.0.0.0:{port} (or another address the containers can reach), or give the \
             pool --coordinator-url",
            port = listen.port()
        ));
    }
    if ip.is_unspecified() {
        Ok((format!("{scheme}://host.docker.internal:{}", listen.port()), true))
    } else {
        Ok((format!("{scheme}://{listen}"), false))
    }
}

/// How a node's container is made.
#[allow(clippy::too_many_arguments)] // each is one fact of the container, named at the call
fn container_body(
    spec: &DockerSpec,
    instance: &str,
    pool: &PoolName,
    node: &NodeId,
    slots: u32,
    url: &str,
    via_gateway: bool,
    env: Vec<String>,
) -> ContainerCreateBody {
    let labels = HashMap::from([
        (LABEL_POOL.to_string(), pool.to_string()),
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
    ]);
    let args = [
        "--coordinator",
        url,
        "--pool",
        pool.as_str(),
        "--slots",
        &slots.to_string(),
        "--launch-id",
        &node.0,
        "--work-dir",
        WORK_DIR,
    ];
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(vec!["corral-agent".to_string()]),
        // The pool's agent token (and the CA pin) reach the agent in its
        // environment, not its argv.
        env: Some(env),
        cmd: Some(args.iter().map(|a| a.to_string()).collect()),
        hostname: Some(node.to_string()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network.clone()),
            memory: spec.memory_bytes.and_then(|m| i64::try_from(m).ok()),
            nano_cpus: spec.nano_cpus.and_then(|c| i64::try_from(c).ok()),
            extra_hosts: via_gateway.then(|| vec!["host.docker.internal:host-gateway".to_string()]),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The engine, connected (and its API version agreed) on first use.
async fn connect(engine: &OnceCell<Docker>) -> Result<Docker, String> {
    engine
        .get_or_try_init(|| async {
            let docker = Docker::connect_with_defaults()
                .map_err(|e| format!("cannot reach the Docker engine (DOCKER_HOST or /var/run/docker.sock): {e}"))?;
            docker
                .negotiate_version()
                .await
                .map_err(|e| format!("cannot reach the Docker engine (DOCKER_HOST or /var/run/docker.sock): {e}"))
        })
        .await
        .cloned()
}

/// Stops a container (SIGTERM: its agent kills its tasks and exits; SIGKILL after the
/// grace period) and removes it. One that is already gone is fine.
async fn stop_and_remove(docker: &Docker, name: &str) -> Result<(), String> {
    let stop = StopContainerOptions { t: Some(STOP_GRACE_SECS), signal: None };
    match docker.stop_container(name, Some(stop)).await {
        Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 304 | 404, .. }) => {}
        Err(e) => tracing::warn!(container = %name, "could not stop the container: {e}; removing it by force"),
    }
    let remove = RemoveContainerOptions { force: true, v: true, link: false };
    match docker.remove_container(name, Some(remove)).await {
        Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        // Already being removed by the engine.
        Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
        Err(e) => Err(format!("cannot remove container {name}: {e}")),
    }
}

/// Creates and starts the container; a container of the same name left by an
/// earlier life of this data dir is replaced.
async fn start(docker: &Docker, name: &str, body: ContainerCreateBody, image: &str) -> Result<(), String> {
    let options = || Some(CreateContainerOptions { name: Some(name.to_string()), ..Default::default() });
    let created = match docker.create_container(options(), body.clone()).await {
        Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => {
            let remove = RemoveContainerOptions { force: true, v: true, link: false };
            let _ = docker.remove_container(name, Some(remove)).await;
            docker.create_container(options(), body).await
        }
        other => other,
    };
    match created {
        Ok(_) => {}
        Err(DockerError::DockerResponseServerError { status_code: 404, message })
            if message.to_lowercase().contains("no such image") =>
        {
            return Err(format!(
                "the image '{image}' is not on the Docker engine (nothing is pulled): build it with \
                 `bash docker/agent-image.sh --tag {image}`"
            ));
        }
        Err(e) => return Err(format!("cannot create container {name}: {e}")),
    }
    if let Err(e) = docker.start_container(name, None).await {
        let remove = RemoveContainerOptions { force: true, v: true, link: false };
        let _ = docker.remove_container(name, Some(remove)).await;
        return Err(format!("cannot start container {name}: {e}"));
    }
    Ok(())
}

/// Waits for the container to stop and tells the core. A stop the coordinator asked
/// for is told too; the core ignores it for a node already removed.
async fn watch(docker: Docker, name: String, node: NodeId, events: mpsc::UnboundedSender<Input>) {
    let options = WaitContainerOptions { condition: "not-running".to_string() };
    let ended = match docker.wait_container(&name, Some(options)).next().await {
        Some(Ok(exit)) => Some(format!("exit code {}", exit.status_code)),
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Some(format!("exit code {code}")),
        Some(Err(DockerError::DockerResponseServerError { status_code: 404, .. })) => Some("removed".to_string()),
        // Lost touch with the engine: the heartbeats still tell whether the agent lives.
        Some(Err(e)) => {
            tracing::warn!(container = %name, "stopped watching the container: {e}");
            None
        }
        None => None,
    };
    if let Some(how) = ended {
        tracing::info!(node_id = %node, container = %name, "container stopped ({how})");
        let _ = events.send(Input::NodeExited { node });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DockerSpec {
        DockerSpec {
            image: "corral-agent:latest".into(),
            network: "bridge".into(),
            memory_bytes: Some(256 << 20),
            nano_cpus: Some(1_500_000_000),
            coordinator_url: None,
        }
    }

    #[test]
    fn containers_reach_a_wildcard_listener_through_the_host_gateway() {
        let (url, gateway) = agent_url(&spec(), "0.0.0.0:7070".parse().unwrap(), false).unwrap();
        assert_eq!((url.as_str(), gateway), ("http://host.docker.internal:7070", true));
        let (url, gateway) = agent_url(&spec(), "10.0.0.5:7070".parse().unwrap(), true).unwrap();
        assert_eq!((url.as_str(), gateway), ("https://10.0.0.5:7070", false));
    }

    #[test]
    fn a_loopback_listener_is_refused_with_what_to_do() {
        let error = agent_url(&spec(), "127.0.0.1:7070".parse().unwrap(), false).unwrap_err();
        assert!(error.contains("--listen 0.0.0.0:7070"), "{error}");
        assert!(error.contains("--coordinator-url"), "{error}");
    }

    #[test]
    fn a_given_url_wins() {
        let spec = DockerSpec { coordinator_url: Some("http://coord:7070".into()), ..spec() };
        assert_eq!(
            agent_url(&spec, "127.0.0.1:7070".parse().unwrap(), false).unwrap(),
            ("http://coord:7070".into(), false)
        );
    }

    #[test]
    fn the_container_carries_labels_limits_and_the_agent_arguments() {
        let node = NodeId::from_seq(7);
        let pool = PoolName::parse("pool", "gpu").unwrap();
        let body = container_body(
            &spec(),
            "abcd1234",
            &pool,
            &node,
            4,
            "http://host.docker.internal:1",
            true,
            vec!["CORRAL_TOKEN=id.secret".into()],
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_POOL], "gpu");
        assert_eq!(labels[LABEL_NODE], node.to_string());
        assert_eq!(labels[LABEL_INSTANCE], "abcd1234");
        let cmd = body.cmd.unwrap().join(" ");
        assert!(cmd.contains(&format!("--launch-id {node}")), "{cmd}");
        assert!(cmd.contains("--slots 4 ") && cmd.contains("--pool gpu "), "{cmd}");
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(host.extra_hosts.unwrap(), ["host.docker.internal:host-gateway"]);
        assert_eq!(container_name("abcd1234", &node), format!("corral-abcd1234-{node}"));
    }
}
