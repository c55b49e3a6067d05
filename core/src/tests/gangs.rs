//! Multi-node tasks: whole nodes all at once, holds without deadlock or
//! starvation, backfill only when it fits, and failure as the whole gang's.

use super::*;

/// A job of one task across `nodes` nodes, with `timeout`.
fn gang(nodes: u32, timeout: Option<Duration>) -> JobSpec {
    let mut spec = job_spec("p", 1, 0, 2);
    spec.task.nodes = nodes;
    spec.task.timeout = timeout;
    spec
}

/// A job of `tasks` tasks with `timeout`.
fn timed(tasks: u32, timeout: Option<Duration>) -> JobSpec {
    let mut spec = job_spec("p", tasks, 0, 0);
    spec.task.timeout = timeout;
    spec
}

/// Runs the scheduler; returns each assignment's node, attempt and rank (if any).
fn placed(env: &mut Env) -> Vec<(NodeId, AttemptRef, Option<u32>)> {
    env.assignments().into_iter().map(|(n, a)| (n, a.attempt, a.gang.map(|g| g.rank))).collect()
}

fn kills(out: &Outbox) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> =
        out.agents.iter().filter(|(_, m)| matches!(m, ToAgent::Kill(_))).map(|(n, _)| n.clone()).collect();
    nodes.sort();
    nodes
}

fn nodes(env: &mut Env, count: usize, slots: u32) -> Vec<NodeId> {
    (0..count).map(|_| env.node(slots)).collect()
}

#[test]
fn a_multi_node_task_takes_whole_nodes_at_once_with_its_ranks() {
    let mut env = Env::with_pool(Fill::Spread);
    let ns = nodes(&mut env, 3, 2);
    let job = env.submit_spec(gang(2, None));
    let got = placed(&mut env);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].2, got[1].2), (Some(0), Some(1)));
    assert_eq!(got[0].1, got[1].1, "one attempt on both");
    assert_ne!(got[0].0, got[1].0);
    for (node, _, _) in &got {
        assert_eq!(env.core.nodes[node].slots_used, 2, "{node} is taken whole");
    }
    let run = &env.core.running[&TaskKey { job, index: 0 }];
    assert_eq!(run.members.len(), 1);
    // The third node still takes one-node work.
    env.submit(1, 0, 0);
    let got = placed(&mut env);
    let free = ns.iter().find(|n| env.core.nodes[*n].running.len() == 1 && !run_is_on(&env, job, n)).cloned();
    assert_eq!(got.iter().map(|g| Some(g.0.clone())).collect::<Vec<_>>(), [free]);
}

fn run_is_on(env: &Env, job: JobId, node: &NodeId) -> bool {
    env.core.running.get(&TaskKey { job, index: 0 }).is_some_and(|r| r.is_on(node))
}

#[test]
fn a_gang_never_starts_on_some_of_its_nodes_and_the_nodes_it_holds_take_no_new_work() {
    let mut env = Env::with_pool(Fill::Spread);
    let ns = nodes(&mut env, 3, 1);
    // Two nodes busy with tasks of unknown length.
    env.submit(2, 0, 0);
    let busy = placed(&mut env);
    assert_eq!(busy.len(), 2);
    let g = env.submit_spec(gang(2, None));
    assert!(placed(&mut env).is_empty(), "one free node is not two");
    let hold = env.core.pools[&PoolName::parse("p", "p").unwrap()].gang.clone().unwrap();
    assert_eq!(hold.task, TaskKey { job: g, index: 0 });
    assert_eq!(hold.held.len(), 2);
    assert_eq!(hold.reservation_ms, None, "a held node runs a task without a timeout");
    // Later work, even with a timeout, does not take the held nodes: their end is unknown.
    env.submit_spec(timed(3, Some(Duration::from_secs(1))));
    let got = placed(&mut env);
    assert!(got.iter().all(|(n, _, _)| !hold.holds(n)), "{got:?}");
    // The held busy node's task ends: the gang starts there and on the free one.
    let held_busy = busy.iter().find(|(n, _, _)| hold.holds(n)).unwrap().clone();
    env.report(&held_busy.0, held_busy.1, Outcome::Succeeded);
    let got = placed(&mut env);
    let gang_nodes: Vec<&NodeId> = got.iter().filter(|(_, a, _)| a.task.job == g).map(|(n, _, _)| n).collect();
    assert_eq!(gang_nodes.len(), 2, "{got:?}");
    assert!(gang_nodes.iter().all(|n| hold.holds(n)));
    assert!(ns.iter().all(|n| env.core.nodes[n].slots_used <= 1));
}

#[test]
fn backfill_runs_a_task_on_a_held_node_only_when_its_timeout_ends_before_the_gang_can_start() {
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 2, 1);
    env.submit_spec(timed(1, Some(Duration::from_secs(60))));
    let first = placed(&mut env);
    let g = env.submit_spec(gang(2, None));
    assert!(placed(&mut env).is_empty());
    let hold = env.core.pools[&PoolName::parse("p", "p").unwrap()].gang.clone().unwrap();
    assert!(hold.reservation_ms.is_some(), "the busy node is free in 60 s at the latest");
    // 120 s does not fit before the gang; 30 s does.
    let long = env.submit_spec(timed(1, Some(Duration::from_secs(120))));
    assert!(placed(&mut env).is_empty());
    let short = env.submit_spec(timed(1, Some(Duration::from_secs(30))));
    let got = placed(&mut env);
    assert_eq!(got.iter().map(|(_, a, _)| a.task.job).collect::<Vec<_>>(), [short]);
    // The first task ends; the gang waits for the backfilled one, then starts.
    env.advance(Duration::from_secs(40));
    env.report(&first[0].0, first[0].1, Outcome::Succeeded);
    let got = placed(&mut env);
    assert!(got.iter().all(|(_, a, _)| a.task.job != long), "nothing jumps the gang: {got:?}");
    assert!(got.is_empty(), "{got:?}");
    env.report(
        &got_node(&env, short),
        AttemptRef { task: TaskKey { job: short, index: 0 }, attempt: 1 },
        Outcome::Succeeded,
    );
    let got = placed(&mut env);
    assert_eq!(got.iter().filter(|(_, a, _)| a.task.job == g).count(), 2, "{got:?}");
}

fn got_node(env: &Env, job: JobId) -> NodeId {
    env.core.running[&TaskKey { job, index: 0 }].node.clone()
}

#[test]
fn two_gangs_never_hold_parts_of_a_pool_against_each_other() {
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 3, 1);
    let singles = env.submit(3, 0, 0);
    let running = placed(&mut env);
    let (a, b) = (env.submit_spec(gang(2, None)), env.submit_spec(gang(2, None)));
    assert!(placed(&mut env).is_empty());
    // The nodes free one by one: only the first gang holds, so it starts, then the second.
    let mut started = Vec::new();
    for (node, attempt, _) in &running {
        env.report(node, *attempt, Outcome::Succeeded);
        for (_, at, rank) in placed(&mut env) {
            if rank == Some(0) {
                started.push(at.task.job);
            }
        }
    }
    assert_eq!(started, [a], "the first gang starts once two nodes are free");
    let hold = env.core.pools[&PoolName::parse("p", "p").unwrap()].gang.clone();
    assert_eq!(hold.map(|h| h.task.job), Some(b), "the second holds what is left");
    let run = env.core.running[&TaskKey { job: a, index: 0 }].clone();
    env.report(&run.node, AttemptRef { task: TaskKey { job: a, index: 0 }, attempt: run.attempt }, Outcome::Succeeded);
    let got = placed(&mut env);
    assert_eq!(got.iter().filter(|(_, at, _)| at.task.job == b).count(), 2, "{got:?}");
    assert_eq!(env.core.jobs[&singles].counts.succeeded, 3);
}

#[test]
fn a_stream_of_tasks_of_its_own_priority_does_not_starve_a_gang() {
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 3, 1);
    let mut stream = vec![env.submit(1000, 0, 0)];
    let g = env.submit_spec(gang(3, None));
    let mut started_after = None;
    for step in 0..50 {
        // New work keeps arriving, and every running task ends.
        stream.push(env.submit(10, 0, 0));
        let running: Vec<(NodeId, AttemptRef)> = env
            .core
            .running
            .iter()
            .filter(|(k, _)| k.job != g)
            .map(|(k, r)| (r.node.clone(), AttemptRef { task: *k, attempt: r.attempt }))
            .collect();
        for (node, attempt) in running {
            env.report(&node, attempt, Outcome::Succeeded);
        }
        placed(&mut env);
        if env.core.running.contains_key(&TaskKey { job: g, index: 0 }) {
            started_after = Some(step);
            break;
        }
    }
    let why = env.core.explain_task(env.now, TaskKey { job: g, index: 0 }).unwrap();
    assert!(started_after.is_some_and(|s| s <= 2), "the gang started after {started_after:?} steps: {why:?}");
}

#[test]
fn a_higher_priority_queue_goes_first() {
    let mut env = Env::with_pool(Fill::Spread);
    let ns = nodes(&mut env, 2, 1);
    let high = env.submit(3, 10, 0);
    let g = env.submit_spec(gang(2, None));
    let got = placed(&mut env);
    assert_eq!(got.len(), 2);
    assert!(env.core.pools[&PoolName::parse("p", "p").unwrap()].gang.is_none(), "no hold while higher work waits");
    env.report(&got[0].0, got[0].1, Outcome::Succeeded);
    let next = placed(&mut env);
    assert_eq!(next.iter().map(|(_, a, _)| a.task.job).collect::<Vec<_>>(), [high]);
    assert!(ns.len() == 2 && !env.core.running.contains_key(&TaskKey { job: g, index: 0 }));
}

#[test]
fn a_lost_member_ends_the_attempt_on_every_node_and_it_is_retried_whole_without_charge() {
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 3, 1);
    let g = env.submit_spec(gang(3, None));
    let got = placed(&mut env);
    assert_eq!(got.len(), 3);
    let key = TaskKey { job: g, index: 0 };
    let member = got.iter().find(|(_, _, r)| *r == Some(2)).unwrap().0.clone();
    env.take();
    env.core.declare_lost(env.now, &member, NodeReason::HeartbeatTimeout, &mut env.out);
    env.check();
    let out = env.take();
    let mut others: Vec<NodeId> = got.iter().map(|(n, _, _)| n.clone()).collect();
    others.sort();
    assert_eq!(kills(&out), others, "every rank is told to stop");
    let task = env.task(g, 0);
    assert_eq!((task.state, task.failures, task.node_losses), (TaskState::Ready, 0, 1));
    assert!(!env.core.running.contains_key(&key));
    assert!(env.core.nodes.values().all(|n| n.slots_used == 0));
}

#[test]
fn a_member_that_fails_fails_the_attempt_and_one_that_ends_well_changes_nothing() {
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 2, 1);
    let g = env.submit_spec(gang(2, None));
    let got = placed(&mut env);
    let (primary, member) = (got[0].0.clone(), got[1].0.clone());
    let attempt = got[0].1;
    env.take();
    env.report(&member, attempt, Outcome::Succeeded);
    assert!(env.core.running.contains_key(&attempt.task), "a member that ended well leaves it running");
    env.exit(&member, attempt, 3);
    let out = env.take();
    assert_eq!(kills(&out), std::slice::from_ref(&primary), "the primary is stopped");
    let task = env.task(g, 0);
    assert_eq!((task.state, task.failures), (TaskState::Ready, 1), "retried as a whole, charged once");
    let said = out.store.iter().find_map(|op| match op {
        StoreOp::EndAttempt { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert!(said.is_some_and(|m| m.starts_with(&format!("rank 1 (node {member}) ended"))));
    // The primary's own late result (it was killed) changes nothing.
    env.report(&primary, attempt, Outcome::Cancelled);
    assert_eq!(env.task(g, 0).failures, 1);
}

#[test]
fn cancelling_a_gang_kills_every_rank() {
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 3, 1);
    let g = env.submit_spec(gang(3, None));
    let got = placed(&mut env);
    env.take();
    env.core.cancel_job(env.now, g, &mut env.out).unwrap();
    env.check();
    let mut all: Vec<NodeId> = got.into_iter().map(|(n, _, _)| n).collect();
    all.sort();
    assert_eq!(kills(&env.take()), all);
}

#[test]
fn a_gang_the_pool_could_never_hold_is_refused_naming_the_field() {
    let mut env = Env::new();
    let mut local = pool_spec("p", Provider::Local, 2, Fill::Spread);
    env.core.create_pool(env.now, local.clone(), &mut env.out).unwrap();
    let refused =
        |env: &mut Env, spec: JobSpec| env.core.submit_job(env.now, spec, &mut env.out).unwrap_err().to_string();
    assert!(refused(&mut env, gang(0, None)).contains("task.nodes: must be at least 1"));
    let said = refused(&mut env, gang(3, None));
    assert!(said.contains("task.nodes: a task needs 3 whole nodes but pool 'p' has at most 2 (its size)"), "{said}");
    local.name = PoolName::parse("p", "auto").unwrap();
    let (idle_timeout, cooldown) = (Duration::from_secs(60), Duration::ZERO);
    local.autoscale = Some(Autoscale { min: 0, max: 4, idle_timeout, step: 10, cooldown });
    env.core.create_pool(env.now, local, &mut env.out).unwrap();
    let mut spec = gang(5, None);
    spec.pool = PoolName::parse("p", "auto").unwrap();
    assert!(refused(&mut env, spec.clone()).contains("at most 4 (its autoscaling maximum (--max))"));
    spec.task.nodes = 4;
    env.core.submit_job(env.now, spec.clone(), &mut env.out).unwrap();
    // Its autoscaler counts the gang's nodes whole.
    let pool = &env.core.pools[&PoolName::parse("p", "auto").unwrap()];
    assert_eq!(env.core.autoscale_snapshot(pool, env.now).needed_slots, 8);
    spec.task.kind = TaskKind::Reduce { map_tasks: 1 };
    assert!(refused(&mut env, spec).contains("task.nodes: a map or reduce task runs on one node"));
}

#[test]
fn explain_says_what_a_gang_waits_for_and_what_its_hold_means_to_others() {
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 2, 1);
    env.submit(1, 0, 0);
    placed(&mut env);
    let g = env.submit_spec(gang(2, None));
    let other = env.submit(1, 0, 0);
    placed(&mut env);
    let why = env.core.explain_task(env.now, TaskKey { job: g, index: 0 }).unwrap().join("\n");
    assert!(why.contains("a multi-node task: 1 of the 2 node(s) it needs are free and held for it"), "{why}");
    assert!(why.contains("it waits for 1 task(s) on the held nodes to end: 0 of job 1 on n-"), "{why}");
    assert!(why.contains("a held node runs a task without a --timeout"), "{why}");
    let why = env.core.explain_task(env.now, TaskKey { job: other, index: 0 }).unwrap().join("\n");
    assert!(why.contains("2 node(s) of pool 'p' are held for the multi-node task 0 of job 2"), "{why}");
}

#[test]
fn a_primary_that_fails_as_a_member_goes_away_ended_by_the_loss_not_by_its_own_fault() {
    let timeout = Env::new().core.config.heartbeat_timeout;
    // The member's agent is gone when the primary's failure comes: a loss at once.
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 2, 1);
    let g = env.submit_spec(gang(2, None));
    let got = placed(&mut env);
    let (primary, member, attempt) = (got[0].0.clone(), got[1].0.clone(), got[0].1);
    env.core.on_disconnected(&member);
    env.exit(&primary, attempt, 1);
    let task = env.task(g, 0);
    assert_eq!((task.state, task.failures, task.node_losses), (TaskState::Ready, 0, 1));
    // It goes a moment after the failure (MPI saw it first): a loss too, decided
    // within a heartbeat timeout.
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 2, 1);
    let g = env.submit_spec(gang(2, None));
    let got = placed(&mut env);
    let (primary, member, attempt) = (got[0].0.clone(), got[1].0.clone(), got[0].1);
    env.exit(&primary, attempt, 1);
    assert_eq!(env.task(g, 0).state, TaskState::Running, "not decided yet");
    env.advance(ms(500));
    env.core.on_disconnected(&member);
    env.advance(timeout);
    env.tick();
    let task = env.task(g, 0);
    assert_eq!((task.state, task.failures), (TaskState::Ready, 0), "{task:?}");
    // Every member stays: the failure is the task's own, once the wait is over.
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 2, 1);
    let g = env.submit_spec(gang(2, None));
    let got = placed(&mut env);
    env.exit(&got[0].0, got[0].1, 1);
    env.advance(timeout / 2);
    env.tick();
    assert_eq!(env.task(g, 0).state, TaskState::Running);
    env.take();
    env.advance(timeout);
    env.tick();
    let task = env.task(g, 0);
    assert_eq!((task.state, task.failures, task.node_losses), (TaskState::Ready, 1, 0));
    assert_eq!(kills(&env.take()), [got[1].0.clone()], "the member is stopped");
}

#[test]
fn each_rank_writes_only_its_own_output_also_after_the_end_and_a_cut_one_is_marked() {
    let mut env = Env::with_pool(Fill::Spread);
    nodes(&mut env, 3, 1);
    let mut spec = gang(2, None);
    spec.max_output = 10;
    let _g = env.submit_spec(spec);
    let got = placed(&mut env);
    let (primary, member) = (got[0].0.clone(), got[1].0.clone());
    let stranger = env.core.nodes.keys().find(|n| **n != primary && **n != member).cloned().unwrap();
    let attempt = got[0].1;
    env.take();
    let chunk = |rank: u32, data: &[u8]| LogChunk { attempt, rank, stderr: false, offset: 0, data: data.to_vec() };
    let kept = |out: &Outbox| -> Vec<(u32, Vec<u8>)> {
        out.store
            .iter()
            .filter_map(|op| match op {
                StoreOp::Log(c) => Some((c.rank, c.data.clone())),
                _ => None,
            })
            .collect()
    };
    // Rank 1's output comes from rank 1's node only; rank 0's (the task's) from the primary's.
    let all = [chunk(0, b"zero"), chunk(1, b"one"), chunk(2, b"no such rank")];
    for node in [&primary, &member, &stranger] {
        env.core.on_logs(node, all.to_vec(), &mut env.out);
    }
    assert_eq!(kept(&env.take()), [(0, b"zero".to_vec()), (1, b"one".to_vec())]);
    // The primary ends the attempt; the member, killed, ships the rest and its result.
    env.exit(&primary, attempt, 0);
    env.take();
    env.core.on_logs(&member, vec![chunk(1, b"later but its own"), chunk(0, b"not its own")], &mut env.out);
    assert_eq!(kept(&env.take()), [(1, b"later but ".to_vec())], "cut at its --max-output");
    let late = TaskResult { written: [40, 0], ..result(attempt, Outcome::Cancelled, 5) };
    env.core.on_task_results(env.now, &member, vec![late], &mut env.out);
    let out = env.take();
    let marks = kept(&out);
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0].0, 1);
    assert!(String::from_utf8_lossy(&marks[0].1).contains("stdout truncated here"));
    assert!(!out.store.iter().any(|op| matches!(op, StoreOp::EndAttempt { .. })), "the attempt ended once");
}
