//! Agents a test starts: static ones, again on the same work dir, simulated ones,
//! and one that should be refused.

use std::process::{Command, Stdio};

use super::*;

impl Cluster {
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
}
