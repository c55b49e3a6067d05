//! The map/reduce shuffle, on the agent.
//!
//! A map task streams its split of the input (moved to line boundaries) into the
//! mapper's stdin, and reads `key<TAB>value` lines from its stdout: each goes to
//! partition `fnv1a(key) % R`. Partitions are sorted by key (in parallel, with
//! rayon) and spilled to disk as sorted runs when they outgrow memory; at the end
//! the runs of each partition are merged, passed through the combiner if there is
//! one, and uploaded. A reduce task downloads its partition from every map task and
//! feeds their k-way merge, in key order, to the reducer.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_proto::v1 as pb;
use rayon::prelude::*;
use tokio::io::AsyncWriteExt;

use crate::objects::{self, Client};
use crate::warden::Warden;

mod merge;

pub use merge::{merge_files, merge_into, read_lines, FAN_IN};

/// Map output held in memory before it is spilled to disk as sorted runs.
pub fn spill_bytes() -> usize {
    std::env::var("CORRAL_MAP_SPILL_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(128 << 20)
}

/// A stable hash (FNV-1a, 64 bits): the same key goes to the same partition on
/// every node and every run.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The key of a `key<TAB>value` line (the whole line if it has no tab).
pub fn key(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == b'\t') {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Orders lines by key, then by the whole line, so every run sorts the same way.
pub fn by_key(a: &[u8], b: &[u8]) -> Ordering {
    key(a).cmp(key(b)).then_with(|| a.cmp(b))
}

/// Picks, from a stream of bytes starting at `from`, the lines that start in
/// `[offset, end)`: a pure state machine fed chunk by chunk, so chunk boundaries can
/// be tested exhaustively.
///
/// The stream starts one byte early (`from = offset - 1`, or 0): if that byte ends
/// a line, a line starts at `offset` and belongs here; otherwise the line under way
/// at `offset` belongs to the split before, which reads past its own end to finish it.
#[derive(Debug)]
pub struct SplitLines {
    pos: u64,
    end: u64,
    skipping: bool,
    done: bool,
}

impl SplitLines {
    pub fn new(offset: u64, length: u64) -> Self {
        let from = offset.saturating_sub(1);
        SplitLines { pos: from, end: offset + length, skipping: offset > 0, done: length == 0 }
    }

    /// Where the stream must start.
    pub fn from(&self) -> u64 {
        self.pos
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// The part of `chunk` (the next bytes of the stream) that belongs to this split.
    pub fn take<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        if self.done {
            return &[];
        }
        let mut data = chunk;
        if self.skipping {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    data = &data[i + 1..];
                    self.pos += i as u64 + 1;
                    self.skipping = false;
                    // The first whole line starts at or after the end: none is ours.
                    if self.pos >= self.end {
                        self.done = true;
                        return &[];
                    }
                }
                None => {
                    self.pos += data.len() as u64;
                    if self.pos >= self.end {
                        // One line runs through the whole split: it is the previous split's.
                        self.done = true;
                    }
                    return &[];
                }
            }
        }
        // Emit up to and including the newline that ends the line holding byte
        // `end - 1`; a line that started before `end` is finished whatever it takes.
        let mut scan = 0;
        while let Some(i) = data[scan..].iter().position(|&b| b == b'\n') {
            let at = scan + i;
            if self.pos + at as u64 + 1 >= self.end {
                self.done = true;
                self.pos += at as u64 + 1;
                return &data[..=at];
            }
            scan = at + 1;
        }
        self.pos += data.len() as u64;
        data
    }
}

/// Writes the lines of `segments` of the input to `stdin`: every line that starts in
/// a segment's byte range, whole, and no other (see [`SplitLines`]).
pub async fn feed_split(
    client: &mut Client,
    segments: &[pb::Segment],
    mut stdin: tokio::process::ChildStdin,
) -> Result<(), String> {
    let write_err = |e: std::io::Error| format!("writing to the mapper: {e}");
    for segment in segments {
        let mut split = SplitLines::new(segment.offset, segment.length);
        if split.done() {
            continue;
        }
        let read_err = |s: tonic::Status| format!("input '{}': {}", segment.object, s.message());
        let mut stream = client
            .get(pb::GetObjectRequest { path: segment.object.clone(), offset: split.from(), length: 0 })
            .await
            .map_err(read_err)?
            .into_inner();
        let mut last = b'\n';
        while let Some(msg) = stream.message().await.map_err(read_err)? {
            let data = split.take(&msg.data);
            if let Some(&b) = data.last() {
                stdin.write_all(data).await.map_err(write_err)?;
                last = b;
            }
            if split.done() {
                break;
            }
        }
        if last != b'\n' {
            // A file's last line without a newline must not run into the next one.
            stdin.write_all(b"\n").await.map_err(write_err)?;
        }
    }
    stdin.shutdown().await.ok();
    Ok(())
}

/// Map output, partitioned: sorted runs on disk plus what is still in memory.
pub struct Partitions {
    dir: PathBuf,
    memory: Vec<Vec<Vec<u8>>>,
    buffered: usize,
    runs: Vec<Vec<PathBuf>>,
    limit: usize,
}

impl Partitions {
    pub fn new(dir: &Path, reduce_tasks: u32, limit: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let r = reduce_tasks.max(1) as usize;
        Ok(Partitions {
            dir: dir.to_path_buf(),
            memory: vec![Vec::new(); r],
            buffered: 0,
            runs: vec![Vec::new(); r],
            limit,
        })
    }

    /// Reads `key<TAB>value` lines from the mapper until it closes its stdout.
    pub fn collect(&mut self, from: impl Read) -> std::io::Result<u64> {
        let mut reader = BufReader::with_capacity(1 << 20, from);
        let mut line = Vec::new();
        let mut records = 0;
        let r = self.memory.len() as u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(records);
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let partition = (fnv1a(key(&line)) % r) as usize;
            self.buffered += line.len() + 32;
            self.memory[partition].push(line.clone());
            records += 1;
            if self.buffered > self.limit {
                self.spill()?;
            }
        }
    }

    /// Sorts what is in memory, every partition in parallel, and writes it out as runs.
    fn spill(&mut self) -> std::io::Result<()> {
        let dir = &self.dir;
        let spills: Vec<std::io::Result<Option<PathBuf>>> = self
            .memory
            .par_iter_mut()
            .enumerate()
            .map(|(r, lines)| {
                if lines.is_empty() {
                    return Ok(None);
                }
                lines.par_sort_unstable_by(|a, b| by_key(a, b));
                let path = dir.join(format!("run-{r}-{}", uuid_like()));
                write_lines(&path, lines.iter())?;
                lines.clear();
                Ok(Some(path))
            })
            .collect();
        for (r, spill) in spills.into_iter().enumerate() {
            if let Some(path) = spill? {
                self.runs[r].push(path);
            }
        }
        self.buffered = 0;
        Ok(())
    }

    /// Writes each partition, sorted, to `<dir>/part-<r>` and returns the files.
    pub fn finish(mut self) -> std::io::Result<Vec<PathBuf>> {
        let memory = std::mem::take(&mut self.memory);
        let dir = self.dir.clone();
        memory
            .into_par_iter()
            .zip(std::mem::take(&mut self.runs).into_par_iter())
            .enumerate()
            .map(|(r, (mut lines, runs))| {
                lines.par_sort_unstable_by(|a, b| by_key(a, b));
                let path = dir.join(format!("part-{r}"));
                if runs.is_empty() {
                    write_lines(&path, lines.iter())?;
                } else {
                    let mut runs = runs;
                    if !lines.is_empty() {
                        let last = dir.join(format!("run-{r}-{}", uuid_like()));
                        write_lines(&last, lines.iter())?;
                        runs.push(last);
                    }
                    merge_files(runs, &dir, BufWriter::new(File::create(&path)?))?;
                }
                Ok(path)
            })
            .collect()
    }
}

/// A name unique within this process, for spill files.
fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn write_lines<'a>(path: &Path, lines: impl Iterator<Item = &'a Vec<u8>>) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for line in lines {
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Runs `combiner` (with `sh -c`) over a sorted partition file and replaces it with
/// the combiner's output, sorted again (a combiner need not keep the order) with the
/// same spilling as the map output, so a big partition does not have to fit in memory.
pub fn combine(path: &Path, combiner: &str, limit: usize, warden: &Warden) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let input = File::open(path).map_err(|e| format!("combiner input: {e}"))?;
    let mut cmd = std::process::Command::new("sh");
    for var in crate::AGENT_SECRETS {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .arg("-c")
        .arg(combiner)
        .stdin(input)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run the combiner: {e}"))?;
    let pgid = child.id() as libc::pid_t;
    warden.watch(pgid);
    let stdout = child.stdout.take().ok_or("the combiner has no stdout")?;
    let dir = path.with_extension("combine");
    let mut sorted = Partitions::new(&dir, 1, limit).map_err(|e| format!("combiner output: {e}"))?;
    let collected = sorted.collect(stdout);
    let status = child.wait();
    crate::warden::signal_group(pgid, libc::SIGKILL);
    warden.release(pgid);
    let status = status.map_err(|e| format!("the combiner: {e}"))?;
    if !status.success() {
        return Err(format!("the combiner failed ({status})"));
    }
    collected.map_err(|e| format!("reading the combiner's output: {e}"))?;
    let files = sorted.finish().map_err(|e| format!("sorting the combiner's output: {e}"))?;
    let file = files.first().ok_or("the combiner's output went missing")?;
    std::fs::rename(file, path).map_err(|e| format!("combiner output: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Uploads a map task's partition files as `<prefix>/part-<r>`.
pub async fn upload_parts(client: &mut Client, parts: &[PathBuf], prefix: &str) -> Result<(), String> {
    for (r, part) in parts.iter().enumerate() {
        objects::upload(client, part, &corral_types::paths::partition(prefix, r as u32))
            .await
            .map_err(|e| format!("uploading map output partition {r} failed: {e}"))?;
    }
    Ok(())
}

/// Downloads the sorted runs a reduce task merges, into `dir`.
pub async fn download_runs(client: &mut Client, inputs: &[String], dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::with_capacity(inputs.len());
    for (m, input) in inputs.iter().enumerate() {
        let path = dir.join(format!("run-{m}"));
        objects::download(client, input, &path).await.map_err(|e| format!("map output '{input}': {e}"))?;
        files.push(path);
    }
    Ok(files)
}

/// Merges downloaded runs into the reducer's stdin (a pipe), in key order.
pub fn feed_merge(runs: Vec<PathBuf>, dir: &Path, stdin: impl Write) -> std::io::Result<u64> {
    merge_files(runs, dir, BufWriter::with_capacity(1 << 20, stdin))
}

/// How a task's stdin and stdout are wired, decided before it starts.
pub enum Plumbing {
    Command,
    Map {
        work: pb::MapWork,
        from_mapper: std::io::PipeReader,
        to_collector: std::io::PipeWriter,
        dir: PathBuf,
    },
    Reduce {
        output: String,
        runs: Vec<PathBuf>,
        to_reducer: std::io::PipeReader,
        from_merge: std::io::PipeWriter,
        result: PathBuf,
    },
}

/// The shuffle running alongside a task.
pub enum Running {
    Command,
    Map {
        work: pb::MapWork,
        feeder: tokio::task::JoinHandle<Result<(), String>>,
        collector: tokio::task::JoinHandle<std::io::Result<Partitions>>,
        dir: PathBuf,
    },
    Reduce {
        output: String,
        merger: tokio::task::JoinHandle<std::io::Result<u64>>,
        result: PathBuf,
    },
}

impl Plumbing {
    /// Downloads what a reduce task merges and makes the pipes.
    pub async fn prepare(a: &pb::Assignment, dir: &Path, objects: &Client) -> Result<Plumbing, String> {
        if let Some(work) = &a.map {
            let (from_mapper, to_collector) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
            return Ok(Plumbing::Map { work: work.clone(), from_mapper, to_collector, dir: dir.join(".shuffle") });
        }
        if let Some(work) = &a.reduce {
            let runs_dir = dir.join(".shuffle");
            std::fs::create_dir_all(&runs_dir).map_err(|e| format!("cannot make {}: {e}", runs_dir.display()))?;
            let runs = download_runs(&mut objects.clone(), &work.inputs, &runs_dir).await?;
            let (to_reducer, from_merge) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
            let result = runs_dir.join("result");
            return Ok(Plumbing::Reduce { output: work.output.clone(), runs, to_reducer, from_merge, result });
        }
        Ok(Plumbing::Command)
    }

    /// The child's stdin and stdout: pipes for the shuffle, or nothing and `stdout`.
    pub fn stdio(&self, stdout: std::process::Stdio) -> std::io::Result<(std::process::Stdio, std::process::Stdio)> {
        use std::process::Stdio;
        Ok(match self {
            Plumbing::Command => (Stdio::null(), stdout),
            Plumbing::Map { to_collector, .. } => (Stdio::piped(), Stdio::from(to_collector.try_clone()?)),
            Plumbing::Reduce { to_reducer, result, .. } => {
                (Stdio::from(to_reducer.try_clone()?), Stdio::from(File::create(result)?))
            }
        })
    }

    /// Starts feeding and collecting around the spawned child.
    pub fn start(self, child: &mut tokio::process::Child, objects: &Client) -> Running {
        match self {
            Plumbing::Command => Running::Command,
            Plumbing::Map { work, from_mapper, to_collector, dir } => {
                drop(to_collector);
                let stdin = child.stdin.take();
                let mut client = objects.clone();
                let segments = work.segments.clone();
                let feeder = tokio::spawn(async move {
                    match stdin {
                        Some(stdin) => feed_split(&mut client, &segments, stdin).await,
                        None => Err("the mapper has no stdin".into()),
                    }
                });
                let (r, spill_dir) = (work.reduce_tasks, dir.clone());
                let collector = tokio::task::spawn_blocking(move || {
                    let mut parts = Partitions::new(&spill_dir, r, spill_bytes())?;
                    parts.collect(from_mapper)?;
                    Ok(parts)
                });
                Running::Map { work, feeder, collector, dir }
            }
            Plumbing::Reduce { output, runs, to_reducer, from_merge, result } => {
                drop(to_reducer);
                let dir = result.parent().map(Path::to_path_buf).unwrap_or_default();
                let merger = tokio::task::spawn_blocking(move || feed_merge(runs, &dir, from_merge));
                Running::Reduce { output, merger, result }
            }
        }
    }
}

/// How long the shuffle may wait on pipes once the task's process group is gone:
/// only a process that escaped the group (a daemon it started) can hold them open.
const PIPE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

async fn after_exit<T>(work: tokio::task::JoinHandle<T>) -> Result<T, String> {
    match tokio::time::timeout(PIPE_GRACE, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("the shuffle stopped: {e}")),
        Err(_) => Err(format!(
            "the task exited but something it started kept its stdin or stdout open for {}s; it was given up",
            PIPE_GRACE.as_secs()
        )),
    }
}

impl Running {
    /// Waits for the shuffle and, if the command `succeeded`, stores its results.
    /// An error is why the attempt failed.
    pub async fn finish(self, succeeded: bool, objects: &Client, warden: &Arc<Warden>) -> Result<(), String> {
        let joined = |e: tokio::task::JoinError| format!("the shuffle stopped: {e}");
        match self {
            Running::Command => Ok(()),
            Running::Map { work, feeder, collector, dir } => {
                let fed = feeder.await.map_err(joined)?;
                let parts = after_exit(collector).await?.map_err(|e| format!("reading the mapper's output: {e}"))?;
                if !succeeded {
                    return Ok(());
                }
                // A mapper may stop reading early; only a failed input is an error.
                if let Err(e) = fed {
                    if !e.contains("Broken pipe") {
                        return Err(e);
                    }
                }
                let combiner = Some(work.combiner.clone()).filter(|c| !c.trim().is_empty());
                let warden = warden.clone();
                let files = tokio::task::spawn_blocking(move || -> Result<Vec<PathBuf>, String> {
                    let files = parts.finish().map_err(|e| format!("sorting the map output: {e}"))?;
                    if let Some(combiner) = combiner {
                        files.par_iter().try_for_each(|f| combine(f, &combiner, spill_bytes(), &warden))?;
                    }
                    Ok(files)
                })
                .await
                .map_err(joined)??;
                upload_parts(&mut objects.clone(), &files, &work.output_prefix).await?;
                let _ = std::fs::remove_dir_all(dir);
                Ok(())
            }
            Running::Reduce { output, merger, result } => {
                let merged = after_exit(merger).await?;
                if !succeeded {
                    return Ok(());
                }
                if let Err(e) = merged {
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        return Err(format!("merging the map outputs: {e}"));
                    }
                }
                objects::upload(&mut objects.clone(), &result, &output)
                    .await
                    .map_err(|e| format!("uploading the reducer's output failed: {e}"))?;
                if let Some(dir) = result.parent() {
                    let _ = std::fs::remove_dir_all(dir);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
