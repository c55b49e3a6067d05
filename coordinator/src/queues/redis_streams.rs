//! A Redis stream read through a consumer group (`redis://HOST:PORT/DB?stream=S&group=G`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;

use super::*;
use crate::core::triggers::{AckOn, QueueSource, SourceState, MAX_MESSAGE_ID};

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
async fn io<T>(what: &str, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer in {}s", IO_TIMEOUT.as_secs())),
    }
}

/// Connected: takes messages until something fails; returns why.
pub(super) async fn session(
    shared: &Arc<Shared>,
    name: &TriggerName,
    source: &QueueSource,
    state: &mut SourceState,
    backoff: &mut Duration,
) -> String {
    let s = match Stream::of(source) {
        Ok(stream) => stream,
        Err(why) => return why,
    };
    let s = &s;
    let client = match redis::Client::open(s.info.clone()) {
        Ok(client) => client,
        Err(e) => return format!("the source: {e}"),
    };
    // No response timeout of the client's own (500 ms): a read blocks for up to
    // BLOCK_MS, and every command here has its own deadline.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = match io("connecting", client.get_multiplexed_async_connection_with_config(&config)).await {
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
        if s.ack_on == AckOn::Complete {
            // Settled as their jobs end, at the top of the loop.
            held.extend(entries.into_iter().map(|entry| (entry.id.clone(), entry)));
            *backoff = BACKOFF.0;
            continue;
        }
        let made = make_jobs(shared, name, entries.iter().map(parse).collect()).await;
        let (mut made_ids, mut failed) = (Vec::new(), None);
        for (entry, result) in entries.iter().zip(made) {
            match result {
                Ok(()) => made_ids.push(entry.id.as_str()),
                Err(Taken::Refused(why)) => {
                    if let Err(e) = dead_letter(&mut conn, s, name, entry, &why, None).await {
                        failed.get_or_insert(e);
                    }
                }
                Err(Taken::Unreadable(why)) => match dead_letter(&mut conn, s, name, entry, &why, None).await {
                    Ok(()) => counted_dead(shared, name, why).await,
                    Err(e) => _ = failed.get_or_insert(e),
                },
                // Left pending: read again (and found made) by the next session.
                Err(Taken::NotNow(why)) => _ = failed.get_or_insert(why),
            }
        }
        if !made_ids.is_empty() {
            if let Err(why) = io("acknowledging", conn.xack::<_, _, _, ()>(&s.stream, &s.group, &made_ids)).await {
                return why;
            }
        }
        if let Some(why) = failed {
            return why;
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
    let (step, id) = step(shared, name, parse(entry)).await?;
    match step {
        Step::Hold => return Ok(false),
        Step::Ack => io("acknowledging", conn.xack::<_, _, _, ()>(&s.stream, &s.group, &[&entry.id])).await?,
        Step::DeadLetter { why, job, count } => {
            dead_letter(conn, s, name, entry, &why, job).await?;
            if count {
                counted_dead(shared, name, why).await;
            }
        }
    }
    settled(shared, name, id).await;
    Ok(true)
}

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
