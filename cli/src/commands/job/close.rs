//! `corral job close JOB`: an open job takes no more tasks and ends once they have.

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::{counts_line, job_json};
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client, job: u64) -> anyhow::Result<Exit> {
    let j = client.close_job(pb::CloseJobRequest { job_id: job }).await.api()?;
    if ctx.json() {
        output::json(&job_json(&j));
    } else {
        println!("job {} closed: {} ({})", j.id, j.state().as_word(), counts_line(&j.counts.unwrap_or_default()));
    }
    Ok(Exit::Ok)
}
