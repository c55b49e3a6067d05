//! A seeded fault soak of three coordinators on one PostgreSQL database: for about a
//! minute the leader is SIGKILLed, paused past its lease or cut off from the
//! database, and agents are SIGKILLed, while an array, a graph and a 1 s schedule
//! run and a client follows the event feed. Afterwards every task succeeded exactly
//! once (in the record and in the feed), every schedule slot ran once with none
//! missing, the follower saw the whole feed with no gap and no repeat, no task
//! process is left, and the record shows no two leaders committing: the epoch
//! stamped on each event never goes down as event ids go up.
//!
//! `SOAK_SEED` replays a run (the seed is printed first, and in every failure);
//! `SOAK_SECS` sets how long faults are made (default 60).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use corral_tests::{processes_with, wait_until, Cluster, Rng};
use serde_json::Value;

const LEASE: Duration = Duration::from_secs(1);
const AGENTS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    PauseLeader,
    CutLeader,
    KillAgent,
}

#[test]
fn failovers_and_agent_deaths_under_load_lose_nothing_and_never_make_two_leaders() {
    let (mut rng, seed) = Rng::from_env();
    let secs = std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60u64);
    let mut c = Cluster::start_ha(3, &["--lease", "1s"]);
    let marker = format!("soak-{seed}");
    let mut agents = c.static_pool("cpu", AGENTS, 2);

    // A client following the feed from the start, through every failover.
    let follower = c.follow_events();

    let script = format!("echo {{index}}; sleep 0.2 # {marker}");
    let array = c.submit(&["--pool", "cpu", "--array", "1-600"], &["sh", "-c", &script]);
    let graph_file = c.dir.path().join("graph.yaml");
    let step = format!("[sh, -c, 'echo $CORRAL_TASK_ID; sleep 0.3 # {marker}']");
    std::fs::write(
        &graph_file,
        format!(
            "tasks:\n  - id: prep\n    command: {step}\n  - id: wide\n    array: 1-60\n    command: {step}\n    depends_on: [prep]\n  - id: mid\n    array: 1-30\n    command: {step}\n    depends_on: [wide]\n  - id: end\n    command: {step}\n    depends_on: [mid]\n"
        ),
    )
    .unwrap();
    let graph =
        c.json(&["job", "submit", "--pool", "cpu", "--file", graph_file.to_str().unwrap()])["job_id"].as_u64().unwrap();
    c.every_second("beat", "cpu");

    let context = |c: &Cluster, faults: &[(Duration, Fault, usize)]| {
        let logs: Vec<String> = (0..3).map(|i| c.member_log(i)).collect();
        let tails: Vec<String> = logs.iter().map(|l| l.lines().rev().take(15).collect::<Vec<_>>().join("\n")).collect();
        format!("seed {seed}; faults {faults:?}; logs (last lines, newest first): {tails:#?}")
    };
    let started = Instant::now();
    let mut faults = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        let leader = c.wait_for_leader();
        let fault = match rng.below(4) {
            0 => Fault::KillLeader,
            1 => Fault::PauseLeader,
            2 => Fault::CutLeader,
            _ => Fault::KillAgent,
        };
        let target = if fault == Fault::KillAgent { rng.below(AGENTS as u64) as usize } else { leader };
        faults.push((started.elapsed(), fault, target));
        match fault {
            Fault::KillLeader => {
                c.kill_member(leader);
                std::thread::sleep(rng.millis(200, 2000));
                c.start_member(leader);
            }
            Fault::PauseLeader => {
                c.signal_member(leader, libc::SIGSTOP);
                std::thread::sleep(LEASE + rng.millis(500, 2500));
                c.signal_member(leader, libc::SIGCONT);
            }
            Fault::CutLeader => {
                c.cut_member(leader);
                std::thread::sleep(LEASE + rng.millis(500, 2500));
                // Healed: it reaches the database again, as a standby.
                c.heal_member(leader);
            }
            Fault::KillAgent => {
                c.signal(agents[target], libc::SIGKILL);
                std::thread::sleep(rng.millis(100, 1000));
                agents[target] = c.agent_again(target, "cpu", 2);
            }
        }
        std::thread::sleep(rng.millis(1000, 3000));
    }
    eprintln!("faults made: {faults:?}");

    let finished = |job: u64| {
        let mut last = Value::Null;
        let done = Instant::now() + Duration::from_secs(240);
        while Instant::now() < done {
            last = c.job(job);
            if last["state"] != "active" {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        last
    };
    for job in [array, graph] {
        let done = finished(job);
        assert_eq!(done["state"], "completed", "job {job}: {done}\n{}", context(&c, &faults));
        c.assert_each_succeeded_once(job);
    }
    assert_eq!(c.logs(array, 321, false), "321\n");
    c.json(&["schedule", "pause", "beat"]);
    let slots = c.schedule_slots("beat");
    corral_tests::assert_each_slot_once(&slots);

    // The record: events numbered with no gap, each stamped with the epoch of the
    // leader that committed it, never going down.
    let epochs = c.event_epochs();
    let ids: Vec<u64> = epochs.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "the record has a gap; {}", context(&c, &faults));
    let stamped: Vec<u64> = epochs.iter().filter_map(|(_, e)| *e).collect();
    assert_eq!(stamped.len(), epochs.len(), "an event has no epoch");
    let went_down = stamped.windows(2).position(|w| w[1] < w[0]);
    assert!(went_down.is_none(), "an event of an older epoch after a newer one: {}", context(&c, &faults));
    let leaders: BTreeMap<u64, usize> = stamped.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(*e).or_default() += 1;
        m
    });
    eprintln!("events committed per epoch: {leaders:?}");
    let takeovers = faults.iter().filter(|(_, f, _)| *f != Fault::KillAgent).count();
    assert!(leaders.len() > takeovers.min(1), "no failover happened: {leaders:?}; {}", context(&c, &faults));

    // The follower saw the whole record, in order, once.
    let last = *ids.last().unwrap_or(&0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while follower.last_id() < Some(last) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let caught_up = follower.last_id() >= Some(last);
    let (seen, said) = follower.stop();
    let said: String = said.lines().rev().take(30).collect::<Vec<_>>().join("\n");
    assert!(
        caught_up,
        "the follower did not catch up to {last}; it said (newest first):\n{said}\n{}",
        context(&c, &faults)
    );
    let followed: Vec<u64> = seen.iter().filter_map(|e| e["id"].as_u64()).collect();
    assert_eq!(followed.get(..ids.len()), Some(&ids[..]), "the follower missed or repeated events");
    let mut succeeded: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for e in seen.iter().filter(|e| e["kind"] == "task" && e["state"] == "succeeded") {
        let key = (e["job"].as_u64().unwrap_or(0), e["task"].as_u64().unwrap_or(0));
        *succeeded.entry(key).or_default() += 1;
    }
    for job in [array, graph] {
        let tasks = c.attempts(job).len();
        let once = succeeded.iter().filter(|((j, _), n)| *j == job && **n == 1).count();
        assert_eq!(once, tasks, "job {job}: tasks that succeeded once in the feed");
    }
    assert!(succeeded.values().all(|n| *n == 1), "a task succeeded twice in the feed");

    // Nothing left running of the tasks.
    wait_until(Duration::from_secs(30), "no task process to be left", || processes_with(&marker).is_empty());
}
