//! Queue triggers on RabbitMQ end to end (Debian's `rabbitmq-server`, one node per
//! test): a job per message with its body as the payload, none twice (also
//! across coordinator SIGKILLs), nothing left unacknowledged; a refused message
//! and a poison one dead-lettered to `QUEUE.dead`.

use std::collections::BTreeSet;
use std::time::Duration;

use corral_tests::rabbitmq::Rabbit;
use corral_tests::*;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const MINUTE: Duration = Duration::from_secs(60);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn channel(rabbit_url: &str) -> Channel {
    let conn = Connection::connect(rabbit_url, ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    for queue in ["orders", "orders.dead"] {
        channel.queue_declare(queue.into(), durable, FieldTable::default()).await.unwrap();
    }
    // (The connection lives as long as the channel is used.)
    std::mem::forget(conn);
    channel
}

/// Publishes `body` with `headers`, and `message_id` if given; waits until the broker has it.
async fn publish(channel: &Channel, body: &str, headers: &[(&str, &str)], message_id: Option<&str>) {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(ShortString::from(*k), AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())));
    }
    let mut properties = BasicProperties::default().with_headers(table);
    if let Some(id) = message_id {
        properties = properties.with_message_id(ShortString::from(id));
    }
    let confirm =
        channel.basic_publish("".into(), "orders".into(), BasicPublishOptions::default(), body.as_bytes(), properties);
    confirm.await.unwrap().await.unwrap();
}

/// How many messages wait in `queue` (not counting those delivered and unacknowledged).
async fn waiting(channel: &Channel, queue: &str) -> u32 {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), passive, FieldTable::default()).await.unwrap().message_count()
}

/// A cluster with one agent, a template whose tasks append their payload (and
/// delivery) to `seen`, failing for the payload "poison", and a trigger on `orders`.
fn setup(rabbit: &Rabbit, seen: &std::path::Path, extra: &[&str]) -> Cluster {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 4);
    let script = format!(
        "p=$(cat payload); echo \"$p $CORRAL_TRIGGER_DELIVERY $CORRAL_META_color\" >> {}; [ \"$p\" != poison ]",
        seen.display()
    );
    c.json(&["template", "create", "order", "--pool", "cpu", "--", "sh", "-c", &script]);
    let source = format!("amqp://127.0.0.1:{}/%2f?queue=orders", rabbit.port);
    let mut args = vec!["trigger", "create", "orders", "--template", "order", "--source", &source];
    args.extend_from_slice(extra);
    c.json(&args);
    c
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn each_amqp_message_makes_one_job_and_a_killed_coordinator_makes_none_twice() {
    let rabbit = Rabbit::start();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let mut c = setup(&rabbit, &seen, &[]);
    let rt = rt();
    let ch = rt.block_on(channel(&rabbit.url()));
    rt.block_on(async {
        for i in 0..500 {
            publish(&ch, &format!("order-{i}"), &[("color", "red")], None).await;
        }
        // One message sent twice under its producer's id.
        for _ in 0..2 {
            publish(&ch, "twice", &[("color", "blue")], Some("order-twice")).await;
        }
    });
    // Killed while they flow; then 500 more.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        c.restart_coordinator();
    }
    rt.block_on(async {
        for i in 500..1000 {
            publish(&ch, &format!("order-{i}"), &[("color", "red")], None).await;
        }
    });
    wait_until(3 * MINUTE, "1001 jobs run", || lines(&seen).len() >= 1001);
    let got = lines(&seen);
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!((got.len(), distinct.len()), (1001, 1001), "each message's job ran once");
    assert!(distinct.contains(&"order-999 1 red".to_string()) && distinct.contains(&"twice 1 blue".to_string()));
    assert_eq!(c.json(&["trigger", "show", "orders"])["fired"], 1001);
    // Nothing left unacknowledged: paused, its channel closes, and nothing comes back.
    c.json(&["trigger", "pause", "orders"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rt.block_on(waiting(&ch, "orders")), 0);
}

#[test]
fn refused_and_poison_amqp_messages_are_dead_lettered_with_why() {
    let rabbit = Rabbit::start();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let c = setup(&rabbit, &seen, &["--ack-on", "complete", "--max-deliveries", "2"]);
    let rt = rt();
    let ch = rt.block_on(channel(&rabbit.url()));
    rt.block_on(async {
        publish(&ch, "poison", &[], None).await;
        // A header that is no text: refused at once.
        let mut table = FieldTable::default();
        table.insert(ShortString::from("color"), AMQPValue::FieldArray(Default::default()));
        let properties = BasicProperties::default().with_headers(table);
        let sent = ch.basic_publish("".into(), "orders".into(), BasicPublishOptions::default(), b"odd", properties);
        sent.await.unwrap().await.unwrap();
        publish(&ch, "good", &[("color", "green")], None).await;
    });
    wait_until(2 * MINUTE, "two dead letters and the good one done", || {
        rt.block_on(waiting(&ch, "orders.dead")) == 2 && lines(&seen).contains(&"good 1 green".to_string())
    });
    let poisoned: Vec<String> = lines(&seen).into_iter().filter(|l| l.starts_with("poison")).collect();
    assert_eq!(poisoned, ["poison 1 ", "poison 2 "], "two deliveries, a job each");
    let mut dead = Vec::new();
    rt.block_on(async {
        while let Some(m) = ch.basic_get("orders.dead".into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            let headers = m.delivery.properties.headers().clone().unwrap_or_default();
            let text = |k: &str| match headers.inner().get(k) {
                Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                _ => String::new(),
            };
            dead.push((
                String::from_utf8_lossy(&m.delivery.data).into_owned(),
                text("corral_error"),
                text("corral_job"),
            ));
        }
    });
    dead.sort();
    assert_eq!(dead[0].0, "odd");
    assert!(dead[0].1.contains("header 'color' is not text"), "{dead:?}");
    assert_eq!(dead[1].0, "poison");
    assert!(dead[1].1.contains("exited with code 1") && dead[1].1.contains("--max-deliveries is 2"), "{dead:?}");
    let job: u64 = dead[1].2.parse().unwrap();
    assert_eq!(c.job(job)["state"], "failed");
}
