//! `corral job ...`: one file per subcommand, with the shared rendering in [`render`]
//! and the task flags of `submit` and `add-tasks` in [`spec`].

use clap::Subcommand;

use super::Context;
use crate::Exit;

mod add_tasks;
pub mod auto_pool;
mod cancel;
mod close;
mod delete;
pub mod jobfile;
mod list;
mod logs;
pub mod mapreduce;
mod output;
pub mod policy;
pub mod render;
mod retry;
mod show;
pub mod spec;
mod submit;
mod update;
mod watch;

pub use submit::JobArgs;
pub use watch::follow;

/// The end of `job submit --help`.
const SUBMIT_EXAMPLES: &str = "Examples:
  corral job submit --pool cpu -- ./render.sh scene.blend
  corral job submit --array 1-1000%50 --timeout 10m --max-retries 2 -- ./step.sh {index}
  corral job submit --each-line files.txt -- sh -c 'gzip \"$CORRAL_ENTRY\"'
  corral job submit --file pipeline.yaml --wait
  corral job submit --outputs 'out/*.png' --begin 2h --after 41 -- ./nightly.sh";

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job: one task, or one per index of --array.
    ///
    /// The command runs directly (no shell); write `sh -c '...'` for one. In an array,
    /// `{index}` in any argument becomes the task's index, also in $CORRAL_TASK_INDEX.
    #[command(after_help = SUBMIT_EXAMPLES)]
    Submit(Box<submit::SubmitArgs>),
    /// List jobs.
    /// List jobs: by default the active ones and those that ended in the last hour
    /// (as squeue and hq job list do), oldest first.
    List(list::ListArgs),
    /// Show a job and its task counts.
    Show { job: u64 },
    /// Follow a job with a live progress bar until it ends.
    Watch { job: u64 },
    /// Wait until a job ends; exit status 0 only if every task succeeded.
    Wait { job: u64 },
    /// Cancel jobs: queued tasks are dropped, running ones killed. Each job is tried
    /// even if one before it fails (as `scancel` does); the exit status says if any did.
    Cancel {
        #[arg(required = true, num_args = 1.., value_name = "JOB")]
        jobs: Vec<u64>,
    },
    /// Put a job's finished tasks back in the queue (default: the failed ones), each
    /// with new attempts and its retries renewed; their history is kept. In a graph,
    /// what was cancelled because they failed waits for them again. The job becomes
    /// active again.
    Retry(retry::RetryArgs),
    /// Delete a finished job now, with its tasks, attempts, logs, outputs and
    /// events (the coordinator does it by itself after --retain, 7 days by default).
    Delete { job: u64 },
    /// Add tasks to an open job (one submitted with --open): from a job file's
    /// `tasks`, or one task or array given here. Any number, streamed.
    AddTasks(add_tasks::AddTasksArgs),
    /// Close an open job: it ends once all its tasks have.
    Close { job: u64 },
    /// Change a job after submission (its owner or an admin): --priority reorders
    /// its queued tasks at once (higher runs first); running ones go on.
    Update {
        job: u64,
        /// The new priority, -1000..1000.
        #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000))]
        priority: i32,
    },
    /// Change how many replicas a continuous job runs (one submitted with
    /// --continuous): more start at once, the highest-numbered stop (SIGTERM, then
    /// SIGKILL after the agent's --kill-grace).
    Scale {
        job: u64,
        /// The new number of replicas, 1..1000 (`job cancel` stops them all).
        #[arg(value_parser = clap::value_parser!(u32).range(1..=i64::from(corral_types::policy::MAX_REPLICAS)))]
        replicas: u32,
    },
    /// Run a map/reduce job: the mapper and reducer are streaming commands (lines on
    /// stdin, `key<TAB>value` lines out), with a real shuffle between them.
    Mapreduce(mapreduce::MapReduceArgs),
    /// Print every task's output (stdout, or stderr), each line prefixed with its
    /// task, in task order (`hq job cat`).
    Logs {
        job: u64,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
    /// Download a job's outputs (what its tasks' `--outputs` patterns uploaded).
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

impl JobCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        let client = &mut client;
        match self {
            JobCommand::Submit(args) => args.run(ctx, client).await,
            JobCommand::List(args) => args.run(ctx, client).await,
            JobCommand::Show { job } => show::run(ctx, client, job).await,
            JobCommand::Watch { job } => watch::watch(ctx, client, job).await,
            JobCommand::Wait { job } => watch::wait(ctx, client, job).await,
            JobCommand::Cancel { jobs } => cancel::run(ctx, client, &jobs).await,
            JobCommand::Retry(args) => args.run(ctx, client).await,
            JobCommand::Delete { job } => delete::run(ctx, client, job).await,
            JobCommand::AddTasks(args) => args.run(ctx, client).await,
            JobCommand::Close { job } => close::run(ctx, client, job).await,
            JobCommand::Update { job, priority } => update::run(ctx, client, job, priority).await,
            JobCommand::Scale { job, replicas } => update::scale(ctx, client, job, replicas).await,
            JobCommand::Mapreduce(args) => args.run(ctx, client).await,
            JobCommand::Output { job, task, dest } => output::run(ctx, client, job, task, dest).await,
            JobCommand::Logs { job, stderr } => logs::run(ctx, client, job, stderr).await,
        }
    }
}
