//! Nodes: registration, the hello that opens each agent stream, heartbeats, loss,
//! drain, and the periodic tick that notices silence.

use corral_types::paths;
use std::collections::BTreeSet;
use std::time::Instant;

use super::*;
use crate::error::{Error, Invalid, Result};

/// Why a hello was refused: the agent must kill its work and register again.
#[derive(Debug, Clone, PartialEq)]
pub struct MustReregister(pub String);

/// What an agent holds when its stream opens: attempts it runs, those of them
/// still queued for a slot, and results not yet acknowledged.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub running: Vec<AttemptRef>,
    pub queued: Vec<AttemptRef>,
    pub finished: Vec<TaskResult>,
    /// The address its agent connects from, as the coordinator sees it.
    pub address: Option<String>,
}

impl Core {
    /// Registers an agent as a node of its pool. An agent the local provider started
    /// names the `starting` node it fulfils; any other gets a new node.
    pub fn register_node(&mut self, now: Instant, reg: Registration, out: &mut Outbox) -> Result<NodeId> {
        let pool = self.pools.get(&reg.pool).ok_or(Error::NotFound {
            what: "pool",
            id: reg.pool.to_string(),
            hint: "; create it with `corral pool create` before starting agents for it",
        })?;
        super::pools::refuse_if_deleting(pool)?;
        if reg.slots == 0 {
            return Err(Invalid::new("slots", "must be at least 1").into());
        }
        let registered_at_ms = self.wall_ms(now);
        let id = match reg.launch_id {
            Some(id) => {
                let starting = self
                    .nodes
                    .get(&id)
                    .is_some_and(|n| n.status() == NodeStatus::Starting && n.record.pool == reg.pool);
                if !starting {
                    return Err(Error::Refused(format!(
                        "launch_id: node '{id}' is not starting in pool '{}' (it timed out or was removed); this agent is not needed",
                        reg.pool
                    )));
                }
                id
            }
            None => {
                if pool.spec.provider != Provider::Static {
                    return Err(Error::Refused(format!(
                        "pool '{}' uses the {} provider: the coordinator starts its agents; join a static pool instead",
                        reg.pool, pool.spec.provider
                    )));
                }
                let id = NodeId::from_seq(self.next_node);
                self.next_node += 1;
                id
            }
        };
        let record = NodeRecord {
            id: id.clone(),
            pool: reg.pool.clone(),
            hostname: reg.hostname,
            slots: reg.slots,
            cpus: reg.cpus,
            memory_bytes: reg.memory_bytes,
            pid: reg.pid,
            status: NodeStatus::Up,
            reason: None,
            registered_at_ms,
            resources: reg.resources,
        };
        let node = self.nodes.entry(id.clone()).or_insert_with(|| new_node(record.clone(), now));
        node.record = record;
        node.last_seen = now;
        node.idle_since = now;
        if let Some(pool) = self.pools.get_mut(&reg.pool) {
            pool.nodes.insert(id.clone());
            pool.launch_failures = 0;
            pool.last_error = None;
        }
        tracing::info!(node_id = %id, pool = %reg.pool, slots = reg.slots, "node registered");
        self.put_node(&id, out);
        Ok(id)
    }

    /// The first message of an agent stream: what the agent runs now and the results
    /// it has not had acknowledged. Reconciles both sides: stale attempts are killed,
    /// attempts the agent never received are queued again.
    pub fn on_hello(
        &mut self,
        now: Instant,
        id: &NodeId,
        held: Held,
        start_task_running: bool,
        out: &mut Outbox,
    ) -> Result<(), MustReregister> {
        let Held { running, queued, finished, address } = held;
        let node = match self.nodes.get_mut(id) {
            Some(node) if matches!(node.status(), NodeStatus::Up | NodeStatus::Draining) => node,
            Some(node) => {
                return Err(MustReregister(format!("node {id} is {}", node.state())));
            }
            None => return Err(MustReregister(format!("node {id} is unknown to this coordinator"))),
        };
        node.connected = true;
        node.last_seen = now;
        if let Some(address) = address {
            node.address = address;
        }
        node.usable = !start_task_running;
        self.on_task_results(now, id, finished, out);
        let reported: BTreeSet<TaskKey> = running.iter().map(|a| a.task).collect();
        for attempt in running {
            let current = self.running.get(&attempt.task).is_some_and(|r| r.is_on(id) && r.attempt == attempt.attempt);
            if !current {
                out.agents.push((id.clone(), ToAgent::Kill(attempt)));
            }
        }
        // What waits on it for a slot, and what started while it was away.
        let queued: std::collections::HashSet<AttemptRef> = queued.into_iter().collect();
        let current: Vec<AttemptRef> = self
            .nodes
            .get(id)
            .map(|n| {
                n.running
                    .iter()
                    .filter_map(|k| Some(AttemptRef { task: *k, attempt: self.running.get(k)?.attempt }))
                    .collect()
            })
            .unwrap_or_default();
        for attempt in current {
            self.set_queued(id, attempt, queued.contains(&attempt), None);
        }
        let missing: Vec<TaskKey> =
            self.nodes.get(id).map(|n| n.running.difference(&reported).copied().collect()).unwrap_or_default();
        for key in missing {
            // Lost in transit, most likely; kill it in case it is on its way still.
            if let Some(run) = self.running.get(&key) {
                out.agents.push((id.clone(), ToAgent::Kill(AttemptRef { task: key, attempt: run.attempt })));
            }
            self.end_attempt_lost(now, key, "the agent did not have this attempt when it reconnected", false, out);
        }
        Ok(())
    }

    /// Attempts sent ahead to node `id` started (at the wall-clock times given):
    /// they run now, no longer assigned.
    pub fn on_tasks_started(&mut self, id: &NodeId, started: Vec<(AttemptRef, u64)>) {
        for (attempt, at_ms) in started {
            self.set_queued(id, attempt, false, Some(at_ms));
        }
    }

    /// Any message from a node proves it alive. A node already declared lost is told
    /// to register again; returns false for it, so the caller ignores the message.
    pub fn on_node_message(&mut self, now: Instant, id: &NodeId, out: &mut Outbox) -> bool {
        match self.nodes.get_mut(id) {
            Some(node) if matches!(node.status(), NodeStatus::Up | NodeStatus::Draining) => {
                node.last_seen = now;
                true
            }
            Some(node) => {
                let why = format!("node {id} was declared {}; register again", node.state());
                out.agents.push((id.clone(), ToAgent::Reregister(why)));
                false
            }
            None => false,
        }
    }

    pub fn on_heartbeat(&mut self, now: Instant, id: &NodeId, cpu_percent: f32, memory_used_bytes: u64) {
        let at_ms = self.wall_ms(now);
        if let Some(node) = self.nodes.get_mut(id) {
            node.cpu_percent = cpu_percent;
            node.memory_used_bytes = memory_used_bytes;
            if node.usage.len() == USAGE_SAMPLES {
                node.usage.pop_front();
            }
            node.usage.push_back(Usage { at_ms, cpu_percent, memory_used_bytes });
        }
    }

    /// The agent's stream closed. The node is not lost yet: it has the heartbeat
    /// timeout to come back, as after a network blip or a coordinator restart.
    pub fn on_disconnected(&mut self, id: &NodeId) {
        if let Some(node) = self.nodes.get_mut(id) {
            node.connected = false;
        }
    }

    /// The local provider saw the agent process exit.
    pub fn on_node_exited(&mut self, now: Instant, id: &NodeId, out: &mut Outbox) {
        match self.nodes.get(id).map(|n| n.status()) {
            // Gone before it registered: a failed launch, so the pool backs off and
            // says why instead of starting one doomed node after another.
            Some(NodeStatus::Starting) => self.on_launch_failed(
                now,
                id,
                "the agent exited before it registered (see its log: DATA_DIR/agents/NODE.log, or `docker logs` for a container)",
                out,
            ),
            Some(status) if status.is_live() => self.declare_lost(now, id, NodeReason::ProcessExited, out),
            _ => {}
        }
    }

    /// The sequence number the next node will get.
    pub fn next_node_seq(&self) -> u64 {
        self.next_node
    }

    /// The local provider could not start the agent.
    pub fn on_launch_failed(&mut self, now: Instant, id: &NodeId, error: &str, out: &mut Outbox) {
        // A launch reported failed after its node registered (say, an add command
        // that timed out holding its agent's output) must not take the node down.
        let Some(node) = self.nodes.get(id).filter(|n| n.status() == NodeStatus::Starting) else { return };
        let pool_name = node.record.pool.clone();
        self.retire_node(now, id, NodeStatus::Removed, NodeReason::LaunchFailed, out);
        if let Some(pool) = self.pools.get_mut(&pool_name) {
            pool.launch_failures += 1;
            let backoff = self.config.retry_backoff * 2u32.pow(pool.launch_failures.min(6));
            pool.next_launch_at = Some(now + backoff);
            pool.last_error = Some(format!("could not start an agent: {error}"));
            tracing::warn!(pool = %pool_name, error, "could not start an agent; backing off for {backoff:?}");
        }
    }

    /// The provider could not remove what it started for a node: the pool shows it,
    /// since the machine or container may still be running and costing money.
    pub fn on_remove_failed(&mut self, id: &NodeId, pool: &PoolName, error: &str) {
        if let Some(pool) = self.pools.get_mut(pool) {
            pool.last_error = Some(format!("could not remove node {id}; remove it by hand: {error}"));
        }
    }

    /// Declares a node lost: its tasks go back to the queue at once.
    pub fn declare_lost(&mut self, now: Instant, id: &NodeId, reason: NodeReason, out: &mut Outbox) {
        tracing::warn!(node_id = %id, reason = %reason, "node lost; its tasks go back to the queue");
        self.retire_node(now, id, NodeStatus::Lost, reason, out);
    }

    /// Takes a node out of service for good (lost or removed): requeues its tasks,
    /// records it, and tells its provider to stop it.
    pub(super) fn retire_node(
        &mut self,
        now: Instant,
        id: &NodeId,
        status: NodeStatus,
        reason: NodeReason,
        out: &mut Outbox,
    ) {
        let Some(node) = self.nodes.get_mut(id) else { return };
        if !node.status().is_live() {
            return;
        }
        node.record.status = status;
        node.record.reason = Some(reason);
        node.connected = false;
        let pid = node.record.pid;
        let pool_name = node.record.pool.clone();
        let tasks: Vec<TaskKey> = node.running.iter().copied().collect();
        let why = format!("node {id} {status}: {reason}");
        for key in tasks {
            self.end_attempt_lost(now, key, &why, status == NodeStatus::Lost, out);
        }
        let launcher = self.pools.get_mut(&pool_name).and_then(|pool| {
            pool.nodes.remove(id);
            pool.spec.launcher()
        });
        if status == NodeStatus::Lost {
            out.agents.push((id.clone(), ToAgent::Reregister(why)));
        } else {
            out.agents.push((id.clone(), ToAgent::Shutdown(why)));
        }
        if let Some(how) = launcher {
            out.provider.push(ProviderOp::Stop { node: id.clone(), pool: pool_name.clone(), pid, how });
        }
        self.put_node(id, out);
        out.credentials.push(Credential::RetireNode(id.clone()));
    }

    /// Stops giving a node work; what it runs finishes.
    pub fn drain_node(&mut self, id: &NodeId, out: &mut Outbox) -> Result<()> {
        let node = self.nodes.get_mut(id).ok_or_else(|| Error::not_found("node", id))?;
        match node.status() {
            NodeStatus::Up => {
                node.record.status = NodeStatus::Draining;
                self.put_node(id, out);
                Ok(())
            }
            NodeStatus::Draining => Ok(()),
            _ => Err(Error::Refused(format!("node {id} is {}; only a live node can be drained", node.state()))),
        }
    }

    /// The periodic check: silent nodes are lost, late starters have failed, retries
    /// whose backoff is over are queued, draining nodes that were scaled down and are
    /// now idle are removed, and local pools are brought to their size.
    pub fn on_tick(&mut self, now: Instant, out: &mut Outbox) {
        self.expire_keys(now, out);
        self.settle_gang_failures(now, out);
        self.apply_retention(now, out);
        self.fire_schedules(now, out);
        let timeout = self.config.heartbeat_timeout;
        let start_timeout = self.config.start_timeout;
        let mut silent = Vec::new();
        let mut late = Vec::new();
        let mut done_draining = Vec::new();
        for (id, node) in &self.nodes {
            let silence = now.saturating_duration_since(node.last_seen);
            match node.status() {
                NodeStatus::Starting if silence > start_timeout => late.push(id.clone()),
                NodeStatus::Up | NodeStatus::Draining if silence > timeout => silent.push(id.clone()),
                NodeStatus::Draining if node.remove_when_idle() && node.running.is_empty() => {
                    done_draining.push(id.clone())
                }
                _ => {}
            }
        }
        for id in silent {
            self.declare_lost(now, &id, NodeReason::HeartbeatTimeout, out);
        }
        for id in late {
            tracing::warn!(node_id = %id, "node did not register within {start_timeout:?}");
            self.on_launch_failed(now, &id, "the agent did not register within the start timeout", out);
            if let Some(node) = self.nodes.get_mut(&id) {
                node.record.reason = Some(NodeReason::StartTimeout);
            }
            self.put_node(&id, out);
        }
        for id in done_draining {
            let reason = self.nodes.get(&id).and_then(|n| n.record.reason).unwrap_or(NodeReason::ScaledDown);
            self.retire_node(now, &id, NodeStatus::Removed, reason, out);
        }
        self.finish_deleting_pools(now, out);
        self.release_delayed(now);
        self.autoscale(now, out);
        self.reconcile_local_pools(now, out);
    }
}

impl Core {
    /// The pool's start task ended on a node: it takes work now, or, if the task
    /// failed, never (it is drained and the pool says why).
    pub fn on_start_task_done(&mut self, now: Instant, id: &NodeId, ok: bool, message: &str, out: &mut Outbox) {
        let Some(node) = self.nodes.get_mut(id) else { return };
        if ok {
            node.usable = true;
            node.idle_since = now;
            return;
        }
        node.usable = false;
        let pool_name = node.record.pool.clone();
        let error = format!("the start task failed on {id}: {message}");
        tracing::warn!(node_id = %id, pool = %pool_name, message, "the start task failed; the node takes no work");
        let provider = self.pools.get(&pool_name).map(|p| p.spec.provider);
        if provider.is_some_and(|p| p.starts_nodes()) {
            // A node the coordinator started: replace it, backing off like a failed launch.
            self.retire_node(now, id, NodeStatus::Removed, NodeReason::StartTaskFailed, out);
            if let Some(pool) = self.pools.get_mut(&pool_name) {
                pool.launch_failures += 1;
                pool.next_launch_at = Some(now + self.config.retry_backoff * 2u32.pow(pool.launch_failures.min(6)));
            }
        } else if let Some(node) = self.nodes.get_mut(id) {
            // An agent that joined by itself: keep it, drained, until someone fixes it.
            if node.status() == NodeStatus::Up {
                node.record.status = NodeStatus::Draining;
                node.record.reason = Some(NodeReason::StartTaskFailed);
                self.put_node(id, out);
            }
        }
        if let Some(pool) = self.pools.get_mut(&pool_name) {
            pool.last_error = Some(error);
        }
    }
}

impl Core {
    /// Whether `node` may read (or, with `write`, write) the object at `path`:
    /// only for the tasks it has been assigned. It reads their inputs (a map task
    /// its input segments, a reduce task its job's map outputs) and writes under
    /// their output prefixes (a map task its partitions, a reduce task its part).
    /// Matched without building every path a task may touch: a reduce task of a
    /// job with 10,000 map tasks costs one parse, not 10,000 strings.
    pub fn node_object_access(&self, node: &NodeId, path: &str, write: bool) -> bool {
        let path = path.trim_matches('/');
        let Some(n) = self.nodes.get(node) else { return false };
        if !n.status().is_live() {
            return false;
        }
        // A checkpoint: of a task it runs, or (to store it one last time) of the
        // attempt that was just killed on it.
        if let Some((job_id, name)) = paths::parse_checkpoint(path) {
            let Some(job) = self.jobs.get(&job_id) else { return false };
            let index = match &job.spec.graph {
                Some(graph) => graph.find(name),
                None => name.parse().ok().filter(|i| job.task(*i).is_some()),
            };
            let Some(index) = index else { return false };
            let key = TaskKey { job: job_id, index };
            let Some(task) = job.task(index) else { return false };
            if job.spec.task_spec(index).checkpoint.is_none() {
                return false;
            }
            let ended_here = write && self.ended_on.get(&AttemptRef { task: key, attempt: task.attempt }) == Some(node);
            return n.running.contains(&key) || ended_here;
        }
        n.running.iter().any(|key| {
            let Some(job) = self.jobs.get(&key.job) else { return false };
            let spec = job.spec.task_spec(key.index);
            let array_index = job.spec.array_index(key.index);
            let (job_id, index) = (key.job, array_index.to_string());
            if write {
                let outputs = paths::task_outputs(job_id, &job.spec.task_name(key.index)) + "/";
                path.starts_with(&outputs)
                    || match &spec.kind {
                        TaskKind::Map { .. } => path.starts_with(&(paths::map_outputs(job_id, array_index) + "/")),
                        TaskKind::Reduce { .. } => path == paths::reduce_output(job_id, array_index),
                        TaskKind::Command => false,
                    }
            } else {
                let input = spec.inputs.iter().any(|i| i.object.replace("{index}", &index).trim_matches('/') == path);
                input
                    || match &spec.kind {
                        TaskKind::Map { splits, .. } => splits
                            .get(array_index as usize)
                            .is_some_and(|segments| segments.iter().any(|s| s.object.trim_matches('/') == path)),
                        // shuffle/JOB/M/part-R, for any map task M and this task's R.
                        TaskKind::Reduce { map_tasks } => paths::parse_map_output(job_id, path)
                            .is_some_and(|(m, r)| m < *map_tasks && r == array_index),
                        TaskKind::Command => false,
                    }
            }
        })
    }
}
