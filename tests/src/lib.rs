//! The end-to-end harness: starts the real `corral-coordinator`, `corral-agent` and
//! `corral` binaries on loopback (port 0, a temp dir each), drives them as a user
//! would, and cleans up every process it started.
//!
//! The binaries come from the same target directory as the test executable, so run
//! `cargo build --workspace` before `cargo test --workspace` (the README's test
//! command does both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod docker;
pub mod grpc;
pub mod ha;
pub mod postgres;
pub mod soak;
pub mod webdriver;

pub use docker::{docker, docker_image, DOCKER_IMAGE};
pub use soak::{Follower, Rng};

use serde_json::Value;

/// Path of one of the workspace's binaries.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.is_file(), "{} is missing: run `cargo build --workspace` before the tests", path.display());
    path
}

/// Polls `f` every 50 ms until it is true; panics after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A coordinator, its agents, and a scratch directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub url: String,
    port: u16,
    coordinator: Option<Child>,
    coordinator_args: Vec<String>,
    coordinator_env: Vec<(String, String)>,
    /// The process group of everything the coordinator starts (its local agents).
    pgid: u32,
    agents: Vec<Child>,
    /// Listening on every address (so containers reach it), and removing this
    /// coordinator's containers when dropped.
    docker: bool,
    /// Serving TLS (`--tls auto`): clients trust `DATA_DIR/tls/ca.pem`.
    tls: bool,
    /// The data dir is a tmpfs of its own, unmounted on drop.
    small_disk: bool,
    /// The PostgreSQL server of `--store postgres://...`, stopped after the
    /// coordinator (fields drop after `Drop::drop`).
    pub postgres: Option<postgres::Postgres>,
    /// More coordinators on the same database, standing by ([`Cluster::standby`]),
    /// each with a data dir of its own.
    standbys: Vec<(Child, PathBuf)>,
    /// The data dir of the coordinator that leads now, when a standby took over.
    leader_data: Option<PathBuf>,
    /// What agents and the CLI are given as `--coordinator` instead of `url`
    /// (several, comma-separated), if set.
    pub coordinators: Option<String>,
    /// The coordinators of [`Cluster::start_ha`].
    members: Vec<ha::Member>,
}

impl Cluster {
    /// Starts a coordinator whose data dir is a tmpfs of `mib` MiB, to fill up.
    pub fn start_on_small_disk(mib: u32, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&data)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mounting a tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
        Cluster::launch_in(dir, extra, &[], false, true)
    }

    /// Starts a coordinator with fast heartbeats (200 ms, lost after 1.5 s) plus
    /// `extra` flags.
    pub fn start(extra: &[&str]) -> Cluster {
        Cluster::start_with_env(extra, &[])
    }

    /// Starts a coordinator with extra flags and environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        Cluster::launch(extra, env, false)
    }

    fn launch(extra: &[&str], env: &[(&str, &str)], docker: bool) -> Cluster {
        Cluster::launch_in(tempfile::tempdir().expect("temp dir"), extra, env, docker, false)
    }

    fn launch_in(
        dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
        docker: bool,
        small_disk: bool,
    ) -> Cluster {
        let mut args: Vec<String> = [
            "--heartbeat-interval",
            "200ms",
            "--heartbeat-timeout",
            "1500ms",
            "--retry-backoff",
            "100ms",
            "--http",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let tls = extra.contains(&"--tls");
        if docker && !tls {
            // Containers reach it beyond loopback; these tests do not need TLS there.
            args.push("--allow-plaintext".into());
        }
        let coordinator_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut cluster = Cluster {
            dir,
            url: String::new(),
            port: 0,
            coordinator: None,
            coordinator_args: args,
            coordinator_env,
            pgid: 0,
            agents: vec![],
            docker,
            tls,
            small_disk,
            postgres: None,
            standbys: Vec::new(),
            leader_data: None,
            coordinators: None,
            members: Vec::new(),
        };
        cluster.spawn_coordinator();
        cluster
    }

    /// Starts a coordinator on a PostgreSQL server of its own (`--store`, the
    /// password in `PGPASSWORD` as an operator would give it), plus `extra` flags.
    pub fn start_on_postgres(extra: &[&str]) -> Cluster {
        let pg = postgres::Postgres::start();
        let url = pg.create("corral");
        Cluster::launch_on_postgres(pg, &url, extra)
    }

    /// Starts a coordinator on `pg`'s database at `url`, with an object store of
    /// the cluster's that every coordinator on the database shares (as they must).
    fn launch_on_postgres(pg: postgres::Postgres, url: &str, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let objects = dir.path().join("objects");
        std::fs::create_dir(&objects).expect("objects dir");
        let objects = format!("file://{}", objects.display());
        let mut args = vec!["--store", url, "--store-url", objects.as_str()];
        args.extend_from_slice(extra);
        let mut cluster = Cluster::launch_in(dir, &args, &[("PGPASSWORD", postgres::PASSWORD)], false, false);
        cluster.postgres = Some(pg);
        cluster
    }

    /// Makes schedule `name`: `true` on `pool` every second, runs allowed to
    /// overlap, missed slots caught up within a minute.
    pub fn every_second(&self, name: &str, pool: &str) -> Value {
        self.json(&[
            "schedule",
            "create",
            name,
            "--every",
            "1s",
            "--overlap",
            "allow",
            "--catchup-window",
            "1m",
            "--pool",
            pool,
            "--",
            "true",
        ])
    }

    pub fn data_dir(&self) -> PathBuf {
        self.leader_data.clone().unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// What agent `n` (counting from 0 in start order) logged, all its lives.
    pub fn agent_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("agent-{n}.log"))).unwrap_or_default()
    }

    fn spawn_coordinator(&mut self) {
        let addr_file = self.data_dir().join("coordinator.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("coordinator.log"))
            .expect("coordinator log");
        let mut cmd = Command::new(bin("corral-coordinator"));
        let host = if self.docker { "0.0.0.0" } else { "127.0.0.1" };
        cmd.arg("--listen")
            .arg(format!("{host}:{}", self.port))
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.coordinator_args)
            .envs(self.coordinator_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log);
        use std::os::unix::process::CommandExt;
        cmd.process_group(self.pgid as i32);
        let child = match cmd.spawn() {
            Ok(child) => child,
            // The old group is gone with all its members: start a new one, and
            // forget the old id (another process may be given it, and Drop kills
            // this group).
            Err(_) => {
                let child = cmd.process_group(0).spawn().expect("start corral-coordinator");
                self.pgid = child.id();
                child
            }
        };
        if self.pgid == 0 {
            self.pgid = child.id();
        }
        self.coordinator = Some(child);
        wait_until(Duration::from_secs(20), "the coordinator to listen", || addr_file.is_file());
        let addr = std::fs::read_to_string(&addr_file).expect("address file");
        self.port = addr.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("port");
        self.url = format!("{}://127.0.0.1:{}", self.scheme(), self.port);
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The CA clients trust, with TLS on.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.data_dir().join("tls").join("ca.pem"))
    }

    /// The dashboard's base URL (`http://127.0.0.1:PORT`), as the coordinator wrote it.
    pub fn http_url(&self) -> String {
        let addr = std::fs::read_to_string(self.data_dir().join("http.addr")).expect("http.addr");
        format!("{}://{}", self.scheme(), addr.trim())
    }

    /// GETs a path of the dashboard's HTTP server as the admin; returns the status
    /// and body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http_get_as(path, Some(&self.admin_token()))
    }

    /// GETs a path with `token` as the bearer (none: without one).
    pub fn http_get_as(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let client = self.http_client();
        let mut req = client.get(format!("{}{path}", self.http_url()));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().expect("HTTP request");
        let status = resp.status().as_u16();
        (status, resp.text().expect("HTTP body"))
    }

    /// An HTTP client that follows no redirects and, with TLS on, trusts the CA.
    pub fn http_client(&self) -> reqwest::blocking::Client {
        let mut builder = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = self.ca_file() {
            let pem = std::fs::read(ca).expect("the CA file");
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA"));
        }
        builder.build().expect("HTTP client")
    }

    /// With TLS on: the CA's fingerprint, as clients pin it.
    pub fn ca_fingerprint(&self) -> Option<String> {
        corral_proto::tls::pem_fingerprint(&std::fs::read(self.ca_file()?).ok()?)
    }

    /// Where the coordinator wrote its first admin token.
    pub fn admin_token_file(&self) -> PathBuf {
        // The first coordinator's: tokens live in the store, shared by standbys.
        self.dir.path().join("data").join("admin.token")
    }

    /// The coordinator's first admin token.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.admin_token_file()).expect("DATA_DIR/admin.token").trim().to_string()
    }

    /// Makes a token with the CLI (as the admin) and returns its secret.
    pub fn token(&self, name: &str, role: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", name, "--role", role];
        args.extend_from_slice(extra);
        self.json(&args)["token"].as_str().expect("a token secret").to_string()
    }

    /// A gRPC channel to the coordinator (over TLS, trusting its CA, if it serves TLS).
    pub async fn channel(&self) -> tonic::transport::Channel {
        let tls = corral_proto::tls::ClientTls { ca_cert: self.ca_file(), ca_fingerprint: None };
        corral_proto::tls::endpoint(&self.url, &tls, |e| e).expect("endpoint").connect().await.expect("connect")
    }

    /// GETs a JSON path of the dashboard's API, asserting success.
    pub fn api(&self, path: &str) -> Value {
        let (status, body) = self.http_get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }

    /// The port the coordinator listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The id that labels this coordinator's containers (`corral.coordinator`).
    pub fn instance(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("instance"))
            .expect("the coordinator's instance file")
            .trim()
            .into()
    }

    /// Kills the coordinator with SIGKILL (its agents live on).
    pub fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a coordinator on a PostgreSQL server of its own that it reaches
    /// through a proxy the test can cut ([`postgres::Proxy::cut`]); standbys reach
    /// the server directly.
    pub fn start_on_postgres_through_proxy(extra: &[&str]) -> (Cluster, postgres::Proxy) {
        let pg = postgres::Postgres::start();
        let direct = pg.create("corral");
        let proxy = pg.proxy();
        let through = proxy.url("corral");
        let mut cluster = Cluster::launch_on_postgres(pg, &through, extra);
        // What standbys are started with: the server itself.
        for arg in cluster.coordinator_args.iter_mut() {
            if *arg == through {
                *arg = direct.clone();
            }
        }
        (cluster, proxy)
    }

    /// Starts another coordinator on the same database (`--store`) and flags plus
    /// `extra`, listening on `port` once it leads (the cluster's, or 0 for any),
    /// with a data dir of its own: it stands by until it can take the lease.
    /// Returns its number, for [`Cluster::take_over`].
    pub fn standby(&mut self, port: u16, extra: &[&str]) -> usize {
        let n = self.standbys.len();
        let data = self.dir.path().join(format!("standby-{n}"));
        let log = std::fs::File::create(self.dir.path().join(format!("standby-{n}.log"))).expect("standby log");
        let child = Command::new(bin("corral-coordinator"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .args(&self.coordinator_args)
            .args(extra)
            .envs(self.coordinator_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a standby corral-coordinator");
        self.standbys.push((child, data));
        n
    }

    /// Sends SIGTERM to standby `n` and waits (up to 10 s) for it to exit; returns
    /// whether it exited successfully.
    pub fn stop_standby(&mut self, n: usize) -> bool {
        let (mut child, _) = self.standbys.remove(n);
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The gRPC URL standby `n` serves on (as a standby, then as the leader).
    pub fn standby_url(&self, n: usize) -> String {
        let addr_file = self.standbys[n].1.join("standby.addr");
        wait_until(Duration::from_secs(30), "the standby to listen", || addr_file.is_file());
        let addr = std::fs::read_to_string(&addr_file).expect("address file");
        format!("{}://{}", self.scheme(), addr.trim())
    }

    /// The dashboard URL standby `n` serves on.
    pub fn standby_http_url(&self, n: usize) -> String {
        let addr_file = self.standbys[n].1.join("standby-http.addr");
        wait_until(Duration::from_secs(30), "the standby to listen", || addr_file.is_file());
        let addr = std::fs::read_to_string(&addr_file).expect("address file");
        format!("{}://{}", self.scheme(), addr.trim())
    }

    /// What standby `n` logged.
    pub fn standby_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("standby-{n}.log"))).unwrap_or_default()
    }

    /// Waits for standby `n` to lead, and makes it the cluster's coordinator (the
    /// one before it, if still running, stays among the standbys, last); returns
    /// how long that took.
    pub fn take_over(&mut self, n: usize) -> Duration {
        let started = Instant::now();
        let data = self.standbys[n].1.clone();
        let addr_file = data.join("coordinator.addr");
        wait_until(Duration::from_secs(30), "the standby to take over", || addr_file.is_file());
        let took = started.elapsed();
        let (child, _) = self.standbys.remove(n);
        if let Some(old) = self.coordinator.replace(child) {
            self.standbys.push((old, self.data_dir()));
        }
        self.leader_data = Some(data);
        let addr = std::fs::read_to_string(&addr_file).expect("address file");
        self.port = addr.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("port");
        self.url = format!("{}://127.0.0.1:{}", self.scheme(), self.port);
        took
    }

    /// Starts a new coordinator on the same port and data dir.
    pub fn restart_coordinator(&mut self) {
        self.kill_coordinator();
        self.spawn_coordinator();
    }

    /// Restarts the coordinator with `extra` flags for this one start.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.kill_coordinator();
        let before = self.coordinator_args.len();
        self.coordinator_args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn_coordinator();
        self.coordinator_args.truncate(before);
    }

    /// Starts a static agent for `pool`; returns its process id.
    pub fn agent(&mut self, pool: &str, slots: u32) -> u32 {
        self.agent_with_env(pool, slots, &[])
    }

    /// Starts a static agent with extra environment variables.
    pub fn agent_with_env(&mut self, pool: &str, slots: u32, env: &[(&str, &str)]) -> u32 {
        let child = self.spawn_agent(pool, slots, env, self.agents.len());
        let pid = child.id();
        self.agents.push(child);
        pid
    }

    /// Starts another agent on the work dir of agent `n` (which should be dead by
    /// now), as a restarted machine would; returns its process id.
    pub fn agent_again(&mut self, n: usize, pool: &str, slots: u32) -> u32 {
        let child = self.spawn_agent(pool, slots, &[], n);
        let pid = child.id();
        self.agents.push(child);
        pid
    }

    /// Starts one `corral-agent --simulate --nodes NODES` process, standing in
    /// for `nodes` nodes that run nothing; returns its process id.
    pub fn simulated_agents(&mut self, pool: &str, nodes: u32, slots: u32) -> u32 {
        let nodes = nodes.to_string();
        let child = self.spawn_agent_with(pool, slots, &[], self.agents.len(), &["--simulate", "--nodes", &nodes]);
        let pid = child.id();
        self.agents.push(child);
        pid
    }

    fn spawn_agent(&mut self, pool: &str, slots: u32, env: &[(&str, &str)], n: usize) -> std::process::Child {
        self.spawn_agent_with(pool, slots, env, n, &[])
    }

    fn spawn_agent_with(
        &mut self,
        pool: &str,
        slots: u32,
        env: &[(&str, &str)],
        n: usize,
        args: &[&str],
    ) -> std::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("agent-{n}.log")))
            .expect("agent log");
        // Static agents join with the admin token unless the test gives another.
        let mut cmd = Command::new(bin("corral-agent"));
        if let Some(ca) = self.ca_file() {
            cmd.env("CORRAL_CA_CERT", ca);
        }
        cmd.env_remove("CORRAL_TOKEN")
            .env("CORRAL_TOKEN_FILE", self.admin_token_file())
            .envs(env.iter().copied())
            .args([
                "--coordinator",
                self.coordinators.as_deref().unwrap_or(&self.url),
                "--pool",
                pool,
                "--slots",
                &slots.to_string(),
                "--kill-grace",
                "1s",
            ])
            .arg("--work-dir")
            .arg(self.dir.path().join(format!("agent-{n}")))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start corral-agent")
    }

    /// Runs an agent for `pool` at `url` that is expected to be refused and exit,
    /// with only the credentials in `env` (no token or CA settings of the test's
    /// own); returns what it printed on stderr.
    pub fn agent_refused(&self, url: &str, pool: &str, env: &[(&str, &str)]) -> String {
        let out = Command::new(bin("corral-agent"))
            .env_remove("CORRAL_TOKEN")
            .env_remove("CORRAL_TOKEN_FILE")
            .env_remove("CORRAL_CA_CERT")
            .env_remove("CORRAL_CA_FINGERPRINT")
            .envs(env.iter().copied())
            .args(["--coordinator", url, "--pool", pool, "--work-dir"])
            .arg(self.dir.path().join("refused-agent"))
            .stdin(Stdio::null())
            .output()
            .expect("run corral-agent");
        assert!(!out.status.success(), "the agent should have been refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs the CLI against this cluster, as the admin.
    pub fn corral(&self, args: &[&str]) -> Output {
        self.corral_as(Some(&self.admin_token()), args)
    }

    /// Runs the CLI presenting `token` (none: no token at all).
    pub fn corral_as(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("corral"));
        cmd.env_remove("CORRAL_TOKEN").env_remove("CORRAL_TOKEN_FILE").env_remove("CORRAL_CA_FINGERPRINT");
        cmd.env_remove("CORRAL_POOL");
        match self.ca_file() {
            Some(ca) => cmd.env("CORRAL_CA_CERT", ca),
            None => cmd.env_remove("CORRAL_CA_CERT"),
        };
        if let Some(token) = token {
            cmd.env("CORRAL_TOKEN", token);
        }
        cmd.arg("--coordinator")
            .arg(self.coordinators.as_deref().unwrap_or(&self.url))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run corral")
    }

    /// Runs the CLI with `-o json`, asserts success, and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = self.corral(&all);
        assert!(
            out.status.success(),
            "corral {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("corral {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// Runs the CLI expecting failure; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.corral(args);
        assert!(!out.status.success(), "corral {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Creates a static pool and starts `agents` agents with `slots` each, waiting
    /// until they are idle.
    pub fn static_pool(&mut self, name: &str, agents: usize, slots: u32) -> Vec<u32> {
        self.json(&["pool", "create", name, "--slots-per-node", &slots.to_string()]);
        let pids: Vec<u32> = (0..agents).map(|_| self.agent(name, slots)).collect();
        self.wait_nodes(name, "idle", agents);
        pids
    }

    /// Waits until `pool` has at least `n` nodes in `state`.
    pub fn wait_nodes(&self, pool: &str, state: &str, n: usize) {
        wait_until(Duration::from_secs(30), &format!("{n} {state} node(s) in {pool}"), || {
            self.nodes_in(pool, state).len() >= n
        });
    }

    /// The ids of `pool`'s nodes in `state`.
    pub fn nodes_in(&self, pool: &str, state: &str) -> Vec<String> {
        let nodes = self.json(&["node", "list", "--pool", pool]);
        nodes
            .as_array()
            .expect("node list is an array")
            .iter()
            .filter(|n| n["state"] == state)
            .map(|n| n["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The id of the node whose agent has process id `pid`.
    pub fn node_of_pid(&self, pid: u32) -> String {
        let nodes = self.json(&["node", "list"]);
        nodes
            .as_array()
            .expect("node list is an array")
            .iter()
            .find(|n| n["pid"] == pid && n["state"] != "lost" && n["state"] != "removed")
            .and_then(|n| n["id"].as_str())
            .unwrap_or_else(|| panic!("no live node has pid {pid}: {nodes}"))
            .to_string()
    }

    /// Submits a job with `args` (before `--`) and `cmd`; returns its id.
    pub fn submit(&self, args: &[&str], cmd: &[&str]) -> u64 {
        let mut all = vec!["job", "submit"];
        all.extend_from_slice(args);
        all.push("--");
        all.extend_from_slice(cmd);
        self.json(&all)["job_id"].as_u64().expect("job_id")
    }

    pub fn job(&self, id: u64) -> Value {
        self.json(&["job", "show", &id.to_string()])
    }

    /// Waits for a job to end (with a deadline) and returns it.
    pub fn wait_job(&self, id: u64, timeout: Duration) -> Value {
        wait_until(timeout, &format!("job {id} to end"), || self.job(id)["state"] != "active");
        self.job(id)
    }

    /// Every attempt of every task of a job: `(task index, attempts)`.
    pub fn attempts(&self, job: u64) -> Vec<(u64, Vec<Value>)> {
        let tasks = self.json(&["task", "list", &job.to_string()]);
        tasks
            .as_array()
            .expect("task list is an array")
            .iter()
            .map(|t| {
                let index = t["id"].as_u64().expect("task id");
                let shown = self.json(&["task", "show", &job.to_string(), &index.to_string()]);
                (index, shown["attempts"].as_array().cloned().unwrap_or_default())
            })
            .collect()
    }

    /// Asserts that every task of `job` succeeded exactly once in the record.
    pub fn assert_each_succeeded_once(&self, job: u64) -> Vec<(u64, Vec<Value>)> {
        let all = self.attempts(job);
        for (index, attempts) in &all {
            let wins = attempts.iter().filter(|a| a["outcome"] == "succeeded").count();
            assert_eq!(wins, 1, "task {job}.{index} succeeded {wins} times: {attempts:?}");
            let last = attempts.last().expect("an attempt");
            assert_eq!(last["outcome"], "succeeded", "task {job}.{index}: the last attempt decides: {attempts:?}");
        }
        all
    }

    /// A task's stdout (or stderr), latest attempt.
    pub fn logs(&self, job: u64, task: u64, stderr: bool) -> String {
        let (job, task) = (job.to_string(), task.to_string());
        let mut args = vec!["task", "logs", &job, &task];
        if stderr {
            args.push("--stderr");
        }
        let out = self.corral(&args);
        assert!(out.status.success(), "task logs failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The slots of the jobs `schedule` made, as `job list --schedule` shows them,
    /// in order.
    pub fn schedule_slots(&self, schedule: &str) -> Vec<u64> {
        let jobs = self.json(&["job", "list", "--schedule", schedule]);
        let mut slots: Vec<u64> = jobs
            .as_array()
            .expect("job list is an array")
            .iter()
            .map(|j| {
                assert_eq!(j["schedule"], schedule, "{j}");
                j["scheduled_for_ms"].as_u64().expect("a scheduled job's slot")
            })
            .collect();
        slots.sort();
        slots
    }

    /// What the standard gRPC health service says of the coordinator as a whole.
    pub fn health(&self) -> tonic_health::pb::health_check_response::ServingStatus {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let mut client = tonic_health::pb::health_client::HealthClient::new(self.channel().await);
            let resp = client
                .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                .await
                .expect("health check");
            resp.into_inner().status()
        })
    }

    /// Sends `sig` to a process.
    pub fn signal(&self, pid: u32, sig: libc::c_int) {
        signal(pid, sig);
    }

    /// The coordinator's process id.
    pub fn coordinator_pid(&self) -> u32 {
        self.coordinator.as_ref().expect("a running coordinator").id()
    }

    /// The coordinator's resident memory, in bytes.
    pub fn coordinator_rss(&self) -> u64 {
        rss(self.coordinator_pid())
    }

    /// The coordinator's log so far, for failure messages.
    pub fn coordinator_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("coordinator.log")).unwrap_or_default()
    }
}

/// A process's resident memory, in bytes (0 once it is gone).
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The live processes whose command line holds `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(marker))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Whether a process exists (and is not a zombie we are about to reap).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            signal(agent.id(), libc::SIGCONT);
            signal(agent.id(), libc::SIGTERM);
        }
        if let Some(c) = &self.coordinator {
            signal(c.id(), libc::SIGCONT);
            signal(c.id(), libc::SIGTERM);
        }
        for (standby, _) in &mut self.standbys {
            let _ = standby.kill();
            let _ = standby.wait();
        }
        self.stop_members();
        let deadline = Instant::now() + Duration::from_secs(8);
        for child in self.agents.iter_mut().chain(self.coordinator.as_mut()) {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.docker {
            // Containers outlive their coordinator (as machines would); a test leaves none.
            if let Ok(instance) = std::fs::read_to_string(self.data_dir().join("instance")) {
                let filter = format!("label=corral.coordinator={}", instance.trim());
                if let Ok(out) = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() {
                    let ids: Vec<String> =
                        String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
                    if !ids.is_empty() {
                        let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).output();
                    }
                }
            }
        }
        if self.small_disk {
            let _ = Command::new("umount").arg(self.data_dir()).output();
        }
        if self.pgid != 0 {
            // Local agents left by a coordinator that was killed and not restarted.
            // SAFETY: kill(2) has no memory effects.
            unsafe {
                libc::kill(-(self.pgid as libc::pid_t), libc::SIGKILL);
            }
        }
    }
}

/// Every slot of an every-second schedule once: distinct, and a second apart with no
/// hole.
pub fn assert_each_slot_once(slots: &[u64]) {
    let unique: std::collections::BTreeSet<u64> = slots.iter().copied().collect();
    assert_eq!(unique.len(), slots.len(), "a slot ran twice: {slots:?}");
    for pair in slots.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "a slot is missing: {slots:?}");
    }
}
