//! `corral job watch JOB` and `corral job wait JOB`: follow a job (on the coordinator's
//! push, not by polling) until it ends.

use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::{counts_line, finished, print_outcome, total, verdict};
use crate::client::{ApiResult, Client};
use crate::Exit;

/// `job watch`: with a live progress bar.
pub async fn watch(ctx: &Context, client: &mut Client, job: u64) -> anyhow::Result<Exit> {
    let j = follow(client, job, !ctx.json()).await?;
    print_outcome(ctx, &j);
    Ok(verdict(&j))
}

/// `job wait`: quietly; the exit status says whether every task succeeded.
pub async fn wait(ctx: &Context, client: &mut Client, job: u64) -> anyhow::Result<Exit> {
    let j = follow(client, job, false).await?;
    print_outcome(ctx, &j);
    Ok(verdict(&j))
}

/// Follows a job until it ends, with a progress bar when `progress` is set.
pub async fn follow(client: &mut Client, id: u64, progress: bool) -> anyhow::Result<pb::Job> {
    let mut stream = client.watch_job(pb::GetJobRequest { job_id: id }).await.api()?;
    let bar = progress.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} job {prefix} [{bar:40}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(id.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last = None;
    loop {
        let job = match stream.message().await {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(status) if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
                anyhow::bail!("{}", status.message())
            }
            Err(status) => {
                return Err(anyhow::anyhow!("{}", status.message()))
                    .context("lost the coordinator while following the job")
            }
        };
        if let Some(bar) = &bar {
            let c = job.counts.unwrap_or_default();
            bar.set_length(total(&job));
            bar.set_position(finished(&c));
            bar.set_message(counts_line(&c));
        }
        let done = job.state() != pb::JobState::Active;
        last = Some(job);
        if done {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    last.ok_or_else(|| anyhow::anyhow!("the coordinator ended the watch of job {id} without a state"))
}
