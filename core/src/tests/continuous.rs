//! Continuous jobs: replicas started again whenever they end, with a backoff that
//! doubles and resets, exit rules that still decide, and `job scale`.

use super::*;
use crate::continuous::restarts_in_a_row;
use corral_types::policy::{REPLICA_DELAY_MAX, REPLICA_RESET_AFTER};

fn continuous(replicas: u32, policy: JobPolicy) -> JobSpec {
    let policy = JobPolicy { replicas: Some(replicas), ..policy };
    JobSpec { policy, ..job_spec("p", replicas, 0, 0) }
}

fn delay_of(env: &Env, job: JobId, index: u32) -> Option<Duration> {
    let key = TaskKey { job, index };
    env.core.delayed.iter().find(|(_, k)| *k == key).map(|(at, _)| *at - env.now)
}

fn running(env: &Env, job: JobId) -> u32 {
    env.core.jobs[&job].counts.running
}

#[test]
fn a_replica_starts_again_whatever_its_exit_after_a_doubling_delay() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let policy = JobPolicy { retry_delay: Some(Duration::from_secs(1)), ..Default::default() };
    let job = env.submit_spec(continuous(2, policy));
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);
    // An exit 0 is no completion: the replica waits its first delay and runs again.
    env.exit(&n, placed[0].1, 0);
    assert_eq!(env.task(job, 0).state, TaskState::Ready);
    assert_eq!(delay_of(&env, job, 0), Some(Duration::from_secs(1)));
    assert_eq!(env.core.jobs[&job].state, JobState::Active);
    // Each quick end in a row doubles the wait.
    let mut waits = Vec::new();
    for _ in 0..4 {
        let wait = delay_of(&env, job, 0).unwrap();
        env.advance(wait);
        // The node says it is alive (the waits are longer than a heartbeat timeout).
        assert!(env.core.on_node_message(env.now, &n, &mut env.out));
        env.tick();
        let again = env.schedule();
        assert_eq!(again.len(), 1, "the replica is placed again once its delay is over");
        env.exit(&n, again[0].1, 1);
        waits.push(delay_of(&env, job, 0).unwrap().as_secs());
    }
    assert_eq!(waits, [2, 4, 8, 16]);
    assert_eq!(env.task(job, 0).attempt, 5);
    assert_eq!(env.task(job, 1).state, TaskState::Running, "the other replica ran on untouched");
}

#[test]
fn the_backoff_stops_at_five_minutes_and_starts_over_after_a_long_run() {
    let env = Env::with_pool(Fill::Spread);
    let policy = JobPolicy { replicas: Some(1), ..Default::default() };
    let delays: Vec<Duration> = [1, 5, 13, 30].iter().map(|&f| env.core.retry_delay(&policy, f)).collect();
    assert_eq!(delays, [ms(100), ms(1600), REPLICA_DELAY_MAX, REPLICA_DELAY_MAX]);
    // A job's own cap still wins.
    let capped = JobPolicy { retry_delay_max: Some(Duration::from_secs(2)), ..policy };
    assert_eq!(env.core.retry_delay(&capped, 30), Duration::from_secs(2));
    assert_eq!(restarts_in_a_row(6, ms(10)), 7);
    assert_eq!(restarts_in_a_row(6, REPLICA_RESET_AFTER), 1);

    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit_spec(continuous(1, JobPolicy::default()));
    for _ in 0..3 {
        let a = env.schedule()[0].1;
        env.exit(&n, a, 1);
        let wait = delay_of(&env, job, 0).unwrap();
        env.advance(wait);
        env.tick();
    }
    assert_eq!(env.task(job, 0).failures, 3);
    let a = env.schedule()[0].1;
    let long = TaskResult { exit_code: Some(1), ..result(a, Outcome::Failed, REPLICA_RESET_AFTER.as_millis() as u64) };
    env.core.on_task_results(env.now, &n, vec![long], &mut env.out);
    env.check();
    assert_eq!(env.task(job, 0).failures, 1);
    assert_eq!(delay_of(&env, job, 0), Some(ms(100)), "after a long run, the first delay again");
}

#[test]
fn exit_rules_still_decide_and_a_timeout_restarts() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let policy =
        JobPolicy { exit_rules: vec!["3=fail".parse().unwrap(), "9=fail-job".parse().unwrap()], ..Default::default() };
    let job = env.submit_spec(continuous(3, policy));
    let placed = env.schedule();
    env.report(&n, placed[0].1, Outcome::TimedOut);
    assert_eq!(env.task(job, 0).state, TaskState::Ready, "a timeout restarts the replica");
    env.exit(&n, placed[1].1, 3);
    assert_eq!(env.task(job, 1).state, TaskState::Failed, "`fail` stops that replica for good");
    assert_eq!(env.core.jobs[&job].state, JobState::Active);
    env.take();
    env.exit(&n, placed[2].1, 9);
    assert_eq!(env.core.jobs[&job].state, JobState::Failed, "`fail-job` ends the whole job");
    assert!(env.core.jobs[&job].reason.as_deref().unwrap_or("").contains("exit code 9"));
}

#[test]
fn a_replica_on_a_lost_node_starts_elsewhere_at_once() {
    let mut env = Env::with_pool(Fill::Spread);
    let a = env.node(1);
    let job = env.submit_spec(continuous(1, JobPolicy::default()));
    let placed = env.schedule();
    assert_eq!(placed[0].0, a);
    let b = env.node(1);
    env.core.declare_lost(env.now, &a, NodeReason::HeartbeatTimeout, &mut env.out);
    env.check();
    assert_eq!(delay_of(&env, job, 0), None, "no backoff for a lost node");
    let again = env.schedule();
    assert_eq!((again.len(), &again[0].0), (1, &b));
}

#[test]
fn scale_starts_more_at_once_and_stops_the_highest() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(8);
    let job = env.submit_spec(continuous(3, JobPolicy::default()));
    let placed = env.schedule();
    assert_eq!(placed.len(), 3);
    env.take();
    env.core.scale_job(env.now, job, 1, &mut env.out).unwrap();
    env.check();
    let out = env.take();
    let killed: Vec<u32> = out
        .agents
        .iter()
        .filter_map(|(_, m)| match m {
            ToAgent::Kill(a) => Some(a.task.index),
            _ => None,
        })
        .collect();
    assert_eq!(killed, [1, 2]);
    assert_eq!(env.task(job, 2).state, TaskState::Cancelled);
    assert_eq!(env.core.jobs[&job].reasons[&2], "scaled down to 1");
    assert!(out.store.iter().any(|op| matches!(op, StoreOp::ScaleJob { last_index: 2, .. })));
    assert_eq!(env.core.jobs[&job].state, JobState::Active);
    // Up to 4: the two scaled down come back, one more is made.
    env.core.scale_job(env.now, job, 4, &mut env.out).unwrap();
    env.check();
    let spec = &env.core.jobs[&job].spec;
    assert_eq!((spec.last_index, spec.policy.replicas), (3, Some(4)));
    let placed = env.schedule();
    let mut started: Vec<u32> = placed.iter().map(|(_, a)| a.task.index).collect();
    started.sort();
    assert_eq!(started, [1, 2, 3]);
    assert_eq!(running(&env, job), 4);
    assert!(!env.core.jobs[&job].reasons.contains_key(&1));
    let _ = n;
}

#[test]
fn scale_refuses_what_is_not_a_running_continuous_job() {
    let mut env = Env::with_pool(Fill::Spread);
    env.node(2);
    let plain = env.submit(2, 0, 0);
    let err = env.core.scale_job(env.now, plain, 3, &mut env.out).unwrap_err().to_string();
    assert!(err.contains("not continuous"), "{err}");
    let job = env.submit_spec(continuous(2, JobPolicy::default()));
    let err = env.core.scale_job(env.now, job, 0, &mut env.out).unwrap_err().to_string();
    assert!(err.starts_with("invalid replicas: must be 1 to 1000"), "{err}");
    env.core.cancel_job(env.now, job, &mut env.out).unwrap();
    env.check();
    let err = env.core.scale_job(env.now, job, 3, &mut env.out).unwrap_err().to_string();
    assert!(err.contains("has ended (cancelled)"), "{err}");
}

#[test]
fn a_replica_keeps_its_last_hundred_attempts() {
    use crate::continuous::{forget_before, KEPT_ATTEMPTS};
    let mut env = Env::with_pool(Fill::Spread);
    let replicas = env.submit_spec(continuous(1, JobPolicy::default()));
    let plain = env.submit(1, 0, 0);
    let job = &env.core.jobs[&replicas];
    assert!(forget_before(job, 0, KEPT_ATTEMPTS).is_none());
    let forgotten = forget_before(job, 0, KEPT_ATTEMPTS + 5);
    let want = AttemptRef { task: TaskKey { job: replicas, index: 0 }, attempt: 5 };
    assert!(matches!(forgotten, Some(StoreOp::ForgetAttempt { attempt, ranks: 1 }) if attempt == want));
    assert!(forget_before(&env.core.jobs[&plain], 0, KEPT_ATTEMPTS + 5).is_none(), "other jobs keep every attempt");
}

#[test]
fn a_long_lived_replica_starts_its_count_of_node_losses_over() {
    let mut env = Env::with_pool(Fill::Spread);
    let a = env.node(1);
    let job = env.submit_spec(continuous(1, JobPolicy::default()));
    env.schedule();
    let limit = env.core.config.max_node_losses;
    env.core.jobs.get_mut(&job).unwrap().tasks[0].node_losses = limit;
    env.advance(REPLICA_RESET_AFTER);
    let b = env.node(1);
    env.core.declare_lost(env.now, &a, NodeReason::HeartbeatTimeout, &mut env.out);
    env.check();
    assert_eq!((env.task(job, 0).state, env.task(job, 0).node_losses), (TaskState::Ready, 1));
    // A quick loss right after counts on from there.
    let again = env.schedule();
    assert_eq!(again[0].0, b);
    env.core.declare_lost(env.now, &b, NodeReason::HeartbeatTimeout, &mut env.out);
    env.check();
    assert_eq!(env.task(job, 0).node_losses, 2);
}
