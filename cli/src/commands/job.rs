//! `corral job ...`

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use corral_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::Context;
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job: one task, or one per index of --array.
    ///
    /// The command runs directly (no shell); write `sh -c '...'` for one. In an array,
    /// `{index}` in any argument becomes the task's index, also in $CORRAL_TASK_INDEX.
    Submit(SubmitArgs),
    /// List jobs.
    List,
    /// Show a job and its task counts.
    Show { job: u64 },
    /// Follow a job with a live progress bar until it ends.
    Watch { job: u64 },
    /// Wait until a job ends; exit status 0 only if every task succeeded.
    Wait { job: u64 },
    /// Cancel a job: queued tasks are dropped, running ones killed.
    Cancel { job: u64 },
    /// Delete a finished job now, with its tasks, attempts, logs, outputs and
    /// events (the coordinator does it by itself after --retain, 7 days by default).
    Delete { job: u64 },
    /// Add tasks to an open job (one submitted with --open): from a job file's
    /// `tasks`, or one task or array given here. Any number, streamed.
    AddTasks(AddTasksArgs),
    /// Close an open job: it ends once all its tasks have.
    Close { job: u64 },
    /// Run a map/reduce job: the mapper and reducer are streaming commands (lines on
    /// stdin, `key<TAB>value` lines out), with a real shuffle between them.
    Mapreduce(super::mapreduce::MapReduceArgs),
    /// Download a job's outputs (what its tasks' `--output` patterns uploaded).
    Output {
        job: u64,
        /// Only this task's (its id: the index in an array job).
        #[arg(long)]
        task: Option<String>,
        /// Where to put them: DEST/TASK/PATH.
        #[arg(long, default_value = ".")]
        dest: std::path::PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct AddTasksArgs {
    job: u64,
    /// A job file whose `tasks` are added (its name, pool and priority are ignored).
    #[arg(long, short = 'f', conflicts_with_all = ["id", "array", "depends_on", "command", "max_retries", "timeout", "slots"])]
    file: Option<std::path::PathBuf>,
    /// The new task's id (an array's, with --array), unique in the job.
    #[arg(long, required_unless_present = "file")]
    id: Option<String>,
    /// Add an array of tasks ID[A] .. ID[B].
    #[arg(long, value_parser = parse_array)]
    array: Option<(u32, u32)>,
    /// Tasks of the job that must succeed first (repeatable): ID, ID[I] or ID[A-B].
    #[arg(long = "depends-on")]
    depends_on: Vec<String>,
    #[command(flatten)]
    spec: SpecArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required_unless_present = "file", value_name = "CMD")]
    command: Vec<String>,
}

/// How each task runs, shared by `submit` and `add-tasks`.
#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    /// Retries after a task fails or times out (node loss does not count).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    max_retries: u32,
    /// Kill a task that runs longer than this (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Slots each task needs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    slots: u32,
    /// Environment for each task, K=V (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// An object fetched into each task's directory first: OBJECT, or OBJECT=PATH to
    /// name it there (repeatable; `{index}` allowed).
    #[arg(long = "input", value_parser = parse_input)]
    inputs: Vec<(String, String)>,
    /// A glob pattern (relative to the task's directory) of files to upload when the
    /// task ends, to jobs/JOB/TASK/ in the store (repeatable).
    #[arg(long = "outputs", value_name = "PATTERN")]
    outputs: Vec<String>,
    /// When outputs are uploaded.
    #[arg(long, default_value = "success", value_parser = ["success", "failure", "always"])]
    outputs_when: String,
}

/// `OBJECT` or `OBJECT=PATH`.
pub fn parse_input(s: &str) -> Result<(String, String), String> {
    let (object, path) = s.split_once('=').unwrap_or((s, ""));
    if object.is_empty() {
        return Err(format!("'{s}' names no object"));
    }
    Ok((object.to_string(), path.to_string()))
}

impl SpecArgs {
    fn to_pb(&self, argv: Vec<String>) -> pb::TaskSpec {
        pb::TaskSpec {
            argv,
            env: self.env.iter().cloned().collect(),
            slots: self.slots,
            max_retries: self.max_retries,
            timeout_ms: self.timeout.map_or(0, |d| d.as_millis() as u64),
            inputs: self
                .inputs
                .iter()
                .map(|(object, path)| pb::TaskInput { object: object.clone(), path: path.clone() })
                .collect(),
            outputs: self.outputs.clone(),
            outputs_when: self.outputs_when.clone(),
        }
    }
}

/// Tasks per message when streaming them to the coordinator.
const ADD_BATCH: usize = 1000;

impl AddTasksArgs {
    async fn run(self, ctx: &Context, client: &mut Client) -> anyhow::Result<Exit> {
        let (groups, loaded) = match &self.file {
            Some(path) => {
                let loaded = super::jobfile::load_tasks(path)?;
                (loaded.groups.clone(), Some(loaded))
            }
            None => {
                let (is_array, (array_start, array_end)) = match self.array {
                    Some(range) => (true, range),
                    None => (false, (0, 0)),
                };
                let group = pb::TaskGroup {
                    id: self.id.clone().unwrap_or_default(),
                    spec: Some(self.spec.to_pb(self.command.clone())),
                    is_array,
                    array_start,
                    array_end,
                    depends_on: self.depends_on.clone(),
                };
                (vec![group], None)
            }
        };
        let job_id = self.job;
        let mut messages: Vec<pb::AddTasksRequest> =
            groups.chunks(ADD_BATCH).map(|chunk| pb::AddTasksRequest { job_id, tasks: chunk.to_vec() }).collect();
        if messages.is_empty() {
            messages.push(pb::AddTasksRequest { job_id, tasks: Vec::new() });
        }
        let resp = match client.add_tasks(tokio_stream::iter(messages)).await.api() {
            Ok(resp) => resp,
            Err(e) => match &loaded {
                Some(file) => anyhow::bail!(file.annotate(&e.to_string())),
                None => return Err(e),
            },
        };
        if ctx.json() {
            output::json(&json!({ "job_id": job_id, "first_index": resp.first_index, "tasks": resp.tasks }));
        } else {
            println!("added {} task(s) to job {job_id} (indices {} and up)", resp.tasks, resp.first_index);
        }
        Ok(Exit::Ok)
    }
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The pool to run on (or `pool:` in the job file).
    #[arg(long)]
    pool: Option<String>,
    /// A name to recognise the job by.
    #[arg(long)]
    name: Option<String>,
    /// A job file (YAML, or JSON if it ends in .json): tasks with ids, commands and
    /// dependencies. See the README for the schema.
    #[arg(long, short = 'f', conflicts_with_all = ["array", "command", "max_retries", "timeout", "slots"])]
    file: Option<std::path::PathBuf>,
    /// Keep the job open: more tasks can be added with `job add-tasks` until `job
    /// close`. With --file or on its own (an open job starts with no tasks).
    #[arg(long, conflicts_with_all = ["array", "command"])]
    open: bool,
    /// Run one task per index, A-B inclusive (e.g. 1-1000).
    #[arg(long, value_parser = parse_array)]
    array: Option<(u32, u32)>,
    /// Higher runs first, from -1000 to 1000 [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    priority: Option<i32>,
    #[command(flatten)]
    spec: SpecArgs,
    /// Wait for the job to end (progress on a terminal); exit status as `job wait`.
    #[arg(long)]
    wait: bool,
    /// When the job ends, POST a JSON summary to this http(s) URL, retried with
    /// backoff until it answers 2xx (see `job show` for how delivery goes).
    #[arg(long, value_name = "URL")]
    notify: Option<String>,
    /// Keep at most this much of each task's stdout, and of its stderr (e.g. 10MiB,
    /// 1GiB); the rest is dropped and the log ends with a marker saying so
    /// [default: the coordinator's --max-output, 1GiB unless set].
    #[arg(long, value_name = "SIZE", value_parser = corral_proto::size::parse)]
    max_output: Option<u64>,
    /// Make the submission safe to retry: the same key with the same request gives
    /// back the first job (for 24 h) instead of a second one; with another request
    /// it is refused. Without it the CLI picks one for its own retries.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required_unless_present_any = ["file", "open"], value_name = "CMD")]
    command: Vec<String>,
}

impl SubmitArgs {
    /// The request, from the flags or from the job file (flags win over the file's
    /// name, pool and priority). With a file, also the loaded file for error lines.
    fn request(self) -> anyhow::Result<(pb::SubmitJobRequest, Option<super::jobfile::Loaded>)> {
        if self.open && self.file.is_none() {
            let pool = self.pool.ok_or_else(|| anyhow::anyhow!("invalid --pool: say which pool runs the job"))?;
            let req = pb::SubmitJobRequest {
                pool,
                name: self.name.unwrap_or_default(),
                priority: self.priority.unwrap_or(0),
                open: true,
                ..Default::default()
            };
            return Ok((req, None));
        }
        let Some(path) = &self.file else {
            let (is_array, (array_start, array_end)) = match self.array {
                Some(range) => (true, range),
                None => (false, (0, 0)),
            };
            let pool = self.pool.ok_or_else(|| anyhow::anyhow!("invalid --pool: say which pool runs the job"))?;
            let req = pb::SubmitJobRequest {
                pool,
                name: self.name.unwrap_or_default(),
                priority: self.priority.unwrap_or(0),
                task: Some(self.spec.to_pb(self.command)),
                is_array,
                array_start,
                array_end,
                ..Default::default()
            };
            return Ok((req, None));
        };
        let loaded = super::jobfile::load(path)?;
        let pool = self.pool.or_else(|| loaded.file.pool.clone()).ok_or_else(|| {
            anyhow::anyhow!("invalid --pool: say which pool runs the job (--pool, or `pool:` in {})", path.display())
        })?;
        if let Some(mr) = &loaded.file.mapreduce {
            let timeout = match &mr.timeout {
                Some(t) => humantime::parse_duration(t)
                    .map_err(|e| anyhow::anyhow!(loaded.annotate(&format!("invalid mapreduce.timeout '{t}': {e}"))))?,
                None => Duration::ZERO,
            };
            let inputs: Vec<String> = mr
                .inputs
                .iter()
                .map(|i| match i.strip_prefix("store:") {
                    Some(_) => i.clone(),
                    None => loaded.dir.join(i).to_string_lossy().into_owned(),
                })
                .collect();
            let req = pb::SubmitJobRequest {
                pool,
                name: self.name.or_else(|| loaded.file.name.clone()).unwrap_or_default(),
                priority: self.priority.or(loaded.file.priority).unwrap_or(0),
                mapreduce: Some(pb::MapReduceSpec {
                    inputs,
                    map_tasks: mr.map_tasks,
                    reduce_tasks: mr.reduce_tasks,
                    mapper: mr.mapper.clone(),
                    reducer: mr.reducer.clone(),
                    combiner: mr.combiner.clone().unwrap_or_default(),
                    max_retries: mr.max_retries,
                    timeout_ms: timeout.as_millis() as u64,
                }),
                ..Default::default()
            };
            return Ok((req, Some(loaded)));
        }
        let mut groups = loaded.groups.clone();
        for group in &mut groups {
            if let Some(spec) = &mut group.spec {
                for (k, v) in &self.spec.env {
                    spec.env.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        let req = pb::SubmitJobRequest {
            pool,
            name: self.name.or_else(|| loaded.file.name.clone()).unwrap_or_default(),
            priority: self.priority.or(loaded.file.priority).unwrap_or(0),
            tasks: groups,
            open: self.open,
            ..Default::default()
        };
        Ok((req, Some(loaded)))
    }
}

/// `A-B` with A <= B.
pub fn parse_array(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once('-').ok_or_else(|| format!("'{s}' is not a range: expected A-B, e.g. 1-100"))?;
    let a: u32 = a.trim().parse().map_err(|_| format!("'{a}' in '{s}' is not a whole number ≥ 0"))?;
    let b: u32 = b.trim().parse().map_err(|_| format!("'{b}' in '{s}' is not a whole number ≥ 0"))?;
    if a > b {
        return Err(format!("'{s}' is reversed: the start must not be after the end"));
    }
    Ok((a, b))
}

/// `K=V` with a non-empty K.
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not K=V")),
    }
}

pub fn job_json(j: &pb::Job) -> serde_json::Value {
    let c = j.counts.unwrap_or_default();
    let task = j.task.clone().unwrap_or_default();
    json!({
        "id": j.id,
        "name": j.name,
        "pool": j.pool,
        "state": j.state().as_word(),
        "owner": j.owner,
        "priority": j.priority,
        "tasks": j.tasks,
        "open": j.open,
        "array": [j.array_start, j.array_end],
        "counts": {
            "waiting": c.waiting,
            "ready": c.ready,
            "running": c.running,
            "succeeded": c.succeeded,
            "failed": c.failed,
            "cancelled": c.cancelled,
        },
        "kind": if j.graph { "graph" } else { "array" },
        "command": (!j.graph).then_some(task.argv),
        "max_retries": task.max_retries,
        "max_output_bytes": j.max_output_bytes,
        "timeout_ms": (task.timeout_ms > 0).then_some(task.timeout_ms),
        "submitted_at_ms": j.submitted_at_ms,
        "finished_at_ms": (j.finished_at_ms > 0).then_some(j.finished_at_ms),
        "notify": j.notify.as_ref().map(|n| json!({
            "url": n.url,
            "delivered": n.delivered_at_ms > 0,
            "attempts": n.attempts,
            "last_error": (!n.last_error.is_empty()).then_some(&n.last_error),
            "delivered_at_ms": (n.delivered_at_ms > 0).then_some(n.delivered_at_ms),
        })),
    })
}

/// How a job's callback is going, in words.
fn notify_line(n: &pb::Notify) -> String {
    let status = if n.delivered_at_ms > 0 {
        format!("delivered {} after {} post(s)", output::timestamp(n.delivered_at_ms), n.attempts)
    } else if n.attempts == 0 {
        "not posted yet (when the job ends)".to_string()
    } else {
        format!("not delivered yet: {} post(s) failed, retrying", n.attempts)
    };
    let mut line = format!("{} ({status})", n.url);
    if !n.last_error.is_empty() {
        line += &format!("; last error: {}", n.last_error);
    }
    line
}

fn counts_line(c: &pb::TaskCounts) -> String {
    let mut parts = Vec::new();
    for (n, word) in [
        (c.succeeded, "succeeded"),
        (c.failed, "failed"),
        (c.cancelled, "cancelled"),
        (c.running, "running"),
        (c.ready, "ready"),
        (c.waiting, "waiting"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    parts.join(", ")
}

fn total(j: &pb::Job) -> u64 {
    u64::from(j.tasks)
}

fn finished(c: &pb::TaskCounts) -> u64 {
    u64::from(c.succeeded + c.failed + c.cancelled)
}

fn print_job(ctx: &Context, j: &pb::Job) {
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
                format!("{} (open: takes more tasks until closed)", j.state().as_word())
            } else {
                j.state().as_word().to_string()
            },
        ),
        ("priority", j.priority.to_string()),
        ("tasks", format!("{} ({})", total(j), counts_line(&c))),
        ("command", if j.graph { "(a graph: see `corral task list`)".into() } else { output::shell_words(&task.argv) }),
        ("max retries", task.max_retries.to_string()),
        (
            "max output",
            match j.max_output_bytes {
                0 => "the coordinator's default, per stream".into(),
                n => format!("{} per stream", corral_proto::size::show(n)),
            },
        ),
        ("submitted", output::timestamp(j.submitted_at_ms)),
    ];
    if end > 0 {
        rows.push((
            "finished",
            format!("{} (took {})", output::timestamp(end), output::duration_ms(end.saturating_sub(j.submitted_at_ms))),
        ));
    }
    if let Some(n) = &j.notify {
        rows.push(("notify", notify_line(n)));
    }
    output::fields(&rows);
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

fn verdict(j: &pb::Job) -> Exit {
    if j.state() == pb::JobState::Completed {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

fn print_outcome(ctx: &Context, j: &pb::Job) {
    if ctx.json() {
        output::json(&job_json(j));
    } else {
        let c = j.counts.unwrap_or_default();
        let took = output::duration_ms(j.finished_at_ms.saturating_sub(j.submitted_at_ms));
        println!("job {} {} in {took}: {}", j.id, j.state().as_word(), counts_line(&c));
        if c.failed > 0 {
            println!("see the failures with: corral task list {} --state failed", j.id);
        }
    }
}

impl JobCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        match self {
            JobCommand::Submit(args) => {
                let wait = args.wait;
                let notify = args.notify.clone().unwrap_or_default();
                let max_output = args.max_output.unwrap_or_default();
                let key = args
                    .idempotency_key
                    .clone()
                    .unwrap_or_else(|| format!("corral-cli-{}", corral_proto::credentials::random_hex(16)));
                let (mut req, loaded) = args.request()?;
                req.notify_url = notify;
                req.max_output_bytes = max_output;
                req.idempotency_key = key;
                if let Some(mr) = &mut req.mapreduce {
                    mr.inputs = super::mapreduce::upload_inputs(ctx, &mr.inputs).await?;
                }
                let resp = match submit_retrying(&mut client, req).await {
                    Ok(resp) => resp,
                    Err(e) => match &loaded {
                        Some(file) => anyhow::bail!(file.annotate(&e.to_string())),
                        None => return Err(e),
                    },
                };
                if !wait {
                    if ctx.json() {
                        output::json(&json!({ "job_id": resp.job_id, "tasks": resp.tasks }));
                    } else {
                        println!("submitted job {} ({} task(s))", resp.job_id, resp.tasks);
                    }
                    return Ok(Exit::Ok);
                }
                if !ctx.json() {
                    println!("submitted job {} ({} task(s))", resp.job_id, resp.tasks);
                }
                let job = follow(&mut client, resp.job_id, !ctx.json() && std::io::stderr().is_terminal()).await?;
                print_outcome(ctx, &job);
                Ok(verdict(&job))
            }
            JobCommand::List => {
                let jobs = client.list_jobs(pb::ListJobsRequest {}).await.api()?.jobs;
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
                                j.state().as_word().to_string(),
                                format!("{}/{}", finished(&c), total(j)),
                                counts_line(&c),
                            ]
                        })
                        .collect();
                    output::table(&["ID", "NAME", "POOL", "OWNER", "STATE", "DONE", "TASKS"], &rows);
                }
                Ok(Exit::Ok)
            }
            JobCommand::Show { job } => {
                let j = client.get_job(pb::GetJobRequest { job_id: job }).await.api()?;
                print_job(ctx, &j);
                Ok(Exit::Ok)
            }
            JobCommand::Watch { job } => {
                let j = follow(&mut client, job, !ctx.json()).await?;
                print_outcome(ctx, &j);
                Ok(verdict(&j))
            }
            JobCommand::Wait { job } => {
                let j = follow(&mut client, job, false).await?;
                print_outcome(ctx, &j);
                Ok(verdict(&j))
            }
            JobCommand::AddTasks(args) => args.run(ctx, &mut client).await,
            JobCommand::Mapreduce(args) => args.run(ctx, &mut client).await,
            JobCommand::Output { job, task, dest } => {
                client.get_job(pb::GetJobRequest { job_id: job }).await.api()?;
                let prefix = match &task {
                    Some(task) => corral_types::paths::task_outputs(corral_types::JobId(job), task),
                    None => corral_types::paths::job(corral_types::JobId(job)),
                };
                let dest = match &task {
                    Some(task) => dest.join(task),
                    None => dest,
                };
                let mut objects = super::file::connect(ctx).await?;
                let got = super::file::download_all(&mut objects, &prefix, &dest).await?;
                if ctx.json() {
                    let items: Vec<_> = got.iter().map(|(path, size)| json!({ "path": path, "size": size })).collect();
                    output::json(&serde_json::Value::Array(items));
                } else if got.is_empty() {
                    println!("job {job} has no outputs{}", task.map(|t| format!(" for task {t}")).unwrap_or_default());
                } else {
                    let bytes: u64 = got.iter().map(|(_, s)| s).sum();
                    println!("downloaded {} file(s), {bytes} bytes, into {}", got.len(), dest.display());
                }
                Ok(Exit::Ok)
            }
            JobCommand::Close { job } => {
                let j = client.close_job(pb::CloseJobRequest { job_id: job }).await.api()?;
                if ctx.json() {
                    output::json(&job_json(&j));
                } else {
                    println!(
                        "job {} closed: {} ({})",
                        j.id,
                        j.state().as_word(),
                        counts_line(&j.counts.unwrap_or_default())
                    );
                }
                Ok(Exit::Ok)
            }
            JobCommand::Cancel { job } => {
                let j = client.cancel_job(pb::CancelJobRequest { job_id: job }).await.api()?;
                if ctx.json() {
                    output::json(&job_json(&j));
                } else {
                    println!("job {} {}: {}", j.id, j.state().as_word(), counts_line(&j.counts.unwrap_or_default()));
                }
                Ok(Exit::Ok)
            }
            JobCommand::Delete { job } => {
                client.delete_job(pb::DeleteJobRequest { job_id: job }).await.api()?;
                if ctx.json() {
                    output::json(&json!({ "job_id": job, "deleted": true }));
                } else {
                    println!("job {job} deleted, with its logs, outputs and events");
                }
                Ok(Exit::Ok)
            }
        }
    }
}

/// How often `job submit` tries when the coordinator cannot be reached.
const SUBMIT_TRIES: u32 = 4;

/// Submits, trying again (with the same idempotency key, so at most one job is
/// made) while the coordinator is unreachable: a connection that broke after the
/// request was sent leaves no way to know whether it was taken. A store that
/// cannot write is not waited for: it says so at once.
async fn submit_retrying(
    client: &mut crate::client::Client,
    req: pb::SubmitJobRequest,
) -> anyhow::Result<pb::SubmitJobResponse> {
    let mut wait = std::time::Duration::from_millis(250);
    for _ in 1..SUBMIT_TRIES {
        match client.submit_job(req.clone()).await {
            Err(s) if s.code() == tonic::Code::Unavailable && !s.message().contains("store cannot write") => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other.api(),
        }
    }
    client.submit_job(req).await.api()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_checked() {
        assert_eq!(parse_array("1-100"), Ok((1, 100)));
        assert_eq!(parse_array("5-5"), Ok((5, 5)));
        assert!(parse_array("10-1").unwrap_err().contains("reversed"));
        assert!(parse_array("1..10").unwrap_err().contains("expected A-B"));
        assert!(parse_array("a-3").unwrap_err().contains("'a'"));
        assert!(parse_array("-3-4").is_err());
    }

    #[test]
    fn env_needs_a_name() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }
}
