//! Restarts: the state rebuilt from the real store.

use super::*;

#[test]
fn restore_from_the_store_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let job = env.submit(5, 3, 1);
    let placed = env.schedule();
    env.report(&n, placed[0].1, Outcome::Succeeded);
    env.report(&n, placed[1].1, Outcome::Failed);
    let mut ops = std::mem::take(&mut env.out.store);
    let mut out = Outbox::default();
    env.core.schedule(env.now, &mut out);
    ops.extend(out.store);
    store.apply(&ops).unwrap();

    let snapshot = store.load().unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(snapshot, env.now, &mut Outbox::default());
    restored.sanity_check();
    let (a, b) = (&env.core.jobs[&job], &restored.jobs[&job]);
    assert_eq!(a.counts, b.counts);
    assert_eq!(a.tasks, b.tasks);
    assert_eq!(a.spec, b.spec);
    assert_eq!(env.core.running, restored.running);
    assert_eq!(restored.nodes[&n].slots_used, env.core.nodes[&n].slots_used);
    // New ids continue after the restored ones.
    let mut out = Outbox::default();
    let next = restored.submit_job(env.now, job_spec("p", 1, 0, 0), &mut out).unwrap();
    assert_eq!(next, JobId(job.0 + 1));
    // The node gets two timeouts to come back, then its tasks go back to the queue.
    restored.on_tick(env.now + ms(10_000), &mut out);
    assert_eq!(restored.nodes[&n].state(), NodeState::Running);
    restored.on_tick(env.now + ms(10_001), &mut out);
    restored.sanity_check();
    assert_eq!(restored.nodes[&n].state(), NodeState::Lost);
    assert!(restored.running.is_empty());
}

#[test]
fn restore_treats_unrecorded_tasks_of_a_cancelled_job_as_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let job = env.submit(1000, 0, 0);
    env.core.cancel_job(env.now, job, &mut env.out).unwrap();
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    assert_eq!(restored.jobs[&job].counts.cancelled, 1000);
    assert_eq!(restored.jobs[&job].state, JobState::Cancelled);
}

#[test]
fn a_value_the_store_cannot_hold_is_skipped_not_retried_forever() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let pool = pool_spec("p", Provider::Static, 0, Fill::Spread);
    let bad = NodeRecord {
        id: NodeId::from_seq(1),
        pool: pool.name.clone(),
        hostname: "h".into(),
        slots: 1,
        cpus: 1,
        memory_bytes: u64::MAX,
        pid: 0,
        status: NodeStatus::Up,
        reason: None,
        registered_at_ms: 0,
        resources: Resources::new(),
    };
    let ops = vec![StoreOp::PutPool { spec: pool, created_at_ms: 1, deleting: false }, StoreOp::PutNode(bad)];
    assert!(store.apply(&ops).is_err(), "u64::MAX does not fit SQLite's integers");
    let (writer, thread) = crate::store::Writer::spawn(store, tokio::sync::watch::channel(None).0, |_| {});
    let (tx, rx) = std::sync::mpsc::channel();
    writer.submit(crate::store::Batch { ops, then: vec![Box::new(move |stored| tx.send(stored.clone()).unwrap())] });
    let stored = rx.recv_timeout(Duration::from_secs(10)).expect("the writer went on");
    let refused = stored.expect_err("the batch's callers are told a change was refused");
    assert!(refused.contains("the store refused this change"), "{refused}");
    drop(writer);
    thread.join().unwrap();
    let snapshot = crate::store::Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(snapshot.pools.len(), 1, "the good change was written");
    assert!(snapshot.nodes.is_empty());
}

#[test]
fn a_graph_job_whose_failure_is_found_at_restore_still_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let job = env.core.submit_job(env.now, graph_spec(&[("a", &[]), ("b", &["a"])]), &mut env.out).unwrap();
    // Three nodes die under task a; it runs on a fourth.
    for _ in 0..3 {
        env.node(1);
        assert_eq!(env.schedule().len(), 1);
        env.advance(ms(5001));
        env.tick();
    }
    let last = env.node(1);
    assert_eq!(env.schedule().len(), 1);
    assert_eq!(env.core.jobs[&job].task(0).unwrap().node_losses, 3);
    // The crash: the node's loss was written, the requeue of its task was not.
    let mut record = env.core.nodes[&last].record.clone();
    record.status = NodeStatus::Lost;
    env.out.store.push(StoreOp::PutNode(record));
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    let mut repairs = Outbox::default();
    restored.restore(store.load().unwrap(), env.now, &mut repairs);
    restored.sanity_check();
    let j = &restored.jobs[&job];
    assert_eq!(j.task(0).unwrap().state, TaskState::Failed, "a fourth node loss fails it");
    assert_eq!(j.task(1).unwrap().state, TaskState::Cancelled);
    assert_eq!(j.state, JobState::Failed, "and the job ends");
    assert!(repairs.store.iter().any(|op| matches!(op, StoreOp::SetJobState { state: JobState::Failed, .. })));
}
