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

mod agents;
pub mod docker;
pub mod grpc;
pub mod ha;
mod http;
pub mod netns;
pub mod postgres;
mod processes;
pub mod rabbitmq;
pub mod redis_server;
pub mod slurm;
pub mod soak;
mod standbys;
pub mod webdriver;

pub use docker::{docker, docker_image, DOCKER_IMAGE};
pub use processes::{alive, processes_with, rss};
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
