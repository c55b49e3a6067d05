//! The jobs tests that need the real store.

use super::*;

#[test]
fn an_array_listed_with_gaps_runs_exactly_its_indices_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(8);
    let indices: Indices = "1,3,5-9:2,20".parse().unwrap();
    let job = env.submit_spec(job_spec("p", 1, 0, 0).with_indices(indices));
    assert_eq!(env.core.jobs[&job].tasks.len(), 6);
    let placed = env.schedule();
    let mut ran: Vec<u32> = placed.iter().map(|(_, a)| a.task.index).collect();
    ran.sort();
    assert_eq!(ran, vec![1, 3, 5, 7, 9, 20]);
    assert!(env.core.jobs[&job].task(4).is_none(), "4 is not one of its indices");
    assert!(env.core.cancel_task(env.now, TaskKey { job, index: 2 }, &mut env.out).is_err());
    for (_, a) in &placed {
        let outcome = if a.task.index == 7 { Outcome::Failed } else { Outcome::Succeeded };
        env.report(&n, *a, outcome);
    }
    assert_eq!(env.core.jobs[&job].state, JobState::Failed);
    env.core.retry_job(env.now, job, &RetrySelection { tasks: vec![7], ..Default::default() }, &mut env.out).unwrap();
    env.check();
    let again = env.schedule();
    assert_eq!(again.iter().map(|(_, a)| a.task.index).collect::<Vec<_>>(), vec![7]);

    store.apply(&std::mem::take(&mut env.out.store)).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    assert_eq!(restored.jobs[&job].spec, env.core.jobs[&job].spec);
    assert_eq!(restored.jobs[&job].tasks, env.core.jobs[&job].tasks);
    assert_eq!(restored.jobs[&job].spec.indices_text(), "1,3,5-9:2,20");
}
