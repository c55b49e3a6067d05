//! The policies tests that need the real store.

use super::*;

#[test]
fn job_retry_of_a_cancelled_job_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(10, 0, 0);
    let a = env.schedule()[0].1;
    env.exit(&n, a, 1);
    env.core.cancel_job(env.now, job, &mut env.out).unwrap();
    // Retry only the failed one: the nine cancelled unrecorded tasks stay cancelled.
    let selection = RetrySelection { failed: true, ..Default::default() };
    assert_eq!(env.core.retry_job(env.now, job, &selection, &mut env.out).unwrap(), 1);
    env.check();
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    let (before, after) = (&env.core.jobs[&job], &restored.jobs[&job]);
    assert_eq!((after.state, after.counts), (JobState::Active, before.counts));
    assert_eq!((after.counts.ready, after.counts.cancelled), (1, 9));
    assert_eq!(after.tasks, before.tasks);
}

#[test]
fn what_a_job_waits_for_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let first = env.submit(1, 0, 0);
    let second = env.submit_spec(after(first, false));
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    assert_eq!(restored.jobs[&second].held_by, BTreeSet::from([first]));
    assert_eq!(restored.jobs[&second].spec.after, vec![After { job: first, any: false }]);
}
