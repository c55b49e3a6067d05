//! `corral job update JOB --priority P`: a job's queued tasks take their new place
//! in the pool's order at once (its owner or an admin).

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::job_json;
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client, job: u64, priority: i32) -> anyhow::Result<Exit> {
    let j = client.update_job(pb::UpdateJobRequest { job_id: job, priority: Some(priority) }).await.api()?;
    if ctx.json() {
        output::json(&job_json(&j));
    } else {
        println!("job {} now has priority {}", j.id, j.priority);
    }
    Ok(Exit::Ok)
}
