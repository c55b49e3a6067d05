//! The graphs tests that need the real store.

use super::*;

#[test]
fn a_graph_job_is_restored_with_its_waiting_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let spec = graph_spec(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("x", &[]), ("y", &["x"])]);
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    let placed = env.schedule();
    env.report(&n, placed[0].1, Outcome::Succeeded); // a
    env.report(&n, placed[1].1, Outcome::Failed); // x, so y is cancelled
    env.schedule(); // b starts
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    let (a, b) = (&env.core.jobs[&job], &restored.jobs[&job]);
    assert_eq!(a.tasks, b.tasks);
    assert_eq!(a.counts, b.counts);
    assert_eq!(a.waiting_on, b.waiting_on);
    assert_eq!(b.reasons[&4], "upstream_failed: task 'x' failed");
}

#[test]
fn tasks_added_after_their_upstream_failed_are_cancelled_at_once() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let spec = JobSpec { open: true, ..graph_spec(&[("flaky", &[])]) };
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    let placed = env.schedule();
    env.report(&n, placed[0].1, Outcome::Failed);
    env.core.add_tasks(env.now, job, vec![group("after", &["flaky"]), group("fine", &[])], &mut env.out).unwrap();
    env.check();
    let j = &env.core.jobs[&job];
    assert_eq!(j.task(1).unwrap().state, TaskState::Cancelled);
    assert_eq!(j.reasons[&1], "upstream_failed: task 'flaky' failed");
    assert_eq!(j.task(2).unwrap().state, TaskState::Ready);

    // Restored from the store, the job has all its tasks.
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    assert_eq!(restored.jobs[&job].tasks, env.core.jobs[&job].tasks);
    assert!(restored.jobs[&job].spec.open);
}
