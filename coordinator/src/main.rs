//! `corral-coordinator`: runs the coordinator until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use corral_coordinator::core::CoreConfig;
use corral_coordinator::{Config, Coordinator};

/// The Corral coordinator: pools, nodes, jobs and tasks, kept durably in DATA_DIR.
#[derive(Parser, Debug)]
#[command(name = "corral-coordinator", version)]
struct Args {
    /// gRPC address to listen on (port 0 picks a free one; the address is written to
    /// DATA_DIR/coordinator.addr).
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Where the store (corral.db) and task logs live.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "corral-data")]
    data_dir: PathBuf,
    /// Where to serve the web dashboard, its JSON API and /metrics ("off": nowhere;
    /// port 0 picks a free one, written to DATA_DIR/http.addr).
    #[arg(long, env = "CORRAL_HTTP", default_value = "127.0.0.1:7080", value_parser = parse_http)]
    http: Http,
    /// Log lines for people ("human") or one JSON object per line ("json").
    #[arg(long, env = "CORRAL_LOG_FORMAT", value_enum, default_value = "human")]
    log_format: LogFormat,
    /// How often agents send heartbeats, e.g. 500ms, 1s.
    #[arg(long, env = "CORRAL_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = corral_types::duration::parse)]
    heartbeat_interval: Duration,
    /// Silence after which a node is declared lost and its tasks are requeued.
    #[arg(long, env = "CORRAL_HEARTBEAT_TIMEOUT", default_value = "5s", value_parser = corral_types::duration::parse)]
    heartbeat_timeout: Duration,
    /// A node a provider started that has not registered by then has failed.
    #[arg(long, env = "CORRAL_NODE_START_TIMEOUT", default_value = "30s", value_parser = corral_types::duration::parse)]
    node_start_timeout: Duration,
    /// Delay before a failed task's first retry; doubles with each failure.
    #[arg(long, env = "CORRAL_RETRY_BACKOFF", default_value = "500ms", value_parser = corral_types::duration::parse)]
    retry_backoff: Duration,
    /// Wait after a job callback (--notify) fails before posting again; doubles each
    /// time, up to 5 minutes.
    #[arg(long, env = "CORRAL_NOTIFY_BACKOFF", default_value = "1s", value_parser = corral_types::duration::parse)]
    notify_backoff: Duration,
    /// A local pool's agent whose coordinator is gone this long stops, killing its
    /// tasks (a coordinator back sooner finds them still running).
    #[arg(long, env = "CORRAL_LOCAL_AGENT_GIVE_UP", default_value = "5m", value_parser = corral_types::duration::parse)]
    local_agent_give_up: Duration,
    /// Where the coordinator's state lives: `sqlite` (DATA_DIR/corral.db, embedded,
    /// nothing to install) or postgres://USER@HOST:PORT/DB (PostgreSQL 15 or later;
    /// ?sslmode=require for TLS, ?sslrootcert=FILE to trust a private CA). The
    /// password never goes in the URL: --store-password-file, PGPASSWORD or ~/.pgpass.
    #[arg(long, env = "CORRAL_STORE", default_value = "sqlite")]
    store: String,
    /// A file whose first line is the PostgreSQL password (for --store postgres://).
    #[arg(long, env = "CORRAL_STORE_PASSWORD_FILE")]
    store_password_file: Option<PathBuf>,
    /// On PostgreSQL, several coordinators may share one database: one leads, holding
    /// a lease it renews about three times this often; the others wait as standbys
    /// and the first to see it expire takes over.
    #[arg(long, env = "CORRAL_LEASE", default_value = "3s", value_parser = corral_types::duration::parse)]
    lease: Duration,
    /// The URL clients and agents reach this coordinator at when it leads; while
    /// another leads, this one answers every call with UNAVAILABLE naming the
    /// leader's [default: the --listen address, by this host's name if it is a
    /// wildcard].
    #[arg(long, env = "CORRAL_ADVERTISE", value_parser = parse_url)]
    advertise: Option<String>,
    /// The URL of this coordinator's dashboard when it leads; while another leads,
    /// this one redirects every HTTP request to the leader's [default: the --http
    /// address, as for --advertise].
    #[arg(long, env = "CORRAL_ADVERTISE_HTTP", value_parser = parse_url)]
    advertise_http: Option<String>,
    /// Exit (status 1) when another coordinator takes the lease, instead of
    /// stepping down to stand by.
    #[arg(long)]
    exit_when_deposed: bool,
    /// The agent program local pools start (default: corral-agent beside this binary, or on PATH).
    #[arg(long, env = "CORRAL_AGENT_BIN")]
    agent_bin: Option<PathBuf>,
    /// Keep task inputs, outputs and map/reduce data in this object store instead of
    /// DATA_DIR/objects: s3://bucket[/prefix] or az://container[/prefix], configured by
    /// the usual AWS_* / AZURE_* variables (AWS_ENDPOINT for S3-compatible servers).
    #[arg(long, env = "CORRAL_STORE_URL")]
    store_url: Option<String>,
    /// A name the dashboard and its API answer to, besides its --http address,
    /// localhost and loopback (repeatable, or comma-separated in the variable).
    /// Requests whose Host header is anything else are refused.
    #[arg(long, env = "CORRAL_HTTP_HOST", value_delimiter = ',')]
    http_host: Vec<String>,
    /// Serve /metrics without a token (for a Prometheus that cannot send one).
    #[arg(long, env = "CORRAL_METRICS_PUBLIC")]
    metrics_public: bool,
    /// Serve gRPC and HTTP over TLS with a CA of the coordinator's own ("auto"): made
    /// in DATA_DIR/tls/ on first start (ca.pem is what clients trust); its SHA-256
    /// fingerprint is printed for --ca-fingerprint.
    #[arg(long, env = "CORRAL_TLS", value_parser = ["auto"], conflicts_with_all = ["tls_cert", "tls_key"])]
    tls: Option<String>,
    /// Serve TLS with this PEM certificate chain (server certificate first).
    #[arg(long, env = "CORRAL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "CORRAL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Another name (or address) for the certificate --tls auto makes (repeatable);
    /// loopback, this host's name and the listen address are always in it.
    #[arg(long, env = "CORRAL_TLS_SAN", value_delimiter = ',')]
    tls_san: Vec<String>,
    /// Listen beyond loopback without TLS (tokens and tasks then cross the network
    /// in the clear): only on a network you trust.
    #[arg(long, env = "CORRAL_ALLOW_PLAINTEXT")]
    allow_plaintext: bool,
    /// Post job callbacks (--notify) to loopback, link-local and private addresses
    /// too; without it they are refused, so that a job cannot make the coordinator
    /// call into its own network.
    #[arg(long, env = "CORRAL_NOTIFY_ALLOW_PRIVATE")]
    notify_allow_private: bool,
    /// The most of each task's stdout, and of its stderr, that is kept for a job
    /// that does not say (job submit --max-output), e.g. 100MiB; what is beyond it is
    /// dropped and the log ends with a marker saying so.
    #[arg(long, env = "CORRAL_MAX_OUTPUT", default_value = "1GiB", value_parser = parse_size)]
    max_output: u64,
    /// The most unfinished tasks (waiting, ready or running, of all jobs) the
    /// coordinator holds; a submission that would pass it is refused
    /// (RESOURCE_EXHAUSTED). Each costs about 21 bytes of memory.
    #[arg(long, env = "CORRAL_MAX_QUEUED_TASKS", default_value_t = 20_000_000)]
    max_queued_tasks: u64,
    /// The most gRPC connections at once; more are closed as they come [default:
    /// the open-file limit (raised to its hard limit) less 1024]. A connection
    /// that sends nothing for 10 s is closed.
    #[arg(long, env = "CORRAL_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// How long a finished job is kept; then it is deleted with its tasks,
    /// attempts, logs, outputs and events (`corral job delete` does it at once).
    #[arg(long, env = "CORRAL_RETAIN", default_value = "7days", value_parser = corral_types::duration::parse)]
    retain: Duration,
    /// Revoke every admin token and every token an admin made, and write a new
    /// admin token to DATA_DIR/admin.token: for when one leaked or was lost.
    #[arg(long)]
    reset_admin_token: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// `--http`: an address, or off.
#[derive(Debug, Clone, Copy)]
struct Http(Option<SocketAddr>);

fn parse_http(s: &str) -> Result<Http, String> {
    if s == "off" {
        return Ok(Http(None));
    }
    s.parse().map(|a| Http(Some(a))).map_err(|e| format!("expected an address like 127.0.0.1:7080, or off ({e})"))
}

/// An http:// or https:// URL with a host, as clients are given it.
fn parse_url(s: &str) -> Result<String, String> {
    let url =
        url::Url::parse(s.trim()).map_err(|e| format!("expected a URL like https://coord1.example:7070 ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL with a host, like https://coord1.example:7070".into());
    }
    Ok(s.trim().trim_end_matches('/').to_string())
}

fn parse_size(s: &str) -> Result<u64, String> {
    let bytes = corral_types::size::parse(s)?;
    if bytes < corral_coordinator::convert::MIN_MAX_OUTPUT {
        return Err(format!("keep at least {} bytes (1KiB)", corral_coordinator::convert::MIN_MAX_OUTPUT));
    }
    Ok(bytes)
}

fn main() {
    // One line that names the cause (`{:#}` joins the context chain), not a debug dump.
    if let Err(e) = run(Args::parse()) {
        eprintln!("corral-coordinator: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match args.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    if args.lease < Duration::from_millis(300) {
        anyhow::bail!("invalid --lease: {:?} is too short to renew over a network (at least 300ms)", args.lease);
    }
    if args.heartbeat_interval.is_zero() {
        anyhow::bail!("invalid --heartbeat-interval: must be more than 0");
    }
    if args.heartbeat_timeout <= args.heartbeat_interval {
        anyhow::bail!(
            "invalid --heartbeat-timeout: {:?} must be longer than --heartbeat-interval ({:?})",
            args.heartbeat_timeout,
            args.heartbeat_interval
        );
    }
    let mut config = Config::new(args.listen, args.data_dir);
    config.core = CoreConfig {
        heartbeat_interval: args.heartbeat_interval,
        heartbeat_timeout: args.heartbeat_timeout,
        retry_backoff: args.retry_backoff,
        start_timeout: args.node_start_timeout,
        max_output: args.max_output,
        max_queued_tasks: args.max_queued_tasks,
        retain: args.retain,
        ..CoreConfig::default()
    };
    config.store_url = args.store_url;
    config.store = corral_coordinator::store::StoreKind::parse(&args.store, args.store_password_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    config.reset_admin_token = args.reset_admin_token;
    config.lease = args.lease;
    config.advertise = args.advertise;
    config.advertise_http = args.advertise_http;
    config.http_access.hosts =
        args.http_host.into_iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    config.http_access.metrics_public = args.metrics_public;
    config.tls = match (args.tls, args.tls_cert, args.tls_key) {
        (Some(_), _, _) => Some(corral_coordinator::tls::TlsMode::Auto),
        (None, Some(cert), Some(key)) => Some(corral_coordinator::tls::TlsMode::Files { cert, key }),
        _ => None,
    };
    config.tls_names = args.tls_san.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
    config.allow_plaintext = args.allow_plaintext;
    config.notify_allow_private = args.notify_allow_private;
    config.http = args.http.0;
    config.notify_backoff = args.notify_backoff.max(Duration::from_millis(10));
    config.local_give_up = args.local_agent_give_up;
    config.max_connections = args.max_connections.map(|n| n as usize);
    if let Some(bin) = args.agent_bin {
        config.agent_command = vec![bin.into_os_string()];
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        loop {
            match lead(config.clone()).await? {
                Ended::Signalled => return Ok(()),
                Ended::Deposed { why, .. } if args.exit_when_deposed => anyhow::bail!("stepped down: {why}"),
                Ended::Deposed { why, addr, http } => {
                    tracing::warn!(reason = %why, "stepped down; standing by");
                    config.rejoin = true;
                    // When it leads again, on the ports it had (port 0 picked them).
                    config.listen = addr;
                    config.http = http.or(config.http);
                }
            }
        }
    })
}

/// How a run as leader ended.
enum Ended {
    Signalled,
    /// Another coordinator took the lease; this one served on `addr` and `http`.
    Deposed {
        why: String,
        addr: std::net::SocketAddr,
        http: Option<std::net::SocketAddr>,
    },
}

/// Starts the coordinator (on PostgreSQL, once it holds the lease) and serves until
/// a signal, or until another coordinator takes the lease.
async fn lead(config: Config) -> anyhow::Result<Ended> {
    let data_dir = config.data_dir.clone();
    // A standby may wait long for the lease: a signal stops it meanwhile.
    let coordinator = tokio::select! {
        started = Coordinator::start(config) => started
            .with_context(|| format!("cannot start the coordinator with data dir {}", data_dir.display()))?,
        signalled = wait_for_signal() => {
            signalled?;
            return Ok(Ended::Signalled);
        }
    };
    let scheme = if coordinator.ca_fingerprint().is_some() { "https" } else { "http" };
    println!("corral-coordinator listening on {scheme}://{}", coordinator.addr());
    if let Some(http) = coordinator.http_addr() {
        println!("dashboard: {scheme}://{http}/  metrics: {scheme}://{http}/metrics");
    }
    if let Some(pin) = coordinator.ca_fingerprint() {
        println!("TLS CA fingerprint: {pin} (clients: --ca-fingerprint {pin}, or --ca-cert with the CA file)");
    }
    let admin = corral_coordinator::auth::bootstrap::admin_token_path(&data_dir);
    let admin = std::fs::canonicalize(&admin).unwrap_or(admin);
    println!("admin token: {} (clients: export CORRAL_TOKEN_FILE={})", admin.display(), admin.display());
    let ended = tokio::select! {
        signalled = wait_for_signal() => {
            signalled?;
            Ended::Signalled
        }
        why = coordinator.deposed() => {
            tracing::error!(reason = %why, "this coordinator no longer leads: it stops serving");
            Ended::Deposed { why, addr: coordinator.addr(), http: coordinator.http_addr() }
        }
    };
    tracing::info!("shutting down");
    coordinator.shutdown().await;
    Ok(ended)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
