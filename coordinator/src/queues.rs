//! Queue triggers' consumers: a job for each message a broker delivers, exactly
//! once, acknowledged only once the job is stored.
//!
//! One consumer runs for each queue trigger that is not paused (on the leader: the
//! core runs only there). A Redis stream is read through its consumer group as
//! the consumer `corral-TRIGGER`, so after a crash the messages it took and had
//! not acknowledged are its own pending ones: it reads those first. Each message
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

use redis::AsyncCommands;
use tokio::sync::watch;

use crate::core::templates::MAX_PAYLOAD;
use crate::core::triggers::{
    AckOn, Fate, Message, QueueSource, SourceState, DEFAULT_DELIVERIES, MAX_DELIVERIES, MAX_MESSAGE_ID,
};
use crate::error::{Error, Invalid, Refusal};
use crate::model::*;
use crate::runtime::RuntimeError;
use crate::shared::Shared;

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
    match parsed.scheme() {
        "redis" => {}
        "amqp" | "amqps" => {
            return Err(Invalid::new("source", "amqp:// (RabbitMQ) sources are not built yet; redis:// streams are"))
        }
        other => {
            return Err(Invalid::new(
                "source",
                format!("has scheme '{other}': use redis://HOST:PORT/DB?stream=S&group=G"),
            ))
        }
    }
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
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(Invalid::new("source", format!("has database '{db}': it must be a number")));
    }
    let query: HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    for key in query.keys() {
        if key != "stream" && key != "group" {
            return Err(Invalid::new("source", format!("has '{key}=': only stream= and group= are understood")));
        }
    }
    for key in ["stream", "group"] {
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
struct Stream {
    info: redis::ConnectionInfo,
    stream: String,
    group: String,
    ack_on: AckOn,
}

impl Stream {
    fn of(source: &QueueSource) -> Result<Stream, String> {
        let parsed = url::Url::parse(&source.url).map_err(|e| e.to_string())?;
        let query: HashMap<String, String> = parsed.query_pairs().into_owned().collect();
        let (stream, group) = (query.get("stream").cloned(), query.get("group").cloned());
        let (Some(stream), Some(group)) = (stream, group) else {
            return Err("the source names no stream or group".into());
        };
        let mut base = parsed.clone();
        base.set_query(None);
        let mut info: redis::ConnectionInfo =
            redis::IntoConnectionInfo::into_connection_info(base.as_str()).map_err(|e| e.to_string())?;
        if let Some(var) = &source.secret_env {
            let secret = std::env::var(var).map_err(|_| format!("the coordinator's environment has no {var}"))?;
            let settings = info.redis_settings().clone().set_password(secret);
            info = info.set_redis_settings(settings);
        }
        Ok(Stream { info, stream, group, ack_on: source.ack_on })
    }
}

/// Runs until `stop` turns true: a consumer for each queue trigger not paused.
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
        let why = match Stream::of(&source) {
            Ok(stream) => session(&shared, &name, &stream, &mut state, &mut backoff).await,
            Err(why) => why,
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

async fn io<T>(what: &str, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer in {}s", IO_TIMEOUT.as_secs())),
    }
}

/// Connected: takes messages until something fails; returns why.
async fn session(
    shared: &Arc<Shared>,
    name: &TriggerName,
    s: &Stream,
    state: &mut SourceState,
    backoff: &mut Duration,
) -> String {
    let client = match redis::Client::open(s.info.clone()) {
        Ok(client) => client,
        Err(e) => return format!("the source: {e}"),
    };
    let mut conn = match io("connecting", client.get_multiplexed_async_connection()).await {
        Ok(conn) => conn,
        Err(why) => return why,
    };
    // The group reads the stream from its start: messages put before the trigger
    // was made are work too. (A group made by hand is used as it is.)
    let made: redis::RedisResult<()> = conn.xgroup_create_mkstream(&s.stream, &s.group, "0").await;
    if let Err(e) = made {
        if e.code() != Some("BUSYGROUP") {
            return format!("creating the group: {e}");
        }
    }
    *state = SourceState { connected: true, backing_off_until_ms: None, ..state.clone() };
    report(shared, name, state, None).await;
    let consumer = format!("corral-{name}");
    // Its own pending messages first (taken before a crash, never acknowledged),
    // a page at a time from `cursor`; then new ones.
    let (mut pending, mut cursor) = (true, "0".to_string());
    // With --ack-on complete: the messages whose jobs run, by entry id.
    let mut held: BTreeMap<String, redis::streams::StreamId> = BTreeMap::new();
    loop {
        let mut settled = Vec::new();
        for (entry_id, entry) in &held {
            match settle(shared, name, &mut conn, s, entry).await {
                Ok(true) => settled.push(entry_id.clone()),
                Ok(false) => {}
                Err(why) => return why,
            }
        }
        for entry_id in settled {
            held.remove(&entry_id);
        }
        let room = shared.runtime.call({
            let name = name.clone();
            move |core, _, _| core.trigger_room(&name)
        });
        let room = match room.await {
            Ok(room) => (room as usize).min(MAX_HELD.saturating_sub(held.len())),
            Err(e) => return format!("the coordinator: {e}"),
        };
        if room == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut opts = redis::streams::StreamReadOptions::default().group(&s.group, &consumer).count(room.min(BATCH));
        if !pending {
            // Held messages are looked at again soon.
            opts = opts.block(if held.is_empty() { BLOCK_MS } else { HELD_BLOCK_MS });
        }
        let (keys, from) = ([&s.stream], [if pending { cursor.as_str() } else { ">" }]);
        let read = conn.xread_options::<_, _, Option<redis::streams::StreamReadReply>>(&keys, &from, &opts);
        let reply = match tokio::time::timeout(IO_TIMEOUT + Duration::from_millis(BLOCK_MS as u64), read).await {
            Ok(Ok(reply)) => reply.unwrap_or_default(),
            Ok(Err(e)) => return format!("reading: {e}"),
            Err(_) => return "reading: no answer".into(),
        };
        let entries: Vec<redis::streams::StreamId> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
        if pending {
            match entries.last() {
                Some(last) => cursor = last.id.clone(),
                None => pending = false,
            }
        }
        for entry in entries {
            if s.ack_on == AckOn::Complete {
                // Settled as its job ends, at the top of the loop.
                held.insert(entry.id.clone(), entry);
                continue;
            }
            let settled = match take(shared, name, &entry, 1).await {
                Ok(()) => io("acknowledging", conn.xack::<_, _, _, ()>(&s.stream, &s.group, &[&entry.id])).await,
                Err(Taken::Refused(why)) => dead_letter(&mut conn, s, name, &entry, &why, None).await,
                Err(Taken::NotNow(why)) => Err(why),
            };
            if let Err(why) = settled {
                return why;
            }
        }
        *backoff = BACKOFF.0;
    }
}

/// With --ack-on complete: acknowledges a held message whose job completed,
/// delivers it again (a new job) if its job failed and it may be, or
/// dead-letters it; true once it is settled.
async fn settle(
    shared: &Arc<Shared>,
    name: &TriggerName,
    conn: &mut redis::aio::MultiplexedConnection,
    s: &Stream,
    entry: &redis::streams::StreamId,
) -> Result<bool, String> {
    let parsed = match parse(entry) {
        Ok(parsed) => parsed,
        Err(why) => {
            dead_letter(conn, s, name, entry, &why, None).await?;
            return Ok(true);
        }
    };
    let (trigger, id) = (name.clone(), parsed.id.clone());
    let fate = shared.runtime.call(move |core, _, _| core.fate(&trigger, &id)).await;
    let fate = match fate {
        Ok(Ok(fate)) => fate,
        Ok(Err(e)) => return Err(format!("the trigger: {e}")),
        Err(e) => return Err(format!("the coordinator: {e}")),
    };
    let done = match fate {
        Fate::Wait(_) => false,
        Fate::Ack(_) => {
            io("acknowledging", conn.xack::<_, _, _, ()>(&s.stream, &s.group, &[&entry.id])).await?;
            true
        }
        Fate::Deliver(delivery) => match make_job(shared, name, parsed, delivery).await {
            Ok(()) => false,
            Err(Taken::Refused(why)) => {
                dead_letter(conn, s, name, entry, &why, None).await?;
                true
            }
            Err(Taken::NotNow(why)) => return Err(why),
        },
        Fate::Dead { job, deliveries } => {
            let why = format!(
                "job {job} failed ({}), its {deliveries}th delivery; --max-deliveries is {deliveries}",
                failure_of(shared, job).await
            );
            dead_letter(conn, s, name, entry, &why, Some(job)).await?;
            true
        }
    };
    if done {
        let (trigger, id) = (name.clone(), parse(entry).map(|p| p.id).unwrap_or_default());
        let _ = shared.runtime.call(move |core, _, _| core.settle(&trigger, &id)).await;
    }
    Ok(done)
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
    /// Never will be (the template's rules): dead-letter it.
    Refused(String),
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
fn parse(entry: &redis::streams::StreamId) -> Result<Parsed, String> {
    let mut parsed = Parsed { id: entry.id.clone(), payload: None, meta: BTreeMap::new() };
    for (field, value) in &entry.map {
        let bytes: Vec<u8> =
            redis::from_redis_value(value.clone()).map_err(|_| format!("field '{field}' is not a string"))?;
        match field.as_str() {
            PAYLOAD_FIELD => parsed.payload = Some(bytes),
            ID_FIELD => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                parsed.id = if text.len() <= MAX_MESSAGE_ID && text.chars().all(|c| c.is_ascii_graphic()) {
                    text
                } else {
                    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
                    format!("sha256:{}", crate::auth::secret::hex(digest.as_ref()))
                };
            }
            _ => {
                let text = String::from_utf8(bytes).map_err(|_| format!("field '{field}' is not UTF-8"))?;
                parsed.meta.insert(field.clone(), text);
            }
        }
    }
    if let Some(body) = &parsed.payload {
        if body.len() as u64 > MAX_PAYLOAD {
            return Err(format!("its payload is {} bytes; the most is {MAX_PAYLOAD}", body.len()));
        }
    }
    Ok(parsed)
}

/// Makes the job of one message's `delivery` (its payload stored first), or says why not.
async fn take(
    shared: &Arc<Shared>,
    name: &TriggerName,
    entry: &redis::streams::StreamId,
    delivery: u32,
) -> Result<(), Taken> {
    let parsed = parse(entry).map_err(Taken::Refused)?;
    make_job(shared, name, parsed, delivery).await
}

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

/// Moves a message to `STREAM:dead` with why (and the job of its last delivery),
/// and acknowledges it.
async fn dead_letter(
    conn: &mut redis::aio::MultiplexedConnection,
    s: &Stream,
    name: &TriggerName,
    entry: &redis::streams::StreamId,
    why: &str,
    job: Option<JobId>,
) -> Result<(), String> {
    tracing::warn!(trigger = %name, entry = %entry.id, reason = why, "a message was refused; dead-lettered");
    let dead = format!("{}:dead", s.stream);
    // The message's own fields (strings, as they came), then why and whence.
    let mut fields: Vec<(String, Vec<u8>)> = entry
        .map
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), redis::from_redis_value::<Vec<u8>>(v.clone()).ok()?)))
        .collect();
    fields.push(("corral_error".into(), why.as_bytes().to_vec()));
    fields.push(("corral_trigger".into(), name.as_str().as_bytes().to_vec()));
    fields.push(("corral_entry".into(), entry.id.as_bytes().to_vec()));
    if let Some(job) = job {
        fields.push(("corral_job".into(), job.to_string().into_bytes()));
    }
    let mut pipe = redis::pipe();
    pipe.atomic().xadd(&dead, "*", &fields).ignore().xack(&s.stream, &s.group, &[&entry.id]).ignore();
    io("dead-lettering", pipe.query_async::<()>(conn)).await
}
