//! An AMQP 0-9-1 queue (RabbitMQ and its kin): `amqp://HOST:PORT/VHOST?queue=Q`,
//! consumed with manual acknowledgements and a prefetch (what a crash left
//! unacknowledged the broker delivers again). A message's identity is its
//! `message_id` property, else a digest of its body and headers; its body is the
//! payload, its headers the meta. Dead letters go to the queue `Q.dead` with
//! the headers `corral_error`, `corral_trigger` (and `corral_job`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::*;
use crate::core::triggers::{AckOn, QueueSource, SourceState, MAX_MESSAGE_ID};

/// The most deliveries the broker sends ahead, unacknowledged.
const PREFETCH: u16 = 100;
/// How long a batch waits for one more delivery (the broker sends them one by one).
const LINGER: Duration = Duration::from_millis(5);

struct Queue {
    /// The URL to connect with (the password put in from the environment).
    uri: String,
    queue: String,
    ack_on: AckOn,
}

impl Queue {
    fn of(source: &QueueSource) -> Result<Queue, String> {
        let mut url = url::Url::parse(&source.url).map_err(|e| e.to_string())?;
        let queue = url.query_pairs().find(|(k, _)| k == "queue").map(|(_, v)| v.into_owned());
        let queue = queue.ok_or("the source names no queue")?;
        url.set_query(None);
        if let Some(var) = &source.secret_env {
            let secret = std::env::var(var).map_err(|_| format!("the coordinator's environment has no {var}"))?;
            url.set_password(Some(&secret)).map_err(|_| "the source cannot take a password".to_string())?;
        }
        Ok(Queue { uri: url.to_string(), queue, ack_on: source.ack_on })
    }
}

/// Acknowledges a delivery.
async fn ack(delivery: &Delivery) -> Result<(), String> {
    timed("acknowledging", delivery.ack(BasicAckOptions::default())).await.map(|_| ())
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer in {}s", IO_TIMEOUT.as_secs())),
    }
}

/// Declares `queue` (durable) unless it exists as it is.
async fn declare(conn: &Connection, channel: &mut Channel, queue: &str) -> Result<(), String> {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    if timed("", channel.queue_declare(queue.into(), passive, FieldTable::default())).await.is_ok() {
        return Ok(());
    }
    // A passive declare of a missing queue closes the channel.
    *channel = timed("opening a channel", conn.create_channel()).await?;
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    timed(&format!("declaring {queue}"), channel.queue_declare(queue.into(), durable, FieldTable::default())).await?;
    Ok(())
}

/// Connected: takes messages until something fails; returns why.
pub(super) async fn session(
    shared: &Arc<Shared>,
    name: &TriggerName,
    source: &QueueSource,
    state: &mut SourceState,
    backoff: &mut Duration,
) -> String {
    match consume_queue(shared, name, source, state, backoff).await {
        Ok(()) => "the broker ended the consumer".into(),
        Err(why) => why,
    }
}

async fn consume_queue(
    shared: &Arc<Shared>,
    name: &TriggerName,
    source: &QueueSource,
    state: &mut SourceState,
    backoff: &mut Duration,
) -> Result<(), String> {
    let q = Queue::of(source)?;
    let conn = timed("connecting", Connection::connect(&q.uri, ConnectionProperties::default())).await?;
    let mut channel = timed("opening a channel", conn.create_channel()).await?;
    declare(&conn, &mut channel, &q.queue).await?;
    let dead = format!("{}.dead", q.queue);
    declare(&conn, &mut channel, &dead).await?;
    timed("setting the prefetch", channel.basic_qos(PREFETCH, BasicQosOptions::default())).await?;
    let tag = format!("corral-{name}");
    let mut consumer = timed(
        "consuming",
        channel.basic_consume(
            q.queue.as_str().into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    *state = SourceState { connected: true, backing_off_until_ms: None, ..state.clone() };
    report(shared, name, state, None).await;
    // With --ack-on complete: the deliveries whose jobs run, by tag.
    let mut held: BTreeMap<u64, Delivery> = BTreeMap::new();
    loop {
        let mut settled_tags = Vec::new();
        for (tag, delivery) in &held {
            let (step, id) = step(shared, name, parse(delivery)).await?;
            match step {
                Step::Hold => continue,
                Step::Ack => ack(delivery).await?,
                Step::DeadLetter { why, job, count } => {
                    dead_letter(&channel, &dead, name, delivery, &why, job).await?;
                    if count {
                        counted_dead(shared, name, why).await;
                    }
                }
            }
            settled(shared, name, id).await;
            settled_tags.push(*tag);
        }
        for tag in settled_tags {
            held.remove(&tag);
        }
        let room = shared.runtime.call({
            let name = name.clone();
            move |core, _, _| core.trigger_room(&name)
        });
        let room = room.await.map_err(|e| format!("the coordinator: {e}"))? as usize;
        if room == 0 || held.len() >= MAX_HELD {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let wait = if held.is_empty() { Duration::from_millis(1000) } else { Duration::from_millis(200) };
        let delivery = match tokio::time::timeout(wait, consumer.next()).await {
            Err(_) => continue,
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(format!("consuming: {e}")),
            Ok(Some(Ok(delivery))) => delivery,
        };
        if q.ack_on == AckOn::Complete {
            held.insert(delivery.delivery_tag, delivery);
            continue;
        }
        // What follows within LINGER joins it, up to the room.
        let mut batch = vec![delivery];
        while batch.len() < room.min(BATCH) {
            match tokio::time::timeout(LINGER, consumer.next()).await {
                Ok(Some(Ok(more))) => batch.push(more),
                Ok(Some(Err(e))) => return Err(format!("consuming: {e}")),
                Ok(None) | Err(_) => break,
            }
        }
        let made = make_jobs(shared, name, batch.iter().map(parse).collect()).await;
        let mut failed = None;
        for (delivery, result) in batch.iter().zip(made) {
            match result {
                Ok(()) => ack(delivery).await?,
                Err(Taken::Refused(why)) => dead_letter(&channel, &dead, name, delivery, &why, None).await?,
                Err(Taken::Unreadable(why)) => {
                    dead_letter(&channel, &dead, name, delivery, &why, None).await?;
                    counted_dead(shared, name, why).await;
                }
                // Not acknowledged: delivered again when this channel closes.
                Err(Taken::NotNow(why)) => _ = failed.get_or_insert(why),
            }
        }
        if let Some(why) = failed {
            return Err(why);
        }
        *backoff = BACKOFF.0;
    }
}

/// A header's value as text, if it is text or a number.
fn text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok()?,
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        _ => return None,
    })
}

/// Reads a delivery as a message, or says why it cannot be one.
fn parse(delivery: &Delivery) -> Result<Parsed, String> {
    let mut meta = BTreeMap::new();
    if let Some(headers) = delivery.properties.headers() {
        for (key, value) in headers.inner() {
            let value = text(value).ok_or_else(|| format!("header '{}' is not text or a number", key.as_str()))?;
            meta.insert(key.as_str().to_string(), value);
        }
    }
    let given = delivery.properties.message_id().as_ref().map(|id| id.as_str().to_string());
    let id = match given
        .filter(|id| !id.is_empty() && id.len() <= MAX_MESSAGE_ID && id.chars().all(|c| c.is_ascii_graphic()))
    {
        Some(id) => id,
        // The same body and headers are the same message.
        None => {
            let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
            digest.update(&delivery.data);
            for (k, v) in &meta {
                digest.update(format!("\0{k}={v}").as_bytes());
            }
            format!("sha256:{}", crate::auth::secret::hex(digest.finish().as_ref()))
        }
    };
    if delivery.data.len() as u64 > MAX_PAYLOAD {
        return Err(format!("its body is {} bytes; the most is {MAX_PAYLOAD}", delivery.data.len()));
    }
    let payload = (!delivery.data.is_empty()).then(|| delivery.data.clone());
    Ok(Parsed { id, payload, meta })
}

/// Publishes a message to the dead-letter queue with why (and the job of its last
/// delivery), waits for the broker to have it, and acknowledges the original.
async fn dead_letter(
    channel: &Channel,
    dead: &str,
    name: &TriggerName,
    delivery: &Delivery,
    why: &str,
    job: Option<JobId>,
) -> Result<(), String> {
    tracing::warn!(trigger = %name, reason = why, "a message was refused; dead-lettered");
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let string = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    headers.insert(ShortString::from("corral_error"), string(why));
    headers.insert(ShortString::from("corral_trigger"), string(name.as_str()));
    if let Some(job) = job {
        headers.insert(ShortString::from("corral_job"), string(&job.to_string()));
    }
    let properties = BasicProperties::default().with_headers(headers);
    let published =
        channel.basic_publish("".into(), dead.into(), BasicPublishOptions::default(), &delivery.data, properties);
    let confirm = timed("dead-lettering", published).await?;
    timed("dead-lettering", confirm).await?;
    ack(delivery).await
}
