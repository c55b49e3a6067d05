//! Several coordinators on one PostgreSQL database for fault tests: each reaches the
//! database through a proxy of its own (so any one can be cut off from it), listens
//! on a port of its own that it keeps across restarts, and can be killed, paused,
//! cut off and started again while the CLI and the agents (given every address)
//! follow whichever leads.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::postgres::{Postgres, Proxy};
use crate::{bin, signal, wait_until, Cluster};

/// One coordinator of a [`Cluster::start_ha`] cluster.
pub(crate) struct Member {
    child: Option<Child>,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// Its own way to the database, which the test can cut.
    proxy: Proxy,
    /// Its flags but `--listen` and `--data-dir`.
    args: Vec<String>,
}

impl Member {
    fn spawn(&mut self, env: &[(String, String)]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("member log");
        let child = Command::new(bin("corral-coordinator"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data)
            .args(&self.args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a corral-coordinator");
        self.child = Some(child);
    }
}

impl Cluster {
    /// Starts `n` coordinators on one new PostgreSQL database, with `extra` flags and
    /// one shared object store; the first leads. The CLI and the agents are given
    /// every one of them.
    pub fn start_ha(n: usize, extra: &[&str]) -> Cluster {
        let pg = Postgres::start();
        let direct = pg.create("corral");
        let proxies: Vec<Proxy> = (0..n.max(1)).map(|_| pg.proxy()).collect();
        let first = proxies[0].url("corral");
        let mut c = Cluster::launch_on_postgres(pg, &first, extra);
        let args: Vec<String> = c.coordinator_args.clone();
        let own = |proxy: &Proxy| -> Vec<String> {
            let url = proxy.url("corral");
            args.iter().map(|a| if *a == first || *a == direct { url.clone() } else { a.clone() }).collect()
        };
        for (i, proxy) in proxies.into_iter().enumerate() {
            let (data, log) = match i {
                0 => (c.data_dir(), c.dir.path().join("coordinator.log")),
                _ => (c.dir.path().join(format!("member-{i}")), c.dir.path().join(format!("member-{i}.log"))),
            };
            let mut member = Member { child: None, data, log, port: 0, args: own(&proxy), proxy };
            if i == 0 {
                member.child = c.coordinator.take();
                member.port = c.port;
            } else {
                member.spawn(&c.coordinator_env);
                let addr = member.data.join("standby.addr");
                wait_until(Duration::from_secs(30), "a standby to listen", || addr.is_file());
                let addr = std::fs::read_to_string(&addr).expect("standby address");
                member.port = addr.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("port");
            }
            c.members.push(member);
        }
        let urls: Vec<String> = (0..c.members.len()).map(|i| c.member_url(i)).collect();
        c.coordinators = Some(urls.join(","));
        c
    }

    /// Where member `i` serves (as a standby, and as the leader).
    pub fn member_url(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.members[i].port)
    }

    /// The member that holds an unexpired lease, by the database's clock.
    pub fn leading_member(&self) -> Option<usize> {
        let sql = "SELECT advertise FROM corral_lease WHERE expires_at > clock_timestamp()";
        let (ok, out) = self.postgres.as_ref()?.psql("corral", sql);
        let advertised = out.trim();
        if !ok || advertised.is_empty() {
            return None;
        }
        (0..self.members.len()).find(|i| self.member_url(*i) == advertised)
    }

    /// Waits (up to a minute) for a member to lead, and returns it.
    pub fn wait_for_leader(&self) -> usize {
        let mut leader = None;
        wait_until(Duration::from_secs(60), "a coordinator to lead", || {
            leader = self.leading_member();
            leader.is_some()
        });
        leader.unwrap_or_default()
    }

    /// The process of member `i`, if it runs.
    pub fn member_pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Kills member `i` with SIGKILL (it was paused or not: it goes).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again, on its port and data dir, reaching the database
    /// through its proxy (healed): it stands by until it can lead.
    pub fn start_member(&mut self, i: usize) {
        self.kill_member(i);
        self.members[i].proxy.heal();
        let env = self.coordinator_env.clone();
        self.members[i].spawn(&env);
    }

    /// Cuts member `i` off from the database ([`Proxy::cut`]).
    pub fn cut_member(&self, i: usize) {
        self.members[i].proxy.cut();
    }

    /// Lets member `i` reach the database again.
    pub fn heal_member(&self, i: usize) {
        self.members[i].proxy.heal();
    }

    /// Sends `sig` to member `i` (SIGSTOP, SIGCONT...).
    pub fn signal_member(&self, i: usize, sig: libc::c_int) {
        if let Some(pid) = self.member_pid(i) {
            signal(pid, sig);
        }
    }

    /// What member `i` logged, in all its runs.
    pub fn member_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// Every event in the record with the epoch of the leader that committed it, in
    /// the order of their ids.
    pub fn event_epochs(&self) -> Vec<(u64, Option<u64>)> {
        let pg = self.postgres.as_ref().expect("a cluster on PostgreSQL");
        let (ok, out) = pg.psql("corral", "SELECT id, coalesce(epoch::text, '') FROM events ORDER BY id");
        assert!(ok, "reading the events' epochs: {out}");
        out.lines()
            .filter_map(|line| {
                let (id, epoch) = line.split_once('|')?;
                Some((id.parse().ok()?, epoch.parse().ok()))
            })
            .collect()
    }

    /// Stops every member (paused ones too), for Drop.
    pub(crate) fn stop_members(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                signal(child.id(), libc::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
