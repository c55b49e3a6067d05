//! Jobs made and ordered from the command line: `--each-line` (a task per line of a
//! file) and `--after` (a job that waits for others), end to end.

use std::time::Duration;

use corral_tests::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn each_line_makes_a_task_per_line_with_its_entry() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    let list = c.dir.path().join("images.txt");
    std::fs::write(&list, "cat.png\ndog image.png\n\nemu.png\n").unwrap();
    let job = c.submit(
        &["--pool", "cpu", "--each-line", list.to_str().unwrap()],
        &["sh", "-c", "echo \"$CORRAL_TASK_INDEX:$CORRAL_ENTRY\""],
    );
    let done = c.wait_job(job, MINUTE);
    assert_eq!((done["state"].as_str(), done["tasks"].as_u64()), (Some("completed"), Some(4)), "{done}");
    let outputs: Vec<String> = (0..4).map(|i| c.logs(job, i, false).trim().to_string()).collect();
    assert_eq!(outputs, ["0:cat.png", "1:dog image.png", "2:", "3:emu.png"]);
    let empty = c.dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--each-line", empty.to_str().unwrap(), "--", "true"]);
    assert!(err.contains("has no lines"), "{err}");
}

#[test]
fn an_array_of_listed_and_stepped_indices_runs_exactly_those() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 4);
    let job = c.submit(&["--pool", "cpu", "--array", "5-9:2,1,3%2"], &["sh", "-c", "echo task $CORRAL_TASK_INDEX"]);
    let done = c.wait_job(job, MINUTE);
    assert_eq!((done["state"].as_str(), done["tasks"].as_u64()), (Some("completed"), Some(5)), "{done}");
    assert_eq!(done["indices"], "1,3,5-9:2", "{done}");
    assert_eq!(done["policy"]["max_running"], 2, "%2 throttles it: {done}");
    for index in [1, 3, 5, 7, 9] {
        assert_eq!(c.logs(job, index, false).trim(), format!("task {index}"));
    }
    let err = c.fails(&["task", "logs", &job.to_string(), "4"]);
    assert!(err.contains("has tasks 1,3,5-9:2, not 4"), "{err}");
    let text = String::from_utf8_lossy(&c.corral(&["job", "show", &job.to_string()]).stdout).into_owned();
    assert!(text.contains("1,3,5-9:2"), "{text}");
    for (bad, why) in [("1-9,5", "overlaps"), ("1-9:0", "step must be at least 1"), ("3,x", "'x'")] {
        let err = c.fails(&["job", "submit", "--pool", "cpu", "--array", bad, "--", "true"]);
        assert!(err.contains("--array") && err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn after_waits_for_the_job_and_afterok_is_cancelled_when_it_fails() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 4);
    let gate = c.dir.path().join("gate");
    let log = c.dir.path().join("order.log");
    let (gate_s, log_s) = (gate.display().to_string(), log.display().to_string());
    // The first job runs until the gate file exists, then fails or succeeds by it.
    let first_cmd =
        format!("while [ ! -e {gate_s} ]; do sleep 0.05; done; echo first >> {log_s}; exit $(cat {gate_s})");
    let first = c.submit(&["--pool", "cpu"], &["sh", "-c", &first_cmd]);
    let then = format!("echo then >> {log_s}");
    let ok = c.submit(&["--pool", "cpu", "--after", &first.to_string()], &["sh", "-c", &then]);
    let any = c.submit(&["--pool", "cpu", "--after", &format!("{first}:any")], &["sh", "-c", &then]);
    let shown = c.job(ok);
    assert_eq!(shown["waiting_for"], serde_json::json!([first]), "{shown}");
    let text = String::from_utf8_lossy(&c.corral(&["job", "show", &ok.to_string()]).stdout).into_owned();
    assert!(text.contains(&format!("waiting (for job {first} to end)")), "{text}");
    corral_tests::wait_until(MINUTE, "the first job to run", || c.job(first)["counts"]["running"] == 1);
    for job in [ok, any] {
        assert_eq!(c.job(job)["counts"]["ready"], 1, "job {job} waits, with free slots beside it");
    }
    assert!(!log.exists(), "nothing ran before the first job ended");
    std::fs::write(&gate, "1").unwrap();
    assert_eq!(c.wait_job(first, MINUTE)["state"], "failed");
    let cancelled = c.wait_job(ok, MINUTE);
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["reason"], format!("after: job {first} ended failed, not completed"));
    assert_eq!(c.wait_job(any, MINUTE)["state"], "completed");
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines, "first\nthen\n", "the afterany job ran after the first, the afterok one never");
    // Naming a job that can never satisfy it, or none, is refused.
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--after", &first.to_string(), "--", "true"]);
    assert!(err.contains("could never start"), "{err}");
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--after", "999", "--", "true"]);
    assert!(err.contains("999"), "{err}");
}

fn explain(c: &Cluster, job: u64, task: &str) -> String {
    let shown = c.json(&["task", "explain", &job.to_string(), task]);
    shown["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect::<Vec<_>>().join("\n")
}

#[test]
fn task_explain_says_why_a_task_is_not_running() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    // No node in this pool at all.
    let out = c.corral(&["pool", "create", "gpu", "--slots-per-node", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lonely = c.submit(&["--pool", "gpu"], &["true"]);
    assert!(explain(&c, lonely, "0").contains("pool 'gpu' has no node ready for work"), "{}", explain(&c, lonely, "0"));
    // One slot, busy: the second task waits for it, with the first ahead of it.
    let busy = c.submit(&["--pool", "cpu", "--array", "0-1"], &["sleep", "30"]);
    corral_tests::wait_until(MINUTE, "the first task to run", || c.job(busy)["counts"]["running"] == 1);
    let text = explain(&c, busy, "1");
    assert!(text.contains("no node of pool 'cpu' has 1 free slot(s): all 1 are busy"), "{text}");
    assert!(explain(&c, busy, "0").starts_with("running: attempt 1 on node"), "{}", explain(&c, busy, "0"));
    // Begins later; waits for a job; throttled.
    let later = c.submit(&["--pool", "cpu", "--begin", "2h"], &["true"]);
    assert!(explain(&c, later, "0").contains("the job begins at"), "{}", explain(&c, later, "0"));
    let after = c.submit(&["--pool", "cpu", "--after", &busy.to_string()], &["true"]);
    assert!(explain(&c, after, "0").contains(&format!("waits for job {busy} to end (--after)")));
    let text = c.corral(&["task", "explain", &after.to_string(), "0"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with(&format!("task 0 of job {after}: ready\n  - ")), "{text}");
    c.corral(&["job", "cancel", &busy.to_string()]);
    let err = c.fails(&["task", "explain", &busy.to_string(), "7"]);
    assert!(err.contains("task"), "{err}");
}
