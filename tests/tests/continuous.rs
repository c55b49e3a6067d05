//! Continuous jobs end to end: replicas that are always running, through a
//! replica's process killed, its agent killed, `job scale`, a coordinator SIGKILL
//! and `job cancel`; a singleton by concurrency key; bad input refused.

use std::path::Path;
use std::time::Duration;

use corral_tests::{wait_until, Cluster};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

/// Each attempt writes its process id to DIR/pid.INDEX.ATTEMPT and then becomes
/// a long sleep (the same process).
fn replica_command(dir: &Path) -> Vec<String> {
    let script = format!("echo $$ > {}/pid.$CORRAL_TASK_INDEX.$CORRAL_ATTEMPT; exec sleep 600", dir.display());
    vec!["sh".into(), "-c".into(), script]
}

/// Whether a process is alive (and not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

/// The process ids every attempt wrote, by (replica, attempt).
fn pids(dir: &Path) -> Vec<((u32, u32), u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("pid.") else { continue };
        let Some((index, attempt)) = rest.split_once('.') else { continue };
        let pid = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let (Ok(i), Ok(a), Ok(p)) = (index.parse(), attempt.parse(), pid.trim().parse()) {
            found.push(((i, a), p));
        }
    }
    found.sort();
    found
}

fn live_replica_processes(dir: &Path) -> usize {
    pids(dir).iter().filter(|(_, p)| alive(*p)).count()
}

fn replicas(c: &Cluster, job: u64) -> Vec<Value> {
    c.job(job)["replicas"].as_array().cloned().unwrap_or_default()
}

fn running(c: &Cluster, job: u64) -> u64 {
    c.job(job)["counts"]["running"].as_u64().unwrap_or(0)
}

#[test]
fn replicas_stay_running_through_kills_scaling_and_a_coordinator_restart() {
    let mut c = Cluster::start(&[]);
    let agents = c.static_pool("svc", 3, 2);
    let dir = tempfile::tempdir().unwrap();
    let cmd = replica_command(dir.path());
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let job = c.submit(&["--pool", "svc", "--continuous", "--replicas", "3", "--retry-delay", "1s"], &cmd);
    wait_until(MINUTE, "3 replicas running", || running(&c, job) == 3 && live_replica_processes(dir.path()) == 3);
    let shown = c.job(job);
    assert_eq!(shown["policy"]["replicas"], 3, "{shown}");
    assert_eq!(shown["kind"], "continuous", "{shown}");

    // A replica's process SIGKILLed: it starts again, after its first delay.
    let first = pids(dir.path()).into_iter().find(|((i, _), _)| *i == 0).unwrap().1;
    c.signal(first, libc::SIGKILL);
    wait_until(MINUTE, "replica 0 started again", || pids(dir.path()).iter().any(|((i, a), _)| (*i, *a) == (0, 2)));
    let attempts = c.json(&["task", "show", &job.to_string(), "0"])["attempts"].as_array().cloned().unwrap();
    let (ended, started) =
        (attempts[0]["ended_at_ms"].as_u64().unwrap(), attempts[1]["started_at_ms"].as_u64().unwrap());
    assert!(started >= ended + 900, "the restart waited its 1s delay: ended {ended}, started again {started}");
    wait_until(MINUTE, "replica 0 shown restarted", || {
        let r = replicas(&c, job);
        r[0]["restarts"] == 1 && r[0]["state"] == "running"
    });
    let r = replicas(&c, job);
    assert!(r[0]["last_exit"].as_str().unwrap_or("").contains('9'), "the last exit names the signal: {r:?}");
    assert!(r[0]["uptime_ms"].as_u64().is_some(), "{r:?}");
    let table = String::from_utf8_lossy(&c.corral(&["job", "show", &job.to_string()]).stdout).into_owned();
    assert!(table.contains("RESTARTS") && table.contains("LAST EXIT"), "{table}");

    // A replica's agent SIGKILLed: the replica starts on another node.
    let victim_node = r[1]["node"].as_str().unwrap().to_string();
    let victim = agents.iter().copied().find(|p| c.node_of_pid(*p) == victim_node).unwrap();
    c.signal(victim, libc::SIGKILL);
    wait_until(MINUTE, "replica 1 running elsewhere", || {
        let r = replicas(&c, job);
        r[1]["state"] == "running" && r[1]["node"].as_str().is_some_and(|n| n != victim_node)
    });
    wait_until(MINUTE, "3 replica processes, none on the dead node", || live_replica_processes(dir.path()) == 3);

    // Scale down to 1: the others are stopped; up to 4: they come back and one more.
    let scaled = c.json(&["job", "scale", &job.to_string(), "1"]);
    assert_eq!(scaled["policy"]["replicas"], 1, "{scaled}");
    wait_until(MINUTE, "1 replica left", || running(&c, job) == 1 && live_replica_processes(dir.path()) == 1);
    assert_eq!(c.job(job)["state"], "active");
    c.json(&["job", "scale", &job.to_string(), "4"]);
    wait_until(MINUTE, "4 replicas", || running(&c, job) == 4 && live_replica_processes(dir.path()) == 4);

    // The coordinator SIGKILLed and started again: still 4, none doubled.
    c.restart_coordinator();
    wait_until(MINUTE, "4 replicas after the restart", || running(&c, job) == 4);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(live_replica_processes(dir.path()), 4, "{:?}", pids(dir.path()));
    assert_eq!(c.job(job)["policy"]["replicas"], 4);

    // Cancel stops every replica.
    c.json(&["job", "cancel", &job.to_string()]);
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "cancelled", "{done}");
    wait_until(MINUTE, "every replica process gone", || live_replica_processes(dir.path()) == 0);
}

#[test]
fn one_replica_with_a_concurrency_key_is_a_singleton_across_jobs() {
    let mut c = Cluster::start(&[]);
    c.static_pool("svc", 2, 2);
    let dir = tempfile::tempdir().unwrap();
    let cmd = replica_command(dir.path());
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let args = ["--pool", "svc", "--continuous", "--concurrency-key", "leader"];
    let first = c.submit(&args, &cmd);
    let second = c.submit(&args, &cmd);
    wait_until(MINUTE, "one of them running", || running(&c, first) + running(&c, second) == 1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(running(&c, first) + running(&c, second), 1, "a singleton runs once");
    let (on, off) = if running(&c, first) == 1 { (first, second) } else { (second, first) };
    c.json(&["job", "cancel", &on.to_string()]);
    wait_until(MINUTE, "the other takes over", || running(&c, off) == 1);
    c.json(&["job", "cancel", &off.to_string()]);
    wait_until(MINUTE, "every replica process gone", || live_replica_processes(dir.path()) == 0);
}

#[test]
fn bad_continuous_input_is_refused_naming_the_field() {
    let mut c = Cluster::start(&[]);
    c.static_pool("svc", 1, 1);
    let zero = c.fails(&["job", "submit", "--pool", "svc", "--continuous", "--replicas", "0", "--", "true"]);
    assert!(zero.contains("--replicas"), "{zero}");
    let array = c.fails(&["job", "submit", "--pool", "svc", "--continuous", "--array", "1-3", "--", "true"]);
    assert!(array.contains("invalid continuous") && array.contains("--array"), "{array}");
    let stray = c.fails(&["job", "submit", "--pool", "svc", "--replicas", "3", "--", "true"]);
    assert!(stray.contains("--continuous"), "{stray}");
    let many = c.fails(&["job", "submit", "--pool", "svc", "--continuous", "--replicas", "1001", "--", "true"]);
    assert!(many.contains("--replicas"), "{many}");
    let plain = c.submit(&["--pool", "svc"], &["true"]);
    let not = c.fails(&["job", "scale", &plain.to_string(), "2"]);
    assert!(not.contains("not continuous"), "{not}");
    assert_eq!(c.json(&["job", "list"]).as_array().map(Vec::len), Some(1), "nothing else was made");
}
