//! `corral job list`: every job, with its state and counts.

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::{counts_line, finished, job_json, total};
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client, schedule: Option<String>) -> anyhow::Result<Exit> {
    let jobs = client.list_jobs(pb::ListJobsRequest { schedule: schedule.unwrap_or_default() }).await.api()?.jobs;
    if ctx.json() {
        output::json(&jobs.iter().map(job_json).collect());
    } else {
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                let c = j.counts.unwrap_or_default();
                vec![
                    j.id.to_string(),
                    j.name.clone(),
                    j.pool.clone(),
                    if j.owner.is_empty() { "-".into() } else { j.owner.clone() },
                    super::render::state_line(j),
                    format!("{}/{}", finished(&c), total(j)),
                    counts_line(&c),
                ]
            })
            .collect();
        output::table(&["ID", "NAME", "POOL", "OWNER", "STATE", "DONE", "TASKS"], &rows);
    }
    Ok(Exit::Ok)
}
