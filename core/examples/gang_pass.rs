//! The scheduler's cost per pass with multi-node tasks waiting, against the same
//! queue without them (docs/BENCHMARKS.md, "Multi-node tasks").
//!
//! A pool of NODES (64) nodes x SLOTS (2), every slot busy, TASKS (100,000) one-node
//! tasks queued behind. Each pass, the oldest running task ends and the scheduler
//! runs once (`Core::schedule`, timed alone; a gang that started ends in its turn
//! too). Four queues: the tasks alone; with GANGS (1000) one-node jobs of a lower
//! priority waiting behind them (the control); with as many tasks of GANG_NODES (4)
//! nodes there instead (the walk must see that they may not hold); and with the
//! same gangs at a higher priority ahead of them (one holds and drains its nodes,
//! starts, and the next one holds: the pass walks the waiting gangs first; timed
//! until the last one started). Prints the median and the 99th percentile per pass.
//!
//! cargo run --release -p corral-core --features testing --example gang_pass

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use corral_core::model::*;
use corral_core::testing::*;
use corral_core::{Outbox, ToAgent};

fn var(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `passes` passes with `gangs` jobs of one task across `gang_nodes` nodes at
/// `gang_priority` (the tasks are at 0); returns each pass's time, and how many of
/// those jobs started.
fn run(gangs: u32, gang_nodes: u32, gang_priority: i32, passes: usize) -> (Vec<Duration>, usize) {
    let (nodes, slots, tasks) = (var("NODES", 64), var("SLOTS", 2), var("TASKS", 100_000));
    let mut env = Env::with_pool(Fill::Spread);
    for _ in 0..nodes {
        env.node(slots);
    }
    env.core.submit_job(env.now, job_spec("p", tasks, 0, 0), &mut env.out).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..gangs {
        let mut spec = job_spec("p", 1, gang_priority, 0);
        spec.task.nodes = gang_nodes;
        env.core.submit_job(env.now, spec, &mut env.out).unwrap_or_else(|e| panic!("{e}"));
    }
    // What runs, oldest first: each attempt's rank 0 node (a gang ends with it).
    let mut running: VecDeque<(NodeId, AttemptRef)> = VecDeque::new();
    let mut took = Vec::with_capacity(passes);
    let mut started = 0;
    let mut out = Outbox::default();
    for pass in 0..passes + 1 {
        if pass > 0 {
            let Some((node, attempt)) = running.pop_front() else { break };
            env.now += Duration::from_millis(1);
            env.core.on_task_results(env.now, &node, vec![result(attempt, Outcome::Succeeded, 1)], &mut out);
        }
        // (Timed only while a gang waits, when there are any.)
        let waiting = started < gangs as usize && gang_priority > 0;
        let t0 = Instant::now();
        env.core.schedule(env.now, &mut out);
        if pass > 0 && (waiting || gang_priority <= 0) {
            took.push(t0.elapsed());
        }
        for (node, msg) in std::mem::take(&mut out.agents) {
            if let ToAgent::Assign(a) = msg {
                if a.gang.as_ref().is_none_or(|g| g.rank == 0) {
                    started += usize::from(a.attempt.task.job.0 > 1);
                    running.push_back((node, a.attempt));
                }
            }
        }
        out = Outbox::default();
    }
    (took, started)
}

fn show(what: &str, (mut took, started): (Vec<Duration>, usize)) {
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    let (median, p99) = (us(at(0.5)), us(at(0.99)));
    println!("{what}: {} passes, median {median:.1} µs, p99 {p99:.1} µs, {started} of those jobs started", took.len());
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let passes = var("PASSES", 20_000) as usize;
    let (gangs, nodes) = (var("GANGS", 1000), var("GANG_NODES", 4));
    for round in 0..var("ROUNDS", 3) {
        println!("round {}", round + 1);
        show("  tasks alone", run(0, nodes, 0, passes));
        show(&format!("  {gangs} one-node jobs waiting behind (lower priority)"), run(gangs, 1, -1, passes));
        show(&format!("  {gangs} gangs of {nodes} waiting behind (lower priority)"), run(gangs, nodes, -1, passes));
        show(&format!("  {gangs} gangs of {nodes} waiting ahead (higher priority)"), run(gangs, nodes, 1, passes));
    }
}
