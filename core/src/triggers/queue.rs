//! Queue triggers: what a message is, when it is acknowledged, and the core's
//! decisions on it (the shell's consumer is `coordinator/src/queues.rs`).

use std::collections::BTreeMap;
use std::time::Instant;

use super::*;
use crate::keys::IdempotencyKey;
/// Where a queue trigger takes its messages: a Redis stream read by a consumer
/// group (`redis://HOST:PORT/DB?stream=S&group=G`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueSource {
    /// The broker's URL, checked, with no password in it.
    pub url: String,
    /// The coordinator's environment variable holding the broker's password
    /// (`CORRAL_SECRET_...`): never on a command line, in the store or an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// When a message is acknowledged: once its job is stored, or once it completed.
    #[serde(default)]
    pub ack_on: AckOn,
    /// With [`AckOn::Complete`]: how many jobs a message gets (each delivery one)
    /// before it is dead-lettered.
    #[serde(default = "default_deliveries")]
    pub max_deliveries: u32,
}

/// When a queue trigger acknowledges a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckOn {
    /// Once its job is stored.
    #[default]
    Submit,
    /// Once its job completed; a failed job's message is delivered again (a new
    /// job), up to `max_deliveries`, then dead-lettered.
    Complete,
}

impl AckOn {
    pub fn as_str(self) -> &'static str {
        match self {
            AckOn::Submit => "submit",
            AckOn::Complete => "complete",
        }
    }
}

/// Azure's `maxDequeueCount`.
pub const DEFAULT_DELIVERIES: u32 = 5;
/// The most deliveries a trigger may allow.
pub const MAX_DELIVERIES: u32 = 100;

fn default_deliveries() -> u32 {
    DEFAULT_DELIVERIES
}

/// What becomes of a message a trigger with [`AckOn::Complete`] holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Its job (of this delivery) runs: hold it.
    Wait(JobId),
    /// Its job completed: acknowledge it.
    Ack(JobId),
    /// It needs a job, of this delivery (its first, or the next after a failure).
    Deliver(u32),
    /// Its last delivery's job failed: dead-letter it, naming that job.
    Dead { job: JobId, deliveries: u32 },
}

/// The variable naming, in a queue trigger's job, the message's delivery.
pub const DELIVERY_ENV: &str = "CORRAL_TRIGGER_DELIVERY";
/// The variable naming the message.
pub const MESSAGE_ENV: &str = "CORRAL_TRIGGER_MESSAGE";

/// A message a queue trigger took, with its payload already stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its identity: the producer's message id, else the broker's.
    pub id: String,
    /// The object holding its body (the tasks' `./payload`), if it had one.
    pub payload: Option<String>,
    /// Its fields or headers (`CORRAL_META_<key>`).
    pub meta: BTreeMap<String, String>,
}

/// How a queue trigger's consumer is doing (not stored: a restart connects anew).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceState {
    pub connected: bool,
    /// Backing off after an error until then (wall ms).
    pub backing_off_until_ms: Option<u64>,
    /// Messages taken from the broker since this coordinator started.
    pub taken: u64,
}

impl Core {
    /// With [`AckOn::Complete`]: what becomes of message `id` now, from its last
    /// delivery's job.
    pub fn fate(&self, name: &TriggerName, id: &str) -> Result<Fate> {
        let t = self.triggers.get(name).ok_or_else(|| Error::not_found("trigger", name))?;
        let max = t.record.spec.source.as_ref().map_or(1, |s| s.max_deliveries.max(1));
        let Some(&(delivery, job)) = t.deliveries.get(id) else { return Ok(Fate::Deliver(1)) };
        Ok(match self.jobs.get(&job).map(|j| j.state) {
            Some(JobState::Active) => Fate::Wait(job),
            Some(JobState::Completed) => Fate::Ack(job),
            // Failed or cancelled (or deleted, so never to complete): delivered again.
            _ if delivery < max => Fate::Deliver(delivery + 1),
            _ => Fate::Dead { job, deliveries: delivery },
        })
    }

    /// A message dead-lettered for a reason of the shell's (it could not be read,
    /// or its deliveries ran out): counted with the trigger's failures (those the
    /// template refused are counted as they are refused), `why` its last error.
    pub fn dead_lettered(&mut self, name: &TriggerName, why: String, out: &mut Outbox) {
        let Some(t) = self.triggers.get_mut(name) else { return };
        t.record.failed += 1;
        t.record.last_error = Some(crate::error::bounded(why));
        self.put_trigger(name, None, out);
    }

    /// A held message was acknowledged or dead-lettered: forgotten.
    pub fn settle(&mut self, name: &TriggerName, id: &str) {
        if let Some(t) = self.triggers.get_mut(name) {
            t.deliveries.remove(id);
        }
    }
}

/// The longest message identity kept as it is (a longer one is hashed by the shell).
pub const MAX_MESSAGE_ID: usize = 200;

impl Core {
    /// The queue triggers, with their sources and whether each is paused (the
    /// shell runs a consumer for each one not paused).
    pub fn queue_triggers(&self) -> Vec<(TriggerName, QueueSource, bool)> {
        let queue = |(name, t): (&TriggerName, &Trigger)| {
            let source = t.record.spec.source.clone()?;
            Some((name.clone(), source, t.record.paused))
        };
        self.triggers.iter().filter_map(queue).collect()
    }

    /// How many more jobs trigger `name` may have active now (`u32::MAX`: no limit;
    /// 0 when paused or gone: take nothing).
    pub fn trigger_room(&mut self, name: &TriggerName) -> u32 {
        let Some(t) = self.triggers.get(name) else { return 0 };
        if t.record.paused {
            return 0;
        }
        let Some(max) = t.record.spec.max_active else { return u32::MAX };
        let active = self.active_jobs_of(name);
        max.saturating_sub(active as u32)
    }

    /// How many of trigger `name`'s jobs are active (forgetting deleted ones).
    pub(super) fn active_jobs_of(&mut self, name: &TriggerName) -> usize {
        let Some(t) = self.triggers.get_mut(name) else { return 0 };
        let jobs = &self.jobs;
        t.made.retain(|id| jobs.contains_key(id));
        t.made.iter().filter(|id| jobs.get(id).is_some_and(|j| j.state == JobState::Active)).count()
    }

    /// What a queue trigger's consumer says of itself.
    pub fn on_source_state(&mut self, name: &TriggerName, state: SourceState, error: Option<String>, out: &mut Outbox) {
        let Some(t) = self.triggers.get_mut(name) else { return };
        // The count of messages taken is the core's own (each delivery counts it).
        t.source_state = SourceState { taken: t.source_state.taken, ..state };
        if error.is_some() && t.record.last_error != error {
            t.record.last_error = error;
            self.put_trigger(name, None, out);
        }
    }

    /// A message trigger `name` took: its job, made once whatever the number of
    /// deliveries (its identity is the job's idempotency key). A refusal (the
    /// template's rules) is counted and says why: the shell dead-letters it.
    pub fn on_message(
        &mut self,
        now: Instant,
        name: &TriggerName,
        message: Message,
        out: &mut Outbox,
    ) -> Result<JobId> {
        self.deliver(now, name, message, 1, out)
    }

    /// As [`Core::on_message`], for the message's `delivery` (each one its own job).
    pub fn deliver(
        &mut self,
        now: Instant,
        name: &TriggerName,
        message: Message,
        delivery: u32,
        out: &mut Outbox,
    ) -> Result<JobId> {
        let t = self.triggers.get_mut(name).ok_or_else(|| Error::not_found("trigger", name))?;
        t.source_state.taken += u64::from(delivery == 1);
        let spec = t.record.spec.clone();
        let Some(source) = spec.source.clone() else {
            return Err(Invalid::new("trigger", format!("trigger '{name}' takes no messages")).into());
        };
        let key = match delivery {
            1 => format!("trigger {name} message {}", message.id),
            n => format!("trigger {name} message {} delivery {n}", message.id),
        };
        let key = IdempotencyKey { owner: spec.owner.clone(), key, digest: message.id.clone() };
        // Delivered again: its job is there already, and counted.
        if let Some(job) = self.keys.job_of(&key) {
            return Ok(job);
        }
        let label = format!("message {}", message.id);
        let dispatch = Dispatch {
            payload: message.payload,
            meta: message.meta,
            owner: spec.owner.clone(),
            env: BTreeMap::from([
                (TRIGGER_ENV.to_string(), name.to_string()),
                (MESSAGE_ENV.to_string(), message.id.clone()),
                (DELIVERY_ENV.to_string(), delivery.to_string()),
            ]),
            name: Some(name.to_string()),
            ..Dispatch::default()
        };
        let made = self.dispatch(now, &spec.template, dispatch, Some(key), out);
        if let (Ok(job), Some(t)) = (&made, self.triggers.get_mut(name)) {
            if t.record.spec.max_active.is_some() {
                t.made.insert(*job);
            }
            if source.ack_on == AckOn::Complete {
                t.deliveries.insert(message.id.clone(), (delivery, *job));
            }
        }
        let made = self.remember(now, name, &label, made);
        self.put_trigger(name, None, out);
        made
    }
}
