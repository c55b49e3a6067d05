//! `task explain`: one reason for each thing that holds a task back.

use super::*;

fn why(env: &Env, job: JobId, index: u32) -> String {
    env.core.explain_task(env.now, TaskKey { job, index }).unwrap().join("\n")
}

#[test]
fn each_reason_is_told() {
    let mut env = Env::with_pool(Fill::Spread);
    // No node yet.
    let job = env.submit(3, 0, 1);
    assert!(
        why(&env, job, 0).contains("pool 'p' has no node ready for work; start `corral-agent`"),
        "{}",
        why(&env, job, 0)
    );
    let n = env.node(1);
    // One slot: the first runs, the others queue behind it on a busy node.
    let a = env.schedule()[0].1;
    assert!(why(&env, job, 0).starts_with("running: attempt 1 on node"), "{}", why(&env, job, 0));
    let text = why(&env, job, 2);
    assert!(text.contains("no node of pool 'p' has 1 free slot(s): all 1 are busy"), "{text}");
    assert!(text.contains("1 queued task(s) of this pool go first"), "{text}");
    // Backing off after a failure.
    env.report(&n, a, Outcome::Failed);
    assert!(why(&env, job, 0).contains("backing off after 1 failure(s): retried at"), "{}", why(&env, job, 0));
    // Throttled.
    let throttled = env.submit_spec(JobSpec {
        policy: JobPolicy { max_running: Some(1), ..Default::default() },
        ..job_spec("p", 2, 9, 0)
    });
    env.schedule();
    let text = why(&env, throttled, 1);
    assert!(text.contains("throttled: 1 of the job's tasks run, at most 1 at once (--max-running)"), "{text}");
    let keyed = JobSpec {
        policy: JobPolicy { concurrency_key: Some("db".into()), ..Default::default() },
        ..job_spec("p", 1, 0, 0)
    };
    env.core.keyed.insert("db".into(), 1);
    let k = env.core.submit_job(env.now, keyed, &mut env.out).unwrap();
    assert!(why(&env, k, 0).contains("task(s) with concurrency key 'db' run, at most 1"), "{}", why(&env, k, 0));
    env.core.keyed.clear();
    // --begin and --after.
    let later = env.submit_spec(JobSpec { begin_at_ms: Some(1_000_000 + 3_600_000), ..job_spec("p", 1, 0, 0) });
    assert!(why(&env, later, 0).contains("the job begins at 1970-01-01T01:16:40Z (in 1h)"), "{}", why(&env, later, 0));
    let after = env.submit_spec(JobSpec { after: vec![After { job, any: true }], ..job_spec("p", 1, 0, 0) });
    assert!(why(&env, after, 0).contains(&format!("the job waits for job {job} to end (--after)")));
}

#[test]
fn waiting_tasks_name_what_they_wait_for_and_finished_ones_say_how_to_rerun() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let job = env.submit_spec(graph_spec(&[("a", &[]), ("b", &["a"])]));
    let text = why(&env, job, 1);
    assert!(text.starts_with("waiting for 1 upstream task(s) to succeed: a (ready)"), "{text}");
    let a = env.schedule()[0].1;
    env.exit(&n, a, 1);
    let text = why(&env, job, 0);
    assert!(text.starts_with("finished: failed; `corral job retry"), "{text}");
    assert!(why(&env, job, 1).contains("finished: cancelled: upstream_failed"), "{}", why(&env, job, 1));
}

#[test]
fn a_pool_at_its_maximum_says_so() {
    let mut env = Env::new();
    let mut spec = pool_spec("p", Provider::Local, 1, Fill::Spread);
    spec.autoscale = Some(Autoscale { min: 0, max: 1, idle_timeout: ms(1000), step: 1, cooldown: ms(0) });
    env.core.create_pool(env.now, spec, &mut env.out).unwrap();
    let job = env.submit(1, 0, 0);
    env.core.pools.get_mut(&PoolName::parse("pool", "p").unwrap()).unwrap().spec.target_nodes = 1;
    assert!(why(&env, job, 0).contains("the pool is at its maximum of 1 node(s)"), "{}", why(&env, job, 0));
}
