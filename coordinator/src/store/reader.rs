//! The second connection, for what the core does not keep in memory: attempt
//! history, the event feed, and the logs. It reads while the writer writes (WAL on
//! SQLite; PostgreSQL's MVCC).

use std::collections::{BTreeMap, HashMap, HashSet};

use corral_types::order::Runs;

use super::corrupt;
use super::sql::{args, SqlExt, ToValue};
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
    /// A multi-node attempt's other ranks' nodes, rank 1 first.
    pub members: Vec<String>,
}

/// Where and when an attempt that has ended ran, and how it ended in a few words.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedAttempt {
    pub node_id: String,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
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
            "SELECT attempt, node_id, started_at_ms, ended_at_ms, outcome, exit_code, signal, message, members FROM attempts WHERE job_id = ?1 AND idx = ?2 ORDER BY attempt",
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
                    members: match r.get::<Option<String>>(8)? {
                        Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?,
                        None => Vec::new(),
                    },
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

    /// The ended attempts among `wanted`: where and when each ran, and how it ended
    /// in a few words. One query per job (and per 500 tasks), however many.
    pub fn ended_attempts(&mut self, wanted: &[AttemptRef]) -> Result<HashMap<AttemptRef, EndedAttempt>> {
        let mut by_job: BTreeMap<JobId, Vec<u32>> = BTreeMap::new();
        for a in wanted {
            by_job.entry(a.task.job).or_default().push(a.task.index);
        }
        let wanted: HashSet<&AttemptRef> = wanted.iter().collect();
        let mut found = HashMap::new();
        for (job, indices) in by_job {
            for chunk in indices.chunks(500) {
                let holes: Vec<String> = (0..chunk.len()).map(|i| format!("?{}", i + 2)).collect();
                let query = format!(
                    "SELECT idx, attempt, node_id, started_at_ms, outcome, exit_code, signal, message, ended_at_ms FROM attempts WHERE job_id = ?1 AND idx IN ({}) AND outcome IS NOT NULL",
                    holes.join(", ")
                );
                let mut values = vec![job.0.to_value()];
                values.extend(chunk.iter().map(|i| i.to_value()));
                let rows = self.db.sql().rows(&query, values, |r| {
                    let attempt = AttemptRef { task: TaskKey { job, index: r.get(0)? }, attempt: r.get(1)? };
                    let (outcome, exit_code, signal) =
                        (r.get::<String>(4)?, r.get::<Option<i32>>(5)?, r.get::<Option<i32>>(6)?);
                    let said = match (r.get::<Option<String>>(7)?.filter(|m| !m.is_empty()), exit_code, signal) {
                        (Some(message), _, _) => message,
                        (None, Some(code), _) => format!("exit code {code}"),
                        (None, None, Some(signal)) => format!("killed by signal {signal}"),
                        (None, None, None) => outcome,
                    };
                    let ended_at_ms = r.get::<Option<u64>>(8)?.unwrap_or(0);
                    Ok((attempt, EndedAttempt { node_id: r.get(2)?, started_at_ms: r.get(3)?, ended_at_ms, said }))
                })?;
                found.extend(rows.into_iter().filter(|(a, _)| wanted.contains(a)));
            }
        }
        Ok(found)
    }

    /// The order an attempt wrote its stdout and stderr in, if it was recorded
    /// (it is only for an ended attempt that wrote to both).
    pub fn output_order(&mut self, attempt: AttemptRef) -> Result<Option<Runs>> {
        let text: Option<Option<String>> = self.db.sql().first(
            "SELECT output_order FROM attempts WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3",
            args![attempt.task.job.0, attempt.task.index, attempt.attempt],
            |r| r.get(0),
        )?;
        Ok(text.flatten().and_then(|t| Runs::from_text(&t)))
    }

    /// Up to `max` bytes of a log (of the attempt's rank `rank`) from `offset`;
    /// empty at the end or if nothing was written.
    pub fn read_log(
        &mut self,
        attempt: AttemptRef,
        rank: u32,
        stderr: bool,
        offset: u64,
        max: usize,
    ) -> Result<Vec<u8>> {
        self.logs.read(self.db.sql(), attempt, rank, stderr, offset, max)
    }
}
