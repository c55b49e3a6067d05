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

use rusqlite::{params, Connection, Transaction};

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
    pub fn chunk_lost(&mut self, tx: &Transaction, chunk: &LogChunk) -> rusqlite::Result<()> {
        let (job, idx, attempt) = key(chunk.attempt);
        let end = chunk.offset + chunk.data.len() as u64;
        tx.prepare_cached(
            "INSERT INTO lost_output (job_id, idx, attempt, stderr, bytes, end_offset, noted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
             ON CONFLICT (job_id, idx, attempt, stderr) DO UPDATE SET bytes = bytes + excluded.bytes, end_offset = max(end_offset, excluded.end_offset), noted = 0",
        )?
        .execute(params![job, idx, attempt, chunk.stderr, chunk.data.len() as u64, end])?;
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
        .map(|(name, bytes)| format!("{} of {name}", corral_proto::size::show(bytes)))
        .collect();
    format!(
        "{} not stored: the coordinator could not write its logs (is its disk full?); see its log",
        streams.join(" and ")
    )
}

impl Lost {
    /// The markers an earlier run noted and did not write.
    pub fn open(conn: &Connection) -> rusqlite::Result<Lost> {
        let mut stmt = conn.prepare(&format!(
            "SELECT job_id, idx, attempt, stderr, bytes, end_offset FROM lost_output WHERE noted = 1 LIMIT {MAX_PENDING}"
        ))?;
        let pending = stmt
            .query_map([], |r| {
                Ok(Marker {
                    attempt: AttemptRef {
                        task: TaskKey { job: JobId(r.get(0)?), index: r.get(1)? },
                        attempt: r.get(2)?,
                    },
                    stderr: r.get(3)?,
                    bytes: r.get(4)?,
                    at: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare("SELECT DISTINCT job_id, idx, attempt FROM lost_output WHERE noted = 0")?;
        let unnoted =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?;
        Ok(Lost { pending, written: Vec::new(), unnoted })
    }

    /// At the start of a transaction: the rows of markers written since go.
    pub fn forget_written(&self, tx: &Transaction) -> rusqlite::Result<()> {
        for m in &self.written {
            let (job, idx, attempt) = key(m.attempt);
            tx.prepare_cached(
                "DELETE FROM lost_output WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3 AND stderr = ?4 AND noted = 1",
            )?
            .execute(params![job, idx, attempt, m.stderr])?;
        }
        Ok(())
    }

    /// At the end of a transaction: the message of every ended attempt with output
    /// not yet said missing says so now.
    pub fn amend(&self, tx: &Transaction, found: &mut Found) -> rusqlite::Result<()> {
        let mut touched = found.lost.clone();
        touched.extend(found.ended.iter().filter(|k| self.unnoted.contains(k)));
        for (job, idx, attempt) in touched {
            let mut rows = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT stderr, bytes, end_offset FROM lost_output WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3 AND noted = 0",
                )?;
                let found = stmt.query_map(params![job, idx, attempt], |r| {
                    Ok((r.get::<_, bool>(0)?, r.get::<_, u64>(1)?, r.get::<_, u64>(2)?))
                })?;
                for row in found {
                    rows.push(row?);
                }
            }
            if rows.is_empty() {
                continue;
            }
            let mut bytes = [0; 2];
            for (stderr, n, _) in &rows {
                bytes[usize::from(*stderr)] += n;
            }
            let amended = tx
                .prepare_cached(
                    "UPDATE attempts SET message = CASE WHEN message IS NULL OR message = '' THEN ?4 ELSE message || '; ' || ?4 END WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3 AND ended_at_ms IS NOT NULL",
                )?
                .execute(params![job, idx, attempt, note(bytes)])?;
            if amended == 0 {
                continue;
            }
            tx.prepare_cached("UPDATE lost_output SET noted = 1 WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3")?
                .execute(params![job, idx, attempt])?;
            found.settled.push((job, idx, attempt));
            let attempt = AttemptRef { task: TaskKey { job: JobId(job), index: idx }, attempt };
            found.due.extend(rows.into_iter().map(|(stderr, bytes, at)| Marker { attempt, stderr, at, bytes }));
        }
        for job in &found.deleted {
            tx.prepare_cached("DELETE FROM lost_output WHERE job_id = ?1")?.execute([job.0])?;
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
        corral_proto::size::show(marker.bytes)
    );
    let path = log_path(logs, marker.attempt, marker.stderr);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
    let at = file.metadata()?.len().max(marker.at);
    file.write_all_at(text.as_bytes(), at)
}
