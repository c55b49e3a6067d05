//! `corral job update JOB --priority P` (a job's queued tasks take their new place
//! in the pool's order at once) and `corral job scale JOB N` (a continuous job's
//! replicas); its owner or an admin.

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::job_json;
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client, job: u64, priority: i32) -> anyhow::Result<Exit> {
    let j = client
        .update_job(pb::UpdateJobRequest { job_id: job, priority: Some(priority), replicas: None })
        .await
        .api()?;
    if ctx.json() {
        output::json(&job_json(&j));
    } else {
        println!("job {} now has priority {}", j.id, j.priority);
    }
    Ok(Exit::Ok)
}

pub async fn scale(ctx: &Context, client: &mut Client, job: u64, replicas: u32) -> anyhow::Result<Exit> {
    let j = client
        .update_job(pb::UpdateJobRequest { job_id: job, priority: None, replicas: Some(replicas) })
        .await
        .api()?;
    if ctx.json() {
        output::json(&job_json(&j));
    } else {
        let now = j.policy.as_ref().map_or(0, |p| p.replicas);
        println!("job {} now runs {now} replica{}", j.id, if now == 1 { "" } else { "s" });
    }
    Ok(Exit::Ok)
}
