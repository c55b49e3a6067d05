//! Triggers: a template dispatched once for each new object under a prefix, or
//! (a queue trigger) once for each message a broker delivers.
//!
//! A queue trigger's messages are taken by the coordinator's shell
//! (`coordinator/src/queues.rs`), which hands each one to [`Core::on_message`]:
//! its identity is the job's idempotency key, stored with the job, so a message
//! delivered again (the broker had no ack before a crash) makes no second job.
//!
//! A trigger without a poll interval fires on each put through Corral: the put's
//! job and the trigger's record go into the batch that records the put, before the
//! put is acknowledged, so an acknowledged put has its job whatever crashes next.
//! A polling trigger lists the prefix (a store others write to directly) and
//! fires for each object version it has not seen; what it has seen is a durable
//! cursor, written in the batch of the job each new version makes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use corral_types::paths;

use super::templates::Dispatch;
use super::*;
use crate::error::{Error, Invalid, Result};

mod queue;
pub use queue::*;

/// Dispatches a trigger remembers for `trigger show`.
pub const FIRES_KEPT: usize = 10;
/// The most jobs one poll makes; the rest wait for the next poll.
pub const MAX_FIRES_PER_POLL: usize = 1000;
/// The shortest poll interval.
pub const MIN_POLL: Duration = Duration::from_secs(1);

/// A trigger as its creator asked.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    pub name: TriggerName,
    /// Objects whose paths start with this (no leading '/').
    pub prefix: String,
    /// And whose path after the prefix matches this glob (`*` crosses '/').
    pub glob: Option<String>,
    pub template: TemplateName,
    /// List the prefix this often instead of firing on puts through Corral.
    pub poll: Option<Duration>,
    /// The token that created it: the jobs it makes are that token's.
    pub owner: String,
    /// At most this many of its jobs active at once (a job that puts into its own
    /// trigger's prefix would otherwise make jobs without end).
    pub max_active: Option<u32>,
    /// A queue trigger's broker (then `prefix`, `glob` and `poll` are unused).
    pub source: Option<QueueSource>,
}

/// The largest `--max-active`.
pub const MAX_ACTIVE: u32 = 100_000;

/// The variable that names, in every task of a job a trigger made, the trigger.
pub const TRIGGER_ENV: &str = "CORRAL_TRIGGER";

impl TriggerSpec {
    /// Whether it fires on puts through Corral (not polling, not a queue's).
    pub fn is_put_trigger(&self) -> bool {
        self.poll.is_none() && self.source.is_none()
    }

    /// Whether an object at `path` is one this trigger fires for.
    pub fn matches(&self, path: &str) -> bool {
        // What Corral writes itself (task outputs, shuffle data, payloads) never
        // fires: a job writing under its own trigger's prefix would loop.
        if paths::is_reserved(path) {
            return false;
        }
        let Some(rest) = path.strip_prefix(&self.prefix) else { return false };
        match &self.glob {
            None => true,
            Some(glob) => glob::Pattern::new(glob).is_ok_and(|p| p.matches(rest)),
        }
    }
}

/// One dispatch a trigger made.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fired {
    pub object: String,
    pub job: u64,
    pub at_ms: u64,
}

/// A trigger's durable state.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRecord {
    pub spec: TriggerSpec,
    pub created_at_ms: u64,
    pub paused: bool,
    /// Jobs made.
    pub fired: u64,
    /// (A queue trigger's refused messages are dead-lettered: counted in `failed`.)
    /// Objects put while it was paused (put triggers; a polling trigger sees them
    /// when it resumes).
    pub skipped: u64,
    /// Objects whose job could not be made (then `last_error` says why).
    pub failed: u64,
    pub last_error: Option<String>,
    /// The last dispatches, oldest first.
    pub recent: Vec<Fired>,
}

/// A trigger as the core tracks it.
#[derive(Debug)]
pub struct Trigger {
    pub record: TriggerRecord,
    /// A polling trigger's cursor: the version of each object it has dealt with.
    pub seen: BTreeMap<String, String>,
    /// A poll is under way (not stored: a restart polls again).
    pub polling: bool,
    pub last_poll: Option<Instant>,
    /// The jobs it made that still exist, for `max_active` (rebuilt at restore
    /// from the jobs' environment; deleted ones are dropped when next counted). A
    /// finished one stays: `job retry` can make it active again.
    pub made: std::collections::BTreeSet<JobId>,
    /// A queue trigger's consumer, as it last said.
    pub source_state: SourceState,
    /// With [`AckOn::Complete`]: each held message's last delivery and its job
    /// (rebuilt at restore from the jobs' environment; a settled one is dropped).
    pub deliveries: HashMap<String, (u32, JobId)>,
}

/// An object a poll listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub path: String,
    /// What tells one version from the next (modification time and e-tag).
    pub version: String,
    pub modified_ms: u64,
}

/// The longest glob a trigger takes (it is matched on the event loop at each put).
pub const MAX_GLOB: usize = 256;

/// Why a trigger's put makes an event (none for its counts).
pub type Change = Option<&'static str>;

/// Checks a trigger's prefix and glob.
pub fn check_match(prefix: &str, glob: Option<&str>) -> std::result::Result<String, Invalid> {
    let prefix = prefix.trim_start_matches('/');
    if prefix.split('/').any(|part| part == "." || part == "..") || prefix.contains("//") {
        return Err(Invalid::new("prefix", "must not hold '.', '..' or empty parts"));
    }
    if prefix.len() > 1024 {
        return Err(Invalid::new("prefix", "must be at most 1024 bytes"));
    }
    if paths::is_reserved(prefix) {
        return Err(Invalid::new(
            "prefix",
            "is in jobs/, shuffle/ or payloads/, where Corral writes task outputs, shuffle data and payloads; triggers do not fire there",
        ));
    }
    if let Some(glob) = glob {
        if glob.len() > MAX_GLOB {
            return Err(Invalid::new("glob", format!("must be at most {MAX_GLOB} bytes")));
        }
        glob::Pattern::new(glob).map_err(|e| Invalid::new("glob", format!("is not a glob pattern: {e}")))?;
    }
    Ok(prefix.to_string())
}

impl Core {
    fn put_trigger(&self, name: &TriggerName, change: Change, out: &mut Outbox) {
        if let Some(t) = self.triggers.get(name) {
            out.store.push(StoreOp::PutTrigger { record: t.record.clone(), change });
        }
    }

    /// Creates a trigger on template `spec.template`, which must take no required
    /// payload or meta (an object brings neither).
    pub fn create_trigger(&mut self, now: Instant, spec: TriggerSpec, out: &mut Outbox) -> Result<()> {
        if self.triggers.contains_key(&spec.name) {
            return Err(Error::AlreadyExists { what: "trigger", id: spec.name.to_string() });
        }
        let template =
            self.templates.get(&spec.template).ok_or_else(|| Error::not_found("template", &spec.template))?;
        // A message brings a body and fields: any template may take them.
        let queue = spec.source.is_some();
        if !queue && template.spec.payload == PayloadRule::Required {
            return Err(Invalid::new(
                "template",
                format!(
                    "template '{}' requires a payload, and a trigger gives none (its object is an input)",
                    spec.template
                ),
            )
            .into());
        }
        if let Some(key) = template.spec.meta_required.first().filter(|_| !queue) {
            return Err(Invalid::new(
                "template",
                format!("template '{}' requires meta '{key}', and a trigger gives none", spec.template),
            )
            .into());
        }
        let record = TriggerRecord {
            spec,
            created_at_ms: self.wall_ms(now),
            paused: false,
            fired: 0,
            skipped: 0,
            failed: 0,
            last_error: None,
            recent: Vec::new(),
        };
        let name = record.spec.name.clone();
        self.triggers.insert(name.clone(), Trigger::new(record, BTreeMap::new()));
        self.put_trigger(&name, Some("created"), out);
        Ok(())
    }

    pub fn delete_trigger(&mut self, name: &TriggerName, out: &mut Outbox) -> Result<()> {
        self.triggers.remove(name).ok_or_else(|| Error::not_found("trigger", name))?;
        out.store.push(StoreOp::DeleteTrigger(name.clone()));
        Ok(())
    }

    pub fn pause_trigger(&mut self, name: &TriggerName, paused: bool, out: &mut Outbox) -> Result<()> {
        let t = self.triggers.get_mut(name).ok_or_else(|| Error::not_found("trigger", name))?;
        if t.record.paused != paused {
            t.record.paused = paused;
            self.put_trigger(name, Some(if paused { "paused" } else { "resumed" }), out);
        }
        Ok(())
    }

    /// A client put `path` through Corral: every put trigger it matches fires once.
    /// Called in the batch that records the put, before the put is acknowledged.
    /// Answers why each trigger that could not make its job could not (the put's
    /// client is told: the object is stored, its job is not).
    pub fn on_object_put(&mut self, now: Instant, path: &str, out: &mut Outbox) -> Vec<String> {
        let mut failed = Vec::new();
        let hit: Vec<TriggerName> = self
            .triggers
            .iter()
            .filter(|(_, t)| t.record.spec.is_put_trigger() && t.record.spec.matches(path))
            .map(|(name, _)| name.clone())
            .collect();
        for name in hit {
            if let Some(t) = self.triggers.get_mut(&name) {
                if t.record.paused {
                    t.record.skipped += 1;
                } else if let Err(e) = self.fire(now, &name, path, out) {
                    failed.push(format!("trigger '{name}' could not make its job: {e}"));
                }
            }
            self.put_trigger(&name, None, out);
        }
        failed
    }

    /// Dispatches trigger `name`'s template for `object`, and remembers it.
    fn fire(&mut self, now: Instant, name: &TriggerName, object: &str, out: &mut Outbox) -> Result<JobId> {
        let made = if object.contains("{index}") {
            // An input's `{index}` is an array index to the agent: this object could not be fetched.
            Err(Invalid::new("object", "a path holding '{index}' cannot be a trigger's input").into())
        } else if let Some(max) = self.at_max_active(name) {
            Err(Error::Exhausted(format!(
                "it has {max} active jobs, its --max-active; this object makes none (a job that puts into its trigger's prefix makes jobs without end)"
            )))
        } else {
            self.dispatch_for(now, name, object, out)
        };
        if let (Ok(job), Some(t)) = (&made, self.triggers.get_mut(name)) {
            if t.record.spec.max_active.is_some() {
                t.made.insert(*job);
            }
        }
        self.remember(now, name, object, made)
    }

    /// Trigger `name`'s `max_active`, if that many of its jobs are active.
    fn at_max_active(&mut self, name: &TriggerName) -> Option<u32> {
        let max = self.triggers.get(name)?.record.spec.max_active?;
        (self.active_jobs_of(name) >= max as usize).then_some(max)
    }

    /// After a restore: which jobs each trigger with a `max_active` made.
    pub(super) fn count_trigger_jobs(&mut self) {
        for job in self.jobs.values() {
            let env = &job.spec.task_spec(job.spec.first_index).env;
            let Some(name) = env.get(TRIGGER_ENV) else { continue };
            let Ok(name) = TriggerName::parse("trigger", name) else { continue };
            // A trigger's jobs are its creator's: another token's template that sets
            // the variable itself does not count against someone else's trigger.
            let Some(t) = self.triggers.get_mut(&name).filter(|t| t.record.spec.owner == job.spec.owner) else {
                continue;
            };
            if t.record.spec.max_active.is_some() {
                t.made.insert(job.id);
            }
            // A held message's last delivery, to go on from.
            let complete = t.record.spec.source.as_ref().is_some_and(|s| s.ack_on == AckOn::Complete);
            let delivery = env.get(DELIVERY_ENV).and_then(|d| d.parse::<u32>().ok());
            if let (true, Some(id), Some(delivery)) = (complete, env.get(MESSAGE_ENV), delivery) {
                let last = t.deliveries.entry(id.clone()).or_insert((delivery, job.id));
                if delivery > last.0 {
                    *last = (delivery, job.id);
                }
            }
        }
    }

    fn dispatch_for(&mut self, now: Instant, name: &TriggerName, object: &str, out: &mut Outbox) -> Result<JobId> {
        let Some(t) = self.triggers.get(name) else { return Err(Error::not_found("trigger", name)) };
        let spec = &t.record.spec;
        let dispatch = Dispatch {
            owner: spec.owner.clone(),
            // The object lands at its own path in the task's directory, so
            // CORRAL_TRIGGER_OBJECT names it both in the store and there.
            inputs: vec![TaskInput { object: object.to_string(), path: object.to_string() }],
            env: BTreeMap::from([
                (TRIGGER_ENV.to_string(), name.to_string()),
                ("CORRAL_TRIGGER_OBJECT".to_string(), object.to_string()),
            ]),
            name: Some(name.to_string()),
            ..Dispatch::default()
        };
        let template = spec.template.clone();
        self.dispatch(now, &template, dispatch, None, out)
    }

    /// Counts what firing trigger `name` for `object` came to.
    fn remember(&mut self, now: Instant, name: &TriggerName, object: &str, made: Result<JobId>) -> Result<JobId> {
        let at_ms = self.wall_ms(now);
        let Some(t) = self.triggers.get_mut(name) else { return made };
        match &made {
            Ok(job) => {
                t.record.fired += 1;
                t.record.recent.push(Fired { object: object.to_string(), job: job.0, at_ms });
                let extra = t.record.recent.len().saturating_sub(FIRES_KEPT);
                t.record.recent.drain(..extra);
                tracing::info!(trigger = %name, job_id = %job, object, "trigger dispatched its template");
            }
            Err(e) => {
                t.record.failed += 1;
                t.record.last_error = Some(e.to_string());
                tracing::warn!(trigger = %name, object, error = %e, "trigger could not make its job");
            }
        }
        made
    }

    /// The polling triggers whose time to list has come, marked as polling; the
    /// shell lists each one's prefix and calls [`Core::on_poll`].
    pub fn due_polls(&mut self, now: Instant) -> Vec<(TriggerName, String)> {
        let mut due = Vec::new();
        for (name, t) in &mut self.triggers {
            let Some(every) = t.record.spec.poll else { continue };
            if t.record.paused || t.polling || t.last_poll.is_some_and(|at| now < at + every) {
                continue;
            }
            t.polling = true;
            t.last_poll = Some(now);
            due.push((name.clone(), t.record.spec.prefix.clone()));
        }
        due
    }

    /// What a poll listed (or why it could not): each matching object version not
    /// seen before, and modified since the trigger was made, dispatches once (at
    /// most [`MAX_FIRES_PER_POLL`] a poll). An object whose job cannot be made stays
    /// unseen, and the next poll tries again; gone objects leave the cursor.
    pub fn on_poll(
        &mut self,
        now: Instant,
        name: &TriggerName,
        listed: std::result::Result<Vec<Listed>, String>,
        out: &mut Outbox,
    ) {
        let Some(t) = self.triggers.get_mut(name) else { return };
        t.polling = false;
        // A poll that finds nothing new writes nothing.
        let before = t.record.clone();
        let listed = match listed {
            Ok(listed) => listed,
            Err(why) => {
                t.record.last_error = Some(why);
                if t.record != before {
                    self.put_trigger(name, None, out);
                }
                return;
            }
        };
        // Stores keep modification times to the second (S3 does): an object put in
        // the second the trigger was made counts as new.
        let since = t.record.created_at_ms - t.record.created_at_ms % 1000;
        let spec = t.record.spec.clone();
        let present: std::collections::BTreeSet<&str> = listed.iter().map(|o| o.path.as_str()).collect();
        let gone: Vec<String> = t.seen.keys().filter(|p| !present.contains(p.as_str())).cloned().collect();
        for path in gone {
            t.seen.remove(&path);
            out.store.push(StoreOp::SeeTriggerObject { trigger: name.clone(), object: path, version: None });
        }
        let new: Vec<&Listed> = listed
            .iter()
            .filter(|o| o.modified_ms >= since && spec.matches(&o.path) && t.seen.get(&o.path) != Some(&o.version))
            .take(MAX_FIRES_PER_POLL)
            .collect();
        for object in new {
            match self.fire(now, name, &object.path, out) {
                // This object can never make a job: seen, so that it holds up no other.
                Ok(_) | Err(Error::Invalid(_)) => {}
                // Perhaps later (the queue is full): it and the rest wait for the next poll.
                Err(_) => break,
            }
            if let Some(t) = self.triggers.get_mut(name) {
                t.seen.insert(object.path.clone(), object.version.clone());
            }
            out.store.push(StoreOp::SeeTriggerObject {
                trigger: name.clone(),
                object: object.path.clone(),
                version: Some(object.version.clone()),
            });
        }
        if self.triggers.get(name).is_some_and(|t| t.record != before) {
            self.put_trigger(name, None, out);
        }
    }
}

impl Trigger {
    pub fn new(record: TriggerRecord, seen: BTreeMap<String, String>) -> Trigger {
        let source_state = SourceState::default();
        let (made, deliveries) = Default::default();
        Trigger { record, seen, polling: false, last_poll: None, made, source_state, deliveries }
    }
}
