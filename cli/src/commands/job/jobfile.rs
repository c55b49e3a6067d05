//! Job files (`corral job submit --file job.yaml`): a job's settings and its tasks
//! with dependencies, in YAML or JSON. Errors point at the file's line.
//!
//! ```yaml
//! name: render            # optional; --name overrides
//! pool: cpu               # optional; --pool overrides
//! priority: 10            # optional, -1000..1000
//! exit_policy: ["3=fail", "signal:KILL=fail-job"]   # optional, as --exit-policy
//! retry_delay: 5s..10m    # optional, as --retry-delay
//! max_running: 20         # optional, as --max-running
//! concurrency_key: render # optional, as --concurrency-key
//! continuous: true        # optional, as --continuous (one task, no array)
//! replicas: 3             # optional, as --replicas
//! after: [12, "13:any"]   # optional, as --after
//! auto_pool: {provider: local, nodes: 2, slots: 4}   # optional, as --auto-pool
//! tasks:
//!   - id: prep
//!     command: [sh, -c, "make assets"]
//!   - id: frames          # an array: tasks frames[1] .. frames[100]
//!     array: 1-100
//!     command: [render, --frame, "{index}"]
//!     depends_on: [prep]
//!     slots: 1
//!     nodes: 1                          # whole nodes at once (MPI), as --nodes
//!     max_retries: 2
//!     timeout: 10m
//!     env: {QUALITY: high}
//!     inputs: [scenes/scene.blend]      # objects fetched first
//!     outputs: ["frame-*.png"]          # uploaded to jobs/<job>/frames[i]/
//!     resources: {gpus: 1, mem: 4GiB}   # beyond slots, as --resource
//!     checkpoint: state/                # kept across attempts, as --checkpoint
//!     checkpoint_interval: 5m
//!   - id: movie
//!     command: [encode]
//!     depends_on: [frames]  # or frames[1-50], frames[7]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use corral_proto::v1 as pb;
use corral_types::graph::{self, TaskGroup};
use corral_types::{OutputsWhen, TaskInput, TaskSpec};
use serde::Deserialize;

use super::spec::parse_array;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub name: Option<String>,
    pub pool: Option<String>,
    pub priority: Option<i32>,
    #[serde(default)]
    pub tasks: Vec<FileTask>,
    /// A map/reduce job instead of `tasks`.
    pub mapreduce: Option<FileMapReduce>,
    /// As --exit-policy, --retry-delay, --max-running and --concurrency-key.
    #[serde(default)]
    pub exit_policy: Vec<String>,
    pub retry_delay: Option<String>,
    pub max_running: Option<u32>,
    pub concurrency_key: Option<String>,
    /// As --continuous and --replicas.
    #[serde(default)]
    pub continuous: bool,
    pub replicas: Option<u32>,
    /// Jobs that must end first, as --after: `[12, "13:any"]`.
    #[serde(default)]
    pub after: Vec<FileAfter>,
    /// A pool for this job alone, as --auto-pool: `{provider: local, nodes: 2, slots: 4}`.
    pub auto_pool: Option<BTreeMap<String, serde_norway::Value>>,
}

impl JobFile {
    pub fn policy(&self) -> super::policy::FilePolicy {
        super::policy::FilePolicy {
            exit_policy: self.exit_policy.clone(),
            retry_delay: self.retry_delay.clone(),
            max_running: self.max_running,
            concurrency_key: self.concurrency_key.clone(),
            continuous: self.continuous,
            replicas: self.replicas,
        }
    }
}

/// A map/reduce job as written (the flags of `corral job mapreduce`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMapReduce {
    /// Local files (paths or globs, relative to the job file) or `store:PATH`.
    pub inputs: Vec<String>,
    pub map_tasks: u32,
    pub reduce_tasks: u32,
    pub mapper: String,
    pub reducer: String,
    pub combiner: Option<String>,
    #[serde(default = "one")]
    pub max_retries: u32,
    pub timeout: Option<String>,
}

/// One task (or array) as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTask {
    pub id: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub slots: u32,
    /// Whole nodes each task takes at once (a multi-node task), as --nodes.
    #[serde(default = "one")]
    pub nodes: u32,
    /// A multi-node task's coordination command, as --coordination.
    pub coordination: Option<String>,
    #[serde(default)]
    pub max_retries: u32,
    /// A duration such as `30s` or `10m`.
    pub timeout: Option<String>,
    /// `A-B`: this entry is an array of tasks `ID[A]` .. `ID[B]`.
    pub array: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Objects fetched into the task's directory first.
    #[serde(default)]
    pub inputs: Vec<FileInput>,
    /// Glob patterns of files to upload when it ends.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// `success` (default), `failure` or `always`.
    pub outputs_when: Option<String>,
    /// What each task needs beyond slots: `{gpus: 1, mem: 4GiB, licenses: 1}`.
    #[serde(default)]
    pub resources: BTreeMap<String, FileAmount>,
    /// A file or directory kept across attempts, as --checkpoint.
    pub checkpoint: Option<String>,
    /// As --checkpoint-interval (`5m`).
    pub checkpoint_interval: Option<String>,
}

/// A job to wait for as written: its id, or `ID:ok` / `ID:any`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FileAfter {
    Id(u64),
    Text(String),
}

/// A resource amount as written: a number, or text such as `4GiB`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FileAmount {
    Count(u64),
    Text(String),
}

/// An input: an object's path, or `{object: ..., path: ...}` to place it elsewhere.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FileInput {
    Object(String),
    Full { object: String, path: Option<String> },
}

fn one() -> u32 {
    1
}

/// A job file read, checked as a graph, and ready to send.
pub struct Loaded {
    pub file: JobFile,
    pub groups: Vec<pb::TaskGroup>,
    text: String,
    path: String,
    /// The file's directory, which relative input paths start from.
    pub dir: std::path::PathBuf,
}

impl Loaded {
    /// Adds the line where each task named in `message` is defined.
    pub fn annotate(&self, message: &str) -> String {
        let mut lines = Vec::new();
        for task in &self.file.tasks {
            let named = message.contains(&format!("'{}'", task.id)) || message.contains(&format!("'{}[", task.id));
            let in_cycle =
                message.contains("cycle") && message.split(" -> ").any(|n| n.split('[').next() == Some(&task.id));
            if named || in_cycle {
                if let Some(line) = line_of(&self.text, &task.id) {
                    lines.push(format!("'{}' at line {line}", task.id));
                }
            }
        }
        if lines.is_empty() {
            format!("{}: {message}", self.path)
        } else {
            format!("{}: {message} ({})", self.path, lines.join(", "))
        }
    }
}

/// Reads a job file for its tasks only, to add them to an open job: they are
/// checked one by one here; as a graph they are checked with the job's by the
/// coordinator (they may depend on its tasks).
pub fn load_tasks(path: &Path) -> anyhow::Result<Loaded> {
    read(path, false)
}

/// Reads and checks a job file.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    read(path, true)
}

fn read(path: &Path, whole_graph: bool) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read job file {}", path.display()))?;
    let shown = path.display().to_string();
    let file: JobFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?
    } else {
        serde_norway::from_str(&text).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut loaded = Loaded { file, groups: Vec::new(), text, path: shown, dir };
    let mut checked = Vec::new();
    for task in &loaded.file.tasks {
        let at = |what: String| loaded.annotate(&format!("task '{}': {what}", task.id));
        let timeout = match &task.timeout {
            Some(t) => Some(
                corral_types::duration::parse(t).map_err(|e| anyhow::anyhow!(at(format!("invalid timeout: {e}"))))?,
            ),
            None => None,
        };
        let array = match &task.array {
            Some(a) => Some(parse_array(a).map_err(|e| anyhow::anyhow!(at(format!("invalid array: {e}"))))?),
            None => None,
        };
        if task.command.is_empty() {
            anyhow::bail!(at("invalid command: it is empty".into()));
        }
        if task.nodes == 0 {
            anyhow::bail!(at("invalid nodes: must be at least 1".into()));
        }
        let outputs_when = match &task.outputs_when {
            Some(w) => w.parse().map_err(|e: String| anyhow::anyhow!(at(format!("invalid outputs_when: {e}"))))?,
            None => OutputsWhen::Success,
        };
        let inputs = task
            .inputs
            .iter()
            .map(|i| match i {
                FileInput::Object(object) => TaskInput { object: object.clone(), path: String::new() },
                FileInput::Full { object, path } => {
                    TaskInput { object: object.clone(), path: path.clone().unwrap_or_default() }
                }
            })
            .collect();
        let mut resources = BTreeMap::new();
        for (name, amount) in &task.resources {
            let bad = |e: String| anyhow::anyhow!(at(format!("invalid resources: {e}")));
            corral_types::resources::check_name(name).map_err(bad)?;
            let amount = match amount {
                FileAmount::Count(n) => *n,
                FileAmount::Text(t) => super::spec::resource_amount(name, t).map_err(bad)?,
            };
            resources.insert(name.clone(), amount);
        }
        let spec = TaskSpec {
            argv: task.command.clone(),
            env: task.env.clone(),
            slots: task.slots,
            nodes: task.nodes,
            coordination: task.coordination.clone(),
            max_retries: task.max_retries,
            timeout,
            inputs,
            outputs: task.outputs.clone(),
            outputs_when,
            kind: Default::default(),
            checkpoint: task.checkpoint.clone(),
            checkpoint_interval: match &task.checkpoint_interval {
                Some(t) => Some(
                    corral_types::duration::parse(t)
                        .map_err(|e| anyhow::anyhow!(at(format!("invalid checkpoint_interval: {e}"))))?,
                ),
                None => None,
            },
            resources,
            entries: Vec::new(),
        };
        checked.push(TaskGroup { id: task.id.clone(), spec, array, depends_on: task.depends_on.clone() });
    }
    // Judge the graph here too, so that its errors can point at lines.
    if loaded.file.mapreduce.is_some() {
        if !loaded.file.tasks.is_empty() {
            anyhow::bail!(loaded.annotate("invalid job: give `tasks` or `mapreduce`, not both"));
        }
        return Ok(loaded);
    }
    if whole_graph {
        if checked.is_empty() {
            anyhow::bail!(loaded.annotate("invalid tasks: the job has no tasks"));
        }
        if let Err(e) = graph::resolve(checked.clone()) {
            anyhow::bail!(loaded.annotate(&format!("invalid tasks: {e}")));
        }
    }
    loaded.groups = checked.into_iter().map(to_pb).collect();
    Ok(loaded)
}

fn to_pb(g: TaskGroup) -> pb::TaskGroup {
    let (is_array, (array_start, array_end)) = match g.array {
        Some(range) => (true, range),
        None => (false, (0, 0)),
    };
    pb::TaskGroup {
        id: g.id,
        spec: Some(pb::TaskSpec {
            argv: g.spec.argv,
            env: g.spec.env.into_iter().collect(),
            slots: g.spec.slots,
            nodes: g.spec.nodes,
            coordination: g.spec.coordination.unwrap_or_default(),
            max_retries: g.spec.max_retries,
            timeout_ms: g.spec.timeout.map_or(0, corral_types::duration::ms),
            inputs: g.spec.inputs.into_iter().map(|i| pb::TaskInput { object: i.object, path: i.path }).collect(),
            outputs: g.spec.outputs,
            outputs_when: g.spec.outputs_when.as_str().into(),
            resources: g.spec.resources.into_iter().collect(),
            checkpoint: g.spec.checkpoint.unwrap_or_default(),
            checkpoint_interval_ms: g.spec.checkpoint_interval.map_or(0, corral_types::duration::ms),
        }),
        is_array,
        array_start,
        array_end,
        depends_on: g.depends_on,
    }
}

/// The line (from 1) where the task `id` is defined: `id: ID` in YAML, `"id": "ID"`
/// in JSON.
fn line_of(text: &str, id: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim().trim_start_matches('-').trim().trim_start_matches('{').trim();
            let Some(rest) = line.strip_prefix("id:").or_else(|| line.strip_prefix("\"id\":")) else { return false };
            let value = rest.split(',').next().unwrap_or("").trim().trim_end_matches('}').trim();
            value.trim_matches(|c| c == '"' || c == '\'') == id
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(name: &str, text: &str) -> anyhow::Result<Loaded> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn a_yaml_file_with_arrays_and_dependencies_loads() {
        let loaded = load_str(
            "job.yaml",
            "name: render\npool: cpu\ntasks:\n  - id: prep\n    command: [true]\n  - id: frames\n    array: 1-3\n    command: [echo, \"{index}\"]\n    depends_on: [prep]\n    timeout: 10m\n  - id: movie\n    command: [true]\n    depends_on: [\"frames[2-3]\"]\n",
        )
        .unwrap();
        assert_eq!(loaded.file.name.as_deref(), Some("render"));
        assert_eq!(loaded.groups.len(), 3);
        assert!(loaded.groups[1].is_array);
        assert_eq!(loaded.groups[1].spec.as_ref().unwrap().timeout_ms, 600_000);
    }

    #[test]
    fn job_settings_and_task_needs_load() {
        let loaded = load_str(
            "job.yaml",
            "exit_policy: [\"3=fail\"]\nretry_delay: 1s..1m\nmax_running: 2\nconcurrency_key: k\nafter: [4, \"5:any\"]\nauto_pool: {provider: local, nodes: 1, slots: 2}\ntasks:\n  - id: a\n    command: [true]\n    resources: {gpus: 1, mem: 2GiB}\n    checkpoint: state\n    checkpoint_interval: 30s\n",
        )
        .unwrap();
        assert_eq!(loaded.file.max_running, Some(2));
        assert_eq!(loaded.file.after.len(), 2);
        assert!(loaded.file.auto_pool.is_some());
        let spec = loaded.groups[0].spec.as_ref().unwrap();
        assert_eq!(spec.resources.get("mem"), Some(&(2u64 << 30)));
        assert_eq!((spec.checkpoint.as_str(), spec.checkpoint_interval_ms), ("state", 30_000));
        let bad = load_str("job.yaml", "tasks:\n  - id: a\n    command: [true]\n    resources: {GPU: 1}\n");
        assert!(bad.err().unwrap().to_string().contains("invalid resources"));
    }

    #[test]
    fn errors_point_at_lines() {
        let syntax = load_str("job.yaml", "tasks:\n  - id: a\n    command: [true\n").err().unwrap().to_string();
        assert!(syntax.contains("line"), "{syntax}");
        let json =
            load_str("job.json", "{\"tasks\": [\n {\"id\": \"a\",\n \"command\": [\"true\"],}\n]}").err().unwrap();
        assert!(json.to_string().contains("line 3"), "{json}");
        let unknown = load_str("job.yaml", "tasks:\n  - id: a\n    command: [true]\n    depends_on: [ghost]\n")
            .err()
            .unwrap()
            .to_string();
        assert!(unknown.contains("'ghost'") && unknown.contains("'a' at line 2"), "{unknown}");
        let cycle = load_str(
            "job.yaml",
            "tasks:\n  - id: a\n    command: [true]\n    depends_on: [b]\n  - id: b\n    command: [true]\n    depends_on: [a]\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            cycle.contains("cycle") && cycle.contains("'a' at line 2") && cycle.contains("'b' at line 5"),
            "{cycle}"
        );
        let field = load_str("job.yaml", "tasks:\n  - id: a\n    comand: [true]\n").err().unwrap().to_string();
        assert!(field.contains("comand") && field.contains("line"), "{field}");
    }
}
