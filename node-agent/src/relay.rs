//! The relay between a task's stdout and stderr pipes and its output files.
//!
//! The task writes into two pipes; the agent reads them as it writes, appends what
//! it reads to `stdout.txt` and `stderr.txt` in the task's directory, and notes
//! the order the two came in ([`corral_types::order::Runs`]), which files alone
//! cannot tell. At most `--max-output` of each stream is kept, on the agent's disk
//! as at the coordinator; the rest is counted and dropped. The shipping of the
//! files to the coordinator ([`crate::runner::Output`]) does not change.
//!
//! The relay ends with the attempt, not with the pipes: a process that left the
//! task's process group and keeps a pipe open gets no more of the agent's time once
//! the attempt is over ([`Relay::drain`]).

use std::fs::File;
use std::io::PipeWriter;
use std::io::{ErrorKind, Write};

use corral_types::order::Runs;
use tokio::net::unix::pipe;

/// The most read from a pipe at once.
const READ: usize = 32 << 10;

pub struct Relay {
    /// The read ends, until each reaches its end.
    pipes: [Option<pipe::Receiver>; 2],
    files: [File; 2],
    /// Bytes read from each pipe, kept or not.
    read: [u64; 2],
    /// Bytes written to each file.
    kept: [u64; 2],
    /// The most of each stream kept (`u64::MAX`: all).
    limit: u64,
    runs: Runs,
    buf: Vec<u8>,
}

impl Relay {
    /// A relay into `files` (stdout's, stderr's), and the write ends for the task.
    pub fn new(files: [File; 2], max_output: u64) -> std::io::Result<(Relay, [PipeWriter; 2])> {
        let (out_read, out_write) = std::io::pipe()?;
        let (err_read, err_write) = std::io::pipe()?;
        let receiver = |end: std::io::PipeReader| pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(end));
        let relay = Relay {
            pipes: [Some(receiver(out_read)?), Some(receiver(err_read)?)],
            files,
            read: [0; 2],
            kept: [0; 2],
            limit: if max_output == 0 { u64::MAX } else { max_output },
            runs: Runs::default(),
            buf: vec![0; READ],
        };
        Ok((relay, [out_write, err_write]))
    }

    /// Whether a pipe is still open.
    pub fn is_open(&self) -> bool {
        self.pipes.iter().any(Option::is_some)
    }

    /// Waits for either pipe to have something, then takes one read of it. Safe to
    /// cancel: nothing is read before the wait ends. Never resolves once both pipes
    /// are closed.
    pub async fn step(&mut self) {
        let stream = tokio::select! {
            _ = readable(self.pipes[0].as_ref()) => 0,
            _ = readable(self.pipes[1].as_ref()) => 1,
        };
        self.read_once(stream);
    }

    /// Takes what the pipes hold now, then closes them: the attempt is over, and a
    /// writer that outlived its process group writes to no one.
    pub fn drain(&mut self) {
        for stream in 0..2 {
            while self.pipes[stream].is_some() && self.read_once(stream) {}
        }
        self.pipes = [None, None];
    }

    /// One read of a pipe; whether it gave bytes (false: nothing yet, or its end).
    fn read_once(&mut self, stream: usize) -> bool {
        let Some(pipe) = &self.pipes[stream] else { return false };
        match pipe.try_read(&mut self.buf) {
            Ok(0) => {
                self.pipes[stream] = None;
                false
            }
            Ok(n) => {
                self.keep(stream, n);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a task's output pipe; the rest of that stream is lost");
                self.pipes[stream] = None;
                false
            }
        }
    }

    /// Keeps what fits under the limit of the `n` bytes just read.
    fn keep(&mut self, stream: usize, n: usize) {
        self.read[stream] += n as u64;
        let room = self.limit.saturating_sub(self.kept[stream]);
        let keep = (n as u64).min(room) as usize;
        if keep == 0 {
            return;
        }
        match self.files[stream].write_all(&self.buf[..keep]) {
            Ok(()) => {
                self.kept[stream] += keep as u64;
                self.runs.push(stream == 1, keep as u64);
            }
            Err(e) => {
                // The disk is full or gone: keep nothing more of this stream, and
                // still read it so the task is not blocked on a pipe.
                tracing::warn!(error = %e, "cannot write a task's output; keeping no more of that stream");
                self.kept[stream] = self.limit;
            }
        }
    }

    /// How much the task wrote to stdout and to stderr, kept or not.
    pub fn written(&self) -> [u64; 2] {
        self.read
    }

    /// The order of what was kept.
    pub fn runs(&self) -> &Runs {
        &self.runs
    }
}

/// Waits until `pipe` has something (or its end); never without one.
async fn readable(pipe: Option<&pipe::Receiver>) {
    match pipe {
        Some(pipe) => {
            // An error shows in the read that follows.
            let _ = pipe.readable().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn files(dir: &std::path::Path) -> [File; 2] {
        let create = |name: &str| File::create(dir.join(name)).expect("create");
        [create("stdout.txt"), create("stderr.txt")]
    }

    async fn run(script: &str, max_output: u64) -> (Relay, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut relay, [out, err]) = Relay::new(files(dir.path()), max_output).expect("relay");
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script]).current_dir(dir.path()).stdout(out).stderr(err).process_group(0);
        // The `Command`, and with it this side's write ends, goes at the `;`.
        let mut child = tokio::process::Command::from(cmd).spawn().expect("spawn");
        loop {
            tokio::select! {
                _ = relay.step(), if relay.is_open() => {}
                status = child.wait() => { status.expect("wait"); break; }
            }
        }
        relay.drain();
        (relay, dir)
    }

    fn read(dir: &tempfile::TempDir, name: &str) -> String {
        std::fs::read_to_string(dir.path().join(name)).expect("read")
    }

    #[tokio::test]
    async fn both_streams_are_kept_in_their_files_and_their_order_noted() {
        let (relay, dir) = run("echo one; sleep 0.05; echo two >&2; sleep 0.05; echo three", 0).await;
        assert_eq!((read(&dir, "stdout.txt"), read(&dir, "stderr.txt")), ("one\nthree\n".into(), "two\n".into()));
        assert_eq!(relay.runs().lengths(), [4, 4, 6]);
        assert_eq!(relay.written(), [10, 4]);
    }

    #[tokio::test]
    async fn past_the_limit_output_is_counted_not_kept() {
        let (relay, dir) = run("head -c 300000 /dev/zero; echo abc >&2", 1000).await;
        assert_eq!(std::fs::metadata(dir.path().join("stdout.txt")).expect("meta").len(), 1000);
        assert_eq!(relay.written(), [300000, 4]);
        assert_eq!(relay.runs().lengths(), [1000, 4]);
    }

    #[tokio::test]
    async fn a_writer_that_left_the_group_does_not_hold_the_attempt_open() {
        // A daemon in its own session keeps stdout open for a minute.
        let started = std::time::Instant::now();
        let script = "echo before; setsid sh -c 'echo $$ > daemon.pid; exec sleep 60' & \
                      while [ ! -s daemon.pid ]; do sleep 0.01; done; exit 0";
        let (relay, dir) = run(script, 0).await;
        let elapsed = started.elapsed();
        if let Ok(pid) = read(&dir, "daemon.pid").trim().parse::<i32>() {
            // SAFETY: kill(2) on a pid this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        assert!(elapsed < std::time::Duration::from_secs(30), "waited {elapsed:?} for a writer that left");
        assert_eq!(read(&dir, "stdout.txt"), "before\n");
        assert!(!relay.is_open());
    }
}
