//! `corral job show JOB`: a job, its settings and task counts.

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::{counts_line, job_json, notify_line, total};
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

/// The most replicas `job show` lists (`task list` pages through all of them).
const SHOWN_REPLICAS: u32 = 100;

pub async fn run(ctx: &Context, client: &mut Client, job: u64) -> anyhow::Result<Exit> {
    let j = client.get_job(pb::GetJobRequest { job_id: job }).await.api()?;
    if j.policy.as_ref().is_none_or(|p| p.replicas == 0) {
        print_job(ctx, &j);
        return Ok(Exit::Ok);
    }
    let req = pb::ListTasksRequest { job_id: job, limit: SHOWN_REPLICAS, ..Default::default() };
    let replicas = client.list_tasks(req).await.api()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    if ctx.json() {
        let mut value = job_json(&j);
        value["replicas"] = replicas.tasks.iter().map(|t| replica_json(t, now)).collect();
        output::json(&value);
        return Ok(Exit::Ok);
    }
    print_job(ctx, &j);
    println!();
    let rows: Vec<Vec<String>> = replicas.tasks.iter().map(|t| replica_row(t, now)).collect();
    output::table(&["REPLICA", "STATE", "NODE", "UP", "RESTARTS", "LAST EXIT"], &rows);
    if replicas.total > SHOWN_REPLICAS {
        println!("... and {} more: corral task list {job}", replicas.total - SHOWN_REPLICAS);
    }
    Ok(Exit::Ok)
}

/// A replica's restarts: its attempts that ended (the current one has not).
fn restarts(t: &pb::Task) -> u32 {
    match t.state() {
        pb::TaskState::Running => t.attempts_count.saturating_sub(1),
        _ => t.attempts_count,
    }
}

/// How long a running replica has been up (ms); none while it is not running.
fn uptime(t: &pb::Task, now: u64) -> Option<u64> {
    (t.state() == pb::TaskState::Running && t.started_at_ms > 0).then(|| now.saturating_sub(t.started_at_ms))
}

fn replica_row(t: &pb::Task, now: u64) -> Vec<String> {
    let state = match t.state() {
        pb::TaskState::Running if t.assigned => "assigned".to_string(),
        pb::TaskState::Ready if t.attempts_count > 0 => "restarting".to_string(),
        s => s.word().map_or("?", |w| w.as_str()).to_string(),
    };
    let last = match (t.last_exit.as_str(), t.last_ended_at_ms) {
        ("", _) => "-".to_string(),
        (exit, 0) => exit.to_string(),
        (exit, at) => format!("{exit} ({} ago)", output::duration_ms(now.saturating_sub(at))),
    };
    vec![
        t.index.to_string(),
        state,
        if t.node_id.is_empty() { "-".into() } else { t.node_id.clone() },
        uptime(t, now).map_or("-".into(), output::duration_ms),
        restarts(t).to_string(),
        if t.reason.is_empty() { last } else { t.reason.clone() },
    ]
}

fn replica_json(t: &pb::Task, now: u64) -> serde_json::Value {
    serde_json::json!({
        "replica": t.index,
        "state": t.state().word().map(|w| w.as_str()),
        "node": (!t.node_id.is_empty()).then_some(&t.node_id),
        "uptime_ms": uptime(t, now),
        "restarts": restarts(t),
        "last_exit": (!t.last_exit.is_empty()).then_some(&t.last_exit),
        "last_ended_at_ms": (t.last_ended_at_ms > 0).then_some(t.last_ended_at_ms),
        "reason": (!t.reason.is_empty()).then_some(&t.reason),
    })
}

pub fn print_job(ctx: &Context, j: &pb::Job) {
    if ctx.json() {
        return output::json(&job_json(j));
    }
    let c = j.counts.unwrap_or_default();
    let task = j.task.clone().unwrap_or_default();
    let end = if j.finished_at_ms > 0 { j.finished_at_ms } else { 0 };
    let mut rows = vec![
        ("id", j.id.to_string()),
        ("name", if j.name.is_empty() { "-".into() } else { j.name.clone() }),
        ("pool", j.pool.clone()),
        ("owner", if j.owner.is_empty() { "-".into() } else { j.owner.clone() }),
        (
            "state",
            if j.open {
                format!("{} (open: takes more tasks until closed)", super::render::state_line(j))
            } else {
                super::render::state_line(j)
            },
        ),
        ("priority", j.priority.to_string()),
        ("tasks", format!("{} ({})", total(j), counts_line(&c))),
        ("indices", super::render::indices(j)),
        ("command", if j.graph { "(a graph: see `corral task list`)".into() } else { output::shell_words(&task.argv) }),
        ("max retries", task.max_retries.to_string()),
        (
            "max output",
            match j.max_output_bytes {
                0 => "the coordinator's default, per stream".into(),
                n => format!("{} per stream", corral_types::size::show(n)),
            },
        ),
        ("submitted", output::timestamp(j.submitted_at_ms)),
    ];
    if !j.template.is_empty() {
        rows.push(("template", j.template.clone()));
    }
    if !j.schedule.is_empty() {
        rows.push(("schedule", format!("{} (for {})", j.schedule, output::timestamp(j.scheduled_for_ms))));
    }
    if j.begin_at_ms > 0 {
        rows.push(("begins", output::timestamp(j.begin_at_ms)));
    }
    if end > 0 {
        rows.push((
            "finished",
            format!("{} (took {})", output::timestamp(end), output::duration_ms(end.saturating_sub(j.submitted_at_ms))),
        ));
    }
    if !j.after.is_empty() {
        let after: Vec<String> =
            j.after.iter().map(|a| format!("job {}:{}", a.job_id, if a.any { "any" } else { "ok" })).collect();
        rows.push(("after", after.join(", ")));
    }
    rows.extend(super::render::policy_rows(j.policy.as_ref()));
    if let Some(n) = &j.notify {
        rows.push(("notify", notify_line(n)));
    }
    output::fields(&rows);
}
