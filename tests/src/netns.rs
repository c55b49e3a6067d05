//! Agents on networks of their own: each in a network namespace with its own
//! address, all on a bridge in a namespace of its own (a bridge on the host would
//! meet Docker's FORWARD DROP policy), and the host reachable from them through a
//! veth. Needs root and `ip` (iproute2). Everything is removed when dropped.

use std::process::{Command, Stdio};

use crate::{bin, Cluster};

pub struct Net {
    tag: String,
    /// The first three parts of the subnet's addresses.
    subnet: String,
    /// The agents' namespaces, then the hub's.
    spaces: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Net {
    /// `n` namespaces for agents, on one bridge with the host.
    pub fn new(n: usize) -> Net {
        let tag = format!("{}", std::process::id() % 100_000);
        let subnet = format!("10.213.{}", std::process::id() % 250);
        let hub = format!("crhub{tag}");
        let mut net = Net { tag: tag.clone(), subnet: subnet.clone(), spaces: Vec::new() };
        ip(&["netns", "add", &hub]);
        net.spaces.push(hub.clone());
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        // The host's end: the coordinator listens there.
        let (host_if, host_peer) = (format!("crh{tag}"), format!("crb{tag}"));
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &host_peer]);
        ip(&["link", "set", &host_peer, "netns", &hub]);
        ip(&["-n", &hub, "link", "set", &host_peer, "master", "br0", "up"]);
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        for i in 0..n {
            let space = format!("cra{tag}-{i}");
            let (inside, outside) = (format!("cri{tag}{i}"), format!("cro{tag}{i}"));
            ip(&["netns", "add", &space]);
            net.spaces.insert(i, space.clone());
            ip(&["-n", &space, "link", "set", "lo", "up"]);
            ip(&["link", "add", &inside, "type", "veth", "peer", "name", &outside]);
            ip(&["link", "set", &inside, "netns", &space]);
            ip(&["link", "set", &outside, "netns", &hub]);
            ip(&["-n", &hub, "link", "set", &outside, "master", "br0", "up"]);
            ip(&["-n", &space, "addr", "add", &format!("{}/24", net.address(i)), "dev", &inside]);
            ip(&["-n", &space, "link", "set", &inside, "up"]);
        }
        net
    }

    /// The address of agent namespace `i`.
    pub fn address(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 11 + i)
    }

    /// The host's address on the bridge.
    pub fn host(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// The subnet, as OpenMPI's `*_if_include` takes it.
    pub fn cidr(&self) -> String {
        format!("{}.0/24", self.subnet)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for space in &self.spaces {
            let _ = Command::new("ip").args(["netns", "del", space]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &format!("crh{}", self.tag)]).output();
    }
}

impl Cluster {
    /// Starts a coordinator that listens on every interface (plain HTTP: these
    /// tests' networks are their own).
    pub fn start_reachable(extra: &[&str]) -> Cluster {
        Cluster::launch(extra, &[], true)
    }

    /// Starts a static agent for `pool` in namespace `i` of `net`; returns its pid.
    pub fn agent_in(&mut self, net: &Net, i: usize, pool: &str, slots: u32) -> u32 {
        let n = self.agents.len();
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{n}.log"))).expect("agent log");
        let url = format!("http://{}:{}", net.host(), self.port);
        let child = Command::new("ip")
            .args(["netns", "exec", &net.spaces[i]])
            .arg(bin("corral-agent"))
            .env_remove("CORRAL_TOKEN")
            .env("CORRAL_TOKEN_FILE", self.admin_token_file())
            .args(["--coordinator", &url, "--pool", pool, "--slots", &slots.to_string(), "--kill-grace", "1s"])
            .arg("--work-dir")
            .arg(self.dir.path().join(format!("agent-{n}")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start corral-agent in a namespace");
        let pid = child.id();
        self.agents.push(child);
        pid
    }
}
