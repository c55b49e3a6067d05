//! The deterministic test environment: a core with chosen `now`s, events fed by
//! hand, and `sanity_check()` after every step (tako's `tests/utils/env.rs`). The
//! core's own tests use it, and so do the coordinator's tests of the core with its
//! real store (feature `testing`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use crate::model::*;
use crate::templates::TemplateSpec;
use crate::triggers::TriggerSpec;
use crate::*;

/// A core, the time it is, and what it has written so far.
pub struct Env {
    pub core: Core,
    pub now: Instant,
    pub out: Outbox,
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn pool_spec(name: &str, provider: Provider, nodes: u32, fill: Fill) -> PoolSpec {
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

pub fn job_spec(pool: &str, tasks: u32, priority: i32, max_retries: u32) -> JobSpec {
    let task = TaskSpec { max_retries, ..TaskSpec::command(vec!["true".into()]) };
    JobSpec::new(PoolName::parse("pool", pool).unwrap(), task).with_range(0, tasks - 1).with_priority(priority)
}

/// A graph job on pool `p` of single tasks, given as `(id, depends_on)`.
pub fn graph_spec(tasks: &[(&str, &[&str])]) -> JobSpec {
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

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

impl Env {
    pub fn new() -> Self {
        let now = Instant::now();
        let config = CoreConfig { retry_backoff: ms(100), ..CoreConfig::default() };
        Env { core: Core::new(config, (now, 1_000_000)), now, out: Outbox::default() }
    }

    pub fn with_pool(fill: Fill) -> Self {
        let mut env = Env::new();
        env.core.create_pool(env.now, pool_spec("p", Provider::Static, 0, fill), &mut env.out).unwrap();
        env.check();
        env
    }

    pub fn check(&self) {
        self.core.sanity_check();
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    pub fn take(&mut self) -> Outbox {
        std::mem::take(&mut self.out)
    }

    /// Registers a static node with `slots` and opens its stream.
    pub fn node(&mut self, slots: u32) -> NodeId {
        self.join(slots, None)
    }

    /// Registers an agent (of a local pool, with `launch_id`) and opens its stream.
    pub fn join(&mut self, slots: u32, launch_id: Option<NodeId>) -> NodeId {
        self.join_starting(slots, launch_id, false)
    }

    /// As `join`, saying in the hello whether the pool's start task still runs.
    pub fn join_starting(&mut self, slots: u32, launch_id: Option<NodeId>, start_task_running: bool) -> NodeId {
        self.join_with(slots, launch_id, start_task_running, Resources::new())
    }

    /// Registers a static node with `slots` that has `resources`.
    pub fn node_with(&mut self, slots: u32, resources: &[(&str, u64)]) -> NodeId {
        let resources = resources.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        self.join_with(slots, None, false, resources)
    }

    pub fn join_with(
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

    pub fn submit(&mut self, tasks: u32, priority: i32, retries: u32) -> JobId {
        let id = self.core.submit_job(self.now, job_spec("p", tasks, priority, retries), &mut self.out).unwrap();
        self.check();
        id
    }

    /// Runs the scheduler; returns the assignments in order.
    pub fn schedule(&mut self) -> Vec<(NodeId, AttemptRef)> {
        self.assignments().into_iter().map(|(n, a)| (n, a.attempt)).collect()
    }

    /// Runs the scheduler; returns the assignments whole, in order.
    pub fn assignments(&mut self) -> Vec<(NodeId, Box<Assignment>)> {
        let mut out = Outbox::default();
        self.core.schedule(self.now, &mut out);
        self.check();
        self.out.store.append(&mut out.store);
        out.agents
            .into_iter()
            .filter_map(|(n, m)| match m {
                ToAgent::Assign(a) => Some((n, a)),
                _ => None,
            })
            .collect()
    }

    pub fn report(&mut self, node: &NodeId, attempt: AttemptRef, outcome: Outcome) {
        self.core.on_task_results(self.now, node, vec![result(attempt, outcome, 0)], &mut self.out);
        self.check();
    }

    /// Reports that `attempt` exited with `code` (a failure unless 0).
    pub fn exit(&mut self, node: &NodeId, attempt: AttemptRef, code: i32) {
        let outcome = if code == 0 { Outcome::Succeeded } else { Outcome::Failed };
        let r = TaskResult { exit_code: Some(code), ..result(attempt, outcome, 0) };
        self.core.on_task_results(self.now, node, vec![r], &mut self.out);
        self.check();
    }

    pub fn submit_spec(&mut self, spec: JobSpec) -> JobId {
        let id = self.core.submit_job(self.now, spec, &mut self.out).unwrap();
        self.check();
        id
    }

    pub fn tick(&mut self) {
        self.core.on_tick(self.now, &mut self.out);
        self.check();
    }

    pub fn task(&self, job: JobId, index: u32) -> Task {
        *self.core.jobs[&job].task(index).unwrap()
    }
}

/// What an agent says it holds: attempts running (none queued), results unacked.
pub fn held(running: Vec<AttemptRef>, finished: Vec<TaskResult>) -> Held {
    Held { running, queued: Vec::new(), finished, address: None }
}

/// What an agent reports for `attempt`: `outcome`, after running `ran_ms`.
pub fn result(attempt: AttemptRef, outcome: Outcome, ran_ms: u64) -> TaskResult {
    TaskResult {
        attempt,
        outcome,
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        signal: None,
        message: String::new(),
        started_at_ms: 1_000,
        ended_at_ms: 1_000 + ran_ms,
        written: [0, 0],
        order: Default::default(),
    }
}

/// The nodes an outbox asks the provider to launch.
pub fn launched(out: &Outbox) -> Vec<NodeId> {
    out.provider
        .iter()
        .filter_map(|op| match op {
            ProviderOp::Launch { node, .. } => Some(node.clone()),
            _ => None,
        })
        .collect()
}

pub fn group(id: &str, deps: &[&str]) -> corral_types::graph::TaskGroup {
    corral_types::graph::TaskGroup {
        id: id.into(),
        spec: job_spec("p", 1, 0, 0).task,
        array: None,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
    }
}

pub fn after(job: JobId, any: bool) -> JobSpec {
    JobSpec { after: vec![After { job, any }], ..job_spec("p", 2, 0, 0) }
}

pub fn asking(tasks: u32, resources: &[(&str, u64)]) -> JobSpec {
    let mut spec = job_spec("p", tasks, 0, 0);
    spec.task.resources = resources.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    spec
}

/// Runs the scheduler; returns each assignment's node and env.
pub fn assign(env: &mut Env) -> Vec<(NodeId, AttemptRef, BTreeMap<String, String>)> {
    env.assignments().into_iter().map(|(n, a)| (n, a.attempt, a.env)).collect()
}

pub fn trigger(name: &str, prefix: &str, glob: Option<&str>, poll: bool) -> TriggerSpec {
    TriggerSpec {
        max_active: None,
        name: TriggerName::parse("name", name).unwrap(),
        prefix: prefix.into(),
        glob: glob.map(str::to_string),
        template: TemplateName::parse("template", "t").unwrap(),
        poll: poll.then_some(Duration::from_secs(5)),
        owner: "alice".into(),
        source: None,
    }
}

impl Env {
    pub fn with_template(payload: PayloadRule, meta_required: &[&str]) -> Env {
        let mut env = Env::with_pool(Fill::Spread);
        env.core.create_template(env.now, template("t", payload, meta_required), &mut env.out).unwrap();
        env.check();
        env
    }

    /// The objects each job made by a trigger got as input, in job order.
    pub fn trigger_objects(&self) -> Vec<String> {
        self.core.jobs.values().filter_map(|j| j.spec.task.env.get("CORRAL_TRIGGER_OBJECT").cloned()).collect()
    }
}

pub fn template(name: &str, payload: PayloadRule, meta_required: &[&str]) -> TemplateSpec {
    TemplateSpec {
        name: TemplateName::parse("name", name).unwrap(),
        payload,
        meta_required: meta_required.iter().map(|k| k.to_string()).collect(),
        job: JobSpec { owner: "maker".into(), ..job_spec("p", 2, 0, 0) },
    }
}
