//! The coordinator's decisions, as plain synchronous functions over owned state.
//!
//! Nothing here awaits, reads the clock, or touches a socket or a disk, and the crate
//! graph says so: this crate depends on the vocabulary (`corral-types`) and on pure
//! libraries (cron, time zones, globs), never on tonic, tokio, rusqlite or protobuf.
//! Every entry point takes `now` and writes what must happen outside into an
//! [`Outbox`] (rows for the store, messages for agents, orders for providers). The
//! coordinator's runtime makes the store rows durable first and only then sends the
//! messages, so nothing leaves the coordinator that a crash could take back.
//!
//! First the words: [`model`] (the vocabulary and the specs the coordinator holds),
//! [`error`] (what a decision refuses) and [`records`] (credentials as stored).
//!
//! The entry points are grouped by subject: [`pools`] (create, resize, delete, local
//! reconciliation), [`credentials`] (the checks on tokens that name a pool),
//! [`owners`] (who may change a job, schedule, template or trigger), [`nodes`] (register, hello, heartbeat, loss, drain, the tick),
//! [`jobs`] (submit, cancel, results, graphs), `open_jobs` (tasks added until
//! closed), `output` (whose log chunks are kept, and how much), [`after`] (jobs
//! waiting for jobs), [`retries`] (exit rules,
//! retry delays, `job retry`), [`schedule`] (tasks onto slots, within throttles),
//! [`gangs`] (multi-node tasks: whole nodes at once, held nodes, backfill),
//! `admission` (what a job must be to be accepted),
//! [`schedules`] (jobs made on a [`cadence`]: cron or interval),
//! [`templates`] (jobs made by a dispatch), [`triggers`] (dispatches for new objects),
//! [`explain`] (why a task is not running), [`restore`] (from the store, after a
//! restart) and [`check`] (the invariants).
//! What they write is in [`outbox`]; a task's state changes only in `transitions`,
//! and what users see of a pool is computed in [`views`].

pub mod error;
pub mod model;
pub mod records;

mod admission;
mod after;
pub mod autoscale;
pub mod cadence;
mod check;
mod continuous;
mod counts;
pub mod credentials;
mod explain;
pub mod gangs;
mod jobs;
pub mod keys;
mod nodes;
mod open_jobs;
pub mod outbox;
mod output;
pub mod owners;
mod pools;
mod priorities;
mod restore;
mod retries;
mod schedule;
pub mod schedules;
pub mod templates;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod transitions;
pub mod triggers;
pub mod views;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::model::*;

pub use counts::Counts;
pub use error::{Error, Result};
pub use nodes::Held;
pub use outbox::*;
pub use retries::RetrySelection;

/// The knobs of the core; the binary fills them from flags, tests build them directly.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How often agents heartbeat (sent to them at registration).
    pub heartbeat_interval: Duration,
    /// Silence after which a node is lost, whatever its TCP connection says.
    pub heartbeat_timeout: Duration,
    /// Delay before the first retry of a failed task; doubles per failure.
    pub retry_backoff: Duration,
    /// The longest retry delay.
    pub retry_backoff_max: Duration,
    /// A task whose nodes were lost more than this many times fails: it is probably
    /// what kills them.
    pub max_node_losses: u32,
    /// A provider-started node that has not registered by then has failed.
    pub start_timeout: Duration,
    /// Jobs whose tasks run shorter than this on average get tasks queued ahead
    /// on their nodes (see [`schedule`]).
    pub prefetch_below: Duration,
    /// The most of each task's stdout, and of its stderr, that is kept, for jobs
    /// that do not say.
    pub max_output: u64,
    /// The most unfinished tasks (of all jobs) the coordinator holds; submissions
    /// beyond it are refused.
    pub max_queued_tasks: u64,
    /// How long a finished job is kept before it is deleted with its logs,
    /// outputs and events.
    pub retain: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(500),
            retry_backoff_max: Duration::from_secs(30),
            max_node_losses: 3,
            start_timeout: Duration::from_secs(30),
            prefetch_below: Duration::from_millis(100),
            max_output: 1 << 30,
            max_queued_tasks: 20_000_000,
            retain: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A pool and the indexes the scheduler needs.
#[derive(Debug)]
pub struct Pool {
    pub spec: PoolSpec,
    pub created_at_ms: u64,
    /// Live nodes (starting, up, draining).
    pub nodes: BTreeSet<NodeId>,
    /// Active jobs, highest priority first, then oldest first.
    pub jobs: BTreeSet<(Reverse<i32>, JobId)>,
    /// Consecutive launch failures, for backoff.
    pub launch_failures: u32,
    pub next_launch_at: Option<Instant>,
    pub last_error: Option<String>,
    /// When the autoscaler last changed the size.
    pub last_scale_at: Option<Instant>,
    /// The autoscaler's last decisions that changed something, oldest first.
    pub scale_log: std::collections::VecDeque<autoscale::Record>,
    /// Being deleted: it takes no job, starts no node and no task, and goes when its
    /// last node has been removed (by its removal policy).
    pub deleting: bool,
    /// The multi-node task waiting for nodes and those it holds (see [`gangs`]).
    pub gang: Option<gangs::Hold>,
}

impl Pool {
    /// The store's copy of this pool.
    pub fn stored(&self) -> StoreOp {
        StoreOp::PutPool { spec: self.spec.clone(), created_at_ms: self.created_at_ms, deleting: self.deleting }
    }
}

/// How many heartbeat samples a node keeps (two minutes at the default interval).
pub const USAGE_SAMPLES: usize = 120;

/// What one heartbeat said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub at_ms: u64,
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
}

/// A node as the core tracks it.
#[derive(Debug)]
pub struct Node {
    pub record: NodeRecord,
    /// When the coordinator last heard from it (or launched it, or restarted).
    pub last_seen: Instant,
    /// Whether an agent stream is open; assignments go only to connected nodes.
    pub connected: bool,
    /// Slots its attempts hold, started or queued on it (the scheduler's measure).
    pub slots_used: u32,
    /// Of those, the slots of attempts queued on it, and how many such attempts:
    /// what it runs now is `slots_used - queued_slots`.
    pub queued_slots: u32,
    pub queued: u32,
    /// What its running tasks hold of its resources, and which devices.
    pub resources_used: Resources,
    pub gpus_taken: BTreeSet<u32>,
    pub running: BTreeSet<TaskKey>,
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    /// Its last heartbeats, oldest first (for the dashboard's sparklines).
    pub usage: std::collections::VecDeque<Usage>,
    /// Since when it has had no task (meaningful while it has none).
    pub idle_since: Instant,
    /// False while its pool's start task runs on it: no work until it succeeds.
    pub usable: bool,
    /// The address its agent connects from (empty until it does): where a
    /// multi-node task tells its ranks the node is.
    pub address: String,
}

impl Node {
    pub fn status(&self) -> NodeStatus {
        self.record.status
    }

    /// The state users see.
    pub fn state(&self) -> NodeState {
        match self.record.status {
            NodeStatus::Starting => NodeState::Starting,
            NodeStatus::Up if self.slots_used > 0 => NodeState::Running,
            NodeStatus::Up => NodeState::Idle,
            NodeStatus::Draining => NodeState::Draining,
            NodeStatus::Lost => NodeState::Lost,
            NodeStatus::Removed => NodeState::Removed,
        }
    }

    /// Draining because its pool shrank: removed once its last task ends. Kept in
    /// the record (as the reason), so it survives a restart.
    pub fn remove_when_idle(&self) -> bool {
        self.record.status == NodeStatus::Draining
            && matches!(
                self.record.reason,
                Some(NodeReason::ScaledDown | NodeReason::Removed | NodeReason::PoolDeleted)
            )
    }

    /// Whether it counts toward its pool's size: live and not on its way out. The
    /// autoscaler and the reconciler must agree on this, or they fight.
    pub fn counts_toward_size(&self) -> bool {
        self.status().is_live() && !self.remove_when_idle()
    }

    /// Slots whose task's process runs now (queued attempts are not counted).
    pub fn slots_running(&self) -> u32 {
        self.slots_used.saturating_sub(self.queued_slots)
    }

    pub fn free_slots(&self) -> u32 {
        self.record.slots.saturating_sub(self.slots_used)
    }

    /// Whether what is free of its resources covers `want`.
    pub fn fits(&self, want: &Resources) -> bool {
        want.is_empty() || corral_types::resources::fits(&self.record.resources, &self.resources_used, want)
    }

    /// How many devices it has.
    pub fn gpus(&self) -> u64 {
        self.record.resources.get(corral_types::resources::GPUS).copied().unwrap_or(0)
    }
}

/// A task's compact in-memory state (the attempt history lives in the store).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Task {
    pub state: TaskState,
    /// The number of the latest attempt; 0 before the first.
    pub attempt: u32,
    /// Attempts that failed on their own account (count against retries).
    pub failures: u32,
    /// Attempts ended by losing their node (do not count against retries).
    pub node_losses: u32,
}

/// A job with its tasks.
#[derive(Debug)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub submitted_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// `tasks[i]` is the task with index `spec.index_at(i)` (`spec.first_index + i`
    /// but for arrays listed with gaps).
    pub tasks: Vec<Task>,
    /// Indices of tasks queued now (retries in backoff wait in `Core::delayed`).
    pub ready: BTreeSet<u32>,
    pub counts: Counts,
    /// How long its finished attempts ran.
    pub runs: RunStats,
    /// Graph jobs: for each task, how many of its upstream tasks have not succeeded.
    pub waiting_on: Vec<u32>,
    /// Why tasks are in their state, where that is not obvious.
    pub reasons: HashMap<u32, String>,
    /// When its queued tasks were queued (wall ms), for the scheduling latency:
    /// `queued_at` for those queued after submission (retries, requeues, released
    /// graph tasks), else `queued_since_ms` (submission, or the restart).
    pub queued_at: HashMap<u32, u64>,
    pub queued_since_ms: u64,
    /// How its completion callback (if it has one) is going.
    pub delivery: Delivery,
    /// Why it ended as it did, where that is not obvious (a `fail-job` exit rule,
    /// an `--after` job that did not complete).
    pub reason: Option<String>,
    /// The `--after` jobs it still waits for (active ones); none of its tasks
    /// starts before this is empty.
    pub held_by: BTreeSet<JobId>,
}

/// Run times of a job's finished attempts, to tell short tasks from long ones.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunStats {
    pub total_ms: u64,
    pub count: u32,
}

impl RunStats {
    /// Enough samples to judge, and a mean under `threshold_ms`.
    pub fn is_short(&self, threshold_ms: u64) -> bool {
        self.count >= 3 && self.total_ms / u64::from(self.count) < threshold_ms
    }
}

impl Job {
    /// Queues a task that became ready at `at_ms`.
    fn queue(&mut self, index: u32, at_ms: u64) {
        self.ready.insert(index);
        self.queued_at.insert(index, at_ms);
    }

    pub fn task(&self, index: u32) -> Option<&Task> {
        self.tasks.get(self.spec.offset_of(index)?)
    }

    fn task_mut(&mut self, index: u32) -> Option<&mut Task> {
        self.tasks.get_mut(self.spec.offset_of(index)?)
    }

    fn priority_key(&self) -> (Reverse<i32>, JobId) {
        (Reverse(self.spec.priority), self.id)
    }

    /// Whether it was submitted with a `--begin` that is still to come at `now_ms`:
    /// then none of its tasks starts, and it asks no pool to grow.
    pub fn begins_after(&self, now_ms: u64) -> bool {
        self.spec.begin_at_ms.is_some_and(|at| at > now_ms)
    }

    /// Whether none of its tasks may start at `now_ms` yet: its `--begin` is to
    /// come, or a job it waits for (`--after`) has not ended.
    pub fn held(&self, now_ms: u64) -> bool {
        self.begins_after(now_ms) || !self.held_by.is_empty()
    }

    /// Recounts what each task of a graph waits for, from the tasks' states, and
    /// moves tasks that are `ready` only by default (`defaulted`) to `waiting` if
    /// something upstream has not succeeded.
    fn settle_graph(&mut self, defaulted: impl Fn(u32) -> bool) {
        let Some(graph) = self.spec.graph.clone() else { return };
        self.waiting_on = graph
            .upstream
            .iter()
            .map(|ups| ups.iter().filter(|&&u| self.tasks[u as usize].state != TaskState::Succeeded).count() as u32)
            .collect();
        for index in 0..self.tasks.len() as u32 {
            let task = self.tasks[index as usize];
            if self.waiting_on[index as usize] > 0 && task.state == TaskState::Ready && defaulted(index) {
                transitions::expected(self.move_task(index, TaskState::Waiting));
            }
        }
    }
}

/// Where a running attempt runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningAttempt {
    /// Its node; for a multi-node task, rank 0's (the primary).
    pub node: NodeId,
    /// A multi-node task's other nodes, rank 1 onwards; empty for a task on one
    /// node. Each is the task's whole.
    pub members: Vec<NodeId>,
    pub attempt: u32,
    /// When it was assigned, until an attempt sent ahead starts: then when its
    /// process started, as its agent says.
    pub started_at_ms: u64,
    /// Its `--timeout`: with `started_at_ms`, when its nodes are free at the latest.
    pub timeout_ms: Option<u64>,
    /// Sent ahead of a free slot (short tasks are prefetched) and waiting on its
    /// node for one: `assigned`, not yet `running`, until its agent says it started.
    pub queued: bool,
    /// The devices of its node it holds (`CORRAL_GPUS`).
    pub gpus: Vec<u32>,
}

impl RunningAttempt {
    /// Its nodes, rank 0 first.
    pub fn places(&self) -> impl Iterator<Item = &NodeId> {
        std::iter::once(&self.node).chain(&self.members)
    }

    /// Whether it runs (in part) on `node`.
    pub fn is_on(&self, node: &NodeId) -> bool {
        self.places().any(|n| n == node)
    }

    /// When it will have ended at the latest (wall ms): `None` without a timeout,
    /// or while it waits on its node for a slot.
    pub fn ends_by_ms(&self) -> Option<u64> {
        self.timeout_ms.filter(|_| !self.queued).map(|t| self.started_at_ms.saturating_add(t))
    }
}

/// All of the coordinator's state.
#[derive(Debug)]
pub struct Core {
    pub config: CoreConfig,
    /// A fixed (instant, wall clock in ms) pair, to stamp records from `now`.
    epoch: (Instant, u64),
    pub pools: BTreeMap<PoolName, Pool>,
    pub nodes: BTreeMap<NodeId, Node>,
    pub jobs: BTreeMap<JobId, Job>,
    pub running: HashMap<TaskKey, RunningAttempt>,
    /// How many tasks run now per concurrency key (keys with none are absent).
    pub keyed: HashMap<String, u32>,
    /// Active jobs, and the active jobs waiting for them (`--after`).
    pub waited_for: BTreeMap<JobId, BTreeSet<JobId>>,
    /// Failed tasks waiting out their retry backoff.
    pub delayed: BTreeSet<(Instant, TaskKey)>,
    /// The nodes whose results ended the most recent attempts: their output may
    /// still arrive after the result (an agent that reconnects ships it again), and
    /// only from them.
    pub ended_on: EndedOn,
    /// The idempotency keys of the last day.
    pub keys: keys::Keys,
    /// Multi-node tasks whose primary failed, waiting a heartbeat timeout to see
    /// whether a member's node went away (then the loss ended it, not the task):
    /// when to decide, the primary's node, and its result.
    pub gang_failures: BTreeMap<TaskKey, (Instant, NodeId, TaskResult)>,
    pub schedules: BTreeMap<ScheduleName, schedules::Schedule>,
    pub templates: BTreeMap<TemplateName, templates::Template>,
    pub triggers: BTreeMap<TriggerName, triggers::Trigger>,
    /// When retention last looked for jobs to delete.
    retention_checked: Option<Instant>,
    next_job: u64,
    next_node: u64,
}

/// Where each of the last [`EndedOn::KEEP`] attempts ran when it ended: its
/// node, then a multi-node task's other ranks' nodes in rank order.
#[derive(Debug, Default)]
pub struct EndedOn {
    by_attempt: HashMap<AttemptRef, Vec<NodeId>>,
    order: std::collections::VecDeque<AttemptRef>,
}

impl EndedOn {
    pub const KEEP: usize = 65_536;

    pub fn insert(&mut self, attempt: AttemptRef, run: &RunningAttempt) {
        if self.by_attempt.insert(attempt, run.places().cloned().collect()).is_none() {
            self.order.push_back(attempt);
        }
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.by_attempt.remove(&old);
            }
        }
    }

    /// The node the attempt ran on (a multi-node task's primary's).
    pub fn get(&self, attempt: &AttemptRef) -> Option<&NodeId> {
        self.place(attempt, 0)
    }

    /// The node of the attempt's rank `rank`.
    pub fn place(&self, attempt: &AttemptRef, rank: u32) -> Option<&NodeId> {
        self.by_attempt.get(attempt)?.get(rank as usize)
    }

    /// The rank the attempt had on `node`.
    pub fn rank_on(&self, attempt: &AttemptRef, node: &NodeId) -> Option<u32> {
        self.by_attempt.get(attempt)?.iter().position(|n| n == node).map(|r| r as u32)
    }
}

impl Core {
    /// An empty core. `epoch` pairs an instant with the wall clock (ms since the
    /// Unix epoch) at that instant.
    pub fn new(config: CoreConfig, epoch: (Instant, u64)) -> Self {
        Core {
            config,
            epoch,
            pools: BTreeMap::new(),
            nodes: BTreeMap::new(),
            jobs: BTreeMap::new(),
            running: HashMap::new(),
            keyed: HashMap::new(),
            waited_for: BTreeMap::new(),
            delayed: BTreeSet::new(),
            ended_on: EndedOn::default(),
            keys: keys::Keys::default(),
            gang_failures: BTreeMap::new(),
            schedules: BTreeMap::new(),
            templates: BTreeMap::new(),
            triggers: BTreeMap::new(),
            retention_checked: None,
            next_job: 1,
            next_node: 1,
        }
    }

    /// Wall-clock milliseconds at `now`.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        let (at, ms) = self.epoch;
        match now.checked_duration_since(at) {
            Some(d) => ms + d.as_millis() as u64,
            None => ms.saturating_sub(at.duration_since(now).as_millis() as u64),
        }
    }

    fn task_record(&self, key: TaskKey) -> Option<TaskRecord> {
        let job = self.jobs.get(&key.job)?;
        let task = job.task(key.index)?;
        Some(TaskRecord {
            key,
            state: task.state,
            attempt: task.attempt,
            failures: task.failures,
            node_losses: task.node_losses,
            reason: job.reasons.get(&key.index).cloned(),
        })
    }

    fn put_task(&self, key: TaskKey, out: &mut Outbox) {
        if let Some(record) = self.task_record(key) {
            out.store.push(StoreOp::PutTask(record));
        }
    }

    fn put_node(&self, id: &NodeId, out: &mut Outbox) {
        if let Some(node) = self.nodes.get(id) {
            out.store.push(StoreOp::PutNode(node.record.clone()));
        }
    }
}

fn new_pool(spec: PoolSpec, created_at_ms: u64) -> Pool {
    Pool {
        spec,
        created_at_ms,
        nodes: BTreeSet::new(),
        jobs: BTreeSet::new(),
        launch_failures: 0,
        next_launch_at: None,
        last_error: None,
        last_scale_at: None,
        scale_log: Default::default(),
        deleting: false,
        gang: None,
    }
}

fn new_node(record: NodeRecord, now: Instant) -> Node {
    Node {
        record,
        last_seen: now,
        connected: false,
        slots_used: 0,
        queued_slots: 0,
        queued: 0,
        resources_used: Resources::new(),
        gpus_taken: BTreeSet::new(),
        running: BTreeSet::new(),
        cpu_percent: 0.0,
        memory_used_bytes: 0,
        usage: Default::default(),
        idle_since: now,
        usable: true,
        address: String::new(),
    }
}

fn new_job(id: JobId, spec: JobSpec, submitted_at_ms: u64, initial: TaskState) -> Job {
    let n = spec.task_count();
    let task = Task { state: initial, attempt: 0, failures: 0, node_losses: 0 };
    let mut counts = Counts::default();
    *counts.slot(initial) = n;
    let ready = if initial == TaskState::Ready { spec.indices().collect() } else { BTreeSet::new() };
    Job {
        id,
        spec,
        state: JobState::Active,
        submitted_at_ms,
        finished_at_ms: None,
        tasks: vec![task; n as usize],
        ready,
        counts,
        runs: RunStats::default(),
        waiting_on: Vec::new(),
        reasons: HashMap::new(),
        queued_at: HashMap::new(),
        queued_since_ms: submitted_at_ms,
        delivery: Delivery::default(),
        reason: None,
        held_by: BTreeSet::new(),
    }
}
