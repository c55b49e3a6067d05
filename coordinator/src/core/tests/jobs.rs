//! Jobs: retries, timeouts, cancel, bad requests.

use super::*;

#[test]
fn retries_back_off_then_fail_the_task() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(1, 0, 2);
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let placed = env.schedule();
        assert_eq!(placed.len(), 1, "attempt {attempt}");
        assert_eq!(placed[0].1.attempt, attempt);
        env.report(&n, placed[0].1, Outcome::Failed);
        if attempt < 3 {
            assert_eq!(env.task(job, 0).state, TaskState::Ready);
            assert!(env.schedule().is_empty(), "backing off");
            let (at, _) = *env.core.delayed.first().unwrap();
            delays.push(at - env.now);
            env.advance(at - env.now);
            env.tick();
        }
    }
    assert_eq!(delays, vec![ms(100), ms(200)]);
    let t = env.task(job, 0);
    assert_eq!((t.state, t.failures, t.attempt), (TaskState::Failed, 3, 3));
    assert_eq!(env.core.jobs[&job].state, JobState::Failed);
}

#[test]
fn timeouts_count_as_failures() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(1, 0, 0);
    let (_, a) = env.schedule()[0].clone();
    env.report(&n, a, Outcome::TimedOut);
    assert_eq!(env.task(job, 0).state, TaskState::Failed);
}

#[test]
fn cancel_kills_running_and_drops_queued() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(3, 0, 0);
    let (_, a) = env.schedule()[0].clone();
    env.take();
    env.core.cancel_job(env.now, job, &mut env.out).unwrap();
    env.check();
    let out = env.take();
    assert!(out.agents.contains(&(n.clone(), ToAgent::Kill(a))));
    assert_eq!(env.core.jobs[&job].state, JobState::Cancelled);
    assert_eq!(env.core.jobs[&job].counts.cancelled, 3);
    assert!(env.schedule().is_empty());
    // The agent's report of the killed attempt changes nothing.
    env.report(&n, a, Outcome::Cancelled);
    assert_eq!(env.core.jobs[&job].counts.cancelled, 3);
}

#[test]
fn bad_requests_change_nothing() {
    let mut env = Env::with_pool(Fill::Spread);
    env.take();
    let before = format!("{:?}", env.core.jobs);
    let err = env.core.submit_job(env.now, job_spec("nope", 1, 0, 0), &mut env.out).unwrap_err();
    assert!(err.to_string().contains("pool 'nope' does not exist"), "{err}");
    let mut big = job_spec("p", 1, 0, 0);
    big.task.slots = 3;
    let err = env.core.submit_job(env.now, big, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("task.slots"), "{err}");
    let err =
        env.core.create_pool(env.now, pool_spec("p", Provider::Static, 0, Fill::Spread), &mut env.out).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }));
    assert!(env.core.cancel_job(env.now, JobId(42), &mut env.out).is_err());
    assert!(env.core.drain_node(&NodeId::from_seq(42), &mut env.out).is_err());
    assert!(env.out.is_empty(), "refused requests write nothing: {:?}", env.out);
    assert_eq!(before, format!("{:?}", env.core.jobs));
    env.check();
}
