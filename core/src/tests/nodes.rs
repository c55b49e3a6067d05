//! Nodes: heartbeats, loss, fencing of attempts, reconnection, drain.

use super::*;

#[test]
fn silent_node_is_lost_and_its_tasks_requeued_without_using_retries() {
    let mut env = Env::with_pool(Fill::Spread);
    let n1 = env.node(2);
    let job = env.submit(2, 0, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);

    env.advance(ms(5000));
    env.tick();
    assert_eq!(env.core.nodes[&n1].state(), NodeState::Running, "exactly the timeout is not yet silence");

    env.advance(ms(1));
    env.take();
    env.tick();
    assert_eq!(env.core.nodes[&n1].state(), NodeState::Lost);
    assert_eq!(env.core.nodes[&n1].record.reason, Some(NodeReason::HeartbeatTimeout));
    let t = env.task(job, 0);
    assert_eq!((t.state, t.failures, t.node_losses, t.attempt), (TaskState::Ready, 0, 1, 1));
    let out = env.take();
    let lost_attempts =
        out.store.iter().filter(|op| matches!(op, StoreOp::EndAttempt { outcome: Outcome::NodeLost, .. })).count();
    assert_eq!(lost_attempts, 2);

    // A new node picks the work up as attempt 2.
    let n2 = env.node(2);
    let again = env.schedule();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|(n, a)| *n == n2 && a.attempt == 2));
}

#[test]
fn heartbeats_keep_a_node_alive() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    for _ in 0..10 {
        env.advance(ms(1000));
        assert!(env.core.on_node_message(env.now, &n, &mut env.out));
        env.tick();
    }
    assert_eq!(env.core.nodes[&n].state(), NodeState::Idle);
}

#[test]
fn results_for_other_attempts_or_nodes_are_ignored_but_acknowledged() {
    let mut env = Env::with_pool(Fill::Spread);
    let n1 = env.node(1);
    let job = env.submit(1, 0, 0);
    let (_, first) = env.schedule()[0].clone();
    env.advance(ms(5001));
    env.tick(); // n1 lost
    let n2 = env.node(1);
    let (_, second) = env.schedule()[0].clone();
    assert_eq!(second.attempt, 2);

    // The frozen node wakes up: it is told to register again, its result ignored.
    env.take();
    assert!(!env.core.on_node_message(env.now, &n1, &mut env.out));
    assert!(matches!(env.take().agents.as_slice(), [(n, ToAgent::Reregister(_))] if *n == n1));
    env.report(&n1, first, Outcome::Succeeded);
    assert_eq!(env.task(job, 0).state, TaskState::Running);
    assert!(env.take().agents.contains(&(n1.clone(), ToAgent::Ack(first))));
    // Even on the right node, an old attempt does not count.
    env.report(&n2, first, Outcome::Succeeded);
    assert_eq!(env.task(job, 0).state, TaskState::Running);

    env.report(&n2, second, Outcome::Succeeded);
    assert_eq!(env.task(job, 0).state, TaskState::Succeeded);
    assert_eq!(env.core.jobs[&job].state, JobState::Completed);
    // A duplicate report after completion changes nothing.
    env.report(&n2, second, Outcome::Failed);
    assert_eq!(env.task(job, 0).state, TaskState::Succeeded);
    assert_eq!(env.core.jobs[&job].counts.succeeded, 1);
}

#[test]
fn a_task_that_keeps_losing_nodes_is_stopped() {
    let mut env = Env::with_pool(Fill::Spread);
    let job = env.submit(1, 0, 10);
    for round in 1..=4 {
        let _n = env.node(1);
        assert_eq!(env.schedule().len(), 1, "round {round}");
        env.advance(ms(5001));
        env.tick();
    }
    let t = env.task(job, 0);
    assert_eq!((t.state, t.node_losses, t.failures), (TaskState::Failed, 4, 0));
    assert_eq!(env.core.jobs[&job].state, JobState::Failed);
}

#[test]
fn hello_reconciles_what_the_agent_runs() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let job = env.submit(2, 0, 0);
    let placed = env.schedule();
    let (a0, a1) = (placed[0].1, placed[1].1);
    env.core.on_disconnected(&n);
    env.check();
    assert!(env.schedule().is_empty(), "no work for a disconnected node");

    // The agent reconnects: it finished a0 meanwhile, never got a1, and runs a
    // stale attempt the coordinator no longer wants.
    let stale = AttemptRef { task: TaskKey { job, index: 0 }, attempt: 9 };
    let done = result(a0, Outcome::Succeeded, 0);
    env.take();
    env.core.on_hello(env.now, &n, held(vec![stale], vec![done]), false, &mut env.out).unwrap();
    env.check();
    let out = env.take();
    assert!(out.agents.contains(&(n.clone(), ToAgent::Kill(stale))));
    assert!(out.agents.contains(&(n.clone(), ToAgent::Ack(a0))));
    assert_eq!(env.task(job, 0).state, TaskState::Succeeded);
    let t1 = env.task(job, a1.task.index);
    assert_eq!((t1.state, t1.failures), (TaskState::Ready, 0));
    assert_eq!(env.schedule().len(), 1);
}

#[test]
fn a_lost_node_must_register_again() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    env.advance(ms(5001));
    env.tick();
    let err = env.core.on_hello(env.now, &n, Held::default(), false, &mut env.out).unwrap_err();
    assert!(err.0.contains("lost"), "{err:?}");
    let unknown = NodeId::from_seq(99);
    assert!(env.core.on_hello(env.now, &unknown, Held::default(), false, &mut env.out).is_err());
}

#[test]
fn drained_nodes_take_no_new_work() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    env.submit(4, 0, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);
    env.core.drain_node(&n, &mut env.out).unwrap();
    env.check();
    env.report(&n, placed[0].1, Outcome::Succeeded);
    assert!(env.schedule().is_empty());
    assert_eq!(env.core.nodes[&n].state(), NodeState::Draining);
}

#[test]
fn a_draining_node_counts_its_busy_slots_as_used_and_none_as_free() {
    let mut env = Env::with_pool(Fill::Spread);
    let draining = env.node(2);
    let _up = env.node(3);
    env.submit(3, 0, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 3);
    env.core.drain_node(&draining, &mut env.out).unwrap();
    let busy_on_draining = placed.iter().filter(|(n, _)| *n == draining).count() as u32;
    assert!(busy_on_draining > 0, "the node drains with a task on it");
    let busy_on_up = 3 - busy_on_draining;
    let pool = &env.core.pools[&PoolName::parse("name", "p").unwrap()];
    let summary = env.core.pool_summary(pool);
    assert_eq!(summary.slots.total, 5);
    assert_eq!(summary.slots.used, 3);
    assert_eq!(summary.slots.free, 3 - busy_on_up, "only the up node's unused slots are free");
    assert!(summary.slots.free < summary.slots.total - summary.slots.used, "the draining node's idle slot is not free");
    assert_eq!(summary.nodes[&NodeState::Draining], 1);
    assert_eq!(summary.running, 3);
}

#[test]
fn a_node_takes_work_only_after_its_start_task_succeeded() {
    let mut env = Env::with_pool(Fill::Spread);
    let ok = env.join_starting(1, None, true);
    let bad = env.join_starting(1, None, true);
    env.submit(2, 0, 0);
    assert!(env.schedule().is_empty(), "no work while start tasks run");
    env.core.on_start_task_done(env.now, &bad, false, "exit status: 3 (no driver)", &mut env.out);
    env.core.on_start_task_done(env.now, &ok, true, "", &mut env.out);
    env.check();
    let placed = env.schedule();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].0, ok);
    assert_eq!(env.core.nodes[&bad].state(), NodeState::Draining);
    assert_eq!(env.core.nodes[&bad].record.reason, Some(NodeReason::StartTaskFailed));
    let name = PoolName::parse("name", "p").unwrap();
    assert!(env.core.pools[&name].last_error.as_deref().is_some_and(|e| e.contains("no driver")));
}

#[test]
fn every_surface_reads_one_summary_of_a_task_a_node_and_a_job() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(4, 0, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 1);
    let running = placed[0].1;
    let j = &env.core.jobs[&job];
    let task = env.core.task_summary(j, running.task.index).unwrap();
    assert_eq!((task.state, task.node.as_ref(), task.attempts), (TaskState::Running, Some(&n), 1));
    assert!(env.core.task_summary(j, 99).is_none(), "no such task");
    let node = env.core.node_summary(&env.core.nodes[&n], env.now);
    assert_eq!((node.state, node.live, node.running.clone()), (NodeState::Running, true, vec![running]));
    env.advance(ms(2000));
    env.report(&n, running, Outcome::Succeeded);
    let p = env.core.job_progress(&env.core.jobs[&job], env.now);
    assert_eq!((p.tasks, p.finished, p.throughput_per_s), (4, 1, 0.5));
    assert_eq!(p.eta_s, Some(6.0), "3 tasks left at 0.5 a second");
}

#[test]
fn a_node_touches_only_the_checkpoints_of_its_own_attempts() {
    let mut env = Env::with_pool(Fill::Spread);
    let a = env.node(1);
    let b = env.node(1);
    let mut spec = job_spec("p", 2, 0, 0);
    spec.task.checkpoint = Some("state".into());
    let job = env.submit_spec(spec);
    let placed = env.schedule();
    let (on_a, on_b) = if placed[0].0 == a { (placed[0].1, placed[1].1) } else { (placed[1].1, placed[0].1) };
    let ck = |i: u32| corral_types::paths::task_checkpoint(job, &i.to_string());
    let (mine, theirs) = (ck(on_a.task.index), ck(on_b.task.index));
    assert!(env.core.node_object_access(&a, &mine, true) && env.core.node_object_access(&a, &mine, false));
    assert!(!env.core.node_object_access(&a, &theirs, true) && !env.core.node_object_access(&a, &theirs, false));
    assert!(!env.core.node_object_access(&b, &mine, false));
    // Killed (the job cancelled): its node may store it one last time, not read it.
    env.core.cancel_job(env.now, job, &mut env.out).unwrap();
    assert!(env.core.node_object_access(&a, &mine, true));
    assert!(!env.core.node_object_access(&a, &mine, false));
    assert!(!env.core.node_object_access(&b, &mine, true));
}
