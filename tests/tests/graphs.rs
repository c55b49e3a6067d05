//! Graph jobs from job files, end to end: tasks run only after what they depend on
//! succeeded, failures cancel what depends on them (saying why), and bad files are
//! refused with the line to fix.

use std::time::Duration;

use corral_tests::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

fn write(c: &Cluster, name: &str, text: &str) -> String {
    let path = c.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Each task appends "START id" and "END id" to `log`, sleeping between.
fn logging(log: &str) -> String {
    format!("[sh, -c, 'echo START $CORRAL_TASK_ID >> {log}; sleep 0.2; echo END $CORRAL_TASK_ID >> {log}']")
}

fn position(lines: &[&str], line: &str) -> usize {
    lines.iter().position(|l| *l == line).unwrap_or_else(|| panic!("'{line}' not in {lines:?}"))
}

#[test]
fn diamond_and_chain_run_in_dependency_order() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 2);
    let log = c.dir.path().join("order.log");
    let cmd = logging(log.to_str().unwrap());
    let file = write(
        &c,
        "diamond.yaml",
        &format!(
            "name: diamond\ntasks:\n  - id: top\n    command: {cmd}\n  - id: left\n    command: {cmd}\n    depends_on: [top]\n  - id: right\n    command: {cmd}\n    depends_on: [top]\n  - id: bottom\n    command: {cmd}\n    depends_on: [left, right]\n  - id: after\n    command: {cmd}\n    depends_on: [bottom]\n"
        ),
    );
    let job = c.json(&["job", "submit", "--pool", "cpu", "--file", &file])["job_id"].as_u64().unwrap();
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["kind"], "graph");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (before, after) in
        [("top", "left"), ("top", "right"), ("left", "bottom"), ("right", "bottom"), ("bottom", "after")]
    {
        assert!(
            position(&lines, &format!("END {before}")) < position(&lines, &format!("START {after}")),
            "{after} started before {before} ended: {lines:?}"
        );
    }
    // left and right ran side by side.
    assert!(
        position(&lines, "START right") < position(&lines, "END left")
            || position(&lines, "START left") < position(&lines, "END right")
    );
    c.assert_each_succeeded_once(job);
    let tasks = c.json(&["task", "list", &job.to_string()]);
    let names: Vec<&str> = tasks.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["top", "left", "right", "bottom", "after"]);
    assert_eq!(c.json(&["task", "show", &job.to_string(), "bottom"])["state"], "succeeded");
}

#[test]
fn fan_in_of_a_thousand_tasks_to_one() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 2);
    let out = c.dir.path().join("parts");
    std::fs::create_dir(&out).unwrap();
    let dir = out.to_str().unwrap();
    let file = write(
        &c,
        "fanin.json",
        &format!(
            r#"{{"tasks": [
  {{"id": "part", "array": "1-1000", "command": ["sh", "-c", "echo $CORRAL_TASK_INDEX > {dir}/$CORRAL_TASK_INDEX"]}},
  {{"id": "sum", "depends_on": ["part"], "command": ["sh", "-c", "cat {dir}/* | awk '{{s += $1}} END {{print s}}'"]}}
]}}"#
        ),
    );
    let job =
        c.json(&["job", "submit", "--pool", "cpu", "--file", &file, "--name", "fan-in"])["job_id"].as_u64().unwrap();
    let done = c.wait_job(job, Duration::from_secs(180));
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["succeeded"], 1001);
    assert_eq!(done["name"], "fan-in");
    // The sum ran once, after every part: 1 + 2 + ... + 1000.
    assert_eq!(c.logs(job, 1000, false), "500500\n");
    let sum = c.json(&["task", "show", &job.to_string(), "sum"]);
    assert_eq!(sum["attempts"].as_array().unwrap().len(), 1);
    let part = c.json(&["task", "show", &job.to_string(), "part[7]"]);
    assert_eq!(part["id"], 6);
}

#[test]
fn a_failure_cancels_what_depends_on_it_and_says_why() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    let file = write(
        &c,
        "fail.yaml",
        "tasks:\n  - id: fetch\n    command: [sh, -c, 'echo no network >&2; exit 3']\n    max_retries: 1\n  - id: independent\n    command: ['true']\n  - id: parse\n    command: ['true']\n    depends_on: [fetch]\n  - id: report\n    command: ['true']\n    depends_on: [parse, independent]\n",
    );
    let out = c.corral(&["job", "submit", "--pool", "cpu", "--file", &file, "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let job = c.json(&["job", "list"])[0]["id"].as_u64().unwrap();
    let done = c.job(job);
    assert_eq!(done["state"], "failed");
    assert_eq!(done["counts"]["failed"], 1);
    assert_eq!(done["counts"]["succeeded"], 1);
    assert_eq!(done["counts"]["cancelled"], 2);
    for name in ["parse", "report"] {
        let task = c.json(&["task", "show", &job.to_string(), name]);
        assert_eq!(task["state"], "cancelled");
        assert_eq!(task["reason"], "upstream_failed: task 'fetch' failed", "{task}");
        assert!(task["attempts"].as_array().unwrap().is_empty(), "{name} never ran");
    }
    assert_eq!(c.json(&["task", "show", &job.to_string(), "fetch"])["attempts"].as_array().unwrap().len(), 2);
    let table = String::from_utf8_lossy(&c.corral(&["task", "list", &job.to_string()]).stdout).into_owned();
    assert!(table.contains("cancelled (upstream_failed: task 'fetch' failed)"), "{table}");
}

#[test]
fn bad_job_files_are_refused_with_the_line() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let cases = [
        ("syntax.yaml", "tasks:\n  - id: a\n    command: [true\n", "line"),
        ("cycle.yaml", "tasks:\n  - id: a\n    command: ['true']\n    depends_on: [c]\n  - id: b\n    command: ['true']\n    depends_on: [a]\n  - id: c\n    command: ['true']\n    depends_on: [b]\n", "'a' at line 2, 'b' at line 5, 'c' at line 8"),
        ("unknown.yaml", "tasks:\n  - id: a\n    command: ['true']\n  - id: b\n    command: ['true']\n    depends_on: [ghost]\n", "task 'b' depends on 'ghost', which is not a task of this job"),
        ("self.yaml", "tasks:\n  - id: a\n    command: ['true']\n    depends_on: [a]\n", "task 'a' depends on itself"),
        ("range.yaml", "tasks:\n  - id: a\n    array: 1-5\n    command: ['true']\n  - id: b\n    command: ['true']\n    depends_on: ['a[4-9]']\n", "'a' has indices 1-5"),
        ("dup.json", "{\"tasks\": [{\"id\": \"a\", \"command\": [\"true\"]},\n {\"id\": \"a\", \"command\": [\"true\"]}]}", "'a' is used twice"),
        ("empty.yaml", "tasks: []\n", "no tasks"),
        ("nocmd.yaml", "tasks:\n  - id: a\n    command: []\n", "'a' at line 2"),
    ];
    for (name, text, expected) in cases {
        let file = write(&c, name, text);
        let err = c.fails(&["job", "submit", "--pool", "cpu", "--file", &file]);
        assert!(err.contains(expected), "{name}: expected '{expected}' in: {err}");
    }
    assert!(c.json(&["job", "list"]).as_array().unwrap().is_empty(), "nothing was submitted");
}

#[test]
fn a_graph_survives_a_coordinator_restart() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    let file = write(
        &c,
        "chain.yaml",
        "tasks:\n  - id: a\n    command: [sleep, '0.3']\n  - id: wide\n    array: 1-4\n    command: [sleep, '0.3']\n    depends_on: [a]\n  - id: z\n    command: [sh, -c, 'echo done']\n    depends_on: [wide]\n",
    );
    let job = c.json(&["job", "submit", "--pool", "cpu", "--file", &file])["job_id"].as_u64().unwrap();
    corral_tests::wait_until(MINUTE, "a to succeed", || c.job(job)["counts"]["succeeded"].as_u64() >= Some(1));
    c.restart_coordinator();
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    c.assert_each_succeeded_once(job);
    assert_eq!(c.logs(job, 5, false), "done\n");
}

#[test]
fn an_open_job_takes_thousands_of_tasks_in_one_streamed_add_then_closes() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 2);
    let job = c.json(&["job", "submit", "--pool", "cpu", "--open", "--name", "stream"])["job_id"].as_u64().unwrap();
    assert_eq!(c.job(job)["open"], true);
    let added = c.json(&["job", "add-tasks", &job.to_string(), "--id", "setup", "--", "sh", "-c", "echo ready"]);
    assert_eq!(added["first_index"], 0);
    corral_tests::wait_until(MINUTE, "setup to run", || c.job(job)["counts"]["succeeded"] == 1);
    assert_eq!(c.job(job)["state"], "active", "an open job waits for more tasks");

    // 5,000 separate tasks in one file: several messages on one stream, one commit.
    let mut text = String::from("tasks:\n");
    for i in 0..5000 {
        text.push_str(&format!("  - id: t{i}\n    command: ['true']\n    depends_on: [setup]\n"));
    }
    text.push_str("  - id: last\n    command: [sh, -c, 'echo all done']\n    depends_on: [\"t4999\"]\n");
    let file = write(&c, "more.yaml", &text);
    let added = c.json(&["job", "add-tasks", &job.to_string(), "--file", &file]);
    assert_eq!(added["tasks"], 5001);
    assert_eq!(added["first_index"], 1);

    let err = c.fails(&["job", "add-tasks", &job.to_string(), "--id", "t7", "--", "true"]);
    assert!(err.contains("'t7' is used twice"), "{err}");
    let err = c.fails(&["job", "add-tasks", &job.to_string(), "--id", "x", "--depends-on", "nope", "--", "true"]);
    assert!(err.contains("depends on 'nope'"), "{err}");

    corral_tests::wait_until(Duration::from_secs(240), "the tasks to run", || {
        c.job(job)["counts"]["succeeded"] == 5002
    });
    assert_eq!(c.job(job)["state"], "active");
    let closed = c.json(&["job", "close", &job.to_string()]);
    assert_eq!(closed["state"], "completed", "{closed}");
    assert_eq!(closed["tasks"], 5002);
    assert_eq!(c.logs(job, 5001, false), "all done\n");
    let err = c.fails(&["job", "add-tasks", &job.to_string(), "--id", "late", "--", "true"]);
    assert!(err.contains("not open"), "{err}");

    let array = c.submit(&["--pool", "cpu", "--array", "1-2"], &["true"]);
    let err = c.fails(&["job", "add-tasks", &array.to_string(), "--id", "more", "--", "true"]);
    assert!(err.contains("not open"), "{err}");
}
