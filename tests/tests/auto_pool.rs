//! Auto pools, end to end: a pool made for one job by the local provider, its agent
//! started for it, and both gone once the job ends; only an admin may ask for one,
//! and a submitter may dispatch an admin's template that does.

use std::time::Duration;

use corral_tests::{bin, wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn an_auto_pool_is_made_for_the_job_and_deleted_with_it() {
    let c = Cluster::start(&["--agent-bin", bin("corral-agent").to_str().unwrap()]);
    let job = c.submit(
        &["--auto-pool", "provider=local,nodes=1,slots=2", "--array", "0-3"],
        &["sh", "-c", "echo $CORRAL_POOL"],
    );
    let pool = format!("job-{job}");
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["pool"], pool.as_str());
    assert_eq!(done["auto_pool"], true);
    assert_eq!(c.logs(job, 2, false).trim(), pool);
    wait_until(MINUTE, "the job's pool to be deleted", || {
        c.json(&["pool", "list"]).as_array().unwrap().iter().all(|p| p["name"] != pool.as_str())
    });
    wait_until(MINUTE, "its agent to stop", || {
        c.json(&["node", "list"]).as_array().unwrap().iter().all(|n| n["state"] == "removed")
    });

    // A submitter may not make pools, but may dispatch an admin's template that does.
    let submit = c.token("builder", "submit", &[]);
    let out =
        c.corral_as(Some(&submit), &["job", "submit", "--auto-pool", "provider=local,nodes=1,slots=1", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("an auto pool needs an admin token"), "{err}");
    let made =
        c.corral(&["template", "create", "build", "--auto-pool", "provider=local,nodes=1,slots=1", "--", "true"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let out = c.corral_as(Some(&submit), &["-o", "json", "dispatch", "build"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dispatched: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = dispatched["job_id"].as_u64().unwrap();
    assert_eq!(c.wait_job(id, MINUTE)["state"], "completed");
    assert_eq!(c.job(id)["pool"], format!("job-{id}"));
    let err = c.fails(&["job", "submit", "--auto-pool", "provider=local,slots=1", "--", "true"]);
    assert!(err.contains("nodes=N"), "{err}");
}
