//! A multi-node task's rank on this node.
//!
//! Every rank gets the same picture of the gang: `CORRAL_NODE_RANK`,
//! `CORRAL_NUM_NODES`, `CORRAL_HOSTS` (each rank's address, as the coordinator saw
//! its agent connect), `CORRAL_NODES` (their node ids) and `CORRAL_HOSTFILE`, a
//! file in the task's directory in OpenMPI's format (`NODE slots=S`, one line a
//! rank; MPICH's Hydra gets the same as `NODE:S` in `HYDRA_HOST_FILE`). The
//! hostfiles name nodes by id, which the agents' own launcher resolves
//! (`corral-rsh`, set as OpenMPI's `plm_rsh_agent` and Hydra's launcher), so a
//! plain `mpirun -np N ./solver` (or `mpiexec -n N`) starts its daemons through the
//! agents, never ssh.
//!
//! Rank 0 runs the task's command. The other ranks run a holder (`corral-rsh
//! --hold`) in a process group of the attempt's own: it keeps the node for the
//! gang, and what the launcher starts there joins its group, so the attempt's
//! end kills it. A member has no timeout of its own, uploads no outputs and keeps
//! no checkpoint: those are rank 0's.

use std::path::Path;

use corral_proto::v1 as pb;

/// The argument that makes the launcher a member rank's holder.
pub const HOLD: &str = "--hold";

/// The hostfile's name in the task's directory.
pub const HOSTFILE: &str = "hostfile";
/// The same hosts in MPICH's (Hydra's) format, `NODE:SLOTS`.
pub const HYDRA_HOSTFILE: &str = "hostfile.hydra";

/// Prepares `a` for its rank: the hostfile in `dir`, the environment, and for a
/// member the holder instead of the command. `rsh` is the agent's launcher.
pub fn prepare(a: &mut pb::Assignment, dir: &Path, rsh: &Path) -> std::io::Result<()> {
    let Some(gang) = a.gang.clone() else { return Ok(()) };
    // Whole: the ranks' commands may run anywhere.
    let dir = std::path::absolute(dir)?;
    let hostfile = dir.join(HOSTFILE);
    std::fs::write(&hostfile, hostfile_text(&gang))?;
    let hostfile = hostfile.display().to_string();
    let hydra_hostfile = dir.join(HYDRA_HOSTFILE);
    std::fs::write(&hydra_hostfile, hydra_hostfile_text(&gang))?;
    let rsh = rsh.display().to_string();
    let env = [
        ("CORRAL_NODE_RANK", gang.rank.to_string()),
        ("CORRAL_NUM_NODES", gang.nodes.len().to_string()),
        ("CORRAL_HOSTS", gang.hosts.join(",")),
        ("CORRAL_NODES", gang.nodes.join(",")),
        ("CORRAL_HOSTFILE", hostfile.clone()),
        // OpenMPI: the hosts, and the agents as its remote shell.
        ("OMPI_MCA_orte_default_hostfile", hostfile),
        ("OMPI_MCA_plm_rsh_agent", rsh.clone()),
        // MPICH's Hydra: the hosts, and the same launcher.
        ("HYDRA_HOST_FILE", hydra_hostfile.display().to_string()),
        ("HYDRA_LAUNCHER", "ssh".into()),
        ("HYDRA_LAUNCHER_EXEC", rsh.clone()),
    ];
    for (k, v) in env {
        a.env.insert(k.into(), v);
    }
    if gang.rank > 0 {
        a.argv = vec![rsh.clone(), HOLD.into()];
        a.timeout_ms = 0;
        a.outputs.clear();
        a.checkpoint.clear();
        a.checkpoint_object.clear();
    }
    Ok(())
}

/// What a rank's runner needs to let its processes launch: the agent's launch
/// server and the secret it gave this attempt. Once registered, the rank is
/// unregistered and what carries its secret killed however the runner ends
/// ([`Launching::end`], or when dropped on an early return).
pub struct Launching {
    pub launches: std::sync::Arc<crate::launches::Launches>,
    pub token: String,
    registered: Option<corral_types::ids::AttemptRef>,
}

impl Launching {
    /// Lets the rank's processes launch, and launches join it (`rank.pgid` 0 until
    /// its own process exists and [`Launching::set_group`] says its group: until
    /// then each launch gets a group of its own).
    pub fn register(&mut self, attempt: corral_types::ids::AttemptRef, rank: crate::launches::Rank) {
        self.launches.register(attempt, rank);
        self.registered = Some(attempt);
    }

    /// Launches here join the rank's process group from now on.
    pub fn set_group(&self, pgid: i32) {
        if let Some(attempt) = self.registered {
            self.launches.set_group(attempt, pgid);
        }
    }

    /// Nothing launches with its secret any more.
    pub fn close(&self) {
        if let Some(attempt) = self.registered {
            self.launches.unregister(attempt);
        }
    }

    /// Closes it, and kills what carries its secret (off the runtime's thread).
    pub async fn end(mut self) -> usize {
        self.close();
        self.registered = None;
        let token = self.token.clone();
        tokio::task::spawn_blocking(move || kill_marked(&token)).await.unwrap_or(0)
    }
}

impl Drop for Launching {
    fn drop(&mut self) {
        if self.registered.is_some() {
            self.close();
            kill_marked(&self.token);
        }
    }
}

/// Sets `a` up for its rank ([`prepare`]) with the launch socket and a fresh
/// secret in its environment; `None` for a task on one node. Refused (the
/// attempt cannot start) where the agent has no launcher (simulated).
pub fn setup(
    a: &mut pb::Assignment,
    dir: &Path,
    tools: Option<&crate::launch::GangTools>,
) -> Result<Option<Launching>, String> {
    if a.gang.is_none() {
        return Ok(None);
    }
    let tools =
        tools.ok_or("this agent cannot run multi-node tasks (see its log: its launcher could not be set up)")?;
    let token = crate::launches::secret().map_err(|e| format!("cannot make the launch secret: {e}"))?;
    prepare(a, dir, &tools.rsh).map_err(|e| format!("cannot write the hostfile in {}: {e}", dir.display()))?;
    a.env.insert(crate::rsh::SOCKET_VAR.into(), tools.launches.socket().display().to_string());
    a.env.insert(crate::rsh::TOKEN_VAR.into(), token.clone());
    Ok(Some(Launching { launches: tools.launches.clone(), token, registered: None }))
}

/// Kills every process whose environment carries this rank's launch secret:
/// what its command started, and what launches started here for it, even where
/// they left its process group (OpenMPI gives each rank and each launcher a
/// group of its own). Scans again until none is left (a process may fork while
/// it is killed); returns how many were killed.
pub fn kill_marked(token: &str) -> usize {
    let mark = format!("{}={token}", crate::rsh::TOKEN_VAR);
    let own = std::process::id();
    let mut killed = 0;
    for _ in 0..10 {
        let Ok(entries) = std::fs::read_dir("/proc") else { return killed };
        let marked: Vec<i32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid as u32 != own)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == mark.as_bytes()))
            })
            .collect();
        if marked.is_empty() {
            break;
        }
        for pid in marked {
            // SAFETY: kill(2) on a pid just read; at worst it is gone already.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    killed
}

/// A coordination command and what it runs with (rank 0's environment, directory
/// and timeout).
pub struct Coordination<'a> {
    pub command: &'a str,
    pub rsh: &'a Path,
    pub env: &'a std::collections::HashMap<String, String>,
    pub dir: &'a Path,
    pub limit: Option<std::time::Duration>,
}

/// Runs the coordination command on every rank's node through the launcher, each
/// one's output that rank's own (rank 0's is the task's; the launcher's own
/// complaints go to `out`, kept flowing through `relay`), and waits for all of
/// them: an error (how the attempt ends, and why) if one fails, the attempt is
/// stopped, or the task's timeout passes first.
pub async fn coordinate(
    how: Coordination<'_>,
    gang: &pb::Gang,
    out: [&std::io::PipeWriter; 2],
    relay: &mut crate::relay::Relay,
    stop: &mut tokio::sync::oneshot::Receiver<()>,
) -> Result<(), (corral_types::Outcome, String)> {
    use corral_types::Outcome;
    let failed = |why: String| (Outcome::Failed, why);
    let mut ranks = Vec::new();
    for node in &gang.nodes {
        let (o, e) = match (out[0].try_clone(), out[1].try_clone()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(err), _) | (_, Err(err)) => {
                return Err(failed(format!("cannot set up the coordination command: {err}")))
            }
        };
        let child = tokio::process::Command::new(how.rsh)
            .arg(crate::rsh::OWN_OUTPUT)
            .arg(node)
            .arg(how.command)
            .envs(how.env)
            .current_dir(how.dir)
            .stdin(std::process::Stdio::null())
            .stdout(o)
            .stderr(e)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot start the coordination command: {e}")))?;
        ranks.push((node.clone(), child));
    }
    let waits = async {
        let mut codes = Vec::new();
        for (node, child) in ranks.iter_mut() {
            codes.push((node.clone(), child.wait().await));
        }
        codes
    };
    let deadline = how.limit.map(|l| tokio::time::Instant::now() + l);
    let until = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(waits, until);
    let codes = loop {
        tokio::select! {
            codes = &mut waits => break codes,
            _ = relay.step(), if relay.is_open() => {}
            _ = &mut *stop => return Err((Outcome::Cancelled, "cancelled during the coordination command".into())),
            _ = &mut until => return Err((Outcome::TimedOut, "timed out in the coordination command".into())),
        }
    };
    for (rank, (node, status)) in codes.into_iter().enumerate() {
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                let code = s.code().map_or_else(|| "a signal".to_string(), |c| format!("code {c}"));
                return Err(failed(format!(
                    "the coordination command on rank {rank} (node {node}) exited with {code}"
                )));
            }
            Err(e) => return Err(failed(format!("the coordination command on node {node}: {e}"))),
        }
    }
    Ok(())
}

/// OpenMPI's hostfile: each rank's node and slots, rank 0 first.
pub fn hostfile_text(gang: &pb::Gang) -> String {
    gang.nodes.iter().zip(&gang.slots).map(|(node, slots)| format!("{node} slots={slots}\n")).collect()
}

/// MPICH's (Hydra's): the same, as `NODE:SLOTS`.
pub fn hydra_hostfile_text(gang: &pb::Gang) -> String {
    gang.nodes.iter().zip(&gang.slots).map(|(node, slots)| format!("{node}:{slots}\n")).collect()
}

/// `corral-rsh --hold`: waits until killed.
pub fn hold() -> ! {
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gang(rank: u32) -> pb::Assignment {
        pb::Assignment {
            argv: vec!["mpirun".into(), "./solver".into()],
            timeout_ms: 60_000,
            outputs: vec!["out/*".into()],
            gang: Some(pb::Gang {
                rank,
                nodes: vec!["n-1".into(), "n-2".into()],
                hosts: vec!["10.0.0.1".into(), "10.0.0.2".into()],
                slots: vec![4, 2],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_rank_sees_the_gang_and_a_member_holds_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let rsh = Path::new("/w/bin/corral-rsh");
        let mut primary = gang(0);
        prepare(&mut primary, dir.path(), rsh).unwrap();
        assert_eq!(primary.argv, ["mpirun", "./solver"]);
        assert_eq!(std::fs::read_to_string(dir.path().join(HOSTFILE)).unwrap(), "n-1 slots=4\nn-2 slots=2\n");
        assert_eq!(std::fs::read_to_string(dir.path().join(HYDRA_HOSTFILE)).unwrap(), "n-1:4\nn-2:2\n");
        let env = |a: &pb::Assignment, k: &str| a.env.get(k).cloned().unwrap_or_default();
        assert_eq!(env(&primary, "CORRAL_NODE_RANK"), "0");
        assert_eq!(env(&primary, "CORRAL_NUM_NODES"), "2");
        assert_eq!(env(&primary, "CORRAL_HOSTS"), "10.0.0.1,10.0.0.2");
        assert_eq!(env(&primary, "OMPI_MCA_plm_rsh_agent"), "/w/bin/corral-rsh");
        let mut member = gang(1);
        prepare(&mut member, dir.path(), rsh).unwrap();
        assert_eq!(member.argv, ["/w/bin/corral-rsh", "--hold"]);
        assert_eq!((member.timeout_ms, member.outputs.len()), (0, 0));
        assert_eq!(env(&member, "CORRAL_NODE_RANK"), "1");
        let mut plain = pb::Assignment { argv: vec!["true".into()], ..Default::default() };
        prepare(&mut plain, dir.path(), rsh).unwrap();
        assert!(plain.env.is_empty() && plain.argv == ["true"]);
    }
}
