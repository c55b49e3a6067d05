//! How jobs are shown, shared by the job subcommands (and `demo`, `mapreduce`):
//! the JSON of `-o json` and the words of tables and summaries.

use corral_proto::v1 as pb;
use serde_json::json;

use super::super::Context;
use crate::output;
use crate::Exit;

/// A job's state as people read it: an active job whose `--begin` is still to come
/// is `waiting (begins at ...)`.
pub fn state_line(j: &pb::Job) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    if j.state() == pb::JobState::Active && j.begin_at_ms > now {
        return format!("waiting (begins at {})", output::timestamp(j.begin_at_ms));
    }
    if j.state() == pb::JobState::Active && !j.waiting_for.is_empty() {
        let jobs: Vec<String> = j.waiting_for.iter().map(|id| format!("job {id}")).collect();
        return format!("waiting (for {} to end)", jobs.join(", "));
    }
    if !j.reason.is_empty() {
        return format!("{} ({})", j.state().as_word(), j.reason);
    }
    j.state().as_word().to_string()
}

/// A job as `-o json` prints it.
/// Its task indices as a user writes them: `0`, `1-100`, `1,3,5-9:2`.
pub fn indices(j: &pb::Job) -> String {
    match corral_proto::words::array_indices(&j.array_runs) {
        Ok(indices) => indices.to_string(),
        Err(_) if j.array_start == j.array_end => j.array_start.to_string(),
        Err(_) => format!("{}-{}", j.array_start, j.array_end),
    }
}

pub fn job_json(j: &pb::Job) -> serde_json::Value {
    let c = j.counts.unwrap_or_default();
    let task = j.task.clone().unwrap_or_default();
    json!({
        "id": j.id,
        "name": j.name,
        "pool": j.pool,
        "state": j.state().as_word(),
        "owner": j.owner,
        "priority": j.priority,
        "tasks": j.tasks,
        "open": j.open,
        "array": [j.array_start, j.array_end],
        "indices": indices(j),
        "counts": {
            "waiting": c.waiting,
            "ready": c.ready,
            "running": c.running,
            "assigned": c.assigned,
            "succeeded": c.succeeded,
            "failed": c.failed,
            "cancelled": c.cancelled,
        },
        "kind": match (j.graph, j.policy.as_ref().is_some_and(|p| p.replicas > 0)) {
            (true, _) => "graph",
            (false, true) => "continuous",
            (false, false) => "array",
        },
        "command": (!j.graph).then_some(task.argv),
        "max_retries": task.max_retries,
        "max_output_bytes": j.max_output_bytes,
        "timeout_ms": (task.timeout_ms > 0).then_some(task.timeout_ms),
        "submitted_at_ms": j.submitted_at_ms,
        "begin_at_ms": (j.begin_at_ms > 0).then_some(j.begin_at_ms),
        "schedule": (!j.schedule.is_empty()).then_some(&j.schedule),
        "template": (!j.template.is_empty()).then_some(&j.template),
        "scheduled_for_ms": (!j.schedule.is_empty()).then_some(j.scheduled_for_ms),
        "finished_at_ms": (j.finished_at_ms > 0).then_some(j.finished_at_ms),
        "after": j.after.iter().map(|a| json!({"job": a.job_id, "when": if a.any { "any" } else { "ok" }})).collect::<Vec<_>>(),
        "waiting_for": j.waiting_for,
        "reason": (!j.reason.is_empty()).then_some(&j.reason),
        "auto_pool": j.auto_pool,
        "policy": j.policy.as_ref().map(|p| json!({
            "exit_policy": p.exit_policy,
            "retry_delay_ms": (p.retry_delay_ms > 0).then_some(p.retry_delay_ms),
            "retry_delay_max_ms": (p.retry_delay_max_ms > 0).then_some(p.retry_delay_max_ms),
            "max_running": (p.max_running > 0).then_some(p.max_running),
            "concurrency_key": (!p.concurrency_key.is_empty()).then_some(&p.concurrency_key),
            "replicas": (p.replicas > 0).then_some(p.replicas),
        })),
        "notify": j.notify.as_ref().map(|n| json!({
            "url": n.url,
            "delivered": n.delivered_at_ms > 0,
            "attempts": n.attempts,
            "last_error": (!n.last_error.is_empty()).then_some(&n.last_error),
            "delivered_at_ms": (n.delivered_at_ms > 0).then_some(n.delivered_at_ms),
        })),
    })
}

/// How a job's callback is going, in words.
pub fn notify_line(n: &pb::Notify) -> String {
    let status = if n.delivered_at_ms > 0 {
        format!("delivered {} after {} post(s)", output::timestamp(n.delivered_at_ms), n.attempts)
    } else if n.attempts == 0 {
        "not posted yet (when the job ends)".to_string()
    } else {
        format!("not delivered yet: {} post(s) failed, retrying", n.attempts)
    };
    let mut line = format!("{} ({status})", n.url);
    if !n.last_error.is_empty() {
        line += &format!("; last error: {}", n.last_error);
    }
    line
}

pub fn counts_line(c: &pb::TaskCounts) -> String {
    let mut parts = Vec::new();
    for (n, word) in [
        (c.succeeded, "succeeded"),
        (c.failed, "failed"),
        (c.cancelled, "cancelled"),
        (c.running, "running"),
        (c.assigned, "assigned (queued on a node)"),
        (c.ready, "ready"),
        (c.waiting, "waiting"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    parts.join(", ")
}

pub fn total(j: &pb::Job) -> u64 {
    u64::from(j.tasks)
}

pub fn finished(c: &pb::TaskCounts) -> u64 {
    u64::from(c.succeeded + c.failed + c.cancelled)
}

pub fn verdict(j: &pb::Job) -> Exit {
    if j.state() == pb::JobState::Completed {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

pub fn print_outcome(ctx: &Context, j: &pb::Job) {
    if ctx.json() {
        output::json(&job_json(j));
    } else {
        let c = j.counts.unwrap_or_default();
        let took = output::duration_ms(j.finished_at_ms.saturating_sub(j.submitted_at_ms));
        println!("job {} {} in {took}: {}", j.id, j.state().as_word(), counts_line(&c));
        if c.failed > 0 {
            println!("see the failures with: corral task list {} --state failed", j.id);
        }
    }
}

/// A job's policy as `job show` lists it: (label, value) rows, none for the default.
pub fn policy_rows(p: Option<&pb::JobPolicy>) -> Vec<(&'static str, String)> {
    let Some(p) = p else { return Vec::new() };
    let mut rows = Vec::new();
    if !p.exit_policy.is_empty() {
        rows.push(("exit policy", p.exit_policy.join(", ")));
    }
    if p.retry_delay_ms > 0 || p.retry_delay_max_ms > 0 {
        let first = output::duration_ms(p.retry_delay_ms);
        let delay = match p.retry_delay_max_ms {
            0 => format!("{first}, doubling"),
            max => format!("{first}, doubling up to {}", output::duration_ms(max)),
        };
        rows.push(("retry delay", delay));
    }
    if p.replicas > 0 {
        let s = if p.replicas == 1 { "" } else { "s" };
        rows.push(("continuous", format!("{} replica{s}, always running (`job scale` changes them)", p.replicas)));
    }
    match (p.concurrency_key.as_str(), p.max_running) {
        ("", 0) => {}
        ("", n) => rows.push(("max running", format!("{n} of its tasks at once"))),
        (key, n) => {
            rows.push(("concurrency", format!("at most {} task(s) at once of all jobs with key '{key}'", n.max(1))))
        }
    }
    rows
}
