//! `corral job retry JOB`: put finished tasks back in the queue, with new attempts.

use corral_proto::v1 as pb;
use serde_json::json;

use super::super::Context;
use super::render::{counts_line, job_json};
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

#[derive(clap::Args, Debug)]
pub struct RetryArgs {
    job: u64,
    /// The failed tasks (the default when nothing else is chosen).
    #[arg(long)]
    failed: bool,
    /// The cancelled tasks (also those of a cancelled job).
    #[arg(long)]
    cancelled: bool,
    /// This task: an index, or an id in a graph job (`prep`, `frames[7]`); any
    /// finished task, also one that succeeded (repeatable).
    #[arg(long = "task", value_name = "TASK")]
    tasks: Vec<String>,
}

impl RetryArgs {
    pub async fn run(self, ctx: &Context, client: &mut Client) -> anyhow::Result<Exit> {
        let req =
            pb::RetryJobRequest { job_id: self.job, failed: self.failed, cancelled: self.cancelled, tasks: self.tasks };
        let resp = client.retry_job(req).await.api()?;
        let j = resp.job.unwrap_or_default();
        if ctx.json() {
            output::json(&json!({ "tasks": resp.tasks, "job": job_json(&j) }));
        } else {
            println!(
                "job {} {}: {} task(s) back in the queue; {}",
                j.id,
                j.state().as_word(),
                resp.tasks,
                counts_line(&j.counts.unwrap_or_default())
            );
        }
        Ok(Exit::Ok)
    }
}
