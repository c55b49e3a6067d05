//! The invariants that tie the core's maps together, checked by tests after every
//! step (as tako's `Core::sanity_check`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::*;

impl Core {
    /// Checks the invariants that tie the maps together; panics with the first one
    /// broken. Tests call it after every step.
    pub fn sanity_check(&self) {
        let mut slots_by_node: BTreeMap<&NodeId, u32> = BTreeMap::new();
        // Attempts queued on nodes for a slot: (slots, attempts) per node, attempts per job.
        let mut queued_by_node: BTreeMap<&NodeId, (u32, u32)> = BTreeMap::new();
        let mut assigned_by_job: BTreeMap<JobId, u32> = BTreeMap::new();
        let mut keyed: HashMap<String, u32> = HashMap::new();
        for (key, run) in &self.running {
            let job = &self.jobs[&key.job];
            if let Some(k) = &job.spec.policy.concurrency_key {
                *keyed.entry(k.clone()).or_default() += 1;
            }
            let task = job.task(key.index).expect("running task exists");
            assert_eq!(task.state, TaskState::Running, "{key} in running map is {:?}", task.state);
            assert_eq!(task.attempt, run.attempt, "{key} attempt");
            for id in run.places() {
                let node = &self.nodes[id];
                assert!(node.running.contains(key), "{key} missing from node {id}");
                // A multi-node task holds each of its nodes whole.
                let slots =
                    if run.members.is_empty() { job.spec.task_spec(key.index).slots } else { node.record.slots };
                *slots_by_node.entry(id).or_default() += slots;
            }
            let distinct: BTreeSet<&NodeId> = run.places().collect();
            assert_eq!(distinct.len(), 1 + run.members.len(), "{key}: a node twice in one gang");
            assert!(!run.queued || run.members.is_empty(), "{key}: a multi-node task queued on a node");
            if run.queued {
                let on_node = queued_by_node.entry(&run.node).or_default();
                on_node.0 += job.spec.task_spec(key.index).slots;
                on_node.1 += 1;
                *assigned_by_job.entry(key.job).or_default() += 1;
            }
        }
        assert_eq!(keyed, self.keyed, "running tasks per concurrency key");
        // No job runs more than its limit, and no key more than the largest limit
        // of its jobs (each task started while its key ran fewer than its job's).
        let mut key_limits: HashMap<&str, u32> = HashMap::new();
        for job in self.jobs.values() {
            let limit = match job.spec.policy.throttle() {
                Throttle::Job(n) => n,
                Throttle::Key(k, n) => {
                    let most = key_limits.entry(k).or_default();
                    *most = (*most).max(n);
                    n
                }
                Throttle::None => u32::MAX,
            };
            assert!(job.counts.running <= limit, "job {} runs {} of at most {limit}", job.id, job.counts.running);
        }
        for (k, n) in &keyed {
            let most = key_limits.get(k.as_str()).copied().unwrap_or(0);
            assert!(*n <= most, "key {k} runs {n} tasks, more than any of its jobs allows ({most})");
        }
        // Resources: what each node's tasks hold adds up, never past what it has,
        // and no device is given twice.
        let mut held: BTreeMap<&NodeId, (Resources, Vec<u32>)> = BTreeMap::new();
        for (key, run) in &self.running {
            let entry = held.entry(&run.node).or_default();
            for (name, amount) in &self.jobs[&key.job].spec.task_spec(key.index).resources {
                *entry.0.entry(name.clone()).or_default() += amount;
            }
            entry.1.extend(run.gpus.iter().copied());
        }
        for (id, node) in &self.nodes {
            let (resources, gpus) = held.remove(id).unwrap_or_default();
            assert_eq!(node.resources_used, resources, "resources held on {id}");
            for (name, amount) in &resources {
                let has = node.record.resources.get(name).copied().unwrap_or(0);
                assert!(*amount <= has, "{id} holds {name}={amount} of {has}");
            }
            let distinct: BTreeSet<u32> = gpus.iter().copied().collect();
            assert_eq!(distinct.len(), gpus.len(), "a device of {id} given twice: {gpus:?}");
            assert_eq!(distinct, node.gpus_taken, "devices taken on {id}");
            assert!(gpus.iter().all(|&g| u64::from(g) < node.gpus()), "{id} has no device in {gpus:?}");
            let asked = resources.get(corral_types::resources::GPUS).copied().unwrap_or(0);
            assert_eq!(asked, gpus.len() as u64, "devices of {id} match the requests");
        }
        for (id, node) in &self.nodes {
            assert_eq!(node.slots_used, slots_by_node.get(id).copied().unwrap_or(0), "slots of {id}");
            let queued = queued_by_node.get(id).copied().unwrap_or_default();
            assert_eq!((node.queued_slots, node.queued), queued, "slots and attempts queued on {id}");
            for key in &node.running {
                assert!(self.running.get(key).is_some_and(|r| r.is_on(id)), "{key} on {id}");
            }
            let in_pool = self.pools.get(&node.record.pool).is_some_and(|p| p.nodes.contains(id));
            assert_eq!(in_pool, node.status().is_live(), "pool membership of {id}");
            if !node.status().is_live() {
                assert!(node.running.is_empty(), "dead node {id} runs tasks");
            }
        }
        for (dep, waiting) in &self.waited_for {
            assert_eq!(self.jobs.get(dep).map(|j| j.state), Some(JobState::Active), "job {dep} is waited for");
            assert!(!waiting.is_empty(), "job {dep}: an empty wait");
            for id in waiting {
                let job = &self.jobs[id];
                assert_eq!(job.state, JobState::Active, "finished job {id} waits for {dep}");
                assert!(job.held_by.contains(dep), "job {id} waits for {dep} unheld");
            }
        }
        for job in self.jobs.values() {
            for dep in &job.held_by {
                assert!(self.waited_for.get(dep).is_some_and(|w| w.contains(&job.id)), "job {} held by {dep}", job.id);
            }
        }
        for (name, s) in &self.schedules {
            for id in &s.active {
                let job = &self.jobs[id];
                assert_eq!(job.state, JobState::Active, "schedule {name} counts finished job {id} as active");
                assert_eq!(job.spec.schedule.as_ref().map(|r| &r.schedule), Some(name), "job {id} of schedule {name}");
            }
            assert!(s.next_slot.is_none_or(|slot| slot > s.cursor_ms), "schedule {name}: next slot before its cursor");
        }
        for job in self.jobs.values().filter(|j| j.state == JobState::Active) {
            if let Some(s) = job.spec.schedule.as_ref().and_then(|r| self.schedules.get(&r.schedule)) {
                assert!(s.active.contains(&job.id), "active job {} missing from schedule {}", job.id, s.spec.name);
            }
        }
        for (name, t) in &self.triggers {
            assert!(
                self.templates.contains_key(&t.record.spec.template),
                "trigger {name} dispatches a missing template"
            );
            assert!(t.record.recent.len() <= super::triggers::FIRES_KEPT, "trigger {name} keeps too many dispatches");
            assert!(t.record.spec.poll.is_some() || t.seen.is_empty(), "put trigger {name} has a poll cursor");
        }
        let delayed: BTreeSet<TaskKey> = self.delayed.iter().map(|(_, k)| *k).collect();
        for job in self.jobs.values() {
            let mut counts =
                Counts { assigned: assigned_by_job.get(&job.id).copied().unwrap_or(0), ..Counts::default() };
            for (i, (index, task)) in job.spec.indices().zip(&job.tasks).enumerate() {
                *counts.slot(task.state) += 1;
                let key = TaskKey { job: job.id, index };
                let queued = job.ready.contains(&index) || delayed.contains(&key);
                assert_eq!(queued, task.state == TaskState::Ready, "{key} queued vs {:?}", task.state);
                assert_eq!(self.running.contains_key(&key), task.state == TaskState::Running, "{key}");
                if let Some(graph) = &job.spec.graph {
                    let pending =
                        graph.upstream[i].iter().filter(|&&u| job.tasks[u as usize].state != TaskState::Succeeded);
                    assert_eq!(job.waiting_on[i] as usize, pending.count(), "{key} waiting_on");
                    if !task.state.is_final() {
                        assert_eq!(
                            task.state == TaskState::Waiting,
                            job.waiting_on[i] > 0,
                            "{key} waits iff upstream is pending"
                        );
                    }
                }
            }
            assert_eq!(counts, job.counts, "counts of job {}", job.id);
            assert_eq!(job.spec.indices().count(), job.tasks.len(), "indices of job {}", job.id);
            for index in &job.ready {
                assert!(job.task(*index).is_some(), "job {} queues task {index}, which it does not have", job.id);
            }
            let listed = self.pools.get(&job.spec.pool).is_some_and(|p| p.jobs.contains(&job.priority_key()));
            assert_eq!(listed, job.state == JobState::Active, "job {} listing", job.id);
            if job.state != JobState::Active {
                assert_eq!(job.counts.finished(), job.tasks.len() as u32, "job {} finished early", job.id);
            }
        }
    }
}
