//! A throwaway Slurm cluster per test, on this one host (Debian's `slurmctld`,
//! `slurmd` and `munge`): its own munge key and socket, a `slurm.conf` on free
//! ports, one `slurmctld` and several `slurmd` (nodes `n1`, `n2`, ... of the
//! partition `batch`, each with its own port, spool, pid and log files), all in
//! the foreground as root and in a temp dir. Dropped, it cancels every job (the
//! job steps live on without `slurmd` otherwise) and stops its daemons.
//!
//! Commands that talk to it (`sbatch`, `squeue`, `scancel`, `srun`) need
//! `SLURM_CONF` from [`Slurm::env`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::wait_until;

pub struct Slurm {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
    pub nodes: usize,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

fn daemon(program: &str, args: &[&str], log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("daemon log");
    Command::new(program)
        .args(args)
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program} (Debian's slurmctld, slurmd and munge packages): {e}"))
}

impl Slurm {
    /// Starts a cluster of `nodes` nodes with `cpus` CPUs each and waits until
    /// they are idle.
    pub fn start(nodes: usize, cpus: u32) -> Slurm {
        let dir = tempfile::Builder::new().prefix("slurm").tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub)).expect("slurm dirs");
        }
        // munged's socket dir must be searchable by every user a job runs as.
        use std::os::unix::fs::PermissionsExt;
        for p in [d.clone(), d.join("munge")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let key = d.join("munge/key");
        let made = Command::new("mungekey").arg("-c").arg("-k").arg(&key).output().expect("run mungekey");
        assert!(made.status.success(), "mungekey: {}", String::from_utf8_lossy(&made.stderr));
        let socket = d.join("munge/sock");
        let mut daemons = vec![daemon(
            "munged",
            &[
                "-F",
                "--force",
                "--key-file",
                &text(&key),
                "--socket",
                &text(&socket),
                "--pid-file",
                &text(&d.join("munge/pid")),
                "--seed-file",
                &text(&d.join("munge/seed")),
                "--log-file",
                &text(&d.join("munge/log")),
            ],
            &d.join("log/munged.out"),
        )];
        wait_until(Duration::from_secs(10), "munged's socket", || socket.exists());
        let conf = d.join("slurm.conf");
        std::fs::write(&conf, config(&d, &socket, nodes, cpus)).expect("write slurm.conf");
        let conf_text = text(&conf);
        daemons.push(daemon("slurmctld", &["-D", "-i", "-f", &conf_text], &d.join("log/slurmctld.out")));
        for n in 1..=nodes {
            let name = format!("n{n}");
            let log = d.join(format!("log/{name}.out"));
            daemons.push(daemon("slurmd", &["-D", "-N", &name, "-f", &conf_text], &log));
        }
        let slurm = Slurm { dir, daemons, nodes };
        wait_until(Duration::from_secs(60), &format!("{nodes} idle Slurm nodes"), || {
            let out = slurm.run("sinfo", &["-h", "-N", "-o", "%N %T"]);
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.ends_with(" idle")).count() == nodes
        });
        slurm
    }

    /// The environment its commands need.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("SLURM_CONF".into(), text(&self.conf()))]
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// Runs a Slurm command (`sbatch`, `squeue`, ...) against this cluster.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .env("SLURM_CONF", self.conf())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// The cluster's jobs as `squeue` shows them: (job id, state, name).
    pub fn jobs(&self) -> Vec<(u64, String, String)> {
        let out = self.run("squeue", &["-h", "-o", "%i %T %j"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let id = words.next()?.parse().ok()?;
                Some((id, words.next()?.to_string(), words.next().unwrap_or_default().to_string()))
            })
            .collect()
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // Its job steps outlive slurmd: cancelled first, while it can still reach them.
        let _ = self.run("scancel", &["--full", "--user", "root"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.jobs().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for child in self.daemons.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A `slurm.conf` for `nodes` nodes of this host, on free ports, with its state
/// in `dir` and munge at `socket`.
fn config(dir: &Path, socket: &Path, nodes: usize, cpus: u32) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    let host = host.trim();
    let d = dir.display();
    let mut conf = format!(
        "ClusterName=corraltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/linear
SchedulerType=sched/backfill
KillWait=2
ReturnToService=2
SlurmdParameters=config_overrides
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
",
        ctld = free_port(),
        socket = socket.display(),
    );
    let names: Vec<String> = (1..=nodes).map(|n| format!("n{n}")).collect();
    for name in &names {
        conf.push_str(&format!(
            "NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={} CPUs={cpus} State=UNKNOWN\n",
            free_port()
        ));
    }
    conf.push_str(&format!("PartitionName=batch Nodes={} Default=YES MaxTime=INFINITE State=UP\n", names.join(",")));
    conf
}
