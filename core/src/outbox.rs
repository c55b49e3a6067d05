//! What the core's entry points write: the [`Outbox`] of store rows, agent messages,
//! provider orders and callbacks, and the [`Snapshot`] it is rebuilt from.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use corral_types::paths;

use super::{autoscale, keys};
use crate::model::*;

/// A task to start, as the agent receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub attempt: AttemptRef,
    /// The task's id in its job and its array index.
    pub name: String,
    pub array_index: u32,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub slots: u32,
    pub timeout: Option<Duration>,
    pub inputs: Vec<TaskInput>,
    pub outputs: Vec<String>,
    pub outputs_when: OutputsWhen,
    /// Where its outputs go in the store.
    pub output_prefix: String,
    /// For map/reduce tasks: what the agent does around the command.
    pub work: Work,
    /// The most of stdout, and of stderr, to ship.
    pub max_output: u64,
    /// Its checkpoint: the path in its directory and the object it is kept as.
    pub checkpoint: Option<(String, String)>,
    pub checkpoint_interval: Option<Duration>,
    /// Sent ahead of a free slot: its agent says when it starts.
    pub sent_ahead: bool,
    /// For a multi-node task: which rank this node is, and where all of them are.
    pub gang: Option<crate::gangs::Place>,
    /// Its coordination command, run on every rank's node before the command.
    pub coordination: Option<String>,
}

/// The shuffle work around a map/reduce task's command.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    Command,
    Map { segments: Vec<Segment>, reduce_tasks: u32, combiner: Option<String>, output_prefix: String },
    Reduce { inputs: Vec<String>, output: String },
}

impl Work {
    /// The work of task `array_index` of `spec`, in job `job`.
    pub fn of(job: JobId, spec: &TaskSpec, array_index: u32) -> Work {
        match &spec.kind {
            TaskKind::Command => Work::Command,
            TaskKind::Map { splits, reduce_tasks, combiner } => Work::Map {
                segments: splits.get(array_index as usize).cloned().unwrap_or_default(),
                reduce_tasks: *reduce_tasks,
                combiner: combiner.clone(),
                output_prefix: paths::map_outputs(job, array_index),
            },
            TaskKind::Reduce { map_tasks } => Work::Reduce {
                inputs: (0..*map_tasks).map(|m| paths::map_output(job, m, array_index)).collect(),
                output: paths::reduce_output(job, array_index),
            },
        }
    }
}

/// A message for one agent.
#[derive(Debug, Clone, PartialEq)]
pub enum ToAgent {
    Assign(Box<Assignment>),
    /// Kill this attempt: cancelled, or not the current one.
    Kill(AttemptRef),
    /// The result of this attempt is durable; the agent may forget it.
    Ack(AttemptRef),
    /// The node is unknown or lost: kill everything and register again.
    Reregister(String),
    /// The node is removed: kill everything and exit.
    Shutdown(String),
}

/// An order for the provider that starts and stops nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderOp {
    /// Start an agent that registers with `launch_id = node`: on this host, by
    /// running the pool's add command, or in a container.
    Launch { node: NodeId, pool: PoolName, slots: u32, how: Launcher },
    /// Stop the agent of this node (its process, if the provider knows it), run the
    /// pool's remove command, or remove its container.
    Stop { node: NodeId, pool: PoolName, pid: u32, how: Launcher },
    /// At start: remove whatever this coordinator's providers left running for a
    /// node that is not one of these live ones (a removal cut off by a crash).
    /// Nodes from `first_new` on are created after this order and never swept.
    Sweep { live: BTreeSet<NodeId>, first_new: u64 },
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub id: NodeId,
    pub pool: PoolName,
    pub hostname: String,
    pub slots: u32,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub pid: u32,
    pub status: NodeStatus,
    pub reason: Option<NodeReason>,
    pub registered_at_ms: u64,
    /// What it has beyond slots (`gpus`, `mem`, named counters).
    pub resources: Resources,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub submitted_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub delivery: Delivery,
    /// Why it ended so (see [`super::Job::reason`]).
    pub reason: Option<String>,
}

/// A task's row; tasks that never left their initial state have none.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub key: TaskKey,
    pub state: TaskState,
    pub attempt: u32,
    pub failures: u32,
    pub node_losses: u32,
    /// Why it is in this state, when that is not obvious (`upstream_failed: ...`).
    pub reason: Option<String>,
}

/// One change to make durable.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// A finished job deleted: its record, tasks, attempts, logs and events.
    DeleteJob(JobId),
    /// An idempotency key and the job it made (with that job's InsertJob).
    PutIdempotencyKey(keys::KeyRecord),
    /// Keys recorded before this time are forgotten.
    ExpireIdempotencyKeys {
        before_ms: u64,
    },
    /// A dashboard sign-in made (see [`crate::records::SessionRecord`]).
    PutSession(crate::records::SessionRecord),
    /// Dashboard sign-ins ended (signed out, or pushed out by newer ones), by key.
    DeleteSessions(Vec<String>),
    /// A token made or replaced (by name).
    PutToken(crate::records::TokenRecord),
    /// A token revoked, with the node credentials issued under it.
    DeleteToken {
        id: String,
        name: String,
    },
    /// The secret a node registered with proves itself by.
    PutNodeCredential(crate::records::NodeCredential),
    /// An object a client put (with its size) or deleted (none). Not stored here:
    /// the object store holds it; this makes its event.
    ObjectChanged {
        path: String,
        size: Option<u64>,
    },
    /// A lost or removed node's secret, forgotten.
    ForgetNodeCredential(NodeId),
    /// The events of the changes that follow were asked for by this token (none:
    /// by the coordinator itself). Not stored: it marks the events.
    Actor(Option<String>),
    /// A schedule made or changed (its cursor, counts, buffer); `change` names the
    /// event it makes, if any (moving the cursor makes none: the job it makes does).
    PutSchedule {
        record: super::schedules::ScheduleRecord,
        change: super::schedules::Change,
    },
    /// A schedule deleted, with the record of its slots.
    DeleteSchedule(ScheduleName),
    /// The job a schedule's slot made. Its key is the slot: a second job for one
    /// slot would break it and roll back the batch that made it.
    InsertScheduleSlot {
        schedule: ScheduleName,
        slot_ms: u64,
        job: JobId,
    },
    /// Slot records older than this are forgotten (with the jobs of that age).
    PruneScheduleSlots {
        before_ms: u64,
    },
    PutTemplate(super::templates::Template),
    DeleteTemplate(TemplateName),
    /// A trigger made or changed; `change` names the event it makes, if any.
    PutTrigger {
        record: super::triggers::TriggerRecord,
        change: super::triggers::Change,
    },
    /// A trigger deleted, with its cursor.
    DeleteTrigger(TriggerName),
    /// A polling trigger dealt with this version of an object (none: the object
    /// is gone from the listing).
    SeeTriggerObject {
        trigger: TriggerName,
        object: String,
        version: Option<String>,
    },
    PutPool {
        spec: PoolSpec,
        created_at_ms: u64,
        /// Being deleted: its nodes are on their way out.
        deleting: bool,
    },
    DeletePool(PoolName),
    PutNode(NodeRecord),
    InsertJob(JobRecord),
    SetJobState {
        id: JobId,
        state: JobState,
        finished_at_ms: Option<u64>,
        /// Why it ended so, where that is not obvious.
        reason: Option<String>,
    },
    PutTask(TaskRecord),
    /// Tasks added to an open graph job; `groups` follow its existing ones.
    AddTaskGroups {
        job: JobId,
        first_group: u32,
        groups: Vec<corral_types::graph::TaskGroup>,
        last_index: u32,
    },
    /// An open job was closed.
    CloseJob(JobId),
    /// An old attempt of a continuous job's replica forgotten, with the output of
    /// its `ranks` ranks: a replica that restarts forever keeps its last
    /// [`crate::continuous::KEPT_ATTEMPTS`], not all of them.
    ForgetAttempt {
        attempt: AttemptRef,
        ranks: u32,
    },
    /// A continuous job's replicas changed (`job scale`): its policy holds the
    /// count, and `last_index` grew with it (replicas scaled down stay, cancelled).
    ScaleJob {
        id: JobId,
        policy: JobPolicy,
        last_index: u32,
    },
    /// A job's priority changed (its queued tasks' place in the pool's order).
    SetJobPriority {
        id: JobId,
        priority: i32,
    },
    /// How the job's completion callback is going.
    SetDelivery {
        job: JobId,
        delivery: Delivery,
    },
    /// An autoscaling decision that changed a pool's size.
    ScaleRecord {
        pool: PoolName,
        record: autoscale::Record,
    },
    StartAttempt {
        attempt: AttemptRef,
        node: NodeId,
        /// A multi-node task's other nodes, rank 1 onwards.
        members: Vec<NodeId>,
        started_at_ms: u64,
        /// When the task was queued (not stored: for the scheduling latency).
        queued_at_ms: u64,
        /// The devices it was given (`CORRAL_GPUS`).
        gpus: Vec<u32>,
    },
    EndAttempt {
        attempt: AttemptRef,
        /// When the agent actually started it, if it says (it may have queued it).
        started_at_ms: Option<u64>,
        outcome: Outcome,
        exit_code: Option<i32>,
        signal: Option<i32>,
        message: String,
        ended_at_ms: u64,
        /// The order of its stdout and stderr, when it wrote to both.
        order: Option<corral_types::order::Runs>,
    },
    Log(LogChunk),
}

/// A job's completion callback to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub job: JobId,
    pub url: String,
    /// The JSON summary to post.
    pub body: String,
}

/// What the core wants done outside itself, in order.
#[derive(Debug, Default)]
pub struct Outbox {
    pub store: Vec<StoreOp>,
    pub agents: Vec<(NodeId, ToAgent)>,
    pub provider: Vec<ProviderOp>,
    pub notify: Vec<Notification>,
    /// Object prefixes to delete once this batch is durable (a deleted job's
    /// outputs and its dispatch's payload).
    pub delete_objects: Vec<String>,
    /// Credentials this batch makes or ends; the shell, which holds the secrets,
    /// carries them out (see [`Credential`]).
    pub credentials: Vec<Credential>,
}

/// A change to who may speak for a pool or a node. The core decides it where the
/// pool or node changes; the shell holds the secrets and carries it out: the
/// record goes into the same batch, and whatever touches a file waits until the
/// batch is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A pool whose provider starts nodes was made: the agents it starts join with
    /// a token bound to it, kept in a file the coordinator passes them.
    MintPoolToken(PoolName),
    /// A node was lost or removed: its secret stops opening streams and object
    /// calls (one that comes back registers again).
    RetireNode(NodeId),
    /// A pool was deleted: its agent token, and the file that holds it, go with it.
    RevokePoolToken(PoolName),
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty()
            && self.store.is_empty()
            && self.agents.is_empty()
            && self.provider.is_empty()
            && self.notify.is_empty()
            && self.delete_objects.is_empty()
    }
}

/// A schedule as stored, with its last runs (slot, job), oldest first.
pub type StoredSchedule = (super::schedules::ScheduleRecord, Vec<(u64, JobId)>);

/// Everything the store knows, to rebuild the core after a restart.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Each pool's spec, creation time and whether it is being deleted.
    pub pools: Vec<(PoolSpec, u64, bool)>,
    /// The last autoscaling records of each pool, oldest first.
    pub scale_log: Vec<(PoolName, autoscale::Record)>,
    pub nodes: Vec<NodeRecord>,
    pub jobs: Vec<JobRecord>,
    pub tasks: Vec<TaskRecord>,
    /// Attempts with no end: the task was running there when the coordinator stopped.
    pub open_attempts: Vec<OpenAttempt>,
    /// The idempotency keys of the last day, oldest first.
    pub keys: Vec<keys::KeyRecord>,
    /// Every schedule, with its last runs (slot, job), oldest first.
    pub schedules: Vec<StoredSchedule>,
    pub templates: Vec<super::templates::Template>,
    /// Every trigger, with a polling one's cursor (object, version).
    pub triggers: Vec<(super::triggers::TriggerRecord, BTreeMap<String, String>)>,
}

/// An attempt the store says was running, as a restart finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAttempt {
    pub attempt: AttemptRef,
    pub node: NodeId,
    /// A multi-node task's other nodes, rank 1 onwards.
    pub members: Vec<NodeId>,
    pub started_at_ms: u64,
    /// The devices it was given.
    pub gpus: Vec<u32>,
}
