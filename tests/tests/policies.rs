//! Failure policies and throttles, end to end: exit rules (retry, fail, fail-job,
//! succeed), `job retry` after the cause is fixed, a throttled array and a
//! singleton key measured by the tasks themselves.

use std::time::Duration;

use corral_tests::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

fn outcomes(c: &Cluster, job: u64) -> Vec<(String, Vec<String>)> {
    let tasks = c.json(&["task", "list", &job.to_string()]);
    tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shown = c.json(&["task", "show", &job.to_string(), &t["id"].to_string()]);
            let attempts = shown["attempts"].as_array().unwrap();
            (
                t["state"].as_str().unwrap().to_string(),
                attempts.iter().map(|a| a["outcome"].as_str().unwrap_or("running").to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn exit_rules_retry_fail_and_succeed() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 4);
    let marks = c.dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    // Task 0 exits 3, task 1 exits 4, task 2 exits 5 the first time and 0 after,
    // task 3 exits 9 every time.
    let script = format!(
        "cd {}; i=$CORRAL_TASK_INDEX; case $i in 0) exit 3;; 1) exit 4;; 2) [ -e two ] && exit 0; touch two; exit 5;; *) exit 9;; esac",
        marks.display()
    );
    let job = c.submit(
        &[
            "--pool",
            "cpu",
            "--array",
            "0-3",
            "--max-retries",
            "2",
            "--exit-policy",
            "3=fail",
            "--exit-policy",
            "4=succeed",
            "--exit-policy",
            "5=retry",
        ],
        &["sh", "-c", &script],
    );
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["policy"]["exit_policy"], serde_json::json!(["3=fail", "4=succeed", "5=retry"]));
    let seen = outcomes(&c, job);
    let expect = |state: &str, attempts: &[&str]| (state.to_string(), attempts.iter().map(|a| a.to_string()).collect());
    assert_eq!(seen[0], expect("failed", &["failed"]), "3=fail: no retry though two were allowed");
    assert_eq!(seen[1], expect("succeeded", &["failed"]), "4=succeed");
    assert_eq!(seen[2], expect("succeeded", &["failed", "succeeded"]), "5=retry");
    assert_eq!(seen[3], expect("failed", &["failed", "failed", "failed"]), "unmatched: up to --max-retries");
    // The dead-letter list: each failed task with why.
    let failed = c.json(&["task", "list", &job.to_string(), "--state", "failed"]);
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0]["reason"], "exit code 3: failed without retrying (exit policy)");
    assert_eq!(failed[1]["last_error"], "exited with code 9");
}

#[test]
fn fail_job_ends_the_job_at_once_and_kills_the_rest() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 3);
    // The sleeping tasks' shells carry a marker of this test alone in their command line.
    let marker = c.dir.path().join("fail-job-sleeper").display().to_string();
    let script = format!("[ $CORRAL_TASK_INDEX = 0 ] && {{ sleep 2; exit 7; }}; sleep 300; : {marker}");
    let job = c.submit(
        &["--pool", "cpu", "--array", "0-9", "--max-retries", "3", "--exit-policy", "7=fail-job"],
        &["sh", "-c", &script],
    );
    corral_tests::wait_until(MINUTE, "the sleepers to start", || !corral_tests::processes_with(&marker).is_empty());
    let started = std::time::Instant::now();
    let done = c.wait_job(job, MINUTE);
    assert!(started.elapsed() < Duration::from_secs(30), "the job ended when task 0 failed, not after the sleeps");
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!((done["counts"]["failed"].as_u64(), done["counts"]["cancelled"].as_u64()), (Some(1), Some(9)));
    let task = c.json(&["task", "show", &job.to_string(), "1"]);
    let last = task["attempts"].as_array().unwrap().last().unwrap().clone();
    assert!(last["message"].as_str().unwrap().contains("job failed: task 0: exit code 7"), "{task}");
    corral_tests::wait_until(MINUTE, "the killed sleepers to be gone", || {
        corral_tests::processes_with(&marker).is_empty()
    });
}

#[test]
fn job_retry_reruns_what_failed_once_the_cause_is_fixed() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    let fix = c.dir.path().join("fixed");
    let script =
        format!("[ $CORRAL_TASK_INDEX != 2 ] || [ -e {} ] || {{ echo missing input >&2; exit 1; }}", fix.display());
    let job = c.submit(&["--pool", "cpu", "--array", "0-3"], &["sh", "-c", &script]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "failed");
    let text = c.corral(&["task", "list", &job.to_string(), "--state", "failed"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("failed (exited with code 1)"), "{text}");
    std::fs::write(&fix, "").unwrap();
    let retried = c.json(&["job", "retry", &job.to_string()]);
    assert_eq!(retried["tasks"], 1, "{retried}");
    assert_eq!(retried["job"]["state"], "active");
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    let seen = outcomes(&c, job);
    assert_eq!(seen[2].1, ["failed", "succeeded"], "the history is kept: {seen:?}");
    for i in [0, 1, 3] {
        assert_eq!(seen[i].1, ["succeeded"], "task {i} ran once: {seen:?}");
    }
    // Nothing failed is left: a second retry says so and changes nothing.
    let err = c.fails(&["job", "retry", &job.to_string()]);
    assert!(err.contains("no task to retry"), "{err}");
    // A named succeeded task may run again; a running one may not.
    let again = c.json(&["job", "retry", &job.to_string(), "--task", "0"]);
    assert_eq!(again["tasks"], 1);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
}

/// A command that records how many of the tasks sharing `dir` run at once: each
/// adds a file while it runs and notes how many files there are.
fn counting(dir: &std::path::Path) -> String {
    format!(
        "d={}; me=$CORRAL_JOB_ID-$CORRAL_TASK_INDEX; touch $d/run.$me; ls $d | grep -c '^run\\.' >> $d/seen.$me; sleep 0.3; ls $d | grep -c '^run\\.' >> $d/seen.$me; rm $d/run.$me",
        dir.display()
    )
}

fn most_at_once(dir: &std::path::Path) -> (usize, u64) {
    let mut most = 0;
    let mut tasks = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("seen.") {
            tasks += 1;
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                most = most.max(line.trim().parse::<u64>().unwrap());
            }
        }
    }
    (tasks, most)
}

#[test]
fn a_throttled_array_never_runs_more_than_n() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 4);
    let dir = c.dir.path().join("throttle");
    std::fs::create_dir(&dir).unwrap();
    let job = c.submit(&["--pool", "cpu", "--array", "1-24%3"], &["sh", "-c", &counting(&dir)]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    c.assert_each_succeeded_once(job);
    let (tasks, most) = most_at_once(&dir);
    assert_eq!(tasks, 24);
    assert!(most <= 3, "at most 3 at once, saw {most}");
    assert!(most >= 2, "the tasks ran side by side (saw {most}), on 8 free slots");
    assert_eq!(c.job(job)["policy"]["max_running"], 3);
}

#[test]
fn a_singleton_key_holds_across_jobs_and_templates() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 4);
    let dir = c.dir.path().join("singleton");
    std::fs::create_dir(&dir).unwrap();
    let cmd = counting(&dir);
    let a = c.submit(&["--pool", "cpu", "--array", "1-4", "--concurrency-key", "db"], &["sh", "-c", &cmd]);
    // The same key from a template's dispatch.
    let out = c.corral(&[
        "template",
        "create",
        "migrate",
        "--pool",
        "cpu",
        "--array",
        "1-4",
        "--concurrency-key",
        "db",
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = c.json(&["dispatch", "migrate"])["job_id"].as_u64().unwrap();
    for job in [a, b] {
        assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
        c.assert_each_succeeded_once(job);
    }
    let (tasks, most) = most_at_once(&dir);
    assert_eq!((tasks, most), (8, 1), "one task at a time of both jobs");
    assert_eq!(c.job(b)["policy"]["concurrency_key"], "db");
}

#[test]
fn bad_policies_are_refused_with_the_field() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--exit-policy", "3=explode", "--", "true"]);
    assert!(err.contains("retry, fail, fail-job, succeed"), "{err}");
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--retry-delay", "1m..1s", "--", "true"]);
    assert!(err.contains("shorter"), "{err}");
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--array", "1-10%0", "--", "true"]);
    assert!(err.contains("%0"), "{err}");
    let file = c.dir.path().join("job.yaml");
    std::fs::write(&file, "exit_policy: [\"x=fail\"]\ntasks:\n  - id: a\n    command: [true]\n").unwrap();
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--file", file.to_str().unwrap()]);
    assert!(err.contains("invalid exit_policy"), "{err}");
    assert_eq!(c.json(&["job", "list"]).as_array().unwrap().len(), 0, "nothing was submitted");
}
