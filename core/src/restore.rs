//! Rebuilding the core from the store after a restart, and repairing what a crash
//! between two writes can leave behind.

use std::collections::HashSet;
use std::time::Instant;

use super::*;

impl Core {
    /// Rebuilds the state from the store. Nodes that were live get two heartbeat
    /// timeouts, from `now`, to reconnect before they are declared lost (their
    /// agents may be between two reconnection attempts). Repairs of
    /// what a crash between two writes left behind go into `out`.
    pub fn restore(&mut self, snapshot: Snapshot, now: Instant, out: &mut Outbox) {
        for record in snapshot.keys {
            self.keys.insert(record);
        }
        self.expire_keys(now, out);
        for (spec, created_at_ms, deleting) in snapshot.pools {
            let name = spec.name.clone();
            let mut pool = new_pool(spec, created_at_ms);
            pool.deleting = deleting;
            self.pools.insert(name, pool);
        }
        for (name, record) in snapshot.scale_log {
            if let Some(pool) = self.pools.get_mut(&name) {
                pool.scale_log.push_back(record);
            }
        }
        for record in snapshot.nodes {
            self.next_node = self.next_node.max(record.id.seq().unwrap_or(0) + 1);
            if record.status.is_live() {
                if let Some(pool) = self.pools.get_mut(&record.pool) {
                    pool.nodes.insert(record.id.clone());
                }
            }
            let grace = now + self.config.heartbeat_timeout;
            self.nodes.insert(record.id.clone(), new_node(record, grace));
        }
        for template in snapshot.templates {
            self.templates.insert(template.spec.name.clone(), template);
        }
        for (record, seen) in snapshot.triggers {
            self.triggers.insert(record.spec.name.clone(), triggers::Trigger::new(record, seen));
        }
        for (record, runs) in snapshot.schedules {
            let mut schedule = schedules::Schedule::from_record(record);
            schedule.runs = runs.into_iter().collect();
            self.schedules.insert(schedule.spec.name.clone(), schedule);
        }
        for record in snapshot.jobs {
            self.next_job = self.next_job.max(record.id.0 + 1);
            if let (JobState::Active, Some(run)) = (record.state, &record.spec.schedule) {
                if let Some(s) = self.schedules.get_mut(&run.schedule) {
                    s.active.insert(record.id);
                }
            }
            // A finished job's tasks without a row were cancelled with it (queued
            // or waiting when it was cancelled or failed by an exit rule).
            let initial = match record.state {
                JobState::Active => TaskState::Ready,
                _ => TaskState::Cancelled,
            };
            let mut job = new_job(record.id, record.spec, record.submitted_at_ms, initial);
            job.state = record.state;
            job.finished_at_ms = record.finished_at_ms;
            job.delivery = record.delivery;
            job.reason = record.reason;
            let id = job.id;
            self.jobs.insert(id, job);
            // A callback the coordinator stopped before delivering is posted again.
            self.notify_if_asked(id, out);
        }
        let mut recorded: HashSet<TaskKey> = HashSet::new();
        for t in snapshot.tasks {
            recorded.insert(t.key);
            let Some(job) = self.jobs.get_mut(&t.key.job) else { continue };
            if let Some(reason) = t.reason {
                job.reasons.insert(t.key.index, reason);
            }
            let Some(task) = job.task_mut(t.key.index) else { continue };
            let old = task.state;
            *task = Task { state: t.state, attempt: t.attempt, failures: t.failures, node_losses: t.node_losses };
            *job.counts.slot(old) -= 1;
            *job.counts.slot(t.state) += 1;
            if old == TaskState::Ready {
                job.ready.remove(&t.key.index);
            }
            if t.state == TaskState::Ready {
                job.ready.insert(t.key.index);
            }
        }
        self.count_trigger_jobs();
        // Waiting before anything else, so that failures found below cancel what
        // depends on them.
        let restored_ms = self.wall_ms(now);
        for job in self.jobs.values_mut() {
            let id = job.id;
            // What waits in the queue has waited since the restart, as far as
            // scheduling latency goes.
            job.queued_since_ms = restored_ms;
            job.settle_graph(|index| !recorded.contains(&TaskKey { job: id, index }));
        }
        for OpenAttempt { attempt, node, members, started_at_ms, gpus } in snapshot.open_attempts {
            let key = attempt.task;
            let current = self
                .jobs
                .get(&key.job)
                .and_then(|j| j.task(key.index))
                .is_some_and(|t| t.state == TaskState::Running && t.attempt == attempt.attempt);
            if !current {
                continue;
            }
            let spec = &self.jobs[&key.job].spec;
            let need = transitions::Need::of(spec, key.index);
            let timeout_ms = spec.task_spec(key.index).timeout.map(|t| t.as_millis() as u64);
            // A multi-node task lives only if every one of its nodes does.
            let live = std::iter::once(&node)
                .chain(&members)
                .all(|id| self.nodes.get(id).is_some_and(|n| n.status().is_live()));
            // Queued or started: its agent's hello says.
            let run = RunningAttempt {
                node,
                members,
                attempt: attempt.attempt,
                started_at_ms,
                timeout_ms,
                gpus,
                queued: false,
            };
            transitions::occupy(&mut self.running, &mut self.nodes, &mut self.keyed, key, run, need);
            if !live {
                // The node is gone: a crash between its loss and the requeue.
                self.end_attempt_lost(now, key, "node was gone when the coordinator restarted", true, out);
            }
        }
        // Repair what a crash between two writes can leave: unfinished tasks of a
        // finished job, and running tasks whose attempt row is missing.
        for job in self.jobs.values_mut() {
            let indices: Vec<u32> = job.spec.indices().collect();
            for (i, index) in indices.into_iter().enumerate() {
                let key = TaskKey { job: job.id, index };
                let task = job.tasks[i];
                let fix = if job.state != JobState::Active && !task.state.is_final() {
                    Some(TaskState::Cancelled)
                } else if task.state == TaskState::Running && !self.running.contains_key(&key) {
                    Some(TaskState::Ready)
                } else {
                    None
                };
                if let Some(next) = fix {
                    out.store.push(StoreOp::PutTask(TaskRecord {
                        key,
                        state: next,
                        attempt: task.attempt,
                        failures: task.failures,
                        node_losses: task.node_losses,
                        reason: None,
                    }));
                    job.restore_task(index, next);
                }
            }
        }
        // A task still waiting on one that failed: the crash came between the
        // failure and the cancelling of what depended on it.
        let doomed: Vec<(TaskKey, TaskKey)> = self
            .jobs
            .values()
            .filter(|job| job.state == JobState::Active)
            .flat_map(|job| {
                let graph = job.spec.graph.as_deref();
                job.tasks.iter().enumerate().filter_map(move |(i, task)| {
                    let failed = graph?.upstream[i]
                        .iter()
                        .find(|&&u| matches!(job.tasks[u as usize].state, TaskState::Failed | TaskState::Cancelled))?;
                    (task.state == TaskState::Waiting)
                        .then_some((TaskKey { job: job.id, index: i as u32 }, TaskKey { job: job.id, index: *failed }))
                })
            })
            .collect();
        for (_, failed) in doomed {
            self.cancel_downstream(failed, out);
        }
        for job in self.jobs.values() {
            if job.state == JobState::Active {
                if let Some(pool) = self.pools.get_mut(&job.spec.pool) {
                    pool.jobs.insert(job.priority_key());
                }
            }
        }
        // What each active job still waits for (`--after`).
        let active: Vec<JobId> = self.jobs.values().filter(|j| j.state == JobState::Active).map(|j| j.id).collect();
        for &id in &active {
            self.hold_for_after(id);
        }
        // A repair above may have ended a job's last task.
        for id in active {
            self.maybe_finish_job(now, id, out);
        }
        // A buffered run whose active one is gone (deleted by hand) starts now.
        let waiting: Vec<ScheduleName> = self
            .schedules
            .iter()
            .filter(|(_, s)| s.active.is_empty() && !s.buffered.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        for name in waiting {
            self.start_buffered(now, &name, out);
        }
    }
}
