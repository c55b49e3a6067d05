//! The coordinator's domain model: the shared vocabulary of `corral-types` (ids,
//! states, outcomes, task specs, re-exported here so the coordinator names them in one
//! way) and the specs only the coordinator holds: pools, jobs, and what agents report.
//! Generated protobuf types never reach past [`crate::convert`]; everything inside
//! the coordinator speaks these.

use std::sync::Arc;
use std::time::Duration;

pub use corral_types::array::Indices;
use corral_types::graph::Graph;
pub use corral_types::ids::*;
pub use corral_types::policy::{Exit, ExitAction, JobPolicy, Throttle};
pub use corral_types::resources::Resources;
pub use corral_types::spec::*;
pub use corral_types::words::*;

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
    /// The indices of an array listed with gaps (`--array 1,3,5-9:2`): then its
    /// tasks are these, between `first_index` and `last_index`; `None` for every
    /// index of that range.
    pub array: Option<Arc<Indices>>,
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
    /// No task starts before this wall-clock time (ms since the Unix epoch), across
    /// restarts (`job submit --begin`).
    pub begin_at_ms: Option<u64>,
    /// The schedule that made it, and for which slot.
    pub schedule: Option<ScheduledFor>,
    /// The template it was dispatched from (by hand, over HTTP, or by a trigger).
    pub template: Option<TemplateName>,
    /// Exit rules, retry delays, throttles.
    pub policy: JobPolicy,
    /// Jobs that must end first (`job submit --after`).
    pub after: Vec<After>,
    /// A pool made for this job alone (`--auto-pool`), deleted with its nodes when
    /// the job ends; once the job is submitted, `pool` names it.
    pub auto_pool: Option<Box<PoolSpec>>,
}

/// A job another waits for (Slurm's `afterok`/`afterany`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    pub job: JobId,
    /// Any end will do; else only `completed` (another end cancels the waiting job).
    pub any: bool,
}

/// The run of a schedule a job is.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledFor {
    pub schedule: ScheduleName,
    /// The slot it was made for (ms since the Unix epoch); for a run started by hand
    /// (`schedule trigger`), when it was started.
    pub slot_ms: u64,
}

/// A schedule as its creator asked: when, what to do with overlapping and missed
/// slots, and the job each slot makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub name: ScheduleName,
    pub cadence: crate::cadence::Cadence,
    pub overlap: Overlap,
    /// Slots missed (coordinator down, schedule paused) by at most this long still run.
    pub catchup_window: Duration,
    /// Each slot fires up to this long after its time (a stable offset per slot).
    pub jitter: Duration,
    /// No slot before this (ms since the Unix epoch).
    pub start_at_ms: Option<u64>,
    /// No slot after this.
    pub end_at_ms: Option<u64>,
    /// The job every slot makes (its `owner` is the schedule's).
    pub job: JobSpec,
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

/// Building a spec: [`JobSpec::new`] and the `with_*` steps, then struct update for
/// the rest (`JobSpec { owner, ..JobSpec::new(pool, task).with_range(1, 10) }`).
impl JobSpec {
    /// One task, index 0, running `task` on `pool`; nothing else set.
    pub fn new(pool: PoolName, task: TaskSpec) -> Self {
        JobSpec {
            pool,
            name: String::new(),
            priority: 0,
            task,
            first_index: 0,
            last_index: 0,
            array: None,
            graph: None,
            open: false,
            notify: None,
            owner: String::new(),
            max_output: 0,
            begin_at_ms: None,
            schedule: None,
            template: None,
            policy: JobPolicy::default(),
            after: Vec::new(),
            auto_pool: None,
        }
    }

    /// An array of tasks `first..=last` (both included).
    pub fn with_range(mut self, first: u32, last: u32) -> Self {
        (self.first_index, self.last_index, self.array) = (first.min(last), first.max(last), None);
        self
    }

    /// An array of the indices listed; kept as a range when they are one.
    pub fn with_indices(self, indices: Indices) -> Self {
        let spec = self.with_range(indices.first(), indices.last());
        JobSpec { array: (!indices.is_range()).then(|| Arc::new(indices)), ..spec }
    }

    /// A graph job: tasks `0..n` as the graph numbers them; `task` becomes the
    /// first's spec (a placeholder when the graph is empty, as an open job's is).
    pub fn with_graph(mut self, graph: Arc<Graph>) -> Self {
        if let Some(first) = (!graph.is_empty()).then(|| graph.spec(0).clone()) {
            self.task = first;
        }
        let last = (graph.len() as u32).saturating_sub(1);
        JobSpec { graph: Some(graph), ..self.with_range(0, last) }
    }

    pub fn named(self, name: impl Into<String>) -> Self {
        JobSpec { name: name.into(), ..self }
    }

    pub fn with_priority(self, priority: i32) -> Self {
        JobSpec { priority, ..self }
    }
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
        match (&self.graph, &self.array) {
            (Some(graph), _) => graph.len() as u32,
            (None, Some(array)) => array.len() as u32,
            (None, None) => self.last_index - self.first_index + 1,
        }
    }

    /// Its task indices in order: the task at each offset of the job's task list.
    pub fn indices(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match (&self.graph, &self.array) {
            // An open job's graph may be empty (and `0..=0` is not).
            (Some(graph), _) => Box::new(0..graph.len() as u32),
            (None, Some(array)) => Box::new(array.iter()),
            (None, None) => Box::new(self.first_index..=self.last_index),
        }
    }

    /// The index of the task at `offset` of the job's task list.
    pub fn index_at(&self, offset: usize) -> Option<u32> {
        match &self.array {
            Some(array) => array.at(offset as u64),
            None => u32::try_from(offset).ok().and_then(|o| self.first_index.checked_add(o)),
        }
        .filter(|&index| self.offset_of(index).is_some())
    }

    /// Where task `index` is in the job's task list, if the job has it.
    pub fn offset_of(&self, index: u32) -> Option<usize> {
        match (&self.graph, &self.array) {
            (Some(graph), _) => (index < graph.len() as u32).then_some(index as usize),
            (None, Some(array)) => array.offset_of(index).map(|o| o as usize),
            (None, None) => {
                (index <= self.last_index).then(|| index.checked_sub(self.first_index).map(|o| o as usize))?
            }
        }
    }

    /// Its indices as a user writes them: `1-100`, `1,3,5-9:2`.
    pub fn indices_text(&self) -> String {
        match &self.array {
            Some(array) => array.to_string(),
            None if self.first_index == self.last_index => self.first_index.to_string(),
            None => format!("{}-{}", self.first_index, self.last_index),
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

    /// Its task specs: the one of a plain job or array, or each group's in a graph.
    pub fn task_specs(&self) -> Vec<&TaskSpec> {
        match &self.graph {
            Some(graph) => graph.groups.iter().map(|g| &g.spec).collect(),
            None => vec![&self.task],
        }
    }

    /// The distinct resource requests of its tasks (none for tasks that ask for none).
    pub fn resource_requests(&self) -> Vec<&Resources> {
        let mut wants: Vec<&Resources> = match &self.graph {
            Some(graph) => graph.groups.iter().map(|g| &g.spec.resources).collect(),
            None => vec![&self.task.resources],
        };
        wants.retain(|r| !r.is_empty());
        wants.dedup();
        wants
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
    /// The order the kept output came in.
    pub order: corral_types::order::Runs,
}

/// A piece of a task's stdout or stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct LogChunk {
    pub attempt: AttemptRef,
    /// 0: the task's own output (a multi-node task's primary's); R: rank R's.
    pub rank: u32,
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
    /// What it has beyond slots; `mem` is always there (default: `memory_bytes`).
    pub resources: Resources,
}
