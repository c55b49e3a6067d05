//! One transaction of the core's changes, with the event each makes: the event is
//! derived (`crate::events::describe`) and inserted in the same transaction, so the
//! feed never shows a change that was not stored, nor misses one that was.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use corral_types::graph::TaskGroup;
use corral_types::order::Runs;

use super::sql::{args, upsert, Sql, SqlExt};
use super::{corrupt, Store};
use crate::core::StoreOp;
use crate::error::Result;
use crate::model::*;

/// A transaction written, for when its commit is known to have happened: the
/// newest event id after it, and the events it recorded.
pub(super) struct Written {
    last_event: u64,
    events: Vec<crate::events::Event>,
    lost: super::lost::Found,
}

impl Store {
    /// Applies a group of changes in one transaction, with the event each makes.
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        // The writer retries what failed, in order; where that was a commit whose
        // answer was lost, the database says whether it happened, and what did is
        // not applied twice.
        if let Some(happened) = self.db.settle_unsure()? {
            let unsure = std::mem::take(&mut self.unsure);
            self.happened.extend(unsure.into_iter().take(happened));
        }
        if let Some(done) = self.happened.pop_front() {
            self.confirm(done);
            return Ok(());
        }
        let (tx, written) = self.write(ops)?;
        if let Err(e) = tx.commit() {
            if self.db.commit_unsure() {
                self.unsure.push_back(written);
            }
            return Err(e);
        }
        self.confirm(written);
        Ok(())
    }

    /// Sends a group of changes in one transaction, as [`Store::apply`] does, and
    /// returns before the commit is answered where the engine allows it
    /// (PostgreSQL); [`Store::settle`] reads the answer.
    pub fn send(&mut self, ops: &[StoreOp]) -> Result<()> {
        let (tx, written) = self.write(ops)?;
        tx.commit_later()?;
        self.sent.push_back(written);
        Ok(())
    }

    /// Reads the answer of the oldest group sent. On a failure, none of the groups
    /// sent is known to be stored: the writer applies each again, in order.
    pub fn settle(&mut self) -> Result<()> {
        match self.db.settle() {
            Ok(()) => {
                if let Some(done) = self.sent.pop_front() {
                    self.confirm(done);
                }
                Ok(())
            }
            Err(e) => {
                let sent = std::mem::take(&mut self.sent);
                if self.db.commit_unsure() {
                    self.unsure.extend(sent);
                }
                Err(e)
            }
        }
    }

    fn confirm(&mut self, mut done: Written) {
        self.last_event = done.last_event;
        self.committed_events.append(&mut done.events);
        if let Some(dir) = self.logs.dir() {
            self.lost.committed(dir, done.lost);
        }
    }

    /// Writes a group of changes in a transaction, not yet committed, after
    /// those sent before it.
    fn write(&mut self, ops: &[StoreOp]) -> Result<(Box<dyn super::sql::Tx + '_>, Written)> {
        let before = self.sent.back().map_or(self.last_event, |s| s.last_event);
        let logs = &self.logs;
        let job_pools = &mut self.job_pools;
        let mut tx = self.db.transaction()?;
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let mut last_event = before;
        let mut recorded = Vec::new();
        // Events are inserted together: those before `inserted` are in.
        let mut inserted = 0;
        let mut actor: Option<&String> = None;
        let mut lost = super::lost::Found::default();
        self.lost.forget_written(tx.sql())?;
        let plan = Coalesced::of(ops);
        for (i, op) in ops.iter().enumerate() {
            if let StoreOp::Actor(who) = op {
                actor = who.as_ref();
                continue;
            }
            if let StoreOp::InsertJob(j) = op {
                job_pools.insert(j.id, j.spec.pool.clone());
            }
            match op {
                StoreOp::EndAttempt { attempt, .. } => lost.ended(*attempt),
                StoreOp::DeleteJob(id) => lost.job_deleted(*id),
                _ => {}
            }
            // A failed lookup fails the transaction (and is retried like any write):
            // an event without its pool would be missed by pool-filtered followers.
            let event = crate::events::describe(op, |job| -> Result<Option<PoolName>> {
                if let Some(pool) = job_pools.get(&job) {
                    return Ok(Some(pool.clone()));
                }
                let stored: Option<String> =
                    tx.first("SELECT pool FROM jobs WHERE id = ?1", args![job.0], |r| r.get(0))?;
                let Some(stored) = stored else { return Ok(None) };
                let pool = PoolName::parse("pool", &stored).map_err(corrupt)?;
                job_pools.insert(job, pool.clone());
                Ok(Some(pool))
            })?;
            if let Some(mut event) = event {
                event.actor = actor.cloned();
                last_event += 1;
                event.id = last_event;
                event.at_ms = at_ms;
                recorded.push(event);
            }
            match op {
                StoreOp::PutPool { spec, created_at_ms, deleting } => {
                    super::pools::put_pool(tx.sql(), spec, *created_at_ms, *deleting)?
                }
                StoreOp::DeleteJob(id) => {
                    // Its events so far go in first: all but the last are deleted.
                    super::events::insert(tx.sql(), &recorded[inserted..])?;
                    inserted = recorded.len();
                    for table in ["tasks", "attempts", "task_groups"] {
                        tx.execute(&format!("DELETE FROM {table} WHERE job_id = ?1"), args![id.0])?;
                    }
                    tx.execute("DELETE FROM jobs WHERE id = ?1", args![id.0])?;
                    // All but the event that says it was deleted, just recorded.
                    tx.execute("DELETE FROM events WHERE job_id = ?1 AND id < ?2", args![id.0, last_event])?;
                    logs.delete_job(tx.sql(), *id)?;
                }
                StoreOp::PutIdempotencyKey(k) => {
                    // A plain INSERT: a second job for one key would break the
                    // primary key and roll back the transaction that made it.
                    tx.execute(&PUT_KEY, args![k.key.owner, k.key.key, k.key.digest, k.job.0, k.at_ms])?;
                }
                StoreOp::PutSchedule { record, .. } => super::schedules::put(tx.sql(), record)?,
                StoreOp::DeleteSchedule(name) => super::schedules::delete(tx.sql(), name)?,
                StoreOp::InsertScheduleSlot { schedule, slot_ms, job } => {
                    super::schedules::insert_slot(tx.sql(), schedule, *slot_ms, *job)?
                }
                StoreOp::PruneScheduleSlots { before_ms } => super::schedules::prune(tx.sql(), *before_ms)?,
                StoreOp::PutTemplate(t) => super::templates::put_template(tx.sql(), t)?,
                StoreOp::DeleteTemplate(name) => super::templates::delete_template(tx.sql(), name)?,
                StoreOp::PutTrigger { record, .. } => super::templates::put_trigger(tx.sql(), record)?,
                StoreOp::DeleteTrigger(name) => super::templates::delete_trigger(tx.sql(), name)?,
                StoreOp::SeeTriggerObject { trigger, object, version } => {
                    super::templates::see(tx.sql(), trigger, object, version.as_deref())?
                }
                StoreOp::ExpireIdempotencyKeys { before_ms } => {
                    tx.execute("DELETE FROM idempotency_keys WHERE at_ms < ?1", args![before_ms])?;
                }
                StoreOp::PutToken(t) => {
                    tx.execute("DELETE FROM tokens WHERE name = ?1", args![&t.name])?;
                    tx.execute("INSERT INTO tokens (id, name, role, pool, hash, created_at_ms, expires_at_ms, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", args![t.id,
                        t.name,
                        t.role.as_str(),
                        t.pool.as_ref().map(|p| p.as_str()),
                        crate::auth::secret::hex(&t.hash),
                        t.created_at_ms,
                        t.expires_at_ms,
                        t.created_by])?;
                }
                StoreOp::DeleteToken { id, .. } => {
                    tx.execute("DELETE FROM tokens WHERE id = ?1", args![id])?;
                    tx.execute("DELETE FROM node_credentials WHERE token_id = ?1", args![id])?;
                    tx.execute("DELETE FROM sessions WHERE token_id = ?1", args![id])?;
                }
                StoreOp::PutSession(s) => {
                    tx.execute(
                        "INSERT INTO sessions (key, token_id, at_ms) VALUES (?1, ?2, ?3) ON CONFLICT (key) DO NOTHING",
                        args![s.key, s.token_id, s.at_ms],
                    )?;
                }
                StoreOp::DeleteSessions(keys) => {
                    for key in keys {
                        tx.execute("DELETE FROM sessions WHERE key = ?1", args![key])?;
                    }
                }
                StoreOp::PutNodeCredential(c) => {
                    tx.execute(
                        &PUT_CREDENTIAL,
                        args![c.node.0, c.pool.as_str(), crate::auth::secret::hex(&c.hash), c.token_id],
                    )?;
                }
                StoreOp::DeletePool(name) => {
                    tx.execute("DELETE FROM pools WHERE name = ?1", args![name.as_str()])?;
                    tx.execute("DELETE FROM scale_log WHERE pool = ?1", args![name.as_str()])?;
                }
                StoreOp::PutNode(n) => super::pools::put_node(tx.sql(), n)?,
                StoreOp::InsertJob(j) => {
                    if let Some(graph) = &j.spec.graph {
                        insert_groups(tx.sql(), j.id, 0, &graph.groups)?;
                    }
                    super::jobs::insert(tx.sql(), j)?;
                }
                StoreOp::SetJobState { id, state, finished_at_ms, reason } => {
                    tx.execute(
                        "UPDATE jobs SET state = ?2, finished_at_ms = ?3, reason = ?4 WHERE id = ?1",
                        args![id.0, state.as_str(), finished_at_ms, reason],
                    )?;
                }
                StoreOp::PutTask(_) if plan.superseded[i] => {}
                StoreOp::PutTask(t) => {
                    tx.execute(
                        &PUT_TASK,
                        args![
                            t.key.job.0,
                            t.key.index,
                            t.state.as_str(),
                            t.attempt,
                            t.failures,
                            t.node_losses,
                            t.reason
                        ],
                    )?;
                }
                StoreOp::AddTaskGroups { job, first_group, groups, last_index } => {
                    insert_groups(tx.sql(), *job, *first_group, groups)?;
                    tx.execute("UPDATE jobs SET last_index = ?2 WHERE id = ?1", args![job.0, last_index])?;
                }
                StoreOp::ScaleRecord { pool, record } => {
                    tx.execute(
                        "INSERT INTO scale_log (pool, at_ms, from_nodes, to_nodes, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
                        args![pool.as_str(), record.at_ms, record.from, record.to, record.reason],
                    )?;
                    // Keep the last 100 per pool.
                    tx.execute("DELETE FROM scale_log WHERE pool = ?1 AND rowid NOT IN (SELECT rowid FROM scale_log WHERE pool = ?1 ORDER BY rowid DESC LIMIT 100)", args![pool.as_str()])?;
                }
                StoreOp::SetDelivery { job, delivery } => {
                    tx.execute("UPDATE jobs SET notify_attempts = ?2, notify_error = ?3, notify_delivered_at_ms = ?4 WHERE id = ?1", args![job.0, delivery.attempts, delivery.last_error, delivery.delivered_at_ms])?;
                }
                StoreOp::SetJobPriority { id, priority } => {
                    tx.execute("UPDATE jobs SET priority = ?2 WHERE id = ?1", args![id.0, priority])?;
                }
                StoreOp::ForgetAttempt { attempt: a, ranks } => {
                    tx.execute(
                        "DELETE FROM attempts WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3",
                        args![a.task.job.0, a.task.index, a.attempt],
                    )?;
                    logs.forget_attempt(tx.sql(), *a, *ranks)?;
                }
                StoreOp::ScaleJob { id, policy, last_index } => {
                    let policy = super::jobs::json(policy)?;
                    tx.execute(
                        "UPDATE jobs SET policy = ?2, last_index = ?3 WHERE id = ?1",
                        args![id.0, policy, last_index],
                    )?;
                }
                StoreOp::CloseJob(job) => {
                    tx.execute("UPDATE jobs SET open = 0 WHERE id = ?1", args![job.0])?;
                }
                StoreOp::StartAttempt { attempt, node, members, started_at_ms, gpus, .. } => {
                    match plan.ended_by(i, ops) {
                        // Started and ended in this transaction: one row, written whole.
                        Some(StoreOp::EndAttempt {
                            started_at_ms: ran_from,
                            outcome,
                            exit_code,
                            signal,
                            message,
                            ended_at_ms,
                            order,
                            ..
                        }) => {
                            tx.execute(
                                &PUT_ENDED_ATTEMPT,
                                args![
                                    attempt.task.job.0,
                                    attempt.task.index,
                                    attempt.attempt,
                                    node.0,
                                    ran_from.unwrap_or(*started_at_ms),
                                    ended_at_ms,
                                    outcome.as_str(),
                                    exit_code,
                                    signal,
                                    message,
                                    order.as_ref().map(Runs::to_text),
                                    members_text(members)?
                                ],
                            )?;
                        }
                        _ => {
                            // The devices are kept only while it runs: a restart gives them
                            // back to the same attempt.
                            let gpus = match gpus.is_empty() {
                                true => None,
                                false => Some(serde_json::to_string(gpus).map_err(|e| corrupt(e.to_string()))?),
                            };
                            tx.execute(
                                &PUT_STARTED_ATTEMPT,
                                args![
                                    attempt.task.job.0,
                                    attempt.task.index,
                                    attempt.attempt,
                                    node.0,
                                    started_at_ms,
                                    gpus,
                                    members_text(members)?
                                ],
                            )?;
                        }
                    }
                }
                StoreOp::EndAttempt { .. } if plan.superseded[i] => {}
                StoreOp::EndAttempt {
                    attempt,
                    started_at_ms,
                    outcome,
                    exit_code,
                    signal,
                    message,
                    ended_at_ms,
                    order,
                } => {
                    tx.execute("UPDATE attempts SET ended_at_ms = ?4, outcome = ?5, exit_code = ?6, signal = ?7, message = ?8, started_at_ms = COALESCE(?9, started_at_ms), output_order = ?10 WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3", args![attempt.task.job.0,
                        attempt.task.index,
                        attempt.attempt,
                        ended_at_ms,
                        outcome.as_str(),
                        exit_code,
                        signal,
                        message,
                        started_at_ms,
                        order.as_ref().map(Runs::to_text)])?;
                }
                StoreOp::Actor(_) | StoreOp::ObjectChanged { .. } => {}
                StoreOp::ForgetNodeCredential(node) => {
                    tx.execute("DELETE FROM node_credentials WHERE node_id = ?1", args![&node.0])?;
                }
                // Task output must not hold up the state: a log that cannot be
                // written (disk full, permissions) is skipped, and the attempt's
                // record says so ([`super::lost`]).
                StoreOp::Log(chunk) => {
                    if let Err(e) = logs.write(tx.sql(), chunk) {
                        if logs.dir().is_none() {
                            // A row of the transaction: the transaction fails with it.
                            return Err(e);
                        }
                        if chunk.rank > 0 {
                            // (Only the task's own output is accounted for.)
                            tracing::error!(task = %chunk.attempt.task, rank = chunk.rank, error = %e, "could not write a rank's output; skipping it");
                            continue;
                        }
                        tracing::error!(task = %chunk.attempt.task, error = %e, "could not write task output; skipping it, and the attempt's record will say so");
                        lost.chunk_lost(tx.sql(), chunk)?;
                    }
                }
            }
        }
        super::events::insert(tx.sql(), &recorded[inserted..])?;
        // Trim the feed now and then, not on every commit.
        if last_event / 10_000 != before / 10_000 {
            super::events::trim(tx.sql(), last_event)?;
        }
        self.lost.amend(tx.sql(), &mut lost)?;
        Ok((tx, Written { last_event, events: recorded, lost }))
    }
}

/// What a transaction need not write as it comes: at thousands of short tasks a
/// second a task often starts and ends within one group commit, and writing only
/// its last state is a third fewer statements. Every op still makes its event.
struct Coalesced {
    /// Ops whose row a later op of the same transaction writes anyway: a task row
    /// written again later, an attempt's end written with its start.
    superseded: Vec<bool>,
    /// For a `StartAttempt`, the `EndAttempt` of the same attempt later in the
    /// transaction.
    ends: HashMap<usize, usize>,
}

impl Coalesced {
    fn of(ops: &[StoreOp]) -> Coalesced {
        let mut superseded = vec![false; ops.len()];
        let mut ends = HashMap::new();
        let mut written = HashSet::new();
        for (i, op) in ops.iter().enumerate().rev() {
            if let StoreOp::PutTask(t) = op {
                superseded[i] = !written.insert(t.key);
            }
        }
        let mut started: HashMap<AttemptRef, usize> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                StoreOp::StartAttempt { attempt, .. } => {
                    started.insert(*attempt, i);
                }
                StoreOp::EndAttempt { attempt, .. } => {
                    if let Some(start) = started.remove(attempt) {
                        ends.insert(start, i);
                        superseded[i] = true;
                    }
                }
                // Rows it deletes are not written whole ahead of it.
                StoreOp::DeleteJob(_) => started.clear(),
                _ => {}
            }
        }
        Coalesced { superseded, ends }
    }

    /// The end that `StartAttempt` number `i` is written with, if any.
    fn ended_by<'a>(&self, i: usize, ops: &'a [StoreOp]) -> Option<&'a StoreOp> {
        self.ends.get(&i).map(|&end| &ops[end])
    }
}

fn insert_groups(tx: &mut dyn Sql, job: JobId, first: u32, groups: &[TaskGroup]) -> Result<()> {
    for (i, group) in groups.iter().enumerate() {
        let spec = serde_json::to_string(group).map_err(|e| corrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO task_groups (job_id, position, spec) VALUES (?1, ?2, ?3)",
            args![job.0, first + i as u32, spec],
        )?;
    }
    Ok(())
}

// The rows written whole (replacing the one with their key), in SQL both engines run.
static PUT_KEY: LazyLock<String> = LazyLock::new(|| {
    upsert("idempotency_keys", &["owner", "key", "digest", "job_id", "at_ms"], &["owner", "key"], &[])
});
static PUT_CREDENTIAL: LazyLock<String> =
    LazyLock::new(|| upsert("node_credentials", &["node_id", "pool", "hash", "token_id"], &["node_id"], &[]));
static PUT_TASK: LazyLock<String> = LazyLock::new(|| {
    upsert(
        "tasks",
        &["job_id", "idx", "state", "attempt", "failures", "node_losses", "reason"],
        &["job_id", "idx"],
        &[],
    )
});
/// A multi-node attempt's other nodes as stored (`None`: it ran on one node).
fn members_text(members: &[NodeId]) -> Result<Option<String>> {
    if members.is_empty() {
        return Ok(None);
    }
    let ids: Vec<&str> = members.iter().map(|n| n.0.as_str()).collect();
    serde_json::to_string(&ids).map(Some).map_err(|e| corrupt(e.to_string()))
}

static PUT_ENDED_ATTEMPT: LazyLock<String> = LazyLock::new(|| {
    let columns = [
        "job_id",
        "idx",
        "attempt",
        "node_id",
        "started_at_ms",
        "ended_at_ms",
        "outcome",
        "exit_code",
        "signal",
        "message",
        "output_order",
        "members",
    ];
    upsert("attempts", &columns, &["job_id", "idx", "attempt"], &["gpus"])
});
static PUT_STARTED_ATTEMPT: LazyLock<String> = LazyLock::new(|| {
    upsert(
        "attempts",
        &["job_id", "idx", "attempt", "node_id", "started_at_ms", "gpus", "members"],
        &["job_id", "idx", "attempt"],
        &["ended_at_ms", "outcome", "exit_code", "signal", "message", "output_order"],
    )
});

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lost_output;
