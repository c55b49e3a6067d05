//! Multi-node tasks end to end: OpenMPI's `mpirun` across real agents, launched
//! through the agents (never ssh); the launcher's refusals; and a member agent
//! SIGKILLed mid-run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corral_tests::*;

const MINUTE: Duration = Duration::from_secs(60);

/// Each rank adds its rank + 1; each prints its node (CORRAL_NODE_ID of its
/// parent, the daemon an agent started: MPICH's Hydra gives every rank
/// mpiexec's own environment) and the sum. On the first attempt, with SLEEP
/// set, every rank then waits a minute.
const PROGRAM: &str = r#"
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static char env[1 << 16];
static const char *parent_node(void) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)getppid());
    FILE *f = fopen(path, "r");
    if (!f) return "?";
    size_t n = fread(env, 1, sizeof env - 1, f);
    fclose(f);
    env[n] = 0;
    for (size_t i = 0; i < n; i += strlen(env + i) + 1)
        if (strncmp(env + i, "CORRAL_NODE_ID=", 15) == 0) return env + i + 15;
    return "?";
}
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long mine = rank + 1, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d of %d on %s sum %ld\n", rank, size, parent_node(), sum);
    fflush(stdout);
    const char *attempt = getenv("CORRAL_ATTEMPT");
    if (getenv("SLEEP") && attempt && strcmp(attempt, "1") == 0) {
        sleep(60);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    return 0;
}
"#;

/// The program, compiled with `mpicc` (OpenMPI's) into `dir`.
fn compile(dir: &Path) -> PathBuf {
    compile_with("mpicc", dir)
}

fn compile_with(mpicc: &str, dir: &Path) -> PathBuf {
    std::fs::write(dir.join("ranks.c"), PROGRAM).expect("write the program");
    let exe = dir.join("ranks");
    let out = Command::new(mpicc).arg("-o").arg(&exe).arg(dir.join("ranks.c")).output().expect(mpicc);
    assert!(out.status.success(), "{mpicc}: {}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// An `ssh` that only leaves a mark: first on the tasks' PATH, it shows whether
/// anything tried ssh.
fn fake_ssh(dir: &Path) -> (String, PathBuf) {
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let marker = dir.join("ssh-was-called");
    let script = format!("#!/bin/sh\necho \"$@\" >> {}\nexit 255\n", marker.display());
    let ssh = bin.join("ssh");
    std::fs::write(&ssh, script).expect("write ssh");
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&ssh, executable).expect("chmod ssh");
    let path = format!("PATH={}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    (path, marker)
}

/// What every MPI job here needs in its environment (root in CI; TCP between
/// ranks, as agents on one host share its shared memory and hostname).
const MPI_ENV: [&str; 6] = [
    "--env",
    "OMPI_ALLOW_RUN_AS_ROOT=1",
    "--env",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
    "--env",
    "OMPI_MCA_btl=tcp,self",
];

/// For agents side by side on this host: MPI's traffic stays on the loopback (other
/// tests add and remove interfaces here while these run).
const LOOPBACK: [&str; 4] = ["--env", "OMPI_MCA_btl_tcp_if_include=lo", "--env", "OMPI_MCA_oob_tcp_if_include=lo"];

/// The processes running `exe` itself (not those that name it, like mpirun).
fn running(exe: &Path) -> Vec<u32> {
    let out = Command::new("pgrep").arg("-x").arg("ranks").output().expect("pgrep");
    let pids = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<u32>>();
    pids.into_iter().filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)).collect()
}

#[test]
fn mpirun_across_three_agents_runs_each_rank_on_its_own_node_without_ssh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile(dir.path());
    let (path, marker) = fake_ssh(dir.path());
    let mut c = Cluster::start(&[]);
    c.static_pool("mpi", 3, 2);
    let mut args = vec!["--pool", "mpi", "--nodes", "3", "--timeout", "2m", "--env", &path];
    args.extend(MPI_ENV);
    args.extend(LOOPBACK);
    let exe_s = exe.display().to_string();
    let job = c.submit(&args, &["mpirun", "-np", "6", &exe_s]);
    let done = c.wait_job(job, 2 * MINUTE);
    let out = c.logs(job, 0, false);
    assert_eq!(done["state"], "completed", "{done}\n{:?}\n{out}\n{}", c.attempts(job), c.logs(job, 0, true));
    assert_eq!(out.lines().count(), 6, "{out}");
    assert_ranks_spread(&out, 3, 21, &marker);
    // The gang let go of its nodes, and left nothing running.
    c.wait_nodes("mpi", "idle", 3);
    wait_until(Duration::from_secs(10), "no rank left", || running(&exe).is_empty());
}

/// Two ranks on each of `nodes` nodes, each with the whole sum; no ssh was tried.
fn assert_ranks_spread(out: &str, nodes: usize, sum: u32, marker: &Path) {
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("rank ")).collect();
    assert_eq!(lines.len(), 2 * nodes, "{out}");
    assert!(lines.iter().all(|l| l.ends_with(&format!("sum {sum}"))), "every rank has the whole sum: {out}");
    let mut per_node = std::collections::BTreeMap::new();
    for line in &lines {
        let node = line.split(" on ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("?");
        *per_node.entry(node.to_string()).or_insert(0) += 1;
    }
    assert_eq!(per_node.len(), nodes, "ranks on {nodes} nodes: {per_node:?}");
    assert!(per_node.values().all(|n| *n == 2), "two ranks a node (slots=2): {per_node:?}");
    assert!(!marker.exists(), "something tried ssh: {:?}", std::fs::read_to_string(marker));
}

#[test]
fn mpich_mpiexec_across_three_agents_launches_through_them_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile_with("mpicc.mpich", dir.path());
    let (path, marker) = fake_ssh(dir.path());
    let mut c = Cluster::start(&[]);
    c.static_pool("mpi", 3, 2);
    let exe_s = exe.display().to_string();
    // Plain `mpiexec -n 6`: Hydra finds the hosts (HYDRA_HOST_FILE) and the launcher.
    let job = c.submit(
        &["--pool", "mpi", "--nodes", "3", "--timeout", "2m", "--env", &path],
        &["mpiexec.mpich", "-n", "6", &exe_s],
    );
    let done = c.wait_job(job, 2 * MINUTE);
    let out = c.logs(job, 0, false);
    assert_eq!(done["state"], "completed", "{done}\n{out}\n{}", c.logs(job, 0, true));
    assert_ranks_spread(&out, 3, 21, &marker);
    c.wait_nodes("mpi", "idle", 3);
    wait_until(Duration::from_secs(10), "no rank left", || running(&exe).is_empty());
}

#[test]
fn mpirun_across_three_network_namespaces_reaches_each_agent_at_its_own_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile(dir.path());
    let net = corral_tests::netns::Net::new(3);
    let mut c = Cluster::start_reachable(&[]);
    c.json(&["pool", "create", "mpi", "--slots-per-node", "2"]);
    for i in 0..3 {
        c.agent_in(&net, i, "mpi", 2);
    }
    c.wait_nodes("mpi", "idle", 3);
    // Daemons and ranks talk over the namespaces' network, not a loopback.
    let (oob, btl) =
        (format!("OMPI_MCA_oob_tcp_if_include={}", net.cidr()), format!("OMPI_MCA_btl_tcp_if_include={}", net.cidr()));
    let mut args = vec!["--pool", "mpi", "--nodes", "3", "--timeout", "2m", "--env", &oob, "--env", &btl];
    args.extend(MPI_ENV);
    let script = format!("echo \"hosts $CORRAL_HOSTS\"; exec mpirun -np 6 {}", exe.display());
    let job = c.submit(&args, &["sh", "-c", &script]);
    let done = c.wait_job(job, 2 * MINUTE);
    let out = c.logs(job, 0, false);
    assert_eq!(done["state"], "completed", "{done}\n{out}\n{}", c.logs(job, 0, true));
    let hosts = out.lines().find_map(|l| l.strip_prefix("hosts ")).unwrap_or_default().to_string();
    for i in 0..3 {
        assert!(hosts.split(',').any(|h| h == net.address(i)), "{hosts} names {}", net.address(i));
    }
    let ranks: Vec<&str> = out.lines().filter(|l| l.starts_with("rank ")).collect();
    assert_eq!(ranks.len(), 6, "{out}");
    assert!(ranks.iter().all(|l| l.ends_with("sum 21")), "{out}");
    let nodes: std::collections::BTreeSet<&str> =
        ranks.iter().filter_map(|l| l.split(" on ").nth(1)?.split(' ').next()).collect();
    assert_eq!(nodes.len(), 3, "ranks on three agents: {out}");
}

#[test]
fn the_launcher_refuses_a_host_outside_the_attempt_a_stranger_and_a_finished_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::start(&[]);
    c.static_pool("mpi", 2, 1);
    let saved = dir.path().join("launch.env");
    let script = format!(
        r#"rsh=$OMPI_MCA_plm_rsh_agent
member=$(echo "$CORRAL_NODES" | cut -d, -f2)
$rsh "$member" 'echo "on $CORRAL_NODE_ID rank $CORRAL_NODE_RANK"; exit 3'; echo "member exit $?"
echo hello | $rsh "$member" cat; echo "stdin exit $?"
$rsh n-999 true; echo "outside exit $?"
CORRAL_LAUNCH_TOKEN=0123 $rsh "$member" true; echo "stranger exit $?"
echo "$rsh $member $CORRAL_LAUNCH_SOCKET $CORRAL_LAUNCH_TOKEN" > {}
"#,
        saved.display()
    );
    let job = c.submit(&["--pool", "mpi", "--nodes", "2"], &["sh", "-c", &script]);
    let done = c.wait_job(job, MINUTE);
    let (out, err) = (c.logs(job, 0, false), c.logs(job, 0, true));
    assert_eq!(done["state"], "completed", "{done}\n{out}\n{err}");
    let member = c.json(&["node", "list", "--pool", "mpi"]);
    let rank0 = c.attempts(job)[0].1[0]["node_id"].as_str().unwrap_or_default().to_string();
    let other = member
        .as_array()
        .and_then(|n| n.iter().find_map(|n| n["id"].as_str().filter(|id| *id != rank0)))
        .unwrap_or_default()
        .to_string();
    assert!(out.contains(&format!("on {other} rank 1\nmember exit 3\n")), "{out}\n{err}");
    assert!(out.contains("hello\nstdin exit 0\n"), "{out}\n{err}");
    assert!(out.contains("outside exit 255") && err.contains("'n-999' is not a node of this attempt"), "{err}");
    assert!(out.contains("stranger exit 255") && err.contains("belongs to no multi-node attempt"), "{err}");
    // The attempt is over: its secret opens nothing.
    let saved = std::fs::read_to_string(&saved).expect("the launch details");
    let words: Vec<&str> = saved.split_whitespace().collect();
    let after = Command::new(words[0])
        .args([words[1], "true"])
        .env("CORRAL_LAUNCH_SOCKET", words[2])
        .env("CORRAL_LAUNCH_TOKEN", words[3])
        .output()
        .expect("run the launcher");
    let said = String::from_utf8_lossy(&after.stderr);
    assert_eq!(after.status.code(), Some(255), "{said}");
    assert!(said.contains("belongs to no multi-node attempt"), "{said}");
    // Outside any task it says what it is for.
    let bare = Command::new(words[0]).args(["n-1", "true"]).env_remove("CORRAL_LAUNCH_SOCKET").output().expect("run");
    assert!(String::from_utf8_lossy(&bare.stderr).contains("runs only inside a multi-node task"));
}

#[test]
fn a_member_agent_killed_mid_run_ends_every_rank_and_the_task_runs_again_whole_without_charge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile(dir.path());
    let mut c = Cluster::start(&[]);
    let pids = c.static_pool("mpi", 4, 1);
    let mut args = vec!["--pool", "mpi", "--nodes", "3", "--env", "SLEEP=1", "--timeout", "3m"];
    args.extend(MPI_ENV);
    args.extend(LOOPBACK);
    let exe_s = exe.display().to_string();
    let job = c.submit(&args, &["mpirun", "-np", "3", &exe_s]);
    wait_until(MINUTE, "every rank to start", || {
        let job_now = c.job(job);
        assert_eq!(job_now["state"], "active", "{job_now}\n{:?}\n{}", c.attempts(job), c.logs(job, 0, true));
        c.logs(job, 0, false).lines().count() == 3
    });
    let rank0 = c.attempts(job)[0].1[0]["node_id"].as_str().unwrap_or_default().to_string();
    let running_nodes = c.nodes_in("mpi", "running");
    let member = running_nodes.iter().find(|n| **n != rank0).expect("a member node").clone();
    let pid = pids.into_iter().find(|p| c.node_of_pid(*p) == member).expect("the member's agent");
    let first = running(&exe);
    assert_eq!(first.len(), 3, "three ranks run: {first:?}");
    // SAFETY: SIGKILL to an agent this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let alive = |pid: &u32| Path::new(&format!("/proc/{pid}")).exists();
    wait_until(Duration::from_secs(15), "every rank of the first attempt gone, on every node", || {
        !first.iter().any(alive)
    });
    let done = c.wait_job(job, 2 * MINUTE);
    let attempts = &c.attempts(job)[0].1;
    assert_eq!(done["state"], "completed", "{done}\n{attempts:?}\n{}", c.logs(job, 0, true));
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "node_lost", "{attempts:?}");
    assert_eq!(attempts[1]["outcome"], "succeeded", "{attempts:?}");
    let task = &c.json(&["task", "list", &job.to_string()])[0];
    assert_eq!(task["attempts"], 2, "{task}");
    wait_until(Duration::from_secs(10), "no rank left", || running(&exe).is_empty());
}

#[test]
fn a_coordination_command_runs_on_every_node_before_rank_zeros_command() {
    let mut c = Cluster::start(&[]);
    c.json(&["pool", "create", "mpi", "--slots-per-node", "1"]);
    c.agent("mpi", 1);
    // One says where others reach it (behind NAT, say); the other is where it connects from.
    c.agent_with_env("mpi", 1, &[("CORRAL_ADVERTISE_ADDRESS", "node-b.example")]);
    c.wait_nodes("mpi", "idle", 2);
    let coordination = "echo \"set up $CORRAL_NODE_ID rank $CORRAL_NODE_RANK\"";
    let job = c.submit(
        &["--pool", "mpi", "--nodes", "2", "--coordination", coordination],
        &["sh", "-c", "echo main; echo \"hosts $CORRAL_HOSTS\""],
    );
    let done = c.wait_job(job, MINUTE);
    let out = c.logs(job, 0, false);
    assert_eq!(done["state"], "completed", "{done}\n{out}");
    // Rank 0's coordination output is the task's, before its command's; rank 1's
    // is its own, read with --rank.
    let attempt = c.attempts(job)[0].1[0].clone();
    let primary = attempt["node_id"].as_str().unwrap_or_default().to_string();
    let members = attempt["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 1, "task show lists the other rank's node: {attempt}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], format!("set up {primary} rank 0"), "{out}");
    assert_eq!(lines[1], "main", "rank 0's command comes after: {out}");
    let mut hosts: Vec<&str> = lines[2].trim_start_matches("hosts ").split(',').collect();
    hosts.sort();
    assert_eq!(hosts, ["127.0.0.1", "node-b.example"], "{out}");
    let rank_logs = |job: u64, more: &[&str]| {
        let job = job.to_string();
        let mut args = vec!["task", "logs", &job, "0", "--rank", "1"];
        args.extend_from_slice(more);
        let out = c.corral(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // (A member's output may arrive a moment after the attempt's end.)
    let mut member = String::new();
    wait_until(Duration::from_secs(10), "rank 1's output", || {
        member = rank_logs(job, &[]);
        !member.is_empty()
    });
    assert_eq!(member, format!("set up {} rank 1\n", members[0].as_str().unwrap_or_default()));
    // The dashboard's API reads the same.
    let (status, body) = c.http_get(&format!("/api/jobs/{job}/tasks/0/log?rank=1"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("set up {} rank 1", members[0].as_str().unwrap_or_default())), "{body}");
    let (status, body) = c.http_get(&format!("/api/jobs/{job}/tasks/0/log?rank=2"));
    assert!(status == 400 && body.contains("rank"), "{status} {body}");
    let said = c.fails(&["task", "logs", &job.to_string(), "0", "--rank", "2"]);
    assert!(said.contains("rank: task") && said.contains("runs on 2 node(s): ranks 0 to 1"), "{said}");
    // Failing on one node fails the attempt, and the command never runs; what the
    // failing rank said is its own stderr.
    let job = c.submit(
        &[
            "--pool",
            "mpi",
            "--nodes",
            "2",
            "--coordination",
            "test \"$CORRAL_NODE_RANK\" = 0 || { echo \"no disk on $CORRAL_NODE_RANK\" >&2; exit 1; }",
        ],
        &["echo", "main"],
    );
    c.wait_job(job, MINUTE);
    let attempt = &c.attempts(job)[0].1[0];
    let said = attempt["message"].as_str().unwrap_or_default();
    assert!(said.starts_with("the coordination command on rank 1 (node n-"), "{attempt}");
    assert!(said.ends_with("exited with code 1"), "{attempt}");
    assert!(!c.logs(job, 0, false).contains("main"));
    assert_eq!(c.logs(job, 0, true), "");
    wait_until(Duration::from_secs(10), "rank 1's stderr", || rank_logs(job, &["--stderr"]) == "no disk on 1\n");
    // Only a multi-node task has one.
    let said = c.fails(&["job", "submit", "--pool", "mpi", "--coordination", "true", "--", "true"]);
    assert!(said.contains("task.coordination: only a multi-node task"), "{said}");
}
