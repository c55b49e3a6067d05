//! `corral task ...`

use clap::builder::PossibleValuesParser;
use clap::Subcommand;
use corral_proto::v1 as pb;
use corral_types::TaskState;
use serde_json::json;

use super::Context;
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

mod logs;
pub(crate) use logs::{each_chunk, read_whole, Which};

/// Tasks fetched per request when listing.
const PAGE: u32 = 50_000;

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// List a job's tasks, optionally only those in one state. `--state failed` is
    /// the dead-letter list: each failed task with how its last attempt ended
    /// (`corral job retry JOB` puts them back).
    ///
    /// Without JOB, with --running: every running task of every job, with its node,
    /// when it started and for how long (Slurm's squeue).
    List {
        job: Option<u64>,
        /// waiting, ready, running, succeeded, failed or cancelled.
        #[arg(long, value_parser = PossibleValuesParser::new(TaskState::ALL.iter().map(|s| s.as_str())))]
        state: Option<String>,
        /// Only running tasks (`--state running`); without JOB, those of every job.
        #[arg(long, conflicts_with = "state")]
        running: bool,
    },
    /// Show a task and every attempt: node, times, exit code, why it ended.
    ///
    /// TASK is a task's index, or its id in a graph job (`prep`, `frames[7]`).
    Show { job: u64, task: String },
    /// Why a task is not running: the tasks it waits for, a throttle, no node with
    /// room, the pool at its maximum, its --begin, a retry backoff, the queue ahead.
    ///
    /// TASK is a task's index, or its id in a graph job.
    Explain { job: u64, task: String },
    /// Cancel single tasks: `task cancel JOB TASK...`, or Slurm's `JOB_TASK...`
    /// (`task cancel 12_7 12_9`). A queued task is dropped, a running one killed; in a
    /// graph, what depends on it is cancelled too; a finished one is left as it is.
    Cancel {
        /// JOB then TASK..., or JOB_TASK...
        #[arg(required = true, num_args = 1.., value_name = "JOB TASK... | JOB_TASK")]
        targets: Vec<String>,
    },
    /// Print a task's stdout (or stderr), from any node, even one that is gone.
    Logs {
        job: u64,
        /// The task's index, or its id in a graph job.
        task: String,
        /// Print stderr instead of stdout (when stdout is empty and stderr is not,
        /// `task logs` says so). With `-o json`: both, with their sizes.
        #[arg(long, conflicts_with = "both")]
        stderr: bool,
        /// Print stdout and stderr together, each line prefixed `out| ` or `err| `,
        /// in the order the task wrote them (once the attempt has ended; while
        /// following, as they arrive). A program that buffers its stdout when it
        /// is not a terminal (C's stdio, Python) writes it later than it printed it:
        /// `stdbuf -oL` or `PYTHONUNBUFFERED=1` keep them in step.
        #[arg(long)]
        both: bool,
        /// Keep printing as the task writes, until it ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Which attempt (default: the latest).
        #[arg(long)]
        attempt: Option<u32>,
        /// A multi-node task's rank whose output to print: 0 (the default) is the
        /// task's own (its primary's, where the MPI ranks' output arrives); 1 and up
        /// are the other nodes' (what the coordination command printed there).
        #[arg(long, default_value_t = 0)]
        rank: u32,
    },
}

/// A task named by index (a number) or by id.
fn task_ref(task: &str) -> (u32, String) {
    match task.parse() {
        Ok(index) => (index, String::new()),
        Err(_) => (0, task.to_string()),
    }
}

/// Its state as users read it: `assigned` for a task sent ahead to its node and
/// waiting there for a slot (`running` on the record), else its state's word.
pub(crate) fn state_word(t: &pb::Task) -> &'static str {
    if t.assigned {
        "assigned"
    } else {
        t.state().as_word()
    }
}

/// What every task view says of a task in `-o json`, with `more` fields added.
fn task_json(t: &pb::Task, more: serde_json::Value) -> serde_json::Value {
    let mut v = json!({
        "id": t.index,
        "name": t.name,
        "job_id": t.job_id,
        "state": state_word(t),
        "reason": (!t.reason.is_empty()).then_some(&t.reason),
        "node_id": (!t.node_id.is_empty()).then_some(&t.node_id),
    });
    if let (Some(v), serde_json::Value::Object(more)) = (v.as_object_mut(), more) {
        v.extend(more);
    }
    v
}

fn attempt_json(a: &pb::Attempt) -> serde_json::Value {
    json!({
        "attempt": a.attempt,
        "node_id": a.node_id,
        "started_at_ms": a.started_at_ms,
        "ended_at_ms": (a.ended_at_ms > 0).then_some(a.ended_at_ms),
        "outcome": a.outcome().word().map(|o| o.as_str()),
        "exit_code": a.has_exit_code.then_some(a.exit_code),
        "signal": (a.signal != 0).then_some(a.signal),
        "message": a.message,
        // A multi-node task's other ranks' nodes, rank 1 first.
        "members": (!a.members.is_empty()).then_some(&a.members),
    })
}

pub(crate) async fn list(client: &mut Client, job: u64, state: Option<TaskState>) -> anyhow::Result<Vec<pb::Task>> {
    let mut tasks = Vec::new();
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                job_id: job,
                state: state.map_or(0, pb::TaskState::of),
                offset: tasks.len() as u32,
                limit: PAGE,
            })
            .await
            .api()?;
        let got = page.tasks.len();
        tasks.extend(page.tasks);
        if got < PAGE as usize || tasks.len() >= page.total as usize {
            return Ok(tasks);
        }
    }
}

/// Running tasks across jobs, as squeue shows them: job, task, node, start, elapsed.
fn print_running(ctx: &Context, tasks: &[pb::Task]) {
    if ctx.json() {
        let items = tasks.iter().map(|t| task_json(t, json!({ "started_at_ms": t.started_at_ms }))).collect();
        output::json(&serde_json::Value::Array(items));
        return;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.job_id.to_string(),
                t.name.clone(),
                t.node_id.clone(),
                output::timestamp(t.started_at_ms),
                output::duration_ms(now.saturating_sub(t.started_at_ms)),
            ]
        })
        .collect();
    output::table(&["JOB", "TASK", "NODE", "STARTED", "ELAPSED"], &rows);
}

/// The tasks `task cancel` names: `JOB TASK...` or `JOB_TASK...`, as (job, task).
fn cancel_targets(targets: &[String]) -> anyhow::Result<Vec<(u64, String)>> {
    let job_of = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| anyhow::anyhow!("invalid JOB: '{s}' is not a job id (use JOB TASK... or JOB_TASK...)"))
    };
    if targets.iter().all(|t| t.contains('_')) {
        return targets
            .iter()
            .map(|t| {
                let (job, task) = t.split_once('_').unwrap_or_default();
                Ok((job_of(job)?, task.to_string()))
            })
            .collect();
    }
    match targets {
        [job, tasks @ ..] if !tasks.is_empty() => {
            let job = job_of(job)?;
            Ok(tasks.iter().map(|t| (job, t.clone())).collect())
        }
        _ => anyhow::bail!("invalid TASK: name the tasks to cancel (JOB TASK..., or JOB_TASK...)"),
    }
}

impl TaskCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        match self {
            TaskCommand::List { job: None, state, running } => {
                if !running && state.as_deref() != Some("running") {
                    anyhow::bail!("invalid JOB: give a job, or --running for the running tasks of every job");
                }
                let tasks = list(&mut client, 0, Some(TaskState::Running)).await?;
                print_running(ctx, &tasks);
            }
            TaskCommand::List { job: Some(job), state, running } => {
                let state = match running {
                    true => Some(TaskState::Running),
                    false => state.map(|s| s.parse::<TaskState>()).transpose().map_err(anyhow::Error::msg)?,
                };
                let tasks = list(&mut client, job, state).await?;
                if ctx.json() {
                    let items: Vec<serde_json::Value> = tasks
                        .iter()
                        .map(|t| {
                            let last_error = (!t.last_error.is_empty()).then_some(&t.last_error);
                            let started = (t.started_at_ms > 0).then_some(t.started_at_ms);
                            task_json(
                                t,
                                json!({ "last_error": last_error, "attempts": t.attempts_count, "started_at_ms": started }),
                            )
                        })
                        .collect();
                    output::json(&serde_json::Value::Array(items));
                } else {
                    let rows: Vec<Vec<String>> = tasks
                        .iter()
                        .map(|t| {
                            let node = if t.node_id.is_empty() { "-".to_string() } else { t.node_id.clone() };
                            // A failed task says why: the exit rule that stopped it,
                            // else how its last attempt ended.
                            let why = if t.reason.is_empty() { &t.last_error } else { &t.reason };
                            let state = if why.is_empty() {
                                state_word(t).to_string()
                            } else {
                                format!("{} ({why})", state_word(t))
                            };
                            let started = output::timestamp(t.started_at_ms);
                            vec![
                                t.index.to_string(),
                                t.name.clone(),
                                state,
                                t.attempts_count.to_string(),
                                node,
                                started,
                            ]
                        })
                        .collect();
                    output::table(&["INDEX", "TASK", "STATE", "ATTEMPTS", "NODE", "STARTED"], &rows);
                }
            }
            TaskCommand::Show { job, task } => {
                let (index, name) = task_ref(&task);
                let t = client.get_task(pb::GetTaskRequest { job_id: job, index, name }).await.api()?;
                if ctx.json() {
                    let attempts: Vec<_> = t.attempts.iter().map(attempt_json).collect();
                    output::json(&task_json(&t, json!({ "attempts": attempts })));
                } else {
                    let mut rows = vec![
                        ("task", format!("{} of job {} (index {})", t.name, t.job_id, t.index)),
                        ("state", state_word(&t).to_string()),
                        ("attempts", t.attempts_count.to_string()),
                    ];
                    if !t.reason.is_empty() {
                        rows.push(("why", t.reason.clone()));
                    }
                    output::fields(&rows);
                    println!();
                    let rows: Vec<Vec<String>> = t
                        .attempts
                        .iter()
                        .map(|a| {
                            let exit = if a.has_exit_code {
                                a.exit_code.to_string()
                            } else if a.signal != 0 {
                                format!("signal {}", a.signal)
                            } else {
                                "-".into()
                            };
                            let took = if a.ended_at_ms > 0 {
                                output::duration_ms(a.ended_at_ms.saturating_sub(a.started_at_ms))
                            } else {
                                "running".into()
                            };
                            // A multi-node task's nodes, rank 0's first.
                            let nodes = std::iter::once(&a.node_id).chain(&a.members);
                            vec![
                                a.attempt.to_string(),
                                nodes.map(String::as_str).collect::<Vec<_>>().join(","),
                                output::timestamp(a.started_at_ms),
                                took,
                                a.outcome().word().map_or("-", |o| o.as_str()).to_string(),
                                exit,
                                a.message.clone(),
                            ]
                        })
                        .collect();
                    output::table(&["ATTEMPT", "NODE", "STARTED", "TOOK", "OUTCOME", "EXIT", "MESSAGE"], &rows);
                }
            }
            TaskCommand::Explain { job, task } => {
                let (index, name) = task_ref(&task);
                let e = client.explain_task(pb::GetTaskRequest { job_id: job, index, name }).await.api()?;
                let t = e.task.unwrap_or_default();
                if ctx.json() {
                    output::json(&task_json(&t, json!({ "reasons": e.reasons })));
                } else {
                    println!("task {} of job {}: {}", t.name, t.job_id, state_word(&t));
                    for reason in &e.reasons {
                        println!("  - {reason}");
                    }
                }
            }
            TaskCommand::Cancel { targets } => {
                let mut cancelled = Vec::new();
                let mut refused = 0;
                for (job, task) in cancel_targets(&targets)? {
                    let (index, name) = task_ref(&task);
                    match client.cancel_task(pb::GetTaskRequest { job_id: job, index, name }).await.api() {
                        Ok(t) => {
                            if !ctx.json() {
                                println!("job {job} task {task}: {}", state_word(&t));
                            }
                            cancelled.push(task_json(&t, json!({})));
                        }
                        Err(e) => {
                            eprintln!("job {job} task {task}: {e:#}");
                            refused += 1;
                        }
                    }
                }
                if ctx.json() {
                    output::json(&serde_json::Value::Array(cancelled));
                }
                if refused > 0 {
                    anyhow::bail!("{refused} task(s) could not be cancelled");
                }
            }
            TaskCommand::Logs { job, task, attempt, rank, .. } if ctx.json() => {
                let which = logs::Which { job, task: &task, attempt: attempt.unwrap_or(0), rank };
                logs::logs_json(&mut client, which).await?;
            }
            TaskCommand::Logs { job, task, both: true, follow, attempt, rank, .. } => {
                let which = logs::Which { job, task: &task, attempt: attempt.unwrap_or(0), rank };
                logs::print_both(&mut client, which, follow).await?;
            }
            TaskCommand::Logs { job, task, stderr, follow, attempt, rank, .. } => {
                let which = logs::Which { job, task: &task, attempt: attempt.unwrap_or(0), rank };
                logs::print_logs(&mut client, which, stderr, follow).await?;
            }
        }
        Ok(Exit::Ok)
    }
}

#[cfg(test)]
mod cancel_tests {
    use super::cancel_targets;

    #[test]
    fn tasks_to_cancel_are_named_either_way() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = cancel_targets(&words(&["12", "7", "prep"])).unwrap();
        assert_eq!(got, [(12, "7".to_string()), (12, "prep".to_string())]);
        let got = cancel_targets(&words(&["12_7", "13_frames[2]"])).unwrap();
        assert_eq!(got, [(12, "7".to_string()), (13, "frames[2]".to_string())]);
        assert!(cancel_targets(&words(&["12"])).unwrap_err().to_string().contains("name the tasks"));
        assert!(cancel_targets(&words(&["x", "1"])).unwrap_err().to_string().contains("invalid JOB: 'x'"));
    }
}
