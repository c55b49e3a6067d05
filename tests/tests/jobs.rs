//! Jobs end to end on static pools: arrays, environment, logs, retries, timeouts,
//! cancel, and bad input refused with a message that names the problem.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use corral_tests::{wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn array_job_runs_every_task_once_across_two_agents() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 2);
    let job = c.submit(
        &["--pool", "cpu", "--array", "1-40", "--name", "echo", "--env", "GREETING=hi"],
        &[
            "sh",
            "-c",
            "echo \"$GREETING {index} $CORRAL_JOB_ID $CORRAL_TASK_INDEX $CORRAL_ATTEMPT $CORRAL_NODE_ID\"; sleep 0.05",
        ],
    );
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["succeeded"], 40);
    assert_eq!(done["tasks"], 40);

    let tasks = c.json(&["task", "list", &job.to_string()]);
    let ids: BTreeSet<u64> = tasks.as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=40).collect());
    assert!(tasks.as_array().unwrap().iter().all(|t| t["state"] == "succeeded" && t["attempts"] == 1));

    let attempts = c.assert_each_succeeded_once(job);
    let nodes: BTreeSet<String> = attempts.iter().map(|(_, a)| a[0]["node_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(nodes.len(), 2, "both agents ran tasks: {nodes:?}");

    let out = c.logs(job, 7, false);
    let node = attempts.iter().find(|(i, _)| *i == 7).unwrap().1[0]["node_id"].as_str().unwrap().to_string();
    assert_eq!(out, format!("hi 7 {job} 7 1 {node}\n"));

    let succeeded = c.json(&["task", "list", &job.to_string(), "--state", "succeeded"]);
    assert_eq!(succeeded.as_array().unwrap().len(), 40);
    let failed = c.json(&["task", "list", &job.to_string(), "--state", "failed"]);
    assert!(failed.as_array().unwrap().is_empty());
}

#[test]
fn retries_then_success_and_a_task_that_always_fails() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    let flaky = c.submit(
        &["--pool", "cpu", "--max-retries", "3"],
        &["sh", "-c", "echo attempt $CORRAL_ATTEMPT >&2; [ $CORRAL_ATTEMPT -ge 3 ] || exit 7"],
    );
    let broken = c.submit(&["--pool", "cpu", "--max-retries", "2"], &["sh", "-c", "exit 4"]);

    assert_eq!(c.wait_job(flaky, MINUTE)["state"], "completed");
    let shown = c.json(&["task", "show", &flaky.to_string(), "0"]);
    let outcomes: Vec<&str> =
        shown["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"]);
    assert_eq!(shown["attempts"][0]["exit_code"], 7);
    assert_eq!(c.logs(flaky, 0, true), "attempt 3\n");

    // `job wait` exits 1 for a failed job and says where to look.
    let out = c.corral(&["job", "wait", &broken.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed"));
    let job = c.job(broken);
    assert_eq!(job["state"], "failed");
    assert_eq!(job["counts"]["failed"], 1);
    let shown = c.json(&["task", "show", &broken.to_string(), "0"]);
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "1 try + 2 retries: {attempts:?}");
    assert!(attempts.iter().all(|a| a["outcome"] == "failed" && a["exit_code"] == 4));

    let ok = c.corral(&["job", "wait", &flaky.to_string()]);
    assert_eq!(ok.status.code(), Some(0));
}

#[test]
fn timeout_kills_the_task_and_fails_it() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let started = Instant::now();
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--timeout", "0:61", "--", "true"]);
    assert!(err.contains("61 seconds is out of range"), "{err}");
    // Slurm's clock form: one second.
    let job = c.submit(&["--pool", "cpu", "--timeout", "00:00:01"], &["sleep", "30"]);
    let done = c.wait_job(job, MINUTE);
    assert!(started.elapsed() < Duration::from_secs(20), "the timeout did not stop the task");
    assert_eq!(done["state"], "failed");
    let shown = c.json(&["task", "show", &job.to_string(), "0"]);
    let attempt = &shown["attempts"][0];
    assert_eq!(attempt["outcome"], "timed_out", "{shown}");
    assert_eq!(attempt["signal"], 15, "stopped by SIGTERM: {shown}");
}

#[test]
fn cancel_kills_running_tasks_and_drops_queued_ones() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    let marker = c.dir.path().join("still-running");
    let script = format!("sleep 3; touch {}", marker.display());
    let job = c.submit(&["--pool", "cpu", "--array", "1-6"], &["sh", "-c", &script]);
    wait_until(MINUTE, "two running tasks", || c.job(job)["counts"]["running"] == 2);
    let cancelled = c.json(&["job", "cancel", &job.to_string()]);
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["counts"]["cancelled"], 6);
    wait_until(MINUTE, "the node to be idle", || c.nodes_in("cpu", "idle").len() == 1);
    std::thread::sleep(Duration::from_secs(4));
    assert!(!marker.exists(), "a cancelled task kept running");
    let attempts = c.attempts(job);
    let killed: Vec<_> = attempts.iter().flat_map(|(_, a)| a.iter()).collect();
    assert_eq!(killed.len(), 2);
    assert!(killed.iter().all(|a| a["outcome"] == "cancelled"));
    // Several at once, as scancel takes them: each is cancelled, one that cannot be
    // is named, and the exit status says so.
    let (a, b) = (c.submit(&["--pool", "cpu"], &["sleep", "30"]), c.submit(&["--pool", "cpu"], &["sleep", "30"]));
    let out = c.corral(&["job", "cancel", &a.to_string(), "999", &b.to_string()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("job 999: job '999' does not exist"), "{said}");
    assert!(said.contains("1 of 3 jobs could not be cancelled: 999"), "{said}");
    assert_eq!((c.job(a)["state"].clone(), c.job(b)["state"].clone()), ("cancelled".into(), "cancelled".into()));
    let both = c.json(&["job", "cancel", &a.to_string(), &b.to_string()]);
    assert_eq!(both.as_array().map(Vec::len), Some(2), "{both}");
    // Single tasks, as `scancel 12_7`: the running one killed, a queued one dropped,
    // the rest run, and the job ends cancelled.
    let array = c.submit(&["--pool", "cpu", "--array", "1-4"], &["sleep", "2"]);
    wait_until(MINUTE, "two running", || c.job(array)["counts"]["running"] == 2);
    let running = c.json(&["task", "list", &array.to_string(), "--state", "running"]);
    let first = running[0]["name"].as_str().unwrap().to_string();
    let gone = c.json(&["task", "cancel", &array.to_string(), &first]);
    assert_eq!(gone[0]["state"], "cancelled", "{gone}");
    let gone = c.json(&["task", "cancel", &format!("{array}_4")]);
    assert_eq!(gone[0]["state"], "cancelled", "{gone}");
    let out = c.corral(&["task", "cancel", &format!("{array}_99")]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("does not exist"), "{said}");
    let done = c.wait_job(array, MINUTE);
    assert_eq!((done["state"].as_str(), done["counts"]["cancelled"].as_u64()), (Some("cancelled"), Some(2)), "{done}");
    assert_eq!(done["counts"]["succeeded"], 2, "{done}");
}

#[test]
fn logs_follow_a_running_task_to_the_end() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let job =
        c.submit(&["--pool", "cpu"], &["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.4; done; echo oops >&2"]);
    wait_until(MINUTE, "the task to start", || c.job(job)["counts"]["running"] == 1);
    let out = c.corral(&["task", "logs", &job.to_string(), "0", "--follow"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "line 1\nline 2\nline 3\n");
    assert_eq!(c.logs(job, 0, true), "oops\n");
    // With -o json: both streams, with their sizes.
    let both = c.json(&["task", "logs", &job.to_string(), "0"]);
    assert_eq!((both["stdout_bytes"].as_u64(), both["stderr"].as_str()), (Some(21), Some("oops\n")), "{both}");
    // A task that wrote only to stderr: `task logs` says where its output is.
    let quiet = c.submit(&["--pool", "cpu"], &["sh", "-c", "echo failed here >&2"]);
    c.wait_job(quiet, MINUTE);
    let out = c.corral(&["task", "logs", &quiet.to_string(), "0"]);
    assert!(out.status.success() && out.stdout.is_empty());
    let said = String::from_utf8_lossy(&out.stderr);
    let hint = format!("stdout is empty; stderr has 12 bytes: corral task logs {quiet} 0 --stderr");
    assert!(said.contains(&hint), "{said}");
    // `--both`: the two streams line by line, in the order the task wrote them (a
    // line stdout left open when stderr wrote is ended there); the pauses keep
    // the order certain (writes a moment apart may be read either way).
    let script =
        "echo one; sleep 0.3; echo two >&2; sleep 0.3; printf half; sleep 0.3; echo three >&2; sleep 0.3; echo ' done'";
    let mixed = c.submit(&["--pool", "cpu"], &["sh", "-c", script]);
    c.wait_job(mixed, MINUTE);
    let out = c.corral(&["task", "logs", &mixed.to_string(), "0", "--both"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        shown,
        "out| one\nerr| two\nout| half\nerr| three\nout|  done\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.corral(&["task", "logs", &mixed.to_string(), "0", "--both", "--stderr"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("--stderr") && said.contains("--both"), "{said}");
    // Every task's output at once, each line with its task.
    let array = c.submit(&["--pool", "cpu", "--array", "1-3"], &["sh", "-c", "echo a{index}; echo b{index}"]);
    c.wait_job(array, MINUTE);
    let out = c.corral(&["job", "logs", &array.to_string()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1: a1\n1: b1\n2: a2\n2: b2\n3: a3\n3: b3\n");
    let json = c.json(&["job", "logs", &array.to_string()]);
    assert_eq!((json[2]["task"].as_str(), json[2]["bytes"].as_u64()), (Some("3"), Some(6)), "{json}");
}

#[test]
fn priorities_run_first() {
    let mut c = Cluster::start(&[]);
    c.json(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    let order = c.dir.path().join("order");
    let script = format!("echo $CORRAL_JOB_ID >> {}", order.display());
    let low = c.submit(&["--pool", "cpu", "--array", "1-3", "--priority", "-5"], &["sh", "-c", &script]);
    let high = c.submit(&["--pool", "cpu", "--array", "1-3", "--priority", "5"], &["sh", "-c", &script]);
    c.agent("cpu", 1);
    c.wait_job(low, MINUTE);
    c.wait_job(high, MINUTE);
    let ran = std::fs::read_to_string(&order).unwrap();
    let expected = format!("{high}\n{high}\n{high}\n{low}\n{low}\n{low}\n");
    assert_eq!(ran, expected);
}

#[test]
fn bad_input_is_refused_with_the_field_and_changes_nothing() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let before = c.json(&["pool", "list"]);

    let cases: &[(&[&str], &str)] = &[
        (&["pool", "create", "x", "--slots-per-node", "0"], "--slots-per-node"),
        (&["pool", "create", "Bad Name", "--slots-per-node", "1"], "not a valid pool name"),
        (&["pool", "create", "cpu", "--slots-per-node", "1"], "pool 'cpu' already exists"),
        (&["pool", "create", "l", "--slots-per-node", "1", "--provider", "local"], "--nodes"),
        (&["pool", "resize", "cpu", "--nodes", "3"], "static provider"),
        (&["pool", "show", "nope"], "pool 'nope' does not exist"),
        (&["job", "submit", "--pool", "cpu", "--array", "5-1", "--", "true"], "reversed"),
        (&["job", "submit", "--pool", "cpu", "--array", "1..5", "--", "true"], "expected A-B"),
        (&["job", "submit", "--pool", "cpu", "--max-retries", "-1", "--", "true"], "--max-retries"),
        (&["job", "submit", "--pool", "cpu", "--timeout", "soon", "--", "true"], "--timeout"),
        (&["job", "submit", "--pool", "cpu", "--priority", "5000", "--", "true"], "--priority"),
        (&["job", "submit", "--pool", "cpu", "--env", "NOVALUE", "--", "true"], "K=V"),
        (&["job", "submit", "--pool", "cpu"], "CMD"),
        (&["job", "submit", "--pool", "cpu", "--", ""], "program name is empty"),
        (
            &["job", "submit", "--pool", "cpu", "--", "echo hi; echo there"],
            "invalid command: 'echo hi; echo there' is one argument holding spaces, and a command runs directly, not in a shell: write `-- sh -c 'echo hi; echo there'`",
        ),
        (&["job", "submit", "--pool", "nope", "--", "true"], "pool 'nope' does not exist"),
        (&["job", "submit", "--pool", "cpu", "--slots", "4", "--", "true"], "task.slots"),
        (&["job", "show", "999"], "job '999' does not exist"),
        (&["job", "cancel", "999"], "job '999' does not exist"),
        (&["task", "list", "999"], "job '999' does not exist"),
        (&["node", "show", "banana"], "not a node id"),
        (&["node", "drain", "n-999"], "node 'n-999' does not exist"),
    ];
    for (args, expected) in cases {
        let err = c.fails(args);
        assert!(err.contains(expected), "corral {args:?}: expected '{expected}' in: {err}");
    }
    let job = c.submit(&["--pool", "cpu", "--array", "0-2"], &["true"]);
    let err = c.fails(&["task", "show", &job.to_string(), "9"]);
    assert!(err.contains("not 9"), "{err}");
    c.wait_job(job, MINUTE);

    // Nothing changed but the one good job.
    assert_eq!(c.json(&["pool", "list"]).as_array().unwrap().len(), before.as_array().unwrap().len());
    assert_eq!(c.json(&["job", "list"]).as_array().unwrap().len(), 1);

    // An agent without a token is refused, says where to find one, and exits.
    let err = c.agent_refused(&c.url, "cpu", &[]);
    assert!(err.contains("no token: pass --token-file or set CORRAL_TOKEN"), "{err}");

    // An agent for a pool that does not exist is refused and exits.
    let admin = c.admin_token_file();
    let err = c.agent_refused(&c.url, "nope", &[("CORRAL_TOKEN_FILE", admin.to_str().unwrap())]);
    assert!(err.contains("pool 'nope' does not exist"), "{err}");
    let out = std::process::Command::new(corral_tests::bin("corral-agent"))
        .args(["--coordinator", &c.url, "--pool", "cpu", "--slots", "0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--slots"));

    // The coordinator is unreachable: the CLI says so and what to do.
    let err = fails_at("http://127.0.0.1:1", &["job", "list"]);
    assert!(err.contains("cannot reach the coordinator") && err.contains("corral up"), "{err}");
    assert!(c.coordinator_log().contains("coordinator listening"));
}

/// Runs the CLI against `url`, expecting the error exit status; returns stderr.
fn fails_at(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(corral_tests::bin("corral"))
        .arg("--coordinator")
        .arg(url)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_finished_job_is_deleted_with_everything_of_it_by_hand_or_after_retain() {
    let mut c = Cluster::start(&["--retain", "3s"]);
    c.static_pool("cpu", 1, 1);
    let running = c.submit(&["--pool", "cpu"], &["sleep", "30"]);
    let err = c.fails(&["job", "delete", &running.to_string()]);
    assert!(err.contains(&format!("job {running} is active; cancel it first")), "{err}");
    c.json(&["job", "cancel", &running.to_string()]);
    let job = c.submit(&["--pool", "cpu", "--outputs", "out.txt"], &["sh", "-c", "echo printed; echo kept > out.txt"]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    assert_eq!(c.logs(job, 0, false), "printed\n");
    assert_eq!(c.json(&["file", "ls", &format!("jobs/{job}/")]).as_array().map(Vec::len), Some(1));
    // By hand: gone at once, with its logs, outputs and events.
    c.json(&["job", "delete", &job.to_string()]);
    let err = c.fails(&["job", "show", &job.to_string()]);
    assert!(err.contains(&format!("job '{job}' does not exist")), "{err}");
    assert!(!c.data_dir().join("logs").join(job.to_string()).exists(), "its logs are gone");
    wait_until(MINUTE, "its outputs to be deleted", || {
        c.json(&["file", "ls", &format!("jobs/{job}/")]).as_array().is_some_and(Vec::is_empty)
    });
    let out = c.corral(&["-o", "json", "events", "--job", &job.to_string()]);
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "only the deletion is left in the feed: {events:?}");
    assert_eq!(events[0]["state"], "deleted");
    // By itself: the cancelled job goes once it has been finished for --retain.
    wait_until(MINUTE, "retention to delete the cancelled job", || {
        c.json(&["job", "list"]).as_array().is_some_and(Vec::is_empty)
    });
    // Survives a restart: nothing comes back.
    c.kill_coordinator();
    c.restart_coordinator();
    assert_eq!(c.json(&["job", "list"]).as_array().map(Vec::len), Some(0));
}

#[test]
fn a_listing_piped_into_a_reader_that_stops_early_ends_quietly() {
    use std::io::Read;
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    let job = c.submit(&["--pool", "cpu", "--array", "1-300"], &["true"]);
    c.wait_job(job, MINUTE);
    let mut events = std::process::Command::new(corral_tests::bin("corral"))
        .env_remove("CORRAL_CA_CERT")
        .env("CORRAL_TOKEN_FILE", c.admin_token_file())
        .args(["--coordinator", &c.url, "-o", "json", "events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    events.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reader is gone (as `| head -1` would be).
    let out = events.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

/// A job that names no pool runs on `CORRAL_POOL`, else on the only pool there is;
/// with none, or several, the error says what to do.
#[test]
fn a_job_that_names_no_pool_runs_on_corral_pool_or_the_only_one() {
    let mut c = Cluster::start(&[]);
    let err = c.fails(&["job", "submit", "--", "true"]);
    assert!(err.contains("there is no pool yet") && err.contains("corral pool create"), "{err}");
    c.static_pool("cpu", 1, 1);
    let job = c.json(&["job", "submit", "--", "true"])["job_id"].as_u64().unwrap();
    assert_eq!(c.job(job)["pool"], "cpu");
    assert_eq!(c.job(job)["name"], "true", "named after its command, having no --name");
    c.json(&["pool", "create", "gpu", "--slots-per-node", "1"]);
    let err = c.fails(&["job", "submit", "--", "true"]);
    assert!(err.contains("say which pool") && err.contains("cpu, gpu") && err.contains("CORRAL_POOL"), "{err}");
    let with_env = std::process::Command::new(corral_tests::bin("corral"))
        .env("CORRAL_TOKEN", c.admin_token())
        .env("CORRAL_POOL", "gpu")
        .args(["--coordinator", &c.url, "-o", "json", "job", "submit", "--", "true"])
        .output()
        .unwrap();
    assert!(with_env.status.success(), "{}", String::from_utf8_lossy(&with_env.stderr));
    let job: serde_json::Value = serde_json::from_slice(&with_env.stdout).unwrap();
    assert_eq!(c.job(job["job_id"].as_u64().unwrap())["pool"], "gpu");
}

/// `job list` filters by state (the default: active, and ended in the last hour),
/// owner, pool and name, and `--limit N` shows the newest N first.
#[test]
fn job_list_filters_as_squeue_does() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    let done = c.submit(&["--pool", "cpu", "--name", "render-a"], &["true"]);
    let failed = c.submit(&["--pool", "cpu", "--name", "other"], &["false"]);
    c.wait_job(done, MINUTE);
    c.wait_job(failed, MINUTE);
    let running = c.submit(&["--pool", "cpu", "--name", "render-b"], &["sleep", "30"]);
    let ids = |args: &[&str]| -> Vec<u64> {
        let mut all = vec!["job", "list"];
        all.extend_from_slice(args);
        c.json(&all).as_array().unwrap().iter().map(|j| j["id"].as_u64().unwrap()).collect()
    };
    assert_eq!(ids(&[]), [done, failed, running], "active, and ended within the hour");
    assert_eq!(ids(&["--state", "finished"]), [done, failed]);
    assert_eq!(ids(&["--state", "active"]), [running]);
    assert_eq!(ids(&["--state", "failed"]), [failed]);
    assert_eq!(ids(&["--name", "render-*"]), [done, running]);
    assert_eq!(ids(&["--limit", "2"]), [running, failed], "the newest first");
    assert_eq!(ids(&["--all", "--owner", "admin"]), [done, failed, running]);
    assert_eq!(ids(&["--mine", "--pool", "cpu"]), [done, failed, running]);
    assert!(ids(&["--owner", "someone-else"]).is_empty());
    let err = c.fails(&["job", "list", "--state", "done"]);
    assert!(err.contains("invalid --state: 'done'"), "{err}");
    let table = String::from_utf8_lossy(&c.corral(&["job", "list"]).stdout).into_owned();
    assert!(table.lines().next().unwrap_or_default().contains("DURATION"), "{table}");
    // squeue's view: every running task of every job, with its node and start.
    wait_until(MINUTE, "render-b to run", || c.job(running)["counts"]["running"] == 1);
    let now = c.json(&["task", "list", "--running"]);
    assert_eq!(now.as_array().map(Vec::len), Some(1), "{now}");
    assert_eq!((now[0]["job_id"].as_u64(), now[0]["node_id"].is_string()), (Some(running), true), "{now}");
    assert!(now[0]["started_at_ms"].as_u64() > Some(0), "{now}");
    let table = String::from_utf8_lossy(&c.corral(&["task", "list", "--running"]).stdout).into_owned();
    assert!(table.starts_with("JOB") && table.contains("ELAPSED"), "{table}");
    let err = c.fails(&["task", "list"]);
    assert!(err.contains("give a job, or --running"), "{err}");
    c.json(&["job", "cancel", &running.to_string()]);
}

/// `job watch` without a terminal (a CI log, a pipe) prints a plain progress line
/// every few seconds, each within 80 columns, and the outcome at the end.
#[test]
fn job_watch_without_a_terminal_prints_progress_lines() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let job = c.submit(&["--pool", "cpu", "--array", "1-6"], &["sleep", "1.5"]);
    let out = c.corral(&["job", "watch", &job.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = said.lines().filter(|l| l.starts_with(&format!("job {job}: "))).collect();
    assert!(!lines.is_empty(), "no progress line: {said}");
    assert!(lines.iter().all(|l| l.chars().count() <= 80 && l.contains("/6 done")), "{lines:?}");
    assert!(!said.contains('\u{1b}'), "no terminal escapes in a pipe: {said:?}");
    // Nor in the coordinator's and the agent's logs, which go to files here.
    assert!(!c.coordinator_log().contains('\u{1b}') && !c.agent_log(0).contains('\u{1b}'), "colours in a log file");
}
