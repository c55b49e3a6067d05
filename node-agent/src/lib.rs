//! The Corral node agent: it registers with a coordinator, keeps one bidirectional
//! gRPC stream to it, runs the tasks it is assigned as child processes, heartbeats
//! with the host's CPU and memory use, and ships task output as it is written.
//!
//! Modules, in reading order: [`attempts`] (the agent's core: the attempts it holds
//! and its slots, a pure state machine that writes an outbox of effects, unit-tested
//! for reconnects, acks, kills and abandonment), [`session`] (the thin I/O shell
//! around it: registration, the stream, reconnecting with backoff while tasks keep
//! running; what runs an attempt is a [`launch::Launch`]: real processes, or
//! nothing in simulate mode), [`coordinators`] (which coordinator it talks to, following the
//! leader, and the newest leader's epoch, so it obeys no deposed one), [`checkpoint`] (a task's state kept across attempts), [`resources`] (what the node offers beyond slots), [`warden`] (no task
//! outlives the agent, and how a process group is signalled), [`runner`] (one
//! task attempt as a process group with a timeout), [`relay`] (its stdout and
//! stderr read from pipes into files, bounded, their order noted), [`task_dirs`] (their
//! directories, recycled), [`objects`] (inputs and
//! outputs streamed to and from the coordinator's object store) and [`shuffle`]
//! (the map/reduce partition, sort, spill and merge around map and reduce tasks).
//! [`simulate`] is a test mode that runs nothing, for measuring the coordinator.
//!
//! When the coordinator goes away the agent keeps its tasks running, reconnects with
//! backoff, and reports what finished meanwhile; results are kept until the
//! coordinator acknowledges them as durable.

pub mod attempts;
pub mod checkpoint;
pub mod cli;
pub mod coordinators;
pub mod gang;
pub mod launch;
pub mod launches;
pub mod objects;
pub mod relay;
pub mod resources;
pub mod rsh;
pub mod runner;
pub mod session;
pub mod shuffle;
pub mod simulate;
pub mod start_task;
pub mod task_dirs;
pub mod warden;

use std::path::PathBuf;
use std::time::Duration;

/// How to reach the coordinator and what this node offers.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The coordinator's URL, e.g. `http://127.0.0.1:7070`.
    pub coordinator: String,
    pub pool: String,
    /// Task slots; `None` means one per CPU.
    pub slots: Option<u32>,
    /// Tasks run in `<work_dir>/tasks/<job>.<index>.<attempt>/`.
    pub work_dir: PathBuf,
    /// Set by the local provider: the node this agent was started for.
    pub launch_id: Option<String>,
    /// Time between SIGTERM and SIGKILL when a task is stopped.
    pub kill_grace: Duration,
    /// The `agent` (or `admin`) token it registers with. After registering it
    /// speaks with the node secret the coordinator gives it.
    pub token: Option<String>,
    /// How an `https://` coordinator is trusted.
    pub tls: corral_proto::tls::ClientTls,
    /// Stop (killing the tasks) after this long with no coordinator answering;
    /// `None`: keep trying for ever.
    pub give_up_after: Option<Duration>,
    /// The address other ranks reach it at, if not the one it connects from.
    pub advertise_address: Option<String>,
    /// A test mode that runs nothing: every assigned task is reported as succeeded
    /// at once, with no output (see [`simulate`]).
    pub simulate: bool,
    /// The host name it registers with [default: this host's].
    pub hostname: Option<String>,
    /// What it offers beyond slots (`gpus`, `mem`, counters); `mem` defaults to
    /// all of the host's memory.
    pub resources: std::collections::BTreeMap<String, u64>,
}

impl AgentConfig {
    pub fn new(coordinator: impl Into<String>, pool: impl Into<String>, work_dir: PathBuf) -> Self {
        AgentConfig {
            coordinator: coordinator.into(),
            pool: pool.into(),
            slots: None,
            work_dir,
            launch_id: None,
            kill_grace: Duration::from_secs(5),
            token: None,
            tls: Default::default(),
            give_up_after: None,
            advertise_address: None,
            simulate: false,
            hostname: None,
            resources: Default::default(),
        }
    }
}

pub use session::run;

/// The agent's own credentials in its environment. Nothing it starts for a pool's
/// users (tasks, start tasks, combiners) inherits them: a task that could read its
/// agent's token could register a node of its own and receive other users' tasks.
pub const AGENT_SECRETS: &[&str] = &["CORRAL_TOKEN", "CORRAL_TOKEN_FILE"];
