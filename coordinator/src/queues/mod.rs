//! Queue triggers' consumers: a job for each message a broker delivers, exactly
//! once, acknowledged only once the job is stored.
//!
//! One consumer runs for each queue trigger that is not paused (on the leader: the
//! core runs only there). A Redis stream is read through its consumer group as
//! the consumer `corral-TRIGGER`, so after a crash the messages it took and had
//! not acknowledged are its own pending ones: it reads those first ([`redis_streams`]).
//! An AMQP 0-9-1 queue (RabbitMQ) is consumed with manual acknowledgements and a
//! prefetch, so what was not acknowledged before a crash the broker delivers
//! again ([`amqp`]; identity: the `message_id` property, else a digest of the
//! body and headers; dead letters go to the queue `QUEUE.dead`). Each message
//! goes to [`Core::on_message`](crate::core::Core::on_message), whose idempotency
//! key is the message's identity (its `message_id` field where the producer set
//! one, else the stream entry's id): a message delivered again makes no second
//! job, and is acknowledged then. A message the template refuses (a payload too
//! big, meta missing) is moved at once to the stream `STREAM:dead` with the
//! reason and the trigger, and acknowledged. A store that cannot write, or a
//! broker that fails, leaves the message pending; the consumer backs off (1 s
//! doubling to a minute) and starts again from its pending messages.
//!
//! With `--ack-on complete` a message is held (pending in the group) until its job
//! ends: acknowledged when it completed; when it failed, delivered again as a
//! new job (the delivery is part of its key), up to `--max-deliveries`, then
//! dead-lettered with the job's id and error. The core decides
//! ([`Core::fate`](crate::core::Core::fate)) from the jobs it holds, so a
//! restarted coordinator goes on where it was.
//!
//! Backpressure: a consumer asks for no more messages than its trigger's
//! `--max-active` leaves room for, so a burst waits in the broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::core::templates::MAX_PAYLOAD;
use crate::core::triggers::{AckOn, Fate, Message, QueueSource, SourceState, DEFAULT_DELIVERIES, MAX_DELIVERIES};
use crate::error::{Error, Invalid, Refusal};
use crate::model::*;
use crate::runtime::RuntimeError;
use crate::shared::Shared;

mod amqp;
mod redis_streams;

/// How often the consumers are matched with the queue triggers.
const TICK: Duration = Duration::from_millis(500);
/// The most messages one read takes.
const BATCH: usize = 100;
/// How long one read waits for messages (so pauses and deletions are seen).
const BLOCK_MS: usize = 1000;
/// ... and while messages are held for their jobs (looked at again after it).
const HELD_BLOCK_MS: usize = 200;
/// The most messages held for their jobs at once (--ack-on complete).
const MAX_HELD: usize = 10_000;
/// How long connecting, and each command, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff after an error: from the first, doubling to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// The field whose value is a message's body (the tasks' `./payload`).
pub const PAYLOAD_FIELD: &str = "payload";
/// The field a producer names its message with (else the entry id is its identity).
pub const ID_FIELD: &str = "message_id";
/// Environment variables a trigger may name for its broker's password.
pub const SECRET_PREFIX: &str = "CORRAL_SECRET_";

/// Checks a queue trigger's source: a `redis://` URL naming a stream and a group,
/// with no password in it (the password, if any, is in the coordinator's
/// environment variable `secret_env`).
pub fn checked_source(url: &str, secret_env: &str) -> Result<QueueSource, Invalid> {
    let parsed = url::Url::parse(url).map_err(|e| Invalid::new("source", format!("is not a URL: {e}")))?;
    let keys: &[&str] = match parsed.scheme() {
        "redis" => &["stream", "group"],
        "amqp" => &["queue"],
        "amqps" | "rediss" => {
            return Err(Invalid::new("source", "TLS to the broker is not built yet: use amqp:// or redis://"))
        }
        other => {
            return Err(Invalid::new(
                "source",
                format!(
                    "has scheme '{other}': use amqp://HOST:PORT/VHOST?queue=Q or redis://HOST:PORT/DB?stream=S&group=G"
                ),
            ))
        }
    };
    if parsed.password().is_some() {
        return Err(Invalid::new(
            "source",
            "holds a password: it would be stored and shown; name the coordinator's environment variable that holds it with --secret-env",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Invalid::new("source", "names no host"));
    }
    let db = parsed.path().trim_start_matches('/');
    if parsed.scheme() == "redis" && !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(Invalid::new("source", format!("has database '{db}': it must be a number")));
    }
    let query: HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    for key in query.keys() {
        if !keys.contains(&key.as_str()) {
            let understood = keys.iter().map(|k| format!("{k}=")).collect::<Vec<_>>().join(" and ");
            return Err(Invalid::new("source", format!("has '{key}=': only {understood} are understood")));
        }
    }
    for key in keys.iter().copied() {
        let value = query.get(key).map(String::as_str).unwrap_or_default();
        let fine = !value.is_empty() && value.len() <= 200 && value.chars().all(|c| c.is_ascii_graphic());
        if !fine {
            return Err(Invalid::new("source", format!("needs {key}=NAME (printable, at most 200 characters)")));
        }
    }
    let secret_env = match secret_env {
        "" => None,
        var if var.starts_with(SECRET_PREFIX)
            && var.len() <= 128
            && var.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') =>
        {
            Some(var.to_string())
        }
        _ => {
            return Err(Invalid::new(
                "secret_env",
                format!(
                    "must name an environment variable of the coordinator starting with {SECRET_PREFIX} (A-Z, 0-9, _)"
                ),
            ))
        }
    };
    let (ack_on, max_deliveries) = (AckOn::Submit, crate::core::triggers::DEFAULT_DELIVERIES);
    Ok(QueueSource { url: url.to_string(), secret_env, ack_on, max_deliveries })
}

/// `source` acknowledging on `ack_on` ("submit", "complete"; empty: submit), with
/// `max_deliveries` (0: the default; only with "complete").
pub fn with_acks(source: QueueSource, ack_on: &str, max_deliveries: u32) -> Result<QueueSource, Invalid> {
    let ack_on = match ack_on {
        "" | "submit" => AckOn::Submit,
        "complete" => AckOn::Complete,
        other => {
            return Err(Invalid::new(
                "ack_on",
                format!("must be submit or complete, not '{}'", crate::error::shown(other)),
            ))
        }
    };
    let max_deliveries = match max_deliveries {
        0 => DEFAULT_DELIVERIES,
        _ if ack_on == AckOn::Submit => {
            return Err(Invalid::new(
                "max_deliveries",
                "applies with --ack-on complete (a message acknowledged at submit is delivered once)",
            ))
        }
        n if n > MAX_DELIVERIES => {
            return Err(Invalid::new("max_deliveries", format!("must be at most {MAX_DELIVERIES}")))
        }
        n => n,
    };
    Ok(QueueSource { ack_on, max_deliveries, ..source })
}

/// A stream and group, from a checked source.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut running: HashMap<TriggerName, (QueueSource, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let Ok(wanted) = shared.runtime.call(|core, _, _| core.queue_triggers()).await else { continue };
        let wanted: HashMap<TriggerName, QueueSource> =
            wanted.into_iter().filter(|(_, _, paused)| !paused).map(|(name, source, _)| (name, source)).collect();
        running.retain(|name, (source, task)| {
            let keep = wanted.get(name) == Some(source) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, source) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(name) {
                let task = tokio::spawn(consume(shared.clone(), slot.key().clone(), source.clone()));
                slot.insert((source, task));
            }
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

/// One trigger's consumer: sessions with the broker, backing off between them.
async fn consume(shared: Arc<Shared>, name: TriggerName, source: QueueSource) {
    let mut backoff = BACKOFF.0;
    let mut state = SourceState::default();
    loop {
        let why = match source.url.starts_with("redis:") {
            true => redis_streams::session(&shared, &name, &source, &mut state, &mut backoff).await,
            false => amqp::session(&shared, &name, &source, &mut state, &mut backoff).await,
        };
        tracing::warn!(trigger = %name, error = %why, backoff_ms = backoff.as_millis() as u64, "a queue trigger's broker failed; trying again");
        let until = crate::auth::now_ms() + backoff.as_millis() as u64;
        state = SourceState { connected: false, backing_off_until_ms: Some(until), ..state };
        report(&shared, &name, &state, Some(why)).await;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

async fn report(shared: &Arc<Shared>, name: &TriggerName, state: &SourceState, error: Option<String>) {
    let (name, state) = (name.clone(), state.clone());
    let _ = shared.runtime.call(move |core, _, out| core.on_source_state(&name, state, error, out)).await;
}

/// How a failed job ended: its first failed task's last attempt, as the store has it.
async fn failure_of(shared: &Arc<Shared>, job: JobId) -> String {
    let failed = shared
        .runtime
        .call(move |core, _, _| {
            let job = core.jobs.get(&job)?;
            let (offset, task) = job.tasks.iter().enumerate().find(|(_, t)| t.state == TaskState::Failed)?;
            let index = job.spec.index_at(offset)?;
            Some(AttemptRef { task: TaskKey { job: job.id, index }, attempt: task.attempt })
        })
        .await;
    let Ok(Some(attempt)) = failed else { return "it did not complete".into() };
    let shared = shared.clone();
    let said = tokio::task::spawn_blocking(move || shared.reader().ended_attempts(&[attempt])).await;
    match said {
        Ok(Ok(found)) => found.get(&attempt).map_or_else(|| "a task failed".into(), |e| e.said.clone()),
        _ => "a task failed".into(),
    }
}

/// Why a message was not made a job.
enum Taken {
    /// Never will be (the template's rules, counted by the core): dead-letter it.
    Refused(String),
    /// Cannot be read as a message: dead-letter it, and count it.
    Unreadable(String),
    /// Not now (the store cannot write, the coordinator stops): leave it pending.
    NotNow(String),
}

/// A message's identity, body and fields.
struct Parsed {
    id: String,
    payload: Option<Vec<u8>>,
    meta: BTreeMap<String, String>,
}

/// Reads a stream entry as a message, or says why it cannot be one.
async fn make_job(shared: &Arc<Shared>, name: &TriggerName, parsed: Parsed, delivery: u32) -> Result<(), Taken> {
    let object = match parsed.payload {
        Some(bytes) => {
            Some(crate::app::dispatch::store_payload(shared, bytes).await.map_err(|e| Taken::NotNow(e.to_string()))?)
        }
        None => None,
    };
    let message = Message { id: parsed.id, payload: object.clone(), meta: parsed.meta };
    let (trigger, taken) = (name.clone(), object.clone());
    let made = shared
        .runtime
        .call(move |core, now, out| {
            let job = core.deliver(now, &trigger, message, delivery, out)?;
            // Delivered again: the first delivery's job has its own payload.
            let ours = core
                .jobs
                .get(&job)
                .is_some_and(|j| taken.is_none_or(|p| j.spec.task.inputs.iter().any(|i| i.object == p)));
            Ok::<_, Error>((job, ours))
        })
        .await;
    let unused = match &made {
        Ok(Ok((_, ours))) => !ours,
        Ok(Err(_)) | Err(RuntimeError::Revoked | RuntimeError::NotSaved(_)) => true,
        Err(RuntimeError::StoreCannotWrite { in_flight, .. }) => !in_flight,
        Err(RuntimeError::ShuttingDown) => false,
    };
    if unused {
        crate::app::dispatch::drop_payload(shared, object.as_deref());
    }
    match made {
        Ok(Ok(_)) => Ok(()),
        // A full queue (or pool) takes it later; any other refusal is final.
        Ok(Err(e @ Error::Core(Refusal::Exhausted(_)))) => Err(Taken::NotNow(e.to_string())),
        Ok(Err(e @ Error::Core(_))) => Err(Taken::Refused(e.to_string())),
        Ok(Err(e)) => Err(Taken::NotNow(e.to_string())),
        Err(e) => Err(Taken::NotNow(e.to_string())),
    }
}

/// Makes the jobs of a batch of messages (each its first delivery) at once: their
/// calls share the core's rounds and so its commits, where one message at a time
/// waits for a commit each. Jobs are not numbered in message order then.
async fn make_jobs(
    shared: &Arc<Shared>,
    name: &TriggerName,
    messages: Vec<Result<Parsed, String>>,
) -> Vec<Result<(), Taken>> {
    let each = messages.into_iter().map(|message| async move {
        match message {
            Ok(parsed) => make_job(shared, name, parsed, 1).await,
            Err(why) => Err(Taken::Unreadable(why)),
        }
    });
    futures::future::join_all(each).await
}

/// What to do with a message held for its job (--ack-on complete), now.
enum Step {
    Hold,
    Ack,
    /// `count`: for a reason the core has not counted yet.
    DeadLetter {
        why: String,
        job: Option<JobId>,
        count: bool,
    },
}

/// Asks the core what becomes of a held message (one that cannot be read is
/// dead-lettered), making the job of its next delivery where that is it; with
/// the message's identity.
async fn step(
    shared: &Arc<Shared>,
    name: &TriggerName,
    parsed: Result<Parsed, String>,
) -> Result<(Step, String), String> {
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(why) => return Ok((Step::DeadLetter { why, job: None, count: true }, String::new())),
    };
    let (trigger, id) = (name.clone(), parsed.id.clone());
    let settled_id = parsed.id.clone();
    let fate = match shared.runtime.call(move |core, _, _| core.fate(&trigger, &id)).await {
        Ok(Ok(fate)) => fate,
        Ok(Err(e)) => return Err(format!("the trigger: {e}")),
        Err(e) => return Err(format!("the coordinator: {e}")),
    };
    let step = match fate {
        Fate::Wait(_) => Step::Hold,
        Fate::Ack(_) => Step::Ack,
        Fate::Deliver(delivery) => match make_job(shared, name, parsed, delivery).await {
            Ok(()) => Step::Hold,
            Err(Taken::Refused(why)) => Step::DeadLetter { why, job: None, count: false },
            Err(Taken::Unreadable(why)) => Step::DeadLetter { why, job: None, count: true },
            Err(Taken::NotNow(why)) => return Err(why),
        },
        Fate::Dead { job, deliveries } => {
            let failed = failure_of(shared, job).await;
            let why =
                format!("job {job} failed ({failed}), its {deliveries}th delivery; --max-deliveries is {deliveries}");
            Step::DeadLetter { why, job: Some(job), count: true }
        }
    };
    Ok((step, settled_id))
}

/// A held message was acknowledged or dead-lettered: the core forgets it.
async fn settled(shared: &Arc<Shared>, name: &TriggerName, id: String) {
    let trigger = name.clone();
    let _ = shared.runtime.call(move |core, _, _| core.settle(&trigger, &id)).await;
}

/// Counts a message dead-lettered for a reason the core did not see (it could not
/// be read, or its deliveries ran out) with the trigger's failures.
async fn counted_dead(shared: &Arc<Shared>, name: &TriggerName, why: String) {
    let trigger = name.clone();
    let _ = shared.runtime.call(move |core, _, out| core.dead_lettered(&trigger, why, out)).await;
}
