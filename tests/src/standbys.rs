//! Coordinators on one PostgreSQL database: the leader behind a proxy the test can
//! cut, standbys, and taking over.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

impl Cluster {
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
}
