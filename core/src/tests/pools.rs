//! Pools: delete, local provider reconciliation, scale-down, shutdown.

use super::*;
use crate::pools::Deleted;

#[test]
fn pool_delete_with_force_cancels_jobs_and_stops_nodes_now() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(2, 0, 0);
    env.schedule();
    let name = PoolName::parse("name", "p").unwrap();
    let deleted = env.core.delete_pool(env.now, &name, true, &mut env.out).unwrap();
    env.check();
    assert_eq!(deleted, Deleted { cancelled_jobs: vec![job], stopped_nodes: 1, draining_nodes: 0 });
    assert!(!env.core.pools.contains_key(&name));
    assert_eq!(env.core.jobs[&job].state, JobState::Cancelled);
    assert_eq!(env.core.nodes[&n].state(), NodeState::Removed);
    assert!(env.out.agents.iter().any(|(id, m)| *id == n && matches!(m, ToAgent::Shutdown(_))));
}

#[test]
fn pool_delete_lets_running_tasks_finish_under_task_completion() {
    let mut env = Env::with_pool(Fill::Spread);
    let busy = env.node(1);
    let idle_node = env.node(1);
    let job = env.submit(3, 0, 0);
    let started = env.schedule();
    assert_eq!(started.len(), 2);
    let name = PoolName::parse("name", "p").unwrap();
    // The second node finishes its task before the delete: it is idle and goes at once.
    let (_, on_idle) = started.iter().find(|(n, _)| *n == idle_node).cloned().unwrap();
    env.report(&idle_node, on_idle, Outcome::Succeeded);
    let deleted = env.core.delete_pool(env.now, &name, false, &mut env.out).unwrap();
    env.check();
    assert_eq!(deleted, Deleted { cancelled_jobs: vec![], stopped_nodes: 1, draining_nodes: 1 });
    assert!(env.core.pools[&name].deleting);
    assert_eq!(env.core.nodes[&busy].state(), NodeState::Draining);
    assert_eq!(env.core.nodes[&idle_node].state(), NodeState::Removed);
    assert!(env.out.store.iter().any(|op| matches!(op, StoreOp::PutPool { deleting: true, .. })));

    // Nothing new starts, nothing new is accepted.
    assert!(env.schedule().is_empty());
    let refused = env.core.submit_job(env.now, job_spec("p", 1, 0, 0), &mut env.out).unwrap_err();
    assert!(refused.to_string().contains("being deleted"), "{refused}");
    assert!(env.core.resize_pool(env.now, &name, 3, &mut env.out).is_err());

    // The running task ends as it would have; then the node, the pool and the rest go.
    let (_, on_busy) = started.iter().find(|(n, _)| *n == busy).cloned().unwrap();
    env.report(&busy, on_busy, Outcome::Succeeded);
    env.tick();
    env.check();
    assert_eq!(env.core.nodes[&busy].state(), NodeState::Removed);
    assert_eq!(env.core.nodes[&busy].record.reason, Some(NodeReason::PoolDeleted));
    assert!(!env.core.pools.contains_key(&name));
    assert_eq!(env.core.jobs[&job].state, JobState::Cancelled);
    assert_eq!(env.task(job, on_busy.task.index).state, TaskState::Succeeded);
    assert_eq!(env.task(job, on_idle.task.index).state, TaskState::Succeeded);
    assert!(env.out.store.iter().any(|op| *op == StoreOp::DeletePool(name.clone())));
}

#[test]
fn pool_delete_under_requeue_stops_busy_nodes_now_and_cancels_the_rest() {
    let mut env = Env::new();
    let mut spec = pool_spec("p", Provider::Static, 0, Fill::Spread);
    spec.removal = RemovalPolicy::Requeue;
    env.core.create_pool(env.now, spec, &mut env.out).unwrap();
    let n = env.node(1);
    let job = env.submit(2, 0, 0);
    let started = env.schedule();
    let name = PoolName::parse("name", "p").unwrap();
    let deleted = env.core.delete_pool(env.now, &name, false, &mut env.out).unwrap();
    env.check();
    assert_eq!(deleted, Deleted { cancelled_jobs: vec![job], stopped_nodes: 1, draining_nodes: 0 });
    assert!(!env.core.pools.contains_key(&name));
    assert_eq!(env.core.nodes[&n].state(), NodeState::Removed);
    assert_eq!(env.core.jobs[&job].state, JobState::Cancelled);
    assert!(env.out.agents.iter().any(|(id, m)| *id == n && matches!(m, ToAgent::Shutdown(_))));
    assert_eq!(env.task(job, started[0].1.task.index).state, TaskState::Cancelled);
}

#[test]
fn local_pools_launch_replace_and_shrink() {
    let mut env = Env::new();
    env.core.create_pool(env.now, pool_spec("p", Provider::Local, 2, Fill::Spread), &mut env.out).unwrap();
    env.check();
    let launched = launched(&env.take());
    assert_eq!(launched.len(), 2);
    env.tick();
    assert!(env.take().provider.is_empty(), "starting nodes count toward the size");

    // One registers; the other dies before it does: a failed launch, replaced after
    // a backoff, with the reason on the pool.
    env.join(2, Some(launched[0].clone()));
    env.core.on_node_exited(env.now, &launched[1], &mut env.out);
    env.tick();
    assert!(super::launched(&env.take()).is_empty(), "no replacement before the backoff");
    let name = PoolName::parse("name", "p").unwrap();
    assert!(env.core.pools[&name].last_error.as_deref().is_some_and(|e| e.contains("exited before it registered")));
    assert_eq!(env.core.nodes[&launched[1]].record.reason, Some(NodeReason::LaunchFailed));
    env.advance(env.core.config.retry_backoff * 4);
    env.tick();
    let replaced = super::launched(&env.take()).len();
    assert_eq!(replaced, 1);

    // Shrinking to 1 removes the starting node before the registered one.
    env.core.resize_pool(env.now, &name, 1, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.nodes[&launched[0]].state(), NodeState::Idle);
    assert_eq!(env.core.pools[&name].nodes.len(), 1);

    // A node that never registers is given up on after the start timeout.
    env.core.resize_pool(env.now, &name, 2, &mut env.out).unwrap();
    env.advance(env.core.config.start_timeout + ms(1));
    env.core.on_node_message(env.now, &launched[0], &mut env.out);
    env.tick();
    assert!(env.core.pools[&name].last_error.is_some());
    assert!(env.core.pools[&name].next_launch_at.is_some(), "launch failures back off");
}

#[test]
fn coordinator_shutdown_requeues_local_work_without_counting_a_loss() {
    let mut env = Env::new();
    env.core.create_pool(env.now, pool_spec("p", Provider::Local, 1, Fill::Spread), &mut env.out).unwrap();
    let node = match env.take().provider.first() {
        Some(ProviderOp::Launch { node, .. }) => node.clone(),
        other => panic!("expected a launch, got {other:?}"),
    };
    env.join(2, Some(node.clone()));
    let job = env.submit(1, 0, 0);
    assert_eq!(env.schedule().len(), 1);
    env.take();
    env.core.stop_local_nodes(env.now, &mut env.out);
    env.check();
    let t = env.task(job, 0);
    assert_eq!((t.state, t.node_losses, t.failures), (TaskState::Ready, 0, 0));
    assert_eq!(env.core.nodes[&node].record.reason, Some(NodeReason::CoordinatorShutdown));
    assert!(env.out.provider.iter().any(|op| matches!(op, ProviderOp::Stop { node: n, pid: 0, .. } if *n == node)));
}

#[test]
fn autoscaling_needs_a_provider_and_sane_bounds() {
    let mut env = Env::new();
    let auto = Autoscale { min: 0, max: 3, idle_timeout: ms(2000), step: 1, cooldown: ms(0) };
    let static_pool = PoolSpec { autoscale: Some(auto.clone()), ..pool_spec("s", Provider::Static, 0, Fill::Spread) };
    let err = env.core.create_pool(env.now, static_pool, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("cannot autoscale"), "{err}");
    let reversed = Autoscale { min: 4, max: 2, ..auto };
    let bad = PoolSpec { autoscale: Some(reversed), ..pool_spec("l", Provider::Local, 0, Fill::Spread) };
    let err = env.core.create_pool(env.now, bad, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("min 4 is more than max 2"), "{err}");
    assert!(env.core.pools.is_empty());
}

#[test]
fn removing_a_busy_node_follows_the_policy() {
    for policy in [RemovalPolicy::TaskCompletion, RemovalPolicy::Requeue, RemovalPolicy::Terminate] {
        let mut env = Env::with_pool(Fill::Spread);
        let n = env.node(2);
        let job = env.submit(2, 0, 3);
        let placed = env.schedule();
        assert_eq!(placed.len(), 2);
        env.take();
        env.core.remove_node(env.now, &n, Some(policy), &mut env.out).unwrap();
        env.check();
        let j = &env.core.jobs[&job];
        match policy {
            RemovalPolicy::TaskCompletion => {
                assert_eq!(env.core.nodes[&n].state(), NodeState::Draining);
                assert_eq!(j.counts.running, 2, "its tasks finish");
                for (node, attempt) in &placed {
                    env.report(node, *attempt, Outcome::Succeeded);
                }
                env.tick();
                assert_eq!(env.core.nodes[&n].state(), NodeState::Removed, "and then it goes");
                assert_eq!(env.core.jobs[&job].state, JobState::Completed);
            }
            RemovalPolicy::Requeue => {
                assert_eq!(env.core.nodes[&n].state(), NodeState::Removed);
                let t = j.task(0).unwrap();
                assert_eq!(
                    (t.state, t.failures, t.node_losses),
                    (TaskState::Ready, 0, 0),
                    "back in the queue, not held against it"
                );
            }
            RemovalPolicy::Terminate => {
                assert_eq!(env.core.nodes[&n].state(), NodeState::Removed);
                assert_eq!(j.counts.failed, 2, "killed and failed, retries or not");
                assert_eq!(j.state, JobState::Failed);
                assert_eq!(env.out.agents.iter().filter(|(_, m)| matches!(m, ToAgent::Kill(_))).count(), 2);
            }
        }
    }
    let mut env = Env::with_pool(Fill::Spread);
    let idle = env.node(1);
    env.core.remove_node(env.now, &idle, None, &mut env.out).unwrap();
    assert_eq!(env.core.nodes[&idle].state(), NodeState::Removed, "an idle node goes at once");
    assert!(env
        .core
        .remove_node(env.now, &idle, None, &mut env.out)
        .unwrap_err()
        .to_string()
        .contains("already removed"));
}

#[test]
fn a_node_whose_start_task_fails_is_replaced_and_the_log_is_not_flooded() {
    let mut env = Env::new();
    let auto = Autoscale { min: 1, max: 1, idle_timeout: ms(2000), step: 1, cooldown: ms(0) };
    let spec = PoolSpec { autoscale: Some(auto), ..pool_spec("p", Provider::Local, 0, Fill::Spread) };
    env.core.create_pool(env.now, spec, &mut env.out).unwrap();
    env.tick();
    let first = launched(&env.take());
    assert_eq!(first.len(), 1);
    let node = env.join_starting(2, Some(first[0].clone()), true);
    env.core.on_start_task_done(env.now, &node, false, "no driver", &mut env.out);
    env.check();
    assert_eq!(env.core.nodes[&node].state(), NodeState::Removed);
    let name = PoolName::parse("name", "p").unwrap();
    let records = env.core.pools[&name].scale_log.len();
    // Backing off: a few ticks order nothing and record nothing new.
    env.take();
    for _ in 0..3 {
        env.advance(ms(50));
        env.tick();
    }
    assert!(launched(&env.out).is_empty(), "backing off");
    assert_eq!(env.core.pools[&name].scale_log.len(), records, "no record per tick");
    env.advance(ms(2000));
    env.tick();
    assert_eq!(launched(&env.out).len(), 1, "then a replacement");
}

#[test]
fn an_auto_pool_is_made_with_its_job_and_goes_when_it_ends() {
    let mut env = Env::new();
    let auto = pool_spec("auto", Provider::Local, 1, Fill::Spread);
    let spec = JobSpec { auto_pool: Some(Box::new(auto)), ..job_spec("auto", 2, 0, 0) };
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    env.check();
    let name = PoolName::parse("pool", &format!("job-{job}")).unwrap();
    assert_eq!(env.core.jobs[&job].spec.pool, name);
    assert!(env.core.pools.contains_key(&name));
    let launched = launched(&env.take());
    assert_eq!(launched.len(), 1, "its node is started");
    // Its node joins, runs both tasks, and the pool is deleted with it.
    let reg = Registration {
        pool: name.clone(),
        hostname: "h".into(),
        slots: 2,
        cpus: 2,
        memory_bytes: 1 << 30,
        pid: 0,
        launch_id: Some(launched[0].clone()),
        resources: Resources::new(),
    };
    let n = env.core.register_node(env.now, reg, &mut env.out).unwrap();
    env.core.on_hello(env.now, &n, Held::default(), false, &mut env.out).unwrap();
    for (node, a) in env.schedule() {
        env.report(&node, a, Outcome::Succeeded);
    }
    assert_eq!(env.core.jobs[&job].state, JobState::Completed);
    assert!(!env.core.pools.contains_key(&name), "the pool went with its job");
    assert_eq!(env.core.nodes[&n].status(), NodeStatus::Removed);
    // Tasks too big for the auto pool's nodes: refused, and no pool is made.
    let mut big = JobSpec {
        auto_pool: Some(Box::new(pool_spec("auto", Provider::Local, 1, Fill::Spread))),
        ..job_spec("auto", 1, 0, 0)
    };
    big.task.slots = 3;
    env.take();
    let err = env.core.submit_job(env.now, big, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("auto pool's nodes have 2"), "{err}");
    assert!(env.out.is_empty() && env.core.pools.is_empty());
}
