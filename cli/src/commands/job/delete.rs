//! `corral job delete JOB`: a finished job goes now, with everything it stored.

use serde_json::json;

use corral_proto::v1 as pb;

use super::super::Context;
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client, job: u64) -> anyhow::Result<Exit> {
    client.delete_job(pb::DeleteJobRequest { job_id: job }).await.api()?;
    if ctx.json() {
        output::json(&json!({ "job_id": job, "deleted": true }));
    } else {
        println!("job {job} deleted, with its logs, outputs and events");
    }
    Ok(Exit::Ok)
}
