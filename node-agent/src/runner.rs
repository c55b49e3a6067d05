//! Running one task attempt: a child process in its own process group and working
//! directory, stdout and stderr relayed into files there ([`crate::relay`]) and
//! shipped to the coordinator as they grow, a timeout enforced with SIGTERM and then SIGKILL.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_proto::v1 as pb;
use corral_types::{Outcome, OutputsWhen};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::checkpoint::{Checkpoint, Restored};
use crate::relay::Relay;
use crate::warden::signal_group;

/// Largest log chunk sent in one message.
const CHUNK: usize = 256 << 10;
/// How often a running task's output is shipped.
const TAIL_EVERY: Duration = Duration::from_millis(250);

/// What a runner tells the agent.
#[derive(Debug)]
pub enum RunnerEvent {
    /// The attempt ended, and its output went out on the current stream (if
    /// there was one). Its directory (with `stdout.txt` and `stderr.txt`) is left
    /// in place: the agent removes it once the coordinator has the result, and
    /// until then can ship the output again from it.
    Finished {
        result: pb::TaskResult,
        dir: PathBuf,
        max_output: u64,
        /// A multi-node task's rank here (0 for any other task).
        rank: u32,
        /// The stream all its output was shipped on; `None` if there was none
        /// for the whole of it.
        shipped_on: Option<u64>,
    },
}

/// Cancels a running attempt when fired, or when dropped (the agent forgot it).
pub type Cancel = oneshot::Sender<()>;

/// The agent's current stream, as far as output is concerned: a bounded queue of
/// messages for it, and a number that changes with every new stream.
///
/// The queue is small, so a task that prints gigabytes holds at most a few chunks
/// in the agent's memory: its runner waits for room, and reads the rest from the
/// task's files when there is. Heartbeats go on another, unbounded lane that the
/// stream sends first (see `session`), so they never wait behind output.
#[derive(Debug, Clone, Default)]
pub struct Lane {
    pub generation: u64,
    pub tx: Option<mpsc::Sender<pb::AgentMessage>>,
}

/// What every task of this agent shares.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub node_id: String,
    pub pool: String,
    /// Where attempts get their directories.
    pub dirs: Arc<crate::task_dirs::TaskDirs>,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Where output goes. Output shipped on an older stream may not have
    /// arrived, so on a new one runners ship theirs again from the start.
    pub lane: watch::Receiver<Lane>,
    /// The coordinator's object store, for inputs and outputs.
    pub objects: crate::objects::Client,
    /// Kills the task's process group if the agent dies first.
    pub warden: Arc<crate::warden::Warden>,
    /// For multi-node tasks' ranks (none for the start task).
    pub gangs: Option<Arc<crate::launch::GangTools>>,
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
) -> Cancel {
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(async move {
        let dir = ctx.dirs.root().join(dir_name(&task));
        let max_output = assignment.max_output_bytes;
        let rank = assignment.gang.as_ref().map_or(0, |g| g.rank);
        let mut shipped_on = None;
        let result = run(assignment, task, &dir, &ctx, stop_rx, &mut shipped_on).await;
        let _ = events.send(RunnerEvent::Finished { result, dir, max_output, rank, shipped_on });
    });
    stop_tx
}

/// The name of an attempt's directory under the tasks dir.
pub fn dir_name(task: &pb::TaskRef) -> String {
    format!("{}.{}.{}", task.job_id, task.index, task.attempt)
}

/// A task's stdout and stderr files, and how much of each went out on the
/// current stream.
pub struct Output {
    task: pb::TaskRef,
    /// A multi-node task's rank on this node, whose output this is.
    rank: u32,
    /// The agent's own handles on the files.
    files: [std::fs::File; 2],
    shipped: [u64; 2],
    /// How much of each file there is to ship: its length when last looked at,
    /// at most `limit`.
    known: [u64; 2],
    /// The most of each stream that is shipped (`u64::MAX`: all).
    limit: u64,
    lane: watch::Receiver<Lane>,
    /// The stream the shipped offsets belong to, and its queue.
    current: Lane,
}

impl Output {
    pub fn new(
        task: pb::TaskRef,
        rank: u32,
        files: [std::fs::File; 2],
        max_output: u64,
        lane: watch::Receiver<Lane>,
    ) -> Output {
        let limit = if max_output == 0 { u64::MAX } else { max_output };
        Output { task, rank, files, shipped: [0, 0], known: [0, 0], limit, lane, current: Lane::default() }
    }

    /// Opens a finished attempt's output in `dir`, to ship it again.
    pub fn open(
        task: pb::TaskRef,
        rank: u32,
        dir: &Path,
        max_output: u64,
        lane: watch::Receiver<Lane>,
    ) -> std::io::Result<Output> {
        let open = |name: &str| std::fs::File::open(dir.join(name));
        Ok(Output::new(task, rank, [open("stdout.txt")?, open("stderr.txt")?], max_output, lane))
    }

    /// Looks at the files' lengths and at the stream: on a new one, everything
    /// goes again from the start.
    pub fn refresh(&mut self) {
        let lane = self.lane.borrow_and_update().clone();
        if lane.generation != self.current.generation || lane.tx.is_none() {
            self.shipped = [0, 0];
        }
        self.current = lane;
        for (i, file) in self.files.iter().enumerate() {
            if let Ok(meta) = file.metadata() {
                self.known[i] = meta.len().min(self.limit);
            }
        }
    }

    /// Whether there is a stream and something to send on it.
    pub fn has_more(&self) -> bool {
        self.current.tx.is_some() && (0..2).any(|i| self.shipped[i] < self.known[i])
    }

    /// The stream everything so far went out on, if it did.
    pub fn shipped_on(&self) -> Option<u64> {
        (self.current.tx.is_some() && !self.has_more()).then_some(self.current.generation)
    }

    /// The current stream's queue, to wait for room in.
    pub fn sender(&self) -> Option<mpsc::Sender<pb::AgentMessage>> {
        self.current.tx.clone()
    }

    /// Sends one chunk (of the stream furthest behind) in the room `permit` holds.
    pub fn send_one(&mut self, permit: mpsc::OwnedPermit<pb::AgentMessage>) {
        let i = if self.known[0] - self.shipped[0].min(self.known[0])
            >= self.known[1] - self.shipped[1].min(self.known[1])
        {
            0
        } else {
            1
        };
        let want = (self.known[i].saturating_sub(self.shipped[i]) as usize).min(CHUNK);
        let mut data = vec![0; want];
        match self.files[i].read_at(&mut data, self.shipped[i]) {
            Ok(n) if n > 0 => {
                data.truncate(n);
                let (task, rank, stderr, offset) = (Some(self.task), self.rank, i == 1, self.shipped[i]);
                let chunk = pb::LogChunk { task, rank, stderr, offset, data };
                self.shipped[i] += n as u64;
                permit.send(pb::AgentMessage { logs: vec![chunk], ..Default::default() });
            }
            // Shrunk under us (or unreadable): stop at what there is.
            _ => self.known[i] = self.shipped[i],
        }
    }

    /// Ships everything there is, waiting for room; returns early if the stream
    /// goes away (the next one gets it all again).
    pub async fn ship_all(&mut self) {
        loop {
            self.refresh();
            let Some(tx) = self.sender().filter(|_| self.has_more()) else { return };
            tokio::select! {
                permit = tx.reserve_owned() => match permit {
                    Ok(permit) => self.send_one(permit),
                    Err(_) => return,
                },
                changed = self.lane.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// Waits for room in `tx`'s queue; never resolves without a queue.
async fn room(tx: Option<mpsc::Sender<pb::AgentMessage>>) -> Option<mpsc::OwnedPermit<pb::AgentMessage>> {
    match tx {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

fn result(task: pb::TaskRef, outcome: Outcome, started_at_ms: u64, message: String) -> pb::TaskResult {
    pb::TaskResult {
        task: Some(task),
        outcome: pb::Outcome::of(outcome),
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
    mut stop: oneshot::Receiver<()>,
    shipped_on: &mut Option<u64>,
) -> pb::TaskResult {
    let started_at_ms = now_ms();
    // The relay writes through its handles; the shipping reads through clones.
    let create = |name: &str| {
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.join(name))
    };
    let opened = ctx.dirs.prepare(dir).and_then(|_| {
        let stdout = create("stdout.txt")?;
        let stderr = create("stderr.txt")?;
        let (relay, pipes) = Relay::new([stdout.try_clone()?, stderr.try_clone()?], a.max_output_bytes)?;
        Ok(((relay, pipes), [stdout, stderr]))
    });
    let ((mut relay, [stdout, stderr]), files) = match opened {
        Ok(files) => files,
        Err(e) => {
            let msg = format!("cannot prepare the task directory {}: {e}", dir.display());
            return result(task, Outcome::SpawnFailed, started_at_ms, msg);
        }
    };
    // A multi-node task's rank: its hostfile, environment and launch secret.
    let mut launching = match crate::gang::setup(&mut a, dir, ctx.gangs.as_deref()) {
        Ok(launching) => launching,
        Err(why) => return result(task, Outcome::SpawnFailed, started_at_ms, why),
    };
    let Some((program, args)) = a.argv.split_first() else {
        return result(task, Outcome::SpawnFailed, started_at_ms, "the command is empty".into());
    };
    // A kill while the inputs are fetched (which may wait for a restarting
    // coordinator) ends the attempt there.
    let fetched = tokio::select! {
        fetched = fetch_inputs(&a.inputs, dir, ctx) => fetched,
        _ = &mut stop => return result(task, Outcome::Cancelled, started_at_ms, "cancelled".into()),
    };
    if let Err(why) = fetched {
        return result(task, Outcome::Failed, started_at_ms, why);
    }
    let checkpoint = match Checkpoint::of(&a.checkpoint, &a.checkpoint_object, a.checkpoint_interval_ms) {
        Ok(checkpoint) => checkpoint,
        Err(why) => return result(task, Outcome::SpawnFailed, started_at_ms, why),
    };
    // The latest checkpoint, in place; one that cannot be had is not worth failing
    // for: the attempt starts from scratch, and its record says so.
    let mut restored = false;
    // What the attempt's record says beside how it ended (checkpoints' troubles).
    let mut notes: Vec<String> = Vec::new();
    // Where its checkpoint is saved: none when the last one could not be fetched
    // (saving over it would lose it for good).
    let mut saves = checkpoint.clone();
    if let Some(ck) = checkpoint.clone() {
        let ck = &ck;
        let restore = || {
            let mut objects = ctx.objects.clone();
            async move { ck.restore(&mut objects, dir).await }
        };
        restored = tokio::select! {
            got = with_patience(restore) => match got {
                Ok(Restored::InPlace) => true,
                Ok(Restored::Nothing) => false,
                Ok(Restored::Rejected(why)) => {
                    // Nothing of it is in place, and this attempt's saves replace it.
                    tracing::warn!(task = ?task, %why, "the checkpoint archive was refused; starting from scratch");
                    notes.push(format!("checkpoint not restored, started from scratch: the archive was refused: {why}"));
                    false
                }
                Err(why) => {
                    tracing::warn!(task = ?task, %why, "starting without the checkpoint, and saving none this attempt");
                    notes.push(format!("checkpoint not restored, started from scratch and saved none: {why}"));
                    saves = None;
                    false
                }
            },
            _ = &mut stop => return result(task, Outcome::Cancelled, started_at_ms, "cancelled".into()),
        };
    }
    let mut env: HashMap<String, String> = std::mem::take(&mut a.env).into_iter().collect();
    if let Some(ck) = &checkpoint {
        env.insert("CORRAL_CHECKPOINT".into(), ck.path.display().to_string());
        env.insert("CORRAL_CHECKPOINT_RESTORED".into(), if restored { "1" } else { "0" }.into());
    }
    env.insert("CORRAL_JOB_ID".into(), task.job_id.to_string());
    env.insert("CORRAL_TASK_ID".into(), a.name.clone());
    env.insert("CORRAL_TASK_INDEX".into(), a.array_index.to_string());
    env.insert("CORRAL_ATTEMPT".into(), task.attempt.to_string());
    env.insert("CORRAL_NODE_ID".into(), ctx.node_id.clone());
    env.insert("CORRAL_POOL".into(), ctx.pool.clone());
    let attempt = crate::attempts::attempt_of(&task);
    if let (Some(l), Some(gang)) = (launching.as_mut(), a.gang.clone()) {
        // What its coordination command prints is the rank's own output.
        let output = match (stdout.try_clone(), stderr.try_clone()) {
            (Ok(o), Ok(e)) => Some(Arc::new([o, e])),
            (Err(e), _) | (_, Err(e)) => {
                return result(
                    task,
                    Outcome::SpawnFailed,
                    started_at_ms,
                    format!("cannot set up the rank's output: {e}"),
                )
            }
        };
        let (token, dir, env) = (l.token.clone(), dir.to_path_buf(), env.clone());
        l.register(attempt, crate::launches::Rank { token, gang, pgid: 0, dir, env, output });
    }
    // A multi-node task's coordination command, on every node before rank 0's own.
    if let (Some(gang), Some(tools)) = (a.gang.as_ref().filter(|g| g.rank == 0), ctx.gangs.as_deref()) {
        if !a.coordination.trim().is_empty() {
            let writers = [&stdout, &stderr];
            let limit = (a.timeout_ms > 0).then(|| Duration::from_millis(a.timeout_ms));
            let how = crate::gang::Coordination { command: &a.coordination, rsh: &tools.rsh, env: &env, dir, limit };
            if let Err((outcome, why)) = crate::gang::coordinate(how, gang, writers, &mut relay, &mut stop).await {
                relay.drain();
                return result(task, outcome, started_at_ms, why);
            }
        }
    }
    // Map and reduce tasks talk to the shuffle through pipes; commands to nobody.
    let plumbing = match crate::shuffle::Plumbing::prepare(&a, dir, &ctx.objects).await {
        Ok(plumbing) => plumbing,
        Err(why) => return result(task, Outcome::Failed, started_at_ms, why),
    };
    let (stdin, stdout) = match plumbing.stdio(Stdio::from(stdout)) {
        Ok(stdio) => stdio,
        Err(e) => {
            return result(task, Outcome::SpawnFailed, started_at_ms, format!("cannot set up the task's pipes: {e}"))
        }
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
    ctx.warden.mark(&mut cmd);
    let spawned = cmd.spawn();
    // Close our copies of the child's pipe ends, so the shuffle sees its EOF.
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return result(task, Outcome::SpawnFailed, started_at_ms, format!("cannot run '{program}': {e}")),
    };
    let shuffle = plumbing.start(&mut child, &ctx.objects);
    let pgid = child.id().map(|p| p as libc::pid_t).unwrap_or(0);
    ctx.warden.watch(pgid);
    if let Some(l) = &launching {
        l.set_group(pgid);
    }
    let rank = a.gang.as_ref().map_or(0, |g| g.rank);
    let mut output = Output::new(task, rank, files, a.max_output_bytes, ctx.lane.clone());
    output.refresh();
    let timeout = (a.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(a.timeout_ms));
    let mut tail = tokio::time::interval_at(Instant::now() + TAIL_EVERY, TAIL_EVERY);
    // Checkpoints while it runs: one save at a time, in the background.
    let mut save_tick = saves.as_ref().and_then(|ck| ck.interval).map(|every| {
        let every = every.max(MIN_CHECKPOINT_INTERVAL);
        tokio::time::interval_at(Instant::now() + every, every)
    });
    let mut saving: Option<tokio::task::JoinHandle<Option<String>>> = None;
    // Set once the agent decided to end the task: why, and when to SIGKILL.
    let mut ending: Option<(Outcome, Instant)> = None;
    let status = loop {
        let kill_at = ending.map(|(_, at)| at);
        tokio::select! {
            status = child.wait() => break status,
            _ = sleep_until_opt(timeout), if ending.is_none() => {
                signal_group(pgid, libc::SIGTERM);
                ending = Some((Outcome::TimedOut, Instant::now() + ctx.kill_grace));
            }
            _ = &mut stop, if ending.is_none() => {
                signal_group(pgid, libc::SIGTERM);
                ending = Some((Outcome::Cancelled, Instant::now() + ctx.kill_grace));
            }
            _ = sleep_until_opt(kill_at) => {
                signal_group(pgid, libc::SIGKILL);
            }
            _ = relay.step(), if relay.is_open() => {}
            permit = room(output.sender()), if output.has_more() => match permit {
                Some(permit) => output.send_one(permit),
                // That stream is gone; the tick finds the next one.
                None => output.refresh(),
            },
            _ = tail.tick() => output.refresh(),
            _ = tick_opt(&mut save_tick), if ending.is_none() && saving.as_ref().is_none_or(|s| s.is_finished()) => {
                if let Some(ck) = saves.clone() {
                    saving = Some(tokio::spawn(save_checkpoint(ck, ctx.objects.clone(), dir.to_path_buf())));
                }
            }
        }
    };
    // Whatever the task left behind in its process group goes with it, and what
    // it wrote is taken from the pipes; its secret launches nothing more.
    if let Some(l) = &launching {
        l.close();
    }
    signal_group(pgid, libc::SIGKILL);
    if let Some(l) = launching.take() {
        let left = l.end().await;
        if left > 0 {
            tracing::debug!(task = ?task, processes = left, "killed what the multi-node rank left outside its group");
        }
    }
    ctx.warden.release(pgid);
    relay.drain();
    // However it ended, its last checkpoint is kept, after any save still going;
    // the last save is the one the next attempt gets, so its trouble is recorded.
    if let Some(saving) = saving {
        let _ = saving.await;
    }
    if let Some(ck) = saves {
        notes.extend(save_checkpoint(ck, ctx.objects.clone(), dir.to_path_buf()).await);
    }
    output.ship_all().await;
    *shipped_on = output.shipped_on();
    let written = relay.written();
    let mut r = match status {
        Ok(status) => {
            let mut r = result(task, Outcome::Failed, started_at_ms, String::new());
            if let Some(code) = status.code() {
                r.has_exit_code = true;
                r.exit_code = code;
                if code == 0 {
                    r.set_outcome(pb::Outcome::Succeeded);
                } else {
                    r.message = format!("exited with code {code}");
                }
            } else if let Some(sig) = status.signal() {
                r.signal = sig;
                r.message = format!("killed by signal {sig}");
            }
            r
        }
        Err(e) => result(task, Outcome::Failed, started_at_ms, format!("lost track of the process: {e}")),
    };
    r.stdout_bytes = written[0];
    r.stderr_bytes = written[1];
    r.output_order = relay.runs().lengths().to_vec();
    if let Some((why, _)) = ending {
        r.outcome = pb::Outcome::of(why);
        r.message = match why {
            Outcome::TimedOut => format!("timed out after {} ms", a.timeout_ms),
            _ => "cancelled".into(),
        };
    }
    if let Err(why) = shuffle.finish(r.outcome() == pb::Outcome::Succeeded, &ctx.objects, &ctx.warden).await {
        r.set_outcome(pb::Outcome::Failed);
        r.message = why;
    }
    let succeeded = r.outcome() == pb::Outcome::Succeeded;
    let wanted = match a.outputs_when.parse().unwrap_or_default() {
        OutputsWhen::Always => true,
        OutputsWhen::Failure => !succeeded,
        OutputsWhen::Success => succeeded,
    };
    if wanted && !a.outputs.is_empty() && r.outcome() != pb::Outcome::Cancelled {
        let mut objects = ctx.objects.clone();
        if let Err(e) = crate::objects::upload_matching(&mut objects, dir, &a.outputs, &a.output_prefix).await {
            // The task's work is not where it should be: the attempt failed.
            r.set_outcome(pb::Outcome::Failed);
            r.message = e.to_string();
        }
    }
    for note in notes {
        r.message = if r.message.is_empty() { note } else { format!("{}; {note}", r.message) };
    }
    r
}

/// Stores a task's checkpoint; a failure is not held against the task (the next
/// save may do better), but said: the note for the attempt's record, if any.
async fn save_checkpoint(ck: Checkpoint, objects: crate::objects::Client, dir: std::path::PathBuf) -> Option<String> {
    let save = || {
        let (mut objects, ck, dir) = (objects.clone(), &ck, &dir);
        async move { ck.save(&mut objects, dir).await }
    };
    match with_patience(save).await {
        Ok(saved) => {
            if saved.stored {
                tracing::debug!(object = %ck.object, skipped = saved.skipped.len(), "checkpoint stored");
            }
            saved.note()
        }
        Err(why) => {
            tracing::warn!(object = %ck.object, %why, "checkpoint not stored");
            Some(format!("checkpoint not stored: {why}"))
        }
    }
}

/// The shortest time between two checkpoints of one task.
const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

async fn tick_opt(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(tick) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs `f` again while the coordinator cannot be reached, for up to
/// [`FETCH_PATIENCE`].
async fn with_patience<F, Fut, T>(mut f: F) -> Result<T, crate::objects::TransferError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::objects::TransferError>>,
{
    let (started, mut wait) = (Instant::now(), Duration::from_millis(250));
    loop {
        match f().await {
            Err(crate::objects::TransferError::Unreachable(_)) if started.elapsed() + wait < FETCH_PATIENCE => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Fetches a task's inputs into its directory; the error says which input failed.
async fn fetch_inputs(inputs: &[pb::TaskInput], dir: &Path, ctx: &RunContext) -> Result<(), String> {
    let objects = ctx.objects.clone();
    for input in inputs {
        let relative = Path::new(&input.path);
        if !crate::objects::is_inside(relative) {
            return Err(format!("input '{}': '{}' is not inside the task's directory", input.object, input.path));
        }
        // A coordinator restarting is waited for (up to FETCH_PATIENCE); a refusal is final.
        let fetch = || {
            let mut objects = objects.clone();
            let dest = dir.join(relative);
            async move { crate::objects::download(&mut objects, &input.object, &dest).await }
        };
        with_patience(fetch).await.map_err(|e| format!("input '{}' could not be fetched: {e}", input.object))?;
    }
    Ok(())
}

/// How long fetching an input waits for an unreachable coordinator.
const FETCH_PATIENCE: Duration = Duration::from_secs(60);

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
