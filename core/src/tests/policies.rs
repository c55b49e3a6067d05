//! Exit rules, per-job retry delays, throttles, concurrency keys and `job retry`.

use super::*;
use crate::RetrySelection;

fn with_policy(tasks: u32, retries: u32, policy: JobPolicy) -> JobSpec {
    JobSpec { policy, ..job_spec("p", tasks, 0, retries) }
}

fn rules(rules: &[&str]) -> JobPolicy {
    JobPolicy { exit_rules: rules.iter().map(|r| r.parse().unwrap()).collect(), ..Default::default() }
}

fn state(env: &Env, job: JobId) -> JobState {
    env.core.jobs[&job].state
}

#[test]
fn the_first_matching_exit_rule_decides() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let policy = rules(&["3=fail", "4=succeed", "5=retry", "1-10=fail"]);
    let job = env.submit_spec(with_policy(4, 5, policy));
    let placed = env.schedule();
    assert_eq!(placed.len(), 4);
    env.exit(&n, placed[0].1, 3);
    env.exit(&n, placed[1].1, 4);
    env.exit(&n, placed[2].1, 5);
    env.exit(&n, placed[3].1, 7);
    let t = |i| env.task(job, i).state;
    // 3=fail: no retry, though five were allowed; 4=succeed: a success;
    // 5=retry: back in the queue; 7 meets 1-10=fail.
    assert_eq!(
        [t(0), t(1), t(2), t(3)],
        [TaskState::Failed, TaskState::Succeeded, TaskState::Ready, TaskState::Failed]
    );
    let reasons = &env.core.jobs[&job].reasons;
    assert_eq!(reasons[&0], "exit code 3: failed without retrying (exit policy)");
    assert_eq!(reasons[&1], "exit code 4: counted as success (exit policy)");
    assert_eq!(state(&env, job), JobState::Active);
}

#[test]
fn an_unmatched_failure_retries_up_to_max_retries() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit_spec(with_policy(1, 1, rules(&["3=fail"])));
    let a = env.schedule()[0].1;
    env.exit(&n, a, 9);
    assert_eq!(env.task(job, 0).state, TaskState::Ready);
    env.advance(ms(1000));
    env.tick();
    let a = env.schedule()[0].1;
    env.exit(&n, a, 9);
    assert_eq!(env.task(job, 0).state, TaskState::Failed);
    assert_eq!(state(&env, job), JobState::Failed);
}

#[test]
fn fail_job_cancels_the_rest_and_kills_what_runs() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let job = env.submit_spec(with_policy(5, 3, rules(&["signal:KILL=fail-job"])));
    let placed = env.schedule();
    env.take();
    let r = TaskResult { exit_code: None, signal: Some(9), ..result(placed[0].1, Outcome::Failed, 0) };
    env.core.on_task_results(env.now, &n, vec![r], &mut env.out);
    env.check();
    let out = env.take();
    assert!(out.agents.contains(&(n.clone(), ToAgent::Kill(placed[1].1))), "the other running task is killed");
    assert_eq!(state(&env, job), JobState::Failed);
    let c = env.core.jobs[&job].counts;
    assert_eq!((c.failed, c.cancelled), (1, 4));
    assert!(env.core.jobs[&job].reasons[&0].starts_with("killed by signal 9: the job fails"));
}

#[test]
fn timeouts_can_have_a_rule() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit_spec(with_policy(1, 5, rules(&["timeout=fail"])));
    let a = env.schedule()[0].1;
    env.report(&n, a, Outcome::TimedOut);
    assert_eq!(env.task(job, 0).state, TaskState::Failed);
}

#[test]
fn a_jobs_retry_delay_doubles_up_to_its_cap() {
    let mut env = Env::with_pool(Fill::Spread);
    let policy = JobPolicy {
        retry_delay: Some(Duration::from_secs(2)),
        retry_delay_max: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let delays: Vec<Duration> = (1..=4).map(|f| env.core.retry_delay(&policy, f)).collect();
    assert_eq!(delays, [2, 4, 5, 5].map(Duration::from_secs));
    // Without one, the coordinator's backoff (100 ms here, up to 30 s).
    assert_eq!(env.core.retry_delay(&JobPolicy::default(), 3), ms(400));
    // A first delay above the coordinator's cap is not cut to it.
    let long = JobPolicy { retry_delay: Some(Duration::from_secs(60)), ..Default::default() };
    assert_eq!(env.core.retry_delay(&long, 1), Duration::from_secs(60));
    let n = env.node(1);
    let job = env.submit_spec(with_policy(1, 3, policy));
    let a = env.schedule()[0].1;
    env.report(&n, a, Outcome::Failed);
    let (at, key) = *env.core.delayed.first().unwrap();
    assert_eq!((at - env.now, key.job), (Duration::from_secs(2), job));
}

#[test]
fn max_running_holds_a_job_to_its_limit_and_lets_others_by() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(8);
    let throttled = env.submit_spec(with_policy(100, 0, JobPolicy { max_running: Some(3), ..Default::default() }));
    let other = env.submit(2, -1, 0);
    let placed = env.schedule();
    let of = |job| placed.iter().filter(|(_, a)| a.task.job == job).count();
    assert_eq!((of(throttled), of(other)), (3, 2));
    // As each one ends, one more starts, never more than three at once.
    let mut running: Vec<AttemptRef> = placed.iter().filter(|(_, a)| a.task.job == throttled).map(|p| p.1).collect();
    for _ in 0..97 {
        let done = running.remove(0);
        env.report(&n, done, Outcome::Succeeded);
        let next = env.schedule();
        assert_eq!(next.len(), 1);
        running.push(next[0].1);
        assert_eq!(env.core.jobs[&throttled].counts.running, 3);
    }
    for a in running {
        env.report(&n, a, Outcome::Succeeded);
    }
    assert_eq!(env.core.jobs[&throttled].counts.succeeded, 100);
}

#[test]
fn a_concurrency_key_is_one_limit_across_jobs_and_pools() {
    let mut env = Env::with_pool(Fill::Spread);
    env.core.create_pool(env.now, pool_spec("q", Provider::Static, 0, Fill::Spread), &mut env.out).unwrap();
    let n = env.node(4);
    let singleton = || JobPolicy { concurrency_key: Some("db-migrate".into()), ..Default::default() };
    let a = env.submit_spec(with_policy(3, 0, singleton()));
    let b = env.submit_spec(with_policy(3, 0, singleton()));
    let c = env.submit_spec(JobSpec { pool: PoolName::parse("pool", "q").unwrap(), ..with_policy(1, 0, singleton()) });
    let placed = env.schedule();
    assert_eq!(placed.len(), 1, "one task of all jobs with the key: {placed:?}");
    assert_eq!(env.core.keyed["db-migrate"], 1);
    let mut order = vec![placed[0].1.task.job];
    let mut current = placed[0].1;
    for _ in 0..5 {
        env.report(&n, current, Outcome::Succeeded);
        let next = env.schedule();
        assert_eq!(next.len(), 1);
        current = next[0].1;
        order.push(current.task.job);
    }
    env.report(&n, current, Outcome::Succeeded);
    assert!(env.core.keyed.is_empty());
    assert_eq!(order, vec![a, a, a, b, b, b], "by priority and submission order");
    // Pool q has no node: job c waits; it was never started beside the others.
    assert_eq!(env.core.jobs[&c].counts.ready, 1);
}

#[test]
fn a_node_lost_under_a_keyed_task_frees_the_key() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let policy = JobPolicy { concurrency_key: Some("k".into()), max_running: Some(2), ..Default::default() };
    env.submit_spec(with_policy(4, 0, policy));
    assert_eq!(env.schedule().len(), 2);
    env.core.on_disconnected(&n);
    env.advance(ms(6000));
    env.tick();
    assert!(env.core.keyed.is_empty(), "{:?}", env.core.keyed);
    let m = env.node(2);
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);
    assert!(placed.iter().all(|(node, _)| *node == m));
}

#[test]
fn job_retry_puts_failed_tasks_back_and_reopens_the_job() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let job = env.submit(4, 0, 0);
    let placed = env.schedule();
    env.exit(&n, placed[0].1, 0);
    env.exit(&n, placed[1].1, 2);
    env.exit(&n, placed[2].1, 2);
    env.exit(&n, placed[3].1, 0);
    assert_eq!(state(&env, job), JobState::Failed);
    env.take();
    let tasks = env.core.retry_job(env.now, job, &RetrySelection::default(), &mut env.out).unwrap();
    env.check();
    assert_eq!(tasks, 2);
    assert_eq!(state(&env, job), JobState::Active);
    assert_eq!(env.core.jobs[&job].finished_at_ms, None);
    let again = env.schedule();
    assert_eq!(again.len(), 2);
    // New attempts, numbered on from the old ones.
    assert!(again.iter().all(|(_, a)| a.attempt == 2 && [1, 2].contains(&a.task.index)));
    for (_, a) in again {
        env.exit(&n, a, 0);
    }
    assert_eq!(state(&env, job), JobState::Completed);
    // Nothing left to retry in that selection: refused, nothing changes.
    let err = env.core.retry_job(env.now, job, &RetrySelection::default(), &mut env.out).unwrap_err();
    assert!(err.to_string().contains("no task to retry"), "{err}");
}

#[test]
fn job_retry_brings_back_what_was_cancelled_upstream_failed() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let job = env.submit_spec(graph_spec(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]));
    let placed = env.schedule();
    let a = placed.iter().find(|(_, a)| a.task.index == 0).unwrap().1;
    let d = placed.iter().find(|(_, a)| a.task.index == 3).unwrap().1;
    env.exit(&n, a, 1);
    env.exit(&n, d, 0);
    assert_eq!(state(&env, job), JobState::Failed);
    assert_eq!(env.task(job, 2).state, TaskState::Cancelled);
    let tasks = env.core.retry_job(env.now, job, &RetrySelection::default(), &mut env.out).unwrap();
    env.check();
    assert_eq!(tasks, 3, "a, and b and c that were cancelled because of it");
    let t = |i| env.task(job, i).state;
    assert_eq!(
        [t(0), t(1), t(2), t(3)],
        [TaskState::Ready, TaskState::Waiting, TaskState::Waiting, TaskState::Succeeded]
    );
    for _ in 0..3 {
        let placed = env.schedule();
        assert_eq!(placed.len(), 1);
        env.exit(&n, placed[0].1, 0);
    }
    assert_eq!(state(&env, job), JobState::Completed);
}

#[test]
fn job_retry_refuses_unfinished_tasks_and_unknown_jobs() {
    let mut env = Env::with_pool(Fill::Spread);
    let job = env.submit(2, 0, 0);
    env.take();
    let named = RetrySelection { tasks: vec![1], ..Default::default() };
    let err = env.core.retry_job(env.now, job, &named, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("is ready; only finished tasks are retried"), "{err}");
    assert!(env.core.retry_job(env.now, JobId(99), &named, &mut env.out).is_err());
    assert!(env.out.is_empty());
}

#[test]
fn a_throttled_job_asks_the_autoscaler_only_for_what_it_may_run() {
    let mut env = Env::with_pool(Fill::Spread);
    env.submit_spec(with_policy(1000, 0, JobPolicy { max_running: Some(4), ..Default::default() }));
    let pool = &env.core.pools[&PoolName::parse("pool", "p").unwrap()];
    assert_eq!(env.core.autoscale_snapshot(pool, env.now).needed_slots, 4);
}

#[test]
fn a_job_after_another_starts_only_once_that_one_ends() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let first = env.submit(1, 0, 0);
    let ok = env.submit_spec(after(first, false));
    let any = env.submit_spec(after(first, true));
    let placed = env.schedule();
    assert_eq!(placed.len(), 1, "only the first job's task: {placed:?}");
    assert_eq!(env.core.jobs[&any].held_by, BTreeSet::from([first]));
    assert_eq!(env.core.jobs[&ok].held_by, BTreeSet::from([first]));
    env.exit(&n, placed[0].1, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 4, "both waiting jobs start");
    assert!(env.core.waited_for.is_empty());
}

#[test]
fn afterok_is_cancelled_when_the_job_fails_and_afterany_runs() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let first = env.submit(1, 0, 0);
    let ok = env.submit_spec(after(first, false));
    let chained = env.submit_spec(after(ok, false));
    let any = env.submit_spec(after(first, true));
    let placed = env.schedule();
    env.exit(&n, placed[0].1, 1);
    assert_eq!(state(&env, ok), JobState::Cancelled);
    assert_eq!(env.core.jobs[&ok].reason.as_deref(), Some("after: job 1 ended failed, not completed"));
    assert_eq!(state(&env, chained), JobState::Cancelled, "a chain is cancelled down its length");
    assert_eq!(env.schedule().len(), 2, "the afterany job runs");
    assert_eq!(env.core.jobs[&any].counts.running, 2);
    // An ok-dependency on a job that already failed could never start: refused.
    let err = env.core.submit_job(env.now, after(first, false), &mut env.out).unwrap_err();
    assert!(err.to_string().contains("could never start"), "{err}");
    let err = env.core.submit_job(env.now, after(JobId(99), true), &mut env.out).unwrap_err();
    assert!(err.to_string().contains("99") && err.to_string().contains("--after"), "{err}");
}

#[test]
fn each_line_entries_reach_the_tasks() {
    let mut env = Env::with_pool(Fill::Spread);
    env.node(2);
    let mut spec = job_spec("p", 2, 0, 0);
    spec.task.entries = vec!["a.png".into(), "b.png".into()];
    env.submit_spec(spec);
    let mut out = Outbox::default();
    env.core.schedule(env.now, &mut out);
    let entries: Vec<String> = out
        .agents
        .iter()
        .filter_map(|(_, m)| match m {
            ToAgent::Assign(a) => a.env.get("CORRAL_ENTRY").cloned(),
            _ => None,
        })
        .collect();
    assert_eq!(entries, ["a.png", "b.png"]);
}

#[test]
fn job_retry_refuses_what_could_never_run() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    // B waits for A; retrying B alone would leave it waiting for a failed A forever.
    let job = env.submit_spec(graph_spec(&[("a", &[]), ("b", &["a"])]));
    let a = env.schedule()[0].1;
    env.exit(&n, a, 1);
    env.take();
    let only_b = RetrySelection { cancelled: true, ..Default::default() };
    let err = env.core.retry_job(env.now, job, &only_b, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("task b waits for a, which stays failed"), "{err}");
    assert!(env.out.is_empty());
    // A job that needed another to complete stays refused while that one failed.
    let first = env.submit(1, 0, 0);
    let waiting = env.submit_spec(after(first, false));
    let placed = env.schedule();
    env.exit(&n, placed[0].1, 1);
    assert_eq!(state(&env, waiting), JobState::Cancelled);
    env.take();
    let all = RetrySelection { cancelled: true, ..Default::default() };
    let err = env.core.retry_job(env.now, waiting, &all, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("could never start"), "{err}");
    assert!(env.out.is_empty());
}
