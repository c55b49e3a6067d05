//! The pools tests that need the real store.

use super::*;

#[test]
fn shrinking_a_busy_local_pool_drains_then_removes_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::new();
    env.core.create_pool(env.now, pool_spec("p", Provider::Local, 2, Fill::Spread), &mut env.out).unwrap();
    let launched = launched(&env.out);
    let a = env.join(2, Some(launched[0].clone()));
    let b = env.join(2, Some(launched[1].clone()));
    let job = env.submit(4, 0, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 4);
    let name = PoolName::parse("name", "p").unwrap();
    env.core.resize_pool(env.now, &name, 1, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.nodes[&a].state(), NodeState::Draining, "busy nodes are drained, not killed");
    assert_eq!(env.core.nodes[&b].state(), NodeState::Running);
    assert!(!env.out.provider.iter().any(|op| matches!(op, ProviderOp::Stop { .. })));

    // The coordinator restarts: the node is still to be removed once idle.
    store.apply(&env.out.store).unwrap();
    let mut core = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    core.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    core.sanity_check();
    assert!(core.nodes[&a].remove_when_idle());
    let mut out = Outbox::default();
    core.on_hello(
        env.now,
        &a,
        held(placed.iter().filter(|(n, _)| *n == a).map(|(_, at)| *at).collect(), vec![]),
        false,
        &mut out,
    )
    .unwrap();
    core.on_hello(
        env.now,
        &b,
        held(placed.iter().filter(|(n, _)| *n == b).map(|(_, at)| *at).collect(), vec![]),
        false,
        &mut out,
    )
    .unwrap();
    for (node, attempt) in &placed {
        core.on_task_results(env.now, node, vec![result(*attempt, Outcome::Succeeded, 0)], &mut out);
    }
    core.on_tick(env.now, &mut out);
    core.sanity_check();
    assert_eq!(core.nodes[&a].state(), NodeState::Removed);
    assert_eq!(core.jobs[&job].state, JobState::Completed, "scaling down lost no task");
    assert!(out.provider.iter().any(|op| matches!(op, ProviderOp::Stop { node: n, pid: 0, .. } if *n == a)));
}

#[test]
fn an_autoscaled_pool_follows_its_queue_and_remembers_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::new();
    let auto = Autoscale { min: 0, max: 3, idle_timeout: ms(2000), step: 3, cooldown: ms(0) };
    let spec = PoolSpec { autoscale: Some(auto), ..pool_spec("p", Provider::Local, 0, Fill::Spread) };
    env.core.create_pool(env.now, spec, &mut env.out).unwrap();
    env.tick();
    assert!(env.out.provider.is_empty(), "an empty queue starts nothing");

    let job = env.submit(12, 0, 0);
    env.tick();
    let launched = launched(&env.out);
    assert_eq!(launched.len(), 3, "12 slots of work on 2-slot nodes, capped at 3");
    env.tick();
    assert_eq!(super::launched(&env.out).len(), 3, "no second order");
    let name = PoolName::parse("name", "p").unwrap();
    assert_eq!(env.core.pools[&name].scale_log.len(), 1);
    assert!(env.core.pools[&name].scale_log[0].reason.contains("starting 3"));

    for id in &launched {
        env.join(2, Some(id.clone()));
    }
    loop {
        let placed = env.schedule();
        if placed.is_empty() {
            break;
        }
        for (node, attempt) in placed {
            env.report(&node, attempt, Outcome::Succeeded);
        }
    }
    assert_eq!(env.core.jobs[&job].state, JobState::Completed);
    env.advance(ms(1000));
    env.tick();
    assert_eq!(env.core.pools[&name].nodes.len(), 3, "not idle long enough yet");
    env.advance(ms(1001));
    for id in &launched {
        env.core.on_node_message(env.now, id, &mut env.out);
    }
    env.tick();
    assert!(env.core.pools[&name].nodes.is_empty(), "back to min after the idle timeout");
    assert_eq!(env.core.pools[&name].spec.target_nodes, 0);
    assert!(env.out.provider.iter().filter(|op| matches!(op, ProviderOp::Stop { .. })).count() == 3);

    // The settings and the log survive a restart.
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    let pool = &restored.pools[&name];
    assert_eq!(pool.spec.autoscale, env.core.pools[&name].spec.autoscale);
    let log: Vec<(u32, u32)> = pool.scale_log.iter().map(|r| (r.from, r.to)).collect();
    assert_eq!(log, vec![(0, 3), (3, 0)]);
}
