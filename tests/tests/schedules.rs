//! Schedules and delayed jobs, end to end: one job per slot, none twice across a
//! coordinator SIGKILL, `--begin` holding a job across a restart, refusals that name
//! their field, and a schedule only its owner (or an admin) changes.

use std::time::Duration;

use corral_tests::{wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn an_every_second_schedule_makes_one_job_per_slot() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 4);
    let created = c.json(&[
        "schedule",
        "create",
        "tick",
        "--every",
        "1s",
        "--overlap",
        "allow",
        "--pool",
        "cpu",
        "--name",
        "tick-job",
        "--",
        "sh",
        "-c",
        "echo slot $CORRAL_JOB_ID",
    ]);
    assert_eq!(created["every_ms"], 1000, "{created}");
    assert_eq!(created["next_ms"].as_array().unwrap().len(), 5);
    wait_until(MINUTE, "four runs", || c.schedule_slots("tick").len() >= 4);
    c.json(&["schedule", "pause", "tick"]);
    let made = c.schedule_slots("tick");
    corral_tests::assert_each_slot_once(&made);
    // Each run is an ordinary job, with its schedule and slot recorded.
    let jobs = c.json(&["job", "list", "--schedule", "tick"]);
    for j in jobs.as_array().unwrap() {
        let done = c.wait_job(j["id"].as_u64().unwrap(), MINUTE);
        assert_eq!(done["state"], "completed", "{done}");
        assert_eq!(done["name"], "tick-job");
        assert_eq!(done["scheduled_for_ms"], j["scheduled_for_ms"]);
    }
    // The dashboard's API shows them too.
    let first = &jobs[0];
    let shown = c.api(&format!("/api/jobs/{}", first["id"]));
    assert_eq!(shown["schedule"], "tick", "{shown}");
    assert_eq!(shown["scheduled_for_ms"], first["scheduled_for_ms"]);
    let shown = c.json(&["schedule", "show", "tick"]);
    assert_eq!(shown["state"], "paused", "{shown}");
    assert_eq!(shown["runs"].as_array().unwrap().len(), made.len().min(10));
    assert!(shown["runs"].as_array().unwrap().iter().all(|r| r["state"] == "completed"), "{shown}");
    // Other jobs are not listed under it; the event feed names the schedule.
    c.submit(&["--pool", "cpu"], &["true"]);
    assert_eq!(c.schedule_slots("tick").len(), made.len());
    let first = jobs[0]["id"].as_u64().unwrap().to_string();
    let out = c.corral(&["-o", "json", "events", "--job", &first]);
    let feed = String::from_utf8_lossy(&out.stdout);
    assert!(feed.contains("by schedule tick for "), "{feed}");
    c.json(&["schedule", "delete", "tick"]);
    assert!(c.json(&["schedule", "list"]).as_array().unwrap().is_empty());
    assert_eq!(c.schedule_slots("tick").len(), made.len(), "its jobs stay");
}

#[test]
fn a_coordinator_killed_across_slots_makes_each_slot_in_the_window_once() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 8);
    c.every_second("beat", "cpu");
    for round in 1..=3 {
        let before = c.schedule_slots("beat").len();
        wait_until(MINUTE, "a run after the restart", || c.schedule_slots("beat").len() > before + 1);
        c.kill_coordinator();
        // Slots come while it is down; they are within the window when it is back.
        std::thread::sleep(Duration::from_millis(1500 + 500 * round));
        c.restart_coordinator();
    }
    let back = now_ms();
    wait_until(MINUTE, "runs after the last restart", || {
        c.schedule_slots("beat").last().is_some_and(|last| *last > back)
    });
    c.json(&["schedule", "pause", "beat"]);
    let made = c.schedule_slots("beat");
    assert!(made.len() >= 8, "{made:?}");
    corral_tests::assert_each_slot_once(&made);
    let shown = c.json(&["schedule", "show", "beat"]);
    assert_eq!(shown["missed"], 0, "every missed slot was within the window: {shown}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn begin_holds_a_job_across_a_restart() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let id = c.submit(&["--pool", "cpu", "--begin", "4s"], &["sh", "-c", "echo began"]);
    let job = c.job(id);
    let begin = job["begin_at_ms"].as_u64().expect("begin_at_ms");
    assert_eq!(job["state"], "active");
    let out = c.corral(&["job", "show", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("waiting (begins at"), "{text}");
    c.restart_coordinator();
    assert_eq!(c.job(id)["counts"]["ready"], 1, "nothing started early");
    let done = c.wait_job(id, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    let attempts = c.assert_each_succeeded_once(id);
    let started = attempts[0].1[0]["started_at_ms"].as_u64().unwrap();
    assert!(started >= begin, "started at {started}, before its begin time {begin}");
    assert_eq!(c.logs(id, 0, false), "began\n");
}

#[test]
fn bad_schedules_are_refused_naming_the_field() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let create = |extra: &[&str]| {
        let mut args = vec!["schedule", "create", "bad", "--pool", "cpu"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "true"]);
        c.fails(&args)
    };
    for (extra, says) in [
        (&["--cron", "61 * * * *"][..], "invalid cron: minute field: 61 is out of range 0-59"),
        (&["--cron", "@fortnightly"][..], "not a nickname cron knows"),
        (&["--cron", "* * * *"][..], "invalid cron"),
        (&["--cron", "0 3 * * *", "--tz", "Mars/Olympus"][..], "invalid tz"),
        (
            &["--every", "1h", "--start-at", "2030-01-02T00:00:00Z", "--end-at", "2030-01-01T00:00:00Z"][..],
            "invalid end_at",
        ),
        (&["--every", "10ms"][..], "invalid every"),
        (&["--every", "1m", "--jitter", "2m"][..], "invalid jitter"),
    ] {
        let err = create(extra);
        assert!(err.contains(says), "{extra:?}: {err}");
        assert!(err.lines().count() <= 3, "short: {err}");
    }
    let err = c.fails(&["schedule", "create", "Bad Name", "--every", "1m", "--pool", "cpu", "--", "true"]);
    assert!(err.contains("invalid name"), "{err}");
    let err = c.fails(&["schedule", "create", "nopool", "--every", "1m", "--pool", "gone", "--", "true"]);
    assert!(err.contains("pool"), "{err}");
    assert!(c.json(&["schedule", "list"]).as_array().unwrap().is_empty(), "nothing was made");
    // A nickname, as Nomad and Kubernetes take it: shown as written, next at midnight.
    let made = c.json(&["schedule", "create", "nightly", "--cron", "@daily", "--pool", "cpu", "--", "true"]);
    assert_eq!(made["cron"], "@daily", "{made}");
    let next = made["next_ms"][0].as_u64().expect("a next slot");
    assert_eq!(next % 86_400_000, 0, "midnight UTC: {made}");
    // A run made now is named after its schedule (it was given no --name).
    c.json(&["schedule", "trigger", "nightly"]);
    let runs = c.json(&["job", "list", "--schedule", "nightly"]);
    assert_eq!(runs[0]["name"], "nightly", "{runs}");
    let err = c.fails(&["schedule", "show", "nothing"]);
    assert!(err.contains("schedule 'nothing'") || err.contains("nothing"), "{err}");
}

#[test]
fn a_schedule_is_changed_only_by_its_owner_or_an_admin() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let alice = c.token("alice", "submit", &[]);
    let bob = c.token("bob", "submit", &[]);
    let reader = c.token("carol", "read", &[]);
    let out = c.corral_as(
        Some(&alice),
        &[
            "schedule",
            "create",
            "nightly",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--pool",
            "cpu",
            "--",
            "true",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = c.json(&["schedule", "show", "nightly"]);
    assert_eq!(shown["owner"], "alice");
    assert!(shown["next"][0].as_str().unwrap().ends_with("[Europe/Berlin]"), "{shown}");
    for args in
        [&["schedule", "pause", "nightly"][..], &["schedule", "trigger", "nightly"], &["schedule", "delete", "nightly"]]
    {
        let out = c.corral_as(Some(&bob), args);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to token 'alice'"), "{args:?}");
    }
    let out =
        c.corral_as(Some(&reader), &["schedule", "create", "mine", "--every", "1m", "--pool", "cpu", "--", "true"]);
    assert!(!out.status.success());
    let out = c.corral_as(Some(&alice), &["-o", "json", "schedule", "trigger", "nightly"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = job["job_id"].as_u64().unwrap();
    assert_eq!(c.job(id)["owner"], "alice", "a schedule's jobs are its owner's");
    assert_eq!(c.job(id)["schedule"], "nightly");
    c.json(&["schedule", "delete", "nightly"]);
}
