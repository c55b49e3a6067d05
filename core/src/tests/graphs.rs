//! Graph jobs and open jobs.

use super::*;

#[test]
fn graph_tasks_wait_for_their_upstream() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let spec = graph_spec(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]);
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.jobs[&job].counts.waiting, 3);
    let order = |placed: Vec<(NodeId, AttemptRef)>| placed.into_iter().map(|(_, a)| a).collect::<Vec<_>>();
    let first = order(env.schedule());
    assert_eq!(first.iter().map(|a| a.task.index).collect::<Vec<_>>(), vec![0]);
    env.report(&n, first[0], Outcome::Succeeded);
    let middle = order(env.schedule());
    assert_eq!(middle.iter().map(|a| a.task.index).collect::<Vec<_>>(), vec![1, 2]);
    env.report(&n, middle[0], Outcome::Succeeded);
    assert!(env.schedule().is_empty(), "d still waits for c");
    env.report(&n, middle[1], Outcome::Succeeded);
    let last = order(env.schedule());
    assert_eq!(last.iter().map(|a| a.task.index).collect::<Vec<_>>(), vec![3]);
    env.report(&n, last[0], Outcome::Succeeded);
    assert_eq!(env.core.jobs[&job].state, JobState::Completed);
}

#[test]
fn a_failed_task_cancels_what_depends_on_it_and_says_why() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let spec = graph_spec(&[("prep", &[]), ("other", &[]), ("use", &["prep"]), ("final", &["use", "other"])]);
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);
    env.report(&n, placed[0].1, Outcome::Failed);
    let j = &env.core.jobs[&job];
    assert_eq!(j.task(2).unwrap().state, TaskState::Cancelled);
    assert_eq!(j.task(3).unwrap().state, TaskState::Cancelled);
    assert_eq!(j.reasons[&3], "upstream_failed: task 'prep' failed");
    assert_eq!(j.state, JobState::Active, "'other' is still running");
    let reasons: Vec<Option<String>> = env
        .out
        .store
        .iter()
        .filter_map(|op| match op {
            StoreOp::PutTask(t) if t.state == TaskState::Cancelled => Some(t.reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "the reasons are stored");
    env.report(&n, placed[1].1, Outcome::Succeeded);
    assert_eq!(env.core.jobs[&job].state, JobState::Failed);
}

#[test]
fn an_open_job_takes_tasks_until_closed() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let spec = JobSpec { open: true, ..graph_spec(&[("first", &[])]) };
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    let placed = env.schedule();
    env.report(&n, placed[0].1, Outcome::Succeeded);
    assert_eq!(env.core.jobs[&job].state, JobState::Active, "open jobs wait for more");

    // New tasks may depend on old ones (done or not) and on each other.
    let (first, added) = env
        .core
        .add_tasks(env.now, job, vec![group("second", &["first"]), group("third", &["second"])], &mut env.out)
        .unwrap();
    env.check();
    assert_eq!((first, added), (1, 2));
    assert_eq!(env.core.jobs[&job].task(1).unwrap().state, TaskState::Ready);
    assert_eq!(env.core.jobs[&job].task(2).unwrap().state, TaskState::Waiting);
    let err = env.core.add_tasks(env.now, job, vec![group("loop", &["loop"])], &mut env.out).unwrap_err();
    assert!(err.to_string().contains("depends on itself"), "{err}");
    let err = env.core.add_tasks(env.now, job, vec![group("second", &[])], &mut env.out).unwrap_err();
    assert!(err.to_string().contains("used twice"), "{err}");
    env.check();

    for _ in 0..2 {
        let placed = env.schedule();
        env.report(&n, placed[0].1, Outcome::Succeeded);
    }
    assert_eq!(env.core.jobs[&job].state, JobState::Active);
    env.core.close_job(env.now, job, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.jobs[&job].state, JobState::Completed);
    let err = env.core.add_tasks(env.now, job, vec![group("late", &[])], &mut env.out).unwrap_err();
    assert!(err.to_string().contains("not open"), "{err}");
}

#[test]
fn an_empty_open_job_completes_when_closed() {
    let mut env = Env::with_pool(Fill::Spread);
    let graph = corral_types::graph::resolve(vec![]).unwrap();
    let spec = JobSpec { open: true, ..job_spec("p", 1, 0, 0).with_graph(std::sync::Arc::new(graph)) };
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.jobs[&job].tasks.len(), 0);
    env.core.close_job(env.now, job, &mut env.out).unwrap();
    assert_eq!(env.core.jobs[&job].state, JobState::Completed);
}
