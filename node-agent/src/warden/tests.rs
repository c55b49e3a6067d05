//! The warden against real processes: groups die with the agent, leftovers
//! of an earlier agent are killed, unrelated groups are left alone.

use super::*;
use std::time::{Duration, Instant};

fn alive(pid: libc::pid_t) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
}

fn spawn_group() -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh")
        .args(["-c", "sleep 300 & sleep 300 & wait"])
        .env("CORRAL_JOB_ID", "1")
        .process_group(0)
        .spawn()
        .unwrap()
}

#[test]
fn a_recorded_group_left_behind_is_killed_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("groups")).unwrap();
    let mut child = spawn_group();
    let pgid = child.id() as libc::pid_t;
    std::fs::write(dir.path().join("groups").join(pgid.to_string()), leader_start_time(pgid).unwrap()).unwrap();
    // A record of a group that no longer exists is only forgotten.
    std::fs::write(dir.path().join("groups").join("999999"), "1").unwrap();
    assert_eq!(kill_leftovers(dir.path()), 1);
    child.wait().unwrap();
    assert_eq!(std::fs::read_dir(dir.path().join("groups")).unwrap().count(), 0);
}

#[test]
fn the_journal_names_the_groups_still_live_and_the_next_start_kills_them() {
    let dir = tempfile::tempdir().unwrap();
    let warden = Warden::start(dir.path()).unwrap();
    let (mut left, mut ended) = (spawn_group(), spawn_group());
    let (left_pgid, ended_pgid) = (left.id() as libc::pid_t, ended.id() as libc::pid_t);
    warden.watch(left_pgid);
    warden.watch(ended_pgid);
    ended.kill().unwrap();
    ended.wait().unwrap();
    warden.release(ended_pgid);
    // Compacting keeps the live group and drops the ended one.
    {
        let mut inner = warden.lock();
        let Inner { journal, live, .. } = &mut *inner;
        journal.compact(live);
    }
    // The agent and its warden die without a word; a torn line is skipped.
    std::mem::forget(warden);
    let journal = dir.path().join(JOURNAL);
    let mut text = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(replay(&text).into_iter().collect::<Vec<_>>(), vec![left_pgid], "{text}");
    text.push_str("+12");
    std::fs::write(&journal, text).unwrap();
    assert_eq!(kill_leftovers(dir.path()), 1);
    left.wait().unwrap();
    assert!(!journal.exists(), "the journal is forgotten once read");
}

#[test]
fn a_group_whose_leader_was_replaced_by_a_stranger_is_spared() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("groups")).unwrap();
    let mut stranger = std::process::Command::new("sleep").arg("300").spawn().unwrap();
    let pid = stranger.id() as libc::pid_t;
    // Recorded with another start time, and not a group of tasks.
    std::fs::write(dir.path().join("groups").join(pid.to_string()), "1").unwrap();
    assert_eq!(kill_leftovers(dir.path()), 0);
    assert!(alive(pid));
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

/// Every live process of group `pgid`.
fn members(pgid: libc::pid_t) -> Vec<libc::pid_t> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok()))
        .filter(|pid| group_of(*pid) == Some(pgid) && alive(*pid))
        .collect()
}

#[test]
fn the_warden_kills_watched_groups_when_its_agent_dies() {
    use std::io::BufRead;
    // The "agent" is this test binary running the test below: it starts a
    // warden and a task group of three processes, and is then SIGKILLed.
    let dir = tempfile::tempdir().unwrap();
    let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "warden::tests::agent_for_the_warden_test", "--nocapture", "--include-ignored"])
        .env("WARDEN_TEST_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(agent.stdout.take().unwrap()).lines().map_while(Result::ok);
    let mut said = |key: &str| -> libc::pid_t {
        lines
            .find_map(|l| l.strip_prefix(key).map(|p| p.trim().parse().unwrap()))
            .expect("the agent never said its task groups")
    };
    let unwatched = said("UNWATCHED=");
    let pgid = said("PGID=");
    let deadline = Instant::now() + Duration::from_secs(5);
    while members(pgid).len() < 3 || members(unwatched).len() < 3 {
        assert!(Instant::now() < deadline, "the task group never had its three processes");
        std::thread::sleep(Duration::from_millis(10));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !members(pgid).is_empty() || !members(unwatched).is_empty() {
        let left = (members(pgid), members(unwatched));
        assert!(Instant::now() < deadline, "task processes outlived their agent by 5 s: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The other half of the test above; does nothing when run by itself. Its
/// children are never waited for: it is killed, and they with it.
#[test]
#[ignore]
#[allow(clippy::zombie_processes)]
fn agent_for_the_warden_test() {
    let Some(dir) = std::env::var_os("WARDEN_TEST_DIR") else { return };
    let warden = Warden::start(Path::new(&dir)).unwrap();
    let child = spawn_group();
    let pgid = child.id() as libc::pid_t;
    warden.watch(pgid);
    // A second group is only marked, never watched: as if the agent died the
    // instant after spawning it.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let unwatched = rt.block_on(async {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "sleep 300 & sleep 300 & wait"]).process_group(0);
        warden.mark(&mut cmd);
        cmd.spawn().unwrap().id().unwrap()
    });
    println!("UNWATCHED={unwatched}");
    println!("PGID={pgid}");
    std::thread::sleep(Duration::from_secs(60));
}
