//! The second connection, for what the core does not keep in memory: attempt
//! history, the event feed, and the logs. WAL lets it read while the writer writes.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension};

use super::{corrupt, log_path};
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

/// Read-only access for the service: attempt history and logs.
pub struct Reader {
    pub(super) conn: Connection,
    pub(super) logs: PathBuf,
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
        Ok(super::events::read(&self.conn, after, filter, limit)?)
    }

    /// The oldest and the newest event kept (`None` for an empty feed), and the
    /// newest ever recorded.
    pub fn event_bounds(&self) -> Result<(Option<u64>, u64)> {
        Ok((super::events::first_id(&self.conn)?, super::events::last_id(&self.conn)?))
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

    /// How an ended attempt ended, in a few words (`exited with code 2`); `None` for
    /// one that has no row or has not ended.
    pub fn attempt_error(&self, attempt: AttemptRef) -> Result<Option<String>> {
        type Row = (Option<String>, Option<i32>, Option<i32>, Option<String>);
        let row: Option<Row> = self
            .conn
            .prepare_cached(
                "SELECT outcome, exit_code, signal, message FROM attempts WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3",
            )?
            .query_row(params![attempt.task.job.0, attempt.task.index, attempt.attempt], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((Some(outcome), exit_code, signal, message)) = row else { return Ok(None) };
        let said = match (message.filter(|m| !m.is_empty()), exit_code, signal) {
            (Some(message), _, _) => message,
            (None, Some(code), _) => format!("exit code {code}"),
            (None, None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None, None) => outcome,
        };
        Ok(Some(said))
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
