//! The seams the rest of the coordinator holds the store by, whichever backend it
//! is (SQLite in the data dir, or PostgreSQL): a [`Backend`] opens the
//! [`Durable`] writer (one transaction per call, with the events its changes make)
//! and the [`History`] reader (what the core does not keep in memory), and loads the
//! whole state for a start or a reload. The writer thread, the event loop, and the
//! gRPC and HTTP edges name only these traits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::postgres::{PgConn, Role, Target};
use super::{AttemptRow, Db, Logs, Reader, Store};
use crate::auth::{NodeCredential, TokenRecord};
use crate::core::{Snapshot, StoreOp};
use crate::error::Result;
use crate::events::{Event, Filter};
use crate::model::*;

/// Everything the core and the gate are rebuilt from.
pub type Loaded = (Snapshot, Vec<TokenRecord>, Vec<NodeCredential>, Vec<crate::auth::SessionRecord>);

/// Where the coordinator's state lives.
pub trait Backend: Send + Sync {
    /// The writer: the one connection that changes the store (brought up to the
    /// current schema first).
    fn open_durable(&self) -> Result<Box<dyn Durable>>;
    /// A reader of history, beside the writer.
    fn open_history(&self) -> Result<Box<dyn History>>;
    /// The whole state, read on a connection of its own (a start, or a reload after
    /// a refused batch while the writer keeps its own).
    fn load(&self) -> Result<Loaded>;
}

/// The durable writer.
pub trait Durable: Send {
    /// Applies a group of changes in one transaction, with the event each makes.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<()>;
    /// Whether [`Durable::send`] returns before the commit is answered, so that
    /// the next group is made while the database commits this one.
    fn pipelines(&self) -> bool {
        false
    }
    /// Sends a group of changes in one transaction, as `apply` does, and may
    /// return before its commit is answered; [`Durable::settle`] reads the
    /// answers, oldest first. A group sent after another commits only if that one
    /// did. A backend that cannot commits at once.
    fn send(&mut self, ops: &[StoreOp]) -> Result<()> {
        self.apply(ops)
    }
    /// Reads the answer of the oldest group sent. On a failure none of the groups
    /// sent is known to be stored, and each is given to `apply` again, in order.
    fn settle(&mut self) -> Result<()> {
        Ok(())
    }
    /// The id of the newest event recorded.
    fn last_event(&self) -> u64;
    /// The events committed since this was last asked, in order.
    fn take_committed(&mut self) -> Vec<Event>;
}

/// The reader of history: what the core does not keep in memory.
pub trait History: Send {
    /// Every attempt of a task, oldest first.
    fn attempts(&mut self, key: TaskKey) -> Result<Vec<AttemptRow>>;
    /// Up to `limit` events after `after` that pass `filter`, oldest first.
    fn events(&mut self, after: u64, filter: &Filter, limit: usize) -> Result<Vec<Event>>;
    /// The oldest event kept (`None` for an empty feed), and the newest ever recorded.
    fn event_bounds(&mut self) -> Result<(Option<u64>, u64)>;
    /// Whether an attempt has ended in the record.
    fn attempt_ended(&mut self, attempt: AttemptRef) -> Result<bool>;
    /// Where and when each ended attempt among `wanted` ran and how it ended, in a
    /// few words (one without a row, or not ended, is left out).
    fn ended_attempts(
        &mut self,
        wanted: &[AttemptRef],
    ) -> Result<std::collections::HashMap<AttemptRef, super::reader::EndedAttempt>>;
    /// Up to `max` bytes of a log from `offset`; empty at the end or if nothing was
    /// written.
    fn read_log(&mut self, attempt: AttemptRef, rank: u32, stderr: bool, offset: u64, max: usize) -> Result<Vec<u8>>;
    /// The order an attempt wrote its stdout and stderr in, if recorded.
    fn output_order(&mut self, attempt: AttemptRef) -> Result<Option<corral_types::order::Runs>>;
    /// The slots of `schedule` in `from..=to` that made a job.
    fn schedule_slots(&mut self, schedule: &ScheduleName, from_ms: u64, to_ms: u64) -> Result<BTreeSet<u64>>;
}

/// SQLite in the data dir (`DATA_DIR/corral.db`, WAL, `synchronous=FULL`), with the
/// logs beside it.
pub struct Sqlite {
    pub data_dir: PathBuf,
}

impl Sqlite {
    pub fn new(data_dir: &Path) -> Sqlite {
        Sqlite { data_dir: data_dir.to_path_buf() }
    }
}

impl Backend for Sqlite {
    fn open_durable(&self) -> Result<Box<dyn Durable>> {
        Ok(Box::new(Store::open(&self.data_dir)?))
    }

    fn open_history(&self) -> Result<Box<dyn History>> {
        Ok(Box::new(Store::open_reader(&self.data_dir)?))
    }

    fn load(&self) -> Result<Loaded> {
        Store::load_again(&self.data_dir)
    }
}

/// PostgreSQL (15 or later), logs included, so that any coordinator started on the
/// database reads everything (`DATA_DIR` keeps only local files: tokens, TLS). The
/// writer commits only while `epoch` is the lease's ([`super::postgres::lease`]).
pub struct Postgres {
    pub target: Arc<Target>,
    pub epoch: u64,
}

impl Backend for Postgres {
    fn open_durable(&self) -> Result<Box<dyn Durable>> {
        let mut conn = PgConn::open(self.target.clone(), Role::Writer { epoch: self.epoch })?;
        conn.migrate()?;
        conn.claim()?;
        Ok(Box::new(Store::with(Db::Postgres(Box::new(conn)), Logs::Table, Default::default())?))
    }

    fn open_history(&self) -> Result<Box<dyn History>> {
        Ok(Box::new(Reader {
            db: Db::Postgres(Box::new(PgConn::open(self.target.clone(), Role::Reader)?)),
            logs: Logs::Table,
        }))
    }

    fn load(&self) -> Result<Loaded> {
        super::load::everything(&mut Db::Postgres(Box::new(PgConn::open(self.target.clone(), Role::Reader)?)))
    }
}

impl Durable for Store {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        Store::apply(self, ops)
    }

    fn pipelines(&self) -> bool {
        self.db.pipelines()
    }

    fn send(&mut self, ops: &[StoreOp]) -> Result<()> {
        Store::send(self, ops)
    }

    fn settle(&mut self) -> Result<()> {
        Store::settle(self)
    }

    fn last_event(&self) -> u64 {
        Store::last_event(self)
    }

    fn take_committed(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.committed_events)
    }
}

impl History for Reader {
    fn attempts(&mut self, key: TaskKey) -> Result<Vec<AttemptRow>> {
        Reader::attempts(self, key)
    }

    fn events(&mut self, after: u64, filter: &Filter, limit: usize) -> Result<Vec<Event>> {
        Reader::events(self, after, filter, limit)
    }

    fn event_bounds(&mut self) -> Result<(Option<u64>, u64)> {
        Reader::event_bounds(self)
    }

    fn attempt_ended(&mut self, attempt: AttemptRef) -> Result<bool> {
        Reader::attempt_ended(self, attempt)
    }

    fn ended_attempts(
        &mut self,
        wanted: &[AttemptRef],
    ) -> Result<std::collections::HashMap<AttemptRef, super::reader::EndedAttempt>> {
        Reader::ended_attempts(self, wanted)
    }

    fn read_log(&mut self, attempt: AttemptRef, rank: u32, stderr: bool, offset: u64, max: usize) -> Result<Vec<u8>> {
        Reader::read_log(self, attempt, rank, stderr, offset, max)
    }

    fn output_order(&mut self, attempt: AttemptRef) -> Result<Option<corral_types::order::Runs>> {
        Reader::output_order(self, attempt)
    }

    fn schedule_slots(&mut self, schedule: &ScheduleName, from_ms: u64, to_ms: u64) -> Result<BTreeSet<u64>> {
        Reader::schedule_slots(self, schedule, from_ms, to_ms)
    }
}
