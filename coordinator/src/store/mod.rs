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
//!
//! - [`lock`]: one coordinator per data dir, held by the OS for the process's life;
//! - [`schema`]: the tables, the schema version, and the one way an older store is
//!   brought up to date (a newer one is refused);
//! - [`load`]: everything the core is rebuilt from at start;
//! - [`backend`]: the seams everything else holds the store by ([`Backend`], the
//!   [`Durable`] writer, the [`History`] reader) and SQLite's implementation of them;
//! - [`error`]: the store's own error ([`StoreError`]), which SQLite's are sorted into;
//! - [`events`]: the event feed's rows, numbered and trimmed;
//! - [`apply`]: one transaction of the core's changes, with the event each makes
//!   (derived in `crate::events`);
//! - [`writer`]: the thread that applies batches with group commit and retries a
//!   full disk;
//! - [`lost`]: task output that could not be written, said on its attempt;
//! - [`reader`]: the second connection, for what the core does not keep (attempt
//!   history, events, logs);
//! - [`schedules`]: schedules, and the slots that made jobs (one row each, keyed by
//!   the slot);
//! - [`templates`]: templates, triggers and polling triggers' cursors.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::error::Result;
use crate::model::*;

mod apply;
pub mod backend;
mod error;
mod events;
mod load;
pub mod lock;
mod lost;
mod reader;
mod schedules;
mod schema;
mod templates;
mod writer;

pub use backend::{Backend, Durable, History, Sqlite};
pub use error::StoreError;
pub use reader::{AttemptRow, Reader};
pub use writer::{Batch, Committed, FollowUp, Stored, Writer};

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
    /// Task output that could not be written, until the attempts' records say so.
    lost: lost::Lost,
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
        let path = data_dir.join("corral.db");
        let mut conn = open_connection(&path)?;
        schema::migrate(&mut conn, &path)?;
        let logs = data_dir.join("logs");
        fs::create_dir_all(&logs)?;
        let last_event = events::last_id(&conn)?;
        let lost = lost::Lost::open(&conn)?;
        Ok(Store { conn, logs, job_pools: HashMap::new(), last_event, committed_events: Vec::new(), lost })
    }

    /// Everything the core and the gate are rebuilt from, read again on a
    /// connection of its own while the writer keeps its own (WAL lets both be open):
    /// the event loop reloads it after the writer refused a batch, to undo that
    /// batch in memory.
    pub fn load_again(
        data_dir: &Path,
    ) -> Result<(crate::core::Snapshot, Vec<crate::auth::TokenRecord>, Vec<crate::auth::NodeCredential>)> {
        let store = Store {
            conn: open_connection(&data_dir.join("corral.db"))?,
            logs: data_dir.join("logs"),
            job_pools: HashMap::new(),
            last_event: 0,
            committed_events: Vec::new(),
            lost: lost::Lost::default(),
        };
        let snapshot = store.load()?;
        let (tokens, nodes) = store.load_auth()?;
        Ok((snapshot, tokens, nodes))
    }

    /// A second connection for reads that the core does not keep in memory
    /// (attempt history); WAL lets it read while the writer writes.
    pub fn open_reader(data_dir: &Path) -> Result<Reader> {
        Ok(Reader { conn: open_connection(&data_dir.join("corral.db"))?, logs: data_dir.join("logs") })
    }
}

/// A row the store holds but cannot read back.
fn corrupt(why: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("corrupt row in the store: {why}").into())
}

/// An optional setting kept as a JSON column.
fn to_json<T: serde::Serialize>(value: &Option<T>) -> rusqlite::Result<Option<String>> {
    value.as_ref().map(|v| serde_json::to_string(v).map_err(|e| corrupt(e.to_string()))).transpose()
}

fn from_json<T: serde::de::DeserializeOwned>(column: Option<String>) -> rusqlite::Result<Option<T>> {
    column.map(|json| serde_json::from_str(&json).map_err(|e| corrupt(e.to_string()))).transpose()
}
