//! Fills a queue, or drains it as a plain consumer would (take, acknowledge, one
//! at a time), for bench/queues.sh: the broker's own pace, beside the queue
//! trigger's on the same messages.
//!
//!   queue_bench fill  redis://127.0.0.1:P/0 STREAM N
//!   queue_bench drain redis://127.0.0.1:P/0 STREAM GROUP N
//!   queue_bench fill  amqp://guest@127.0.0.1:P/%2f QUEUE N
//!   queue_bench drain amqp://guest@127.0.0.1:P/%2f QUEUE N
//!
//! `drain` prints the seconds from its first read to its last acknowledgement.

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use redis::AsyncCommands;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().ok_or("usage: see the file's header");
    let (what, url) = (arg(0)?, arg(1)?);
    match (what.as_str(), url.starts_with("redis")) {
        ("fill", true) => fill_redis(&url, &arg(2)?, arg(3)?.parse()?).await,
        ("drain", true) => drain_redis(&url, &arg(2)?, &arg(3)?, arg(4)?.parse()?).await,
        ("fill", false) => fill_amqp(&url, &arg(2)?, arg(3)?.parse()?).await,
        ("drain", false) => drain_amqp(&url, &arg(2)?, arg(3)?.parse()?).await,
        _ => Err("usage: see the file's header".into()),
    }
}

async fn fill_redis(url: &str, stream: &str, n: usize) -> Result<()> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    for start in (0..n).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 1000).min(n) {
            pipe.xadd(stream, "*", &[("payload", format!("m{i}"))]).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

async fn drain_redis(url: &str, stream: &str, group: &str, n: usize) -> Result<()> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let _: redis::RedisResult<()> = conn.xgroup_create_mkstream(stream, group, "0").await;
    let opts = redis::streams::StreamReadOptions::default().group(group, "plain").count(100).block(1000);
    let (mut done, t0) = (0, std::time::Instant::now());
    while done < n {
        let reply: Option<redis::streams::StreamReadReply> = conn.xread_options(&[stream], &[">"], &opts).await?;
        for entry in reply.unwrap_or_default().keys.into_iter().flat_map(|k| k.ids) {
            let () = conn.xack(stream, group, &[&entry.id]).await?;
            done += 1;
        }
    }
    println!("{:.3}", t0.elapsed().as_secs_f64());
    Ok(())
}

async fn fill_amqp(url: &str, queue: &str, n: usize) -> Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), durable, FieldTable::default()).await?;
    // Confirmed by the broker, or a publish still in the socket when this exits is lost.
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut confirms = Vec::new();
    for i in 0..n {
        let body = format!("m{i}");
        let options = BasicPublishOptions::default();
        confirms.push(
            channel
                .basic_publish("".into(), queue.into(), options, body.as_bytes(), BasicProperties::default())
                .await?,
        );
        if confirms.len() == 1000 {
            for c in confirms.drain(..) {
                c.await?;
            }
        }
    }
    for c in confirms {
        c.await?;
    }
    conn.close(0, "filled".into()).await?;
    Ok(())
}

async fn drain_amqp(url: &str, queue: &str, n: usize) -> Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.basic_qos(100, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(queue.into(), "plain".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let (mut done, mut t0) = (0, None);
    while done < n {
        let Some(delivery) = consumer.next().await else { break };
        t0.get_or_insert_with(std::time::Instant::now);
        delivery?.ack(BasicAckOptions::default()).await?;
        done += 1;
    }
    println!("{:.3}", t0.map_or(0.0, |t| t.elapsed().as_secs_f64()));
    Ok(())
}
