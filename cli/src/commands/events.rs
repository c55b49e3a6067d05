//! `corral events`: the feed of what happens, printed as it arrives.

use std::time::Duration;

use corral_proto::v1 as pb;
use corral_types::words::EventKind;
use serde_json::json;

use super::Context;
use crate::output;
use crate::Exit;

/// Print pool, node, job, task and attempt state changes, oldest first.
///
/// Each event has an id that only grows. With --follow the command keeps printing
/// new events, and if the coordinator goes away it reconnects and resumes after the
/// last id it printed, so nothing is missed or printed twice. A program that stops
/// and starts again resumes the same way with --after.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Only this job's events.
    #[arg(long)]
    job: Option<u64>,
    /// Only this pool's events (its nodes, jobs and tasks).
    #[arg(long)]
    pool: Option<String>,
    /// Keep printing new events as they happen (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    follow: bool,
    /// Start after this event id [default: from the oldest kept].
    #[arg(long, default_value_t = 0)]
    after: u64,
}

/// One event as `-o json` prints it (one JSON object per line).
pub fn event_json(e: &pb::Event) -> serde_json::Value {
    json!({
        "id": e.id,
        "at_ms": e.at_ms,
        "kind": e.kind,
        "pool": (!e.pool.is_empty()).then_some(&e.pool),
        "job": (e.job_id != 0).then_some(e.job_id),
        "task": e.task,
        "attempt": e.attempt,
        "node": (!e.node_id.is_empty()).then_some(&e.node_id),
        "state": e.state,
        "detail": e.detail,
        "actor": (!e.actor.is_empty()).then_some(&e.actor),
    })
}

/// What an event is about, in words: `job 3 task 12 #1 on n-4`.
fn subject(e: &pb::Event) -> String {
    let kind = e.kind.parse::<EventKind>().ok();
    let mut s = match kind {
        Some(EventKind::Pool) => format!("pool {}", e.pool),
        Some(EventKind::Token) => "token".to_string(),
        Some(EventKind::Object) => "object".to_string(),
        Some(EventKind::Node) => format!("node {} ({})", e.node_id, e.pool),
        Some(kind @ (EventKind::Schedule | EventKind::Template | EventKind::Trigger)) => kind.to_string(),
        _ => format!("job {}", e.job_id),
    };
    if let Some(task) = e.task {
        s += &format!(" task {task}");
    }
    if let Some(attempt) = e.attempt.filter(|_| kind != Some(EventKind::Node)) {
        s += &format!(" #{attempt}");
    }
    if kind == Some(EventKind::Task) && !e.node_id.is_empty() {
        s += &format!(" on {}", e.node_id);
    }
    s
}

fn line(e: &pb::Event) -> String {
    let mut line = format!("{:>8}  {}  {:<7}  {}  {}", e.id, output::timestamp(e.at_ms), e.kind, subject(e), e.state);
    if !e.detail.is_empty() {
        line += &format!("  {}", e.detail);
    }
    if !e.actor.is_empty() {
        line += &format!("  (by {})", e.actor);
    }
    line
}

/// Whether a status is a refusal that asking again (of this or another
/// coordinator) cannot change.
fn refusal(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unauthenticated | PermissionDenied | InvalidArgument | FailedPrecondition | NotFound)
}

impl EventsArgs {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut after = self.after;
        let mut backoff = Duration::from_millis(200);
        loop {
            let request = pb::WatchEventsRequest {
                after,
                job_id: self.job.unwrap_or(0),
                pool: self.pool.clone().unwrap_or_default(),
                follow: self.follow,
            };
            let stream = match ctx.client().await {
                Ok(mut client) => client.watch_events(request).await,
                Err(e) if self.follow => {
                    eprintln!("{e:#}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A refusal (a bad filter or token, events discarded) is final; anything
            // else (no coordinator, one that was deposed or cut off from its store
            // as it answered) is waited out when following.
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(status) if self.follow && !refusal(status.code()) => {
                    eprintln!("the coordinator did not answer ({}); retrying in {backoff:?}", status.message());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(status) => anyhow::bail!("{}", status.message()),
            };
            loop {
                match stream.message().await {
                    Ok(Some(event)) => {
                        backoff = Duration::from_millis(200);
                        after = event.id;
                        if ctx.json() {
                            output::json_line(&event_json(&event));
                        } else {
                            println!("{}", line(&event));
                        }
                    }
                    Ok(None) if !self.follow => return Ok(Exit::Ok),
                    Ok(None) => break,
                    // The token was revoked or expired: retrying cannot help.
                    Err(status)
                        if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) =>
                    {
                        anyhow::bail!("{}", status.message())
                    }
                    Err(status) if self.follow => {
                        eprintln!("lost the coordinator ({}); resuming after event {after}", status.message());
                        break;
                    }
                    Err(status) => anyhow::bail!("{}", status.message()),
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_what_changed_and_why() {
        let e = pb::Event {
            id: 42,
            at_ms: 0,
            kind: "task".into(),
            pool: "cpu".into(),
            job_id: 3,
            task: Some(0),
            attempt: Some(2),
            node_id: "n-4".into(),
            state: "running".into(),
            detail: String::new(),
            actor: String::new(),
        };
        assert_eq!(line(&e), "      42  -  task     job 3 task 0 #2 on n-4  running");
        let lost = pb::Event {
            kind: "node".into(),
            task: None,
            attempt: None,
            state: "lost".into(),
            detail: "heartbeat_timeout".into(),
            ..e
        };
        assert!(line(&lost).ends_with("node n-4 (cpu)  lost  heartbeat_timeout"), "{}", line(&lost));
        let cancelled = pb::Event { kind: "job".into(), state: "cancelled".into(), actor: "alice".into(), ..lost };
        assert!(line(&cancelled).ends_with("cancelled  heartbeat_timeout  (by alice)"), "{}", line(&cancelled));
    }
}
