//! The durable store: SQLite (WAL mode, `synchronous=FULL`) in the data dir, plus
//! log files beside it.
//!
//! One writer thread applies the core's [`StoreOp`]s with group commit: it takes every
//! batch waiting in its queue, writes them all in one transaction, commits, and only
//! then runs each batch's follow-ups (replies to clients, messages to agents). So a
//! change is never visible outside the coordinator before it is durable, and one
//! fsync covers as many changes as arrived meanwhile.
//!
//! Array tasks get no row at submission: a job row carries the range and a task row
//! appears when the task first changes state, so accepting a million tasks is one
//! insert.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use corral_types::Outcome;
use tokio::sync::watch;

use std::sync::Arc;

use crate::auth::{NodeCredential, TokenRecord};
use crate::core::{JobRecord, NodeRecord, Snapshot, StoreOp, TaskRecord};
use crate::error::Result;
use crate::model::*;
use corral_types::graph::TaskGroup;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pools (
    name TEXT PRIMARY KEY,
    slots_per_node INTEGER NOT NULL,
    provider TEXT NOT NULL,
    target_nodes INTEGER NOT NULL,
    fill TEXT NOT NULL,
    autoscale TEXT,
    removal TEXT,
    commands TEXT,
    start_task TEXT,
    docker TEXT,
    deleting INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS scale_log (
    pool TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    from_nodes INTEGER NOT NULL,
    to_nodes INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    hostname TEXT NOT NULL,
    slots INTEGER NOT NULL,
    cpus INTEGER NOT NULL,
    memory_bytes INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    registered_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    pool TEXT NOT NULL,
    name TEXT NOT NULL,
    priority INTEGER NOT NULL,
    task_spec TEXT NOT NULL,
    is_graph INTEGER NOT NULL,
    open INTEGER NOT NULL,
    first_index INTEGER NOT NULL,
    last_index INTEGER NOT NULL,
    state TEXT NOT NULL,
    submitted_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    notify_url TEXT,
    notify_attempts INTEGER NOT NULL DEFAULT 0,
    notify_error TEXT,
    notify_delivered_at_ms INTEGER,
    owner TEXT NOT NULL DEFAULT '',
    max_output INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    digest TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    pool TEXT,
    hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,
    created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS node_credentials (
    node_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    hash TEXT NOT NULL,
    token_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS task_groups (
    job_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (job_id, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    node_losses INTEGER NOT NULL,
    reason TEXT,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER,
    outcome TEXT,
    exit_code INTEGER,
    signal INTEGER,
    message TEXT,
    PRIMARY KEY (job_id, idx, attempt)
) WITHOUT ROWID;
";

/// One attempt as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub attempt: u32,
    pub node_id: String,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub outcome: Option<Outcome>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub message: String,
}

/// The SQLite database and the log directory of one data dir.
pub struct Store {
    conn: Connection,
    logs: PathBuf,
    /// Each job's pool, for the events of its tasks.
    job_pools: HashMap<JobId, PoolName>,
    /// The id of the newest event recorded.
    last_event: u64,
    /// Events committed since the writer last took them.
    committed_events: Vec<crate::events::Event>,
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Where the log of one attempt's stdout or stderr lives.
pub fn log_path(logs: &Path, attempt: AttemptRef, stderr: bool) -> PathBuf {
    let ext = if stderr { "stderr" } else { "stdout" };
    logs.join(attempt.task.job.to_string()).join(format!("{}.{}.{ext}", attempt.task.index, attempt.attempt))
}

impl Store {
    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store> {
        fs::create_dir_all(data_dir)?;
        let conn = open_connection(&data_dir.join("corral.db"))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::events::SCHEMA)?;
        add_missing_columns(&conn)?;
        let logs = data_dir.join("logs");
        fs::create_dir_all(&logs)?;
        let last_event = crate::events::last_id(&conn)?;
        Ok(Store { conn, logs, job_pools: HashMap::new(), last_event, committed_events: Vec::new() })
    }

    /// A second connection for reads that the core does not keep in memory
    /// (attempt history); WAL lets it read while the writer writes.
    pub fn open_reader(data_dir: &Path) -> Result<Reader> {
        Ok(Reader { conn: open_connection(&data_dir.join("corral.db"))?, logs: data_dir.join("logs") })
    }

    /// Everything needed to rebuild the core.
    pub fn load(&self) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        let mut stmt = self.conn.prepare(
            "SELECT name, slots_per_node, provider, target_nodes, fill, created_at_ms, autoscale, removal, commands, start_task, docker, deleting FROM pools",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, u64>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, bool>(11)?,
            ))
        })?;
        for row in rows {
            let (
                name,
                slots_per_node,
                provider,
                target_nodes,
                fill,
                created,
                autoscale,
                removal,
                commands,
                start_task,
                docker,
                deleting,
            ) = row?;
            let spec = PoolSpec {
                name: PoolName::parse("pool", &name).map_err(corrupt)?,
                slots_per_node,
                provider: provider.parse().map_err(corrupt)?,
                target_nodes,
                fill: fill.parse().map_err(corrupt)?,
                autoscale: from_json(autoscale)?,
                removal: removal
                    .map(|r| r.parse())
                    .transpose()
                    .map_err(corrupt)?
                    .unwrap_or(RemovalPolicy::TaskCompletion),
                commands: from_json(commands)?,
                docker: from_json(docker)?,
                start_task,
            };
            snap.pools.push((spec, created, deleting));
        }
        let mut stmt = self.conn.prepare(
            "SELECT pool, at_ms, from_nodes, to_nodes, reason FROM (SELECT *, rowid AS r, ROW_NUMBER() OVER (PARTITION BY pool ORDER BY rowid DESC) AS n FROM scale_log) WHERE n <= 20 ORDER BY r",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        for row in rows {
            let (pool, at_ms, from, to, reason) = row?;
            let pool = PoolName::parse("pool", &pool).map_err(corrupt)?;
            snap.scale_log.push((pool, crate::core::autoscale::Record { at_ms, from, to, reason }));
        }
        let mut stmt = self.conn.prepare(
            "SELECT id, pool, hostname, slots, cpus, memory_bytes, pid, status, reason, registered_at_ms FROM nodes",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, u64>(5)?,
                r.get::<_, u32>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, u64>(9)?,
            ))
        })?;
        for row in rows {
            let (id, pool, hostname, slots, cpus, memory_bytes, pid, status, reason, registered_at_ms) = row?;
            snap.nodes.push(NodeRecord {
                id: NodeId(id),
                pool: PoolName::parse("pool", &pool).map_err(corrupt)?,
                hostname,
                slots,
                cpus,
                memory_bytes,
                pid,
                status: status.parse().map_err(corrupt)?,
                reason: reason.map(|r| r.parse()).transpose().map_err(corrupt)?,
                registered_at_ms,
            });
        }
        let mut stmt = self.conn.prepare(
            "SELECT id, pool, name, priority, task_spec, first_index, last_index, state, submitted_at_ms, finished_at_ms, is_graph, open, notify_url, notify_attempts, notify_error, notify_delivered_at_ms, owner, max_output FROM jobs ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i32>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, u32>(5)?,
                r.get::<_, u32>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, u64>(8)?,
                r.get::<_, Option<u64>>(9)?,
                r.get::<_, bool>(10)?,
                r.get::<_, bool>(11)?,
                r.get::<_, Option<String>>(12)?,
                Delivery { attempts: r.get(13)?, last_error: r.get(14)?, delivered_at_ms: r.get(15)? },
                r.get::<_, String>(16)?,
                r.get::<_, u64>(17)?,
            ))
        })?;
        let mut groups = self.task_groups()?;
        for row in rows {
            let (
                id,
                pool,
                name,
                priority,
                task,
                first_index,
                last_index,
                state,
                submitted,
                finished,
                is_graph,
                open,
                notify,
                delivery,
                owner,
                max_output,
            ) = row?;
            let task: TaskSpec = serde_json::from_str(&task).map_err(|e| corrupt(e.to_string()))?;
            let graph = if is_graph {
                let groups = groups.remove(&id).unwrap_or_default();
                Some(Arc::new(corral_types::graph::resolve(groups).map_err(|e| corrupt(e.to_string()))?))
            } else {
                None
            };
            snap.jobs.push(JobRecord {
                id: JobId(id),
                spec: JobSpec {
                    pool: PoolName::parse("pool", &pool).map_err(corrupt)?,
                    name,
                    priority,
                    task,
                    first_index,
                    last_index,
                    graph,
                    open,
                    notify,
                    owner,
                    max_output,
                },
                state: state.parse().map_err(corrupt)?,
                submitted_at_ms: submitted,
                finished_at_ms: finished,
                delivery,
            });
        }
        let mut stmt =
            self.conn.prepare("SELECT job_id, idx, state, attempt, failures, node_losses, reason FROM tasks")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, u32>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })?;
        for row in rows {
            let (job, index, state, attempt, failures, node_losses, reason) = row?;
            snap.tasks.push(TaskRecord {
                key: TaskKey { job: JobId(job), index },
                state: state.parse().map_err(corrupt)?,
                attempt,
                failures,
                node_losses,
                reason,
            });
        }
        let mut stmt = self
            .conn
            .prepare("SELECT job_id, idx, attempt, node_id, started_at_ms FROM attempts WHERE ended_at_ms IS NULL")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, u64>(4)?,
            ))
        })?;
        for row in rows {
            let (job, index, attempt, node, started) = row?;
            let attempt = AttemptRef { task: TaskKey { job: JobId(job), index }, attempt };
            snap.open_attempts.push((attempt, NodeId(node), started));
        }
        let mut stmt =
            self.conn.prepare("SELECT owner, key, digest, job_id, at_ms FROM idempotency_keys ORDER BY at_ms")?;
        let rows = stmt.query_map([], |r| {
            Ok(crate::core::keys::KeyRecord {
                key: crate::core::keys::IdempotencyKey { owner: r.get(0)?, key: r.get(1)?, digest: r.get(2)? },
                job: JobId(r.get(3)?),
                at_ms: r.get(4)?,
            })
        })?;
        for row in rows {
            snap.keys.push(row?);
        }
        Ok(snap)
    }

    /// The task groups of every graph job, in order, by job id.
    /// The tokens and node credentials the coordinator accepts.
    pub fn load_auth(&self) -> Result<(Vec<TokenRecord>, Vec<NodeCredential>)> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, role, pool, hash, created_at_ms, expires_at_ms, created_by FROM tokens ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, u64>(5)?,
                r.get::<_, Option<u64>>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let mut tokens = Vec::new();
        for row in rows {
            let (id, name, role, pool, hash, created_at_ms, expires_at_ms, created_by) = row?;
            tokens.push(TokenRecord {
                id,
                name,
                role: role.parse().map_err(corrupt)?,
                pool: pool.map(|p| PoolName::parse("pool", &p)).transpose().map_err(corrupt)?,
                hash: crate::auth::secret::from_hex(&hash)
                    .ok_or_else(|| corrupt("a token hash is not 64 hex digits"))?,
                created_at_ms,
                expires_at_ms,
                created_by,
            });
        }
        let mut stmt = self.conn.prepare("SELECT node_id, pool, hash, token_id FROM node_credentials")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?;
        let mut nodes = Vec::new();
        for row in rows {
            let (node, pool, hash, token_id) = row?;
            nodes.push(NodeCredential {
                node: NodeId(node),
                pool: PoolName::parse("pool", &pool).map_err(corrupt)?,
                hash: crate::auth::secret::from_hex(&hash)
                    .ok_or_else(|| corrupt("a node hash is not 64 hex digits"))?,
                token_id,
            });
        }
        Ok((tokens, nodes))
    }

    fn task_groups(&self) -> Result<HashMap<u64, Vec<TaskGroup>>> {
        let mut stmt = self.conn.prepare("SELECT job_id, spec FROM task_groups ORDER BY job_id, position")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, String>(1)?)))?;
        let mut groups: HashMap<u64, Vec<TaskGroup>> = HashMap::new();
        for row in rows {
            let (job, spec) = row?;
            let group: TaskGroup = serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
            groups.entry(job).or_default().push(group);
        }
        Ok(groups)
    }

    /// The id of the newest event recorded.
    pub fn last_event(&self) -> u64 {
        self.last_event
    }

    /// Applies a group of changes in one transaction, with the event each makes.
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        let logs = &self.logs;
        let job_pools = &mut self.job_pools;
        let tx = self.conn.transaction()?;
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let mut last_event = self.last_event;
        let mut recorded = Vec::new();
        let mut actor: Option<&String> = None;
        for op in ops {
            if let StoreOp::Actor(who) = op {
                actor = who.as_ref();
                continue;
            }
            if let StoreOp::InsertJob(j) = op {
                job_pools.insert(j.id, j.spec.pool.clone());
            }
            let event = crate::events::describe(op, |job| {
                if let Some(pool) = job_pools.get(&job) {
                    return Some(pool.clone());
                }
                let stored: Option<String> = tx
                    .prepare_cached("SELECT pool FROM jobs WHERE id = ?1")
                    .and_then(|mut stmt| stmt.query_row([job.0], |r| r.get(0)).optional())
                    .ok()
                    .flatten();
                let pool = PoolName::parse("pool", &stored?).ok()?;
                job_pools.insert(job, pool.clone());
                Some(pool)
            });
            if let Some(mut event) = event {
                event.actor = actor.cloned();
                last_event = crate::events::insert(&tx, at_ms, &event)?;
                event.id = last_event;
                event.at_ms = at_ms;
                recorded.push(event);
            }
            match op {
                StoreOp::PutPool { spec, created_at_ms, deleting } => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO pools (name, slots_per_node, provider, target_nodes, fill, created_at_ms, autoscale, removal, commands, start_task, docker, deleting) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    )?
                    .execute(params![
                        spec.name.as_str(),
                        spec.slots_per_node,
                        spec.provider.as_str(),
                        spec.target_nodes,
                        spec.fill.as_str(),
                        created_at_ms,
                        to_json(&spec.autoscale)?,
                        spec.removal.as_str(),
                        to_json(&spec.commands)?,
                        spec.start_task,
                        to_json(&spec.docker)?,
                        deleting,
                    ])?;
                }
                StoreOp::DeleteJob(id) => {
                    for table in ["tasks", "attempts", "task_groups"] {
                        tx.prepare_cached(&format!("DELETE FROM {table} WHERE job_id = ?1"))?.execute([id.0])?;
                    }
                    tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?.execute([id.0])?;
                    // All but the event that says it was deleted, just recorded.
                    tx.prepare_cached("DELETE FROM events WHERE job_id = ?1 AND id < ?2")?
                        .execute(params![id.0, last_event])?;
                    match fs::remove_dir_all(logs.join(id.0.to_string())) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => tracing::warn!(job_id = %id, error = %e, "could not delete the job's logs"),
                    }
                }
                StoreOp::PutIdempotencyKey(k) => {
                    // A plain INSERT: a second job for one key would break the
                    // primary key and roll back the transaction that made it.
                    tx.prepare_cached(
                        "INSERT INTO idempotency_keys (owner, key, digest, job_id, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![k.key.owner, k.key.key, k.key.digest, k.job.0, k.at_ms])?;
                }
                StoreOp::ExpireIdempotencyKeys { before_ms } => {
                    tx.prepare_cached("DELETE FROM idempotency_keys WHERE at_ms < ?1")?.execute([before_ms])?;
                }
                StoreOp::PutToken(t) => {
                    tx.prepare_cached("DELETE FROM tokens WHERE name = ?1")?.execute([&t.name])?;
                    tx.prepare_cached(
                        "INSERT INTO tokens (id, name, role, pool, hash, created_at_ms, expires_at_ms, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        t.id,
                        t.name,
                        t.role.as_str(),
                        t.pool.as_ref().map(|p| p.as_str()),
                        crate::auth::secret::hex(&t.hash),
                        t.created_at_ms,
                        t.expires_at_ms,
                        t.created_by
                    ])?;
                }
                StoreOp::DeleteToken { id, .. } => {
                    tx.prepare_cached("DELETE FROM tokens WHERE id = ?1")?.execute([id])?;
                    tx.prepare_cached("DELETE FROM node_credentials WHERE token_id = ?1")?.execute([id])?;
                }
                StoreOp::PutNodeCredential(c) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO node_credentials (node_id, pool, hash, token_id) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![c.node.0, c.pool.as_str(), crate::auth::secret::hex(&c.hash), c.token_id])?;
                }
                StoreOp::DeletePool(name) => {
                    tx.prepare_cached("DELETE FROM pools WHERE name = ?1")?.execute([name.as_str()])?;
                    tx.prepare_cached("DELETE FROM scale_log WHERE pool = ?1")?.execute([name.as_str()])?;
                }
                StoreOp::PutNode(n) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO nodes (id, pool, hostname, slots, cpus, memory_bytes, pid, status, reason, registered_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )?
                    .execute(params![
                        n.id.0,
                        n.pool.as_str(),
                        n.hostname,
                        n.slots,
                        n.cpus,
                        n.memory_bytes,
                        n.pid,
                        n.status.as_str(),
                        n.reason.map(|r| r.as_str()),
                        n.registered_at_ms
                    ])?;
                }
                StoreOp::InsertJob(j) => {
                    let task = serde_json::to_string(&j.spec.task).map_err(|e| corrupt(e.to_string()))?;
                    if let Some(graph) = &j.spec.graph {
                        insert_groups(&tx, j.id, 0, &graph.groups)?;
                    }
                    tx.prepare_cached(
                        "INSERT INTO jobs (id, pool, name, priority, task_spec, first_index, last_index, state, submitted_at_ms, finished_at_ms, is_graph, open, notify_url, owner, max_output) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                    )?
                    .execute(params![
                        j.id.0,
                        j.spec.pool.as_str(),
                        j.spec.name,
                        j.spec.priority,
                        task,
                        j.spec.first_index,
                        j.spec.last_index,
                        j.state.as_str(),
                        j.submitted_at_ms,
                        j.finished_at_ms,
                        j.spec.graph.is_some(),
                        j.spec.open,
                        j.spec.notify,
                        j.spec.owner,
                        j.spec.max_output
                    ])?;
                }
                StoreOp::SetJobState { id, state, finished_at_ms } => {
                    tx.prepare_cached("UPDATE jobs SET state = ?2, finished_at_ms = ?3 WHERE id = ?1")?
                        .execute(params![id.0, state.as_str(), finished_at_ms])?;
                }
                StoreOp::PutTask(t) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO tasks (job_id, idx, state, attempt, failures, node_losses, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        t.key.job.0,
                        t.key.index,
                        t.state.as_str(),
                        t.attempt,
                        t.failures,
                        t.node_losses,
                        t.reason
                    ])?;
                }
                StoreOp::AddTaskGroups { job, first_group, groups, last_index } => {
                    insert_groups(&tx, *job, *first_group, groups)?;
                    tx.prepare_cached("UPDATE jobs SET last_index = ?2 WHERE id = ?1")?
                        .execute(params![job.0, last_index])?;
                }
                StoreOp::ScaleRecord { pool, record } => {
                    tx.prepare_cached(
                        "INSERT INTO scale_log (pool, at_ms, from_nodes, to_nodes, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        pool.as_str(),
                        record.at_ms,
                        record.from,
                        record.to,
                        record.reason
                    ])?;
                    // Keep the last 100 per pool.
                    tx.prepare_cached(
                        "DELETE FROM scale_log WHERE pool = ?1 AND rowid NOT IN (SELECT rowid FROM scale_log WHERE pool = ?1 ORDER BY rowid DESC LIMIT 100)",
                    )?
                    .execute([pool.as_str()])?;
                }
                StoreOp::SetDelivery { job, delivery } => {
                    tx.prepare_cached(
                        "UPDATE jobs SET notify_attempts = ?2, notify_error = ?3, notify_delivered_at_ms = ?4 WHERE id = ?1",
                    )?
                    .execute(params![job.0, delivery.attempts, delivery.last_error, delivery.delivered_at_ms])?;
                }
                StoreOp::CloseJob(job) => {
                    tx.prepare_cached("UPDATE jobs SET open = 0 WHERE id = ?1")?.execute([job.0])?;
                }
                StoreOp::StartAttempt { attempt, node, started_at_ms, .. } => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO attempts (job_id, idx, attempt, node_id, started_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![attempt.task.job.0, attempt.task.index, attempt.attempt, node.0, started_at_ms])?;
                }
                StoreOp::EndAttempt { attempt, started_at_ms, outcome, exit_code, signal, message, ended_at_ms } => {
                    tx.prepare_cached(
                        "UPDATE attempts SET ended_at_ms = ?4, outcome = ?5, exit_code = ?6, signal = ?7, message = ?8, started_at_ms = COALESCE(?9, started_at_ms) WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3",
                    )?
                    .execute(params![
                        attempt.task.job.0,
                        attempt.task.index,
                        attempt.attempt,
                        ended_at_ms,
                        outcome.as_str(),
                        exit_code,
                        signal,
                        message,
                        started_at_ms
                    ])?;
                }
                // Task output must not hold up the state: a log that cannot be
                // written (disk full, permissions) is reported and skipped.
                StoreOp::Actor(_) | StoreOp::ObjectChanged { .. } => {}
                StoreOp::ForgetNodeCredential(node) => {
                    tx.prepare_cached("DELETE FROM node_credentials WHERE node_id = ?1")?.execute([&node.0])?;
                }
                StoreOp::Log(chunk) => {
                    if let Err(e) = write_log(logs, chunk) {
                        tracing::error!(task = %chunk.attempt.task, error = %e, "could not write task output; skipping it");
                    }
                }
            }
        }
        // Trim the feed now and then, not on every commit.
        if last_event / 10_000 != self.last_event / 10_000 {
            crate::events::trim(&tx, last_event)?;
        }
        tx.commit()?;
        self.last_event = last_event;
        self.committed_events.append(&mut recorded);
        Ok(())
    }
}

fn insert_groups(tx: &rusqlite::Transaction, job: JobId, first: u32, groups: &[TaskGroup]) -> Result<()> {
    let mut stmt = tx.prepare_cached("INSERT INTO task_groups (job_id, position, spec) VALUES (?1, ?2, ?3)")?;
    for (i, group) in groups.iter().enumerate() {
        let spec = serde_json::to_string(group).map_err(|e| corrupt(e.to_string()))?;
        stmt.execute(params![job.0, first + i as u32, spec])?;
    }
    Ok(())
}

/// Writes a log chunk at its offset, so a chunk sent twice lands once.
fn write_log(logs: &Path, chunk: &LogChunk) -> Result<()> {
    let path = log_path(logs, chunk.attempt, chunk.stderr);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
    file.write_all_at(&chunk.data, chunk.offset)?;
    Ok(())
}

/// Read-only access for the service: attempt history and logs.
pub struct Reader {
    conn: Connection,
    logs: PathBuf,
}

impl Reader {
    pub fn attempts(&self, key: TaskKey) -> Result<Vec<AttemptRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT attempt, node_id, started_at_ms, ended_at_ms, outcome, exit_code, signal, message FROM attempts WHERE job_id = ?1 AND idx = ?2 ORDER BY attempt",
        )?;
        let rows = stmt.query_map(params![key.job.0, key.index], |r| {
            Ok(AttemptRow {
                attempt: r.get(0)?,
                node_id: r.get(1)?,
                started_at_ms: r.get(2)?,
                ended_at_ms: r.get(3)?,
                outcome: r.get::<_, Option<String>>(4)?.map(|o| o.parse()).transpose().map_err(corrupt)?,
                exit_code: r.get(5)?,
                signal: r.get(6)?,
                message: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` events after `after` that pass `filter`, oldest first.
    pub fn events(
        &self,
        after: u64,
        filter: &crate::events::Filter,
        limit: usize,
    ) -> Result<Vec<crate::events::Event>> {
        Ok(crate::events::read(&self.conn, after, filter, limit)?)
    }

    /// The oldest and the newest event kept (`None` for an empty feed), and the
    /// newest ever recorded.
    pub fn event_bounds(&self) -> Result<(Option<u64>, u64)> {
        Ok((crate::events::first_id(&self.conn)?, crate::events::last_id(&self.conn)?))
    }

    /// Whether an attempt has ended in the record.
    pub fn attempt_ended(&self, attempt: AttemptRef) -> Result<bool> {
        let ended: Option<Option<u64>> = self
            .conn
            .prepare_cached("SELECT ended_at_ms FROM attempts WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3")?
            .query_row(params![attempt.task.job.0, attempt.task.index, attempt.attempt], |r| r.get(0))
            .optional()?;
        Ok(matches!(ended, Some(Some(_))))
    }

    /// Up to `max` bytes of a log from `offset`; empty at the end or if nothing was written.
    pub fn read_log(&self, attempt: AttemptRef, stderr: bool, offset: u64, max: usize) -> Result<Vec<u8>> {
        let path = log_path(&self.logs, attempt, stderr);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        let want = len.saturating_sub(offset).min(max as u64) as usize;
        let mut buf = vec![0; want];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

fn corrupt(why: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("corrupt row in the store: {why}").into())
}

/// Columns added since the first release, for a store written by an older
/// coordinator (`CREATE TABLE IF NOT EXISTS` leaves an existing table as it was).
const NEWER_COLUMNS: &[(&str, &str, &str)] = &[
    ("jobs", "notify_url", "TEXT"),
    ("jobs", "notify_attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "notify_error", "TEXT"),
    ("jobs", "notify_delivered_at_ms", "INTEGER"),
    ("jobs", "owner", "TEXT NOT NULL DEFAULT ''"),
    ("jobs", "max_output", "INTEGER NOT NULL DEFAULT 0"),
    ("events", "actor", "TEXT"),
];

/// Columns added to `pools` since the first release.
const POOL_COLUMNS: &[(&str, &str)] = &[
    ("autoscale", "TEXT"),
    ("removal", "TEXT"),
    ("commands", "TEXT"),
    ("start_task", "TEXT"),
    ("docker", "TEXT"),
    ("deleting", "INTEGER NOT NULL DEFAULT 0"),
];

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('pools')")?;
    let have: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    for (column, decl) in POOL_COLUMNS {
        if !have.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE pools ADD COLUMN {column} {decl}"))?;
        }
    }
    for (table, column, decl) in NEWER_COLUMNS {
        let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let have: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        if !have.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    Ok(())
}

/// An optional setting kept as a JSON column.
fn to_json<T: serde::Serialize>(value: &Option<T>) -> rusqlite::Result<Option<String>> {
    value.as_ref().map(|v| serde_json::to_string(v).map_err(|e| corrupt(e.to_string()))).transpose()
}

fn from_json<T: serde::de::DeserializeOwned>(column: Option<String>) -> rusqlite::Result<Option<T>> {
    column.map(|json| serde_json::from_str(&json).map_err(|e| corrupt(e.to_string()))).transpose()
}

/// Writes `ops` before returning. Nothing is acknowledged until it is durable, so a
/// failure that may pass (disk full, I/O error, a lock) is retried, loudly, for as
/// long as it takes. A failure that will not pass (a value the store cannot hold)
/// must not stop every other change: the ops are then written one by one and only
/// the failing one is skipped, with an error naming it.
/// Writes the ops of several batches (`sizes` says how many each has) and says,
/// per batch, whether all of its changes were stored. A change the store refuses
/// (not a full disk: a value it cannot hold) is skipped, and its batch's callers
/// are told, never answered as if it were stored.
fn write_durably(
    store: &mut Store,
    ops: &[StoreOp],
    sizes: &[usize],
    health: &watch::Sender<Option<String>>,
) -> Vec<Stored> {
    let Err(err) = apply_retrying(store, ops, health) else { return vec![Ok(()); sizes.len()] };
    tracing::error!(error = %err, "a change cannot be stored; writing the batches one at a time");
    let mut results = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for &size in sizes {
        let batch = &ops[at..at + size];
        at += size;
        let Err(err) = apply_retrying(store, batch, health) else {
            results.push(Ok(()));
            continue;
        };
        let refused = format!("the store refused this change ({err}); it was not saved");
        for op in batch {
            if let Err(err) = apply_retrying(store, std::slice::from_ref(op), health) {
                tracing::error!(error = %err, ?op, "skipping a change the store cannot hold");
            }
        }
        results.push(Err(refused));
    }
    results
}

/// Applies `ops`, retrying failures that may pass (a full disk) for as long as
/// they last, and saying so in `health` meanwhile; returns the others.
fn apply_retrying(store: &mut Store, ops: &[StoreOp], health: &watch::Sender<Option<String>>) -> Result<()> {
    let mut delay = Duration::from_millis(50);
    loop {
        match store.apply(ops) {
            Ok(()) => {
                health.send_if_modified(|h| h.take().is_some());
                return Ok(());
            }
            Err(err) if is_transient(&err) => {
                tracing::error!(error = %err, "could not write to the store; retrying in {delay:?} (is the disk full?)");
                let cause = err.to_string();
                health.send_if_modified(|h| h.replace(cause.clone()).as_ref() != Some(&cause));
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err),
        }
    }
}

fn is_transient(err: &crate::error::Error) -> bool {
    use rusqlite::ErrorCode::*;
    match err {
        crate::error::Error::Io(_) => true,
        crate::error::Error::Store(rusqlite::Error::SqliteFailure(e, _)) => {
            matches!(e.code, DiskFull | SystemIoFailure | DatabaseBusy | DatabaseLocked | CannotOpen | OutOfMemory)
        }
        _ => false,
    }
}

/// Whether a batch was stored, or why not.
pub type Stored = std::result::Result<(), String>;

/// Something to do once a batch is durable (or was refused).
pub type FollowUp = Box<dyn FnOnce(&Stored) + Send>;

/// A group of changes and what to do once they are durable.
pub struct Batch {
    pub ops: Vec<StoreOp>,
    pub then: Vec<FollowUp>,
}

/// What the writer made durable in one commit, for those who watch it (the event
/// feed, the metrics).
pub struct Committed<'a> {
    pub ops: &'a [StoreOp],
    /// The events recorded with them, in order.
    pub events: &'a [crate::events::Event],
    /// The id of the newest event recorded, after this commit.
    pub last_event: u64,
    /// How long writing and committing took.
    pub took: Duration,
}

/// The handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Batch>,
}

impl Writer {
    /// Starts the writer thread. It ends when every `Writer` clone is dropped, after
    /// writing what it was given. `committed` hears of each commit before the
    /// batches' follow-ups run.
    pub fn spawn(
        mut store: Store,
        health: watch::Sender<Option<String>>,
        mut committed: impl FnMut(Committed) + Send + 'static,
    ) -> (Writer, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Batch>();
        let handle = std::thread::Builder::new()
            .name("corral-store".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batches = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batches.push(more);
                        if batches.len() >= 256 {
                            break;
                        }
                    }
                    let sizes: Vec<usize> = batches.iter().map(|b| b.ops.len()).collect();
                    let ops: Vec<StoreOp> = batches.iter_mut().flat_map(|b| b.ops.drain(..)).collect();
                    let mut stored = vec![Ok(()); batches.len()];
                    if !ops.is_empty() {
                        let started = std::time::Instant::now();
                        stored = write_durably(&mut store, &ops, &sizes, &health);
                        let took = started.elapsed();
                        let events = std::mem::take(&mut store.committed_events);
                        committed(Committed { ops: &ops, events: &events, last_event: store.last_event(), took });
                    }
                    for (batch, stored) in batches.into_iter().zip(&stored) {
                        for f in batch.then {
                            f(stored);
                        }
                    }
                }
            })
            .expect("spawning the store thread");
        (Writer { tx }, handle)
    }

    /// Queues a batch. Fails only when the writer has stopped.
    pub fn submit(&self, batch: Batch) -> bool {
        self.tx.send(batch).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_from_before_the_newer_pool_columns_opens_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("corral.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE pools (name TEXT PRIMARY KEY, slots_per_node INTEGER NOT NULL, provider TEXT NOT NULL,
                target_nodes INTEGER NOT NULL, fill TEXT NOT NULL, created_at_ms INTEGER NOT NULL);
             INSERT INTO pools VALUES ('old', 2, 'local', 1, 'spread', 5);",
        )
        .unwrap();
        drop(conn);
        let store = Store::open(dir.path()).unwrap();
        let snap = store.load().unwrap();
        let (spec, created, deleting) = &snap.pools[0];
        assert_eq!((spec.name.as_str(), *created, *deleting), ("old", 5, false));
        assert_eq!(spec.removal, RemovalPolicy::TaskCompletion);
        assert!(spec.docker.is_none() && spec.commands.is_none());
    }
}
