//! Checkpoints, end to end: what a failed attempt left is in place for the next one,
//! and a long task whose node is killed resumes on another node from its last
//! periodic checkpoint instead of from zero.

use std::time::Duration;

use corral_tests::{wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn the_next_attempt_starts_from_what_the_last_one_saved() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    // The first attempt writes a directory and fails; the second finds it and succeeds.
    let script = "if [ \"$CORRAL_CHECKPOINT_RESTORED\" = 1 ]; then cat state/a state/sub/b; else mkdir -p state/sub; echo one > state/a; echo two > state/sub/b; exit 1; fi";
    let job = c.submit(&["--pool", "cpu", "--max-retries", "1", "--checkpoint", "state"], &["sh", "-c", script]);
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}\n{}", c.agent_log(0));
    assert_eq!(c.logs(job, 0, false), "one\ntwo\n");
    let task = c.json(&["task", "show", &job.to_string(), "0"]);
    assert_eq!(task["attempts"].as_array().unwrap().len(), 2, "{task}");
    // A task with no checkpoint written yet starts with nothing restored.
    let fresh = c.submit(
        &["--pool", "cpu", "--checkpoint", "none.txt"],
        &["sh", "-c", "echo $CORRAL_CHECKPOINT_RESTORED $CORRAL_CHECKPOINT"],
    );
    assert_eq!(c.wait_job(fresh, MINUTE)["state"], "completed");
    assert_eq!(c.logs(fresh, 0, false), "0 none.txt\n");
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--checkpoint", "../up", "--", "true"]);
    assert!(err.contains("invalid checkpoint"), "{err}");
}

#[test]
fn a_task_whose_node_is_killed_resumes_from_its_checkpoint_elsewhere() {
    let mut c = Cluster::start(&[]);
    let out = c.corral(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = c.agent("cpu", 1);
    c.wait_nodes("cpu", "idle", 1);
    let progress = c.dir.path().join("progress");
    // Counts to 60, a step every 0.1 s, keeping the count in `state` (written
    // atomically) and telling the test how far it got.
    let script = format!(
        "n=0; [ \"$CORRAL_CHECKPOINT_RESTORED\" = 1 ] && n=$(cat state); echo start $n; while [ $n -lt 60 ]; do n=$((n+1)); echo $n > state.new; mv state.new state; echo $n > {p}.new; mv {p}.new {p}; sleep 0.1; done; echo done $n",
        p = progress.display()
    );
    let job =
        c.submit(&["--pool", "cpu", "--checkpoint", "state", "--checkpoint-interval", "1s"], &["sh", "-c", &script]);
    let read = || std::fs::read_to_string(&progress).ok().and_then(|t| t.trim().parse::<u32>().ok()).unwrap_or(0);
    wait_until(MINUTE, "the task to count past 25", || read() >= 25);
    c.signal(first, libc::SIGKILL);
    let at_kill = read();
    c.agent("cpu", 1);
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    let out = c.logs(job, 0, false);
    let start: u32 = out.lines().next().unwrap().strip_prefix("start ").unwrap().parse().unwrap();
    assert!(start >= 10, "the second attempt resumed from a checkpoint of at least a second's work: {out}");
    assert!(start <= at_kill + 2, "it resumed from what the first attempt had done ({at_kill}): {out}");
    assert!(out.ends_with("done 60\n"), "{out}");
    let task = c.json(&["task", "show", &job.to_string(), "0"]);
    let outcomes: Vec<&str> =
        task["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["node_lost", "succeeded"], "{task}");
}

/// A checkpoint archive with an entry that would land outside the task's directory
/// (found in the store, however it got there) is not half unpacked: the attempt
/// starts in a clean directory with `CORRAL_CHECKPOINT_RESTORED=0`, and its record
/// says why.
#[test]
fn a_refused_checkpoint_leaves_a_clean_directory_and_says_so() {
    let mut c = Cluster::start(&[]);
    let out = c.corral(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let outside = c.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let job = c.submit(
        &["--pool", "cpu", "--checkpoint", "state"],
        &["sh", "-c", "echo restored=$CORRAL_CHECKPOINT_RESTORED; ls -A | sort | tr '\\n' ' '"],
    );
    // Planted where the store keeps the task's checkpoint, before any node runs it.
    let archive = c.data_dir().join(format!("objects/jobs/{job}/.checkpoints/0.tar"));
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    let mut add = |path: &str, kind: tar::EntryType, link: Option<&std::path::Path>, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        tar.append_data(&mut header, path, data).unwrap();
    };
    add("state/first", tar::EntryType::Regular, None, b"accepted");
    add("state/out", tar::EntryType::Symlink, Some(&outside), b"");
    add("state/out/evil", tar::EntryType::Regular, None, b"planted");
    tar.into_inner().unwrap().sync_all().unwrap();
    c.agent("cpu", 1);
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(c.logs(job, 0, false), "restored=0\nstderr.txt stdout.txt ");
    assert!(!outside.join("evil").exists());
    let task = c.json(&["task", "show", &job.to_string(), "0"]);
    let message = task["attempts"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("checkpoint not restored, started from scratch"), "{task}");
}

/// A socket in the checkpoint is left out of the archive (with a note on the
/// attempt) instead of failing every save: the rest of the state survives a retry.
#[test]
fn what_a_checkpoint_cannot_archive_is_left_out_and_the_rest_survives() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let script = "if [ \"$CORRAL_CHECKPOINT_RESTORED\" = 1 ]; then cat state/step; ls state; else mkdir state; echo 41 > state/step; python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind('state/sock')\"; exit 1; fi";
    let job = c.submit(&["--pool", "cpu", "--max-retries", "1", "--checkpoint", "state"], &["sh", "-c", script]);
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}\n{}", c.agent_log(0));
    assert_eq!(c.logs(job, 0, false), "41\nstep\n");
    let task = c.json(&["task", "show", &job.to_string(), "0"]);
    let message = task["attempts"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("left out state/sock (a socket)"), "{task}");
}
