//! The templates tests that need the real store.

use super::*;
use crate::core::keys::IdempotencyKey;
use crate::core::triggers::TriggerSpec;

/// A put tried again under its idempotency key fires once, also after a restore;
/// the key used for another object, or for a job, is refused.
#[test]
fn a_put_under_an_idempotency_key_fires_once() {
    let mut env = Env::with_template(PayloadRule::Optional, &[]);
    env.core.create_trigger(env.now, trigger("all", "in/", None, false), &mut env.out).unwrap();
    let key = |path: &str| IdempotencyKey { owner: "bob".into(), key: "k".into(), digest: format!("put:{path}") };
    for _ in 0..2 {
        if env.core.first_put(env.now, Some(key("in/a")), &mut env.out) {
            env.core.on_object_put(env.now, "in/a", &mut env.out);
        }
        env.check();
    }
    assert_eq!(env.trigger_objects(), ["in/a"]);
    assert!(env.core.first_put(env.now, None, &mut env.out), "a put without a key is always recorded");
    let err = env.core.put_seen(&key("in/b")).unwrap_err().to_string();
    assert!(err.contains("idempotency_key") && err.contains("'in/a'"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    assert_eq!(restored.put_seen(&key("in/a")).ok(), Some(true), "the key outlives a restart");
    let job = IdempotencyKey { owner: "bob".into(), key: "k".into(), digest: "a job".into() };
    assert!(restored.put_seen(&job).is_err(), "a put's key is no job's");
}

/// A job that puts into its own trigger's prefix would make jobs without end:
/// `max_active` bounds how many are active, counted again after a restore, and a
/// job that ends makes room.
#[test]
fn a_put_trigger_makes_at_most_max_active_jobs_at_once() {
    let mut env = Env::with_template(PayloadRule::Optional, &[]);
    let spec = TriggerSpec { max_active: Some(2), ..trigger("loop", "in/", None, false) };
    env.core.create_trigger(env.now, spec, &mut env.out).unwrap();
    for i in 0..2 {
        assert!(env.core.on_object_put(env.now, &format!("in/{i}"), &mut env.out).is_empty());
    }
    let refused = env.core.on_object_put(env.now, "in/2", &mut env.out);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("it has 2 active jobs, its --max-active"), "{refused:?}");
    let name = TriggerName::parse("name", "loop").unwrap();
    assert_eq!((env.core.triggers[&name].record.fired, env.core.triggers[&name].record.failed), (2, 1));
    env.check();
    // Restored, it still counts its two active jobs.
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    assert!(!restored.on_object_put(env.now, "in/3", &mut Outbox::default()).is_empty());
    // Each job names the template it came from, also after the restore.
    let from = TemplateName::parse("template", "t").unwrap();
    assert!(restored.jobs.values().all(|j| j.spec.template.as_ref() == Some(&from)), "{:?}", restored.jobs.len());
    let filter = crate::core::views::JobFilter { template: Some(from), ..Default::default() };
    assert_eq!(restored.jobs_matching(&filter).len(), 2);
    // One ends: room for one more.
    let first = *env.core.jobs.keys().next().unwrap();
    env.core.cancel_job(env.now, first, &mut env.out).unwrap();
    assert!(env.core.on_object_put(env.now, "in/4", &mut env.out).is_empty());
    assert!(!env.core.on_object_put(env.now, "in/5", &mut env.out).is_empty());
    assert_eq!(env.trigger_objects(), ["in/0", "in/1", "in/4"]);
    env.check();
    // A job retried is active again, and counts again.
    let second = *env.core.jobs.keys().nth(1).unwrap();
    env.core.cancel_job(env.now, second, &mut env.out).unwrap();
    let every = crate::core::RetrySelection { failed: true, cancelled: true, tasks: Vec::new() };
    env.core.retry_job(env.now, first, &every, &mut env.out).unwrap();
    assert!(
        !env.core.on_object_put(env.now, "in/6", &mut env.out).is_empty(),
        "two active again: in/4's and the retried one"
    );
    env.check();
}
