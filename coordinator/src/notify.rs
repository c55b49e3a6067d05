//! Completion callbacks: posting a finished job's JSON summary to the URL it was
//! submitted with, retried with backoff until the endpoint answers 2xx.
//!
//! The core orders a post only once the job's end is durable, and records each
//! post's result (so failures show on the job); once one is accepted, it orders no
//! more. A coordinator that stops mid-way posts again after its restart, so an
//! endpoint may, rarely, receive the same summary twice: the `Corral-Job` header and
//! the `job` field let it tell.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::core::Notification;
use crate::server::Event;

/// How long one post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between posts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Delivers every notification it is given until `stop`; `backoff` is the wait
/// after the first failed post, doubling with each failure.
pub async fn run(
    mut orders: mpsc::UnboundedReceiver<Notification>,
    results: mpsc::UnboundedSender<Event>,
    backoff: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder().timeout(POST_TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot make an HTTP client: job callbacks will not be posted");
            return;
        }
    };
    let mut deliveries = JoinSet::new();
    loop {
        tokio::select! {
            order = orders.recv() => match order {
                Some(order) => {
                    deliveries.spawn(deliver(client.clone(), order, results.clone(), backoff));
                }
                None => break,
            },
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // What is not delivered yet is posted again after a restart.
    deliveries.shutdown().await;
}

/// Posts until accepted, reporting each result to the core.
async fn deliver(
    client: reqwest::Client,
    order: Notification,
    results: mpsc::UnboundedSender<Event>,
    backoff: Duration,
) {
    let mut wait = backoff;
    loop {
        let outcome = post(&client, &order).await;
        let accepted = outcome.is_ok();
        if let Err(why) = &outcome {
            tracing::warn!(job_id = %order.job, url = %order.url, error = %why, "job callback failed; retrying in {wait:?}");
        } else {
            tracing::info!(job_id = %order.job, url = %order.url, "job callback accepted");
        }
        let job = order.job;
        let report = Event::Call(Box::new(move |core, now, out| {
            core.on_notify_result(now, job, outcome, out);
            Box::new(|| {})
        }));
        if results.send(report).is_err() || accepted {
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// One post: `Ok` for a 2xx answer, else why not.
async fn post(client: &reqwest::Client, order: &Notification) -> Result<(), String> {
    let response = client
        .post(&order.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Corral-Job", order.job.to_string())
        .body(order.body.clone())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// A transport error with its causes (reqwest's own message is terse).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}
