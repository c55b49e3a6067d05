//! `job update --priority`: a raised job's queued tasks run before a lower one's,
//! only its owner or an admin may change it, and the change survives a restart.

use std::time::Duration;

use corral_tests::*;

#[test]
fn a_raised_job_runs_before_the_ones_it_passed() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order");
    let mark = |what: &str| format!("echo {what} >> {}", order.display());
    // The one slot is busy while the others queue.
    let blocker = c.submit(&["--pool", "cpu"], &["sleep", "2"]);
    let low = c.submit(&["--pool", "cpu", "--array", "1-2"], &["sh", "-c", &mark("low")]);
    let raised = c.submit(&["--pool", "cpu", "--array", "1-2"], &["sh", "-c", &mark("raised")]);
    // Another submitter may not reorder someone else's job.
    let other = c.token("other", "submit", &[]);
    let out = c.corral_as(Some(&other), &["job", "update", &raised.to_string(), "--priority", "10"]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let said = c.fails(&["job", "update", &raised.to_string(), "--priority", "5000"]);
    assert!(said.contains("--priority"), "{said}");
    let updated = c.json(&["job", "update", &raised.to_string(), "--priority", "10"]);
    assert_eq!(updated["priority"], 10, "{updated}");
    for job in [blocker, low, raised] {
        assert_eq!(c.wait_job(job, Duration::from_secs(60))["state"], "completed");
    }
    let ran = std::fs::read_to_string(&order).unwrap();
    assert_eq!(ran.lines().collect::<Vec<_>>(), ["raised", "raised", "low", "low"], "{ran}");
    c.restart_coordinator();
    assert_eq!(c.job(raised)["priority"], 10, "stored");
}

#[test]
fn a_schedule_or_template_update_sets_the_priority_of_the_jobs_it_will_make() {
    let mut c = Cluster::start(&[]);
    c.json(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    c.json(&["template", "create", "t", "--pool", "cpu", "--", "true"]);
    c.json(&["schedule", "create", "s", "--every", "1h", "--pool", "cpu", "--", "true"]);
    let other = c.token("other", "submit", &[]);
    for (what, name) in [("template", "t"), ("schedule", "s")] {
        let out = c.corral_as(Some(&other), &[what, "update", name, "--priority", "1"]);
        assert!(!out.status.success(), "{what}: someone else's is refused");
        assert_eq!(c.json(&[what, "update", name, "--priority", "-7"])["priority"], -7, "{what}");
    }
    let job = c.json(&["dispatch", "t"])["job_id"].as_u64().unwrap();
    assert_eq!(c.job(job)["priority"], -7, "a dispatched job has the template's new priority");
    c.restart_coordinator();
    assert_eq!(c.json(&["template", "show", "t"])["priority"], -7);
    assert_eq!(c.json(&["schedule", "show", "s"])["priority"], -7);
}
