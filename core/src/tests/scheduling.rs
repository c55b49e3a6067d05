//! Scheduling: order, fill, free slots, prefetching short tasks.

use super::*;

#[test]
fn higher_priority_first_then_submission_order() {
    let mut env = Env::with_pool(Fill::Spread);
    let low = env.submit(2, 0, 0);
    let high = env.submit(2, 10, 0);
    let later_high = env.submit(1, 10, 0);
    let _n = env.node(4);
    let order: Vec<TaskKey> = env.schedule().into_iter().map(|(_, a)| a.task).collect();
    assert_eq!(
        order,
        vec![
            TaskKey { job: high, index: 0 },
            TaskKey { job: high, index: 1 },
            TaskKey { job: later_high, index: 0 },
            TaskKey { job: low, index: 0 },
        ]
    );
    assert_eq!(env.core.jobs[&low].counts.ready, 1);
}

#[test]
fn spread_and_pack_choose_nodes() {
    let a = NodeId::from_seq(1);
    let b = NodeId::from_seq(2);
    let free = vec![(1, a.clone()), (3, b.clone())];
    assert_eq!(schedule::pick(&free, 1, Fill::Spread, |_| true), Some(1));
    assert_eq!(schedule::pick(&free, 1, Fill::Pack, |_| true), Some(0));
    assert_eq!(schedule::pick(&free, 2, Fill::Pack, |_| true), Some(1));
    assert_eq!(schedule::pick(&free, 4, Fill::Spread, |_| true), None);
    let tie = vec![(2, a), (2, b)];
    assert_eq!(schedule::pick(&tie, 1, Fill::Spread, |_| true), Some(0), "ties go to the first node");

    for (fill, expect_on_second) in [(Fill::Spread, 1), (Fill::Pack, 0)] {
        let mut env = Env::with_pool(fill);
        let n1 = env.node(2);
        let n2 = env.node(2);
        env.submit(2, 0, 0);
        let placed = env.schedule();
        let on_second = placed.iter().filter(|(n, _)| *n == n2).count();
        assert_eq!(on_second, expect_on_second, "{fill}: {placed:?}");
        assert!(placed.iter().all(|(n, _)| *n == n1 || *n == n2));
    }
}

#[test]
fn assignments_never_exceed_free_slots() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(3);
    let job = env.submit(10, 0, 0);
    let first = env.schedule();
    assert_eq!(first.len(), 3);
    assert!(env.schedule().is_empty(), "no free slot left");
    env.report(&n, first[0].1, Outcome::Succeeded);
    let next = env.schedule();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1.task, TaskKey { job, index: 3 });
}

/// Finishes `n` attempts of `job` on `node`, each reported to have run `run_ms`.
fn finish_runs(env: &mut Env, node: &NodeId, placed: &[(NodeId, AttemptRef)], run_ms: u64) {
    for (_, attempt) in placed {
        env.core.on_task_results(env.now, node, vec![result(*attempt, Outcome::Succeeded, run_ms)], &mut env.out);
        env.check();
    }
}

#[test]
fn short_tasks_are_queued_ahead_on_nodes_and_long_ones_are_not() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let short = env.submit(100, 0, 0);
    // No run times yet: only the free slots are used.
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);
    finish_runs(&mut env, &n, &placed, 5);
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);
    finish_runs(&mut env, &n, &placed, 5);
    // Four short runs seen: two running plus two queued per slot.
    let want = 2 * (1 + schedule::PREFETCH_PER_SLOT);
    let ahead = env.schedule();
    assert_eq!(ahead.len(), want as usize);
    assert_eq!(env.core.nodes[&n].slots_used, want);
    assert_eq!(env.core.jobs[&short].counts.running, want);

    // Two fill the free slots and start; the rest wait on the node, assigned, with
    // no start time, until the agent says each started.
    let queued = want - 2;
    let counts = env.core.jobs[&short].counts;
    assert_eq!((counts.started(), counts.assigned), (2, queued));
    assert_eq!((env.core.nodes[&n].slots_running(), env.core.nodes[&n].queued), (2, queued));
    let pool = env.core.pool_summary(&env.core.pools[&PoolName::parse("pool", "p").unwrap()]);
    assert_eq!((pool.running, pool.assigned, pool.slots.used), (2, u64::from(queued), 2));
    let (first, waiting) = (ahead[0].1, ahead[2].1);
    assert!(!env.core.task_summary(&env.core.jobs[&short], first.task.index).unwrap().assigned);
    let view = env.core.task_summary(&env.core.jobs[&short], waiting.task.index).unwrap();
    assert_eq!((view.assigned, view.started_at_ms), (true, None));
    let json = serde_json::to_value(env.core.jobs[&short].counts).unwrap();
    assert_eq!((json["running"].as_u64(), json["assigned"].as_u64()), (Some(2), Some(u64::from(queued))));

    // The first ends; the agent starts the next queued one and says so.
    let started_at = env.core.wall_ms(env.now) + 40;
    env.core.on_task_results(env.now, &n, vec![result(first, Outcome::Succeeded, 5)], &mut env.out);
    env.core.on_tasks_started(&n, vec![(waiting, started_at)]);
    env.check();
    let view = env.core.task_summary(&env.core.jobs[&short], waiting.task.index).unwrap();
    assert_eq!((view.assigned, view.started_at_ms), (false, Some(started_at)));
    assert_eq!(env.core.jobs[&short].counts.assigned, queued - 1);
    // Said twice, or about another node, it changes nothing.
    env.core.on_tasks_started(&n, vec![(waiting, started_at + 1)]);
    env.core.on_tasks_started(&NodeId("n-99".into()), vec![(ahead[3].1, started_at)]);
    env.check();
    assert_eq!(env.core.jobs[&short].counts.assigned, queued - 1);

    // A reconnecting agent's hello says which still wait: the rest started meanwhile.
    let held: Vec<AttemptRef> = ahead[1..].iter().map(|(_, a)| *a).collect();
    let still: Vec<AttemptRef> = ahead[4..].iter().map(|(_, a)| *a).collect();
    let hello = Held { running: held, queued: still.clone(), finished: Vec::new(), address: None };
    env.core.on_hello(env.now, &n, hello, false, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.jobs[&short].counts.assigned, still.len() as u32);
    assert_eq!(env.core.nodes[&n].queued, still.len() as u32);

    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    env.submit(100, 0, 0);
    for _ in 0..2 {
        let placed = env.schedule();
        finish_runs(&mut env, &n, &placed, 5_000);
    }
    assert_eq!(env.schedule().len(), 2, "long tasks are never queued behind others");
}

#[test]
fn prefetch_never_lets_a_lower_priority_job_jump_ahead() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let low = env.submit(100, 0, 0);
    for _ in 0..3 {
        let placed = env.schedule();
        finish_runs(&mut env, &n, &placed, 1);
    }
    let high = env.submit(5, 10, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 1, "the high-priority job has no run times: no prefetch for anyone");
    assert_eq!(placed[0].1.task.job, high);
    assert_eq!(env.core.jobs[&low].counts.running, 0);
}

#[test]
fn a_job_whose_priority_is_raised_goes_first_at_once_and_the_change_is_stored() {
    let mut env = Env::with_pool(Fill::Spread);
    let node = env.node(1);
    let first = env.submit(1, 0, 0);
    let second = env.submit(1, 0, 0);
    env.core.set_job_priority(second, 5, &mut env.out).unwrap();
    assert!(env.take().store.contains(&StoreOp::SetJobPriority { id: second, priority: 5 }));
    let placed = env.schedule();
    assert_eq!(placed.iter().map(|(_, a)| a.task.job).collect::<Vec<_>>(), [second]);
    // Lowered below the other one: that one is next.
    let third = env.submit(1, 0, 0);
    env.core.set_job_priority(first, -1, &mut env.out).unwrap();
    env.report(&node, placed[0].1, Outcome::Succeeded);
    assert_eq!(env.schedule().iter().map(|(_, a)| a.task.job).collect::<Vec<_>>(), [third]);
    assert!(env.core.set_job_priority(JobId(99), 1, &mut env.out).is_err());
    env.check();
}
