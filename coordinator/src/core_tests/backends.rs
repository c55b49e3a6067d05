//! The store interface's conformance suite, run against both backends: SQLite in a
//! temp dir and PostgreSQL (a throwaway server per test, from the same harness the
//! end-to-end tests use). The same changes, made by the core as it runs, go into
//! each; what each gives back (the restored state, events, attempts, logs,
//! schedule slots) must be the same, and so must what each refuses.

use std::sync::Arc;

use super::*;
use crate::auth::{NodeCredential, TokenRecord};
use crate::core::cadence::Cadence;
use crate::core::keys::{IdempotencyKey, KeyRecord};
use crate::core::templates::{Dispatch, TemplateSpec};
use crate::core::triggers::{Listed, TriggerSpec};
use crate::events::Filter;
use crate::store::postgres::lease::{Lease, Settings};
use crate::store::{Backend, Postgres, Sqlite, StoreError};

// The end-to-end tests' harness; not every part of it is used here.
#[allow(dead_code)]
#[path = "../../../tests/src/postgres.rs"]
mod pg;

/// One backend under test, with what keeps it alive.
pub(super) struct Under {
    name: &'static str,
    pub(super) backend: Box<dyn Backend>,
    _dir: tempfile::TempDir,
    pub(super) server: Option<pg::Postgres>,
    /// PostgreSQL's: where it is, and the lease held for its writer.
    pub(super) pg: Option<(Arc<crate::store::postgres::Target>, Option<Lease>)>,
}

pub(super) fn sqlite() -> Under {
    let dir = tempfile::tempdir().unwrap();
    Under { name: "sqlite", backend: Box::new(Sqlite::new(dir.path())), _dir: dir, server: None, pg: None }
}

pub(super) fn postgres() -> Under {
    let server = pg::Postgres::start();
    let url = server.create("corral");
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, pg::PASSWORD).unwrap();
    let target = Arc::new(crate::store::postgres::Target::parse(&url, Some(&password)).unwrap());
    let lease = Lease::take(target.clone(), &settings("first"), |_| {}).unwrap();
    let backend = Box::new(Postgres { target: target.clone(), epoch: lease.epoch() });
    Under { name: "postgres", backend, _dir: dir, server: Some(server), pg: Some((target, Some(lease))) }
}

/// A lease of 600 ms, renewed every 200 ms.
pub(super) fn settings(holder: &str) -> Settings {
    Settings {
        length: std::time::Duration::from_millis(600),
        holder: holder.into(),
        advertise: None,
        advertise_http: None,
        patient: false,
        cancelled: Default::default(),
    }
}

fn both() -> [Under; 2] {
    [sqlite(), postgres()]
}

/// What a coordinator writes as it runs: pools, nodes, jobs (an array with a
/// retry, a graph, a cancelled one), attempts and their output, a schedule that
/// fired, a template dispatched with a key, a polling trigger's cursor, tokens and
/// node credentials, in batches as the writer groups them.
pub(super) fn scenario() -> (Vec<Vec<StoreOp>>, AttemptRef) {
    scenario_with_jobs().0
}

/// [`scenario`], and how many jobs the core holds at its end.
fn scenario_with_jobs() -> ((Vec<Vec<StoreOp>>, AttemptRef), usize) {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let _m = env.node(2);
    let job = env.submit(5, 3, 1);
    let placed = env.schedule();
    env.report(&n, placed[0].1, Outcome::Succeeded);
    env.report(&n, placed[1].1, Outcome::Failed);
    env.submit_spec(graph_spec(&[("a", &[]), ("b", &["a"])]));
    let cancelled = env.submit(3, 0, 0);
    env.core.cancel_job(env.now, cancelled, &mut env.out).unwrap();
    let schedule = ScheduleSpec {
        name: ScheduleName::parse("name", "nightly").unwrap(),
        cadence: Cadence::every(60_000, 1_000_000).unwrap(),
        overlap: Overlap::Allow,
        catchup_window: Duration::from_secs(60),
        jitter: Duration::ZERO,
        start_at_ms: None,
        end_at_ms: None,
        job: job_spec("p", 1, 0, 0),
    };
    env.core.create_schedule(env.now, schedule, &mut env.out).unwrap();
    env.advance(ms(61_000));
    env.tick();
    let template = TemplateSpec {
        name: TemplateName::parse("name", "t").unwrap(),
        payload: PayloadRule::Optional,
        meta_required: vec![],
        job: JobSpec { owner: "maker".into(), ..job_spec("p", 2, 0, 0) },
    };
    env.core.create_template(env.now, template, &mut env.out).unwrap();
    let key = IdempotencyKey { owner: "alice".into(), key: "k-1".into(), digest: "d".into() };
    let dispatch = Dispatch { owner: "alice".into(), ..Dispatch::default() };
    env.core.dispatch(env.now, &TemplateName::parse("t", "t").unwrap(), dispatch, Some(key), &mut env.out).unwrap();
    let trigger = TriggerSpec {
        max_active: None,
        name: TriggerName::parse("name", "inbox").unwrap(),
        prefix: "in/".into(),
        glob: None,
        template: TemplateName::parse("template", "t").unwrap(),
        poll: Some(Duration::from_secs(5)),
        owner: "alice".into(),
        source: None,
    };
    env.core.create_trigger(env.now, trigger.clone(), &mut env.out).unwrap();
    env.advance(ms(5_000));
    assert_eq!(env.core.due_polls(env.now).len(), 1);
    let listed = vec![Listed { path: "in/a.csv".into(), version: "v1".into(), modified_ms: 10_000_000 }];
    env.core.on_poll(env.now, &trigger.name, Ok(listed), &mut env.out);
    let mut ops = std::mem::take(&mut env.out.store);
    let hash = [7u8; 32];
    ops.push(StoreOp::PutToken(TokenRecord {
        id: "tok-1".into(),
        name: "ci".into(),
        role: Role::Submit,
        pool: None,
        hash,
        created_at_ms: 10,
        expires_at_ms: Some(99_000),
        created_by: "bootstrap".into(),
    }));
    ops.push(StoreOp::PutNodeCredential(NodeCredential {
        node: n.clone(),
        pool: PoolName::parse("pool", "p").unwrap(),
        hash,
        token_id: "tok-1".into(),
    }));
    // Dashboard sign-ins: one kept, one signed out.
    for (key, at_ms) in [("s-1", 5), ("s-2", 6)] {
        let session = crate::auth::SessionRecord { key: key.into(), token_id: "tok-1".into(), at_ms };
        ops.push(StoreOp::PutSession(session));
    }
    ops.push(StoreOp::DeleteSessions(vec!["s-2".into()]));
    ops.push(StoreOp::PutIdempotencyKey(KeyRecord {
        key: IdempotencyKey { owner: "bob".into(), key: "k-2".into(), digest: "e".into() },
        job,
        at_ms: 20,
    }));
    let out = placed[0].1;
    // Its stdout and stderr came in stretches (`task logs --both`).
    match ops.iter_mut().find(|op| matches!(op, StoreOp::EndAttempt { attempt, .. } if *attempt == out)) {
        Some(StoreOp::EndAttempt { order, .. }) => *order = corral_types::order::Runs::checked(vec![6, 5, 6], [12, 5]),
        _ => panic!("attempt {out:?} ended in the scenario"),
    }
    ops.push(StoreOp::Log(LogChunk { attempt: out, rank: 0, stderr: false, offset: 0, data: b"hello ".to_vec() }));
    ops.push(StoreOp::Log(LogChunk { attempt: out, rank: 0, stderr: false, offset: 6, data: b"world\n".to_vec() }));
    // Sent again (an agent that reconnected): lands once.
    ops.push(StoreOp::Log(LogChunk { attempt: out, rank: 0, stderr: false, offset: 6, data: b"world\n".to_vec() }));
    ops.push(StoreOp::Log(LogChunk { attempt: out, rank: 0, stderr: true, offset: 0, data: b"oops\n".to_vec() }));
    // A multi-node task's other rank's output is its own, beside the task's.
    ops.push(StoreOp::Log(LogChunk { attempt: out, rank: 1, stderr: false, offset: 0, data: b"rank one\n".to_vec() }));
    env.core.sanity_check();
    ((ops.chunks(7).map(<[StoreOp]>::to_vec).collect(), out), env.core.jobs.len())
}

/// What a backend gives back of everything it holds, as text to compare.
fn held(backend: &dyn Backend, out: AttemptRef) -> String {
    let (snapshot, tokens, nodes, sessions) = backend.load().unwrap();
    let mut history = backend.open_history().unwrap();
    let attempts: Vec<_> = (0..5).map(|i| history.attempts(TaskKey { job: JobId(1), index: i }).unwrap()).collect();
    let events = history.events(0, &Filter::default(), 10_000).unwrap();
    let events: Vec<String> =
        events.iter().map(|e| format!("{} {:?} {} {}", e.id, e.kind, e.state, e.detail)).collect();
    let logs = [(0, false), (0, true), (1, false), (1, true)].map(|(rank, stderr)| {
        String::from_utf8_lossy(&history.read_log(out, rank, stderr, 0, 100).unwrap()).into_owned()
    });
    let order = history.output_order(out).unwrap();
    let slots = history.schedule_slots(&ScheduleName::parse("s", "nightly").unwrap(), 0, u64::MAX >> 2).unwrap();
    let wanted: Vec<AttemptRef> = (0..5)
        .flat_map(|index| (1..=2).map(move |attempt| AttemptRef { task: TaskKey { job: JobId(1), index }, attempt }))
        .collect();
    let ended = history.ended_attempts(&wanted).unwrap();
    let mut ended: Vec<_> =
        ended.iter().map(|(a, e)| (a.task.index, a.attempt, e.node_id.clone(), e.said.clone())).collect();
    ended.sort();
    let tokens: Vec<_> = tokens.iter().map(|t| (t.id.clone(), t.name.clone(), t.role, t.expires_at_ms)).collect();
    let nodes: Vec<_> = nodes.iter().map(|n| (n.node.clone(), n.token_id.clone())).collect();
    format!("{snapshot:#?}\n{tokens:?}\n{nodes:?}\n{sessions:?}\n{attempts:#?}\n{events:#?}\n{logs:?}\n{order:?}\n{slots:?}\n{ended:?}")
}

#[test]
fn both_backends_give_back_what_was_written_and_the_same() {
    let ((batches, out), jobs) = scenario_with_jobs();
    let mut seen = Vec::new();
    for under in both() {
        let mut durable = under.backend.open_durable().unwrap();
        for batch in &batches {
            durable.apply(batch).unwrap();
        }
        let held = held(under.backend.as_ref(), out);
        // The state restores into a core that holds together.
        let (snapshot, ..) = under.backend.load().unwrap();
        let mut restored = Core::new(CoreConfig::default(), (Instant::now(), 2_000_000));
        restored.restore(snapshot, Instant::now(), &mut Outbox::default());
        restored.sanity_check();
        assert_eq!(restored.jobs.len(), jobs, "{}", under.name);
        assert!(restored.triggers.values().any(|t| !t.seen.is_empty()), "{}: the trigger's cursor", under.name);
        let mut history = under.backend.open_history().unwrap();
        assert_eq!(history.read_log(out, 0, false, 0, 100).unwrap(), b"hello world\n", "{}", under.name);
        assert_eq!(history.read_log(out, 1, false, 0, 100).unwrap(), b"rank one\n", "{}", under.name);
        assert_eq!(history.read_log(out, 1, true, 0, 100).unwrap(), b"", "{}", under.name);
        assert_eq!(history.read_log(out, 0, false, 6, 3).unwrap(), b"wor", "{}", under.name);
        assert_eq!(history.read_log(out, 0, false, 12, 100).unwrap(), b"", "{}", under.name);
        let order = history.output_order(out).unwrap();
        assert_eq!(order.as_ref().map(|o| o.lengths()), Some(&[6, 5, 6][..]), "{}", under.name);
        // A finished task's last attempt, in one read with others that have not ended.
        let later = AttemptRef { attempt: out.attempt + 1, ..out };
        let ended = history.ended_attempts(&[out, later]).unwrap();
        assert_eq!(ended.len(), 1, "{}: {ended:?}", under.name);
        assert_eq!(ended[&out].node_id, "n-1", "{}", under.name);
        seen.push((under.name, held));
    }
    let (a, b) = (&seen[0], &seen[1]);
    if a.1 != b.1 {
        let first = a.1.lines().zip(b.1.lines()).position(|(x, y)| x != y).unwrap_or(0);
        let around = |s: &str| s.lines().skip(first.saturating_sub(3)).take(8).collect::<Vec<_>>().join("\n");
        panic!("{} and {} differ at line {first}:\n{}\n---\n{}", a.0, b.0, around(&a.1), around(&b.1));
    }
}

#[test]
fn event_ids_run_on_without_gaps_across_a_reopen_and_filters_agree() {
    let (batches, _) = scenario();
    for under in both() {
        let mut durable = under.backend.open_durable().unwrap();
        for batch in &batches[..2] {
            durable.apply(batch).unwrap();
        }
        let last = durable.last_event();
        drop(durable);
        // A restart: the writer goes on from the newest id.
        let mut durable = under.backend.open_durable().unwrap();
        assert_eq!(durable.last_event(), last, "{}", under.name);
        for batch in &batches[2..] {
            durable.apply(batch).unwrap();
        }
        let mut history = under.backend.open_history().unwrap();
        let all = history.events(0, &Filter::default(), 100_000).unwrap();
        let ids: Vec<u64> = all.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=durable.last_event()).collect::<Vec<_>>(), "{}: gapless, increasing", under.name);
        assert_eq!(history.event_bounds().unwrap(), (Some(1), durable.last_event()), "{}", under.name);
        let job1 = history.events(0, &Filter { job: Some(JobId(1)), pool: None }, 100_000).unwrap();
        assert!(!job1.is_empty() && job1.iter().all(|e| e.job == Some(1)), "{}", under.name);
        let pool = Filter { job: Some(JobId(1)), pool: Some(PoolName::parse("pool", "p").unwrap()) };
        assert_eq!(history.events(0, &pool, 100_000).unwrap().len(), job1.len(), "{}", under.name);
        let page = history.events(3, &Filter::default(), 2).unwrap();
        assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), vec![4, 5], "{}", under.name);
    }
}

#[test]
fn a_refused_batch_leaves_nothing_behind_and_the_next_one_goes_in() {
    let (batches, _) = scenario();
    for under in both() {
        let mut durable = under.backend.open_durable().unwrap();
        for batch in &batches {
            durable.apply(batch).unwrap();
        }
        let before = held(under.backend.as_ref(), AttemptRef { task: TaskKey { job: JobId(1), index: 0 }, attempt: 1 });
        let last = durable.last_event();
        durable.take_committed();
        // A slot that made a job already: the key refuses the second one, and the
        // cancelled job's deletion with it.
        let slot = StoreOp::InsertScheduleSlot {
            schedule: ScheduleName::parse("s", "nightly").unwrap(),
            slot_ms: 1_060_000,
            job: JobId(77),
        };
        let err = durable.apply(&[StoreOp::DeleteJob(JobId(3)), slot]).unwrap_err();
        assert!(matches!(err, crate::error::Error::Store(StoreError::Refused(_))), "{}: {err}", under.name);
        assert_eq!(durable.last_event(), last, "{}", under.name);
        assert!(durable.take_committed().is_empty(), "{}", under.name);
        let after = held(under.backend.as_ref(), AttemptRef { task: TaskKey { job: JobId(1), index: 0 }, attempt: 1 });
        assert_eq!(before, after, "{}: nothing of the refused batch is kept", under.name);
        // A number past what a column holds is refused too.
        let huge =
            StoreOp::SetJobState { id: JobId(u64::MAX), state: JobState::Failed, finished_at_ms: None, reason: None };
        assert!(durable.apply(&[huge]).is_err(), "{}", under.name);
        durable.apply(&[StoreOp::CloseJob(JobId(1))]).unwrap();
    }
}

#[test]
fn deleting_a_job_forgets_its_rows_output_and_events_but_the_deletion() {
    let (batches, out) = scenario();
    for under in both() {
        let mut durable = under.backend.open_durable().unwrap();
        for batch in &batches {
            durable.apply(batch).unwrap();
        }
        durable.apply(&[StoreOp::DeleteJob(JobId(1))]).unwrap();
        let mut history = under.backend.open_history().unwrap();
        assert!(history.attempts(out.task).unwrap().is_empty(), "{}", under.name);
        assert_eq!(history.read_log(out, 0, false, 0, 100).unwrap(), b"", "{}", under.name);
        let events = history.events(0, &Filter { job: Some(JobId(1)), pool: None }, 1000).unwrap();
        assert_eq!(events.len(), 1, "{}: {events:?}", under.name);
        let (snapshot, ..) = under.backend.load().unwrap();
        assert!(snapshot.jobs.iter().all(|j| j.id != JobId(1)), "{}", under.name);
        assert!(snapshot.tasks.iter().all(|t| t.key.job != JobId(1)), "{}", under.name);
        // Keys and slots expire by age, as retention asks.
        durable.apply(&[StoreOp::ExpireIdempotencyKeys { before_ms: u64::MAX >> 2 }]).unwrap();
        durable.apply(&[StoreOp::PruneScheduleSlots { before_ms: u64::MAX >> 2 }]).unwrap();
        let (snapshot, ..) = under.backend.load().unwrap();
        assert!(snapshot.keys.is_empty(), "{}", under.name);
        let slots = history.schedule_slots(&ScheduleName::parse("s", "nightly").unwrap(), 0, u64::MAX >> 2).unwrap();
        assert!(slots.is_empty(), "{}", under.name);
    }
}

/// PostgreSQL going away: writes fail as "unavailable" (the writer waits them
/// out), and once it is back the next write goes in, its events after the last.
#[test]
fn a_database_that_goes_away_is_waited_out_not_refused() {
    let (batches, _) = scenario();
    let mut under = postgres();
    let mut durable = under.backend.open_durable().unwrap();
    durable.apply(&batches[0]).unwrap();
    let last = durable.last_event();
    let server = under.server.as_mut().unwrap();
    server.stop();
    let err = durable.apply(&batches[1]).unwrap_err();
    assert!(matches!(err, crate::error::Error::Store(StoreError::Unavailable(_))), "{err}");
    server.restart();
    durable.apply(&batches[1]).unwrap();
    assert!(durable.last_event() > last);
    let mut history = under.backend.open_history().unwrap();
    let ids: Vec<u64> = history.events(0, &Filter::default(), 100_000).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=durable.last_event()).collect::<Vec<_>>());
    // A second writer on the database is refused while the first holds it.
    let err = under.backend.open_durable().err().unwrap().to_string();
    assert!(err.contains("is in use by corral") && err.contains("stop it or use another database"), "{err}");
    drop(durable);
    under.backend.open_durable().unwrap();
}

#[test]
fn a_newer_schema_is_refused_on_postgres_too() {
    let under = postgres();
    drop(under.backend.open_durable().unwrap());
    let server = under.server.as_ref().unwrap();
    assert!(server.psql("corral", "UPDATE schema_version SET version = 99").0);
    let err = under.backend.open_durable().err().unwrap().to_string();
    let known = crate::store::postgres::schema::VERSION;
    assert!(
        err.contains(&format!("its schema is version 99, newer than the version {known} this coordinator knows")),
        "{err}"
    );
}

#[test]
fn a_reader_reconnects_after_the_database_restarted() {
    let (batches, out) = scenario();
    let mut under = postgres();
    let mut durable = under.backend.open_durable().unwrap();
    for batch in &batches {
        durable.apply(batch).unwrap();
    }
    let mut history = under.backend.open_history().unwrap();
    assert_eq!(history.read_log(out, 0, false, 0, 100).unwrap(), b"hello world\n");
    under.server.as_mut().unwrap().restart();
    assert_eq!(history.read_log(out, 0, false, 0, 100).unwrap(), b"hello world\n");
}

/// The writer sends a group before the one ahead of it is answered (PostgreSQL:
/// the database commits one while the next is made). Read back, that is the
/// same as writing them one at a time, on both backends.
#[test]
fn groups_sent_ahead_are_stored_as_if_written_one_at_a_time() {
    let (batches, out) = scenario();
    let mut seen = Vec::new();
    for under in both() {
        let mut durable = under.backend.open_durable().unwrap();
        for (i, batch) in batches.iter().enumerate() {
            durable.send(batch).unwrap();
            if i > 0 {
                durable.settle().unwrap();
            }
        }
        durable.settle().unwrap();
        let mut history = under.backend.open_history().unwrap();
        let ids: Vec<u64> = history.events(0, &Filter::default(), 100_000).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=durable.last_event()).collect::<Vec<_>>(), "{}: gapless, increasing", under.name);
        seen.push((under.name, held(under.backend.as_ref(), out)));
    }
    assert!(seen[0].1 == seen[1].1, "sqlite and postgres differ when groups are sent ahead");
}

/// A group sent behind one that the database refuses is not stored alone (it was
/// made from a state that held the refused one): the writer is told that
/// neither is known to be stored, and writes each again in order.
#[test]
fn a_group_sent_behind_a_refused_one_does_not_commit_alone() {
    let (batches, out) = scenario();
    let under = postgres();
    let mut durable = under.backend.open_durable().unwrap();
    for batch in &batches {
        durable.apply(batch).unwrap();
    }
    let before = held(under.backend.as_ref(), out);
    let last = durable.last_event();
    durable.take_committed();
    let duplicate = vec![StoreOp::InsertScheduleSlot {
        schedule: ScheduleName::parse("s", "nightly").unwrap(),
        slot_ms: 1_060_000,
        job: JobId(77),
    }];
    let behind = vec![StoreOp::CloseJob(JobId(1))];
    durable.send(&duplicate).unwrap();
    durable.send(&behind).unwrap();
    let err = durable.settle().unwrap_err();
    assert!(matches!(err, crate::error::Error::Store(StoreError::Refused(_))), "{err}");
    assert_eq!(durable.last_event(), last);
    assert!(durable.take_committed().is_empty());
    assert_eq!(held(under.backend.as_ref(), out), before, "the group behind the refused one committed alone");
    // Written again, in order: the refused one is refused, the next goes in.
    assert!(durable.apply(&duplicate).is_err());
    durable.apply(&behind).unwrap();
    assert_eq!(durable.last_event(), last + 1);
    let (snapshot, ..) = under.backend.load().unwrap();
    assert!(snapshot.jobs.iter().any(|j| j.id == JobId(1) && !j.spec.open));
}

/// The writer's session is cut while groups are in flight: whichever of them
/// committed is known after reconnecting, and writing them again in order stores
/// each exactly once, its events once and without a gap.
#[test]
fn groups_in_flight_when_the_session_is_cut_are_stored_once() {
    let (batches, out) = scenario();
    let (expected, expected_last) = {
        let under = sqlite();
        let mut durable = under.backend.open_durable().unwrap();
        for batch in &batches {
            durable.apply(batch).unwrap();
        }
        (held(under.backend.as_ref(), out), durable.last_event())
    };
    let under = postgres();
    let server = under.server.as_ref().unwrap();
    let mut durable = under.backend.open_durable().unwrap();
    let (head, tail) = batches.split_at(batches.len() / 2);
    for batch in head {
        durable.apply(batch).unwrap();
    }
    for batch in tail {
        durable.send(batch).unwrap();
    }
    let cut =
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'corral' AND pid <> pg_backend_pid()";
    assert!(server.psql("corral", cut).0);
    let mut retry = 0;
    for _ in tail {
        if durable.settle().is_err() {
            break;
        }
        retry += 1;
    }
    for batch in &tail[retry..] {
        // The old session may still be ending: a write is refused as unavailable
        // until it has (its lock is the writer's).
        let mut tries = 0;
        while let Err(err) = durable.apply(batch) {
            assert!(
                matches!(err, crate::error::Error::Store(StoreError::Unavailable(_)))
                    || err.to_string().contains("in use"),
                "{err}"
            );
            tries += 1;
            assert!(tries < 200, "{err}");
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }
    assert_eq!(durable.last_event(), expected_last);
    assert_eq!(held(under.backend.as_ref(), out), expected);
}

/// The same, made certain: the groups in flight wait on a row another session
/// holds, so the session is cut before either commits; both are written again.
#[test]
fn groups_waiting_when_the_session_is_cut_are_written_again() {
    let (batches, _) = scenario();
    let under = postgres();
    let server = under.server.as_ref().unwrap();
    let mut durable = under.backend.open_durable().unwrap();
    for batch in &batches {
        durable.apply(batch).unwrap();
    }
    let last = durable.last_event();
    let mut holder = server.session("corral");
    assert_eq!(holder.run("BEGIN; SELECT 1 FROM jobs WHERE id = 1 FOR UPDATE;"), "1");
    let (first, second) = (vec![StoreOp::CloseJob(JobId(1))], vec![StoreOp::CloseJob(JobId(2))]);
    durable.send(&first).unwrap();
    durable.send(&second).unwrap();
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'corral' AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while server.psql("corral", waiting).1 != "1" {
        assert!(Instant::now() < deadline, "the writer never waited on the held row");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let cut =
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'corral' AND wait_event_type = 'Lock'";
    assert!(server.psql("corral", cut).0);
    let err = durable.settle().unwrap_err();
    assert!(matches!(err, crate::error::Error::Store(StoreError::Unavailable(_))), "{err}");
    drop(holder);
    for group in [&first, &second] {
        let mut tries = 0;
        while let Err(err) = durable.apply(group) {
            tries += 1;
            assert!(tries < 200, "{err}");
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }
    assert_eq!(durable.last_event(), last + 2, "each group's event once");
    let (snapshot, ..) = under.backend.load().unwrap();
    assert!(snapshot.jobs.iter().filter(|j| j.id.0 <= 2).all(|j| !j.spec.open));
    let mut history = under.backend.open_history().unwrap();
    let ids: Vec<u64> = history.events(0, &Filter::default(), 100_000).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=last + 2).collect::<Vec<_>>());
}
