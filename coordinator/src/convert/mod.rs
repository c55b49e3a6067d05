//! The gRPC edge: protobuf messages in, domain types out (validated, with errors
//! that name the field), and views of the core back out as protobuf. Client requests
//! are here; [`agent`] has what agents send and are sent, [`views`] the core's state
//! as protobuf.

use std::collections::BTreeMap;
use std::time::Duration;

use corral_proto::v1 as pb;

use crate::error::Invalid;
use crate::model::*;
use corral_types::graph::{Graph, TaskGroup};
use corral_types::{duration, paths};

pub mod agent;
pub mod policy;
mod pools;
pub mod schedules;
pub mod templates;
pub mod views;

pub use agent::*;
pub use pools::{autoscale, autoscale_to_pb, local_target, pool_spec};
pub use views::*;

/// The most a log chunk from an agent may carry.
pub const MAX_LOG_CHUNK: usize = 4 << 20;
const MAX_NAME: usize = 200;
const MAX_ARG: usize = 128 << 10;
const MAX_RETRIES: u32 = 1000;
/// The most nodes one multi-node task may span.
const MAX_NODES: u32 = 10_000;
pub(crate) const MAX_SLOTS: u32 = 100_000;
const MAX_LOCAL_NODES: u32 = 256;

fn word<T: std::str::FromStr<Err = String>>(field: &'static str, s: &str, default: T) -> Result<T, Invalid> {
    if s.is_empty() {
        return Ok(default);
    }
    s.parse().map_err(|e| Invalid::new(field, e))
}

pub(crate) fn text(field: &'static str, s: &str, max: usize) -> Result<(), Invalid> {
    if s.len() > max {
        return Err(Invalid::new(field, format!("is {} bytes long; the limit is {max}", s.len())));
    }
    if s.contains('\0') {
        return Err(Invalid::new(field, "must not contain a NUL byte"));
    }
    Ok(())
}

pub fn task_spec(spec: Option<pb::TaskSpec>) -> Result<TaskSpec, Invalid> {
    let spec = spec.ok_or_else(|| Invalid::new("task", "is required"))?;
    match spec.argv.first() {
        None => return Err(Invalid::new("command", "is empty: give the program to run after `--`")),
        Some(program) if program.is_empty() => {
            return Err(Invalid::new("command", "the program name is empty"));
        }
        // A shell line given as one word would fail only when it runs (no program
        // is named `echo hi; echo there`): say so now.
        Some(line) if spec.argv.len() == 1 && line.trim().contains(char::is_whitespace) => {
            let line = crate::error::shown(line.trim());
            return Err(Invalid::new(
                "command",
                format!(
                    "'{line}' is one argument holding spaces, and a command runs directly, not in a shell: write `-- sh -c '{line}'`, or give the words apart (`-- prog arg`)"
                ),
            ));
        }
        _ => {}
    }
    for arg in &spec.argv {
        text("command", arg, MAX_ARG)?;
    }
    let mut env = BTreeMap::new();
    for (key, value) in spec.env {
        if key.is_empty() || key.contains('=') {
            return Err(Invalid::new(
                "env",
                format!("'{}' is not a variable name (expected K=V with a non-empty K)", crate::error::shown(&key)),
            ));
        }
        text("env", &key, MAX_ARG)?;
        text("env", &value, MAX_ARG)?;
        env.insert(key, value);
    }
    if spec.slots == 0 {
        return Err(Invalid::new("slots", "must be at least 1"));
    }
    if spec.max_retries > MAX_RETRIES {
        return Err(Invalid::new("max_retries", format!("must be at most {MAX_RETRIES}")));
    }
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for input in spec.inputs {
        // Checked with `{index}` filled in, as the agent will see it.
        let object = crate::objects::object_path("inputs.object", &input.object.replace("{index}", "0"))?;
        if object.as_ref().starts_with(paths::PAYLOADS) {
            return Err(Invalid::new(
                "inputs.object",
                "payloads/ holds dispatches' payloads: a job gets one by dispatch",
            ));
        }
        let path = if input.path.is_empty() { object.filename().unwrap_or_default().to_string() } else { input.path };
        relative_path("inputs.path", &path)?;
        inputs.push(TaskInput { object: input.object.trim_matches('/').to_string(), path });
    }
    for pattern in &spec.outputs {
        relative_path("outputs", pattern)?;
        glob_pattern(pattern)?;
    }
    Ok(TaskSpec {
        argv: spec.argv,
        env,
        slots: spec.slots,
        nodes: match spec.nodes {
            0 => 1,
            n if n > MAX_NODES => {
                return Err(Invalid::new("nodes", format!("a task may span at most {MAX_NODES} nodes")))
            }
            n => n,
        },
        coordination: match spec.coordination.trim() {
            "" => None,
            _ => {
                text("coordination", &spec.coordination, MAX_ARG)?;
                Some(spec.coordination)
            }
        },
        max_retries: spec.max_retries,
        timeout: (spec.timeout_ms > 0).then(|| duration::from_ms("timeout", spec.timeout_ms)).transpose()?,
        inputs,
        outputs: spec.outputs,
        outputs_when: word("outputs_when", &spec.outputs_when, OutputsWhen::Success)?,
        kind: TaskKind::Command,
        resources: resources("resources", spec.resources.into_iter().filter(|(_, v)| *v > 0).collect())?,
        checkpoint: match spec.checkpoint.as_str() {
            "" => None,
            path => {
                relative_path("checkpoint", path)?;
                Some(path.trim_end_matches('/').to_string())
            }
        },
        checkpoint_interval: match spec.checkpoint_interval_ms {
            0 => None,
            ms if ms < 1000 => return Err(Invalid::new("checkpoint_interval", "must be at least 1s")),
            _ if spec.checkpoint.is_empty() => {
                return Err(Invalid::new("checkpoint_interval", "needs a checkpoint: give --checkpoint PATH"))
            }
            ms => Some(duration::from_ms("checkpoint_interval", ms)?),
        },
        entries: Vec::new(),
    })
}

/// Named resource amounts (a node's or a task's), each name checked, each amount
/// storable, devices within their limit.
pub fn resources(field: &'static str, given: std::collections::HashMap<String, u64>) -> Result<Resources, Invalid> {
    use corral_types::resources::{check_name, GPUS, MAX_GPUS, MAX_RESOURCES};
    if given.len() > MAX_RESOURCES {
        return Err(Invalid::new(field, format!("names {} resources; the limit is {MAX_RESOURCES}", given.len())));
    }
    let mut checked = Resources::new();
    for (name, amount) in given {
        check_name(&name).map_err(|e| Invalid::new(field, e))?;
        if name == GPUS && amount > MAX_GPUS {
            return Err(Invalid::new(
                field,
                format!("gpus={amount} is more than the {MAX_GPUS} devices a node may have"),
            ));
        }
        checked.insert(name, storable(field, amount)?);
    }
    Ok(checked)
}

/// A path inside a task's directory: relative, without `..`.
pub fn relative_path(field: &'static str, path: &str) -> Result<(), Invalid> {
    text(field, path, 4096)?;
    let p = std::path::Path::new(path);
    if path.is_empty() || p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Invalid::new(
            field,
            format!(
                "'{}' must be a relative path inside the task's directory, without '..'",
                crate::error::shown(path)
            ),
        ));
    }
    Ok(())
}

fn glob_pattern(pattern: &str) -> Result<(), Invalid> {
    // The agent expands the pattern; check here that it can.
    let ok = !pattern.contains("[!") || pattern.contains(']');
    let balanced = pattern.matches('[').count() == pattern.matches(']').count();
    if !ok || !balanced {
        return Err(Invalid::new("outputs", format!("'{}' is not a valid glob pattern", crate::error::shown(pattern))));
    }
    Ok(())
}

/// The pool a submission names, or the pool it asks to have made for it
/// (`auto_pool`; its pool is then a placeholder until the core names it).
pub fn pool_or_auto(req: &mut pb::SubmitJobRequest) -> Result<(PoolName, Option<Box<PoolSpec>>), Invalid> {
    let Some(mut auto) = req.auto_pool.take() else { return Ok((PoolName::parse("pool", &req.pool)?, None)) };
    if !req.pool.is_empty() {
        return Err(Invalid::new("auto_pool", "give a pool or an auto pool, not both"));
    }
    auto.name = AUTO_POOL.into();
    let spec = pool_spec(Some(auto)).map_err(|e| Invalid::new("auto_pool", e.to_string()))?;
    if spec.provider == Provider::Static {
        return Err(Invalid::new(
            "auto_pool",
            "an auto pool's nodes are started for it: give provider=local, docker or command",
        ));
    }
    Ok((PoolName::parse("pool", AUTO_POOL)?, Some(Box::new(spec))))
}

/// What a job with an auto pool names as its pool until it has one.
const AUTO_POOL: &str = "auto";

pub fn job_spec(mut req: pb::SubmitJobRequest) -> Result<JobSpec, Invalid> {
    let (pool, auto_pool) = pool_or_auto(&mut req)?;
    let policy = policy::job_policy(req.policy.take())?;
    let after = after(&req.after)?;
    let begin_at_ms = match req.begin_at_ms {
        0 => None,
        at => Some(duration::time_ms("begin_at_ms", at, crate::auth::now_ms())?),
    };
    text("name", &req.name, MAX_NAME)?;
    priority(req.priority)?;
    if !req.tasks.is_empty() || req.open {
        if !req.entries.is_empty() {
            return Err(Invalid::new(
                "entries",
                "a graph job's tasks are its `tasks`; entries make an array of one command",
            ));
        }
        if req.task.is_some() || req.is_array || !req.array_runs.is_empty() {
            let why = if req.open {
                "an open job is a graph job: give its tasks as `tasks` (a job file), or add them later"
            } else {
                "give either `tasks` (a graph) or `task` (one command), not both"
            };
            return Err(Invalid::new("tasks", why));
        }
        let graph = std::sync::Arc::new(graph(req.tasks)?);
        let spec = JobSpec::new(pool, placeholder_spec()).with_graph(graph).named(req.name).with_priority(req.priority);
        return Ok(JobSpec { open: req.open, begin_at_ms, policy, after, auto_pool, ..spec });
    }
    let entries = std::mem::take(&mut req.entries);
    if !entries.is_empty() && (req.is_array || !req.array_runs.is_empty()) {
        return Err(Invalid::new("entries", "the entries make the array (one task per entry): leave the array unset"));
    }
    let indices = if !req.array_runs.is_empty() {
        if req.is_array {
            return Err(Invalid::new("array_runs", "give the array as runs or as array_start-array_end, not both"));
        }
        let indices = corral_proto::words::array_indices(&req.array_runs).map_err(|why| Invalid::new("array", why))?;
        if indices.len() > MAX_TASKS_PER_JOB {
            return Err(Invalid::new(
                "array",
                format!("{} tasks is more than the {MAX_TASKS_PER_JOB} a job may have", indices.len()),
            ));
        }
        indices
    } else if !entries.is_empty() {
        if entries.len() as u64 > MAX_TASKS_PER_JOB {
            return Err(Invalid::new(
                "entries",
                format!("{} entries is more than the {MAX_TASKS_PER_JOB} tasks a job may have", entries.len()),
            ));
        }
        for entry in &entries {
            text("entries", entry, MAX_ARG)?;
        }
        Indices::range(0, entries.len() as u32 - 1)
    } else if req.is_array {
        if req.array_start > req.array_end {
            return Err(Invalid::new(
                "array",
                format!("{}-{} is reversed: the start must not be after the end", req.array_start, req.array_end),
            ));
        }
        let count = u64::from(req.array_end - req.array_start) + 1;
        if count > MAX_TASKS_PER_JOB {
            return Err(Invalid::new(
                "array",
                format!("{count} tasks is more than the {MAX_TASKS_PER_JOB} a job may have"),
            ));
        }
        Indices::range(req.array_start, req.array_end)
    } else {
        Indices::range(0, 0)
    };
    let task = TaskSpec { entries, ..task_spec(req.task)? };
    let spec = JobSpec::new(pool, task).with_indices(indices).named(req.name).with_priority(req.priority);
    Ok(JobSpec { begin_at_ms, policy, after, auto_pool, ..spec })
}

/// The most jobs one job may wait for.
const MAX_AFTER: usize = 100;

/// A submission's `--after` jobs.
pub fn after(after: &[pb::After]) -> Result<Vec<After>, Invalid> {
    if after.len() > MAX_AFTER {
        return Err(Invalid::new("after", format!("names {} jobs; the limit is {MAX_AFTER}", after.len())));
    }
    let mut jobs = Vec::with_capacity(after.len());
    for a in after {
        if a.job_id == 0 {
            return Err(Invalid::new("after", "job 0 does not exist: ids start at 1"));
        }
        jobs.push(After { job: JobId(a.job_id), any: a.any });
    }
    Ok(jobs)
}

/// A job list's filters, each checked (a state word, a pool or schedule name, a glob).
pub fn job_filter(req: pb::ListJobsRequest) -> Result<crate::core::views::JobFilter, Invalid> {
    let states = req
        .states
        .iter()
        .map(|s| s.parse::<JobState>().map_err(|why| Invalid::new("states", why)))
        .collect::<Result<Vec<_>, _>>()?;
    let name = match req.name.as_str() {
        "" => None,
        glob => {
            Some(glob::Pattern::new(glob).map_err(|e| Invalid::new("name", format!("is not a glob pattern: {e}")))?)
        }
    };
    Ok(crate::core::views::JobFilter {
        states,
        ended_since_ms: (req.ended_since_ms > 0).then_some(req.ended_since_ms),
        owner: (!req.owner.is_empty()).then_some(req.owner),
        pool: (!req.pool.is_empty()).then(|| PoolName::parse("pool", &req.pool)).transpose()?,
        name,
        schedule: (!req.schedule.is_empty()).then(|| ScheduleName::parse("schedule", &req.schedule)).transpose()?,
        template: (!req.template.is_empty()).then(|| TemplateName::parse("template", &req.template)).transpose()?,
        limit: (req.limit > 0).then_some(req.limit as usize),
    })
}

/// A submission's `idempotency_key`: empty for none.
pub fn idempotency_key(key: &str) -> Result<Option<String>, Invalid> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.chars().count() > 128 || key.chars().any(char::is_control) {
        return Err(Invalid::new("idempotency_key", "must be at most 128 characters, none of them control characters"));
    }
    Ok(Some(key.to_string()))
}

/// A digest of what a submission asks for (all but who asks), to tell a retry of
/// it from another request under the same key.
pub fn request_digest(spec: &JobSpec) -> String {
    let mut canonical = serde_json::json!({
        "pool": spec.pool.as_str(),
        "name": spec.name,
        "priority": spec.priority,
        "task": spec.task,
        "array": [spec.first_index, spec.last_index],
        "graph": spec.graph.as_ref().map(|g| &g.groups),
        "open": spec.open,
        "notify": spec.notify,
        "max_output": spec.max_output,
    });
    // Only when set, so that a key stored before these existed still matches.
    if !spec.policy.is_default() {
        canonical["policy"] = serde_json::json!(spec.policy);
    }
    if let Some(array) = &spec.array {
        canonical["array_runs"] = serde_json::json!(array.to_string());
    }
    if let Some(auto) = &spec.auto_pool {
        canonical["auto_pool"] = serde_json::json!(format!("{auto:?}"));
    }
    if !spec.after.is_empty() {
        canonical["after"] = spec.after.iter().map(|a| serde_json::json!([a.job.0, a.any])).collect();
    }
    // Not the begin time: `--begin 10m` retried a moment later is the same request.
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.to_string().as_bytes());
    crate::auth::secret::hex(digest.as_ref())
}

/// The least a job may keep of each task stream, so the truncation marker has
/// output to follow.
pub const MIN_MAX_OUTPUT: u64 = 1024;

/// A job's `max_output_bytes`: 0 for the coordinator's default.
pub fn max_output(bytes: u64) -> Result<u64, Invalid> {
    if bytes != 0 && bytes < MIN_MAX_OUTPUT {
        return Err(Invalid::new(
            "max_output_bytes",
            format!("is {bytes}; keep at least {MIN_MAX_OUTPUT} bytes (1KiB)"),
        ));
    }
    storable("max_output_bytes", bytes)
}

/// What an open job that has no tasks yet shows as its task.
fn placeholder_spec() -> TaskSpec {
    TaskSpec::command(Vec::new())
}

/// The tasks of an `AddTasks` stream, each checked (the graph as a whole is checked
/// with the job's own tasks by the core).
pub fn task_groups(groups: Vec<pb::TaskGroup>) -> Result<Vec<TaskGroup>, Invalid> {
    groups.into_iter().map(task_group).collect()
}

fn task_group(g: pb::TaskGroup) -> Result<TaskGroup, Invalid> {
    let spec = task_spec(g.spec).map_err(|e| Invalid::new("tasks", format!("task '{}': {e}", g.id)))?;
    let array = g.is_array.then_some((g.array_start, g.array_end));
    for reference in &g.depends_on {
        text("tasks.depends_on", reference, MAX_NAME)?;
    }
    text("tasks.id", &g.id, MAX_NAME)?;
    Ok(TaskGroup { id: g.id, spec, array, depends_on: g.depends_on })
}

/// A graph job's tasks, each checked, then the graph as a whole.
pub fn graph(groups: Vec<pb::TaskGroup>) -> Result<Graph, Invalid> {
    corral_types::graph::resolve(task_groups(groups)?).map_err(|e| Invalid::new("tasks", e.to_string()))
}

/// The store keeps integers as SQLite's signed 64 bits.
pub(crate) const MAX_STORED: u64 = i64::MAX as u64;

pub(crate) fn storable(field: &'static str, value: u64) -> Result<u64, Invalid> {
    if value > MAX_STORED {
        return Err(Invalid::new(field, format!("{value} is too large")));
    }
    Ok(value)
}

/// A token name users choose: 1 to 63 of `a-z A-Z 0-9 - _ .`, so it reads well in
/// tables and never takes the `pool:` names the coordinator makes for itself.
pub fn token_name(name: &str) -> Result<String, Invalid> {
    if name.is_empty() || name.len() > 63 {
        return Err(Invalid::new("name", "must be 1 to 63 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(Invalid::new("name", "use letters, digits, '-', '_' and '.' only"));
    }
    Ok(name.to_string())
}

/// The longest callback URL accepted.
const MAX_URL: usize = 2048;

/// A job's `notify_url`: empty for none, else an absolute http(s) URL.
pub fn notify_url(url: &str) -> Result<Option<String>, Invalid> {
    if url.is_empty() {
        return Ok(None);
    }
    if url.len() > MAX_URL {
        return Err(Invalid::new("notify_url", format!("is {} characters; at most {MAX_URL}", url.len())));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| Invalid::new("notify_url", format!("'{}' is not a URL: {e}", crate::error::shown(url))))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(Invalid::new(
            "notify_url",
            format!("'{}' must be an http:// or https:// URL with a host", crate::error::shown(url)),
        ));
    }
    Ok(Some(url.to_string()))
}

#[cfg(test)]
mod tests;

/// Checks a job's priority.
pub fn priority(priority: i32) -> Result<i32, Invalid> {
    if !(-1000..=1000).contains(&priority) {
        return Err(Invalid::new("priority", format!("{priority} is outside -1000..1000")));
    }
    Ok(priority)
}

/// The new priority an update asks for (it must ask for one), checked.
pub fn new_priority(wanted: Option<i32>) -> Result<i32, Invalid> {
    priority(wanted.ok_or_else(|| Invalid::new("priority", "nothing to change: give one"))?)
}
