//! Running one task attempt: a child process in its own process group and working
//! directory, stdout and stderr written to files there and shipped to the
//! coordinator as they grow, a timeout enforced with SIGTERM and then SIGKILL.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Largest log chunk sent in one message.
const CHUNK: usize = 256 << 10;
/// How often a running task's output is shipped.
const TAIL_EVERY: Duration = Duration::from_millis(250);

/// What a runner tells the agent.
#[derive(Debug)]
pub enum RunnerEvent {
    Log(pb::LogChunk),
    /// The attempt ended. Its directory (with `stdout.txt` and `stderr.txt`) is
    /// left in place: the agent removes it once the coordinator has the result, and
    /// until then can ship the output again from it.
    Finished {
        result: pb::TaskResult,
        dir: PathBuf,
    },
}

/// Why the agent asks a task to stop.
#[derive(Debug, Clone, Copy)]
pub enum StopReason {
    Cancelled,
}

/// What every task of this agent shares.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub node_id: String,
    pub pool: String,
    pub tasks_dir: PathBuf,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Bumped by the agent on every new stream: output shipped on an older one may
    /// not have arrived, so runners ship their output again from the start.
    pub stream_generation: Arc<AtomicU64>,
    /// The coordinator's object store, for inputs and outputs.
    pub objects: crate::objects::Client,
    /// Kills the task's process group if the agent dies first.
    pub warden: Arc<crate::warden::Warden>,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Starts an attempt; returns the sender that stops it.
pub fn start(
    assignment: pb::Assignment,
    task: pb::TaskRef,
    ctx: RunContext,
    events: mpsc::UnboundedSender<RunnerEvent>,
) -> oneshot::Sender<StopReason> {
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(async move {
        let dir = ctx.tasks_dir.join(format!("{}.{}.{}", task.job_id, task.index, task.attempt));
        let result = run(assignment, task, &dir, &ctx, stop_rx, &events).await;
        let _ = events.send(RunnerEvent::Finished { result, dir });
    });
    stop_tx
}

/// Output shipped per stream per tick while a task runs, so a task that writes
/// gigabytes cannot flood the agent's memory; the rest goes on later ticks.
const SHIP_PER_TICK: u64 = 8 << 20;

/// Where output goes and how much of it has been shipped.
struct Output {
    task: pb::TaskRef,
    /// The agent's own handles on the task's stdout and stderr files.
    files: [std::fs::File; 2],
    shipped: [u64; 2],
    /// The stream generation the shipped offsets belong to.
    generation: u64,
}

impl Output {
    /// Sends what the files gained since the last call (from the start again if the
    /// agent's stream was replaced), at most `limit` bytes per file.
    fn ship(&mut self, generation: &AtomicU64, limit: u64, events: &mpsc::UnboundedSender<RunnerEvent>) {
        let current = generation.load(Ordering::Relaxed);
        if current != self.generation {
            self.generation = current;
            self.shipped = [0, 0];
        }
        for (i, file) in self.files.iter().enumerate() {
            let Ok(len) = file.metadata().map(|m| m.len()) else { continue };
            let len = len.min(self.shipped[i].saturating_add(limit));
            while self.shipped[i] < len {
                let want = ((len - self.shipped[i]) as usize).min(CHUNK);
                let mut data = vec![0; want];
                match file.read_at(&mut data, self.shipped[i]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        data.truncate(n);
                        let chunk =
                            pb::LogChunk { task: Some(self.task), stderr: i == 1, offset: self.shipped[i], data };
                        self.shipped[i] += n as u64;
                        let _ = events.send(RunnerEvent::Log(chunk));
                    }
                }
            }
        }
    }
}

fn result(task: pb::TaskRef, outcome: &str, started_at_ms: u64, message: String) -> pb::TaskResult {
    pb::TaskResult {
        task: Some(task),
        outcome: outcome.into(),
        message,
        started_at_ms,
        ended_at_ms: now_ms(),
        ..Default::default()
    }
}

async fn run(
    mut a: pb::Assignment,
    task: pb::TaskRef,
    dir: &Path,
    ctx: &RunContext,
    mut stop: oneshot::Receiver<StopReason>,
    events: &mpsc::UnboundedSender<RunnerEvent>,
) -> pb::TaskResult {
    let started_at_ms = now_ms();
    // The task writes through its handles; the agent reads through clones of them.
    let create = |name: &str| {
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.join(name))
    };
    let opened = std::fs::create_dir_all(dir).and_then(|_| {
        let stdout = create("stdout.txt")?;
        let stderr = create("stderr.txt")?;
        Ok(((stdout.try_clone()?, stderr.try_clone()?), [stdout, stderr]))
    });
    let ((stdout, stderr), files) = match opened {
        Ok(files) => files,
        Err(e) => {
            let msg = format!("cannot prepare the task directory {}: {e}", dir.display());
            return result(task, "spawn_failed", started_at_ms, msg);
        }
    };
    let Some((program, args)) = a.argv.split_first() else {
        return result(task, "spawn_failed", started_at_ms, "the command is empty".into());
    };
    if let Err(why) = fetch_inputs(&a.inputs, dir, ctx).await {
        return result(task, "failed", started_at_ms, why);
    }
    let mut env: HashMap<String, String> = std::mem::take(&mut a.env).into_iter().collect();
    env.insert("CORRAL_JOB_ID".into(), task.job_id.to_string());
    env.insert("CORRAL_TASK_ID".into(), a.name.clone());
    env.insert("CORRAL_TASK_INDEX".into(), a.array_index.to_string());
    env.insert("CORRAL_ATTEMPT".into(), task.attempt.to_string());
    env.insert("CORRAL_NODE_ID".into(), ctx.node_id.clone());
    env.insert("CORRAL_POOL".into(), ctx.pool.clone());
    // Map and reduce tasks talk to the shuffle through pipes; commands to nobody.
    let plumbing = match crate::shuffle::Plumbing::prepare(&a, dir, &ctx.objects).await {
        Ok(plumbing) => plumbing,
        Err(why) => return result(task, "failed", started_at_ms, why),
    };
    let (stdin, stdout) = match plumbing.stdio(stdout) {
        Ok(stdio) => stdio,
        Err(e) => return result(task, "spawn_failed", started_at_ms, format!("cannot set up the task's pipes: {e}")),
    };
    let mut cmd = tokio::process::Command::new(program);
    for var in crate::AGENT_SECRETS {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .envs(env)
        .current_dir(dir)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(false);
    let spawned = cmd.spawn();
    // Close our copies of the child's pipe ends, so the shuffle sees its EOF.
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return result(task, "spawn_failed", started_at_ms, format!("cannot run '{program}': {e}")),
    };
    let shuffle = plumbing.start(&mut child, &ctx.objects);
    let pgid = child.id().map(|p| p as libc::pid_t).unwrap_or(0);
    ctx.warden.watch(pgid);
    let generation = ctx.stream_generation.load(Ordering::Relaxed);
    let mut output = Output { task, files, shipped: [0, 0], generation };
    let timeout = (a.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(a.timeout_ms));
    let mut tail = tokio::time::interval_at(Instant::now() + TAIL_EVERY, TAIL_EVERY);
    // Set once the agent decided to end the task: why, and when to SIGKILL.
    let mut ending: Option<(&str, Instant)> = None;
    let status = loop {
        let kill_at = ending.map(|(_, at)| at);
        tokio::select! {
            status = child.wait() => break status,
            _ = sleep_until_opt(timeout), if ending.is_none() => {
                signal_group(pgid, libc::SIGTERM);
                ending = Some(("timed_out", Instant::now() + ctx.kill_grace));
            }
            reason = &mut stop, if ending.is_none() => {
                let StopReason::Cancelled = reason.unwrap_or(StopReason::Cancelled);
                signal_group(pgid, libc::SIGTERM);
                ending = Some(("cancelled", Instant::now() + ctx.kill_grace));
            }
            _ = sleep_until_opt(kill_at) => {
                signal_group(pgid, libc::SIGKILL);
            }
            _ = tail.tick() => output.ship(&ctx.stream_generation, SHIP_PER_TICK, events),
        }
    };
    // Whatever the task left behind in its process group goes with it.
    signal_group(pgid, libc::SIGKILL);
    ctx.warden.release(pgid);
    output.ship(&ctx.stream_generation, u64::MAX, events);
    let mut r = match status {
        Ok(status) => {
            let mut r = result(task, "failed", started_at_ms, String::new());
            if let Some(code) = status.code() {
                r.has_exit_code = true;
                r.exit_code = code;
                if code == 0 {
                    r.outcome = "succeeded".into();
                } else {
                    r.message = format!("exited with code {code}");
                }
            } else if let Some(sig) = status.signal() {
                r.signal = sig;
                r.message = format!("killed by signal {sig}");
            }
            r
        }
        Err(e) => result(task, "failed", started_at_ms, format!("lost track of the process: {e}")),
    };
    if let Some((why, _)) = ending {
        r.outcome = why.into();
        r.message = match why {
            "timed_out" => format!("timed out after {} ms", a.timeout_ms),
            _ => "cancelled".into(),
        };
    }
    if let Err(why) = shuffle.finish(r.outcome == "succeeded", &ctx.objects, &ctx.warden).await {
        r.outcome = "failed".into();
        r.message = why;
    }
    let wanted = match a.outputs_when.as_str() {
        "always" => true,
        "failure" => r.outcome != "succeeded",
        _ => r.outcome == "succeeded",
    };
    if wanted && !a.outputs.is_empty() && r.outcome != "cancelled" {
        let mut objects = ctx.objects.clone();
        if let Err(e) = crate::objects::upload_matching(&mut objects, dir, &a.outputs, &a.output_prefix).await {
            // The task's work is not where it should be: the attempt failed.
            r.outcome = "failed".into();
            r.message = e.to_string();
        }
    }
    r
}

/// Fetches a task's inputs into its directory; the error says which input failed.
async fn fetch_inputs(inputs: &[pb::TaskInput], dir: &Path, ctx: &RunContext) -> Result<(), String> {
    let mut objects = ctx.objects.clone();
    for input in inputs {
        let relative = Path::new(&input.path);
        if !crate::objects::is_inside(relative) {
            return Err(format!("input '{}': '{}' is not inside the task's directory", input.object, input.path));
        }
        crate::objects::download(&mut objects, &input.object, &dir.join(relative))
            .await
            .map_err(|e| format!("input '{}' could not be fetched: {e}", input.object))?;
    }
    Ok(())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    if pgid > 0 {
        // SAFETY: kill(2) has no memory effects; a group that is gone yields ESRCH.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Reads a finished attempt's output from its directory as log chunks, to ship it
/// again after a reconnect.
pub fn output_chunks(task: pb::TaskRef, dir: &Path) -> Vec<pb::LogChunk> {
    let mut chunks = Vec::new();
    for (stderr, name) in [(false, "stdout.txt"), (true, "stderr.txt")] {
        let Ok(file) = std::fs::File::open(dir.join(name)) else { continue };
        let mut offset = 0u64;
        loop {
            let mut data = vec![0; CHUNK];
            match file.read_at(&mut data, offset) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    data.truncate(n);
                    chunks.push(pb::LogChunk { task: Some(task), stderr, offset, data });
                    offset += n as u64;
                }
            }
        }
    }
    chunks
}

/// Removes a task's directory: the two output files and the directory itself in
/// three calls when the task left nothing else, a recursive removal when it did.
pub fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("stdout.txt"));
    let _ = std::fs::remove_file(dir.join("stderr.txt"));
    if std::fs::remove_dir(dir).is_ok() {
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::debug!(dir = %dir.display(), error = %e, "could not remove a task directory");
    }
}
