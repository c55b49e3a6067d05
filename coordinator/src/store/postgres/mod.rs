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
pub mod lease;
pub mod schema;
pub mod target;

pub use target::Target;

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

/// A transaction on a [`PgConn`]: its writes wait in `pending` and go in one
/// pipeline before the next query or the commit; dropped uncommitted, it is rolled
/// back.
pub struct PgTx<'a> {
    conn: &'a mut PgConn,
    gathered: batch::Gathered,
    /// Writes queued whose answers are not read yet, in order.
    in_flight: Vec<InFlight>,
    open: bool,
    read_only: bool,
}

/// A write sent: its answer, read in order at the next query or the commit.
type InFlight = Pin<Box<MaybeDone<Pin<Box<dyn Future<Output = PgResult<()>> + Send>>>>>;
type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;

impl PgTx<'_> {
    /// Queues what was gathered, encoded, in order, for the session's worker to
    /// send; the answers are read at [`PgTx::flush`].
    /// (Sending parts while the transaction is still being made was measured: the
    /// extra statements cost the server more than the overlap saved.)
    fn send(&mut self) -> std::result::Result<(), StoreError> {
        let sending = self.resolve()?;
        for (statement, params) in sending {
            // A write that cannot be encoded is not sent, nor anything after it
            // (the COMMIT least of all): the transaction is rolled back.
            let write = self.conn.queue(|client| async move {
                let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                client.execute(&statement, &params).await.map(drop)
            })?;
            self.in_flight.push(write);
        }
        Ok(())
    }

    /// Sends what is left, then reads every answer in order; the first failure
    /// is the transaction's.
    fn flush(&mut self) -> std::result::Result<(), StoreError> {
        self.send()?;
        let in_flight = std::mem::take(&mut self.in_flight);
        read_answers(&self.conn.rt, in_flight).map_err(|e| {
            self.conn.forget_if_lost(&e);
            sort(&e)
        })
    }

    /// Sends the transaction whole, its count in `corral_writer` and its `COMMIT`
    /// included, and returns before the answer: [`PgConn::settle`] reads it. The
    /// writer makes its next transaction meanwhile, which commits only if this
    /// one did.
    fn send_commit(&mut self) -> Result<()> {
        let next = self.conn.commits + 1;
        let Role::Writer { epoch } = self.conn.role else {
            return Err(StoreError::Unavailable("PostgreSQL: only the leader's writer commits changes".into()).into());
        };
        Sql::execute(
            self,
            "SELECT corral_count_commit(?1, ?2)",
            vec![Value::Int(next as i64), Value::Int(epoch as i64)],
        )?;
        self.send()?;
        let commit = self.conn.queue(|client| async move { client.batch_execute("COMMIT").await })?;
        let mut answers = std::mem::take(&mut self.in_flight);
        answers.push(commit);
        self.open = false;
        self.conn.pending.push_back(Pending { answers, count: next });
        self.conn.commits = next;
        Ok(())
    }
}

/// Reads answers in order (each was queued when it was made); the first failure
/// is returned, after every answer was read.
fn read_answers(rt: &tokio::runtime::Runtime, answers: Vec<InFlight>) -> PgResult<()> {
    block(rt, async move {
        let mut first_error = None;
        for mut answer in answers {
            answer.as_mut().await;
            if let Some(Err(e)) = answer.as_mut().take_output() {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}

impl PgTx<'_> {
    /// The statements (prepared) and parameters of what was gathered.
    fn resolve(&mut self) -> std::result::Result<Vec<(Statement, Vec<Param>)>, StoreError> {
        let unwrap = |e: crate::error::Error| match e {
            crate::error::Error::Store(e) => e,
            other => StoreError::Unavailable(other.to_string()),
        };
        let items = self.gathered.take();
        let mut sending = Vec::with_capacity(items.len());
        for item in items {
            match item {
                batch::Item::One { sql, args } => {
                    sending
                        .push((self.conn.statement(&sql).map_err(unwrap)?, args.into_iter().map(Param::One).collect()));
                }
                batch::Item::Rows { sql, shape, rows, .. } => {
                    let types = match rows.len() {
                        1 => None,
                        _ => self.conn.types_of(&shape).map_err(unwrap)?,
                    };
                    let Some(types) = types else {
                        let statement = self.conn.statement(&sql).map_err(unwrap)?;
                        for row in rows {
                            sending.push((statement.clone(), row.into_iter().map(Param::One).collect()));
                        }
                        continue;
                    };
                    let statement = self.conn.statement(&batch::gathered_sql(&shape, &types)).map_err(unwrap)?;
                    let mut columns: Vec<Vec<Value<'static>>> =
                        vec![Vec::with_capacity(rows.len()); shape.columns.len()];
                    for row in rows {
                        for (column, value) in columns.iter_mut().zip(row) {
                            column.push(value);
                        }
                    }
                    sending.push((statement, columns.into_iter().map(Param::Column).collect()));
                }
            }
        }
        Ok(sending)
    }
}

/// A parameter: one value, or a column of gathered rows (an array).
#[derive(Debug)]
enum Param {
    One(Value<'static>),
    Column(Vec<Value<'static>>),
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let values = match self {
            Param::One(v) => return v.to_sql(ty, out),
            Param::Column(values) => values,
        };
        let wrong = |v: &Value| format!("cannot put {v:?} in a column of {ty}");
        match *ty {
            Type::INT8_ARRAY => values
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Int(i) => Ok(Some(*i)),
                    other => Err(wrong(other)),
                })
                .collect::<std::result::Result<Vec<Option<i64>>, String>>()?
                .to_sql(ty, out),
            Type::TEXT_ARRAY => values
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Text(s) => Ok(Some(s.as_ref())),
                    other => Err(wrong(other)),
                })
                .collect::<std::result::Result<Vec<Option<&str>>, String>>()?
                .to_sql(ty, out),
            Type::BYTEA_ARRAY => values
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Blob(b) => Ok(Some(b.as_ref())),
                    Value::Text(s) => Ok(Some(s.as_bytes())),
                    other => Err(wrong(other)),
                })
                .collect::<std::result::Result<Vec<Option<&[u8]>>, String>>()?
                .to_sql(ty, out),
            Type::FLOAT8_ARRAY => values
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Real(f) => Ok(Some(*f)),
                    Value::Int(i) => Ok(Some(*i as f64)),
                    other => Err(wrong(other)),
                })
                .collect::<std::result::Result<Vec<Option<f64>>, String>>()?
                .to_sql(ty, out),
            _ => Err(format!("no gathered column of type {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

impl Sql for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: Vec<Value<'_>>) -> Result<()> {
        refuse_unstorable(&args)?;
        let shape = self.conn.shape(sql);
        self.gathered.push(sql, &shape, args.into_iter().map(Value::into_owned).collect());
        Ok(())
    }

    fn query_each(&mut self, sql: &str, args: &[Value<'_>], each: &mut dyn FnMut(&Row) -> Result<()>) -> Result<()> {
        self.flush()?;
        self.conn.query_now(sql, args, each)
    }
}

impl Tx for PgTx<'_> {
    fn commit(mut self: Box<Self>) -> Result<()> {
        if self.read_only {
            let commit = self.conn.queue(|client| async move { client.batch_execute("COMMIT").await })?;
            self.in_flight.push(commit);
            self.flush()?;
            self.open = false;
            return Ok(());
        }
        self.send_commit()?;
        while !self.conn.pending.is_empty() {
            self.conn.settle()?;
        }
        Ok(())
    }

    fn commit_later(mut self: Box<Self>) -> Result<()> {
        match self.read_only {
            true => self.commit(),
            false => self.send_commit(),
        }
    }

    fn sql(&mut self) -> &mut dyn Sql {
        self
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        self.gathered.take();
        self.in_flight.clear();
        if let Some(client) = self.conn.client.as_ref() {
            if block(&self.conn.rt, client.batch_execute("ROLLBACK")).is_err() {
                self.conn.client = None;
            }
        }
    }
}

/// `?N` placeholders (the store's, which SQLite reads) as PostgreSQL's `$N`.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                _ => v.to_string().to_sql(ty, out),
            },
            Value::Real(v) => v.to_sql(ty, out),
            Value::Text(s) => s.as_ref().to_sql(ty, out),
            Value::Blob(b) => b.as_ref().to_sql(ty, out),
            Value::Unstorable(why) => Err(why.clone().into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A row of PostgreSQL's as the store's [`Row`].
fn row_of(row: &tokio_postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let bad = |e: tokio_postgres::Error| super::corrupt(format!("column {}: {e}", column.name()));
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Value::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(i).map_err(bad)?.map(|v| Value::Int(v.into())),
            Type::INT2 => row.try_get::<_, Option<i16>>(i).map_err(bad)?.map(|v| Value::Int(v.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(i).map_err(bad)?.map(|v| Value::Int(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map_err(bad)?.map(Value::Real),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i).map_err(bad)?.map(|b| Value::Blob(b.into())),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(i).map_err(bad)?.map(|s| Value::Text(s.into()))
            }
            ref other => return Err(super::corrupt(format!("column {} has type {other}", column.name()))),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row { values })
}

/// What the writer does with a failure: a value the database will not take
/// (integrity or data errors) is refused; the rest may pass (the server is down,
/// restarting, full, or the session was lost) and is waited out.
fn sort(e: &tokio_postgres::Error) -> StoreError {
    let said = describe(e);
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        if code == "CR002" {
            return StoreError::Fenced(said);
        }
        return match &code[..2] {
            "22" | "23" => StoreError::Refused(said),
            "XX" => StoreError::Corrupt(said),
            _ => StoreError::Unavailable(said),
        };
    }
    if said.starts_with("error serializing parameter") {
        return StoreError::Refused(said);
    }
    StoreError::Unavailable(said)
}

/// A failure in a few words: the server's message, or the client's with its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut said = format!("PostgreSQL: {}", db.message());
        if let Some(detail) = db.detail() {
            said.push_str(&format!(" ({detail})"));
        }
        return said;
    }
    let cause = corral_proto::tls::root_cause(e);
    let top = e.to_string();
    match cause == top || cause.is_empty() {
        true => format!("PostgreSQL: {top}"),
        false => format!("PostgreSQL: {top}: {cause}"),
    }
}

/// Why a connection could not be made, in one line that says what to do.
fn connect_error(target: &Target, e: &tokio_postgres::Error) -> crate::error::Error {
    let server = target.server();
    let user = target.user();
    if let Some(db) = e.as_db_error() {
        let why = match db.code().code() {
            "28P01" => format!(
                "PostgreSQL at {server} refused the password of user {user:?} (it comes from --store-password-file, PGPASSWORD or ~/.pgpass)"
            ),
            "28000" => format!("PostgreSQL at {server} refused user {user:?}: {}", db.message()),
            "3D000" => format!(
                "database {:?} does not exist on {server}: create it (createdb -O {user} {}) or name another",
                target.database(),
                target.database()
            ),
            "57P03" => format!("PostgreSQL at {server} is starting or shutting down: {}", db.message()),
            _ => format!("PostgreSQL at {server}: {}", db.message()),
        };
        return StoreError::Unavailable(why).into();
    }
    let cause = corral_proto::tls::root_cause(e);
    let why = if cause.contains("password missing") {
        format!(
            "PostgreSQL at {server} asks for a password for user {user:?}: give it in --store-password-file, PGPASSWORD or ~/.pgpass"
        )
    } else if cause.to_lowercase().contains("refused") {
        format!("cannot reach PostgreSQL at {server}: connection refused (is it running, and is the address right?)")
    } else if cause.contains("No such file") {
        format!(
            "cannot reach PostgreSQL at {server}: no server listens there (is it running, and is the address right?)"
        )
    } else {
        format!("cannot reach PostgreSQL at {server}: {cause}")
    };
    StoreError::Unavailable(why).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
    }
}
