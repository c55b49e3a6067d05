//! Task output: which node's log chunks are kept (only the attempt's own), and how
//! much of each stream (`--max-output`), with the marker that ends a cut log.

use super::*;

impl Core {
    /// Log output of an attempt, from `node`. Kept only from the node the attempt
    /// (for a multi-node task: the chunk's rank) runs on, or ran on when it ended:
    /// no node writes another's output, and a late copy from a node whose attempt
    /// was taken from it writes nothing.
    pub fn on_logs(&mut self, node: &NodeId, chunks: Vec<LogChunk>, out: &mut Outbox) {
        for chunk in chunks {
            let attempt = chunk.attempt;
            let running_here = self
                .running
                .get(&attempt.task)
                .is_some_and(|r| r.attempt == attempt.attempt && r.places().nth(chunk.rank as usize) == Some(node));
            let ended_here = self.ended_on.place(&attempt, chunk.rank) == Some(node);
            let limit = self.max_output_of(attempt.task.job);
            let chunk = clip(chunk, limit);
            if (running_here || ended_here) && !chunk.data.is_empty() {
                out.store.push(StoreOp::Log(chunk));
            } else if !chunk.data.is_empty() {
                tracing::debug!(node_id = %node, task = %attempt.task, attempt = attempt.attempt, "dropping output of an attempt this node does not own");
            }
        }
    }
}

impl Core {
    /// Ends each stream of the attempt's rank `rank` that wrote more than it
    /// keeps with the marker that says so; what to note on the attempt.
    pub(crate) fn mark_truncated(
        &self,
        attempt: AttemptRef,
        rank: u32,
        written: [u64; 2],
        out: &mut Outbox,
    ) -> Vec<String> {
        let limit = self.max_output_of(attempt.task.job);
        let mut notes = Vec::new();
        for (stderr, written) in [(false, written[0]), (true, written[1])] {
            if let Some((marker, note)) = truncation(stderr, written, limit) {
                out.store.push(StoreOp::Log(LogChunk {
                    attempt,
                    rank,
                    stderr,
                    offset: limit,
                    data: marker.into_bytes(),
                }));
                notes.push(note);
            }
        }
        notes
    }

    /// The most of each of a job's task streams that is kept.
    pub fn max_output_of(&self, job: JobId) -> u64 {
        self.jobs.get(&job).map_or(self.config.max_output, |j| j.spec.max_output_or(self.config.max_output))
    }
}

/// What of `chunk` lies within the first `limit` bytes of its stream.
fn clip(mut chunk: LogChunk, limit: u64) -> LogChunk {
    let room = limit.saturating_sub(chunk.offset);
    if (chunk.data.len() as u64) > room {
        chunk.data.truncate(room as usize);
    }
    chunk
}

/// For a stream that wrote more than `limit` bytes: the marker that ends its
/// stored log, and the note on the attempt.
pub fn truncation(stderr: bool, written: u64, limit: u64) -> Option<(String, String)> {
    if written <= limit {
        return None;
    }
    let stream = if stderr { "stderr" } else { "stdout" };
    let (kept, all) = (corral_types::size::show(limit), corral_types::size::show(written));
    Some((
        format!("\n[corral: {stream} truncated here: kept the first {kept} of {all} (--max-output)]\n"),
        format!("{stream} truncated to {kept} of {all}"),
    ))
}
