//! Templates, dispatch and triggers with chosen `now`s: what a dispatch fills in,
//! the payload and meta rules, one job per idempotency key, a trigger firing once
//! per put and per new object version, and a poll cursor that survives a restore.

use std::collections::BTreeMap;

use super::*;
use crate::keys::IdempotencyKey;
use crate::templates::Dispatch;
use crate::triggers::Listed;

fn name(n: &str) -> TemplateName {
    TemplateName::parse("name", n).unwrap()
}

fn listed(path: &str, version: &str, modified_ms: u64) -> Listed {
    Listed { path: path.into(), version: version.into(), modified_ms }
}

#[test]
fn a_dispatch_fills_in_payload_meta_owner_and_notify() {
    let mut env = Env::with_template(PayloadRule::Optional, &["region"]);
    let dispatch = Dispatch {
        payload: Some("payloads/abc".into()),
        meta: BTreeMap::from([("region".to_string(), "eu".to_string())]),
        notify: Some("https://example.com/done".into()),
        owner: "bob".into(),
        ..Dispatch::default()
    };
    let job = env.core.dispatch(env.now, &name("t"), dispatch, None, &mut env.out).unwrap();
    env.check();
    let spec = &env.core.jobs[&job].spec;
    assert_eq!(spec.owner, "bob", "the job is the dispatcher's");
    assert_eq!(spec.notify.as_deref(), Some("https://example.com/done"));
    assert_eq!(spec.task_count(), 2);
    let task = spec.task_spec(1);
    assert_eq!(task.inputs, vec![TaskInput { object: "payloads/abc".into(), path: "payload".into() }]);
    assert_eq!(task.env["CORRAL_PAYLOAD"], "payload");
    assert_eq!(task.env["CORRAL_META_region"], "eu");
    assert!(env.core.templates[&name("t")].spec.job.task.inputs.is_empty(), "the template is unchanged");
}

#[test]
fn payload_and_meta_rules_are_kept_and_a_refusal_changes_nothing() {
    let mut env = Env::with_template(PayloadRule::Required, &["region"]);
    let before = env.core.jobs.len();
    let meta = BTreeMap::from([("region".to_string(), "eu".to_string())]);
    let cases = [
        (Dispatch { meta: meta.clone(), ..Dispatch::default() }, "payload", "requires a payload"),
        (Dispatch { payload: Some("x".into()), ..Dispatch::default() }, "meta", "requires meta 'region'"),
        (
            Dispatch {
                payload: Some("x".into()),
                meta: BTreeMap::from([("region".into(), "eu".into()), ("bad-key".into(), "1".into())]),
                ..Dispatch::default()
            },
            "meta",
            "not a valid meta key",
        ),
    ];
    for (dispatch, field, says) in cases {
        let err = env.core.dispatch(env.now, &name("t"), dispatch, None, &mut env.out).unwrap_err();
        let Error::Invalid(invalid) = &err else { panic!("{err}") };
        assert_eq!(invalid.field, field, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    let mut forbidden = Env::with_template(PayloadRule::Forbidden, &[]);
    let err = forbidden
        .core
        .dispatch(
            forbidden.now,
            &name("t"),
            Dispatch { payload: Some("x".into()), ..Dispatch::default() },
            None,
            &mut forbidden.out,
        )
        .unwrap_err();
    assert!(err.to_string().contains("takes no payload"), "{err}");
    assert_eq!(env.core.jobs.len(), before, "nothing was made");
    let unknown = env.core.dispatch(env.now, &name("nope"), Dispatch::default(), None, &mut env.out).unwrap_err();
    assert!(matches!(unknown, Error::NotFound { .. }), "{unknown}");
}

#[test]
fn one_key_makes_one_job_and_another_request_under_it_is_refused() {
    let mut env = Env::with_template(PayloadRule::Optional, &[]);
    let key = |digest: &str| Some(IdempotencyKey { owner: "bob".into(), key: "k1".into(), digest: digest.into() });
    let d = || Dispatch { owner: "bob".into(), ..Dispatch::default() };
    let first = env.core.dispatch(env.now, &name("t"), d(), key("a"), &mut env.out).unwrap();
    let again = env.core.dispatch(env.now, &name("t"), d(), key("a"), &mut env.out).unwrap();
    assert_eq!(first, again);
    assert_eq!(env.core.jobs.len(), 1);
    assert_eq!(env.core.jobs[&first].spec.name, "t", "a dispatched job without a name is named after its template");
    let other = env.core.dispatch(env.now, &name("t"), d(), key("b"), &mut env.out).unwrap_err();
    assert!(matches!(other, Error::KeyReused { .. }), "{other}");
    let keys = env.out.store.iter().filter(|op| matches!(op, StoreOp::PutIdempotencyKey(_))).count();
    assert_eq!(keys, 1, "the key goes into the batch of its job, once");
    env.check();
}

#[test]
fn a_template_in_use_by_a_trigger_is_not_deleted() {
    let mut env = Env::with_template(PayloadRule::Optional, &[]);
    env.core.create_trigger(env.now, trigger("tr", "in/", None, false), &mut env.out).unwrap();
    let err = env.core.delete_template(&name("t"), &mut env.out).unwrap_err();
    assert!(err.to_string().contains("trigger 'tr'"), "{err}");
    env.core.delete_trigger(&TriggerName::parse("name", "tr").unwrap(), &mut env.out).unwrap();
    env.core.delete_template(&name("t"), &mut env.out).unwrap();
    env.check();
    let mut needs = Env::with_template(PayloadRule::Required, &[]);
    let err = needs.core.create_trigger(needs.now, trigger("tr", "in/", None, false), &mut needs.out).unwrap_err();
    assert!(err.to_string().contains("requires a payload"), "{err}");
}

#[test]
fn a_put_trigger_fires_once_per_matching_put() {
    let mut env = Env::with_template(PayloadRule::Optional, &[]);
    env.core.create_trigger(env.now, trigger("jpg", "in/", Some("*.jpg"), false), &mut env.out).unwrap();
    for path in ["in/a.jpg", "in/b.png", "out/c.jpg", "in/sub/d.jpg", "in/a.jpg"] {
        env.core.on_object_put(env.now, path, &mut env.out);
        env.check();
    }
    assert_eq!(env.trigger_objects(), ["in/a.jpg", "in/sub/d.jpg", "in/a.jpg"], "each put of a match, once");
    let job = env.core.jobs.values().next().unwrap();
    assert_eq!(job.spec.owner, "alice", "the trigger's creator owns its jobs");
    assert_eq!(job.spec.name, "jpg", "and they are named after it");
    assert_eq!(job.spec.task.inputs, vec![TaskInput { object: "in/a.jpg".into(), path: "in/a.jpg".into() }]);
    let t = &env.core.triggers[&TriggerName::parse("name", "jpg").unwrap()];
    assert_eq!((t.record.fired, t.record.recent.len()), (3, 3));
    // Paused: a put is counted, not dispatched.
    let jpg = TriggerName::parse("name", "jpg").unwrap();
    env.core.pause_trigger(&jpg, true, &mut env.out).unwrap();
    env.core.on_object_put(env.now, "in/e.jpg", &mut env.out);
    assert_eq!(env.trigger_objects().len(), 3);
    assert_eq!(env.core.triggers[&jpg].record.skipped, 1);
    env.check();
}

#[test]
fn a_polling_trigger_fires_once_per_new_version_and_its_cursor_survives_a_restore() {
    let mut env = Env::with_template(PayloadRule::Optional, &[]);
    let created = env.core.wall_ms(env.now);
    env.core.create_trigger(env.now, trigger("poll", "in/", None, true), &mut env.out).unwrap();
    let poll = TriggerName::parse("name", "poll").unwrap();
    env.core.on_object_put(env.now, "in/put-through-corral", &mut env.out);
    assert!(env.trigger_objects().is_empty(), "a polling trigger does not fire on puts: its poll sees them");
    assert_eq!(env.core.due_polls(env.now), vec![(poll.clone(), "in/".to_string())]);
    assert!(env.core.due_polls(env.now).is_empty(), "one poll at a time");
    let first = vec![
        listed("in/old", "v1", created - 1),
        listed("in/a", "v1", created + 10),
        listed("in/b", "v1", created + 20),
    ];
    env.core.on_poll(env.now, &poll, Ok(first.clone()), &mut env.out);
    env.check();
    assert_eq!(env.trigger_objects(), ["in/a", "in/b"], "objects from before the trigger are not new");
    env.advance(ms(5_000));
    assert_eq!(env.core.due_polls(env.now).len(), 1);
    // The same listing again, then a new version of a, and b gone.
    let ops = env.out.store.len();
    env.core.on_poll(env.now, &poll, Ok(first), &mut env.out);
    assert_eq!(env.trigger_objects().len(), 2, "nothing seen twice");
    assert_eq!(env.out.store.len(), ops, "a poll that finds nothing new writes nothing");
    env.core.on_poll(env.now, &poll, Ok(vec![listed("in/a", "v2", created + 30)]), &mut env.out);
    assert_eq!(env.trigger_objects(), ["in/a", "in/b", "in/a"]);
    assert_eq!(env.core.triggers[&poll].seen.keys().collect::<Vec<_>>(), ["in/a"], "gone objects leave the cursor");
    // A failed listing changes nothing but the error.
    env.core.on_poll(env.now, &poll, Err("the store is down".into()), &mut env.out);
    assert_eq!(env.core.triggers[&poll].record.last_error.as_deref(), Some("the store is down"));
    env.check();

    // Restore from what the store was told: the cursor holds, nothing fires again.
    let mut seen = BTreeMap::new();
    let mut record = None;
    let mut jobs = Vec::new();
    for op in &env.out.store {
        match op {
            StoreOp::SeeTriggerObject { object, version: Some(v), .. } => {
                seen.insert(object.clone(), v.clone());
            }
            StoreOp::SeeTriggerObject { object, version: None, .. } => {
                seen.remove(object);
            }
            StoreOp::PutTrigger { record: r, .. } => record = Some(r.clone()),
            StoreOp::InsertJob(j) => jobs.push(j.clone()),
            _ => {}
        }
    }
    let snapshot = Snapshot {
        pools: vec![(pool_spec("p", Provider::Static, 0, Fill::Spread), 0, false)],
        jobs,
        templates: env.core.templates.values().cloned().collect(),
        triggers: vec![(record.unwrap(), seen)],
        ..Snapshot::default()
    };
    let mut core = Core::new(CoreConfig::default(), (env.now, env.core.wall_ms(env.now)));
    let mut out = Outbox::default();
    core.restore(snapshot, env.now, &mut out);
    core.sanity_check();
    assert_eq!(core.due_polls(env.now).len(), 1, "a restored trigger polls at once");
    core.on_poll(env.now, &poll, Ok(vec![listed("in/a", "v2", created + 30)]), &mut out);
    assert!(!out.store.iter().any(|op| matches!(op, StoreOp::InsertJob(_))), "no version twice");
    assert_eq!(core.triggers[&poll].record.fired, 3);
}

#[test]
fn a_store_that_keeps_seconds_still_shows_objects_put_right_after_the_trigger() {
    let mut env = Env::with_template(PayloadRule::Optional, &[]);
    env.advance(ms(1_500));
    let created = env.core.wall_ms(env.now);
    env.core.create_trigger(env.now, trigger("poll", "in/", None, true), &mut env.out).unwrap();
    let poll = TriggerName::parse("name", "poll").unwrap();
    assert_eq!(env.core.due_polls(env.now).len(), 1);
    // Put after the trigger, but S3 says the start of that second.
    let second = created - created % 1000;
    let listing = vec![listed("in/now", "v1", second), listed("in/before", "v1", second - 1)];
    env.core.on_poll(env.now, &poll, Ok(listing), &mut env.out);
    assert_eq!(env.trigger_objects(), ["in/now"]);
    env.check();
}

#[test]
fn deleting_a_dispatched_job_deletes_its_payload_and_outputs() {
    let mut env = Env::with_template(PayloadRule::Optional, &[]);
    let payload = corral_types::paths::payload("0123456789abcdef0123456789abcdef");
    let d = Dispatch { payload: Some(payload), owner: "bob".into(), ..Dispatch::default() };
    let id = env.core.dispatch(env.now, &name("t"), d, None, &mut env.out).unwrap();
    env.core.cancel_job(env.now, id, &mut env.out).unwrap();
    env.out = Outbox::default();
    env.core.delete_job(env.now, id, &mut env.out).unwrap();
    assert_eq!(
        env.out.delete_objects,
        [corral_types::paths::job(id), "payloads/0123456789abcdef0123456789abcdef".to_string()]
    );
    env.check();
}

#[test]
fn an_object_that_can_never_make_a_job_is_counted_and_holds_up_no_other() {
    let mut env = Env::with_template(PayloadRule::Optional, &[]);
    let created = env.core.wall_ms(env.now);
    env.core.create_trigger(env.now, trigger("poll", "in/", None, true), &mut env.out).unwrap();
    let poll = TriggerName::parse("name", "poll").unwrap();
    assert_eq!(env.core.due_polls(env.now).len(), 1);
    let listing = vec![listed("in/a{index}", "v1", created + 1), listed("in/b", "v1", created + 2)];
    env.core.on_poll(env.now, &poll, Ok(listing.clone()), &mut env.out);
    assert_eq!(env.trigger_objects(), ["in/b"]);
    let t = &env.core.triggers[&poll];
    assert_eq!((t.record.fired, t.record.failed), (1, 1));
    assert!(t.record.last_error.as_deref().is_some_and(|e| e.contains("{index}")), "{:?}", t.record.last_error);
    // Seen: the next poll does not try it again.
    env.core.on_poll(env.now, &poll, Ok(listing), &mut env.out);
    assert_eq!(env.core.triggers[&poll].record.failed, 1);
    // Put through Corral, the same is refused to the client.
    env.core.create_trigger(env.now, trigger("put", "up/", None, false), &mut env.out).unwrap();
    let failed = env.core.on_object_put(env.now, "up/x{index}", &mut env.out);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("trigger 'put'") && failed[0].contains("{index}"), "{failed:?}");
    env.check();
}

#[test]
fn a_queue_trigger_makes_one_job_per_message_identity_and_counts_refusals() {
    use crate::triggers::{AckOn, Message, QueueSource, TriggerSpec};
    let mut env = Env::with_template(PayloadRule::Required, &["color"]);
    let url = "redis://127.0.0.1:6379/0?stream=s&group=g".into();
    let source = QueueSource { url, secret_env: None, ack_on: AckOn::Submit, max_deliveries: 5 };
    let spec = TriggerSpec { source: Some(source), max_active: Some(1), ..trigger("q", "", None, false) };
    // A message brings a payload and meta: a template that requires them is fine.
    env.core.create_trigger(env.now, spec, &mut env.out).unwrap();
    let q = TriggerName::parse("name", "q").unwrap();
    let message = |id: &str, color: Option<&str>| Message {
        id: id.into(),
        payload: Some(format!("payloads/{id}/payload")),
        meta: color.map(|c| BTreeMap::from([("color".to_string(), c.to_string())])).unwrap_or_default(),
    };
    assert_eq!(env.core.trigger_room(&q), 1);
    let job = env.core.on_message(env.now, &q, message("m-1", Some("red")), &mut env.out).unwrap();
    env.check();
    let spec = &env.core.jobs[&job].spec;
    assert_eq!(spec.task.env.get("CORRAL_TRIGGER_MESSAGE").map(String::as_str), Some("m-1"));
    assert_eq!(spec.owner, "alice");
    assert_eq!(env.core.trigger_room(&q), 0, "its one active job fills --max-active");
    // Delivered again: the same job, counted once.
    let again = env.core.on_message(env.now, &q, message("m-1", Some("red")), &mut env.out).unwrap();
    assert_eq!((again, env.core.jobs.len()), (job, 1));
    // Refused by the template: counted, said, and no job.
    let err = env.core.on_message(env.now, &q, message("m-2", None), &mut env.out).unwrap_err();
    assert!(err.to_string().contains("requires meta 'color'"), "{err}");
    let t = &env.core.triggers[&q];
    assert_eq!((t.record.fired, t.record.failed, t.source_state.taken), (1, 1, 3));
    // Paused: it takes nothing.
    env.core.pause_trigger(&q, true, &mut env.out).unwrap();
    assert_eq!(env.core.trigger_room(&q), 0);
    assert_eq!(env.core.queue_triggers().len(), 1);
    env.check();
}

#[test]
fn with_ack_on_complete_a_message_is_held_delivered_again_after_a_failure_then_dead() {
    use crate::triggers::{AckOn, Fate, Message, QueueSource, TriggerSpec};
    let mut env = Env::with_template(PayloadRule::Optional, &[]);
    env.node(2);
    let url = "redis://127.0.0.1:6379/0?stream=s&group=g".into();
    let source = QueueSource { url, secret_env: None, ack_on: AckOn::Complete, max_deliveries: 2 };
    let spec = TriggerSpec { source: Some(source), ..trigger("q", "", None, false) };
    env.core.create_trigger(env.now, spec, &mut env.out).unwrap();
    let q = TriggerName::parse("name", "q").unwrap();
    let message = |id: &str| Message { id: id.into(), payload: None, meta: BTreeMap::new() };
    // Runs the job just made (the template's two tasks) to its end: failed unless `code` is 0.
    let finish = |env: &mut Env, code: i32| {
        for (node, attempt) in env.schedule() {
            env.exit(&node, attempt, code);
        }
    };
    assert_eq!(env.core.fate(&q, "m").unwrap(), Fate::Deliver(1));
    let first = env.core.deliver(env.now, &q, message("m"), 1, &mut env.out).unwrap();
    assert_eq!(env.core.fate(&q, "m").unwrap(), Fate::Wait(first));
    finish(&mut env, 1);
    assert_eq!(env.core.fate(&q, "m").unwrap(), Fate::Deliver(2), "a failed job's message goes again");
    let second = env.core.deliver(env.now, &q, message("m"), 2, &mut env.out).unwrap();
    assert_ne!(first, second, "its own job");
    assert_eq!(env.core.jobs[&second].spec.task.env["CORRAL_TRIGGER_DELIVERY"], "2");
    finish(&mut env, 1);
    assert_eq!(env.core.fate(&q, "m").unwrap(), Fate::Dead { job: second, deliveries: 2 });
    // One that completes is acknowledged, and forgotten once settled.
    let job = env.core.deliver(env.now, &q, message("ok"), 1, &mut env.out).unwrap();
    finish(&mut env, 0);
    assert_eq!(env.core.fate(&q, "ok").unwrap(), Fate::Ack(job));
    env.core.settle(&q, "ok");
    assert_eq!(env.core.triggers[&q].deliveries.len(), 1);
    // The dead-lettered one is counted with the trigger's failures, with why.
    let failed = env.core.triggers[&q].record.failed;
    env.core.dead_lettered(&q, "out of deliveries".into(), &mut env.out);
    assert_eq!(env.core.triggers[&q].record.failed, failed + 1);
    assert_eq!(env.core.triggers[&q].record.last_error.as_deref(), Some("out of deliveries"));
    env.check();
}
