//! The durable store: SQLite (WAL mode, `synchronous=FULL`) in the data dir, plus
//! log files beside it.
//!
//! One writer thread applies the core's [`StoreOp`]s with group commit: it takes every
//! batch waiting in its queue, writes them all in one transaction, commits, and only
//! then runs each batch's follow-ups (replies to clients, messages to agents). So a
//! change is never visible outside the coordinator before it is durable, and one
//! fsync covers as many changes as arrived meanwhile. On PostgreSQL it sends the next
//! transaction while the database commits the last ([`Durable::send`]), which commits
//! only if the last one did.
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

use std::collections::{HashMap, VecDeque};
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
mod jobs;
mod load;
pub mod lock;
mod logs;
mod lost;
mod pools;
pub mod postgres;
mod reader;
mod schedules;
mod schema;
mod sql;
mod sqlite;
mod templates;
mod writer;

pub use backend::{Backend, Durable, History, Postgres, Sqlite};
pub use error::StoreError;
pub use reader::{AttemptRow, EndedAttempt, Reader};
pub use writer::{Batch, Committed, FollowUp, Stored, Writer};

use logs::Logs;
use sql::{Sql, Tx};

/// The environment that carries the store's secrets: never passed to a process the
/// coordinator starts (local agents and their tasks, provider commands).
pub const STORE_SECRETS: &[&str] = &["PGPASSWORD", "PGPASSFILE", "CORRAL_STORE_PASSWORD_FILE"];

/// Which store the coordinator runs on (`--store`).
#[derive(Debug, Clone, Default)]
pub enum StoreKind {
    /// `DATA_DIR/corral.db`, embedded.
    #[default]
    Sqlite,
    /// A PostgreSQL database.
    Postgres(std::sync::Arc<postgres::Target>),
}

impl StoreKind {
    /// Reads `--store` (`sqlite` or `postgres://USER@HOST:PORT/DB`), with the
    /// password file for PostgreSQL.
    pub fn parse(value: &str, password_file: Option<&Path>) -> std::result::Result<StoreKind, String> {
        let value = value.trim();
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(StoreKind::Postgres(std::sync::Arc::new(postgres::Target::parse(value, password_file)?)));
        }
        if password_file.is_some() {
            return Err("--store-password-file is for --store postgres://USER@HOST:PORT/DB".into());
        }
        if value.is_empty() || value == "sqlite" {
            return Ok(StoreKind::Sqlite);
        }
        let mut header = [0u8; 16];
        let is_sqlite_file = fs::File::open(value)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
            .is_ok_and(|()| &header == b"SQLite format 3\0");
        if is_sqlite_file || value.starts_with("sqlite:") || value.ends_with(".db") {
            return Err(format!(
                "--store: {value} is a SQLite database, and SQLite is not named by a file: use --store sqlite with --data-dir DIR (the store is DIR/corral.db), or --store postgres://USER@HOST:PORT/DB"
            ));
        }
        Err(format!("--store: {value:?} is neither sqlite nor a postgres://USER@HOST:PORT/DB URL"))
    }
}

/// A connection to the store's database, whichever engine runs it.
pub(crate) enum Db {
    Sqlite(Connection),
    Postgres(Box<postgres::PgConn>),
}

impl Db {
    /// A transaction that writes.
    fn transaction(&mut self) -> Result<Box<dyn Tx + '_>> {
        match self {
            Db::Sqlite(conn) => Ok(Box::new(sqlite::SqliteTx(conn.transaction()?))),
            Db::Postgres(conn) => Ok(Box::new(conn.transaction(false)?)),
        }
    }

    /// A transaction that only reads, and sees one moment of the store throughout.
    fn snapshot(&mut self) -> Result<Box<dyn Tx + '_>> {
        match self {
            Db::Sqlite(conn) => Ok(Box::new(sqlite::SqliteTx(conn.transaction()?))),
            Db::Postgres(conn) => Ok(Box::new(conn.transaction(true)?)),
        }
    }

    /// After commits went unanswered: how many of them happened, oldest first
    /// (`None` when none went unanswered).
    fn settle_unsure(&mut self) -> Result<Option<usize>> {
        match self {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres(conn) => conn.settle_unsure(),
        }
    }

    /// Reads the answer of the oldest transaction sent with `commit_later`.
    fn settle(&mut self) -> Result<()> {
        match self {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(conn) => conn.settle(),
        }
    }

    /// Whether the engine answers a commit later than it is sent.
    fn pipelines(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Whether the last commit went unanswered.
    fn commit_unsure(&self) -> bool {
        matches!(self, Db::Postgres(conn) if conn.is_unsure())
    }

    /// The connection itself, for reads of one statement.
    fn sql(&mut self) -> &mut dyn Sql {
        match self {
            Db::Sqlite(conn) => conn,
            Db::Postgres(conn) => conn.as_mut(),
        }
    }
}

/// The store's database and its task output: the writer's side.
pub struct Store {
    db: Db,
    logs: Logs,
    /// Each job's pool, for the events of its tasks.
    job_pools: HashMap<JobId, PoolName>,
    /// The id of the newest event recorded.
    last_event: u64,
    /// Events committed since the writer last took them.
    committed_events: Vec<crate::events::Event>,
    /// Task output that could not be written, until the attempts' records say so.
    lost: lost::Lost,
    /// Transactions sent whose commits are not answered yet, oldest first.
    sent: VecDeque<apply::Written>,
    /// Transactions whose commits went unanswered (PostgreSQL's session was
    /// lost), for when the database says which happened.
    unsure: VecDeque<apply::Written>,
    /// Those that did happen: the writer applies them again, in order, and is
    /// told they are stored.
    happened: VecDeque<apply::Written>,
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Room for every statement the writer runs (rusqlite keeps 16 by default).
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Where the log of one attempt's stdout or stderr lives.
pub fn log_path(logs: &Path, attempt: AttemptRef, rank: u32, stderr: bool) -> PathBuf {
    let ext = if stderr { "stderr" } else { "stdout" };
    let (index, n) = (attempt.task.index, attempt.attempt);
    let name = match rank {
        0 => format!("{index}.{n}.{ext}"),
        rank => format!("{index}.{n}.rank{rank}.{ext}"),
    };
    logs.join(attempt.task.job.to_string()).join(name)
}

impl Store {
    /// Opens (or creates) the SQLite store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store> {
        fs::create_dir_all(data_dir)?;
        let path = data_dir.join("corral.db");
        let mut conn = open_connection(&path)?;
        schema::migrate(&mut conn, &path)?;
        let logs = data_dir.join("logs");
        fs::create_dir_all(&logs)?;
        let mut db = Db::Sqlite(conn);
        let lost = lost::Lost::open(db.sql())?;
        Store::with(db, Logs::Files(logs), lost)
    }

    /// A store on a database that is open and up to date.
    fn with(mut db: Db, logs: Logs, lost: lost::Lost) -> Result<Store> {
        let last_event = events::last_id(db.sql())?;
        Ok(Store {
            db,
            logs,
            job_pools: HashMap::new(),
            last_event,
            committed_events: Vec::new(),
            lost,
            sent: VecDeque::new(),
            unsure: VecDeque::new(),
            happened: VecDeque::new(),
        })
    }

    /// Everything the core and the gate are rebuilt from, read again on a
    /// connection of its own while the writer keeps its own (WAL lets both be open):
    /// the event loop reloads it after the writer refused a batch, to undo that
    /// batch in memory.
    pub fn load_again(data_dir: &Path) -> Result<backend::Loaded> {
        load::everything(&mut Db::Sqlite(open_connection(&data_dir.join("corral.db"))?))
    }

    /// A second connection for reads that the core does not keep in memory
    /// (attempt history); WAL lets it read while the writer writes.
    pub fn open_reader(data_dir: &Path) -> Result<Reader> {
        Ok(Reader {
            db: Db::Sqlite(open_connection(&data_dir.join("corral.db"))?),
            logs: Logs::Files(data_dir.join("logs")),
        })
    }
}

/// A row the store holds but cannot read back.
fn corrupt(why: impl std::fmt::Display) -> crate::error::Error {
    StoreError::Corrupt(format!("corrupt row in the store: {why}")).into()
}

/// An optional setting kept as a JSON column.
fn to_json<T: serde::Serialize>(value: &Option<T>) -> Result<Option<String>> {
    value.as_ref().map(|v| serde_json::to_string(v).map_err(|e| corrupt(e.to_string()))).transpose()
}

fn from_json<T: serde::de::DeserializeOwned>(column: Option<String>) -> Result<Option<T>> {
    column.map(|json| serde_json::from_str(&json).map_err(|e| corrupt(e.to_string()))).transpose()
}
