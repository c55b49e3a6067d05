//! Pools: create, resize, delete, and keeping local pools at their size.

use std::time::Instant;

use super::*;
use crate::error::{Error, Result};

/// What a pool delete did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Deleted {
    pub cancelled_jobs: Vec<JobId>,
    pub stopped_nodes: u32,
    /// Nodes finishing their tasks first (task-completion); the pool goes after them.
    pub draining_nodes: u32,
}

impl Core {
    pub fn create_pool(&mut self, now: Instant, mut spec: PoolSpec, out: &mut Outbox) -> Result<()> {
        if self.pools.contains_key(&spec.name) {
            return Err(Error::AlreadyExists { what: "pool", id: spec.name.to_string() });
        }
        if let Some(auto) = &spec.autoscale {
            check_autoscale(&spec, auto)?;
            spec.target_nodes = auto.min;
        }
        let created_at_ms = self.wall_ms(now);
        out.store.push(StoreOp::PutPool { spec: spec.clone(), created_at_ms, deleting: false });
        if spec.provider.starts_nodes() {
            out.credentials.push(Credential::MintPoolToken(spec.name.clone()));
        }
        tracing::info!(pool = %spec.name, provider = %spec.provider, nodes = spec.target_nodes, "pool created");
        self.pools.insert(spec.name.clone(), new_pool(spec, created_at_ms));
        self.reconcile_local_pools(now, out);
        Ok(())
    }

    /// Sets a local pool's node count; the coordinator starts or stops agents to match.
    pub fn resize_pool(&mut self, now: Instant, name: &PoolName, target: u32, out: &mut Outbox) -> Result<()> {
        let pool = self.pools.get_mut(name).ok_or_else(|| Error::not_found("pool", name))?;
        refuse_if_deleting(pool)?;
        if pool.spec.provider == Provider::Static {
            return Err(Error::Refused(format!(
                "pool '{name}' uses the static provider: its size is the number of agents that join it; start or stop `corral-agent --pool {name}` to change it"
            )));
        }
        if pool.spec.autoscale.is_some() {
            return Err(Error::Refused(format!(
                "pool '{name}' is autoscaled: change its bounds with `corral pool autoscale {name} --min N --max M`, or --disable it first"
            )));
        }
        pool.spec.target_nodes = target;
        pool.launch_failures = 0;
        pool.next_launch_at = None;
        out.store.push(pool.stored());
        self.reconcile_local_pools(now, out);
        Ok(())
    }

    /// Deletes a pool. Without active jobs, or with `force` (which cancels them), its
    /// nodes are stopped and it is gone at once. With active jobs it is taken down by
    /// its removal policy: it takes no new job and starts no new task or node; each
    /// node goes as the policy says (task-completion: once its running tasks end;
    /// requeue and terminate: now); and when the last node is gone, what has not run
    /// of its jobs is cancelled and the pool is deleted.
    pub fn delete_pool(&mut self, now: Instant, name: &PoolName, force: bool, out: &mut Outbox) -> Result<Deleted> {
        let pool = self.pools.get_mut(name).ok_or_else(|| Error::not_found("pool", name))?;
        let active: Vec<JobId> = pool.jobs.iter().map(|(_, id)| *id).collect();
        let nodes: Vec<NodeId> = pool.nodes.iter().cloned().collect();
        if active.is_empty() || force {
            for id in &active {
                self.cancel_job(now, *id, out)?;
            }
            for id in &nodes {
                self.retire_node(now, id, NodeStatus::Removed, NodeReason::PoolDeleted, out);
            }
            self.remove_pool(name, out);
            tracing::info!(pool = %name, cancelled_jobs = active.len(), stopped_nodes = nodes.len(), "pool deleted");
            return Ok(Deleted { cancelled_jobs: active, stopped_nodes: nodes.len() as u32, draining_nodes: 0 });
        }
        pool.deleting = true;
        let policy = pool.spec.removal;
        out.store.push(pool.stored());
        for id in &nodes {
            self.take_out(now, id, policy, NodeReason::PoolDeleted, out);
        }
        let draining = self.pools.get(name).map_or(0, |p| p.nodes.len() as u32);
        tracing::info!(pool = %name, %policy, draining, active_jobs = active.len(), "deleting the pool by its removal policy");
        let cancelled = if draining == 0 { active } else { Vec::new() };
        self.finish_deleting_pools(now, out);
        Ok(Deleted {
            cancelled_jobs: cancelled,
            stopped_nodes: nodes.len() as u32 - draining,
            draining_nodes: draining,
        })
    }

    /// Deletes the pools being deleted whose last node is gone, cancelling what has
    /// not run of their jobs.
    pub(super) fn finish_deleting_pools(&mut self, now: Instant, out: &mut Outbox) {
        let done: Vec<PoolName> =
            self.pools.values().filter(|p| p.deleting && p.nodes.is_empty()).map(|p| p.spec.name.clone()).collect();
        for name in done {
            let jobs: Vec<JobId> =
                self.pools.get(&name).map(|p| p.jobs.iter().map(|(_, id)| *id).collect()).unwrap_or_default();
            for id in &jobs {
                let _ = self.cancel_job(now, *id, out);
            }
            self.remove_pool(&name, out);
            tracing::info!(pool = %name, cancelled_jobs = jobs.len(), "pool deleted: its last node is gone");
        }
    }

    /// Forgets a pool, and its agent token with it.
    fn remove_pool(&mut self, name: &PoolName, out: &mut Outbox) {
        self.pools.remove(name);
        out.store.push(StoreOp::DeletePool(name.clone()));
        out.credentials.push(Credential::RevokePoolToken(name.clone()));
    }

    /// Starts or stops local agents so each local pool has its target size. Shrinking
    /// removes starting and idle nodes first; busy ones are drained and removed when
    /// their last task ends, so scaling down loses no work.
    pub(super) fn reconcile_local_pools(&mut self, now: Instant, out: &mut Outbox) {
        let names: Vec<PoolName> = self
            .pools
            .values()
            .filter(|p| p.spec.provider.starts_nodes() && !p.deleting)
            .map(|p| p.spec.name.clone())
            .collect();
        for name in names {
            let pool = &self.pools[&name];
            let counted: Vec<&Node> =
                pool.nodes.iter().filter_map(|id| self.nodes.get(id)).filter(|n| n.counts_toward_size()).collect();
            let autoscaled = pool.spec.autoscale.is_some();
            let have = counted.len() as u32;
            let target = pool.spec.target_nodes;
            if have < target {
                if pool.next_launch_at.is_some_and(|at| now < at) {
                    continue;
                }
                let slots = pool.spec.slots_per_node;
                for _ in have..target {
                    let id = NodeId::from_seq(self.next_node);
                    self.next_node += 1;
                    let record = NodeRecord {
                        id: id.clone(),
                        pool: name.clone(),
                        hostname: String::new(),
                        slots,
                        cpus: 0,
                        memory_bytes: 0,
                        pid: 0,
                        status: NodeStatus::Starting,
                        reason: None,
                        registered_at_ms: 0,
                        resources: Resources::new(),
                    };
                    out.store.push(StoreOp::PutNode(record.clone()));
                    if let Some(how) = self.pools.get(&name).and_then(|p| p.spec.launcher()) {
                        out.provider.push(ProviderOp::Launch { node: id.clone(), pool: name.clone(), slots, how });
                    }
                    self.nodes.insert(id.clone(), new_node(record, now));
                    if let Some(pool) = self.pools.get_mut(&name) {
                        pool.nodes.insert(id);
                    }
                }
            } else if have > target {
                // Cheapest to remove first: not yet started, then idle, then the
                // least busy.
                let mut victims: Vec<(u8, u32, NodeId)> = counted
                    .iter()
                    .map(|n| {
                        let rank = match n.status() {
                            NodeStatus::Starting => 0,
                            _ if n.running.is_empty() => 1,
                            _ => 2,
                        };
                        (rank, n.slots_used, n.record.id.clone())
                    })
                    .collect();
                victims.sort();
                let policy = self.pools[&name].spec.removal;
                for (rank, _, id) in victims.into_iter().take((have - target) as usize) {
                    // The autoscaler removes idle nodes itself; never busy ones here.
                    if autoscaled && rank == 2 {
                        break;
                    }
                    self.take_out(now, &id, policy, NodeReason::ScaledDown, out);
                }
            }
        }
    }
}

impl Core {
    /// Stops every node of the local pools: the coordinator is shutting down and
    /// takes the agents it started with it. Their tasks go back to the queue.
    pub fn stop_local_nodes(&mut self, now: Instant, out: &mut Outbox) {
        let ids: Vec<NodeId> = self
            .pools
            .values()
            .filter(|p| p.spec.provider == Provider::Local)
            .flat_map(|p| p.nodes.iter().cloned())
            .collect();
        for id in ids {
            self.retire_node(now, &id, NodeStatus::Removed, NodeReason::CoordinatorShutdown, out);
        }
    }
}

/// A pool being deleted takes no more jobs, nodes or changes.
pub(super) fn refuse_if_deleting(pool: &Pool) -> Result<()> {
    if pool.deleting {
        return Err(Error::Refused(format!(
            "pool '{}' is being deleted (its nodes are finishing their tasks); `corral pool delete {} --force` stops them now",
            pool.spec.name, pool.spec.name
        )));
    }
    Ok(())
}

/// Autoscaling needs a provider that can start nodes, and bounds that make sense.
fn check_autoscale(spec: &PoolSpec, auto: &Autoscale) -> Result<()> {
    if !spec.provider.starts_nodes() {
        return Err(Error::Refused(format!(
            "pool '{}' uses the static provider: the coordinator cannot start its nodes, so it cannot autoscale; use --provider local, command or docker",
            spec.name
        )));
    }
    if auto.min > auto.max {
        return Err(
            crate::error::Invalid::new("autoscale", format!("min {} is more than max {}", auto.min, auto.max)).into()
        );
    }
    if auto.max == 0 {
        return Err(crate::error::Invalid::new("autoscale.max", "must be at least 1").into());
    }
    Ok(())
}

impl Core {
    /// Turns autoscaling on with `auto`, or off (`None`, keeping the current size).
    pub fn set_autoscale(
        &mut self,
        now: Instant,
        name: &PoolName,
        auto: Option<Autoscale>,
        out: &mut Outbox,
    ) -> Result<()> {
        let pool = self.pools.get_mut(name).ok_or_else(|| Error::not_found("pool", name))?;
        refuse_if_deleting(pool)?;
        if let Some(auto) = &auto {
            check_autoscale(&pool.spec, auto)?;
        }
        pool.spec.autoscale = auto;
        pool.last_scale_at = None;
        out.store.push(pool.stored());
        self.autoscale(now, out);
        self.reconcile_local_pools(now, out);
        Ok(())
    }
}

impl Core {
    /// Removes a node by `policy`, or its pool's.
    pub fn remove_node(
        &mut self,
        now: Instant,
        id: &NodeId,
        policy: Option<RemovalPolicy>,
        out: &mut Outbox,
    ) -> Result<()> {
        let node = self.nodes.get(id).ok_or_else(|| Error::not_found("node", id))?;
        if !node.status().is_live() {
            return Err(Error::Refused(format!("node {id} is already {}", node.state())));
        }
        let policy = policy
            .or_else(|| self.pools.get(&node.record.pool).map(|p| p.spec.removal))
            .unwrap_or(RemovalPolicy::TaskCompletion);
        self.take_out(now, id, policy, NodeReason::Removed, out);
        Ok(())
    }

    /// Takes a node out of its pool: at once if it has nothing to finish, else as
    /// `policy` says.
    pub(super) fn take_out(
        &mut self,
        now: Instant,
        id: &NodeId,
        policy: RemovalPolicy,
        reason: NodeReason,
        out: &mut Outbox,
    ) {
        let Some(node) = self.nodes.get_mut(id) else { return };
        if node.running.is_empty() || node.status() == NodeStatus::Starting {
            self.retire_node(now, id, NodeStatus::Removed, reason, out);
            return;
        }
        match policy {
            RemovalPolicy::TaskCompletion => {
                node.record.status = NodeStatus::Draining;
                node.record.reason = Some(reason);
                self.put_node(id, out);
            }
            RemovalPolicy::Requeue => self.retire_node(now, id, NodeStatus::Removed, reason, out),
            RemovalPolicy::Terminate => {
                let tasks: Vec<TaskKey> = node.running.iter().copied().collect();
                let why = format!("killed: node {id} was removed with the terminate policy");
                for key in tasks {
                    if self.kill_attempt(now, key, &why, out) {
                        self.fail_task(now, key, out);
                    }
                }
                self.retire_node(now, id, NodeStatus::Removed, reason, out);
            }
        }
    }
}
