//! Everything the core is rebuilt from at start (or at a reload), read in one pass.

use std::collections::HashMap;

use corral_types::graph::TaskGroup;

use super::sql::{args, Sql, SqlExt};
use super::{corrupt, Store};
use crate::auth::{NodeCredential, SessionRecord, TokenRecord};
use crate::core::{Snapshot, TaskRecord};
use crate::error::Result;
use crate::model::*;

/// Everything the core and the gate are rebuilt from, read in one transaction that
/// sees one moment of the store (the writer may be writing meanwhile).
pub(super) fn everything(db: &mut super::Db) -> Result<super::backend::Loaded> {
    let mut tx = db.snapshot()?;
    let snapshot = state(tx.sql())?;
    let (tokens, nodes, sessions) = auth(tx.sql())?;
    tx.commit()?;
    Ok((snapshot, tokens, nodes, sessions))
}

/// Everything needed to rebuild the core.
fn state(sql: &mut dyn Sql) -> Result<Snapshot> {
    let mut snap = Snapshot { pools: super::pools::load_pools(sql)?, ..Snapshot::default() };
    let rows = sql.rows("SELECT pool, at_ms, from_nodes, to_nodes, reason FROM (SELECT *, rowid AS r, ROW_NUMBER() OVER (PARTITION BY pool ORDER BY rowid DESC) AS n FROM scale_log) AS recent WHERE n <= 20 ORDER BY r", args![], |r| {
        Ok((
            r.get::<String>(0)?,
            r.get::<u64>(1)?,
            r.get::<u32>(2)?,
            r.get::<u32>(3)?,
            r.get::<String>(4)?,
        ))
    })?;
    for row in rows {
        let (pool, at_ms, from, to, reason) = row;
        let pool = PoolName::parse("pool", &pool).map_err(corrupt)?;
        snap.scale_log.push((pool, crate::core::autoscale::Record { at_ms, from, to, reason }));
    }
    snap.nodes = super::pools::load_nodes(sql)?;
    let mut groups = task_groups(sql)?;
    snap.jobs = super::jobs::load(sql, &mut groups)?;
    let rows = sql.rows(
        "SELECT job_id, idx, state, attempt, failures, node_losses, reason FROM tasks ORDER BY job_id, idx",
        args![],
        |r| {
            Ok((
                r.get::<u64>(0)?,
                r.get::<u32>(1)?,
                r.get::<String>(2)?,
                r.get::<u32>(3)?,
                r.get::<u32>(4)?,
                r.get::<u32>(5)?,
                r.get::<Option<String>>(6)?,
            ))
        },
    )?;
    for row in rows {
        let (job, index, state, attempt, failures, node_losses, reason) = row;
        snap.tasks.push(TaskRecord {
            key: TaskKey { job: JobId(job), index },
            state: state.parse().map_err(corrupt)?,
            attempt,
            failures,
            node_losses,
            reason,
        });
    }
    let rows = sql.rows(
        "SELECT job_id, idx, attempt, node_id, started_at_ms, gpus, members FROM attempts WHERE ended_at_ms IS NULL ORDER BY job_id, idx, attempt",
        args![],
        |r| {
            Ok((
                r.get::<u64>(0)?,
                r.get::<u32>(1)?,
                r.get::<u32>(2)?,
                r.get::<String>(3)?,
                r.get::<u64>(4)?,
                r.get::<Option<String>>(5)?,
                r.get::<Option<String>>(6)?,
            ))
        },
    )?;
    for row in rows {
        let (job, index, attempt, node, started, gpus, members) = row;
        let gpus: Vec<u32> = match gpus {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?,
            None => Vec::new(),
        };
        let members: Vec<String> = match members {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?,
            None => Vec::new(),
        };
        let attempt = AttemptRef { task: TaskKey { job: JobId(job), index }, attempt };
        snap.open_attempts.push(crate::core::OpenAttempt {
            attempt,
            node: NodeId(node),
            members: members.into_iter().map(NodeId).collect(),
            started_at_ms: started,
            gpus,
        });
    }
    snap.schedules = super::schedules::load(sql)?;
    snap.templates = super::templates::load_templates(sql)?;
    snap.triggers = super::templates::load_triggers(sql)?;
    let rows = sql.rows(
        "SELECT owner, key, digest, job_id, at_ms FROM idempotency_keys ORDER BY at_ms, owner, key",
        args![],
        |r| {
            Ok(crate::core::keys::KeyRecord {
                key: crate::core::keys::IdempotencyKey { owner: r.get(0)?, key: r.get(1)?, digest: r.get(2)? },
                job: JobId(r.get(3)?),
                at_ms: r.get(4)?,
            })
        },
    )?;
    for row in rows {
        snap.keys.push(row);
    }
    Ok(snap)
}

/// The tokens, node credentials and dashboard sign-ins (oldest first) the
/// coordinator accepts.
fn auth(sql: &mut dyn Sql) -> Result<(Vec<TokenRecord>, Vec<NodeCredential>, Vec<SessionRecord>)> {
    let rows = sql.rows(
        "SELECT id, name, role, pool, hash, created_at_ms, expires_at_ms, created_by FROM tokens ORDER BY name",
        args![],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                r.get::<String>(2)?,
                r.get::<Option<String>>(3)?,
                r.get::<String>(4)?,
                r.get::<u64>(5)?,
                r.get::<Option<u64>>(6)?,
                r.get::<String>(7)?,
            ))
        },
    )?;
    let mut tokens = Vec::new();
    for row in rows {
        let (id, name, role, pool, hash, created_at_ms, expires_at_ms, created_by) = row;
        tokens.push(TokenRecord {
            id,
            name,
            role: role.parse().map_err(corrupt)?,
            pool: pool.map(|p| PoolName::parse("pool", &p)).transpose().map_err(corrupt)?,
            hash: crate::auth::secret::from_hex(&hash).ok_or_else(|| corrupt("a token hash is not 64 hex digits"))?,
            created_at_ms,
            expires_at_ms,
            created_by,
        });
    }
    let rows =
        sql.rows("SELECT node_id, pool, hash, token_id FROM node_credentials ORDER BY node_id", args![], |r| {
            Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<String>(2)?, r.get::<String>(3)?))
        })?;
    let mut nodes = Vec::new();
    for row in rows {
        let (node, pool, hash, token_id) = row;
        nodes.push(NodeCredential {
            node: NodeId(node),
            pool: PoolName::parse("pool", &pool).map_err(corrupt)?,
            hash: crate::auth::secret::from_hex(&hash).ok_or_else(|| corrupt("a node hash is not 64 hex digits"))?,
            token_id,
        });
    }
    let sessions = sql.rows("SELECT key, token_id, at_ms FROM sessions ORDER BY at_ms, key", args![], |r| {
        Ok(SessionRecord { key: r.get::<String>(0)?, token_id: r.get::<String>(1)?, at_ms: r.get::<u64>(2)? })
    })?;
    Ok((tokens, nodes, sessions))
}

/// The task groups of every graph job, in order, by job id.
fn task_groups(sql: &mut dyn Sql) -> Result<HashMap<u64, Vec<TaskGroup>>> {
    let rows = sql.rows("SELECT job_id, spec FROM task_groups ORDER BY job_id, position", args![], |r| {
        Ok((r.get::<u64>(0)?, r.get::<String>(1)?))
    })?;
    let mut groups: HashMap<u64, Vec<TaskGroup>> = HashMap::new();
    for row in rows {
        let (job, spec) = row;
        let group: TaskGroup = serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
        groups.entry(job).or_default().push(group);
    }
    Ok(groups)
}

impl Store {
    /// Everything needed to rebuild the core, read on the writer's connection
    /// (tests restore from it).
    pub fn load(&mut self) -> Result<Snapshot> {
        Ok(everything(&mut self.db)?.0)
    }

    /// The id of the newest event recorded.
    pub fn last_event(&self) -> u64 {
        self.last_event
    }
}
