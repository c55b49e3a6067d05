//! `corral job cancel JOB...`: queued tasks are dropped, running ones killed.

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::{counts_line, job_json};
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

/// Cancels each of `jobs`, going on past one that cannot be (it says why on stderr);
/// fails if any could not be. JSON: the job, or an array of those cancelled when
/// several were named.
pub async fn run(ctx: &Context, client: &mut Client, jobs: &[u64]) -> anyhow::Result<Exit> {
    let mut cancelled = Vec::new();
    let mut refused = Vec::new();
    for &job in jobs {
        match client.cancel_job(pb::CancelJobRequest { job_id: job }).await.api() {
            Ok(j) => {
                if !ctx.json() {
                    println!("job {} {}: {}", j.id, j.state().as_word(), counts_line(&j.counts.unwrap_or_default()));
                }
                cancelled.push(j);
            }
            Err(e) if jobs.len() == 1 => return Err(e),
            Err(e) => {
                eprintln!("job {job}: {e:#}");
                refused.push(job);
            }
        }
    }
    if ctx.json() {
        match cancelled.as_slice() {
            [one] if jobs.len() == 1 => output::json(&job_json(one)),
            all => output::json(&serde_json::Value::Array(all.iter().map(job_json).collect())),
        }
    }
    match refused.as_slice() {
        [] => Ok(Exit::Ok),
        _ => anyhow::bail!(
            "{} of {} jobs could not be cancelled: {}",
            refused.len(),
            jobs.len(),
            refused.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}
