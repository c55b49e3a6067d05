//! The docker provider, on this machine's Docker engine: nodes are containers of an
//! image built from this checkout (`docker/agent-image.sh`), started, replaced and
//! removed by the coordinator; containers that are killed or cut off from the
//! network cost no task and leave nothing behind.
//!
//! The tests take turns (one lock): each starts containers, and a 2-core machine
//! running several bursts at once would measure the machine, not Corral.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use corral_tests::{docker, wait_until, Cluster, DOCKER_IMAGE};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn nodes(c: &Cluster, pool: &str) -> Vec<Value> {
    c.json(&["node", "list", "--pool", pool]).as_array().cloned().unwrap_or_default()
}

fn up(c: &Cluster, pool: &str) -> Vec<String> {
    nodes(c, pool)
        .iter()
        .filter(|n| n["state"] == "idle" || n["state"] == "running")
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn container_of(c: &Cluster, node: &str) -> String {
    format!("corral-{}-{node}", c.instance())
}

fn docker_pool(c: &Cluster, name: &str, extra: &[&str]) -> Value {
    let mut args = vec!["pool", "create", name, "--provider", "docker", "--image", DOCKER_IMAGE, "--slots-per-node"];
    args.extend_from_slice(extra);
    c.json(&args)
}

#[test]
fn an_autoscaled_docker_pool_grows_with_a_burst_and_shrinks_back_to_zero() {
    let _turn = turn();
    // Over TLS: the containers' agents pin the coordinator's CA and join with the
    // pool's own token, both given in their environment.
    let c = Cluster::start_docker(&["--tls", "auto"], &[]);
    let pool = docker_pool(
        &c,
        "burst",
        &["2", "--autoscale", "--min", "0", "--max", "3", "--idle-timeout", "2s", "--memory", "256m", "--cpus", "1"],
    );
    assert_eq!(pool["docker"]["memory_bytes"], 256u64 << 20);
    let started = Instant::now();
    let job = c.submit(&["--pool", "burst", "--array", "1-60"], &["sleep", "1"]);
    wait_until(MINUTE, "three containers", || up(&c, "burst").len() == 3);
    let grew_in = started.elapsed();
    assert!(grew_in < Duration::from_secs(30), "took {grew_in:?} to reach 3 nodes (the benchmark measures this)");

    // The containers are what the pool says: labelled, limited, one per node.
    let names = c.containers();
    assert_eq!(names.len(), 3, "{names:?}");
    for node in up(&c, "burst") {
        let name = container_of(&c, &node);
        assert!(names.contains(&name), "{name} not in {names:?}");
        let inspect = docker(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"corral.pool\"}} {{index .Config.Labels \"corral.node\"}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
            &name,
        ]);
        assert_eq!(inspect.trim(), format!("burst {node} {} 1000000000", 256u64 << 20));
    }

    assert_eq!(c.wait_job(job, Duration::from_secs(120))["state"], "completed");
    c.assert_each_succeeded_once(job);
    wait_until(MINUTE, "the pool to shrink to zero", || up(&c, "burst").is_empty());
    wait_until(MINUTE, "its containers to be removed", || c.containers().is_empty());
    let explained = String::from_utf8_lossy(&c.corral(&["pool", "explain", "burst"]).stdout).into_owned();
    assert!(explained.contains("0 -> 3") && explained.contains("-> 0"), "{explained}");
}

#[test]
fn a_killed_container_is_replaced_and_its_tasks_rerun_and_delete_leaves_nothing() {
    let _turn = turn();
    let c = Cluster::start_docker(&[], &[]);
    docker_pool(&c, "fleet", &["1", "--nodes", "2"]);
    wait_until(MINUTE, "two containers", || up(&c, "fleet").len() == 2);
    let job = c.submit(&["--pool", "fleet", "--array", "1-4"], &["sh", "-c", "sleep 4; hostname"]);
    wait_until(MINUTE, "two running tasks", || c.job(job)["counts"]["running"] == 2);
    let victim = up(&c, "fleet")[0].clone();
    docker(&["kill", &container_of(&c, &victim)]);

    wait_until(MINUTE, "the killed node to be lost", || {
        nodes(&c, "fleet").iter().any(|n| n["id"] == victim.as_str() && n["state"] == "lost")
    });
    wait_until(MINUTE, "a replacement", || up(&c, "fleet").len() == 2 && !up(&c, "fleet").contains(&victim));
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    let all = c.assert_each_succeeded_once(job);
    let rerun = all.iter().filter(|(_, a)| a.iter().any(|a| a["outcome"] == "node_lost")).count();
    assert_eq!(rerun, 1, "the task on the killed container ran again: {all:?}");
    for (index, attempts) in &all {
        let ran_on = attempts.last().and_then(|a| a["node_id"].as_str()).unwrap_or_default().to_string();
        assert_eq!(c.logs(job, *index, false).trim(), ran_on, "a task prints its container's hostname");
    }
    wait_until(MINUTE, "the killed container to be removed", || !c.containers().contains(&container_of(&c, &victim)));

    let deleted = c.json(&["pool", "delete", "fleet"]);
    assert_eq!(deleted["stopped_nodes"], 2);
    wait_until(MINUTE, "every container to be removed", || c.containers().is_empty());
}

#[test]
fn a_container_cut_off_from_the_network_is_lost_and_replaced() {
    let _turn = turn();
    let c = Cluster::start_docker(&[], &[]);
    docker_pool(&c, "cut", &["1", "--nodes", "1"]);
    wait_until(MINUTE, "a container", || up(&c, "cut").len() == 1);
    let first = up(&c, "cut")[0].clone();
    let job = c.submit(&["--pool", "cut"], &["sh", "-c", "sleep 3; hostname"]);
    wait_until(MINUTE, "the task to run", || c.job(job)["counts"]["running"] == 1);
    docker(&["network", "disconnect", "bridge", &container_of(&c, &first)]);

    wait_until(MINUTE, "the cut-off node to be lost", || {
        nodes(&c, "cut").iter().any(|n| n["id"] == first.as_str() && n["reason"] == "heartbeat_timeout")
    });
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    let all = c.assert_each_succeeded_once(job);
    let attempts = &all[0].1;
    assert_eq!(attempts[0]["outcome"], "node_lost", "{attempts:?}");
    assert_eq!(attempts[0]["node_id"], first.as_str());
    let second = attempts[1]["node_id"].as_str().unwrap_or_default().to_string();
    assert_ne!(second, first);
    assert_eq!(c.logs(job, 0, false).trim(), second);
    // The cut-off container is stopped and removed like any lost node's.
    wait_until(MINUTE, "the cut-off container to be removed", || !c.containers().contains(&container_of(&c, &first)));
}

#[test]
fn late_results_from_a_reconnected_container_are_ignored() {
    let _turn = turn();
    // The agent runs in a container the test starts itself (a static node), so the
    // coordinator cannot remove it: it comes back with the result of a task that
    // has run again elsewhere meanwhile. It joins over TLS with a token bound to its
    // pool, as an operator would start one.
    let mut c = Cluster::start_docker(&["--tls", "auto"], &[]);
    c.json(&["pool", "create", "mixed", "--slots-per-node", "1"]);
    let name = format!("corral-test-{}-cutoff", c.instance());
    c.docker_agent("mixed", 1, &name);
    wait_until(MINUTE, "the container's agent", || up(&c, "mixed").len() == 1);
    let job = c.submit(&["--pool", "mixed"], &["sh", "-c", "sleep 2; hostname"]);
    wait_until(MINUTE, "the task to run in the container", || c.job(job)["counts"]["running"] == 1);
    docker(&["network", "disconnect", "bridge", &name]);
    wait_until(MINUTE, "the container's node to be lost", || up(&c, "mixed").is_empty());

    // A node on this host reruns the task; the container finishes its copy too.
    c.agent("mixed", 1);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    docker(&["network", "connect", "bridge", &name]);
    wait_until(MINUTE, "the container to rejoin as a new node", || {
        nodes(&c, "mixed").iter().filter(|n| n["hostname"] == name.as_str()).count() == 2 && up(&c, "mixed").len() == 2
    });
    // What it sent on its old stream is turned away (or, had that stream broken,
    // its old secret would no longer count and it would be told so).
    wait_until(MINUTE, "its late result to be turned away", || {
        c.coordinator_log().contains("the node was declared lost and its tasks requeued")
            || std::process::Command::new("docker")
                .args(["logs", &name])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("was declared lost or removed"))
    });
    let all = c.assert_each_succeeded_once(job);
    let attempts = &all[0].1;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "node_lost", "{attempts:?}");
    assert_ne!(c.logs(job, 0, false).trim(), name, "the output is the rerun's, not the late one's");
}

#[test]
fn docker_pools_say_what_is_wrong() {
    let _turn = turn();
    // A coordinator on loopback cannot be reached from containers.
    let c = Cluster::start(&[]);
    docker_pool(&c, "shy", &["1", "--nodes", "1"]);
    wait_until(MINUTE, "the listen error on the pool", || {
        c.json(&["pool", "show", "shy"])["last_error"].as_str().is_some_and(|e| e.contains("--listen 0.0.0.0"))
    });
    drop(c);

    let c = Cluster::start_docker(&[], &[]);
    let out = c.fails(&["pool", "create", "p", "--provider", "docker", "--slots-per-node", "1", "--nodes", "1"]);
    assert!(out.contains("docker.image"), "{out}");
    let out = c.fails(&["pool", "create", "p", "--slots-per-node", "1", "--image", "x"]);
    assert!(out.contains("only a docker pool"), "{out}");
    let out = c.fails(&[
        "pool",
        "create",
        "p",
        "--provider",
        "docker",
        "--image",
        "x",
        "--slots-per-node",
        "1",
        "--memory",
        "lots",
    ]);
    assert!(out.contains("--memory") && out.contains("not a size"), "{out}");
    let missing = c.json(&[
        "pool",
        "create",
        "nope",
        "--provider",
        "docker",
        "--image",
        "corral-no-such-image:1",
        "--slots-per-node",
        "1",
        "--nodes",
        "1",
    ]);
    assert_eq!(missing["name"], "nope");
    wait_until(MINUTE, "the missing image on the pool", || {
        c.json(&["pool", "show", "nope"])["last_error"].as_str().is_some_and(|e| e.contains("docker/agent-image.sh"))
    });
    assert!(up(&c, "nope").is_empty());
}

#[test]
fn a_restarted_coordinator_removes_containers_whose_removal_was_cut_off() {
    let _turn = turn();
    let mut c = Cluster::start_docker(&[], &[]);
    docker_pool(&c, "keep", &["1", "--nodes", "1"]);
    wait_until(MINUTE, "a container", || up(&c, "keep").len() == 1);
    let kept = container_of(&c, &up(&c, "keep")[0]);
    // What a coordinator killed between removing a node and removing its container
    // leaves behind: a labelled container for a node that is no longer live.
    let instance = c.instance();
    let leftover = format!("corral-{instance}-n-0");
    docker(&[
        "run",
        "-d",
        "--name",
        &leftover,
        "--label",
        &format!("corral.coordinator={instance}"),
        "--label",
        "corral.node=n-0",
        "--label",
        "corral.pool=keep",
        DOCKER_IMAGE,
        "--coordinator",
        "http://127.0.0.1:9",
        "--pool",
        "keep",
    ]);
    // And an agent someone started by hand (no node label): not the coordinator's to remove.
    let by_hand = format!("corral-test-{instance}-by-hand");
    c.json(&["pool", "create", "manual", "--slots-per-node", "1"]);
    c.docker_agent("manual", 1, &by_hand);

    c.restart_coordinator();
    wait_until(MINUTE, "the leftover container to be removed", || !c.containers().contains(&leftover));
    let names = c.containers();
    assert!(names.contains(&kept) && names.contains(&by_hand), "{names:?}");
    wait_until(MINUTE, "the live node to reconnect", || up(&c, "keep").len() == 1);
}
