//! The second connection, for what the core does not keep in memory: attempt
//! history, the event feed, and the logs. It reads while the writer writes (WAL on
//! SQLite; PostgreSQL's MVCC).

use super::corrupt;
use super::sql::{args, SqlExt};
use crate::error::Result;
use crate::model::*;

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

/// Where and when an attempt that has ended ran, and how it ended in a few words.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedAttempt {
    pub node_id: String,
    pub started_at_ms: u64,
    pub said: String,
}

/// Read-only access for the service: attempt history and logs.
pub struct Reader {
    pub(super) db: super::Db,
    pub(super) logs: super::Logs,
}

impl Reader {
    pub fn attempts(&mut self, key: TaskKey) -> Result<Vec<AttemptRow>> {
        self.db.sql().rows(
            "SELECT attempt, node_id, started_at_ms, ended_at_ms, outcome, exit_code, signal, message FROM attempts WHERE job_id = ?1 AND idx = ?2 ORDER BY attempt",
            args![key.job.0, key.index],
            |r| {
                Ok(AttemptRow {
                    attempt: r.get(0)?,
                    node_id: r.get(1)?,
                    started_at_ms: r.get(2)?,
                    ended_at_ms: r.get(3)?,
                    outcome: r.get::<Option<String>>(4)?.map(|o| o.parse()).transpose().map_err(corrupt)?,
                    exit_code: r.get(5)?,
                    signal: r.get(6)?,
                    message: r.get::<Option<String>>(7)?.unwrap_or_default(),
                })
            },
        )
    }

    /// Up to `limit` events after `after` that pass `filter`, oldest first.
    pub fn events(
        &mut self,
        after: u64,
        filter: &crate::events::Filter,
        limit: usize,
    ) -> Result<Vec<crate::events::Event>> {
        super::events::read(self.db.sql(), after, filter, limit)
    }

    /// The oldest event kept (`None` for an empty feed), and the newest ever
    /// recorded.
    pub fn event_bounds(&mut self) -> Result<(Option<u64>, u64)> {
        Ok((super::events::first_id(self.db.sql())?, super::events::last_id(self.db.sql())?))
    }

    /// Whether an attempt has ended in the record.
    pub fn attempt_ended(&mut self, attempt: AttemptRef) -> Result<bool> {
        let ended: Option<Option<u64>> = self.db.sql().first(
            "SELECT ended_at_ms FROM attempts WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3",
            args![attempt.task.job.0, attempt.task.index, attempt.attempt],
            |r| r.get(0),
        )?;
        Ok(matches!(ended, Some(Some(_))))
    }

    /// How an ended attempt ended, in a few words (`exited with code 2`); `None` for
    /// one that has no row or has not ended.
    pub fn ended_attempt(&mut self, attempt: AttemptRef) -> Result<Option<EndedAttempt>> {
        type Row = (String, u64, Option<String>, Option<i32>, Option<i32>, Option<String>);
        let row: Option<Row> = self.db.sql().first(
            "SELECT node_id, started_at_ms, outcome, exit_code, signal, message FROM attempts WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3",
            args![attempt.task.job.0, attempt.task.index, attempt.attempt],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )?;
        let Some((node_id, started_at_ms, Some(outcome), exit_code, signal, message)) = row else { return Ok(None) };
        let said = match (message.filter(|m| !m.is_empty()), exit_code, signal) {
            (Some(message), _, _) => message,
            (None, Some(code), _) => format!("exit code {code}"),
            (None, None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None, None) => outcome,
        };
        Ok(Some(EndedAttempt { node_id, started_at_ms, said }))
    }

    /// Up to `max` bytes of a log from `offset`; empty at the end or if nothing was written.
    pub fn read_log(&mut self, attempt: AttemptRef, stderr: bool, offset: u64, max: usize) -> Result<Vec<u8>> {
        self.logs.read(self.db.sql(), attempt, stderr, offset, max)
    }
}
