//! Containers for the docker provider's tests: the agent image built from this build,
//! the docker CLI, and a cluster whose nodes are containers.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::{bin, Cluster};

impl Cluster {
    /// Starts a coordinator that containers can reach (it listens on 0.0.0.0), after
    /// building the agent image [`DOCKER_IMAGE`] from this build's agent.
    pub fn start_docker(extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        docker_image();
        Cluster::launch(extra, env, true)
    }

    /// Names of this coordinator's containers, running or not (`docker ps -a`).
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label=corral.coordinator={}", self.instance());
        let out = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
        out.lines().map(str::to_string).collect()
    }

    /// Starts an agent in a container of [`DOCKER_IMAGE`] that joins `pool` by
    /// itself (a static node), named and with the hostname `name`.
    pub fn docker_agent(&self, pool: &str, slots: u32, name: &str) {
        let url = format!("{}://host.docker.internal:{}", self.scheme(), self.port);
        let label = format!("corral.coordinator={}", self.instance());
        let slots = slots.to_string();
        // A token bound to the pool, as an operator would hand out, passed by
        // environment (`-e NAME` copies it from docker's own), not on a command line.
        let token = self.token(&format!("agent-{name}"), "agent", &["--pool", pool]);
        let pin = self.ca_fingerprint().unwrap_or_default();
        let args = [
            "run",
            "-d",
            "--init",
            "-e",
            "CORRAL_TOKEN",
            "-e",
            "CORRAL_CA_FINGERPRINT",
            "--name",
            name,
            "--hostname",
            name,
            "--label",
            &label,
            "--add-host",
            "host.docker.internal:host-gateway",
            DOCKER_IMAGE,
            "--coordinator",
            &url,
            "--pool",
            pool,
            "--slots",
            &slots,
            "--kill-grace",
            "1s",
        ];
        let out = Command::new("docker")
            .args(args)
            .env("CORRAL_TOKEN", token)
            .env("CORRAL_CA_FINGERPRINT", pin)
            .stdin(Stdio::null())
            .output();
        let out = out.expect("run docker");
        assert!(out.status.success(), "docker run failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The image docker tests use, built from this build's `corral-agent`.
pub const DOCKER_IMAGE: &str = "corral-agent:test";

/// Builds [`DOCKER_IMAGE`] once per test process with `docker/agent-image.sh`, the
/// documented way.
pub fn docker_image() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/agent-image.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg("--agent")
            .arg(bin("corral-agent"))
            .args(["--tag", DOCKER_IMAGE])
            .output()
            .expect("run docker/agent-image.sh");
        assert!(
            out.status.success(),
            "docker/agent-image.sh failed (is the Docker engine running, busybox-static installed?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Runs the docker CLI, asserts success, and returns its stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).stdin(Stdio::null()).output().expect("run docker");
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
