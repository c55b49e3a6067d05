//! `corral job add-tasks JOB`: more tasks for an open job, from a file or the flags,
//! streamed in batches.

use serde_json::json;

use corral_proto::v1 as pb;

use super::super::Context;
use super::spec::{parse_array, SpecArgs};
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

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

/// Tasks per message when streaming them to the coordinator.
const ADD_BATCH: usize = 1000;

impl AddTasksArgs {
    pub async fn run(self, ctx: &Context, client: &mut Client) -> anyhow::Result<Exit> {
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
