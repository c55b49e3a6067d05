//! The composition root: it opens the store, restores the core, and starts every
//! part around it (the store writer, the event loop, providers, callbacks, the gRPC
//! and HTTP servers), each with the shutdown signal; [`Coordinator::shutdown`] stops
//! them in order.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::auth::{self, Auth};
use crate::core::{Core, CoreConfig, Outbox, ProviderOp};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::model::{NodeId, Provider, Role};
use crate::provider::ProviderConfig;
use crate::runtime::{event_loop, Handle, STORE_WAIT};
use crate::shared::Shared;
use crate::store::{Backend, Batch, Durable, FollowUp, Writer};

mod shared;

use shared::{check_objects_shared, take_lease, SharedKeys};

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
    /// Where the state lives: SQLite in `data_dir` (the default) or PostgreSQL.
    pub store: crate::store::StoreKind,
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
    /// On PostgreSQL: how long the leader's lease lasts unless renewed.
    pub lease: Duration,
    /// Where clients and agents reach this coordinator when it leads (default: its
    /// listen address, by host name if that is a wildcard).
    pub advertise: Option<String>,
    /// Where browsers reach its dashboard when it leads (default: as `advertise`).
    pub advertise_http: Option<String>,
    /// Standing by again after leading: a database that cannot be reached is
    /// waited for (at a first start it is refused).
    pub rejoin: bool,
}

impl Config {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Config {
            listen,
            data_dir,
            core: CoreConfig::default(),
            agent_command: default_agent_command(),
            store_url: None,
            store: Default::default(),
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
            lease: Duration::from_secs(3),
            advertise: None,
            advertise_http: None,
            rejoin: false,
        }
    }
}

/// Writes `contents` to `path` so that a reader sees all of it or no file: scripts
/// and tests wait for `coordinator.addr` to appear and read it at once.
fn write_whole(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, contents)?;
    std::fs::rename(&partial, path)
}

/// Binds `at` the way a server should (address reuse, a deep backlog), as a
/// standard listener that the standby and then the leader serve on. A coordinator
/// standing by again after leading waits a moment for its last server to let go
/// of the port.
async fn bind(at: SocketAddr, again: bool) -> std::io::Result<std::net::TcpListener> {
    let deadline = Instant::now() + if again { Duration::from_secs(5) } else { Duration::ZERO };
    loop {
        let socket = if at.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(at).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return listener.into_std(),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The URL of a server on `at`: by this host's name when it listens on every
/// address.
fn url_of(scheme: &str, at: SocketAddr) -> String {
    if at.ip().is_unspecified() {
        format!("{scheme}://{}:{}", crate::store::lock::hostname(), at.port())
    } else {
        format!("{scheme}://{at}")
    }
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
fn load_auth(
    store: &mut dyn Durable,
    (mut tokens, nodes): (Vec<auth::TokenRecord>, Vec<auth::NodeCredential>),
    config: &Config,
    core: &Core,
    pool_key: &auth::bootstrap::PoolKey,
) -> Result<Auth> {
    use crate::auth::bootstrap;
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
        if let Some(token) = bootstrap::ensure_pool_token(&config.data_dir, pool_key, &pool.spec.name, existing, now)? {
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

pub struct Coordinator {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    ca_fingerprint: Option<String>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
    /// On PostgreSQL: why the lease was lost, once it is.
    lost: Option<watch::Receiver<Option<String>>>,
}

impl Coordinator {
    /// Opens the store, restores the state, binds the port and starts serving.
    pub async fn start(config: Config) -> Result<Coordinator> {
        let beyond_loopback = !config.listen.ip().is_loopback() || config.http.is_some_and(|h| !h.ip().is_loopback());
        if beyond_loopback && config.tls.is_none() && !config.allow_plaintext {
            return Err(crate::Error::refused(format!(
                "refusing to listen on {} without TLS: anyone on the network could read tokens and tasks; pass --tls auto (or --tls-cert and --tls-key), or --allow-plaintext on a network you trust",
                if config.listen.ip().is_loopback() { config.http.map(|h| h.to_string()).unwrap_or_default() } else { config.listen.to_string() }
            )));
        }
        // Before anything in the data dir is touched: a second coordinator on a live
        // store would undo what the first one does.
        let lock = crate::store::lock::DataDirLock::acquire(&config.data_dir)?;
        let objects = match &config.store_url {
            Some(url) => crate::objects::store_from_url(url).await?,
            None => crate::objects::local_store(&config.data_dir.join("objects"))?,
        };
        // Bound for the coordinator's whole life: a standby serves on them the
        // refusals that name the leader, then leads on them.
        let grpc_port = bind(config.listen, config.rejoin).await?;
        let addr = grpc_port.local_addr()?;
        let http_port = match config.http {
            Some(at) => Some(bind(at, config.rejoin).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot serve the dashboard on {at}: {e} (use --http with another address, or port 0)"),
                )
            })?),
            None => None,
        };
        let http_addr = http_port.as_ref().map(|l| l.local_addr()).transpose()?;
        let tls = match &config.tls {
            None => None,
            Some(crate::tls::TlsMode::Auto) => {
                let mut names = config.tls_names.clone();
                names.extend(config.http_access.hosts.iter().cloned());
                Some(crate::tls::ServerTls::auto(&config.data_dir, &crate::tls::certificate_names(addr, &names))?)
            }
            Some(crate::tls::TlsMode::Files { cert, key }) => Some(crate::tls::ServerTls::from_files(cert, key)?),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let advertised = crate::standby::Leader {
            grpc: Some(config.advertise.clone().unwrap_or_else(|| url_of(scheme, addr))),
            http: config.advertise_http.clone().or_else(|| http_addr.map(|at| url_of(scheme, at))),
        };
        let (backend, lease): (Arc<dyn Backend>, _) = match &config.store {
            crate::store::StoreKind::Sqlite => (Arc::new(crate::store::Sqlite::new(&config.data_dir)), None),
            crate::store::StoreKind::Postgres(target) => {
                // Checked at the first start; standing by again, the store is the same.
                if !config.rejoin {
                    check_objects_shared(target.clone(), &objects, &config).await?;
                }
                let (leader_tx, leader_rx) = watch::channel(None);
                // Where it stands by (coordinator.addr says where it leads, once
                // it is ready to).
                let standby_files = [("standby.addr", Some(addr)), ("standby-http.addr", http_addr)];
                for (file, at) in standby_files {
                    if let Some(at) = at {
                        write_whole(&config.data_dir.join(file), &at.to_string())?;
                    }
                }
                let standby = crate::standby::serve(
                    tokio::net::TcpListener::from_std(grpc_port.try_clone()?)?,
                    http_port
                        .as_ref()
                        .map(|l| l.try_clone().and_then(tokio::net::TcpListener::from_std))
                        .transpose()?,
                    tls.as_ref(),
                    leader_rx,
                );
                let lease = take_lease(target.clone(), &config, &advertised, leader_tx).await;
                standby.stop().await;
                for (file, _) in standby_files {
                    let _ = std::fs::remove_file(config.data_dir.join(file));
                }
                let lease = lease?;
                let epoch = lease.epoch();
                tracing::info!(epoch, "leading: this coordinator holds the lease");
                (Arc::new(crate::store::Postgres { target: target.clone(), epoch }) as Arc<dyn Backend>, Some(lease))
            }
        };
        let epoch = lease.as_ref().map_or(0, |l| l.epoch());
        let mut store = backend.open_durable()?;
        let (snapshot, tokens, nodes, sessions) = backend.load()?;
        let lost = lease.as_ref().map(|l| l.lost());
        let reader = backend.open_history()?;
        let now = Instant::now();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let mut core = Core::new(config.core.clone(), (now, wall));
        let mut repairs = Outbox::default();
        core.restore(snapshot, now, &mut repairs);
        tracing::info!(pools = core.pools.len(), nodes = core.nodes.len(), jobs = core.jobs.len(), "state restored");
        let SharedKeys { notify: notify_key, pool: pool_key, instance } = SharedKeys::read(&config).await?;
        let auth = Arc::new(load_auth(store.as_mut(), (tokens, nodes), &config, &core, &pool_key)?);
        auth.restore_sessions(sessions);

        let listener = tokio::net::TcpListener::from_std(grpc_port)?;
        write_whole(&config.data_dir.join("coordinator.addr"), &addr.to_string())?;
        if let Some(tls) = &tls {
            tracing::info!(fingerprint = %tls.ca_fingerprint, ca = ?tls.ca_file, "serving TLS");
        }

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        metrics.set_last_event(store.last_event());
        let (last_event_tx, last_event) = watch::channel(store.last_event());
        let committed = metrics.clone();
        let (store_health, store_failing) = watch::channel(None);
        let refused_tx = events_tx.clone();
        let (writer, writer_thread) = Writer::spawn(
            store,
            store_health,
            move |done| {
                committed.on_commit(done.ops, done.events, done.took);
                last_event_tx.send_if_modified(|last| std::mem::replace(last, done.last_event) != done.last_event);
            },
            move |generation| {
                let _ = refused_tx.send(crate::runtime::Input::StoreRefused { generation });
            },
        );
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
        writer.submit(Batch { ops: repairs.store, then, generation: 0 });
        let (provider_tx, provider_rx) = mpsc::unbounded_channel();
        let live = core.nodes.iter().filter(|(_, n)| n.status().is_live()).map(|(id, _)| id.clone()).collect();
        let _ = provider_tx.send(ProviderOp::Sweep { live, first_new: core.next_node_seq() });
        let providers = ProviderConfig {
            agent_command: config.agent_command.clone(),
            listen: addr,
            dir: config.data_dir.join("agents"),
            instance,
            data_dir: config.data_dir.clone(),
            tls_fingerprint: tls.as_ref().map(|t| t.ca_fingerprint.clone()),
            local_give_up: config.local_give_up,
        };
        let provider_task = tokio::spawn(crate::provider::run(providers, events_tx.clone(), provider_rx));
        let notify = crate::notify::Settings {
            backoff: config.notify_backoff,
            secret: notify_key,
            allow_private: config.notify_allow_private,
        };
        let notify_task =
            tokio::spawn(crate::notify::run(notify_rx, events_tx.clone(), notify.clone(), stop_rx.clone()));
        let runtime = Handle::new(events_tx, store_failing.clone(), auth.clone());
        let shared = Arc::new(Shared {
            runtime,
            reader: Mutex::new(reader),
            core_config: config.core.clone(),
            objects: objects.clone(),
            last_event,
            metrics: metrics.clone(),
            auth: auth.clone(),
            data_dir: config.data_dir.clone(),
            pool_key: pool_key.clone(),
            http_access: crate::http::auth::HttpAccess { tls: tls.is_some(), ..http_access(&config) },
            notify,
            store_failing: store_failing.clone(),
            epoch,
            peers: lease.as_ref().map_or_else(|| watch::channel(Vec::new()).1, |l| l.peers()),
        });
        let triggers_task = tokio::spawn(crate::triggers::run(shared.clone(), stop_rx.clone()));
        let queues_task = tokio::spawn(crate::queues::run(shared.clone(), stop_rx.clone()));
        let http = match http_port {
            Some(port) => {
                let listener = tokio::net::TcpListener::from_std(port)?;
                if let Some(at) = http_addr {
                    write_whole(&config.data_dir.join("http.addr"), &at.to_string())?;
                }
                let tls = tls.as_ref().map(|t| t.http());
                let task = tokio::spawn(crate::http::serve(listener, tls, shared.clone(), stop_rx.clone()));
                Some(task)
            }
            None => None,
        };

        let effects = event_loop::Effects {
            writer,
            provider: provider_tx,
            notify: notify_tx,
            auth: auth.clone(),
            objects: objects.clone(),
            data_dir: config.data_dir.clone(),
            pool_key: pool_key.clone(),
            backend,
        };
        let event_loop = tokio::spawn(event_loop::run(core, events_rx, effects, metrics.clone(), stop_rx.clone()));
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
            // A poll half done leaves nothing behind: the next start polls again.
            triggers_task.abort();
            let _ = triggers_task.await;
            queues_task.abort();
            let _ = queues_task.await;
            if let Some(task) = http {
                // Server-sent event streams would hold a graceful shutdown forever.
                let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
            }
            tracing::info!("coordinator stopped");
            // Only now may another coordinator open the data dir, or lead.
            drop(lock);
            if let Some(lease) = lease {
                let _ = tokio::task::spawn_blocking(move || drop(lease)).await;
            }
        });
        let ca_fingerprint = tls.map(|t| t.ca_fingerprint);
        Ok(Coordinator { addr, http_addr, stop, done, ca_fingerprint, lost })
    }

    /// Resolves, with the reason, once this coordinator has lost the lease (another
    /// leads now); never on SQLite.
    pub async fn deposed(&self) -> String {
        let Some(mut lost) = self.lost.clone() else { return std::future::pending().await };
        let why = lost.wait_for(Option::is_some).await.map(|why| why.clone().unwrap_or_default());
        match why {
            Ok(why) => why,
            Err(_) => std::future::pending().await,
        }
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
