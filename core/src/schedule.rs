//! The scheduler: ready tasks, by job priority and then submission order, onto the
//! free slots of their pool's connected nodes, chosen by the pool's fill policy. A
//! job with `--max-running` (or a concurrency key) starts no task beyond its limit;
//! the next job gets the slots.
//!
//! Two passes. The first fills free slots. The second, for jobs whose tasks have
//! been short (mean run time under `CoreConfig::prefetch_below`), gives each node
//! [`PREFETCH_PER_SLOT`] more tasks per slot, which its agent queues and starts the
//! moment a slot frees:
//! for short tasks the round trip to the coordinator (and its fsync) would otherwise
//! leave slots idle between tasks. Long tasks are never prefetched, so a slow task
//! never holds another back, and the second pass stops at the first job that is not
//! short, so prefetching never lets a lower-priority job jump a higher one.

use std::time::Instant;

use super::*;

/// Short tasks queued ahead on a node, per slot: enough to cover the round trip
/// (a result's group commit, then the next assignment) with tasks of a
/// millisecond. On 10,000 `/bin/true` tasks, 8 against 2 took the median from
/// 7.99 s to 5.99 s (docs/BENCHMARKS.md); a short task waits behind at most eight.
pub const PREFETCH_PER_SLOT: u32 = 8;

impl Core {
    /// Assigns as many ready tasks as free slots allow. Returns how many it assigned.
    /// Each assignment becomes a `running` task with a new attempt number; the
    /// messages go out (batched per node by the shell) once that is durable.
    pub fn schedule(&mut self, now: Instant, out: &mut Outbox) -> usize {
        let mut assigned = 0;
        let pool_names: Vec<PoolName> = self.pools.keys().cloned().collect();
        for name in pool_names {
            assigned += self.schedule_pool(now, &name, false, out);
            assigned += self.schedule_pool(now, &name, true, out);
        }
        assigned
    }

    fn schedule_pool(&mut self, now: Instant, name: &PoolName, prefetch: bool, out: &mut Outbox) -> usize {
        let Some(pool) = self.pools.get(name) else { return 0 };
        if pool.jobs.is_empty() {
            return 0;
        }
        let fill = pool.spec.fill;
        // The nodes a waiting multi-node task holds (while it still waits): the
        // first pass keeps them for it (renewing the hold when it meets the task),
        // the second (queueing short tasks ahead) keeps off them.
        let mut hold = pool.gang.clone().filter(|h| {
            self.jobs.get(&h.task.job).is_some_and(|j| j.ready.contains(&h.task.index) && !j.held(self.wall_ms(now)))
        });
        // (slots it can take now, node id) of the nodes that can take work, and
        // each one's slots.
        let (mut free, whole): (Vec<(u32, NodeId)>, Vec<u32>) = pool
            .nodes
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .filter(|n| n.status() == NodeStatus::Up && n.connected && n.usable)
            .filter(|n| !prefetch || hold.as_ref().is_none_or(|h| !h.holds(&n.record.id)))
            .map(|n| {
                let capacity = if prefetch { (1 + PREFETCH_PER_SLOT) * n.record.slots } else { n.record.slots };
                ((capacity.saturating_sub(n.slots_used), n.record.id.clone()), n.record.slots)
            })
            .filter(|((free, _), _)| *free > 0)
            .unzip();
        if free.is_empty() {
            // Nothing can start; a hold stays as it was until something frees.
            if !prefetch {
                let kept = hold.clone();
                if let Some(pool) = self.pools.get_mut(name) {
                    pool.gang = kept;
                }
            }
            return 0;
        }
        // Whether work of a higher priority than `job` waits for nodes: then a
        // multi-node task of `job` does not hold any.
        let mut waiting_above: Option<i32> = None;
        let jobs: Vec<JobId> = pool.jobs.iter().map(|(_, id)| *id).collect();
        let started_at_ms = self.wall_ms(now);
        let short = self.config.prefetch_below.as_millis() as u64;
        let default_max_output = self.config.max_output;
        let mut assigned = 0;
        // Once no slot is free, the walk goes on only to find a multi-node task
        // that should hold nodes (none does below the priority of work waiting).
        let mut exhausted = false;
        for job_id in jobs {
            let Some(job) = self.jobs.get_mut(&job_id) else { continue };
            if job.held(started_at_ms) {
                continue;
            }
            if prefetch && !job.ready.is_empty() && !job.runs.is_short(short) {
                break;
            }
            let priority = job.spec.priority;
            if exhausted {
                if waiting_above.is_some_and(|p| p > priority) {
                    break;
                }
                let Some(&first) = job.ready.first() else { continue };
                if !job.spec.task_spec(first).is_multi_node() {
                    waiting_above.get_or_insert(priority);
                    continue;
                }
            }
            let max_output = job.spec.max_output_or(default_max_output);
            let concurrency_key = job.spec.policy.concurrency_key.clone();
            let mut room = room(job, &self.keyed);
            while let Some(&index) = job.ready.first() {
                if room == 0 {
                    break;
                }
                let task_spec = job.spec.task_spec(index);
                let need = task_spec.slots;
                let want = &task_spec.resources;
                // Where it goes: a slot, or for a multi-node task, rank 0's node
                // and the others'.
                let (slot, members) = if task_spec.is_multi_node() {
                    if prefetch {
                        break;
                    }
                    let key = TaskKey { job: job_id, index };
                    // Its own held nodes are its; another's are not.
                    let others = hold.as_ref().filter(|h| h.task != key && h.priority >= priority);
                    match gangs::whole_nodes(&free, &whole, task_spec.nodes, others) {
                        Some(places) => {
                            if hold.as_ref().is_some_and(|h| h.task == key) {
                                hold = None;
                            }
                            (places[0], places[1..].to_vec())
                        }
                        None => {
                            // It holds unless work of a higher priority waits for
                            // nodes, or another gang of its priority or more holds.
                            let may_hold = waiting_above.is_none_or(|p| p <= priority)
                                && hold.as_ref().is_none_or(|h| h.task == key || h.priority < priority);
                            if !may_hold && hold.as_ref().is_some_and(|h| h.task == key) {
                                hold = None;
                            }
                            if may_hold {
                                let usable: Vec<NodeId> = self.pools[name]
                                    .nodes
                                    .iter()
                                    .filter(|id| {
                                        self.nodes
                                            .get(*id)
                                            .is_some_and(|n| n.status() == NodeStatus::Up && n.connected && n.usable)
                                    })
                                    .cloned()
                                    .collect();
                                let wants = task_spec.nodes;
                                let chosen =
                                    gangs::choose(&self.nodes, &self.running, &usable, key, wants, started_at_ms);
                                hold = Some(gangs::Hold { priority, ..chosen });
                            }
                            waiting_above.get_or_insert(priority);
                            break;
                        }
                    }
                } else {
                    let nodes = &self.nodes;
                    // Work of a higher priority than the holder's is not held back.
                    let held = hold.as_ref().filter(|h| h.priority >= priority);
                    // Most tasks ask for no resources: no node lookup for them.
                    let fits = |id: &NodeId| want.is_empty() || nodes.get(id).is_some_and(|n| n.fits(want));
                    let open = |id: &NodeId| held.is_none_or(|h| !h.holds(id)) && fits(id);
                    let placed = pick(&free, need, fill, open).or_else(|| {
                        // Backfill: a held node, for a task that ends before the gang starts.
                        let backfills = held.is_some_and(|h| h.lets_backfill(task_spec.timeout, started_at_ms));
                        let on_held = |id: &NodeId| held.is_some_and(|h| h.holds(id)) && fits(id);
                        backfills.then(|| pick(&free, need, fill, on_held)).flatten()
                    });
                    match placed {
                        Some(slot) => (slot, Vec::new()),
                        None => {
                            waiting_above.get_or_insert(priority);
                            break;
                        }
                    }
                };
                let node = free[slot].1.clone();
                let members: Vec<NodeId> = members
                    .into_iter()
                    .map(|m| {
                        free[m].0 = 0;
                        free[m].1.clone()
                    })
                    .collect();
                free[slot].0 -= if members.is_empty() { need } else { free[slot].0 };
                let (gpus, gpu_env) = match self.nodes.get(&node) {
                    Some(n) if n.gpus() > 0 => {
                        let gpus = gpus_for(n, want);
                        let env = gpu_env(&gpus);
                        (gpus, env)
                    }
                    _ => (Vec::new(), Vec::new()),
                };
                job.ready.pop_first();
                let queued_at_ms = job.queued_at.remove(&index).unwrap_or(job.queued_since_ms);
                let spec = job.spec.task_spec(index);
                let array_index = job.spec.array_index(index);
                let name = job.spec.task_name(index);
                let assignment = |attempt| Assignment {
                    attempt,
                    output_prefix: corral_types::paths::task_outputs(job_id, &name),
                    name: name.clone(),
                    array_index,
                    argv: spec.argv_for(array_index),
                    env: spec.env_for(array_index),
                    slots: need,
                    timeout: spec.timeout,
                    inputs: spec.inputs_for(array_index),
                    outputs: spec.outputs.clone(),
                    outputs_when: spec.outputs_when,
                    work: Work::of(job_id, spec, array_index),
                    max_output,
                    checkpoint: spec
                        .checkpoint
                        .clone()
                        .map(|path| (path, corral_types::paths::task_checkpoint(job_id, &name))),
                    checkpoint_interval: spec.checkpoint_interval,
                    sent_ahead: prefetch,
                    gang: None,
                    coordination: spec.coordination.clone(),
                };
                let next = job.task(index).map_or(1, |t| t.attempt + 1);
                let attempt = AttemptRef { task: TaskKey { job: job_id, index }, attempt: next };
                let mut assignment = assignment(attempt);
                assignment.env.extend(gpu_env);
                let resources = spec.resources.clone();
                let timeout_ms = spec.timeout.map(|t| t.as_millis() as u64);
                // A queued task is ready, and ready may become running.
                if !transitions::expected(job.move_task(index, TaskState::Running)) {
                    continue;
                }
                let task = job.task_mut(index).expect("ready index belongs to the job");
                task.attempt = next;
                let task = *task;
                out.store.push(StoreOp::PutTask(TaskRecord {
                    key: attempt.task,
                    state: TaskState::Running,
                    attempt: task.attempt,
                    failures: task.failures,
                    node_losses: task.node_losses,
                    reason: None,
                }));
                let start = StoreOp::StartAttempt {
                    attempt,
                    node: node.clone(),
                    members: members.clone(),
                    started_at_ms,
                    queued_at_ms,
                    gpus: gpus.clone(),
                };
                out.store.push(start);
                out.store.extend(crate::continuous::forget_before(job, index, next));
                if members.is_empty() {
                    out.agents.push((node.clone(), ToAgent::Assign(Box::new(assignment))));
                } else {
                    let ranks: Vec<&NodeId> = std::iter::once(&node).chain(&members).collect();
                    // Every rank is told the same picture, made once.
                    let all = gangs::Place {
                        rank: 0,
                        nodes: ranks.iter().map(|id| (*id).clone()).collect(),
                        hosts: ranks
                            .iter()
                            .map(|id| self.nodes.get(*id).map_or_else(String::new, Node::host))
                            .collect(),
                        slots: ranks.iter().map(|id| self.nodes.get(*id).map_or(need, |n| n.record.slots)).collect(),
                    };
                    for (rank, id) in ranks.iter().enumerate() {
                        // Each rank holds its node whole.
                        let slots = all.slots[rank];
                        let gang = Some(gangs::Place { rank: rank as u32, ..all.clone() });
                        let a = Assignment { gang, slots, ..assignment.clone() };
                        out.agents.push(((*id).clone(), ToAgent::Assign(Box::new(a))));
                    }
                }
                let run = RunningAttempt {
                    node,
                    members,
                    attempt: attempt.attempt,
                    started_at_ms,
                    timeout_ms,
                    gpus,
                    queued: prefetch,
                };
                job.counts.assigned += u32::from(prefetch);
                let occupied = transitions::Need {
                    slots: need,
                    resources: &resources,
                    concurrency_key: concurrency_key.as_deref(),
                };
                transitions::occupy(&mut self.running, &mut self.nodes, &mut self.keyed, attempt.task, run, occupied);
                room -= 1;
                assigned += 1;
            }
            if free.iter().all(|(slots, _)| *slots == 0) {
                if prefetch || hold.is_some() {
                    break;
                }
                exhausted = true;
            }
        }
        if !prefetch {
            if let Some(pool) = self.pools.get_mut(name) {
                pool.gang = hold;
            }
        }
        assigned
    }
}

impl Node {
    /// Where a multi-node task's other ranks reach it: the address its agent
    /// connects from, else its hostname.
    pub fn host(&self) -> String {
        if self.address.is_empty() {
            self.record.hostname.clone()
        } else {
            self.address.clone()
        }
    }
}

/// How many more of `job`'s tasks may start now: what its `--max-running` leaves,
/// or what its concurrency key's leaves (`keyed`: tasks running per key).
pub fn room(job: &Job, keyed: &HashMap<String, u32>) -> u32 {
    match job.spec.policy.throttle() {
        Throttle::None => u32::MAX,
        Throttle::Job(n) => n.saturating_sub(job.counts.running),
        Throttle::Key(k, n) => n.saturating_sub(keyed.get(k).copied().unwrap_or(0)),
    }
}

/// The devices a task asking for `want` gets on `node`: the lowest free ones.
fn gpus_for(node: &Node, want: &Resources) -> Vec<u32> {
    match want.get(corral_types::resources::GPUS) {
        Some(&count) if count > 0 => {
            corral_types::resources::pick_devices(node.gpus(), &node.gpus_taken, count).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// What a task on a node with devices is told of its own: `CORRAL_GPUS` and
/// `CUDA_VISIBLE_DEVICES` list them; one that asked for none gets empty lists, so
/// it cannot take another task's.
fn gpu_env(gpus: &[u32]) -> Vec<(String, String)> {
    let list = gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    vec![("CORRAL_GPUS".into(), list.clone()), ("CUDA_VISIBLE_DEVICES".into(), list)]
}

/// The node (index into `free`) a task needing `need` slots goes to, among those
/// where its resources `fit`: for `spread` the one with the most free slots, for
/// `pack` the one with the fewest that still fits. Ties go to the first listed
/// (node ids in order), so the choice is stable.
pub fn pick(free: &[(u32, NodeId)], need: u32, fill: Fill, fit: impl Fn(&NodeId) -> bool) -> Option<usize> {
    let fits = free.iter().enumerate().filter(|(_, (slots, id))| *slots >= need && fit(id));
    match fill {
        Fill::Spread => fits.max_by_key(|(i, (slots, _))| (*slots, std::cmp::Reverse(*i))).map(|(i, _)| i),
        Fill::Pack => fits.min_by_key(|(i, (slots, _))| (*slots, *i)).map(|(i, _)| i),
    }
}
