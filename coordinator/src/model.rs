//! Domain types: ids, states and specs, with the words they are known by on the wire,
//! in the store and in the CLI. Generated protobuf types never reach past
//! [`crate::convert`]; everything inside the coordinator speaks these.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use crate::error::Invalid;
use crate::graph::Graph;

/// A job's id: a number counted up from 1, unique for the life of a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A task is named by its job and its index in the job (the array index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub job: JobId,
    pub index: u32,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.job, self.index)
    }
}

/// One run of a task: the attempt number fences reports from earlier runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptRef {
    pub task: TaskKey,
    pub attempt: u32,
}

/// A node's id, `n-<sequence>`: never reused, so a node that comes back after being
/// declared lost is a different node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn from_seq(seq: u64) -> Self {
        NodeId(format!("n-{seq}"))
    }

    /// The sequence number inside the id, if it has the coordinator's shape.
    pub fn seq(&self) -> Option<u64> {
        self.0.strip_prefix("n-")?.parse().ok()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pool's name: 1 to 63 characters of `a-z 0-9 - _`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolName(String);

impl PoolName {
    pub fn parse(field: &'static str, name: &str) -> Result<Self, Invalid> {
        if name.is_empty() {
            return Err(Invalid::new(field, "must not be empty"));
        }
        if name.len() > 63 {
            return Err(Invalid::new(field, "must be at most 63 characters"));
        }
        let valid = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        let starts_well = name.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !valid || !starts_well {
            return Err(Invalid::new(
                field,
                format!(
                    "'{name}' is not a valid pool name: use lower-case letters, digits, '-' and '_', starting with a letter or digit"
                ),
            ));
        }
        Ok(PoolName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Declares a string-named enum: the one place its words are spelled.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word used on the wire, in the store and in the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(format!(
                        "'{s}' is not one of: {}",
                        [$($word),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// What a token may do. `read` < `submit` < `admin`; `agent` stands apart: it may
    /// only register nodes (an `admin` token may too).
    Role {
        Read = "read",
        Submit = "submit",
        Admin = "admin",
        Agent = "agent",
    }
);

named_enum!(
    /// Where a task is in its life. `waiting` is for dependencies (none yet in v1 jobs).
    TaskState {
        Waiting = "waiting",
        Ready = "ready",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

impl TaskState {
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled)
    }

    /// The allowed transitions, in one place.
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, next),
            (Waiting, Ready | Cancelled)
                | (Ready, Running | Cancelled)
                | (Running, Ready | Succeeded | Failed | Cancelled)
        )
    }
}

named_enum!(
    /// A node as users see it. `idle` and `running` are one stored state (`up`), told
    /// apart by whether the node has tasks.
    NodeState {
        Starting = "starting",
        Idle = "idle",
        Running = "running",
        Draining = "draining",
        Lost = "lost",
        Removed = "removed",
    }
);

named_enum!(
    /// Why a node stopped being usable.
    NodeReason {
        /// No message within the heartbeat timeout (a dead or hung host).
        HeartbeatTimeout = "heartbeat_timeout",
        /// The agent process the local provider started has exited.
        ProcessExited = "process_exited",
        /// The local provider could not start the agent.
        LaunchFailed = "launch_failed",
        /// The agent did not register within the start timeout.
        StartTimeout = "start_timeout",
        /// The pool shrank and this node was chosen to go.
        ScaledDown = "scaled_down",
        /// Its pool was deleted.
        PoolDeleted = "pool_deleted",
        /// The coordinator stopped the nodes it had started when it shut down.
        CoordinatorShutdown = "coordinator_shutdown",
        /// A user removed it (`corral node remove`).
        Removed = "removed",
        /// Its pool's start task failed on it: it takes no work.
        StartTaskFailed = "start_task_failed",
    }
);

named_enum!(
    /// What happens to the tasks of a busy node that is removed (Azure Batch's
    /// `nodeDeallocationOption`).
    RemovalPolicy {
        /// It takes no new task and goes when its tasks have ended.
        TaskCompletion = "task-completion",
        /// It goes now; its tasks go back to the queue, not counted against retries.
        Requeue = "requeue",
        /// It goes now; its tasks are killed and fail.
        Terminate = "terminate",
    }
);

named_enum!(
    /// A node as the coordinator keeps it. Users see [`NodeState`], which splits `up`
    /// into `idle` and `running`.
    NodeStatus {
        /// Started by a provider, not yet registered.
        Starting = "starting",
        /// Registered and taking work.
        Up = "up",
        /// Takes no new work; finishes what it runs.
        Draining = "draining",
        /// Declared lost; its work went back to the queue.
        Lost = "lost",
        /// Gone on purpose.
        Removed = "removed",
    }
);

impl NodeStatus {
    /// Starting, up or draining: it counts toward its pool's size.
    pub fn is_live(self) -> bool {
        matches!(self, NodeStatus::Starting | NodeStatus::Up | NodeStatus::Draining)
    }
}

named_enum!(
    JobState {
        Active = "active",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

named_enum!(
    /// How a pool gets its nodes.
    Provider {
        /// Agents join by themselves.
        Static = "static",
        /// The coordinator starts `corral-agent` processes on its own host.
        Local = "local",
        /// The coordinator runs the pool's shell commands to add and remove nodes.
        Command = "command",
        /// The coordinator starts each node as a container through the Docker Engine API.
        Docker = "docker",
    }
);

impl Provider {
    /// Whether the coordinator starts this pool's nodes (and so can size it).
    pub fn starts_nodes(self) -> bool {
        self != Provider::Static
    }
}

named_enum!(
    /// Which node a task goes to.
    Fill {
        /// The node with the most free slots: work spreads evenly.
        Spread = "spread",
        /// The busiest node that still fits: idle nodes stay idle.
        Pack = "pack",
    }
);

named_enum!(
    /// How an attempt ended.
    Outcome {
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
        NodeLost = "node_lost",
        SpawnFailed = "spawn_failed",
    }
);

impl Outcome {
    /// Whether this outcome uses up one of the task's retries.
    pub fn counts_against_retries(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut | Outcome::SpawnFailed)
    }
}

/// What a pool is, as its creator asked.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    pub name: PoolName,
    pub slots_per_node: u32,
    pub provider: Provider,
    pub target_nodes: u32,
    pub fill: Fill,
    /// Sized to its queue, between these bounds (local pools).
    pub autoscale: Option<Autoscale>,
    /// What removing a busy node does to its tasks.
    pub removal: RemovalPolicy,
    /// The add and remove commands of a `command` pool.
    pub commands: Option<ProviderCommands>,
    /// The image, network and limits of a `docker` pool's containers.
    pub docker: Option<DockerSpec>,
    /// Run on every node as it joins, before it takes work.
    pub start_task: Option<String>,
}

impl PoolSpec {
    /// How the coordinator starts and stops this pool's nodes; `None` for a static pool.
    pub fn launcher(&self) -> Option<Launcher> {
        match self.provider {
            Provider::Static => None,
            Provider::Local => Some(Launcher::Local),
            Provider::Command => self.commands.clone().map(Launcher::Command),
            Provider::Docker => self.docker.clone().map(Launcher::Docker),
        }
    }
}

/// What a provider needs to start or stop one node of a pool.
#[derive(Debug, Clone, PartialEq)]
pub enum Launcher {
    Local,
    Command(ProviderCommands),
    Docker(DockerSpec),
}

/// How a `docker` pool's containers are made.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DockerSpec {
    /// An image with `corral-agent` on its PATH (see `docker/agent-image.sh`).
    pub image: String,
    /// The Docker network the containers join.
    pub network: String,
    /// Memory limit of each container, in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU limit of each container, in billionths of a CPU (Docker's NanoCpus).
    pub nano_cpus: Option<u64>,
    /// Where the agents in the containers reach the coordinator; by default
    /// `http://host.docker.internal:<port>`, the Docker host's gateway.
    pub coordinator_url: Option<String>,
}

/// How a `command` pool adds and removes nodes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProviderCommands {
    pub add: String,
    pub remove: String,
    #[serde(with = "millis")]
    pub timeout: Duration,
}

/// How an autoscaled pool follows its queue.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// A node is removed only after being idle this long.
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// At most this many nodes are started an evaluation.
    pub step: u32,
    /// No shrinking within this long of the last change.
    #[serde(with = "millis")]
    pub cooldown: Duration,
}

/// What each task of a job runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub slots: u32,
    pub max_retries: u32,
    #[serde(with = "opt_millis")]
    pub timeout: Option<Duration>,
    /// Objects fetched into the task's directory before it starts.
    #[serde(default)]
    pub inputs: Vec<TaskInput>,
    /// Glob patterns of files uploaded from its directory when it ends.
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub outputs_when: OutputsWhen,
    /// A plain command, or one side of a map/reduce shuffle around it.
    #[serde(default)]
    pub kind: TaskKind,
}

/// What the agent does around a task's command.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TaskKind {
    /// Run it.
    #[default]
    Command,
    /// Feed it split `array index` of the input; partition, sort and store its output.
    Map { splits: Vec<Vec<Segment>>, reduce_tasks: u32, combiner: Option<String> },
    /// Feed it partition `array index`, merged from every map task's output.
    Reduce { map_tasks: u32 },
}

/// A byte range of an input object.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub object: String,
    pub offset: u64,
    pub length: u64,
}

/// An object a task needs, and where it goes in the task's directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskInput {
    pub object: String,
    pub path: String,
}

/// When a task's outputs are uploaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputsWhen {
    #[default]
    Success,
    Failure,
    Always,
}

impl OutputsWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputsWhen::Success => "success",
            OutputsWhen::Failure => "failure",
            OutputsWhen::Always => "always",
        }
    }
}

impl FromStr for OutputsWhen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "success" => Ok(OutputsWhen::Success),
            "failure" => Ok(OutputsWhen::Failure),
            "always" => Ok(OutputsWhen::Always),
            _ => Err(format!("'{}' is not one of: success, failure, always", crate::error::shown(s))),
        }
    }
}

impl TaskSpec {
    /// A spec that runs `argv` with one slot and nothing else set.
    pub fn command(argv: Vec<String>) -> Self {
        TaskSpec {
            argv,
            env: BTreeMap::new(),
            slots: 1,
            max_retries: 0,
            timeout: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            outputs_when: OutputsWhen::Success,
            kind: TaskKind::Command,
        }
    }

    /// The inputs for one array index: `{index}` replaced.
    pub fn inputs_for(&self, index: u32) -> Vec<TaskInput> {
        let index = index.to_string();
        self.inputs
            .iter()
            .map(|i| TaskInput { object: i.object.replace("{index}", &index), path: i.path.replace("{index}", &index) })
            .collect()
    }

    /// The argv for one array index: `{index}` replaced in every argument.
    pub fn argv_for(&self, index: u32) -> Vec<String> {
        let index = index.to_string();
        self.argv
            .iter()
            .map(|arg| if arg.contains("{index}") { arg.replace("{index}", &index) } else { arg.clone() })
            .collect()
    }
}

/// The largest job one submission may create.
pub const MAX_TASKS_PER_JOB: u64 = 10_000_000;

/// A job as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub pool: PoolName,
    pub name: String,
    pub priority: i32,
    /// What every task runs, for array jobs; for graph jobs, the first task's.
    pub task: TaskSpec,
    /// Inclusive range of task indices; a plain job is `0..=0`, a graph `0..=n-1`.
    pub first_index: u32,
    pub last_index: u32,
    /// Named tasks with dependencies, for graph jobs.
    pub graph: Option<Arc<Graph>>,
    /// Takes more tasks until closed, and does not end before (graph jobs only).
    pub open: bool,
    /// Where to POST a summary when the job ends.
    pub notify: Option<String>,
    /// The name of the token that submitted it.
    pub owner: String,
    /// The most of each task's stdout, and of its stderr, that is kept; 0 for the
    /// coordinator's default.
    pub max_output: u64,
}

/// How a job's completion callback is going.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// Posts tried so far.
    pub attempts: u32,
    /// Why the last one failed.
    pub last_error: Option<String>,
    /// When the endpoint accepted it.
    pub delivered_at_ms: Option<u64>,
}

impl JobSpec {
    /// The most of each task's stdout and stderr that is kept.
    pub fn max_output_or(&self, default: u64) -> u64 {
        if self.max_output == 0 {
            default
        } else {
            self.max_output
        }
    }

    pub fn task_count(&self) -> u32 {
        match &self.graph {
            Some(graph) => graph.len() as u32,
            None => self.last_index - self.first_index + 1,
        }
    }

    /// What task `index` runs.
    pub fn task_spec(&self, index: u32) -> &TaskSpec {
        match &self.graph {
            Some(graph) => graph.spec(index),
            None => &self.task,
        }
    }

    /// The task's id in its job (`CORRAL_TASK_ID`): its name in a graph, else its index.
    pub fn task_name(&self, index: u32) -> String {
        match &self.graph {
            Some(graph) => graph.name(index),
            None => index.to_string(),
        }
    }

    /// Its array index (`CORRAL_TASK_INDEX`, `{index}`).
    pub fn array_index(&self, index: u32) -> u32 {
        match &self.graph {
            Some(graph) => graph.array_index(index),
            None => index,
        }
    }

    /// The most slots any of its tasks needs.
    pub fn max_slots(&self) -> u32 {
        match &self.graph {
            Some(graph) => graph.groups.iter().map(|g| g.spec.slots).max().unwrap_or(1),
            None => self.task.slots,
        }
    }
}

/// What an agent reports about a finished attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub attempt: AttemptRef,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub message: String,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    /// How much the task wrote to stdout and to stderr.
    pub written: [u64; 2],
}

/// A piece of a task's stdout or stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct LogChunk {
    pub attempt: AttemptRef,
    pub stderr: bool,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// What an agent says about itself when it registers.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub pool: PoolName,
    pub hostname: String,
    pub slots: u32,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub pid: u32,
    pub launch_id: Option<NodeId>,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_checked() {
        assert!(PoolName::parse("pool", "cpu-1").is_ok());
        for bad in ["", "-x", "Upper", "a b", &"x".repeat(64)] {
            let err = PoolName::parse("pool", bad).unwrap_err();
            assert_eq!(err.field, "pool");
        }
    }

    #[test]
    fn words_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
        }
        let err = "runing".parse::<TaskState>().unwrap_err();
        assert!(err.contains("running"), "{err}");
    }

    #[test]
    fn index_is_substituted() {
        let spec = TaskSpec::command(vec!["echo".into(), "in-{index}.txt".into(), "{index}{index}".into()]);
        assert_eq!(spec.argv_for(7), vec!["echo", "in-7.txt", "77"]);
    }
}
