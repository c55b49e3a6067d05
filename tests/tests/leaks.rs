//! Nothing outlives what it belongs to: a task's processes die with their agent,
//! however the agent dies.

use std::time::Duration;

use corral_tests::{alive, processes_with, wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

/// A task that forks two children and waits, all three findable by `marker`.
fn forking_task(marker: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), format!("sleep {marker} & sleep {marker} & wait # {marker}")]
}

/// A sleep length no other test uses, so its processes can be found.
fn marker(test: u32) -> String {
    format!("{}.{}{test}", 7000 + test, std::process::id())
}

/// The warden an agent forked (see `node-agent/src/warden.rs`).
fn warden_of(agent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (name, rest) = stat.rsplit_once(')')?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (name.ends_with("(corral-warden") && ppid == agent).then_some(pid)
    })
}

#[test]
fn a_killed_agents_tasks_die_with_it_children_included() {
    let mut c = Cluster::start(&[]);
    let pids = c.static_pool("cpu", 1, 2);
    let marker = marker(1);
    let task = forking_task(&marker);
    let args: Vec<&str> = task.iter().map(String::as_str).collect();
    let job = c.submit(&["--pool", "cpu", "--array", "1-2"], &args);
    wait_until(MINUTE, "both tasks and their children to run", || processes_with(&marker).len() == 6);
    c.signal(pids[0], libc::SIGKILL);
    wait_until(Duration::from_secs(5), "the killed agent's task processes to be gone", || {
        processes_with(&marker).is_empty()
    });
    let job = c.job(job);
    assert_eq!(job["state"], "active", "{job}");
}

#[test]
fn an_agent_started_on_a_work_dir_kills_what_the_last_one_left_there() {
    let mut c = Cluster::start(&[]);
    let pids = c.static_pool("cpu", 1, 2);
    let marker = marker(2);
    let task = forking_task(&marker);
    let args: Vec<&str> = task.iter().map(String::as_str).collect();
    c.submit(&["--pool", "cpu", "--array", "1-2"], &args);
    wait_until(MINUTE, "both tasks and their children to run", || processes_with(&marker).len() == 6);
    // Agent and warden die together (as when a whole session is killed): the tasks
    // are left running...
    let warden = warden_of(pids[0]).expect("the agent runs a warden");
    c.signal(warden, libc::SIGKILL);
    c.signal(pids[0], libc::SIGKILL);
    let left = processes_with(&marker);
    std::thread::sleep(Duration::from_millis(500));
    assert!(left.iter().all(|p| alive(*p)), "the tasks survived agent and warden");
    // ...until an agent starts on that work dir again, before it takes new work
    // (which starts the same commands again: only the old processes are watched).
    c.agent_again(0, "cpu", 2);
    wait_until(Duration::from_secs(10), "the new agent to kill the old tasks", || !left.iter().any(|p| alive(*p)));
    let log = c.agent_log(0);
    assert!(log.contains("killed task processes an earlier agent"), "{log}");
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[test]
fn a_task_printing_2_gib_neither_bloats_nor_loses_its_node_and_its_log_is_capped() {
    const KEPT: u64 = 256 << 20;
    // Heartbeats every 200 ms, lost after 1.5 s of silence (the harness's).
    let mut c = Cluster::start(&["--max-output", "256MiB"]);
    let pids = c.static_pool("cpu", 1, 1);
    let job = c.submit(&["--pool", "cpu"], &["sh", "-c", "head -c 2147483648 /dev/zero | tr '\\0' x; echo done >&2"]);
    let mut peak = 0;
    let deadline = std::time::Instant::now() + 3 * MINUTE;
    while c.job(job)["state"] == "active" {
        assert!(std::time::Instant::now() < deadline, "the job took over 3 minutes");
        peak = peak.max(rss(pids[0]));
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("agent peak RSS: {} MiB", peak >> 20);
    assert!(peak < 100 << 20, "the agent's RSS reached {} MiB", peak >> 20);
    let done = c.job(job);
    assert_eq!(done["state"], "completed", "{done}");
    // One attempt: the node was never declared lost.
    let attempts = c.assert_each_succeeded_once(job);
    assert_eq!(attempts[0].1.len(), 1, "{attempts:?}");
    assert!(c.nodes_in("cpu", "lost").is_empty());
    let note = attempts[0].1[0]["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(note, "stdout truncated to 256.0 MiB of 2.0 GiB", "{attempts:?}");
    // The stored log is the first 256 MiB, then the marker; stderr is whole.
    let read = |offset: u64| c.api(&format!("/api/jobs/{job}/tasks/0/log?offset={offset}"));
    let before = read(KEPT - 3);
    let text = before["text"].as_str().unwrap();
    assert!(text.starts_with("xxx\n[corral: stdout truncated here: kept the first 256.0 MiB of 2.0 GiB"), "{text:?}");
    assert_eq!(c.logs(job, 0, true), "done\n");
    // A job's own limit overrides the coordinator's.
    let small =
        c.submit(&["--pool", "cpu", "--max-output", "1KiB"], &["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' y"]);
    c.wait_job(small, MINUTE);
    let log = c.logs(small, 0, false);
    assert!(log.starts_with(&"y".repeat(1024)) && log[1024..].starts_with("\n[corral: stdout truncated here"), "{log}");
    assert_eq!(c.json(&["job", "show", &small.to_string()])["max_output_bytes"], 1024);
}
