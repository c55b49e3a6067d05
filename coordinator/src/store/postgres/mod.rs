//! PostgreSQL as the store (`--store postgres://...`), through tokio-postgres.
//!
//! Each connection ([`PgConn`]) has its own small runtime (one worker thread that
//! drives the socket), so the store's synchronous callers (the writer thread, the
//! reader behind `spawn_blocking`) use it as they use SQLite. A transaction's writes
//! are gathered ([`batch`]: the rows of one statement go as one statement over
//! arrays) and sent in one pipeline with its `COMMIT`, the answers read in order.
//! The writer does not wait for them before it sends its next transaction
//! ([`PgTx::send_commit`], [`PgConn::settle`]): the server commits one while the
//! coordinator makes the next, and each counts itself in `corral_writer` only if
//! the one before it did (`corral_count_commit`), so none commits without those
//! before it. One coordinator writes a database: the one holding the lease
//! ([`lease`]); the same check fails every commit of a coordinator whose epoch is no
//! longer the lease's. The count in `corral_writer` also tells, after reconnecting,
//! whether a `COMMIT` whose answer was lost with the connection happened, so it is
//! never applied twice; the writer's session holds an advisory lock of its epoch, so
//! a lost session of its own has ended on the server before that count is read.
//!
//! - [`target`]: the URL, the password, TLS;
//! - [`schema`]: the tables and their numbered migrations;
//! - [`lease`]: the leader's lease, and standing by for it;
//! - [`batch`]: how a transaction's writes are gathered.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;

use bytes::BytesMut;
use futures::future::{maybe_done, MaybeDone};
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::sql::{refuse_unstorable, Dialect, Row, Sql, Tx, Value};
use super::StoreError;
use crate::error::Result;

mod batch;
mod errors;
pub mod lease;
pub mod schema;
pub mod target;
mod tx;

use errors::{connect_error, describe, sort};
pub use target::Target;
pub use tx::PgTx;
use tx::{placeholders, read_answers, row_of};

/// A write sent: its answer, read in order at the next query or the commit.
type InFlight = Pin<Box<MaybeDone<Pin<Box<dyn Future<Output = PgResult<()>> + Send>>>>>;
type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;

/// The advisory locks of the store: the writer's session holds (`WRITER_LOCK`, its
/// epoch), so that a session of its own that was lost but lingers on the server
/// has ended before the writer reads what it committed; a migration holds
/// `MIGRATION_LOCK` for its transaction.
const WRITER_LOCK: i32 = 0x636f_7272; // "corr"
const MIGRATION_LOCK: i64 = 0x636f_7272_616d; // "corram"

/// What a connection is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The leader's writer, holding the lease of this epoch: each of its commits
    /// checks that the lease is still its own.
    Writer {
        epoch: u64,
    },
    Reader,
}

/// A connection's own runtime, shut down without waiting when dropped: a
/// connection may be dropped on a thread of another runtime (a load at start-up),
/// where a runtime must not block.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for OwnRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// One session with the database, reconnected when it is lost.
pub struct PgConn {
    rt: OwnRuntime,
    target: Arc<Target>,
    role: Role,
    client: Option<Arc<Client>>,
    statements: HashMap<String, Statement>,
    /// How each statement is gathered in a transaction ([`batch`]).
    shapes: HashMap<String, Arc<batch::Shape>>,
    /// The types of each table's columns, for gathered rows (`None`: a type rows
    /// are not gathered for).
    column_types: HashMap<String, Option<HashMap<String, Type>>>,
    /// The count in `corral_writer` of the newest commit sent (the writer's).
    commits: u64,
    /// The count of the newest commit known to have happened.
    confirmed: u64,
    /// Transactions sent with their `COMMIT`, whose answers are not read yet,
    /// oldest first ([`PgTx::send_commit`]).
    pending: VecDeque<Pending>,
    /// Commits whose answers were lost with the session: the count known before
    /// them, and the newest count they would have made.
    unsure: Option<(u64, u64)>,
}

/// A transaction sent whole, `COMMIT` included: its answers, and the count it
/// makes in `corral_writer`.
struct Pending {
    answers: Vec<InFlight>,
    count: u64,
}

/// Runs `f` to completion on `rt`: from a thread inside another runtime (a
/// `spawn_blocking` thread or an async start-up), on a thread of its own, since a
/// runtime cannot be driven from within one.
fn block<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return rt.block_on(f);
    }
    std::thread::scope(|s| match s.spawn(|| rt.block_on(f)).join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl PgConn {
    /// Connects (and, for the writer, takes the writer's lock).
    pub(crate) fn open(target: Arc<Target>, role: Role) -> Result<PgConn> {
        // One worker drives the session's socket, so answers are read while the
        // writer thread goes on (measured: faster than driving it from the caller).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("corral-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start PostgreSQL's client: {e}")))?;
        let mut conn = PgConn {
            rt: OwnRuntime(Some(rt)),
            target,
            role,
            client: None,
            statements: HashMap::new(),
            shapes: HashMap::new(),
            column_types: HashMap::new(),
            commits: 0,
            confirmed: 0,
            pending: VecDeque::new(),
            unsure: None,
        };
        conn.connect()?;
        Ok(conn)
    }

    /// The live session (made anew if the last one was lost), and the runtime
    /// that drives it.
    fn client(&mut self) -> Result<(&tokio::runtime::Runtime, &Client)> {
        self.connect()?;
        match &self.client {
            Some(client) => Ok((&self.rt, client)),
            None => Err(StoreError::Unavailable("PostgreSQL: no session".into()).into()),
        }
    }

    fn connect(&mut self) -> Result<()> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.client = None;
        self.statements.clear();
        let target = self.target.clone();
        let client = block(&self.rt, async {
            // The session's socket is driven by a task of this runtime, whenever a
            // call runs it.
            match &target.tls {
                Some(tls) => {
                    let (client, connection) = target.config.connect(tls.clone()).await?;
                    tokio::spawn(connection);
                    Ok::<_, tokio_postgres::Error>(client)
                }
                None => {
                    let (client, connection) = target.config.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(connection);
                    Ok(client)
                }
            }
        })
        .map_err(|e| connect_error(&self.target, &e))?;
        if let Role::Writer { epoch } = self.role {
            self.take_writer_lock(&client, epoch)?;
            // Every write finds its rows by key. A plan made while a table was
            // small (a scan of it, a hash join) would be kept by the prepared
            // statement as the table grows: the writer's session never plans one.
            // And each event it inserts is stamped with its epoch (migration 6).
            let keyed = format!(
                "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off; SET corral.epoch = {epoch}"
            );
            block(&self.rt, client.batch_execute(&keyed)).map_err(|e| sort(&e))?;
        }
        self.client = Some(Arc::new(client));
        Ok(())
    }

    /// Takes the writer's advisory lock on a new session, or says who has it.
    fn take_writer_lock(&mut self, client: &Client, epoch: u64) -> Result<()> {
        let target = self.target.clone();
        let key = (epoch % (i32::MAX as u64)) as i32;
        let got = block(&self.rt, async {
            let row = client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&WRITER_LOCK, &key]).await?;
            row.try_get::<_, bool>(0)
        })
        .map_err(|e| sort(&e))?;
        if got {
            return Ok(());
        }
        let holder =
            block(&self.rt, async { client.query_opt("SELECT holder FROM corral_writer WHERE one = 1", &[]).await })
                .ok()
                .flatten()
                .and_then(|row| row.try_get::<_, Option<String>>(0).ok().flatten())
                .unwrap_or_else(|| "another coordinator".into());
        Err(crate::error::Error::refused(format!(
            "database {} is in use by {holder}; stop it or use another database",
            target.shown
        )))
    }

    /// Says in `corral_writer` which coordinator holds the lock (for the message
    /// a second one gets), and reads the commit count.
    pub(crate) fn claim(&mut self) -> Result<()> {
        let holder = crate::store::lock::holder(Some(&crate::store::lock::hostname()));
        let (rt, client) = self.client()?;
        let commits = block(rt, async {
            client.execute("UPDATE corral_writer SET holder = $1 WHERE one = 1", &[&holder]).await?;
            client.query_one("SELECT commits FROM corral_writer WHERE one = 1", &[]).await?.try_get::<_, i64>(0)
        })
        .map_err(|e| sort(&e))?;
        self.commits = commits as u64;
        self.confirmed = self.commits;
        Ok(())
    }

    /// Brings the database to this build's schema ([`schema::VERSION`]) in one
    /// transaction, or refuses one of a newer version.
    pub(crate) fn migrate(&mut self) -> Result<()> {
        let target = self.target.clone();
        let (rt, client) = self.client()?;
        // One migration at a time: coordinators started together on a new
        // database wait for each other here, and the later ones find it done.
        let stored = block(rt, async {
            client.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)").await?;
            client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")).await?;
            client.query_one("SELECT MAX(version) FROM schema_version", &[]).await?.try_get::<_, Option<i64>>(0)
        });
        let stored = match stored {
            Ok(stored) => stored.map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            Err(e) => {
                self.client = None;
                return Err(sort(&e).into());
            }
        };
        let steps = match schema::needed(stored) {
            Ok(steps) => steps,
            Err(why) => {
                let _ = block(rt, client.batch_execute("ROLLBACK"));
                return Err(crate::error::Error::refused(format!("cannot open the store {}: {why}", target.shown)));
            }
        };
        let script = format!(
            "{} DELETE FROM schema_version; INSERT INTO schema_version (version) VALUES ({}); COMMIT;",
            steps.join("\n"),
            schema::VERSION
        );
        if let Err(e) = block(rt, client.batch_execute(&script)) {
            self.client = None;
            return Err(crate::error::Error::refused(format!(
                "cannot set up the store {}: {}",
                target.shown,
                describe(&e)
            )));
        }
        Ok(())
    }

    /// A prepared statement for `sql` (its `?N` written `$N`), from the session's cache.
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        // A new session first: its statements are its own.
        self.connect()?;
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let text = placeholders(sql);
        let (rt, client) = self.client()?;
        let statement = match block(rt, client.prepare(&text)) {
            Ok(statement) => statement,
            Err(e) => {
                self.forget_if_lost(&e);
                return Err(sort(&e).into());
            }
        };
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn run_now(&mut self, sql: &str, args: &[Value<'_>]) -> Result<()> {
        refuse_unstorable(args)?;
        let statement = self.statement(sql)?;
        let (rt, client) = self.client()?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        if let Err(e) = block(rt, client.execute(&statement, &params)) {
            self.forget_if_lost(&e);
            return Err(sort(&e).into());
        }
        Ok(())
    }

    /// Runs a query; a session found lost (the server restarted since the last
    /// call) is made anew and the query asked once more: it only reads.
    fn query_now(&mut self, sql: &str, args: &[Value<'_>], each: &mut dyn FnMut(&Row) -> Result<()>) -> Result<()> {
        refuse_unstorable(args)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let mut again = true;
        let rows = loop {
            let statement = match self.statement(sql) {
                Ok(statement) => statement,
                // Preparing found the session lost (and forgot it).
                Err(_) if again && self.client.is_none() => {
                    again = false;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (rt, client) = self.client()?;
            match block(rt, client.query(&statement, &params)) {
                Ok(rows) => break rows,
                Err(e) if again && e.as_db_error().is_none() => {
                    self.client = None;
                    again = false;
                }
                Err(e) => {
                    self.forget_if_lost(&e);
                    return Err(sort(&e).into());
                }
            }
        };
        for row in rows {
            each(&row_of(&row)?)?;
        }
        Ok(())
    }

    /// Begins a transaction: one that writes, or a read of one moment of the
    /// database (REPEATABLE READ) for a load. One that writes begins without
    /// waiting: its `BEGIN` goes with its statements, behind any transaction
    /// still in flight.
    pub(crate) fn transaction(&mut self, read_only: bool) -> Result<PgTx<'_>> {
        if !read_only {
            self.client()?;
            let begin = self.queue(|client| async move { client.batch_execute("BEGIN").await })?;
            return Ok(PgTx {
                conn: self,
                gathered: batch::Gathered::default(),
                in_flight: vec![begin],
                open: true,
                read_only,
            });
        }
        let (rt, client) = self.client()?;
        if let Err(e) = block(rt, client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")) {
            self.forget_if_lost(&e);
            return Err(sort(&e).into());
        }
        Ok(PgTx { conn: self, gathered: batch::Gathered::default(), in_flight: Vec::new(), open: true, read_only })
    }

    /// Puts a request on the session's queue, in order, and returns its answer
    /// to be read later. A request the client could not even encode fails here,
    /// before anything after it is queued.
    fn queue<F, Fut>(&mut self, request: F) -> std::result::Result<InFlight, StoreError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = PgResult<()>> + Send + 'static,
    {
        let Some(client) = self.client.clone() else {
            return Err(StoreError::Unavailable("PostgreSQL: the session was lost".into()));
        };
        let _runtime = self.rt.enter();
        let request: Pin<Box<dyn Future<Output = PgResult<()>> + Send>> = Box::pin(request(client));
        let mut answer = Box::pin(maybe_done(request));
        // The first poll encodes it and queues it.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let _ = answer.as_mut().poll(&mut cx);
        if let Some(Err(e)) = answer.as_mut().output_mut() {
            if e.as_db_error().is_none() {
                return Err(sort(e));
            }
        }
        Ok(answer)
    }

    /// Reads the answer of the oldest transaction sent ([`PgTx::send_commit`]).
    /// When it failed, none sent after it commits either (each checks the count
    /// of the one before, `corral_count_commit`); when the session was lost
    /// meanwhile, which of them committed is not known until [`Self::settle_unsure`].
    pub(crate) fn settle(&mut self) -> Result<()> {
        let Some(oldest) = self.pending.pop_front() else { return Ok(()) };
        let failed = match read_answers(&self.rt, oldest.answers) {
            Ok(()) => {
                self.confirmed = oldest.count;
                return Ok(());
            }
            Err(e) => e,
        };
        let later = std::mem::take(&mut self.pending);
        if failed.as_db_error().is_some() {
            // Rolled back, and so is every one after it: read their answers.
            for p in later {
                if let Err(e) = read_answers(&self.rt, p.answers) {
                    self.forget_if_lost(&e);
                }
            }
        } else {
            let newest = later.back().map_or(oldest.count, |p| p.count);
            self.unsure = Some((self.confirmed, newest));
            self.client = None;
        }
        self.commits = self.confirmed;
        Err(sort(&failed).into())
    }

    /// After a failure the server did not answer (the session is gone, or going):
    /// the next call makes a new session rather than trying this one again.
    fn forget_if_lost(&mut self, e: &tokio_postgres::Error) {
        if e.as_db_error().is_none() {
            self.client = None;
        }
    }

    fn shape(&mut self, sql: &str) -> Arc<batch::Shape> {
        if let Some(shape) = self.shapes.get(sql) {
            return shape.clone();
        }
        let shape = Arc::new(batch::shape(sql));
        self.shapes.insert(sql.to_string(), shape.clone());
        shape
    }

    /// The types of `shape`'s columns, if rows of them can be gathered.
    fn types_of(&mut self, shape: &batch::RowsShape) -> Result<Option<Vec<Type>>> {
        if !self.column_types.contains_key(&shape.table) {
            let rows = self.query_rows(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?1",
                &[Value::Text(shape.table.clone().into())],
            )?;
            let mut types = HashMap::new();
            let mut all_known = true;
            for row in rows {
                let (column, kind): (String, String) = (row.get(0)?, row.get(1)?);
                match kind.as_str() {
                    "bigint" => types.insert(column, Type::INT8),
                    "text" => types.insert(column, Type::TEXT),
                    "bytea" => types.insert(column, Type::BYTEA),
                    "double precision" => types.insert(column, Type::FLOAT8),
                    _ => {
                        all_known = false;
                        None
                    }
                };
            }
            self.column_types.insert(shape.table.clone(), all_known.then_some(types));
        }
        let Some(Some(types)) = self.column_types.get(&shape.table) else { return Ok(None) };
        Ok(shape.columns.iter().map(|c| types.get(c).cloned()).collect())
    }

    fn query_rows(&mut self, sql: &str, args: &[Value<'_>]) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        self.query_now(sql, args, &mut |row| {
            rows.push(Row { values: row.values.clone() });
            Ok(())
        })?;
        Ok(rows)
    }

    pub(crate) fn is_unsure(&self) -> bool {
        self.unsure.is_some()
    }

    /// How many of the commits whose answers were lost happened, oldest first
    /// (the later ones did not), or `None` when there were none. Asked on a new
    /// session before anything else is written.
    pub(crate) fn settle_unsure(&mut self) -> Result<Option<usize>> {
        let Some((before, newest)) = self.unsure else { return Ok(None) };
        let (rt, client) = self.client()?;
        let commits = block(rt, async {
            client.query_one("SELECT commits FROM corral_writer WHERE one = 1", &[]).await?.try_get::<_, i64>(0)
        })
        .map_err(|e| sort(&e))? as u64;
        self.unsure = None;
        self.commits = commits;
        self.confirmed = commits;
        Ok(Some(commits.clamp(before, newest).saturating_sub(before) as usize))
    }
}

impl Sql for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: Vec<Value<'_>>) -> Result<()> {
        self.run_now(sql, &args)
    }

    fn query_each(&mut self, sql: &str, args: &[Value<'_>], each: &mut dyn FnMut(&Row) -> Result<()>) -> Result<()> {
        self.query_now(sql, args, each)
    }
}
