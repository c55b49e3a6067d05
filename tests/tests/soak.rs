//! A fault soak: real work while a seeded random schedule kills the coordinator
//! and agents, and freezes agents past the heartbeat timeout. Whatever happens,
//! every task succeeds exactly once in the record and in the event feed, the feed
//! has no gap, and no task process is left.
//!
//! The seed is printed; `SOAK_SEED=N cargo test --test soak` replays a schedule.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use corral_tests::{processes_with, wait_until, Cluster, Rng};

const GRAPH: &str = "
tasks:
  - id: prep
    command: [sh, -c, 'sleep 0.2; echo prep # MARK']
  - id: parts
    array: 1-40
    command: [sh, -c, 'sleep 0.3; echo part {index} # MARK']
    depends_on: [prep]
  - id: join
    command: [sh, -c, 'echo joined # MARK']
    depends_on: [parts]
";

#[test]
fn work_survives_a_random_schedule_of_kills_and_freezes() {
    let (mut rng, seed) = Rng::from_env();
    let marker = format!("soak-{}", std::process::id());
    let mut c = Cluster::start(&[]);
    let mut agents = c.static_pool("cpu", 3, 2);
    let array = c.submit(
        &["--pool", "cpu", "--array", "1-2000"],
        &["sh", "-c", &format!("echo task $CORRAL_TASK_INDEX # {marker}")],
    );
    let file = c.dir.path().join("graph.yaml");
    std::fs::write(&file, GRAPH.replace("MARK", &marker)).unwrap();
    let graph =
        c.json(&["job", "submit", "--pool", "cpu", "--file", file.to_str().unwrap()])["job_id"].as_u64().unwrap();

    let chaos_until = Instant::now() + Duration::from_secs(40);
    let mut actions = Vec::new();
    while Instant::now() < chaos_until {
        std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
        match rng.below(3) {
            0 => {
                actions.push("coordinator SIGKILL");
                c.kill_coordinator();
                std::thread::sleep(Duration::from_millis(rng.below(1000)));
                c.restart_coordinator();
            }
            1 => {
                let victim = rng.below(agents.len() as u64) as usize;
                actions.push("agent SIGKILL, replaced");
                c.signal(agents[victim], libc::SIGKILL);
                agents[victim] = c.agent("cpu", 2);
            }
            _ => {
                let victim = agents[rng.below(agents.len() as u64) as usize];
                actions.push("agent SIGSTOP past the heartbeat timeout");
                c.signal(victim, libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(2000 + rng.below(1000)));
                c.signal(victim, libc::SIGCONT);
            }
        }
    }
    eprintln!("soak seed {seed}: {} faults: {actions:?}", actions.len());

    for job in [array, graph] {
        let done = c.wait_job(job, Duration::from_secs(180));
        assert_eq!(done["state"], "completed", "seed {seed}: {done}");
        c.assert_each_succeeded_once(job);
    }
    // The feed: no gap in its ids, and each task's success in it exactly once.
    let out = c.corral(&["-o", "json", "events"]);
    assert!(out.status.success(), "seed {seed}: {}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "seed {seed}: the feed's ids have a gap");
    assert_eq!(ids.first(), Some(&1), "seed {seed}: the feed starts at 1");
    let mut succeeded: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e["kind"] == "task" && e["state"] == "succeeded") {
        *succeeded.entry((e["job"].as_u64().unwrap(), e["task"].as_u64().unwrap())).or_default() += 1;
    }
    let tasks = |job: u64| c.job(job)["tasks"].as_u64().unwrap();
    assert_eq!(succeeded.keys().filter(|(j, _)| *j == array).count() as u64, tasks(array), "seed {seed}");
    assert_eq!(succeeded.keys().filter(|(j, _)| *j == graph).count() as u64, tasks(graph), "seed {seed}");
    let twice: Vec<_> = succeeded.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "seed {seed}: tasks that succeeded more than once in the feed: {twice:?}");
    // Nothing of any attempt is still running, not even of the agents killed.
    wait_until(Duration::from_secs(5), "every task process to be gone", || processes_with(&marker).is_empty());
}
