//! Machines that die: an agent killed, an agent frozen, the coordinator killed.
//! Each test checks what a user cares about: every task succeeded exactly once in
//! the record, and the job ended as it should.

use std::collections::BTreeSet;
use std::time::Duration;

use corral_tests::{wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

/// The node a task's attempts ran on, by outcome.
fn nodes_with(attempts: &[(u64, Vec<serde_json::Value>)], outcome: &str) -> BTreeSet<String> {
    attempts
        .iter()
        .flat_map(|(_, a)| a.iter())
        .filter(|a| a["outcome"] == outcome)
        .map(|a| a["node_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn agent_killed_mid_job_its_tasks_rerun_elsewhere() {
    let mut c = Cluster::start(&[]);
    let pids = c.static_pool("cpu", 2, 1);
    let victim = c.node_of_pid(pids[0]);
    let job = c.submit(&["--pool", "cpu", "--array", "1-8"], &["sh", "-c", "echo ran $CORRAL_TASK_INDEX; sleep 0.5"]);
    wait_until(MINUTE, "the victim to finish a task and start another", || {
        let node = c.json(&["node", "show", &victim]);
        node["running"].as_array().is_some_and(|r| r.iter().any(|t| t["index"].as_u64() > Some(2)))
    });
    c.signal(pids[0], libc::SIGKILL);
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["succeeded"], 8);
    let attempts = c.assert_each_succeeded_once(job);
    let lost = nodes_with(&attempts, "node_lost");
    assert_eq!(lost.len(), 1, "one node's attempt was lost: {attempts:?}");
    let lost_node = lost.into_iter().next().unwrap();
    assert_eq!(lost_node, victim);
    assert!(c.nodes_in("cpu", "lost").contains(&lost_node));
    // Output of tasks that ran on the dead node is still there.
    let (index, _) = attempts
        .iter()
        .find(|(_, a)| a.iter().any(|x| x["node_id"] == lost_node.as_str() && x["outcome"] == "succeeded"))
        .expect("the killed node finished something before it died");
    assert_eq!(c.logs(job, *index, false), format!("ran {index}\n"));
}

#[test]
fn frozen_agent_is_declared_lost_and_its_late_results_are_ignored() {
    let mut c = Cluster::start(&[]);
    let pids = c.static_pool("cpu", 2, 1);
    let job = c.submit(
        &["--pool", "cpu", "--array", "1-6"],
        &["sh", "-c", "sleep 0.6; echo done $CORRAL_TASK_INDEX on $CORRAL_NODE_ID attempt $CORRAL_ATTEMPT"],
    );
    wait_until(MINUTE, "both agents busy", || c.job(job)["counts"]["running"] == 2);
    let frozen_node = c.node_of_pid(pids[0]);
    // SIGSTOP freezes the agent but not its socket: only silence gives it away.
    c.signal(pids[0], libc::SIGSTOP);
    wait_until(MINUTE, "the frozen node to be lost", || c.nodes_in("cpu", "lost").contains(&frozen_node));
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed");

    // Wake it: its task finished meanwhile and it reports; the coordinator must
    // ignore that and have it register again as a new node.
    c.signal(pids[0], libc::SIGCONT);
    wait_until(MINUTE, "the agent to come back as a new node", || {
        c.nodes_in("cpu", "idle").iter().any(|n| *n != frozen_node) && c.nodes_in("cpu", "idle").len() == 2
    });
    let attempts = c.assert_each_succeeded_once(job);
    assert!(!nodes_with(&attempts, "succeeded").contains(&frozen_node), "a result from the frozen node was counted");
    let lost: Vec<&serde_json::Value> =
        attempts.iter().flat_map(|(_, a)| a.iter()).filter(|a| a["node_id"] == frozen_node.as_str()).collect();
    assert!(!lost.is_empty() && lost.iter().all(|a| a["outcome"] == "node_lost"), "{lost:?}");
    let job_after = c.job(job);
    assert_eq!(job_after["counts"]["succeeded"], 6, "late results changed the counts: {job_after}");
    // The output read back is that of the winning attempt.
    for (index, a) in &attempts {
        let winner = a.iter().find(|x| x["outcome"] == "succeeded").unwrap();
        let expected =
            format!("done {index} on {} attempt {}\n", winner["node_id"].as_str().unwrap(), winner["attempt"]);
        assert_eq!(c.logs(job, *index, false), expected);
    }
}

#[test]
fn coordinator_killed_and_restarted_mid_job_loses_nothing() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 2);
    let job = c.submit(&["--pool", "cpu", "--array", "1-30"], &["sh", "-c", "sleep 0.2; echo $CORRAL_TASK_INDEX"]);
    wait_until(MINUTE, "some progress", || c.job(job)["counts"]["succeeded"].as_u64().unwrap() >= 4);
    // Acknowledged just before the crash: must survive it.
    let second = c.submit(&["--pool", "cpu", "--array", "1-5"], &["true"]);
    c.kill_coordinator();
    std::thread::sleep(Duration::from_millis(500));
    c.restart_coordinator();
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}\n{}", c.coordinator_log());
    assert_eq!(done["counts"]["succeeded"], 30);
    assert_eq!(c.wait_job(second, MINUTE)["state"], "completed");
    c.assert_each_succeeded_once(job);
    c.assert_each_succeeded_once(second);
    for index in [1, 15, 30] {
        assert_eq!(c.logs(job, index, false), format!("{index}\n"));
    }
    // The agents reconnected as the same nodes: nobody was declared lost.
    assert_eq!(c.nodes_in("cpu", "idle").len(), 2);
    assert!(c.nodes_in("cpu", "lost").is_empty());
}

#[test]
fn coordinator_restart_with_a_dead_agent_requeues_its_work() {
    let mut c = Cluster::start(&[]);
    let pids = c.static_pool("cpu", 2, 1);
    let job = c.submit(&["--pool", "cpu", "--array", "1-4"], &["sh", "-c", "sleep 1"]);
    wait_until(MINUTE, "both agents busy", || c.job(job)["counts"]["running"] == 2);
    c.kill_coordinator();
    c.signal(pids[0], libc::SIGKILL);
    c.restart_coordinator();
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed");
    c.assert_each_succeeded_once(job);
    assert_eq!(c.nodes_in("cpu", "lost").len(), 1);
}

#[test]
fn removing_a_busy_node_with_requeue_reruns_its_task_elsewhere() {
    let mut c = Cluster::start(&[]);
    let pids = c.static_pool("cpu", 2, 1);
    let victim = c.node_of_pid(pids[0]);
    let job = c.submit(&["--pool", "cpu", "--array", "1-4"], &["sleep", "1"]);
    wait_until(MINUTE, "both agents busy", || c.job(job)["counts"]["running"] == 2);
    let removed = c.json(&["node", "remove", &victim, "--policy", "requeue"]);
    assert_eq!(removed["state"], "removed");
    assert_eq!(removed["reason"], "removed");
    wait_until(MINUTE, "the removed agent to exit", || !corral_tests::alive(pids[0]));
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    let attempts = c.assert_each_succeeded_once(job);
    assert!(
        attempts.iter().any(|(_, a)| a.iter().any(|x| x["node_id"] == victim.as_str() && x["outcome"] == "node_lost")),
        "the removed node's task went back to the queue: {attempts:?}"
    );
}

#[test]
fn a_submission_retried_with_its_idempotency_key_makes_one_job_even_across_a_sigkill() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let submit = |c: &Cluster, cmd: &str| {
        c.corral(&[
            "-o",
            "json",
            "job",
            "submit",
            "--pool",
            "cpu",
            "--idempotency-key",
            "nightly-2026-12-01",
            "--",
            "sh",
            "-c",
            cmd,
        ])
    };
    let first = submit(&c, "echo once");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let id = serde_json::from_slice::<serde_json::Value>(&first.stdout).unwrap()["job_id"].clone();
    c.kill_coordinator();
    c.restart_coordinator();
    let again = submit(&c, "echo once");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap()["job_id"], id);
    let other = submit(&c, "echo another");
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("idempotency key 'nightly-2026-12-01' was used for a different request"), "{err}");
    assert_eq!(c.json(&["job", "list"]).as_array().map(Vec::len), Some(1));
    let job = c.wait_job(id.as_u64().unwrap(), MINUTE);
    assert_eq!(job["state"], "completed");
}
