//! Why a task is where it is (`corral task explain`): each thing that keeps a
//! queued task from starting, in words, from the same state the scheduler reads.

use std::time::Instant;

use super::*;
use crate::error::{Error, Result};

/// How many names a reason lists before it says "and N more".
const LISTED: usize = 5;

fn listed(names: Vec<String>) -> String {
    let more = names.len().saturating_sub(LISTED);
    let mut text = names.into_iter().take(LISTED).collect::<Vec<_>>().join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

impl Core {
    /// The reasons task `key` is not running (or what it is doing), each one line.
    pub fn explain_task(&self, now: Instant, key: TaskKey) -> Result<Vec<String>> {
        let job = self.jobs.get(&key.job).ok_or_else(|| Error::not_found("job", key.job))?;
        let task = job.task(key.index).ok_or_else(|| Error::not_found("task", key))?;
        let now_ms = self.wall_ms(now);
        let at = |ms: u64| {
            let t = jiff::Timestamp::from_millisecond(ms as i64).map_or_else(|_| ms.to_string(), |t| t.to_string());
            format!(
                "{t} (in {})",
                humantime::format_duration(std::time::Duration::from_secs(ms.saturating_sub(now_ms).div_ceil(1000)))
            )
        };
        let mut why = Vec::new();
        match task.state {
            TaskState::Running => {
                let run = self.running.get(&key);
                let (node, since) = run.map_or(("?".to_string(), 0), |r| (r.node.to_string(), r.started_at_ms));
                why.push(format!(
                    "running: attempt {} on node {node}, assigned {}s ago",
                    task.attempt,
                    now_ms.saturating_sub(since) / 1000
                ));
                return Ok(why);
            }
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled => {
                let reason = job.reasons.get(&key.index).map(|r| format!(": {r}")).unwrap_or_default();
                why.push(format!(
                    "finished: {}{reason}; `corral job retry {} --task {}` runs it again",
                    task.state,
                    key.job,
                    job.spec.task_name(key.index)
                ));
                return Ok(why);
            }
            TaskState::Waiting => {
                let graph = job.spec.graph.as_deref();
                let pending: Vec<String> = graph
                    .map(|g| {
                        g.upstream[key.index as usize]
                            .iter()
                            .filter(|&&u| job.tasks[u as usize].state != TaskState::Succeeded)
                            .map(|&u| format!("{} ({})", g.name(u), job.tasks[u as usize].state))
                            .collect()
                    })
                    .unwrap_or_default();
                why.push(format!("waiting for {} upstream task(s) to succeed: {}", pending.len(), listed(pending)));
            }
            TaskState::Ready => {}
        }
        if let Some((until, _)) = self.delayed.iter().find(|(_, k)| *k == key) {
            let until_ms = self.wall_ms(*until);
            why.push(format!("backing off after {} failure(s): retried at {}", task.failures, at(until_ms)));
        }
        if job.begins_after(now_ms) {
            why.push(format!("the job begins at {} (--begin)", at(job.spec.begin_at_ms.unwrap_or(0))));
        }
        if !job.held_by.is_empty() {
            let jobs = job.held_by.iter().map(|j| format!("job {j}")).collect();
            why.push(format!("the job waits for {} to end (--after)", listed(jobs)));
        }
        match job.spec.policy.throttle() {
            Throttle::Job(n) if job.counts.running >= n => {
                why.push(format!(
                    "throttled: {} of the job's tasks run, at most {n} at once (--max-running)",
                    job.counts.running
                ));
            }
            Throttle::Key(k, n) if self.keyed.get(k).copied().unwrap_or(0) >= n => {
                let running = self.keyed.get(k).copied().unwrap_or(0);
                why.push(format!("throttled: {running} task(s) with concurrency key '{k}' run, at most {n} at once"));
            }
            _ => {}
        }
        let Some(pool) = self.pools.get(&job.spec.pool) else {
            why.push(format!("its pool '{}' is gone", job.spec.pool));
            return Ok(why);
        };
        if pool.deleting {
            why.push(format!("its pool '{}' is being deleted: it starts nothing new", pool.spec.name));
        }
        let nodes: Vec<&Node> = pool.nodes.iter().filter_map(|id| self.nodes.get(id)).collect();
        let usable: Vec<&Node> =
            nodes.iter().copied().filter(|n| n.status() == NodeStatus::Up && n.connected && n.usable).collect();
        let need = job.spec.task_spec(key.index).slots;
        let gang = job.spec.task_spec(key.index).nodes;
        if task.state == TaskState::Ready {
            why.extend(self.explain_hold(pool, key, gang, now_ms, &at));
        }
        if usable.is_empty() {
            let starting = nodes.iter().filter(|n| n.status() == NodeStatus::Starting).count();
            let mut line = format!("pool '{}' has no node ready for work", pool.spec.name);
            if starting > 0 {
                line.push_str(&format!(" ({starting} starting)"));
            }
            match &pool.spec.autoscale {
                Some(auto) if pool.spec.target_nodes >= auto.max => {
                    line.push_str(&format!("; the pool is at its maximum of {} node(s) (--max)", auto.max));
                }
                Some(_) => line.push_str("; the autoscaler grows it for its queue"),
                None if pool.spec.provider == Provider::Static => {
                    line.push_str("; start `corral-agent` on a machine for it")
                }
                None => {}
            }
            why.push(line);
        } else if gang == 1 && !usable.iter().any(|n| n.free_slots() >= need) {
            let mut line =
                format!("no node of pool '{}' has {need} free slot(s): all {} are busy", pool.spec.name, usable.len());
            if let Some(auto) = pool.spec.autoscale.as_ref().filter(|a| pool.spec.target_nodes >= a.max) {
                line.push_str(&format!(", and the pool is at its maximum of {} node(s)", auto.max));
            }
            why.push(line);
        }
        let want = &job.spec.task_spec(key.index).resources;
        if !usable.is_empty() && !usable.iter().any(|n| n.fits(want)) {
            let show = corral_types::resources::describe(want, corral_types::size::show);
            let ever =
                usable.iter().any(|n| corral_types::resources::fits(&n.record.resources, &Resources::new(), want));
            why.push(if ever {
                format!("no node of pool '{}' has {show} free now: their running tasks hold it", pool.spec.name)
            } else {
                format!("no node of pool '{}' up now has {show} at all", pool.spec.name)
            });
        }
        if task.state == TaskState::Ready && job.ready.contains(&key.index) {
            let ahead_here = job.ready.range(..key.index).count();
            let ahead_before: usize = pool
                .jobs
                .iter()
                .take_while(|(_, id)| *id != job.id)
                .filter_map(|(_, id)| self.jobs.get(id))
                .filter(|j| !j.held(now_ms))
                .map(|j| j.ready.len())
                .sum();
            let ahead = ahead_here + ahead_before;
            if ahead > 0 {
                why.push(format!(
                    "{ahead} queued task(s) of this pool go first (by job priority, then submission order)"
                ));
            }
        }
        if why.is_empty() {
            why.push("queued: it starts at the next scheduling pass".into());
        }
        Ok(why)
    }

    /// What a pool's waiting multi-node task does to task `key` (which needs
    /// `nodes` whole nodes): the nodes it holds and what they wait for, if it is
    /// that task; else that nodes are held ahead of it.
    fn explain_hold(
        &self,
        pool: &Pool,
        key: TaskKey,
        nodes: u32,
        now_ms: u64,
        at: &dyn Fn(u64) -> String,
    ) -> Vec<String> {
        let mut why = Vec::new();
        let name = &pool.spec.name;
        let Some(hold) = pool.gang.as_ref() else {
            if nodes > 1 {
                why.push(format!("a multi-node task: it needs {nodes} wholly free nodes of pool '{name}' at once"));
            }
            return why;
        };
        let task_name = |k: TaskKey| {
            self.jobs
                .get(&k.job)
                .map_or_else(|| k.to_string(), |j| format!("{} of job {}", j.spec.task_name(k.index), k.job))
        };
        if hold.task != key {
            let until =
                hold.reservation_ms.map_or_else(String::new, |r| format!(", starting by {} at the latest", at(r)));
            let line = match nodes {
                1 => format!(
                    "{} node(s) of pool '{name}' are held for the multi-node task {}{until}: a task runs on them only if its --timeout ends before that",
                    hold.held.len(),
                    task_name(hold.task)
                ),
                _ => format!(
                    "the multi-node task {} waits ahead of it and holds {} node(s) of pool '{name}'; this one starts on nodes nobody holds",
                    task_name(hold.task),
                    hold.held.len()
                ),
            };
            why.push(line);
            return why;
        }
        let free: Vec<String> = hold
            .held
            .iter()
            .filter(|id| self.nodes.get(*id).is_some_and(|n| n.slots_used == 0))
            .map(|id| id.to_string())
            .collect();
        why.push(format!(
            "a multi-node task: {} of the {nodes} node(s) it needs are free and held for it{}",
            free.len(),
            if free.is_empty() { String::new() } else { format!(" ({})", listed(free)) }
        ));
        let busy: Vec<String> = hold
            .held
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .flat_map(|n| n.running.iter().map(move |k| format!("{} on {}", task_name(*k), n.record.id)))
            .collect();
        if !busy.is_empty() {
            why.push(format!("it waits for {} task(s) on the held nodes to end: {}", busy.len(), listed(busy)));
        }
        if (hold.held.len() as u32) < nodes {
            why.push(format!("pool '{name}' has {} usable node(s) now; it needs {nodes}", hold.held.len()));
        }
        match hold.reservation_ms {
            Some(by) if by > now_ms => why.push(format!(
                "it starts by {} at the latest; until then a task runs on the held nodes only if its --timeout ends before that (backfill)",
                at(by)
            )),
            Some(_) => {}
            None if (hold.held.len() as u32) < nodes => {}
            None => why.push(
                "a held node runs a task without a --timeout: when it ends is not known, so nothing runs on the held nodes meanwhile".into(),
            ),
        }
        why
    }
}
