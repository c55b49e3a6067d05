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
    assert_eq!(env.schedule().len(), want as usize);
    assert_eq!(env.core.nodes[&n].slots_used, want);
    assert_eq!(env.core.jobs[&short].counts.running, want);

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
