//! Deterministic tests of the core: chosen `now`s, events fed by hand, assertions on
//! the outbox and the state, and `sanity_check()` after every step.

use std::time::{Duration, Instant};

use super::*;
use crate::error::Error;

mod backends;
mod explain;
mod graphs;
mod jobs;
mod nodes;
mod policies;
mod pools;
mod resources;
mod restore;
mod schedules;
mod scheduling;
mod templates;

struct Env {
    core: Core,
    now: Instant,
    out: Outbox,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pool_spec(name: &str, provider: Provider, nodes: u32, fill: Fill) -> PoolSpec {
    PoolSpec {
        name: PoolName::parse("name", name).unwrap(),
        slots_per_node: 2,
        provider,
        target_nodes: nodes,
        fill,
        autoscale: None,
        removal: RemovalPolicy::TaskCompletion,
        commands: None,
        docker: None,
        start_task: None,
    }
}

fn job_spec(pool: &str, tasks: u32, priority: i32, max_retries: u32) -> JobSpec {
    let task = TaskSpec { max_retries, ..TaskSpec::command(vec!["true".into()]) };
    JobSpec::new(PoolName::parse("pool", pool).unwrap(), task).with_range(0, tasks - 1).with_priority(priority)
}

/// A graph job on pool `p` of single tasks, given as `(id, depends_on)`.
fn graph_spec(tasks: &[(&str, &[&str])]) -> JobSpec {
    let groups: Vec<corral_types::graph::TaskGroup> = tasks
        .iter()
        .map(|(id, deps)| corral_types::graph::TaskGroup {
            id: id.to_string(),
            spec: job_spec("p", 1, 0, 0).task,
            array: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        })
        .collect();
    let graph = corral_types::graph::resolve(groups).unwrap();
    job_spec("p", 1, 0, 0).with_graph(std::sync::Arc::new(graph))
}

impl Env {
    fn new() -> Self {
        let now = Instant::now();
        let config = CoreConfig { retry_backoff: ms(100), ..CoreConfig::default() };
        Env { core: Core::new(config, (now, 1_000_000)), now, out: Outbox::default() }
    }

    fn with_pool(fill: Fill) -> Self {
        let mut env = Env::new();
        env.core.create_pool(env.now, pool_spec("p", Provider::Static, 0, fill), &mut env.out).unwrap();
        env.check();
        env
    }

    fn check(&self) {
        self.core.sanity_check();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn take(&mut self) -> Outbox {
        std::mem::take(&mut self.out)
    }

    /// Registers a static node with `slots` and opens its stream.
    fn node(&mut self, slots: u32) -> NodeId {
        self.join(slots, None)
    }

    /// Registers an agent (of a local pool, with `launch_id`) and opens its stream.
    fn join(&mut self, slots: u32, launch_id: Option<NodeId>) -> NodeId {
        self.join_starting(slots, launch_id, false)
    }

    /// As `join`, saying in the hello whether the pool's start task still runs.
    fn join_starting(&mut self, slots: u32, launch_id: Option<NodeId>, start_task_running: bool) -> NodeId {
        self.join_with(slots, launch_id, start_task_running, Resources::new())
    }

    /// Registers a static node with `slots` that has `resources`.
    fn node_with(&mut self, slots: u32, resources: &[(&str, u64)]) -> NodeId {
        let resources = resources.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        self.join_with(slots, None, false, resources)
    }

    fn join_with(
        &mut self,
        slots: u32,
        launch_id: Option<NodeId>,
        start_task_running: bool,
        resources: Resources,
    ) -> NodeId {
        let reg = Registration {
            pool: PoolName::parse("pool", "p").unwrap(),
            hostname: "h".into(),
            slots,
            cpus: 2,
            memory_bytes: 1 << 30,
            pid: 0,
            launch_id,
            resources,
        };
        let id = self.core.register_node(self.now, reg, &mut self.out).unwrap();
        self.core.on_hello(self.now, &id, Held::default(), start_task_running, &mut self.out).unwrap();
        self.check();
        id
    }

    fn submit(&mut self, tasks: u32, priority: i32, retries: u32) -> JobId {
        let id = self.core.submit_job(self.now, job_spec("p", tasks, priority, retries), &mut self.out).unwrap();
        self.check();
        id
    }

    /// Runs the scheduler; returns the assignments in order.
    fn schedule(&mut self) -> Vec<(NodeId, AttemptRef)> {
        let mut out = Outbox::default();
        self.core.schedule(self.now, &mut out);
        self.check();
        self.out.store.append(&mut out.store);
        out.agents
            .into_iter()
            .filter_map(|(n, m)| match m {
                ToAgent::Assign(a) => Some((n, a.attempt)),
                _ => None,
            })
            .collect()
    }

    fn report(&mut self, node: &NodeId, attempt: AttemptRef, outcome: Outcome) {
        self.core.on_task_results(self.now, node, vec![result(attempt, outcome, 0)], &mut self.out);
        self.check();
    }

    /// Reports that `attempt` exited with `code` (a failure unless 0).
    fn exit(&mut self, node: &NodeId, attempt: AttemptRef, code: i32) {
        let outcome = if code == 0 { Outcome::Succeeded } else { Outcome::Failed };
        let r = TaskResult { exit_code: Some(code), ..result(attempt, outcome, 0) };
        self.core.on_task_results(self.now, node, vec![r], &mut self.out);
        self.check();
    }

    fn submit_spec(&mut self, spec: JobSpec) -> JobId {
        let id = self.core.submit_job(self.now, spec, &mut self.out).unwrap();
        self.check();
        id
    }

    fn tick(&mut self) {
        self.core.on_tick(self.now, &mut self.out);
        self.check();
    }

    fn task(&self, job: JobId, index: u32) -> Task {
        *self.core.jobs[&job].task(index).unwrap()
    }
}

/// What an agent reports for `attempt`: `outcome`, after running `ran_ms`.
/// What an agent says it holds: attempts running (none queued), results unacked.
fn held(running: Vec<AttemptRef>, finished: Vec<TaskResult>) -> Held {
    Held { running, queued: Vec::new(), finished }
}

fn result(attempt: AttemptRef, outcome: Outcome, ran_ms: u64) -> TaskResult {
    TaskResult {
        attempt,
        outcome,
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        signal: None,
        message: String::new(),
        started_at_ms: 1_000,
        ended_at_ms: 1_000 + ran_ms,
        written: [0, 0],
    }
}

/// The nodes an outbox asks the provider to launch.
fn launched(out: &Outbox) -> Vec<NodeId> {
    out.provider
        .iter()
        .filter_map(|op| match op {
            ProviderOp::Launch { node, .. } => Some(node.clone()),
            _ => None,
        })
        .collect()
}
