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

/// A node the store cannot hold: SQLite's integers stop at `i64::MAX`.
fn unstorable_node(pool: &PoolName) -> NodeRecord {
    NodeRecord {
        id: NodeId::from_seq(1),
        pool: pool.clone(),
        hostname: "h".into(),
        slots: 1,
        cpus: 1,
        memory_bytes: u64::MAX,
        pid: 0,
        status: NodeStatus::Up,
        reason: None,
        registered_at_ms: 0,
        resources: Resources::new(),
    }
}

#[test]
fn a_batch_the_store_cannot_hold_is_refused_whole_and_its_state_undone() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let pool = pool_spec("p", Provider::Static, 0, Fill::Spread);
    let bad = unstorable_node(&pool.name);
    let ops = vec![StoreOp::PutPool { spec: pool, created_at_ms: 1, deleting: false }, StoreOp::PutNode(bad)];
    assert!(store.apply(&ops).is_err(), "u64::MAX does not fit SQLite's integers");
    let (refused_tx, refused_rx) = std::sync::mpsc::channel();
    let (writer, thread) = crate::store::Writer::spawn(
        Box::new(store),
        tokio::sync::watch::channel(None).0,
        |_| {},
        move |generation| refused_tx.send(generation).unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let answer = |tx: std::sync::mpsc::Sender<_>| -> Vec<crate::store::FollowUp> {
        vec![Box::new(move |stored: &crate::store::Stored| tx.send(stored.clone()).unwrap())]
    };
    let good = vec![StoreOp::PutPool {
        spec: pool_spec("q", Provider::Static, 0, Fill::Spread),
        created_at_ms: 1,
        deleting: false,
    }];
    writer.submit(crate::store::Batch { ops, then: answer(tx.clone()), generation: 0 });
    // Made from the state that held the refused change: refused unwritten.
    writer.submit(crate::store::Batch { ops: good.clone(), then: answer(tx.clone()), generation: 0 });
    let stored = rx.recv_timeout(Duration::from_secs(10)).expect("the writer went on");
    let refused = stored.expect_err("the batch's callers are told a change was refused");
    assert!(refused.contains("the store refused this change"), "{refused}");
    let undone = rx.recv_timeout(Duration::from_secs(10)).unwrap().expect_err("a later batch of that state is refused");
    assert!(undone.contains("undid a change"), "{undone}");
    assert_eq!(refused_rx.recv_timeout(Duration::from_secs(10)), Ok(0), "the event loop is told to reload");
    // The reloaded state's batches are written.
    writer.submit(crate::store::Batch { ops: good, then: answer(tx), generation: 1 });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(()));
    drop(writer);
    thread.join().unwrap();
    let snapshot = crate::store::Store::open(dir.path()).unwrap().load().unwrap();
    let pools: Vec<_> = snapshot.pools.iter().map(|(spec, _, _)| spec.name.to_string()).collect();
    assert_eq!(pools, ["q"], "nothing of the refused batch was written, the later one was");
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

/// The whole loop, in process: a change whose batch the store refuses (a value no
/// edge check caught, forced here past the edges) is answered as not saved, and no
/// read afterwards shows it, nor the token made with it: the event loop reloaded its
/// state from the store. What was saved before is all there, and changes go on.
#[tokio::test]
async fn a_refused_change_is_undone_in_memory_and_never_read() {
    use crate::runtime::{event_loop, Handle, Input, RuntimeError};
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let (health, failing) = tokio::sync::watch::channel(None);
    let refused_tx = events_tx.clone();
    let (writer, _thread) = crate::store::Writer::spawn(
        Box::new(store),
        health,
        |_| {},
        move |generation| {
            let _ = refused_tx.send(Input::StoreRefused { generation });
        },
    );
    let auth = std::sync::Arc::new(crate::auth::Auth::new(Vec::new(), Vec::new()));
    let (provider, _provider_rx) = tokio::sync::mpsc::unbounded_channel();
    let (notify, _notify_rx) = tokio::sync::mpsc::unbounded_channel();
    let effects = event_loop::Effects {
        writer,
        provider,
        notify,
        auth: auth.clone(),
        objects: crate::objects::local_store(&dir.path().join("objects")).unwrap(),
        data_dir: dir.path().to_path_buf(),
        pool_key: crate::auth::bootstrap::PoolKey::new("test key".into()),
        backend: std::sync::Arc::new(crate::store::Sqlite::new(dir.path())),
    };
    let core = Core::new(CoreConfig::default(), (Instant::now(), crate::auth::now_ms()));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let looping = tokio::spawn(event_loop::run(core, events_rx, effects, metrics, stop_rx));
    let handle = Handle::new(events_tx, failing, auth.clone());

    let saved = handle
        .call(|core, now, out| {
            core.create_pool(now, pool_spec("p", Provider::Static, 0, Fill::Spread), out).unwrap();
            core.submit_job(now, job_spec("p", 3, 0, 0), out).unwrap()
        })
        .await
        .unwrap();
    let token = |name: &str| crate::auth::TokenRecord {
        id: format!("id-{name}"),
        name: name.into(),
        role: Role::Submit,
        pool: None,
        hash: [0; 32],
        created_at_ms: 0,
        expires_at_ms: None,
        created_by: "test".into(),
    };
    let auth2 = auth.clone();
    let bad = handle
        .call(move |core, now, out| {
            let job = core.submit_job(now, job_spec("p", 5, 0, 0), out).unwrap();
            auth2.insert_token(token("ghost"));
            out.store.push(StoreOp::PutToken(token("ghost")));
            out.store.push(StoreOp::PutNode(unstorable_node(&PoolName::parse("pool", "p").unwrap())));
            job
        })
        .await;
    assert!(matches!(&bad, Err(RuntimeError::NotSaved(why)) if why.contains("refused")), "{bad:?}");
    // A read made before the reload may be refused as undone; none shows the change.
    let mut answered = None;
    for _ in 0..100 {
        match handle.call(|core, _, _| core.jobs.keys().copied().collect::<Vec<_>>()).await {
            Ok(jobs) => {
                answered = Some(jobs);
                break;
            }
            Err(RuntimeError::NotSaved(why)) => assert!(why.contains("undid"), "{why}"),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(answered, Some(vec![saved]), "only the saved job is in memory");
    assert!(auth.token_named("ghost").is_none(), "the refused batch's token is gone from the gate");
    // Changes go on, in the next generation.
    let next = handle.call(|core, now, out| core.submit_job(now, job_spec("p", 1, 0, 0), out).unwrap()).await.unwrap();
    assert_ne!(next, saved);
    let snapshot = crate::store::Store::open(dir.path()).unwrap().load().unwrap();
    let stored: Vec<JobId> = snapshot.jobs.iter().map(|j| j.id).collect();
    assert_eq!(stored, [saved, next]);
    stop.send(true).unwrap();
    looping.await.unwrap();
}
