//! `corral job mapreduce`: upload the inputs, submit a map/reduce job, follow its
//! map and reduce phases, and download the result.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use corral_proto::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use super::super::Context;
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

#[derive(clap::Args, Debug)]
pub struct MapReduceArgs {
    /// The pool to run on.
    #[arg(long)]
    pub(crate) pool: String,
    /// A name to recognise the job by.
    #[arg(long, default_value = "mapreduce")]
    pub(crate) name: String,
    /// Input: local files (a path or glob pattern, uploaded first), or `store:PATH`
    /// for an object already in the store (repeatable).
    #[arg(long = "input", required = true)]
    pub(crate) inputs: Vec<String>,
    /// Map tasks: the input is split into this many pieces, on line boundaries.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) map_tasks: u32,
    /// Reduce tasks: the number of partitions, and of result files.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) reduce_tasks: u32,
    /// Reads input lines on stdin, writes `key<TAB>value` lines (run with `sh -c`).
    #[arg(long)]
    pub(crate) mapper: String,
    /// Reads one partition's lines, sorted by key, on stdin (run with `sh -c`).
    #[arg(long)]
    pub(crate) reducer: String,
    /// Runs on each map task's sorted partitions to shrink them (run with `sh -c`).
    #[arg(long)]
    pub(crate) combiner: Option<String>,
    /// Retries of a map or reduce task that fails.
    #[arg(long, default_value_t = 1)]
    pub(crate) max_retries: u32,
    /// Kill a map or reduce task that runs longer than this.
    #[arg(long, value_parser = corral_types::duration::parse)]
    pub(crate) timeout: Option<Duration>,
    /// Higher runs first, from -1000 to 1000.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub(crate) priority: i32,
    /// Where the result files (part-00000 ...) are downloaded when the job completes
    /// (`--output` is the global output format: `-o json`).
    #[arg(long, value_name = "DIR")]
    pub(crate) output_dir: PathBuf,
    /// Submit and return; the result stays at jobs/JOB/output/ in the store.
    #[arg(long)]
    pub(crate) no_wait: bool,
}

/// Local files the inputs name, and the store objects.
fn expand_inputs(inputs: &[String]) -> anyhow::Result<(Vec<PathBuf>, Vec<String>)> {
    let (mut local, mut stored) = (Vec::new(), Vec::new());
    for input in inputs {
        if let Some(object) = input.strip_prefix("store:") {
            stored.push(object.to_string());
            continue;
        }
        let mut matched: Vec<PathBuf> = glob::glob(input)
            .with_context(|| format!("invalid --input '{input}': not a valid glob pattern"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        if matched.is_empty() {
            anyhow::bail!(
                "invalid --input '{input}': it matches no file (for an object in the store, write store:PATH)"
            );
        }
        matched.sort();
        local.append(&mut matched);
    }
    Ok((local, stored))
}

/// How far each phase is: (map done, reduce done).
async fn phase_counts(client: &mut Client, job: u64, map_tasks: u32) -> anyhow::Result<(u64, u64)> {
    let done = client
        .list_tasks(pb::ListTasksRequest { job_id: job, state: pb::TaskState::Succeeded.into(), offset: 0, limit: 0 })
        .await
        .api()?;
    let map = done.tasks.iter().filter(|t| t.index < map_tasks).count() as u64;
    Ok((map, done.tasks.len() as u64 - map))
}

/// From the first start to the last end of tasks `range`, in ms.
async fn phase_span(client: &mut Client, job: u64, range: std::ops::Range<u32>) -> anyhow::Result<u64> {
    let (mut first, mut last) = (u64::MAX, 0);
    for index in range {
        let task = client.get_task(pb::GetTaskRequest { job_id: job, index, name: String::new() }).await.api()?;
        if let Some(a) = task.attempts.iter().rev().find(|a| a.outcome() == pb::Outcome::Succeeded) {
            first = first.min(a.started_at_ms);
            last = last.max(a.ended_at_ms);
        }
    }
    Ok(last.saturating_sub(first))
}

/// Uploads the local files the inputs name (to `uploads/<ms>/`) and returns every
/// input as a store object.
pub async fn upload_inputs(ctx: &Context, inputs: &[String]) -> anyhow::Result<Vec<String>> {
    let (local, mut objects_in) = expand_inputs(inputs)?;
    if local.is_empty() {
        return Ok(objects_in);
    }
    let mut objects = crate::commands::file::connect(ctx).await?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    for (i, file) in local.iter().enumerate() {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let object = format!("uploads/{stamp}/{i:05}-{name}");
        corral_agent::objects::upload(&mut objects, file, &object).await?;
        objects_in.push(object);
    }
    Ok(objects_in)
}

impl MapReduceArgs {
    pub async fn run(self, ctx: &Context, client: &mut Client) -> anyhow::Result<Exit> {
        let objects_in = upload_inputs(ctx, &self.inputs).await?;
        let mut objects = crate::commands::file::connect(ctx).await?;
        let req = pb::SubmitJobRequest {
            pool: self.pool.clone(),
            name: self.name.clone(),
            priority: self.priority,
            mapreduce: Some(pb::MapReduceSpec {
                inputs: objects_in,
                map_tasks: self.map_tasks,
                reduce_tasks: self.reduce_tasks,
                mapper: self.mapper.clone(),
                reducer: self.reducer.clone(),
                combiner: self.combiner.clone().unwrap_or_default(),
                max_retries: self.max_retries,
                timeout_ms: self.timeout.map_or(0, corral_types::duration::ms),
            }),
            ..Default::default()
        };
        let submitted = client.submit_job(req).await.api()?;
        let job = submitted.job_id;
        if self.no_wait {
            if ctx.json() {
                output::json(&json!({ "job_id": job, "tasks": submitted.tasks }));
            } else {
                println!(
                    "submitted map/reduce job {job}: {} map and {} reduce tasks",
                    self.map_tasks, self.reduce_tasks
                );
            }
            return Ok(Exit::Ok);
        }
        if !ctx.json() {
            println!("submitted map/reduce job {job}: {} map and {} reduce tasks", self.map_tasks, self.reduce_tasks);
        }
        let done = self.follow(ctx, client, job).await?;
        if done.state() != pb::JobState::Completed {
            if ctx.json() {
                output::json(&super::render::job_json(&done));
            } else {
                println!("job {job} {}: see `corral task list {job} --state failed`", done.state().as_word());
            }
            return Ok(Exit::Failed);
        }
        let got = crate::commands::file::download_all(
            &mut objects,
            &corral_types::paths::job_output(corral_types::JobId(job)),
            &self.output_dir,
        )
        .await?;
        let map_ms = phase_span(client, job, 0..self.map_tasks).await?;
        let reduce_ms = phase_span(client, job, self.map_tasks..self.map_tasks + self.reduce_tasks).await?;
        let total_ms = done.finished_at_ms.saturating_sub(done.submitted_at_ms);
        if ctx.json() {
            output::json(&json!({
                "job_id": job,
                "state": done.state().as_word(),
                "output": self.output_dir,
                "parts": got.iter().map(|(p, s)| json!({"path": p, "size": s})).collect::<Vec<_>>(),
                "map_ms": map_ms,
                "reduce_ms": reduce_ms,
                "total_ms": total_ms,
            }));
        } else {
            let bytes: u64 = got.iter().map(|(_, s)| s).sum();
            println!(
                "job {job} completed in {}: map phase {}, reduce phase {} (shuffle included); {} part file(s), {bytes} bytes, in {}",
                output::duration_ms(total_ms),
                output::duration_ms(map_ms),
                output::duration_ms(reduce_ms),
                got.len(),
                self.output_dir.display()
            );
        }
        Ok(Exit::Ok)
    }

    /// Waits for the job, with a progress bar per phase on a terminal.
    async fn follow(&self, ctx: &Context, client: &mut Client, job: u64) -> anyhow::Result<pb::Job> {
        use std::io::IsTerminal;
        let show = !ctx.json() && std::io::stderr().is_terminal();
        let bars = MultiProgress::new();
        let bar = |name: &str, len: u32| {
            let bar = bars.add(ProgressBar::new(u64::from(len)));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>7} [{bar:40}] {pos}/{len} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            if !show {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            bar
        };
        let (map_bar, reduce_bar) = (bar("map", self.map_tasks), bar("reduce", self.reduce_tasks));
        let mut stream = client.watch_job(pb::GetJobRequest { job_id: job }).await.api()?;
        let mut last = None;
        while let Some(update) = stream.message().await.context("lost the coordinator while following the job")? {
            if show {
                let (map, reduce) = phase_counts(&mut client.clone(), job, self.map_tasks).await?;
                map_bar.set_position(map);
                reduce_bar.set_position(reduce);
            }
            let finished = update.state() != pb::JobState::Active;
            last = Some(update);
            if finished {
                break;
            }
        }
        map_bar.finish_and_clear();
        reduce_bar.finish_and_clear();
        last.ok_or_else(|| anyhow::anyhow!("the coordinator ended the watch of job {job} without a state"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_files_or_store_objects() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.txt", "a.txt"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let pattern = format!("{}/*.txt", dir.path().display());
        let (local, stored) = expand_inputs(&[pattern, "store:corpus/big.txt".into()]).unwrap();
        assert_eq!(local.len(), 2);
        assert!(local[0].ends_with("a.txt"), "sorted: {local:?}");
        assert_eq!(stored, vec!["corpus/big.txt"]);
        let err = expand_inputs(&[format!("{}/nope*", dir.path().display())]).unwrap_err().to_string();
        assert!(err.contains("matches no file") && err.contains("store:"), "{err}");
    }
}
