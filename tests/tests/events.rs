//! The event feed: `corral events`, followed across a coordinator crash.

use std::collections::HashMap;
use std::time::Duration;

use corral_tests::{wait_until, Cluster};
use serde_json::Value;

/// Every event recorded so far, read once (no --follow).
fn all_events(cluster: &Cluster, args: &[&str]) -> Vec<Value> {
    let mut cli = vec!["-o", "json", "events"];
    cli.extend_from_slice(args);
    let out = cluster.corral(&cli);
    assert!(out.status.success(), "corral events failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}")))
        .collect()
}

fn ids(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["id"].as_u64().expect("event id")).collect()
}

#[test]
fn a_follower_resumes_after_a_coordinator_crash_with_no_gap_and_no_duplicate() {
    let mut cluster = Cluster::start(&[]);
    cluster.static_pool("cpu", 2, 2);

    // Follow from the start, as a program would, reading JSON lines.
    let follower = cluster.follow_events();

    let job = cluster.submit(&["--pool", "cpu", "--array", "0-39"], &["sh", "-c", "sleep 0.1"]);
    wait_until(Duration::from_secs(30), "some tasks to succeed", || {
        follower.seen().iter().filter(|e| e["kind"] == "task" && e["state"] == "succeeded").count() >= 5
    });
    // The coordinator dies mid-job; the follower must ride it out.
    cluster.restart_coordinator();
    let done = cluster.wait_job(job, Duration::from_secs(60));
    assert_eq!(done["state"], "completed", "{done}");

    let recorded = all_events(&cluster, &[]);
    let last = *ids(&recorded).last().expect("events were recorded");
    wait_until(Duration::from_secs(20), "the follower to catch up", || follower.last_id() == Some(last));
    let (seen, said) = follower.stop();
    assert!(said.contains("resuming after event"), "the follower never lost its stream: {said}");

    // Ids start at 1 and have no gap; the follower saw each exactly once, in order,
    // and what it saw is what the store holds.
    assert_eq!(ids(&recorded), (1..=last).collect::<Vec<_>>(), "the feed has a gap");
    assert_eq!(ids(&seen), ids(&recorded), "the follower missed or repeated events");
    assert_eq!(seen, recorded);

    // Every task succeeded exactly once in the feed, whatever the crash re-ran.
    let mut succeeded: HashMap<u64, usize> = HashMap::new();
    for e in recorded.iter().filter(|e| e["kind"] == "task" && e["state"] == "succeeded") {
        assert_eq!(e["job"], job);
        *succeeded.entry(e["task"].as_u64().expect("task index")).or_default() += 1;
    }
    assert_eq!(succeeded.len(), 40, "{succeeded:?}");
    assert!(succeeded.values().all(|&n| n == 1), "{succeeded:?}");
    // The job's life is there too: submitted, then completed.
    let job_states: Vec<&str> =
        recorded.iter().filter(|e| e["kind"] == "job").map(|e| e["state"].as_str().unwrap_or_default()).collect();
    assert_eq!(job_states, ["active", "completed"]);
    // Nodes registered in their pool.
    assert!(recorded.iter().any(|e| e["kind"] == "node" && e["pool"] == "cpu" && e["state"] == "up"));

    // Resuming after an id gives exactly the rest; filters narrow it.
    let middle = last / 2;
    let rest = all_events(&cluster, &["--after", &middle.to_string()]);
    assert_eq!(ids(&rest), (middle + 1..=last).collect::<Vec<_>>());
    let of_job = all_events(&cluster, &["--job", &job.to_string()]);
    assert!(of_job.iter().all(|e| e["job"] == job));
    assert_eq!(of_job.iter().filter(|e| e["kind"] == "task" && e["state"] == "succeeded").count(), 40);
    let of_pool = all_events(&cluster, &["--pool", "cpu"]);
    assert!(of_pool.iter().all(|e| e["pool"] == "cpu"));
    assert!(all_events(&cluster, &["--pool", "other"]).is_empty());
}

#[test]
fn a_resume_point_the_coordinator_never_recorded_is_refused() {
    let cluster = Cluster::start(&[]);
    cluster.json(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    let err = cluster.fails(&["events", "--after", "999999"]);
    assert!(err.contains("after") && err.contains("newest is"), "{err}");
    let err = cluster.fails(&["events", "--pool", "Not A Pool"]);
    assert!(err.contains("pool"), "{err}");
}
