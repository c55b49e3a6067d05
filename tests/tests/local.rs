//! The local provider: the coordinator starts, replaces and stops agent processes.

use std::time::Duration;

use corral_tests::{alive, bin, processes_with, wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

fn live_pids(c: &Cluster, pool: &str) -> Vec<u32> {
    let nodes = c.json(&["node", "list", "--pool", pool]);
    nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "idle" || n["state"] == "running")
        .map(|n| n["pid"].as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn local_pool_runs_jobs_replaces_dead_agents_resizes_and_deletes() {
    let c = Cluster::start(&["--agent-bin", bin("corral-agent").to_str().unwrap()]);
    let pool = c.json(&["pool", "create", "loc", "--provider", "local", "--nodes", "2", "--slots-per-node", "1"]);
    assert_eq!(pool["provider"], "local");
    c.wait_nodes("loc", "idle", 2);
    // Its agents joined with a token bound to it, made for them.
    let tokens = c.json(&["token", "list"]);
    let theirs = tokens.as_array().unwrap().iter().find(|t| t["name"] == "pool:loc").cloned();
    assert_eq!(theirs.map(|t| (t["role"].clone(), t["pool"].clone())), Some(("agent".into(), "loc".into())));
    let job = c.submit(&["--pool", "loc", "--array", "1-6"], &["sh", "-c", "echo $CORRAL_POOL"]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    assert_eq!(c.logs(job, 3, false), "loc\n");

    // An agent that dies is noticed at once and replaced.
    let pids = live_pids(&c, "loc");
    assert_eq!(pids.len(), 2);
    c.signal(pids[0], libc::SIGKILL);
    wait_until(MINUTE, "a replacement agent", || {
        let now = live_pids(&c, "loc");
        now.len() == 2 && !now.contains(&pids[0])
    });
    let lost = c.json(&["node", "list", "--pool", "loc"]);
    assert!(lost.as_array().unwrap().iter().any(|n| n["state"] == "lost" && n["reason"] == "process_exited"), "{lost}");

    // Shrinking stops an agent; growing starts one.
    c.json(&["pool", "resize", "loc", "--nodes", "1"]);
    wait_until(MINUTE, "one agent", || live_pids(&c, "loc").len() == 1);
    let before = live_pids(&c, "loc");
    c.json(&["pool", "resize", "loc", "--nodes", "2"]);
    c.wait_nodes("loc", "idle", 2);

    // Deleting a busy pool follows its removal policy (task-completion): the running
    // tasks finish, nothing else starts, then the agents stop and the rest is cancelled.
    let pids = live_pids(&c, "loc");
    let busy = c.submit(&["--pool", "loc", "--array", "1-4"], &["sleep", "5"]);
    wait_until(MINUTE, "two running tasks", || c.job(busy)["counts"]["running"] == 2);
    let deleted = c.json(&["pool", "delete", "loc"]);
    assert_eq!(deleted["draining_nodes"], 2, "{deleted}");
    assert!(c.fails(&["job", "submit", "--pool", "loc", "--", "true"]).contains("being deleted"));
    wait_until(MINUTE, "the pool to go", || !c.corral(&["pool", "show", "loc"]).status.success());
    assert!(c.fails(&["pool", "show", "loc"]).contains("does not exist"));
    // Its agents' token went with it.
    let tokens = c.json(&["token", "list"]);
    assert!(!tokens.as_array().unwrap().iter().any(|t| t["name"] == "pool:loc"), "{tokens}");
    let job = c.job(busy);
    assert_eq!(job["state"], "cancelled");
    assert_eq!((job["counts"]["succeeded"].as_u64(), job["counts"]["cancelled"].as_u64()), (Some(2), Some(2)), "{job}");
    wait_until(MINUTE, "the agents to exit", || pids.iter().chain(&before).all(|p| !alive(*p)));
}

#[test]
fn demo_runs_a_sample_job_and_cleans_up() {
    let out = std::process::Command::new(bin("corral"))
        .args(["demo", "--tasks", "60", "--corpus-lines", "20000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("60 succeeded, 0 failed"), "{stdout}");
    assert!(stdout.contains("simulated crash"), "{stdout}");
    assert!(stdout.contains("7 squared is 49"), "{stdout}");
    assert!(stdout.contains("The counts match a local count of the same text"), "{stdout}");
}

#[test]
fn an_autoscaled_local_pool_grows_with_a_burst_and_shrinks_back_to_zero() {
    let c = Cluster::start(&["--agent-bin", bin("corral-agent").to_str().unwrap()]);
    let pool = c.json(&[
        "pool",
        "create",
        "auto",
        "--provider",
        "local",
        "--slots-per-node",
        "1",
        "--autoscale",
        "--min",
        "0",
        "--max",
        "3",
        "--idle-timeout",
        "2s",
    ]);
    assert_eq!(pool["autoscale"]["max"], 3);
    assert_eq!(pool["target_nodes"], 0);
    let started = std::time::Instant::now();
    let job = c.submit(&["--pool", "auto", "--array", "1-12"], &["sleep", "1"]);
    wait_until(MINUTE, "three nodes", || {
        c.json(&["node", "list", "--pool", "auto"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["state"] == "idle" || n["state"] == "running")
            .count()
            == 3
    });
    let grew_in = started.elapsed();
    assert!(grew_in < Duration::from_secs(15), "took {grew_in:?} to reach 3 nodes");
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    c.assert_each_succeeded_once(job);
    let pids = live_pids(&c, "auto");
    wait_until(MINUTE, "the pool to shrink to zero", || live_pids(&c, "auto").is_empty());
    wait_until(MINUTE, "the agents to exit", || pids.iter().all(|p| !alive(*p)));
    let explained = String::from_utf8_lossy(&c.corral(&["pool", "explain", "auto"]).stdout).into_owned();
    assert!(explained.contains("0 -> 3") && explained.contains("starting 3"), "{explained}");
    assert!(explained.contains("-> 0") && explained.contains("idle for"), "{explained}");
    assert!(c.fails(&["pool", "resize", "auto", "--nodes", "2"]).contains("autoscaled"));
    let off = c.json(&["pool", "autoscale", "auto", "--disable"]);
    assert!(off["autoscale"].is_null());
}

#[test]
fn a_command_pool_adds_and_removes_nodes_with_the_users_scripts() {
    let c = Cluster::start(&[]);
    let dir = c.dir.path().join("fleet");
    std::fs::create_dir(&dir).unwrap();
    let d = dir.display();
    let agent = bin("corral-agent");
    // What a user's script for some cloud would do, with local processes: start an
    // agent for the node it is told to add (left in the background, its output on the
    // command's own), and stop the one it is told to remove.
    let add = format!(
        "echo \"$CORRAL_NODE_IDS\" >> {d}/added; {} --coordinator \"$CORRAL_COORDINATOR\" --pool \"$CORRAL_POOL\" --slots \"$CORRAL_SLOTS\" --launch-id \"$CORRAL_NODE_IDS\" --work-dir {d}/\"$CORRAL_NODE_IDS\" & echo $! > {d}/\"$CORRAL_NODE_IDS\".pid",
        agent.display()
    );
    let remove = format!("echo \"$CORRAL_NODE_IDS\" >> {d}/removed; kill $(cat {d}/\"$CORRAL_NODE_IDS\".pid)");
    let pool = c.json(&[
        "pool",
        "create",
        "fleet",
        "--provider",
        "command",
        "--nodes",
        "2",
        "--slots-per-node",
        "1",
        "--add-command",
        &add,
        "--remove-command",
        &remove,
    ]);
    assert_eq!(pool["provider"], "command");
    c.wait_nodes("fleet", "idle", 2);
    let job = c.submit(&["--pool", "fleet", "--array", "1-6"], &["sh", "-c", "echo $CORRAL_NODE_ID"]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    c.assert_each_succeeded_once(job);

    c.json(&["pool", "resize", "fleet", "--nodes", "1"]);
    wait_until(MINUTE, "one node", || live_pids(&c, "fleet").len() == 1);
    wait_until(MINUTE, "the remove command to run", || {
        std::fs::read_to_string(dir.join("removed")).is_ok_and(|r| r.lines().count() == 1)
    });
    let removed = std::fs::read_to_string(dir.join("removed")).unwrap();
    let pid: u32 =
        std::fs::read_to_string(dir.join(format!("{}.pid", removed.trim()))).unwrap().trim().parse().unwrap();
    wait_until(MINUTE, "its agent to stop", || !alive(pid));

    // An add command that fails is reported on the pool and retried with backoff.
    let bad = c.json(&[
        "pool",
        "create",
        "broken",
        "--provider",
        "command",
        "--nodes",
        "1",
        "--slots-per-node",
        "1",
        "--add-command",
        "echo no credentials >&2; exit 3",
        "--remove-command",
        "true",
    ]);
    assert_eq!(bad["provider"], "command");
    wait_until(MINUTE, "the failure to show", || {
        c.json(&["pool", "show", "broken"])["last_error"].as_str().is_some_and(|e| e.contains("no credentials"))
    });
    c.json(&["pool", "delete", "fleet", "--force"]);
    let added = std::fs::read_to_string(dir.join("added")).unwrap();
    for node in added.lines() {
        let pid: u32 = std::fs::read_to_string(dir.join(format!("{node}.pid"))).unwrap().trim().parse().unwrap();
        wait_until(MINUTE, "every agent to stop", || !alive(pid));
    }
}

#[test]
fn nodes_that_never_register_are_given_up_on_and_the_pool_backs_off() {
    let c = Cluster::start(&["--node-start-timeout", "1s"]);
    let calls = c.dir.path().join("calls");
    let add = format!("echo started >> {}", calls.display());
    c.json(&[
        "pool",
        "create",
        "ghosts",
        "--provider",
        "command",
        "--nodes",
        "1",
        "--slots-per-node",
        "1",
        "--add-command",
        &add,
        "--remove-command",
        "true",
    ]);
    wait_until(MINUTE, "the start timeout to show on the pool", || {
        c.json(&["pool", "show", "ghosts"])["last_error"].as_str().is_some_and(|e| e.contains("did not register"))
    });
    let nodes = c.json(&["node", "list", "--pool", "ghosts"]);
    assert!(
        nodes.as_array().unwrap().iter().any(|n| n["state"] == "removed" && n["reason"] == "start_timeout"),
        "{nodes}"
    );
    assert!(std::fs::read_to_string(&calls).unwrap().lines().count() >= 1);

    // An add command that fails at once is retried with a doubling backoff, not at
    // every tick (which would be 16 tries in 4 s).
    let failing = c.dir.path().join("failing");
    let add = format!("echo tried >> {}; exit 1", failing.display());
    c.json(&[
        "pool",
        "create",
        "flaky",
        "--provider",
        "command",
        "--nodes",
        "1",
        "--slots-per-node",
        "1",
        "--add-command",
        &add,
        "--remove-command",
        "true",
    ]);
    std::thread::sleep(Duration::from_secs(4));
    let tries = std::fs::read_to_string(&failing).unwrap().lines().count();
    assert!((2..=7).contains(&tries), "{tries} tries in 4 s");
}

#[test]
fn a_start_task_runs_before_any_work_and_a_failing_one_keeps_the_node_idle() {
    let c = Cluster::start(&["--agent-bin", bin("corral-agent").to_str().unwrap()]);
    let marker = c.dir.path().join("prepared");
    let prepare = format!("sleep 1; touch {}-$CORRAL_NODE_ID", marker.display());
    c.json(&[
        "pool",
        "create",
        "prep",
        "--provider",
        "local",
        "--nodes",
        "2",
        "--slots-per-node",
        "1",
        "--start-task",
        &prepare,
    ]);
    // Every task checks that its node's start task has finished.
    let check = format!("test -f {}-$CORRAL_NODE_ID", marker.display());
    let job = c.submit(&["--pool", "prep", "--array", "1-6"], &["sh", "-c", &check]);
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "a task ran before its node was prepared: {done}");

    c.json(&[
        "pool",
        "create",
        "broken",
        "--provider",
        "local",
        "--nodes",
        "1",
        "--slots-per-node",
        "1",
        "--start-task",
        "echo no GPU driver >&2; exit 3",
    ]);
    wait_until(MINUTE, "the start task to fail", || {
        c.json(&["pool", "show", "broken"])["last_error"].as_str().is_some_and(|e| e.contains("no GPU driver"))
    });
    // A node the coordinator started is replaced (with backoff) when its start task fails.
    let nodes = c.json(&["node", "list", "--pool", "broken"]);
    assert!(
        nodes.as_array().unwrap().iter().any(|n| n["state"] == "removed" && n["reason"] == "start_task_failed"),
        "{nodes}"
    );
    let stuck = c.submit(&["--pool", "broken"], &["true"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.job(stuck)["counts"]["ready"], 1, "an unusable node takes no work");
}

#[test]
fn shrinking_a_busy_pool_with_task_completion_loses_no_task() {
    let c = Cluster::start(&["--agent-bin", bin("corral-agent").to_str().unwrap()]);
    c.json(&["pool", "create", "busy", "--provider", "local", "--nodes", "3", "--slots-per-node", "1"]);
    c.wait_nodes("busy", "idle", 3);
    let job = c.submit(&["--pool", "busy", "--array", "1-6"], &["sleep", "1"]);
    wait_until(MINUTE, "three running tasks", || c.job(job)["counts"]["running"] == 3);
    c.json(&["pool", "resize", "busy", "--nodes", "1"]);
    let draining = c.nodes_in("busy", "draining");
    assert_eq!(draining.len(), 2, "busy nodes drain instead of dying");
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    let attempts = c.assert_each_succeeded_once(job);
    assert!(attempts.iter().all(|(_, a)| a.len() == 1), "no task was interrupted by the scale-down: {attempts:?}");
    wait_until(MINUTE, "the drained nodes to go", || {
        let nodes = c.json(&["node", "list", "--pool", "busy"]);
        draining
            .iter()
            .all(|id| nodes.as_array().unwrap().iter().any(|n| n["id"] == id.as_str() && n["state"] == "removed"))
    });
    assert_eq!(live_pids(&c, "busy").len(), 1);
}

#[test]
fn corral_up_needs_no_setup_and_prints_the_line_a_second_terminal_needs() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut up = std::process::Command::new(bin("corral"))
        .env_remove("CORRAL_TOKEN")
        .env_remove("CORRAL_TOKEN_FILE")
        .args(["up", "--listen", "127.0.0.1:0", "--http", "off", "--nodes", "1", "--slots-per-node", "2", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines().map_while(Result::ok);
    let (mut url, mut exports) = (None, Vec::new());
    for line in lines.by_ref() {
        if let Some(rest) = line.strip_prefix("Corral is up at ") {
            url = rest.split(',').next().map(str::to_string);
        }
        if let Some((name, value)) = line.trim().strip_prefix("export ").and_then(|e| e.split_once('=')) {
            exports.push((name.to_string(), value.to_string()));
            if name == "CORRAL_POOL" {
                break;
            }
        }
    }
    let url = url.expect("the URL line");
    let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["CORRAL_COORDINATOR", "CORRAL_TOKEN_FILE", "CORRAL_POOL"]);
    assert_eq!(exports[0].1, url, "the coordinator it listens on (port 0 picked one)");
    let token_file = exports[1].1.clone();
    // A second terminal with just those lines runs a job: no --coordinator, no --pool.
    let out = std::process::Command::new(bin("corral"))
        .env_remove("CORRAL_TOKEN")
        .env_remove("CORRAL_COORDINATOR")
        .envs(exports.iter().map(|(n, v)| (n, v)))
        .args(["job", "submit", "--wait", "--", "echo", "hi"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let nodes = std::process::Command::new(bin("corral"))
        .env("CORRAL_TOKEN_FILE", &token_file)
        .args(["--coordinator", &url, "-o", "json", "node", "list"])
        .output()
        .unwrap();
    let nodes: serde_json::Value = serde_json::from_slice(&nodes.stdout).unwrap();
    let agent = nodes[0]["pid"].as_u64().expect("the local agent's pid") as u32;
    // SIGTERM stops it and its agents.
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(up.id() as libc::pid_t, libc::SIGTERM);
    }
    wait_until(MINUTE, "corral up to stop", || up.try_wait().unwrap().is_some());
    assert!(up.wait().unwrap().success());
    wait_until(MINUTE, "its agent to stop", || !alive(agent));
}

#[test]
fn local_agents_of_a_coordinator_killed_for_good_stop_and_take_their_tasks_with_them() {
    let mut c = Cluster::start(&["--local-agent-give-up", "2s"]);
    c.json(&["pool", "create", "orphans", "--provider", "local", "--nodes", "2", "--slots-per-node", "1"]);
    c.wait_nodes("orphans", "idle", 2);
    let pids = live_pids(&c, "orphans");
    let marker = format!("300.{}", std::process::id());
    c.submit(&["--pool", "orphans", "--array", "1-2"], &["sh", "-c", &format!("sleep {marker}; true")]);
    wait_until(MINUTE, "both tasks to run", || processes_with(&marker).len() == 4);
    c.kill_coordinator();
    // Still running right after (a coordinator back soon would find them)...
    assert!(pids.iter().all(|p| alive(*p)));
    // ...but not for ever.
    wait_until(Duration::from_secs(20), "the local agents to give up", || pids.iter().all(|p| !alive(*p)));
    wait_until(Duration::from_secs(5), "their tasks to be gone", || processes_with(&marker).is_empty());
}

/// An address in use is said once, in words (not "Address already in use (os error
/// 98): Address already in use (os error 98)").
#[test]
fn corral_up_on_a_busy_port_says_so_once() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("corral"))
        .args(["up", "--listen", &addr, "--http", "off", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    let error = said.lines().find(|l| l.starts_with("error:")).unwrap_or_default().to_string();
    assert_eq!(error.matches("already in use").count(), 1, "{said}");
    assert!(error.contains(&addr), "it names the address: {error}");
}
