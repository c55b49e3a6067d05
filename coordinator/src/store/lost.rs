//! Task output the store could not write (a full disk, a permission): it is not
//! allowed to hold up the state, so it is skipped, but never silently. Each chunk
//! that could not be written is counted in the `lost_output` table in the
//! transaction that skipped it (the database often has room when a log does not),
//! so a restart forgets nothing; the attempt's message says how much of which
//! stream is missing in the transaction that ends it (or the next one, for a chunk
//! lost after); and its log gets a marker where the output stops once a marker can
//! be written, after which the row goes. A short log is never read as complete.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use super::sql::{args, Sql, SqlExt};
use crate::error::Result;

use super::log_path;
use crate::model::{AttemptRef, JobId, LogChunk, TaskKey};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lost_output (
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    stderr INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    -- 1 once the attempt's message says so: its log's marker is still to be written.
    noted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx, attempt, stderr)
) WITHOUT ROWID;
";

/// The most markers waiting for room that are kept in memory (the rest are in the
/// table, and read again at the next start).
const MAX_PENDING: usize = 100_000;

/// A marker still to be written at the end of one stream's log.
#[derive(Debug, Clone, PartialEq)]
struct Marker {
    attempt: AttemptRef,
    stderr: bool,
    at: u64,
    bytes: u64,
}

/// The markers the store has still to write, and those written whose rows go with
/// the next transaction; which attempts have missing output not yet said (an index
/// of the table, so that ending an attempt costs no query when nothing is missing,
/// which is always but on a full disk).
#[derive(Default)]
pub struct Lost {
    pending: Vec<Marker>,
    written: Vec<Marker>,
    unnoted: HashSet<(u64, u32, u32)>,
}

/// What one transaction found: attempts with chunks that could not be written,
/// attempts that ended, jobs deleted, and what it said and must mark.
#[derive(Default)]
pub struct Found {
    lost: BTreeSet<(u64, u32, u32)>,
    ended: Vec<(u64, u32, u32)>,
    deleted: HashSet<JobId>,
    settled: Vec<(u64, u32, u32)>,
    due: Vec<Marker>,
}

fn key(a: AttemptRef) -> (u64, u32, u32) {
    (a.task.job.0, a.task.index, a.attempt)
}

impl Found {
    /// A chunk was skipped: counted now, in the transaction.
    pub fn chunk_lost(&mut self, tx: &mut dyn Sql, chunk: &LogChunk) -> Result<()> {
        let (job, idx, attempt) = key(chunk.attempt);
        let end = chunk.offset + chunk.data.len() as u64;
        tx.execute(
            "INSERT INTO lost_output (job_id, idx, attempt, stderr, bytes, end_offset, noted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
             ON CONFLICT (job_id, idx, attempt, stderr) DO UPDATE SET bytes = lost_output.bytes + excluded.bytes,
             end_offset = CASE WHEN lost_output.end_offset > excluded.end_offset THEN lost_output.end_offset ELSE excluded.end_offset END, noted = 0",
            args![job, idx, attempt, chunk.stderr, chunk.data.len() as u64, end],
        )?;
        self.lost.insert(key(chunk.attempt));
        Ok(())
    }

    pub fn ended(&mut self, attempt: AttemptRef) {
        self.ended.push(key(attempt));
    }

    pub fn job_deleted(&mut self, job: JobId) {
        self.deleted.insert(job);
    }
}

/// What the attempt's message says of what is missing (`bytes` per stream).
pub fn note(bytes: [u64; 2]) -> String {
    let streams: Vec<String> = ["stdout", "stderr"]
        .iter()
        .zip(bytes)
        .filter(|(_, bytes)| *bytes > 0)
        .map(|(name, bytes)| format!("{} of {name}", corral_types::size::show(bytes)))
        .collect();
    format!(
        "{} not stored: the coordinator could not write its logs (is its disk full?); see its log",
        streams.join(" and ")
    )
}

impl Lost {
    /// The markers an earlier run noted and did not write.
    pub fn open(sql: &mut dyn Sql) -> Result<Lost> {
        let pending = sql.rows(
            "SELECT job_id, idx, attempt, stderr, bytes, end_offset FROM lost_output WHERE noted = 1 LIMIT ?1",
            args![MAX_PENDING],
            |r| {
                Ok(Marker {
                    attempt: AttemptRef {
                        task: TaskKey { job: JobId(r.get(0)?), index: r.get(1)? },
                        attempt: r.get(2)?,
                    },
                    stderr: r.get(3)?,
                    bytes: r.get(4)?,
                    at: r.get(5)?,
                })
            },
        )?;
        let unnoted =
            sql.rows("SELECT DISTINCT job_id, idx, attempt FROM lost_output WHERE noted = 0", args![], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        Ok(Lost { pending, written: Vec::new(), unnoted: unnoted.into_iter().collect() })
    }

    /// At the start of a transaction: the rows of markers written since go.
    pub fn forget_written(&self, tx: &mut dyn Sql) -> Result<()> {
        for m in &self.written {
            let (job, idx, attempt) = key(m.attempt);
            tx.execute(
                "DELETE FROM lost_output WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3 AND stderr = ?4 AND noted = 1",
                args![job, idx, attempt, m.stderr],
            )?;
        }
        Ok(())
    }

    /// At the end of a transaction: the message of every ended attempt with output
    /// not yet said missing says so now.
    pub fn amend(&self, tx: &mut dyn Sql, found: &mut Found) -> Result<()> {
        let mut touched = found.lost.clone();
        touched.extend(found.ended.iter().filter(|k| self.unnoted.contains(k)));
        for (job, idx, attempt) in touched {
            let rows = tx.rows(
                "SELECT stderr, bytes, end_offset FROM lost_output WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3 AND noted = 0",
                args![job, idx, attempt],
                |r| Ok((r.get::<bool>(0)?, r.get::<u64>(1)?, r.get::<u64>(2)?)),
            )?;
            if rows.is_empty() {
                continue;
            }
            // Said only once the attempt has ended (its end writes its message).
            let ended = tx.first(
                "SELECT 1 FROM attempts WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3 AND ended_at_ms IS NOT NULL",
                args![job, idx, attempt],
                |_| Ok(()),
            )?;
            if ended.is_none() {
                continue;
            }
            let mut bytes = [0; 2];
            for (stderr, n, _) in &rows {
                bytes[usize::from(*stderr)] += n;
            }
            tx.execute("UPDATE attempts SET message = CASE WHEN message IS NULL OR message = '' THEN ?4 ELSE message || '; ' || ?4 END WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3 AND ended_at_ms IS NOT NULL", args![job, idx, attempt, note(bytes)])?;
            tx.execute(
                "UPDATE lost_output SET noted = 1 WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3",
                args![job, idx, attempt],
            )?;
            found.settled.push((job, idx, attempt));
            let attempt = AttemptRef { task: TaskKey { job: JobId(job), index: idx }, attempt };
            found.due.extend(rows.into_iter().map(|(stderr, bytes, at)| Marker { attempt, stderr, at, bytes }));
        }
        for job in &found.deleted {
            tx.execute("DELETE FROM lost_output WHERE job_id = ?1", args![job.0])?;
        }
        Ok(())
    }

    /// After the commit: the markers due are written, now or when there is room.
    pub fn committed(&mut self, logs: &Path, found: Found) {
        self.written.clear();
        self.unnoted.extend(found.lost);
        for settled in &found.settled {
            self.unnoted.remove(settled);
        }
        self.unnoted.retain(|(job, _, _)| !found.deleted.contains(&JobId(*job)));
        self.pending.retain(|m| !found.deleted.contains(&m.attempt.task.job));
        for marker in found.due {
            if self.pending.len() < MAX_PENDING && !self.pending.contains(&marker) {
                self.pending.push(marker);
            }
        }
        let mut waiting = Vec::new();
        for marker in std::mem::take(&mut self.pending) {
            match write_marker(logs, &marker) {
                Ok(()) => self.written.push(marker),
                Err(_) => waiting.push(marker),
            }
        }
        self.pending = waiting;
    }
}

/// Writes `marker` at the end of its log (after whatever was written, or where the
/// missing output ended if that is further).
fn write_marker(logs: &Path, marker: &Marker) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let stream = if marker.stderr { "stderr" } else { "stdout" };
    let text = format!(
        "\n[corral: {} of {stream} is missing from this log: the coordinator could not write it]\n",
        corral_types::size::show(marker.bytes)
    );
    let path = log_path(logs, marker.attempt, 0, marker.stderr);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
    let at = file.metadata()?.len().max(marker.at);
    file.write_all_at(text.as_bytes(), at)
}
