//! Where task output (stdout and stderr, per attempt) is kept: files beside a
//! SQLite store, or rows of the database on PostgreSQL, so that every coordinator
//! started on that database reads the same logs (a standby that takes over
//! included) and one backup holds them with the state. Chunks are written at their
//! offsets either way, so a chunk sent twice lands once.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::log_path;
use super::sql::{args, Sql, SqlExt};
use crate::error::Result;
use crate::model::*;

/// The most chunks one read of a log in the database puts together.
const CHUNKS_PER_READ: u32 = 1024;

pub(crate) enum Logs {
    /// `DATA_DIR/logs/JOB/INDEX.ATTEMPT.stdout`.
    Files(PathBuf),
    /// The `task_logs` table, one row per chunk.
    Table,
}

impl Logs {
    /// Writes a chunk: to its file (an error here is the caller's to note, the
    /// transaction goes on), or as a row of the transaction.
    pub fn write(&self, tx: &mut dyn Sql, chunk: &LogChunk) -> Result<()> {
        match self {
            Logs::Files(dir) => write_file(dir, chunk),
            Logs::Table => {
                let a = chunk.attempt;
                tx.execute(
                    "INSERT INTO task_logs (job_id, idx, attempt, rank, stderr, off, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                    args![a.task.job.0, a.task.index, a.attempt, chunk.rank, chunk.stderr, chunk.offset, chunk.data],
                )
            }
        }
    }

    /// Forgets every log of a job, with it.
    pub fn delete_job(&self, tx: &mut dyn Sql, job: JobId) -> Result<()> {
        match self {
            Logs::Files(dir) => {
                match fs::remove_dir_all(dir.join(job.0.to_string())) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(job_id = %job, error = %e, "could not delete the job's logs"),
                }
                Ok(())
            }
            Logs::Table => tx.execute("DELETE FROM task_logs WHERE job_id = ?1", args![job.0]),
        }
    }

    /// Forgets an attempt's output, of each of its `ranks`.
    pub fn forget_attempt(&self, tx: &mut dyn Sql, attempt: AttemptRef, ranks: u32) -> Result<()> {
        match self {
            Logs::Files(dir) => {
                for rank in 0..ranks {
                    for stderr in [false, true] {
                        match fs::remove_file(log_path(dir, attempt, rank, stderr)) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => {
                                tracing::warn!(task = %attempt.task, attempt = attempt.attempt, error = %e, "could not delete an old attempt's log")
                            }
                        }
                    }
                }
                Ok(())
            }
            Logs::Table => tx.execute(
                "DELETE FROM task_logs WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3",
                args![attempt.task.job.0, attempt.task.index, attempt.attempt],
            ),
        }
    }

    /// Up to `max` bytes of a log (of the attempt's rank `rank`) from `offset`;
    /// empty at the end or if nothing was written.
    pub fn read(
        &self,
        db: &mut dyn Sql,
        attempt: AttemptRef,
        rank: u32,
        stderr: bool,
        offset: u64,
        max: usize,
    ) -> Result<Vec<u8>> {
        match self {
            Logs::Files(dir) => read_file(dir, attempt, rank, stderr, offset, max),
            Logs::Table => {
                let chunks = db.rows(
                    "SELECT off, data FROM task_logs WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3 AND rank = ?4 AND stderr = ?5 AND off + length(data) > ?6 ORDER BY off LIMIT ?7",
                    args![attempt.task.job.0, attempt.task.index, attempt.attempt, rank, stderr, offset, CHUNKS_PER_READ],
                    |r| Ok((r.get::<u64>(0)?, r.get::<Vec<u8>>(1)?)),
                )?;
                Ok(assemble(offset, max, chunks))
            }
        }
    }

    /// The folder of the log files, if the logs are files.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Logs::Files(dir) => Some(dir),
            Logs::Table => None,
        }
    }
}

/// The bytes from `offset` on, up to `max`, out of chunks in order of their offsets
/// (which may overlap, if output was sent again cut differently), up to the first
/// gap (output not written yet).
fn assemble(offset: u64, max: usize, chunks: Vec<(u64, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = offset;
    for (off, data) in chunks {
        if off > at || out.len() >= max {
            break;
        }
        let skip = (at - off) as usize;
        let Some(rest) = data.get(skip..) else { continue };
        let take = rest.len().min(max - out.len());
        out.extend_from_slice(&rest[..take]);
        at += take as u64;
    }
    out
}

fn write_file(dir: &Path, chunk: &LogChunk) -> Result<()> {
    let path = log_path(dir, chunk.attempt, chunk.rank, chunk.stderr);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
    file.write_all_at(&chunk.data, chunk.offset)?;
    Ok(())
}

fn read_file(dir: &Path, attempt: AttemptRef, rank: u32, stderr: bool, offset: u64, max: usize) -> Result<Vec<u8>> {
    let path = log_path(dir, attempt, rank, stderr);
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

#[cfg(test)]
mod tests {
    use super::assemble;

    #[test]
    fn chunks_are_put_together_from_the_offset_up_to_a_gap_or_the_limit() {
        let chunks =
            || vec![(0, b"hello ".to_vec()), (3, b"lo world".to_vec()), (11, b"!".to_vec()), (20, b"later".to_vec())];
        assert_eq!(assemble(0, 100, chunks()), b"hello world!");
        assert_eq!(assemble(4, 3, chunks()), b"o w");
        assert_eq!(assemble(12, 100, vec![(20, b"later".to_vec())]), b"");
    }
}
