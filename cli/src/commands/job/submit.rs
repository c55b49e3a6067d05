//! `corral job submit`: one task, an array, a job file or a map/reduce job; safe to
//! retry (an idempotency key makes at most one job).

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::json;

use corral_proto::v1 as pb;

use super::super::Context;
use super::policy::PolicyArgs;
use super::render::{print_outcome, verdict};
use super::spec::SpecArgs;
use super::watch::follow;
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Keep the job open: more tasks can be added with `job add-tasks` until `job
    /// close`. With --file or on its own (an open job starts with no tasks).
    #[arg(long, conflicts_with_all = ["array", "command"], help_heading = "Task")]
    open: bool,
    /// Start no task before this time: RFC 3339 (`2026-12-24T18:00:00+01:00`) or a
    /// duration from now (`10m`, `2h`). The job is accepted and stored at once, and
    /// waits across coordinator restarts.
    #[arg(long, value_name = "TIME", value_parser = super::spec::parse_time, help_heading = "Scheduling")]
    begin: Option<u64>,
    /// Start no task until job JOB has ended: `JOB` or `JOB:ok` (it must have
    /// completed, else this job is cancelled), `JOB:any` (however it ended)
    /// (repeatable; Slurm's afterok/afterany).
    #[arg(long, value_name = "JOB[:ok|any]", value_parser = parse_after, help_heading = "Scheduling")]
    after: Vec<pb::After>,
    /// Wait for the job to end (progress on a terminal); exit status as `job wait`.
    #[arg(long, help_heading = "Output")]
    wait: bool,
    /// Make the submission safe to retry: the same key with the same request gives
    /// back the first job (for 24 h) instead of a second one; with another request
    /// it is refused. Without it the CLI picks one for its own retries.
    #[arg(long, value_name = "KEY", help_heading = "Task")]
    idempotency_key: Option<String>,
}

/// What a job is: its pool, its tasks and how they run (shared by `job submit` and
/// `schedule create`).
#[derive(clap::Args, Debug)]
pub struct JobArgs {
    /// The pool to run on (or `pool:` in the job file) [default: $CORRAL_POOL, else
    /// the only pool there is].
    #[arg(long, conflicts_with = "auto_pool", help_heading = "Task")]
    pool: Option<String>,
    /// Make a pool for this job alone, deleted with its nodes when the job ends
    /// (Azure Batch's auto pool; admin tokens): `provider=local,nodes=2,slots=4`, or
    /// with `min=A,max=B` autoscaled, `image=...` for docker; the keys are `pool
    /// create`'s flags (or `auto_pool:` in the job file).
    #[arg(long, value_name = "SPEC", value_parser = super::auto_pool::parse, help_heading = "Task")]
    auto_pool: Option<pb::PoolSpec>,
    /// A name to recognise the job by.
    #[arg(long, help_heading = "Task")]
    name: Option<String>,
    /// A job file (YAML, or JSON if it ends in .json): tasks with ids, commands and
    /// dependencies. See the README for the schema.
    #[arg(long, short = 'f', conflicts_with_all = ["array", "command", "max_retries", "timeout", "slots", "resources"], help_heading = "Task")]
    file: Option<std::path::PathBuf>,
    /// Run one task per index: A-B inclusive (e.g. 1-1000), or a list of indices,
    /// ranges and stepped ranges (`1,3,5-9:2` is 1 3 5 7 9); the task's index is the
    /// array index. `%N` at the end runs at most N at once (as --max-running N).
    #[arg(long, value_name = "INDICES[%N]", value_parser = corral_types::policy::parse_array, help_heading = "Task")]
    array: Option<(corral_types::array::Indices, Option<u32>)>,
    /// Run one task per line of FILE (`-` for stdin): task i gets line i in
    /// $CORRAL_ENTRY (and i in $CORRAL_TASK_INDEX).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["array", "file"], help_heading = "Task")]
    each_line: Option<std::path::PathBuf>,
    /// Higher runs first, from -1000 to 1000 [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000), help_heading = "Scheduling")]
    priority: Option<i32>,
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// When the job ends, POST a JSON summary to this http(s) URL, retried with
    /// backoff until it answers 2xx (see `job show` for how delivery goes).
    #[arg(long, value_name = "URL", help_heading = "Output")]
    notify: Option<String>,
    /// Keep at most this much of each task's stdout, and of its stderr (e.g. 10MiB,
    /// 1GiB); the rest is dropped and the log ends with a marker saying so
    /// [default: the coordinator's --max-output, 1GiB unless set].
    #[arg(long, value_name = "SIZE", value_parser = corral_types::size::parse, help_heading = "Output")]
    max_output: Option<u64>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// The pool a job runs on when nothing names one (`--pool`, the job file's `pool:`,
/// an auto pool): `CORRAL_POOL` (which `corral up` prints for its shell), else the
/// only pool there is, as `sbatch` falls back to its default partition.
async fn default_pool(client: &mut Client) -> anyhow::Result<String> {
    if let Some(pool) = std::env::var("CORRAL_POOL").ok().filter(|p| !p.trim().is_empty()) {
        return Ok(pool.trim().to_string());
    }
    let pools = client.list_pools(pb::ListPoolsRequest {}).await.api()?.pools;
    let names: Vec<String> = pools.into_iter().filter_map(|p| p.spec.map(|s| s.name)).collect();
    match names.as_slice() {
        [only] => Ok(only.clone()),
        [] => anyhow::bail!(
            "invalid --pool: there is no pool yet; make one (`corral pool create NAME --slots-per-node N`), or start with `corral up`"
        ),
        many => anyhow::bail!(
            "invalid --pool: say which pool runs the job (--pool NAME, or CORRAL_POOL): there are {}",
            many.join(", ")
        ),
    }
}

impl JobArgs {
    /// The request, from the flags or from the job file (flags win over the file's
    /// name, pool and priority); a job that names no pool gets the default one
    /// ([`default_pool`]). With a file, also the loaded file for error lines.
    pub async fn request(
        mut self,
        open: bool,
        client: &mut Client,
    ) -> anyhow::Result<(pb::SubmitJobRequest, Option<super::jobfile::Loaded>)> {
        // The job file is read once, here.
        let file = self.file.as_ref().map(|path| super::jobfile::load(path)).transpose()?;
        let file_names_pool = file.as_ref().is_some_and(|l| l.file.pool.is_some() || l.file.auto_pool.is_some());
        if self.pool.is_none() && self.auto_pool.is_none() && !file_names_pool {
            self.pool = Some(default_pool(client).await?);
        }
        let (notify_url, max_output_bytes) = (self.notify.clone().unwrap_or_default(), self.max_output.unwrap_or(0));
        let flags = std::mem::take(&mut self.policy);
        let array_limit = self.array.as_ref().and_then(|(_, limit)| *limit);
        let auto_pool = self.auto_pool.take();
        let (req, loaded) = self.request_without_limits(open, auto_pool.is_some(), file)?;
        let auto_pool = match (auto_pool, loaded.as_ref().and_then(|l| l.file.auto_pool.as_ref())) {
            (Some(flag), _) => Some(flag),
            (None, Some(file)) => {
                let settings = file.iter().map(|(k, v)| (k.clone(), super::auto_pool::value_text(v))).collect();
                Some(super::auto_pool::spec(&settings).map_err(|e| anyhow::anyhow!("invalid auto_pool: {e}"))?)
            }
            (None, None) => None,
        };
        let req =
            pb::SubmitJobRequest { pool: if auto_pool.is_some() { String::new() } else { req.pool }, auto_pool, ..req };
        let file = loaded.as_ref().map(|l| l.file.policy());
        let policy = flags.to_pb(file.as_ref(), array_limit).map_err(|e| match &loaded {
            Some(l) => anyhow::anyhow!(l.annotate(&e.to_string())),
            None => e,
        })?;
        let req = continuous_from_file(pb::SubmitJobRequest { notify_url, max_output_bytes, policy, ..req });
        Ok((req, loaded))
    }

    /// The request without its limits and policy; `auto` says the job brings its own
    /// pool (then it needs no --pool); `file` is the job file of --file, loaded.
    fn request_without_limits(
        mut self,
        open: bool,
        auto: bool,
        file: Option<super::jobfile::Loaded>,
    ) -> anyhow::Result<(pb::SubmitJobRequest, Option<super::jobfile::Loaded>)> {
        if auto && self.pool.is_none() {
            self.pool = Some(String::new());
        }
        if open && self.file.is_none() {
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
        let (Some(path), Some(loaded)) = (&self.file, file) else {
            if self.command.is_empty() {
                anyhow::bail!(
                    "invalid CMD: give the command after `--` (e.g. `-- echo hi`), or a job file with --file"
                );
            }
            // One whole range goes as one; anything else as its runs.
            let (is_array, (array_start, array_end), array_runs) = match self.array {
                Some((indices, _)) if indices.is_range() => (true, (indices.first(), indices.last()), Vec::new()),
                Some((indices, _)) => (false, (0, 0), corral_proto::words::array_runs(&indices)),
                None => (false, (0, 0), Vec::new()),
            };
            let pool = self.pool.ok_or_else(|| anyhow::anyhow!("invalid --pool: say which pool runs the job"))?;
            let entries = match &self.each_line {
                Some(path) => read_lines(path)?,
                None => Vec::new(),
            };
            let req = pb::SubmitJobRequest {
                pool,
                name: self.name.unwrap_or_default(),
                priority: self.priority.unwrap_or(0),
                task: Some(self.spec.to_pb(self.command)),
                is_array,
                array_start,
                array_end,
                array_runs,
                entries,
                ..Default::default()
            };
            return Ok((req, None));
        };
        let own_pool = loaded.file.auto_pool.as_ref().map(|_| String::new());
        let pool = self.pool.or_else(|| loaded.file.pool.clone()).or(own_pool).ok_or_else(|| {
            anyhow::anyhow!("invalid --pool: say which pool runs the job (--pool, or `pool:` in {})", path.display())
        })?;
        if let Some(mr) = &loaded.file.mapreduce {
            let timeout = match &mr.timeout {
                Some(t) => corral_types::duration::parse(t)
                    .map_err(|e| anyhow::anyhow!(loaded.annotate(&format!("invalid mapreduce.timeout: {e}"))))?,
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
                    timeout_ms: corral_types::duration::ms(timeout),
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
            open,
            ..Default::default()
        };
        Ok((req, Some(loaded)))
    }
}

/// A continuous job from a job file: its one task (no array, no dependencies) is
/// the command every replica runs. Anything else goes as it is, for the
/// coordinator to refuse with its reason.
fn continuous_from_file(req: pb::SubmitJobRequest) -> pb::SubmitJobRequest {
    let continuous = req.policy.as_ref().is_some_and(|p| p.replicas > 0);
    match req.tasks.as_slice() {
        [one] if continuous && !one.is_array && one.depends_on.is_empty() && !req.open => {
            let task = one.spec.clone();
            pb::SubmitJobRequest { task, tasks: Vec::new(), ..req }
        }
        _ => req,
    }
}

impl SubmitArgs {
    pub async fn run(self, ctx: &Context, client: &mut Client) -> anyhow::Result<Exit> {
        let args = self;
        let wait = args.wait;
        let key = args
            .idempotency_key
            .clone()
            .unwrap_or_else(|| format!("corral-cli-{}", corral_proto::credentials::random_hex(16)));
        let (mut req, loaded) = args.job.request(args.open, client).await?;
        req.begin_at_ms = args.begin.unwrap_or(0);
        req.after = args.after.clone();
        if let Some(file) = &loaded {
            for after in &file.file.after {
                let text = match after {
                    super::jobfile::FileAfter::Id(id) => id.to_string(),
                    super::jobfile::FileAfter::Text(t) => t.clone(),
                };
                let after =
                    parse_after(&text).map_err(|e| anyhow::anyhow!(file.annotate(&format!("invalid after: {e}"))))?;
                if !req.after.contains(&after) {
                    req.after.push(after);
                }
            }
        }
        req.idempotency_key = key;
        if let Some(mr) = &mut req.mapreduce {
            mr.inputs = super::mapreduce::upload_inputs(ctx, &mr.inputs).await?;
        }
        let resp = match ctx.retrying(client, |c| Box::pin(c.submit_job(req.clone()))).await {
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
        let job = follow(client, resp.job_id, !ctx.json() && std::io::stderr().is_terminal()).await?;
        print_outcome(ctx, &job);
        Ok(verdict(&job))
    }
}

/// The most of an `--each-line` file that is read: a request carries at most 64 MiB
/// (with its other fields and a few bytes of framing per line).
const MAX_EACH_LINE: u64 = 48 << 20;

/// The lines of `path` (`-`: stdin), for `--each-line`, read up to
/// [`MAX_EACH_LINE`] bytes and refused beyond (`/dev/zero` must not fill the
/// memory); a file without lines is refused.
fn read_lines(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use std::io::Read as _;
    let stdin = path.as_os_str() == "-";
    let shown = if stdin { "standard input".to_string() } else { path.display().to_string() };
    let source: Box<dyn std::io::Read> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot read --each-line file {shown}: {e}"))?)
    };
    let mut bytes = Vec::new();
    source
        .take(MAX_EACH_LINE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read --each-line file {shown}: {e}"))?;
    lines_of(bytes, &shown)
}

fn lines_of(bytes: Vec<u8>, shown: &str) -> anyhow::Result<Vec<String>> {
    if bytes.len() as u64 > MAX_EACH_LINE {
        anyhow::bail!(
            "invalid --each-line: {shown} is larger than {} MiB, the most a job's entries may take in one request; split it into several jobs",
            MAX_EACH_LINE >> 20
        );
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!("invalid --each-line: {shown} is not UTF-8 text (byte {})", e.utf8_error().valid_up_to())
    })?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        anyhow::bail!("invalid --each-line: {shown} has no lines, so the job would have no tasks");
    }
    // Each line travels with a tag and its length: many short lines take more
    // room in the request than in the file.
    let framed: u64 = lines
        .iter()
        .map(|l| l.len() as u64 + 1 + (u64::BITS - (l.len() as u64).leading_zeros()).max(1).div_ceil(7) as u64)
        .sum();
    if framed > MAX_EACH_LINE {
        anyhow::bail!(
            "invalid --each-line: the {} lines of {shown} take {} MiB in a request, more than the {} MiB a job's entries may; split it into several jobs",
            lines.len(),
            framed >> 20,
            MAX_EACH_LINE >> 20
        );
    }
    Ok(lines)
}

/// `JOB`, `JOB:ok` or `JOB:any`.
pub fn parse_after(s: &str) -> Result<pb::After, String> {
    let (job, when) = s.split_once(':').unwrap_or((s, "ok"));
    let job_id: u64 = job.trim().parse().map_err(|_| format!("'{job}' is not a job id"))?;
    let any = match when {
        "ok" => false,
        "any" => true,
        other => return Err(format!("'{other}' is not one of: ok, any")),
    };
    Ok(pb::After { job_id, any })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_reads_ok_and_any() {
        assert_eq!(parse_after("12"), Ok(pb::After { job_id: 12, any: false }));
        assert_eq!(parse_after("12:any"), Ok(pb::After { job_id: 12, any: true }));
        assert!(parse_after("12:maybe").unwrap_err().contains("ok, any"));
        assert!(parse_after("x").is_err());
    }

    #[test]
    fn each_line_is_read_with_a_bound() {
        assert_eq!(lines_of(b"a\nb\n".to_vec(), "f").unwrap(), ["a", "b"]);
        let err = lines_of(vec![b'x'; (MAX_EACH_LINE + 1) as usize], "big.txt").unwrap_err().to_string();
        assert!(err.contains("big.txt is larger than 48 MiB"), "{err}");
        let err = lines_of(b"a\n".repeat(20 << 20), "short.txt").unwrap_err().to_string();
        assert!(err.contains("20971520 lines of short.txt take 60 MiB"), "{err}");
        assert!(lines_of(vec![0xff, b'\n'], "bin").unwrap_err().to_string().contains("not UTF-8"));
        assert!(lines_of(Vec::new(), "empty").unwrap_err().to_string().contains("no lines"));
    }
}
