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

#[test]
fn a_callback_is_ordered_when_the_job_ends_and_stops_once_accepted() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let spec = JobSpec { notify: Some("http://hooks.example/done".into()), ..job_spec("p", 1, 0, 0) };
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    let placed = env.schedule();
    assert!(env.take().notify.is_empty(), "nothing to post while the job runs");
    env.report(&n, placed[0].1, Outcome::Succeeded);
    let out = env.take();
    assert_eq!(out.notify.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&out.notify[0].body).unwrap();
    assert_eq!((body["job"].as_u64(), body["state"].as_str()), (Some(job.0), Some("completed")));
    // The job's end is written before the post is ordered.
    assert!(out.store.iter().any(|op| matches!(op, StoreOp::SetJobState { id, .. } if *id == job)));

    env.core.on_notify_result(env.now, job, Err("HTTP 500".into()), &mut env.out);
    env.advance(ms(50));
    env.core.on_notify_result(env.now, job, Ok(()), &mut env.out);
    let delivery = env.core.jobs[&job].delivery.clone();
    assert_eq!(delivery.attempts, 2);
    assert_eq!(delivery.last_error.as_deref(), Some("HTTP 500"));
    assert!(delivery.delivered_at_ms.is_some());
    let stored = env.take().store;
    assert_eq!(stored.iter().filter(|op| matches!(op, StoreOp::SetDelivery { .. })).count(), 2);
    // A late second acceptance changes nothing.
    env.core.on_notify_result(env.now, job, Ok(()), &mut env.out);
    assert!(env.take().store.is_empty());
    env.check();
}

#[test]
fn a_restart_posts_again_only_what_was_not_delivered() {
    let record = |id: u64, delivered_at_ms: Option<u64>| JobRecord {
        id: JobId(id),
        spec: JobSpec { notify: Some(format!("http://hooks.example/{id}")), ..job_spec("p", 1, 0, 0) },
        state: JobState::Completed,
        submitted_at_ms: 1,
        finished_at_ms: Some(2),
        delivery: Delivery { attempts: 1, last_error: None, delivered_at_ms },
        reason: None,
    };
    let snapshot = Snapshot {
        pools: vec![(pool_spec("p", Provider::Static, 0, Fill::Spread), 0, false)],
        jobs: vec![record(1, None), record(2, Some(5))],
        ..Snapshot::default()
    };
    let mut env = Env::new();
    env.core.restore(snapshot, env.now, &mut env.out);
    let out = env.take();
    assert_eq!(out.notify.iter().map(|n| n.job).collect::<Vec<_>>(), [JobId(1)]);
    assert_eq!(out.notify[0].url, "http://hooks.example/1");
    env.check();
}

#[test]
fn only_the_node_an_attempt_runs_on_writes_its_output() {
    let mut env = Env::with_pool(Fill::Spread);
    let owner = env.node(1);
    let other = env.node(1);
    env.submit(1, 0, 0);
    let (on, a) = env.schedule()[0].clone();
    let (owner, other) = if on == owner { (owner, other) } else { (other, owner) };
    let chunk = |data: &[u8]| LogChunk { attempt: a, rank: 0, stderr: false, offset: 0, data: data.to_vec() };
    let logs = |out: &Outbox| out.store.iter().filter(|op| matches!(op, StoreOp::Log(_))).count();
    env.take();
    env.core.on_logs(&other, vec![chunk(b"forged")], &mut env.out);
    assert_eq!(logs(&env.take()), 0, "another node's chunk is dropped");
    env.core.on_logs(&owner, vec![chunk(b"real")], &mut env.out);
    assert_eq!(logs(&env.take()), 1);
    // After its result, output the owner ships again (after a reconnect) still counts.
    env.report(&owner, a, Outcome::Succeeded);
    env.take();
    env.core.on_logs(&owner, vec![chunk(b"real")], &mut env.out);
    assert_eq!(logs(&env.take()), 1);
    env.core.on_logs(&other, vec![chunk(b"forged")], &mut env.out);
    assert_eq!(logs(&env.take()), 0);
}

#[test]
fn output_beyond_a_jobs_limit_is_dropped_and_the_log_ends_with_a_marker() {
    let mut env = Env::with_pool(Fill::Spread);
    let node = env.node(1);
    let spec = JobSpec { max_output: 10, ..job_spec("p", 1, 0, 0) };
    env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    let (_, a) = env.schedule()[0].clone();
    env.take();
    let chunk = |offset: u64, data: &[u8]| LogChunk { attempt: a, rank: 0, stderr: false, offset, data: data.to_vec() };
    let logs = |out: &Outbox| -> Vec<(u64, Vec<u8>)> {
        out.store
            .iter()
            .filter_map(|op| match op {
                StoreOp::Log(c) => Some((c.offset, c.data.clone())),
                _ => None,
            })
            .collect()
    };
    // A chunk across the limit is cut at it; one past it is dropped.
    env.core.on_logs(&node, vec![chunk(4, b"0123456789"), chunk(10, b"late")], &mut env.out);
    assert_eq!(logs(&env.take()), [(4, b"012345".to_vec())]);
    // The result says how much was written: the marker goes at the limit, and the
    // attempt notes it.
    let done = TaskResult { written: [25, 3], ..result(a, Outcome::Succeeded, 5) };
    env.core.on_task_results(env.now, &node, vec![done], &mut env.out);
    let out = env.take();
    let logs = logs(&out);
    assert_eq!(logs.len(), 1, "stderr was within its limit");
    assert_eq!(logs[0].0, 10);
    let marker = String::from_utf8(logs[0].1.clone()).unwrap();
    assert!(marker.contains("stdout truncated here: kept the first 10 B of 25 B"), "{marker}");
    let note = out.store.iter().find_map(|op| match op {
        StoreOp::EndAttempt { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert_eq!(note.as_deref(), Some("stdout truncated to 10 B of 25 B"));
    env.check();
}

#[test]
fn submissions_past_the_queued_task_limit_are_refused_and_change_nothing() {
    let mut env = Env::with_pool(Fill::Spread);
    env.core.config.max_queued_tasks = 10;
    env.submit(6, 0, 0);
    env.take();
    let err = env.core.submit_job(env.now, job_spec("p", 5, 0, 0), &mut env.out).unwrap_err();
    assert!(matches!(err, Error::Exhausted(_)), "{err}");
    assert!(err.to_string().contains("holds 6 unfinished tasks and may hold 10"), "{err}");
    assert!(env.take().store.is_empty(), "nothing was stored");
    assert_eq!(env.core.jobs.len(), 1);
    // Exactly up to the limit is fine; finished tasks make room.
    env.submit(4, 0, 0);
    assert_eq!(env.core.unfinished_tasks(), 10);
    env.check();
}

#[test]
fn one_idempotency_key_makes_one_job_for_a_day() {
    use crate::keys::{IdempotencyKey, KEEP_MS};
    let mut env = Env::with_pool(Fill::Spread);
    let key = |digest: &str| Some(IdempotencyKey { owner: "ci".into(), key: "k1".into(), digest: digest.into() });
    let first = env.core.submit_job_once(env.now, job_spec("p", 1, 0, 0), key("a"), &mut env.out).unwrap();
    let out = env.take();
    let inserts = |out: &Outbox| out.store.iter().filter(|op| matches!(op, StoreOp::InsertJob(_))).count();
    assert_eq!(inserts(&out), 1);
    assert!(out.store.iter().any(|op| matches!(op, StoreOp::PutIdempotencyKey(_))), "stored with its job");
    // The same request again: the same job, and nothing changes.
    let again = env.core.submit_job_once(env.now, job_spec("p", 1, 0, 0), key("a"), &mut env.out).unwrap();
    assert_eq!(again, first);
    assert!(env.take().store.is_empty());
    // Another request under the key: refused, naming it and the job it made.
    let err = env.core.submit_job_once(env.now, job_spec("p", 2, 0, 0), key("b"), &mut env.out).unwrap_err();
    assert!(matches!(err, Error::KeyReused { .. }));
    assert!(err.to_string().contains("idempotency key 'k1' was used for a different request (it made job 1)"), "{err}");
    // Another owner's key of the same name is another key.
    let theirs = Some(IdempotencyKey { owner: "other".into(), key: "k1".into(), digest: "a".into() });
    assert_ne!(env.core.submit_job_once(env.now, job_spec("p", 1, 0, 0), theirs, &mut env.out).unwrap(), first);
    env.take();
    // A day later the key is forgotten, in memory and in the store.
    env.now += Duration::from_millis(KEEP_MS + 1);
    env.tick();
    let out = env.take();
    assert!(out.store.iter().any(|op| matches!(op, StoreOp::ExpireIdempotencyKeys { .. })));
    let later = env.core.submit_job_once(env.now, job_spec("p", 1, 0, 0), key("a"), &mut env.out).unwrap();
    assert_ne!(later, first);
    env.check();
}

#[test]
fn a_finished_job_is_deleted_once_it_is_past_retention_and_an_active_one_never() {
    let mut env = Env::with_pool(Fill::Spread);
    env.core.config.retain = Duration::from_secs(3600);
    let node = env.node(1);
    let done = env.submit(1, 0, 0);
    let active = env.submit(1, 0, 0);
    let (_, a) = env.schedule()[0].clone();
    env.report(&node, a, Outcome::Succeeded);
    assert_eq!(env.core.jobs[&done].state, JobState::Completed);
    let deleted = |out: &Outbox| -> Vec<JobId> {
        out.store
            .iter()
            .filter_map(|op| match op {
                StoreOp::DeleteJob(id) => Some(*id),
                _ => None,
            })
            .collect()
    };
    env.take();
    env.now += Duration::from_secs(3599);
    env.tick();
    assert!(deleted(&env.take()).is_empty(), "not yet");
    env.now += Duration::from_secs(11);
    env.tick();
    assert_eq!(deleted(&env.take()), [done]);
    assert!(!env.core.jobs.contains_key(&done));
    assert!(env.core.jobs.contains_key(&active), "an active job is never deleted");
    let err = env.core.delete_job(env.now, active, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("is active; cancel it first"), "{err}");
    env.check();
}

#[test]
fn a_job_given_no_name_is_named_after_its_command() {
    use crate::jobs::default_name;
    let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    for (words, name) in [
        (&["echo", "hi"][..], "echo"),
        (&["/usr/bin/convert", "a.jpg"][..], "convert"),
        (&["sh", "-c", "ffmpeg -i in.mp4 out.webm"][..], "ffmpeg"),
        (&["/bin/bash", "-c", "./render.sh --fast"][..], "render.sh"),
        (&["sh", "-c", "[ -f x ] && echo y"][..], "sh"),
        (&["sh", "script.sh"][..], "sh"),
        (&[][..], ""),
    ] {
        assert_eq!(default_name(&argv(words)), name, "{words:?}");
    }
    let mut env = Env::with_pool(Fill::Spread);
    let spec = JobSpec { task: TaskSpec::command(argv(&["sleep", "1"])), ..job_spec("p", 1, 0, 0) };
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    assert_eq!(env.core.jobs[&job].spec.name, "sleep");
    let named = JobSpec { name: "nightly".into(), ..job_spec("p", 1, 0, 0) };
    let job = env.core.submit_job(env.now, named, &mut env.out).unwrap();
    assert_eq!(env.core.jobs[&job].spec.name, "nightly", "a name given is kept");
}

#[test]
fn a_job_list_shows_active_jobs_and_those_ended_since_a_time_newest_first_with_a_limit() {
    use crate::views::JobFilter;
    let mut env = Env::with_pool(Fill::Spread);
    let old = env.core.submit_job(env.now, job_spec("p", 1, 0, 0), &mut env.out).unwrap();
    env.core.cancel_job(env.now, old, &mut env.out).unwrap();
    env.advance(Duration::from_secs(7200));
    let since = env.core.wall_ms(env.now);
    let recent = env.core.submit_job(env.now, job_spec("p", 1, 0, 0), &mut env.out).unwrap();
    env.core.cancel_job(env.now, recent, &mut env.out).unwrap();
    let active = env.core.submit_job(env.now, job_spec("p", 1, 0, 0), &mut env.out).unwrap();
    let ids = |filter: &JobFilter| env.core.jobs_matching(filter).iter().map(|j| j.id).collect::<Vec<_>>();
    let default = JobFilter { states: vec![JobState::Active], ended_since_ms: Some(since), ..JobFilter::default() };
    assert_eq!(ids(&default), [recent, active], "the one that ended two hours ago is left out");
    assert_eq!(ids(&JobFilter::default()), [old, recent, active]);
    assert_eq!(ids(&JobFilter { limit: Some(2), ..JobFilter::default() }), [active, recent]);
    let cancelled = JobFilter { states: vec![JobState::Cancelled], ..JobFilter::default() };
    assert_eq!(ids(&cancelled), [old, recent]);
    let named = JobFilter { name: glob::Pattern::new("tr*").ok(), ..JobFilter::default() };
    assert_eq!(ids(&named), [old, recent, active], "named after their command, true");
    let elsewhere = JobFilter { pool: PoolName::parse("pool", "q").ok(), ..JobFilter::default() };
    assert!(ids(&elsewhere).is_empty());
}

#[test]
fn one_task_is_cancelled_running_or_queued_and_the_job_ends_when_nothing_is_left() {
    let mut env = Env::with_pool(Fill::Spread);
    let node = env.node(1);
    let job = env.submit(3, 0, 0);
    let placed = env.schedule();
    let (_, running) = placed[0];
    assert_eq!(running.task.index, 0);
    // The running one: killed on its node, its slot free for the next.
    let mut out = Outbox::default();
    assert!(env.core.cancel_task(env.now, running.task, &mut out).unwrap());
    env.check();
    assert!(out.agents.contains(&(node.clone(), ToAgent::Kill(running))), "{:?}", out.agents);
    assert_eq!(env.task(job, 0).state, TaskState::Cancelled);
    // A queued one: never runs.
    assert!(env.core.cancel_task(env.now, TaskKey { job, index: 2 }, &mut env.out).unwrap());
    let next = env.schedule();
    assert_eq!(next.iter().map(|(_, a)| a.task.index).collect::<Vec<_>>(), [1], "only task 1 is left to run");
    assert_eq!(env.core.jobs[&job].state, JobState::Active);
    // Once it is done, so is the job (with a cancelled task: cancelled).
    env.report(&node, next[0].1, Outcome::Succeeded);
    assert_eq!(env.core.jobs[&job].state, JobState::Cancelled);
    assert!(!env.core.cancel_task(env.now, TaskKey { job, index: 1 }, &mut env.out).unwrap(), "finished: left as is");
    assert!(env.core.cancel_task(env.now, TaskKey { job, index: 9 }, &mut env.out).is_err());
}

#[test]
fn cancelling_a_graph_task_cancels_what_depends_on_it() {
    let mut env = Env::with_pool(Fill::Spread);
    env.node(2);
    let job = env.submit_spec(graph_spec(&[("a", &[]), ("b", &["a"]), ("c", &[])]));
    assert!(env.core.cancel_task(env.now, TaskKey { job, index: 0 }, &mut env.out).unwrap());
    env.check();
    assert_eq!(env.task(job, 1).state, TaskState::Cancelled, "b waited for a");
    assert!(env.core.jobs[&job].reasons[&1].starts_with("upstream_failed: task 'a' cancelled"));
    assert_eq!(env.schedule().iter().map(|(_, a)| a.task.index).collect::<Vec<_>>(), [2]);
}

#[test]
fn a_move_the_transitions_do_not_allow_is_refused_and_changes_nothing() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(2, 0, 0);
    let (_, a) = env.schedule()[0].clone();
    env.report(&n, a, Outcome::Succeeded);
    let before = env.core.jobs[&job].counts;
    let bad = env.core.jobs.get_mut(&job).unwrap().move_task(0, TaskState::Running).unwrap_err();
    assert_eq!(bad.to_string(), format!("task 0 of job {job} cannot go from succeeded to running"));
    let missing = env.core.jobs.get_mut(&job).unwrap().move_task(9, TaskState::Ready).unwrap_err();
    assert_eq!(missing.from, None);
    assert_eq!(env.core.jobs[&job].counts, before, "a refused move changes nothing");
    env.check();
    // Reopening a finished task is a move like any other (`job retry`).
    let selection = RetrySelection { tasks: vec![0], ..Default::default() };
    env.core.retry_job(env.now, job, &selection, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.task(job, 0).state, TaskState::Ready);
}
