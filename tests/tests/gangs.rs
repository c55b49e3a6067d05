//! Gang scheduling end to end, with real agents and plain commands (no MPI): a
//! multi-node task is not starved by a stream of small tasks, two never deadlock,
//! and a held node backfills only a task whose timeout ends before the gang's
//! reservation.

use std::time::Duration;

use corral_tests::*;
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

/// The first attempt of `job`'s task 0, from `task show`.
fn first_attempt(c: &Cluster, job: u64) -> Value {
    c.attempts(job).into_iter().next().and_then(|(_, a)| a.into_iter().next()).unwrap_or_default()
}

fn ms(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} in {v}"))
}

#[test]
fn a_gang_is_not_starved_by_a_stream_of_small_tasks_arriving_after_it() {
    let mut c = Cluster::start(&[]);
    c.static_pool("p", 3, 2);
    let marks = tempfile::tempdir().unwrap();
    let dir = marks.path().display().to_string();
    // Queued before it: 400 short tasks, which it waits for (they came first).
    let before = c.submit(&["--pool", "p", "--array", "1-400"], &["sleep", "0.02"]);
    let gang = c.submit(&["--pool", "p", "--nodes", "3"], &["sh", "-c", &format!("ls {dir} | wc -l")]);
    // Then 600 more keep arriving, each marking that it started.
    let mark = format!("touch {dir}/$CORRAL_JOB_ID.$CORRAL_TASK_INDEX");
    let after: Vec<u64> =
        (0..6).map(|_| c.submit(&["--pool", "p", "--array", "1-100"], &["sh", "-c", &mark])).collect();
    let done = c.wait_job(gang, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    let seen = c.logs(gang, 0, false);
    assert_eq!(seen.trim(), "0", "no task that arrived after it started before it did");
    let attempt = first_attempt(&c, gang);
    assert_eq!(attempt["members"].as_array().map(Vec::len), Some(2), "{attempt}");
    // (The stream was there to overtake it: queued while it waited.)
    let queued = ms(&c.job(after[0]), "submitted_at_ms");
    assert!(queued < ms(&attempt, "started_at_ms"), "{queued} vs {attempt}");
    for job in std::iter::once(before).chain(after) {
        assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    }
    assert_eq!(std::fs::read_dir(marks.path()).unwrap().count(), 600);
}

#[test]
fn two_gangs_that_cannot_run_side_by_side_never_deadlock() {
    let mut c = Cluster::start(&[]);
    c.static_pool("p", 3, 1);
    let gangs: Vec<u64> =
        (0..3).map(|_| c.submit(&["--pool", "p", "--nodes", "2", "--max-retries", "0"], &["sleep", "0.5"])).collect();
    // A one-node task between them takes what is left, never a held node's share.
    let single = c.submit(&["--pool", "p"], &["true"]);
    let mut spans = Vec::new();
    for job in &gangs {
        let done = c.wait_job(*job, MINUTE);
        assert_eq!(done["state"], "completed", "{done}");
        let attempts = c.attempts(*job).remove(0).1;
        assert_eq!(attempts.len(), 1, "ran once: {attempts:?}");
        let a = &attempts[0];
        let mut nodes = vec![a["node_id"].as_str().unwrap_or_default().to_string()];
        nodes.extend(a["members"].as_array().into_iter().flatten().filter_map(|m| m.as_str()).map(String::from));
        nodes.dedup();
        assert_eq!(nodes.len(), 2, "two whole nodes: {a}");
        spans.push((ms(a, "started_at_ms"), ms(a, "ended_at_ms")));
    }
    assert_eq!(c.wait_job(single, MINUTE)["state"], "completed");
    // Two gangs of two never ran at once on three nodes.
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlapping gangs: {spans:?}");
    }
}

#[test]
fn a_held_node_backfills_only_a_task_whose_timeout_ends_before_the_gang_can_start() {
    let mut c = Cluster::start(&[]);
    c.static_pool("p", 2, 1);
    // One node busy until at most 8 s from now: the gang's reservation.
    let long = c.submit(&["--pool", "p", "--timeout", "8s"], &["sleep", "3"]);
    wait_until(Duration::from_secs(20), "the long task running", || {
        c.json(&["task", "list", &long.to_string()])[0]["state"] == "running"
    });
    let gang = c.submit(&["--pool", "p", "--nodes", "2"], &["true"]);
    let said = c.json(&["task", "explain", &gang.to_string(), "0"]).to_string();
    assert!(said.contains("held"), "explain says what it holds: {said}");
    let fits = c.submit(&["--pool", "p", "--timeout", "2s"], &["true"]);
    let too_long = c.submit(&["--pool", "p", "--timeout", "1m"], &["true"]);
    for job in [long, gang, fits, too_long] {
        assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    }
    let start = |job| ms(&first_attempt(&c, job), "started_at_ms");
    let (gang_start, fits_start, too_long_start) = (start(gang), start(fits), start(too_long));
    assert!(fits_start < gang_start, "the task that fits ran on the held node first: {fits_start} vs {gang_start}");
    assert!(too_long_start >= gang_start, "the one that does not waited: {too_long_start} vs {gang_start}");
}

#[test]
fn a_multi_node_task_the_pool_cannot_hold_is_refused_naming_the_field() {
    let c = Cluster::start(&[]);
    // A local pool of two nodes of 2 slots (none need to run for it to refuse).
    c.json(&["pool", "create", "two", "--provider", "local", "--nodes", "2", "--slots-per-node", "2"]);
    let refused = |args: &[&str]| {
        let mut all = vec!["job", "submit", "--pool", "two"];
        all.extend_from_slice(args);
        all.extend(["--", "true"]);
        c.fails(&all)
    };
    let said = refused(&["--nodes", "0"]);
    assert!(said.contains("'0' for '--nodes <NODES>'"), "{said}");
    let said = refused(&["--nodes", "3"]);
    assert!(said.contains("task.nodes: a task needs 3 whole nodes but pool 'two' has at most 2"), "{said}");
    let said = refused(&["--nodes", "2", "--slots", "3"]);
    assert!(said.contains("task.slots:") && said.contains("at most 2"), "{said}");
    assert!(c.json(&["job", "list"]).as_array().is_some_and(|j| j.is_empty()), "nothing was made");
}
