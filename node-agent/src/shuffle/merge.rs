//! The k-way merge of sorted runs: in passes of at most [`FAN_IN`] files, and as
//! one stream of lines in key order (ties by source, so the merge is stable).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{by_key, uuid_like};

/// The most runs merged at once: more would need more file descriptors and read
/// buffers than a node should give one task.
pub const FAN_IN: usize = 64;

/// Merges sorted run files into `out`, at most [`FAN_IN`] at a time (in passes
/// through intermediate runs in `dir` when there are more), and deletes them.
pub fn merge_files(mut runs: Vec<PathBuf>, dir: &Path, out: impl Write) -> std::io::Result<u64> {
    while runs.len() > FAN_IN {
        let mut next = Vec::with_capacity(runs.len() / FAN_IN + 1);
        for group in runs.chunks(FAN_IN) {
            let merged = dir.join(format!("merge-{}", uuid_like()));
            merge_into(open_runs(group)?, BufWriter::new(File::create(&merged)?))?;
            for run in group {
                let _ = std::fs::remove_file(run);
            }
            next.push(merged);
        }
        runs = next;
    }
    let written = merge_into(open_runs(&runs)?, out)?;
    for run in runs {
        let _ = std::fs::remove_file(run);
    }
    Ok(written)
}

fn open_runs(runs: &[PathBuf]) -> std::io::Result<Vec<impl Iterator<Item = std::io::Result<Vec<u8>>> + Send>> {
    runs.iter().map(|run| Ok(read_lines(File::open(run)?))).collect()
}

/// The lines of a sorted run, without their newlines.
pub fn read_lines(from: impl Read + Send + 'static) -> impl Iterator<Item = std::io::Result<Vec<u8>>> + Send {
    let mut reader = BufReader::with_capacity(64 << 10, from);
    std::iter::from_fn(move || {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Some(Ok(line))
            }
            Err(e) => Some(Err(e)),
        }
    })
}

struct Head {
    line: Vec<u8>,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    // Reversed: BinaryHeap is a max-heap and the merge wants the smallest first.
    fn cmp(&self, other: &Self) -> Ordering {
        by_key(&other.line, &self.line).then_with(|| other.source.cmp(&self.source))
    }
}

/// Merges sorted sources (a k-way merge) into `out`, in key order.
pub fn merge_into<I>(mut sources: Vec<I>, mut out: impl Write) -> std::io::Result<u64>
where
    I: Iterator<Item = std::io::Result<Vec<u8>>>,
{
    let mut heap = BinaryHeap::new();
    for (source, it) in sources.iter_mut().enumerate() {
        if let Some(line) = it.next() {
            heap.push(Head { line: line?, source });
        }
    }
    let mut written = 0;
    while let Some(Head { line, source }) = heap.pop() {
        out.write_all(&line)?;
        out.write_all(b"\n")?;
        written += 1;
        if let Some(next) = sources[source].next() {
            heap.push(Head { line: next?, source });
        }
    }
    out.flush()?;
    Ok(written)
}
