//! Task output the store could not write (a full disk, a permission): it is not
//! allowed to hold up the state, so it is skipped, but never silently. The
//! attempt's message says how much of which stream is missing, and its log gets a
//! marker where the output stops, once a marker can be written: a short log is
//! never read as complete.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use rusqlite::params;

use super::log_path;
use crate::model::{AttemptRef, LogChunk};

/// The most attempts with missing output remembered until they end, and markers
/// waiting for room: what a full disk makes the coordinator hold stays bounded.
const MAX_KEPT: usize = 100_000;

/// How much of an attempt's stdout and stderr could not be written, and where
/// each stream's output ends.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Missing {
    pub bytes: [u64; 2],
    pub end: [u64; 2],
}

impl Missing {
    fn add(&mut self, chunk: &LogChunk) {
        let s = usize::from(chunk.stderr);
        self.bytes[s] += chunk.data.len() as u64;
        self.end[s] = self.end[s].max(chunk.offset + chunk.data.len() as u64);
    }

    fn merge(&mut self, other: &Missing) {
        for s in 0..2 {
            self.bytes[s] += other.bytes[s];
            self.end[s] = self.end[s].max(other.end[s]);
        }
    }

    /// What the attempt's message says.
    pub fn note(&self) -> String {
        let streams: Vec<String> = ["stdout", "stderr"]
            .iter()
            .zip(self.bytes)
            .filter(|(_, bytes)| *bytes > 0)
            .map(|(name, bytes)| format!("{} of {name}", corral_proto::size::show(bytes)))
            .collect();
        format!(
            "{} not stored: the coordinator could not write its logs (is its disk full?); see its log",
            streams.join(" and ")
        )
    }
}

/// A marker still to be written at the end of one stream's log.
struct Marker {
    attempt: AttemptRef,
    stderr: bool,
    at: u64,
    bytes: u64,
}

/// What the store remembers of missing output between transactions.
#[derive(Default)]
pub struct Lost {
    /// Attempts still running whose output went missing.
    running: HashMap<AttemptRef, Missing>,
    /// Markers that could not be written yet.
    markers: VecDeque<Marker>,
}

/// What one transaction found: chunks that could not be written, attempts that
/// ended in it.
#[derive(Default)]
pub struct Found {
    missing: HashMap<AttemptRef, Missing>,
    ended: Vec<AttemptRef>,
    /// Attempts whose message the transaction amended (their markers come next).
    settled: Vec<(AttemptRef, Missing)>,
}

impl Found {
    pub fn chunk_lost(&mut self, chunk: &LogChunk) {
        self.missing.entry(chunk.attempt).or_default().add(chunk);
    }

    pub fn ended(&mut self, attempt: AttemptRef) {
        self.ended.push(attempt);
    }
}

impl Lost {
    /// Inside the transaction: the message of every ended attempt with missing
    /// output (found now or earlier) says so.
    pub fn amend(&self, tx: &rusqlite::Transaction, found: &mut Found) -> rusqlite::Result<()> {
        let mut touched: Vec<AttemptRef> = found.missing.keys().copied().collect();
        touched.extend(found.ended.iter().filter(|a| self.running.contains_key(a)));
        touched.sort_by_key(|a| (a.task.job, a.task.index, a.attempt));
        touched.dedup();
        for attempt in touched {
            let mut missing = self.running.get(&attempt).copied().unwrap_or_default();
            if let Some(now) = found.missing.get(&attempt) {
                missing.merge(now);
            }
            let note = missing.note();
            let amended = tx
                .prepare_cached(
                    "UPDATE attempts SET message = CASE WHEN message IS NULL OR message = '' THEN ?4 ELSE message || '; ' || ?4 END WHERE job_id = ?1 AND idx = ?2 AND attempt = ?3 AND ended_at_ms IS NOT NULL",
                )?
                .execute(params![attempt.task.job.0, attempt.task.index, attempt.attempt, note])?;
            if amended > 0 {
                found.settled.push((attempt, missing));
            }
        }
        Ok(())
    }

    /// After the commit: what is still running is remembered, what ended gets its
    /// markers (now, or when there is room).
    pub fn committed(&mut self, logs: &Path, found: Found) {
        let settled: std::collections::HashSet<AttemptRef> = found.settled.iter().map(|(a, _)| *a).collect();
        for (attempt, missing) in found.missing {
            if settled.contains(&attempt) {
                continue;
            }
            if self.running.len() >= MAX_KEPT && !self.running.contains_key(&attempt) {
                tracing::error!(task = %attempt.task, "too many attempts with missing output to remember; this one's record will not say so");
                continue;
            }
            self.running.entry(attempt).or_default().merge(&missing);
        }
        for (attempt, missing) in found.settled {
            self.running.remove(&attempt);
            for stderr in [false, true] {
                let s = usize::from(stderr);
                if missing.bytes[s] > 0 && self.markers.len() < MAX_KEPT {
                    self.markers.push_back(Marker { attempt, stderr, at: missing.end[s], bytes: missing.bytes[s] });
                }
            }
        }
        self.write_markers(logs);
    }

    /// Writes the markers waiting for room, oldest first, until one fails.
    fn write_markers(&mut self, logs: &Path) {
        while let Some(marker) = self.markers.front() {
            let stream = if marker.stderr { "stderr" } else { "stdout" };
            let text = format!(
                "\n[corral: {} of {stream} is missing from this log: the coordinator could not write it]\n",
                corral_proto::size::show(marker.bytes)
            );
            let path = log_path(logs, marker.attempt, marker.stderr);
            let dir = path.parent().map(std::fs::create_dir_all).unwrap_or(Ok(()));
            let written = dir
                .and_then(|()| std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path))
                .and_then(|f| {
                    use std::os::unix::fs::FileExt;
                    let at = f.metadata()?.len().max(marker.at);
                    f.write_all_at(text.as_bytes(), at)
                });
            if written.is_err() {
                return;
            }
            self.markers.pop_front();
        }
    }
}
