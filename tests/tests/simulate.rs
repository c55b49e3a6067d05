//! `corral-agent --simulate`: nodes that run nothing, for measuring the coordinator.

use std::time::Duration;

use corral_tests::{wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn simulated_nodes_report_every_task_succeeded_without_running_it_and_each_has_its_own_session() {
    let mut c = Cluster::start(&[]);
    c.json(&["pool", "create", "sim", "--slots-per-node", "8"]);
    let pid = c.simulated_agents("sim", 3, 8);
    c.wait_nodes("sim", "idle", 3);
    let nodes = c.json(&["node", "list", "--pool", "sim"]);
    let mut hosts: Vec<String> =
        nodes.as_array().unwrap().iter().map(|n| n["hostname"].as_str().unwrap_or_default().to_string()).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "each simulated node registers as its own host: {nodes}");
    assert!(hosts.iter().all(|h| h.contains("-sim-")), "{hosts:?}");

    // Nothing runs: a task that would leave a file leaves none.
    let marker = c.dir.path().join("ran");
    let script = format!("echo ran >> {}", marker.display());
    let job = c.submit(&["--pool", "sim", "--array", "1-500"], &["sh", "-c", &script]);
    let shown = c.wait_job(job, MINUTE);
    assert_eq!(shown["state"], "completed", "{shown}");
    assert_eq!(shown["counts"]["succeeded"], 500, "{shown}");
    assert!(!marker.exists(), "a simulated node ran a task");
    // Each task succeeded once in the record, with exit code 0 and no output.
    for (index, attempts) in c.assert_each_succeeded_once(job) {
        assert_eq!(attempts.len(), 1, "task {index}: {attempts:?}");
        assert_eq!(attempts[0]["exit_code"], 0, "task {index}: {attempts:?}");
    }
    for index in [1, 250, 500] {
        assert_eq!(c.logs(job, index, false), "", "a simulated task has no output");
    }

    // Every node heartbeats on its own: well past the heartbeat timeout none is
    // lost; when the one process dies, all three are.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.nodes_in("sim", "idle").len(), 3);
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    wait_until(MINUTE, "three lost nodes", || c.nodes_in("sim", "lost").len() == 3);
}

#[test]
fn nodes_without_simulate_is_refused() {
    let out = std::process::Command::new(corral_tests::bin("corral-agent"))
        .args(["--pool", "sim", "--nodes", "3"])
        .output()
        .expect("run corral-agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--simulate"), "{err}");
}
