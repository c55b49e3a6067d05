//! Nothing outlives what it belongs to: a task's processes die with their agent,
//! however the agent dies.

use std::time::Duration;

use corral_tests::{alive, processes_with, wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

/// A cluster of one agent with 2 slots running two tasks that each fork two
/// children, all six findable by the marker returned (a sleep length no other
/// test uses); also the agent's pid and the job.
fn forking_tasks(test: u32) -> (Cluster, u32, String, u64) {
    let mut c = Cluster::start(&[]);
    let agent = c.static_pool("cpu", 1, 2)[0];
    let marker = format!("{}.{}{test}", 7000 + test, std::process::id());
    let script = format!("sleep {marker} & sleep {marker} & wait # {marker}");
    let job = c.submit(&["--pool", "cpu", "--array", "1-2"], &["sh", "-c", &script]);
    wait_until(MINUTE, "both tasks and their children to run", || processes_with(&marker).len() == 6);
    (c, agent, marker, job)
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
    let (c, agent, marker, job) = forking_tasks(1);
    c.signal(agent, libc::SIGKILL);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !processes_with(&marker).is_empty() {
        if std::time::Instant::now() > deadline {
            let left: Vec<String> = processes_with(&marker)
                .iter()
                .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
                .collect();
            panic!("task processes outlived their agent by 5 s: {left:#?}\nagent log:\n{}", c.agent_log(0));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let job = c.job(job);
    assert_eq!(job["state"], "active", "{job}");
}

#[test]
fn an_agent_started_on_a_work_dir_kills_what_the_last_one_left_there() {
    let (mut c, agent, marker, _) = forking_tasks(2);
    // Agent and warden die together (as when a whole session is killed): the
    // tasks and their children are left running...
    let warden = warden_of(agent).expect("the agent runs a warden");
    c.signal(warden, libc::SIGKILL);
    c.signal(agent, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(500));
    let left = processes_with(&marker);
    assert!(left.len() >= 4, "the tasks' children survived agent and warden: {left:?}");
    // ...until an agent starts on that work dir again, before it takes new work
    // (which starts the same commands again: only the old processes are watched).
    c.agent_again(0, "cpu", 2);
    wait_until(Duration::from_secs(10), "the new agent to kill the old tasks", || !left.iter().any(|p| alive(*p)));
    let log = c.agent_log(0);
    assert!(log.contains("killed task processes an earlier agent"), "{log}");
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
        peak = peak.max(corral_tests::rss(pids[0]));
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

/// Fills the file system under `dir` (a small tmpfs) with one file.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let block = vec![7u8; 1 << 20];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    path
}

#[test]
fn on_a_full_disk_reads_answer_changes_fail_fast_and_it_recovers_by_itself() {
    let mut c = Cluster::start_on_small_disk(64, &[]);
    c.static_pool("cpu", 1, 1);
    let first = c.submit(&["--pool", "cpu"], &["true"]);
    assert_eq!(c.wait_job(first, MINUTE)["state"], "completed");
    let filler = fill(&c.data_dir());
    // The first change after the disk filled is taken on, and answered UNAVAILABLE
    // when it cannot be saved in time; it is kept, to be saved later.
    let started = std::time::Instant::now();
    let out = c.corral(&["job", "submit", "--pool", "cpu", "--", "echo", "kept"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("store cannot write"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "a submit took {:?} to fail", started.elapsed());
    // From then on: changes are refused at once, reads answer, health and metrics say so.
    let started = std::time::Instant::now();
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--", "echo", "refused"]);
    assert!(err.contains("store cannot write") && err.contains("nothing was changed"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(c.json(&["pool", "list"]).as_array().map(Vec::len), Some(1));
    let (_, metrics) = c.http_get("/metrics");
    assert!(metrics.contains("\ncorral_store_can_write 0"), "{metrics}");
    assert_eq!(c.health(), tonic_health::pb::health_check_response::ServingStatus::NotServing);
    // Space back: it recovers by itself, the kept job runs, the refused one never existed.
    std::fs::remove_file(filler).unwrap();
    wait_until(MINUTE, "the store to write again", || c.http_get("/metrics").1.contains("\ncorral_store_can_write 1"));
    assert_eq!(c.health(), tonic_health::pb::health_check_response::ServingStatus::Serving);
    let jobs = c.json(&["job", "list"]);
    assert_eq!(jobs.as_array().map(Vec::len), Some(2), "the refused job was never made: {jobs}");
    let kept = first + 1;
    assert_eq!(c.wait_job(kept, MINUTE)["state"], "completed");
    assert_eq!(c.logs(kept, 0, false), "kept\n");
    let again = c.submit(&["--pool", "cpu"], &["true"]);
    assert_eq!(c.wait_job(again, MINUTE)["state"], "completed");
}

/// Unmounts a tmpfs when dropped, however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

/// A log the disk has no room for is skipped (the state goes on), but never
/// silently: the attempt's message says how much is missing, and once there is room
/// the log ends with a marker saying so.
#[test]
fn output_the_disk_had_no_room_for_is_said_on_the_attempt_and_in_its_log() {
    let mut c = Cluster::start(&[]);
    let out = c.corral(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job = c.submit(&["--pool", "cpu"], &["sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x; echo"]);
    // The job's logs get a disk of their own with room for 8 KiB.
    let logs = c.data_dir().join("logs").join(job.to_string());
    std::fs::create_dir_all(&logs).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8k", "tmpfs"])
        .arg(&logs)
        .output()
        .expect("run mount");
    assert!(out.status.success(), "mounting a tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
    let _mounted = Mounted(logs.clone());
    c.agent("cpu", 1);
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    let task = c.json(&["task", "show", &job.to_string(), "0"]);
    let message = task["attempts"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("of stdout not stored") && message.contains("disk full"), "{task}");
    // Room again: the next commit writes the marker at the end of what is missing.
    std::fs::File::options().write(true).open(logs.join("0.1.stdout")).unwrap().set_len(0).unwrap();
    let next = c.submit(&["--pool", "cpu"], &["true"]);
    assert_eq!(c.wait_job(next, MINUTE)["state"], "completed");
    wait_until(MINUTE, "the marker in the log", || {
        std::fs::read(logs.join("0.1.stdout"))
            .is_ok_and(|log| String::from_utf8_lossy(&log).contains("of stdout is missing from this log"))
    });
    let shown = c.logs(job, 0, false);
    assert!(
        shown.ends_with("is missing from this log: the coordinator could not write it]\n"),
        "{}",
        &shown[shown.len().saturating_sub(200)..]
    );
}
