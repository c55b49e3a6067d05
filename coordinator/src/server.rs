//! The shell around the core: one event loop owns the [`Core`]; gRPC handlers, agent
//! streams, the provider and a timer send it events. After each burst of events the
//! loop schedules, then hands the outbox to the store writer, which makes it durable
//! and only then delivers replies and agent messages.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

use crate::auth::{self, Auth};
use crate::convert;
use crate::core::{Core, CoreConfig, Notification, Outbox, ProviderOp, ToAgent, Work};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::model::*;
use crate::provider::ProviderConfig;
use crate::store::{Batch, FollowUp, Reader, Store, Writer};

/// Where the coordinator listens, keeps its data, and how it starts local agents.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC address; port 0 picks a free port (see [`Coordinator::addr`]).
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub core: CoreConfig,
    /// Program and leading arguments that start an agent, for local pools.
    pub agent_command: Vec<OsString>,
    /// Where objects live, if not in `data_dir/objects`: `s3://...`, `az://...`.
    pub store_url: Option<String>,
    /// Where the dashboard, its API and `/metrics` are served (port 0 picks a free
    /// port, written to `data_dir/http.addr`); none if unset.
    pub http: Option<SocketAddr>,
    /// The wait after a job callback's first failed post; it doubles each time.
    pub notify_backoff: Duration,
    /// The most client and agent connections at once (`None`: the file limit
    /// less a reserve).
    pub max_connections: Option<usize>,
    /// A local agent whose coordinator is gone this long stops, killing its tasks;
    /// a coordinator back sooner finds it still running them.
    pub local_give_up: Duration,
    /// Revoke the first admin token and write a new one to `DATA_DIR/admin.token`.
    pub reset_admin_token: bool,
    /// Which `Host` names the HTTP side answers, and whether `/metrics` is open.
    pub http_access: crate::http::auth::HttpAccess,
    /// TLS on both ports, if set.
    pub tls: Option<crate::tls::TlsMode>,
    /// More names for the certificate `--tls auto` makes.
    pub tls_names: Vec<String>,
    /// Listen beyond loopback without TLS.
    pub allow_plaintext: bool,
    /// Post job callbacks to loopback, link-local and private addresses too.
    pub notify_allow_private: bool,
}

impl Config {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Config {
            listen,
            data_dir,
            core: CoreConfig::default(),
            agent_command: default_agent_command(),
            store_url: None,
            http: None,
            notify_backoff: Duration::from_secs(1),
            local_give_up: Duration::from_secs(300),
            max_connections: None,
            reset_admin_token: false,
            http_access: Default::default(),
            tls: None,
            tls_names: Vec::new(),
            allow_plaintext: false,
            notify_allow_private: false,
        }
    }
}

/// A short id of this coordinator that stays the same across its restarts, kept in
/// `DATA_DIR/instance`: it names the containers it starts apart from those of
/// another coordinator on the same Docker engine.
fn instance_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("instance");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Unique enough among the coordinators sharing an engine: FNV-1a of where this
    // one keeps its data, when and as which process it first started.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let seed = format!("{}:{now}:{}", data_dir.display(), std::process::id());
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let id = format!("{:08x}", hash as u32);
    std::fs::write(&path, &id)?;
    Ok(id)
}

/// `corral-agent` beside the running executable if it is there, else from `PATH`.
pub fn default_agent_command() -> Vec<OsString> {
    let sibling = std::env::current_exe().ok().and_then(|exe| {
        let candidate = exe.parent()?.join("corral-agent");
        candidate.is_file().then_some(candidate)
    });
    vec![sibling.map_or_else(|| OsString::from("corral-agent"), |p| p.into_os_string())]
}

/// The names the HTTP side answers: those given, and the address it serves on
/// unless that is a wildcard.
fn http_access(config: &Config) -> crate::http::auth::HttpAccess {
    let mut access = config.http_access.clone();
    if let Some(at) = config.http.filter(|a| !a.ip().is_unspecified()) {
        access.hosts.push(at.ip().to_string());
    }
    access
}

/// The tokens the coordinator accepts, after making those it needs: the first admin
/// token on a first start (or when asked to reset it), and an agent token for each
/// provider pool whose token file is missing.
fn load_auth(store: &mut Store, config: &Config, core: &Core) -> Result<Auth> {
    use crate::auth::bootstrap;
    let (mut tokens, nodes) = store.load_auth()?;
    // Only live nodes speak; the others' secrets are forgotten when they go (this
    // catches those whose forgetting a crash cut off).
    let gone: Vec<NodeId> = nodes
        .iter()
        .filter(|c| !core.nodes.get(&c.node).is_some_and(|n| n.status().is_live()))
        .map(|c| c.node.clone())
        .collect();
    let now = auth::now_ms();
    let mut made = Vec::new();
    let admin_path = bootstrap::admin_token_path(&config.data_dir);
    let mut revoked = Vec::new();
    if config.reset_admin_token {
        // A leaked admin token could have made others: every admin token goes, with
        // every token an admin made (only admins make tokens, so: all but the
        // coordinator's own, even those whose maker was revoked since).
        revoked = tokens
            .iter()
            .filter(|t| t.role == Role::Admin || t.created_by != "bootstrap")
            .map(|t| (t.id.clone(), t.name.clone()))
            .collect();
        tokens.retain(|t| !revoked.iter().any(|(id, _)| *id == t.id));
        tracing::warn!(revoked = revoked.len(), "reset: revoked every admin token and every token an admin made");
    }
    if tokens.is_empty() || config.reset_admin_token {
        let admin = bootstrap::mint_admin(&config.data_dir, now)?;
        tracing::info!(path = %admin_path.display(), "wrote a new admin token; clients use it with --token-file or CORRAL_TOKEN_FILE");
        made.push(admin);
    }
    for pool in core.pools.values().filter(|p| p.spec.provider != Provider::Static) {
        let name = bootstrap::pool_token_name(&pool.spec.name);
        let existing = tokens.iter().find(|t| t.name == name);
        if let Some(token) = bootstrap::ensure_pool_token(&config.data_dir, &pool.spec.name, existing, now)? {
            made.push(token);
        }
    }
    if !made.is_empty() || !revoked.is_empty() {
        let mut ops: Vec<_> =
            revoked.into_iter().map(|(id, name)| crate::core::StoreOp::DeleteToken { id, name }).collect();
        ops.extend(made.iter().cloned().map(crate::core::StoreOp::PutToken));
        store.apply(&ops)?;
        tokens.retain(|t| !made.iter().any(|m| m.name == t.name));
        tokens.extend(made);
    }
    if admin_path.is_file() {
        tracing::info!(path = %admin_path.display(), "the first admin token is in this file");
    }
    let auth = Auth::new(tokens, nodes);
    for node in &gone {
        auth.forget_node(node);
    }
    Ok(auth)
}

/// A call into the core; it returns what to do once its changes are durable.
pub type Call = Box<dyn FnOnce(&mut Core, Instant, &mut Outbox) -> FollowUp + Send>;
/// The sending half of one agent stream.
pub type AgentTx = mpsc::UnboundedSender<Result<pb::CoordinatorMessage, Status>>;

/// Everything that reaches the event loop.
pub enum Event {
    Call(Call),
    /// An agent stream opened with its hello.
    Connected {
        node: NodeId,
        conn: u64,
        hello: Hello,
        tx: AgentTx,
    },
    FromAgent {
        node: NodeId,
        conn: u64,
        update: AgentUpdate,
    },
    Disconnected {
        node: NodeId,
        conn: u64,
    },
    /// A local agent process exited.
    NodeExited {
        node: NodeId,
    },
    LaunchFailed {
        node: NodeId,
        error: String,
    },
    /// The provider could not remove a node's machine or container.
    RemoveFailed {
        node: NodeId,
        pool: PoolName,
        error: String,
    },
}

/// The opening message of an agent stream, validated.
pub struct Hello {
    pub start_task_running: bool,
    pub start_task_failed: Option<String>,
    pub running: Vec<AttemptRef>,
    pub finished: Vec<TaskResult>,
    pub logs: Vec<LogChunk>,
}

/// One later message of an agent stream, validated.
#[derive(Default)]
pub struct AgentUpdate {
    /// The start task ended: whether it succeeded, and what it said.
    pub start_task_done: Option<(bool, String)>,
    pub heartbeat: Option<(f32, u64)>,
    pub logs: Vec<LogChunk>,
    pub finished: Vec<TaskResult>,
    /// The room its logs take in memory, given back once they are written.
    pub room: Option<crate::agent_service::LogRoom>,
}

/// What the gRPC handlers share.
pub struct Shared {
    events: mpsc::UnboundedSender<Event>,
    pub reader: Mutex<Reader>,
    pub core_config: CoreConfig,
    /// The object store, to measure map/reduce inputs.
    pub objects: Arc<dyn object_store::ObjectStore>,
    /// The id of the newest durable event; it changes after each commit that
    /// recorded some.
    pub last_event: watch::Receiver<u64>,
    pub metrics: Arc<Metrics>,
    /// The tokens and node secrets the coordinator accepts.
    pub auth: Arc<Auth>,
    pub data_dir: PathBuf,
    pub http_access: crate::http::auth::HttpAccess,
    /// How callbacks are posted: what submissions are checked against, and the
    /// secret admins may read.
    pub notify: crate::notify::Settings,
    /// Why the store cannot write now (a full disk), while it cannot.
    pub store_failing: watch::Receiver<Option<String>>,
}

impl Shared {
    /// Runs `f` on the core; the answer comes once whatever `f` changed is durable,
    /// or at once if it changed nothing (a read answers even while the store
    /// cannot write).
    ///
    /// While the store cannot write, a change that has waited [`STORE_WAIT`] is
    /// answered UNAVAILABLE: it may still be saved once the store can write again
    /// (which is what `--idempotency-key` is for).
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Instant, &mut Outbox) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel::<Result<T, String>>();
        let call: Call = Box::new(move |core, now, out| {
            let before = out.store.len();
            let value = f(core, now, out);
            if out.store.len() == before {
                let _ = tx.send(Ok(value));
                return Box::new(|_| {});
            }
            Box::new(move |stored| {
                let _ = tx.send(stored.clone().map(|()| value));
            })
        });
        let started = tokio::time::Instant::now();
        self.send(Event::Call(call))?;
        tokio::pin!(rx);
        let answered = |answer: Result<Result<T, String>, _>| match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(refused)) => Err(Status::internal(refused)),
            Err(_) => Err(shutting_down()),
        };
        let mut failing = self.store_failing.clone();
        let mut watching = true;
        loop {
            // While the store cannot write, wait only until STORE_WAIT has passed.
            let deadline = failing.borrow_and_update().is_some().then_some(started + STORE_WAIT);
            let give_up = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                answer = &mut rx => return answered(answer),
                _ = give_up => {
                    if let Some(cause) = self.store_failing.borrow().clone() {
                        return Err(store_cannot_write(&cause, true));
                    }
                }
                changed = failing.changed(), if watching => watching = changed.is_ok(),
            }
        }
    }

    /// [`Shared::call`] for a change `who` asked for: the events it makes name
    /// them, and it is refused if their token was revoked (or expired) before it
    /// ran (a revocation runs on the event loop too, so none slips past it).
    pub async fn call_by<T: Send + 'static>(
        &self,
        who: crate::auth::Principal,
        f: impl FnOnce(&mut Core, Instant, &mut Outbox) -> T + Send + 'static,
    ) -> Result<T, Status> {
        // While the store cannot write, no change is taken on (and nothing changes).
        if let Some(cause) = self.store_failing.borrow().clone() {
            return Err(store_cannot_write(&cause, false));
        }
        let auth = self.auth.clone();
        let done = self
            .call(move |core, now, out| {
                if !auth.still_valid(&who, crate::auth::now_ms()) {
                    return None;
                }
                let before = out.store.len();
                out.store.push(crate::core::StoreOp::Actor(Some(who.name())));
                let value = f(core, now, out);
                if out.store.len() == before + 1 {
                    // Nothing changed: no marker, and no commit for it.
                    out.store.pop();
                } else {
                    out.store.push(crate::core::StoreOp::Actor(None));
                }
                Some(value)
            })
            .await?;
        done.ok_or_else(|| Status::unauthenticated(crate::auth::BAD_TOKEN))
    }

    pub fn send(&self, event: Event) -> Result<(), Status> {
        self.events.send(event).map_err(|_| shutting_down())
    }

    /// The store's read connection. Hold it only for one query, never across an
    /// `.await`.
    pub fn reader(&self) -> std::sync::MutexGuard<'_, Reader> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long a change waits for a store that cannot write before its caller is
/// told so.
pub const STORE_WAIT: Duration = Duration::from_secs(5);

fn store_cannot_write(cause: &str, in_flight: bool) -> Status {
    let outcome = if in_flight {
        "this change may still be saved when it can write again; retry with the same --idempotency-key to be sure"
    } else {
        "nothing was changed; try again when it can"
    };
    Status::unavailable(format!("store cannot write: {cause}; {outcome}"))
}

fn shutting_down() -> Status {
    Status::unavailable("the coordinator is shutting down; try again when it is back")
}

/// A running coordinator.
pub struct Coordinator {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    ca_fingerprint: Option<String>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Coordinator {
    /// Opens the store, restores the state, binds the port and starts serving.
    pub async fn start(config: Config) -> Result<Coordinator> {
        let beyond_loopback = !config.listen.ip().is_loopback() || config.http.is_some_and(|h| !h.ip().is_loopback());
        if beyond_loopback && config.tls.is_none() && !config.allow_plaintext {
            return Err(crate::Error::Refused(format!(
                "refusing to listen on {} without TLS: anyone on the network could read tokens and tasks; pass --tls auto (or --tls-cert and --tls-key), or --allow-plaintext on a network you trust",
                if config.listen.ip().is_loopback() { config.http.map(|h| h.to_string()).unwrap_or_default() } else { config.listen.to_string() }
            )));
        }
        let mut store = Store::open(&config.data_dir)?;
        let objects = match &config.store_url {
            Some(url) => crate::objects::store_from_url(url).await?,
            None => crate::objects::local_store(&config.data_dir.join("objects"))?,
        };
        let snapshot = store.load()?;
        let reader = Store::open_reader(&config.data_dir)?;
        let now = Instant::now();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let mut core = Core::new(config.core.clone(), (now, wall));
        let mut repairs = Outbox::default();
        core.restore(snapshot, now, &mut repairs);
        tracing::info!(pools = core.pools.len(), nodes = core.nodes.len(), jobs = core.jobs.len(), "state restored");
        let auth = Arc::new(load_auth(&mut store, &config, &core)?);

        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let tls = match &config.tls {
            None => None,
            Some(crate::tls::TlsMode::Auto) => {
                let mut names = config.tls_names.clone();
                names.extend(config.http_access.hosts.iter().cloned());
                Some(crate::tls::ServerTls::auto(&config.data_dir, &crate::tls::certificate_names(addr, &names))?)
            }
            Some(crate::tls::TlsMode::Files { cert, key }) => Some(crate::tls::ServerTls::from_files(cert, key)?),
        };
        if let Some(tls) = &tls {
            tracing::info!(fingerprint = %tls.ca_fingerprint, ca = ?tls.ca_file, "serving TLS");
        }
        std::fs::write(config.data_dir.join("coordinator.addr"), addr.to_string())?;

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        metrics.set_last_event(store.last_event());
        let (last_event_tx, last_event) = watch::channel(store.last_event());
        let committed = metrics.clone();
        let (store_health, store_failing) = watch::channel(None);
        let (writer, writer_thread) = Writer::spawn(store, store_health, move |done| {
            committed.on_commit(done.ops, done.events, done.took);
            last_event_tx.send_if_modified(|last| std::mem::replace(last, done.last_event) != done.last_event);
        });
        let restored_orders = std::mem::take(&mut repairs.notify);
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let notify_restored = notify_tx.clone();
        // Callbacks of jobs that ended before (or while) restoring go out once the
        // repairs that may have ended them are durable.
        let then: Vec<FollowUp> = vec![Box::new(move |_| {
            for order in restored_orders {
                let _ = notify_restored.send(order);
            }
        })];
        writer.submit(Batch { ops: repairs.store, then });
        let (provider_tx, provider_rx) = mpsc::unbounded_channel();
        let live = core.nodes.iter().filter(|(_, n)| n.status().is_live()).map(|(id, _)| id.clone()).collect();
        let _ = provider_tx.send(ProviderOp::Sweep { live, first_new: core.next_node_seq() });
        let providers = ProviderConfig {
            agent_command: config.agent_command.clone(),
            listen: addr,
            dir: config.data_dir.join("agents"),
            instance: instance_id(&config.data_dir)?,
            data_dir: config.data_dir.clone(),
            tls_fingerprint: tls.as_ref().map(|t| t.ca_fingerprint.clone()),
            local_give_up: config.local_give_up,
        };
        let provider_task = tokio::spawn(crate::provider::run(providers, events_tx.clone(), provider_rx));
        let notify = crate::notify::Settings {
            backoff: config.notify_backoff,
            secret: auth::bootstrap::notify_secret(&config.data_dir)?,
            allow_private: config.notify_allow_private,
        };
        let notify_task =
            tokio::spawn(crate::notify::run(notify_rx, events_tx.clone(), notify.clone(), stop_rx.clone()));
        let shared = Arc::new(Shared {
            events: events_tx,
            reader: Mutex::new(reader),
            core_config: config.core.clone(),
            objects: objects.clone(),
            last_event,
            metrics: metrics.clone(),
            auth: auth.clone(),
            data_dir: config.data_dir.clone(),
            http_access: crate::http::auth::HttpAccess { tls: tls.is_some(), ..http_access(&config) },
            notify,
            store_failing: store_failing.clone(),
        });
        let http = match config.http {
            Some(at) => {
                let listener = tokio::net::TcpListener::bind(at).await.map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot serve the dashboard on {at}: {e} (use --http with another address, or port 0)"),
                    )
                })?;
                let http_addr = listener.local_addr()?;
                std::fs::write(config.data_dir.join("http.addr"), http_addr.to_string())?;
                let tls = tls.as_ref().map(|t| t.http());
                let task = tokio::spawn(crate::http::serve(listener, tls, shared.clone(), stop_rx.clone()));
                Some((http_addr, task))
            }
            None => None,
        };
        let http_addr = http.as_ref().map(|(a, _)| *a);

        let effects =
            Effects { writer, provider: provider_tx, notify: notify_tx, auth: auth.clone(), objects: objects.clone() };
        let event_loop = tokio::spawn(run_loop(core, events_rx, effects, metrics.clone(), stop_rx.clone()));
        let mut server_stop = stop_rx.clone();
        let stopped = async move {
            let _ = server_stop.wait_for(|s| *s).await;
        };
        // The standard health service and server reflection: `grpcurl` works
        // without the .proto files.
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<pb::corral_server::CorralServer<crate::service::ClientApi>>().await;
        health.set_serving::<pb::agent_server::AgentServer<crate::agent_service::AgentApi>>().await;
        // While the store cannot write, the health service says NOT_SERVING (a
        // load balancer sends no changes here) and a metric says so.
        let mut failing = store_failing.clone();
        let (reporter, watched) = (health.clone(), metrics.clone());
        watched.set_store_can_write(true);
        tokio::spawn(async move {
            loop {
                let status = if failing.borrow_and_update().is_some() {
                    tonic_health::ServingStatus::NotServing
                } else {
                    tonic_health::ServingStatus::Serving
                };
                for service in ["", "corral.v1.Corral", "corral.v1.Agent"] {
                    reporter.set_service_status(service, status).await;
                }
                watched.set_store_can_write(status == tonic_health::ServingStatus::Serving);
                if failing.changed().await.is_err() {
                    break;
                }
            }
        });
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| std::io::Error::other(format!("server reflection: {e}")))?;
        let server = tonic::transport::Server::builder()
            // Every request is authenticated before tonic routes it (auth::rules).
            .layer(auth::layer::AuthLayer::new(auth))
            // A peer that stops answering pings is dropped (a dead machine, a cut
            // network): its connection does not hold a place for ever.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(Some(1024))
            // Room for objects streaming in: the 64 KiB default window held uploads
            // to ~80 MB/s on loopback.
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(crate::service::server(shared.clone()))
            .add_service(crate::agent_service::server(shared.clone()))
            .add_service(crate::objects::server(objects, shared));
        let file_limit = crate::conns::raise_file_limit();
        let cap = config.max_connections.unwrap_or_else(|| crate::conns::default_cap(file_limit));
        tracing::info!(file_limit, max_connections = cap, "connections capped");
        let cap = Arc::new(tokio::sync::Semaphore::new(cap));
        let server: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> = match &tls {
            Some(tls) => {
                let conns = crate::tls::incoming(listener, tls.grpc(), cap, stop_rx.clone());
                let incoming =
                    tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(conns), |(c, _)| {
                        Ok::<_, std::io::Error>(c)
                    });
                Box::pin(server.serve_with_incoming_shutdown(incoming, stopped))
            }
            None => {
                let conns = crate::conns::incoming(listener, cap, stop_rx.clone());
                let incoming =
                    tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(conns), |(c, _)| {
                        Ok::<_, std::io::Error>(c)
                    });
                Box::pin(server.serve_with_incoming_shutdown(incoming, stopped))
            }
        };
        let server = tokio::spawn(server);
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "coordinator listening");

        let done = tokio::spawn(async move {
            let _ = event_loop.await;
            // Open agent and watch streams would hold a graceful shutdown forever.
            if tokio::time::timeout(Duration::from_secs(3), server).await.is_err() {
                tracing::debug!("gRPC server did not stop within 3s; dropping its connections");
            }
            // What the store cannot write (a full disk) is not waited for for ever.
            let written = tokio::task::spawn_blocking(move || writer_thread.join());
            let mut failing = store_failing;
            let stuck = async move {
                let _ = failing.wait_for(Option::is_some).await;
                tokio::time::sleep(STORE_WAIT).await;
            };
            tokio::select! {
                _ = written => {}
                _ = stuck => tracing::error!("stopping without the changes the store could not write"),
            }
            let _ = provider_task.await;
            let _ = notify_task.await;
            if let Some((_, task)) = http {
                // Server-sent event streams would hold a graceful shutdown forever.
                let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
            }
            tracing::info!("coordinator stopped");
        });
        let ca_fingerprint = tls.map(|t| t.ca_fingerprint);
        Ok(Coordinator { addr, http_addr, stop, done, ca_fingerprint })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// With TLS on: the `sha256:HEX` clients pin with `--ca-fingerprint`.
    pub fn ca_fingerprint(&self) -> Option<&str> {
        self.ca_fingerprint.as_deref()
    }

    /// Where the dashboard and `/metrics` are served, if anywhere.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops serving, stops the agents it started, and waits until all is written.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }
}

/// Where the event loop sends what the core decided.
struct Effects {
    writer: Writer,
    provider: mpsc::UnboundedSender<ProviderOp>,
    notify: mpsc::UnboundedSender<Notification>,
    /// Forgets the secrets of nodes that are gone.
    auth: Arc<Auth>,
    /// Where deleted jobs' outputs are removed from.
    objects: Arc<dyn object_store::ObjectStore>,
}

/// The event loop: the one owner of the core.
async fn run_loop(
    mut core: Core,
    mut events: mpsc::UnboundedReceiver<Event>,
    effects: Effects,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns: HashMap<NodeId, (u64, AgentTx)> = HashMap::new();
    let period = (core.config.heartbeat_interval / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut out = Outbox::default();
        let mut then: Vec<FollowUp> = Vec::new();
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                handle(&mut core, event, &mut conns, &metrics, &mut out, &mut then);
                // Take what else is waiting, so one transaction covers it all.
                for _ in 0..4096 {
                    match events.try_recv() {
                        Ok(event) => handle(&mut core, event, &mut conns, &metrics, &mut out, &mut then),
                        Err(_) => break,
                    }
                }
            }
            _ = tick.tick() => core.on_tick(Instant::now(), &mut out),
            _ = stop.wait_for(|s| *s) => break,
        }
        core.schedule(Instant::now(), &mut out);
        flush(out, then, &conns, &effects);
    }
    // Stop the agents this coordinator started; static agents keep running and
    // reconnect when a coordinator is back.
    let mut out = Outbox::default();
    core.stop_local_nodes(Instant::now(), &mut out);
    flush(out, Vec::new(), &conns, &effects);
}

fn handle(
    core: &mut Core,
    event: Event,
    conns: &mut HashMap<NodeId, (u64, AgentTx)>,
    metrics: &Metrics,
    out: &mut Outbox,
    then: &mut Vec<FollowUp>,
) {
    let now = Instant::now();
    match event {
        Event::Call(call) => then.push(call(core, now, out)),
        Event::Connected { node, conn, hello, tx } => {
            let late = hello.finished.len();
            match core.on_hello(now, &node, hello.running, hello.finished, hello.start_task_running, out) {
                Ok(()) => {
                    // Only a stream the core accepted may write logs.
                    core.on_logs(&node, hello.logs, out);
                    if let Some(why) = &hello.start_task_failed {
                        core.on_start_task_done(now, &node, false, why, out);
                    }
                    tracing::info!(node_id = %node, "agent connected");
                    conns.insert(node, (conn, tx));
                }
                Err(refused) => {
                    ignored_late_results(&node, late);
                    tracing::info!(node_id = %node, reason = %refused.0, "agent must register again");
                    let msg = pb::CoordinatorMessage { reregister: true, reason: refused.0, ..Default::default() };
                    then.push(Box::new(move |_| {
                        let _ = tx.send(Ok(msg));
                    }));
                }
            }
        }
        Event::FromAgent { node, conn, mut update } => {
            if let Some(room) = update.room.take() {
                then.push(Box::new(move |_| drop(room)));
            }
            if conns.get(&node).is_some_and(|(c, _)| *c != conn) {
                return;
            }
            if !core.on_node_message(now, &node, out) {
                ignored_late_results(&node, update.finished.len());
                return;
            }
            if let Some((cpu, mem)) = update.heartbeat {
                metrics.on_heartbeat();
                core.on_heartbeat(now, &node, cpu, mem);
            }
            if let Some((ok, message)) = update.start_task_done {
                core.on_start_task_done(now, &node, ok, &message, out);
            }
            core.on_logs(&node, update.logs, out);
            if !update.finished.is_empty() {
                core.on_task_results(now, &node, update.finished, out);
            }
        }
        Event::Disconnected { node, conn } => {
            if conns.get(&node).is_some_and(|(c, _)| *c == conn) {
                conns.remove(&node);
                core.on_disconnected(&node);
                tracing::info!(node_id = %node, "agent disconnected");
            }
        }
        Event::NodeExited { node } => core.on_node_exited(now, &node, out),
        Event::LaunchFailed { node, error } => core.on_launch_failed(now, &node, &error, out),
        Event::RemoveFailed { node, pool, error } => core.on_remove_failed(&node, &pool, &error),
    }
}

/// Results from a node that was declared lost count for nothing: its tasks were
/// requeued when it was lost, and their new attempts own them now.
fn ignored_late_results(node: &NodeId, results: usize) {
    if results > 0 {
        tracing::info!(node_id = %node, results, "ignoring a late result: the node was declared lost and its tasks requeued");
    }
}

/// Credentials that a batch's changes end, in one pass over its store ops: a node
/// that is lost or removed speaks for nothing any more (its secret stops opening
/// streams and object calls; one that comes back registers again), and a deleted
/// pool's agent token goes with it.
fn retire_credentials(out: &mut Outbox, auth: &Auth) {
    use crate::core::StoreOp;
    let mut retired = Vec::new();
    for op in &out.store {
        match op {
            // Forgotten here; stored as forgotten only if it had a secret.
            StoreOp::PutNode(n) if !n.status.is_live() && auth.forget_node(&n.id) => {
                retired.push(StoreOp::ForgetNodeCredential(n.id.clone()));
            }
            StoreOp::DeletePool(pool) => {
                if let Some(token) = auth.revoke(&auth::bootstrap::pool_token_name(pool)) {
                    retired.push(StoreOp::DeleteToken { id: token.id, name: token.name });
                }
            }
            _ => {}
        }
    }
    out.store.extend(retired);
}

/// Hands the outbox to the writer: store rows first, then (once durable) the replies,
/// one message per agent, and the provider's orders.
fn flush(mut out: Outbox, mut then: Vec<FollowUp>, conns: &HashMap<NodeId, (u64, AgentTx)>, effects: &Effects) {
    if out.is_empty() && then.is_empty() {
        return;
    }
    retire_credentials(&mut out, &effects.auth);
    let mut messages: HashMap<NodeId, pb::CoordinatorMessage> = HashMap::new();
    for (node, msg) in out.agents {
        let m = messages.entry(node).or_default();
        match msg {
            ToAgent::Assign(a) => m.assign.push(pb::Assignment {
                task: Some(convert::attempt_to_pb(a.attempt)),
                name: a.name,
                array_index: a.array_index,
                inputs: a.inputs.into_iter().map(|i| pb::TaskInput { object: i.object, path: i.path }).collect(),
                outputs: a.outputs,
                outputs_when: a.outputs_when.as_str().into(),
                output_prefix: a.output_prefix,
                max_output_bytes: a.max_output,
                map: match &a.work {
                    Work::Map { segments, reduce_tasks, combiner, output_prefix } => Some(pb::MapWork {
                        segments: segments
                            .iter()
                            .map(|s| pb::Segment { object: s.object.clone(), offset: s.offset, length: s.length })
                            .collect(),
                        reduce_tasks: *reduce_tasks,
                        combiner: combiner.clone().unwrap_or_default(),
                        output_prefix: output_prefix.clone(),
                    }),
                    _ => None,
                },
                reduce: match a.work {
                    Work::Reduce { inputs, output } => Some(pb::ReduceWork { inputs, output }),
                    _ => None,
                },
                argv: a.argv,
                env: a.env.into_iter().collect(),
                slots: a.slots,
                timeout_ms: a.timeout.map_or(0, |d| d.as_millis() as u64),
            }),
            ToAgent::Kill(a) => m.kill.push(convert::attempt_to_pb(a)),
            ToAgent::Ack(a) => m.ack.push(convert::attempt_to_pb(a)),
            ToAgent::Reregister(why) => {
                m.reregister = true;
                m.reason = why;
            }
            ToAgent::Shutdown(why) => {
                m.shutdown = true;
                m.reason = why;
            }
        }
    }
    for (node, msg) in messages {
        // A node without a stream gets nothing now; its hello reconciles later.
        if let Some((_, tx)) = conns.get(&node) {
            let tx = tx.clone();
            then.push(Box::new(move |_| {
                let _ = tx.send(Ok(msg));
            }));
        }
    }
    for op in out.provider {
        let provider = effects.provider.clone();
        then.push(Box::new(move |_| {
            let _ = provider.send(op);
        }));
    }
    // A deleted job's objects go once its deletion is durable.
    for op in &out.store {
        if let crate::core::StoreOp::DeleteJob(id) = op {
            let (objects, id, runtime) = (effects.objects.clone(), *id, tokio::runtime::Handle::current());
            then.push(Box::new(move |stored| {
                if stored.is_ok() {
                    runtime.spawn(crate::objects::delete_prefix(objects, corral_types::paths::job(id)));
                }
            }));
        }
    }
    for order in out.notify {
        let notify = effects.notify.clone();
        then.push(Box::new(move |_| {
            let _ = notify.send(order);
        }));
    }
    if !effects.writer.submit(Batch { ops: out.store, then }) {
        tracing::error!("the store writer has stopped; changes are not being saved");
    }
}
