//! `corral job show JOB`: a job, its settings and task counts.

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::{counts_line, job_json, notify_line, total};
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client, job: u64) -> anyhow::Result<Exit> {
    let j = client.get_job(pb::GetJobRequest { job_id: job }).await.api()?;
    print_job(ctx, &j);
    Ok(Exit::Ok)
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
