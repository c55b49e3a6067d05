//! The agent's side of a multi-node task's launches ([`crate::rsh`]).
//!
//! **Opening.** A launcher of one of this node's gang ranks connects to the
//! launch socket (`WORK_DIR/launch.sock`) and says its attempt's secret, a host
//! and a command. The secret names the attempt (a process of no running gang
//! attempt here has none); the host must be one of that attempt's nodes (its id,
//! as the hostfile names it, or its address). The launch goes to the coordinator,
//! which lets it through only between that attempt's nodes while it runs.
//!
//! **Running.** A launch the coordinator brings here runs `sh -c COMMAND` in the
//! attempt's process group, directory and environment, so it is counted and
//! killed with the attempt and never outlives it; its stdin comes from the
//! launcher, its stdout, stderr and exit go back.
//!
//! Queues are bounded: a launch whose other side does not keep up is ended with an
//! error, never buffered without limit.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_proto::v1 as pb;
use corral_types::ids::AttemptRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Notify};

use crate::attempts::{attempt_of, task_ref};
use crate::rsh::kind;
use crate::runner::Lane;

/// The coordinator's launch ids have this bit; the ones this agent opens do not.
const THEIRS: u64 = 1 << 63;
/// Frames waiting for one launch's other end.
const QUEUE: usize = 64;
/// How long a launch waits for its attempt to start here (its assignment may
/// come a moment after the rank that launches started).
const WAIT_FOR_ATTEMPT: Duration = Duration::from_secs(10);
/// The most read from a launched process's pipe at once.
const CHUNK: usize = 64 << 10;

/// A gang rank running here: what a launch needs to join it.
#[derive(Debug, Clone)]
pub struct Rank {
    /// The secret its processes prove they belong to it with.
    pub token: String,
    pub gang: pb::Gang,
    /// Its process group.
    pub pgid: i32,
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
    /// The rank's own stdout and stderr (where the launches that ask for it
    /// write: the coordination command's).
    pub output: Option<Arc<[std::io::PipeWriter; 2]>>,
}

#[derive(Default)]
struct Inner {
    ranks: HashMap<AttemptRef, Rank>,
    /// Launches opened here: what the coordinator sends for each, to its launcher.
    opened: HashMap<u64, mpsc::Sender<pb::LaunchFrame>>,
    /// Launches running here: stdin for each (`None`: its end).
    running: HashMap<u64, mpsc::Sender<Option<Vec<u8>>>>,
    next: u64,
}

pub struct Launches {
    socket: PathBuf,
    lane: watch::Receiver<Lane>,
    inner: Mutex<Inner>,
    registered: Notify,
}

/// A fresh secret: 32 random bytes from the kernel, in hex.
pub fn secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    // SAFETY: getrandom(2) writes at most `len` bytes into the buffer given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl std::fmt::Debug for Launches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launches").field("socket", &self.socket).finish_non_exhaustive()
    }
}

impl Launches {
    /// Listens on `socket` (only this user may connect) and serves launchers.
    pub fn start(socket: PathBuf, lane: watch::Receiver<Lane>) -> std::io::Result<Arc<Launches>> {
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let launches =
            Arc::new(Launches { socket, lane, inner: Mutex::new(Inner::default()), registered: Notify::new() });
        let serving = launches.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let launches = serving.clone();
                tokio::spawn(async move { launches.serve(stream).await });
            }
        });
        Ok(launches)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A gang rank started here.
    pub fn register(&self, attempt: AttemptRef, rank: Rank) {
        self.inner().ranks.insert(attempt, rank);
        self.registered.notify_waiters();
    }

    /// The rank's own process exists: launches here join its process group.
    pub fn set_group(&self, attempt: AttemptRef, pgid: i32) {
        if let Some(rank) = self.inner().ranks.get_mut(&attempt) {
            rank.pgid = pgid;
        }
    }

    /// A gang rank ended here: its secret opens nothing more.
    pub fn unregister(&self, attempt: AttemptRef) {
        self.inner().ranks.remove(&attempt);
    }

    /// Sends a frame to the coordinator; false without a stream.
    async fn send(&self, frame: pb::LaunchFrame) -> bool {
        let tx = self.lane.borrow().tx.clone();
        match tx {
            Some(tx) => tx.send(pb::AgentMessage { launches: vec![frame], ..Default::default() }).await.is_ok(),
            None => false,
        }
    }

    /// Frames from the coordinator.
    pub fn on_frames(self: &Arc<Self>, frames: Vec<pb::LaunchFrame>) {
        for frame in frames {
            if frame.id & THEIRS == 0 {
                // For a launcher here: its process's output, or its end.
                let tx = self.inner().opened.get(&frame.id).cloned();
                if let Some(tx) = tx {
                    let id = frame.id;
                    if tx.try_send(frame).is_err() {
                        self.inner().opened.remove(&id);
                        let launches = self.clone();
                        tokio::spawn(async move {
                            launches.send(pb::LaunchFrame { id, eof: true, ..Default::default() }).await;
                        });
                    }
                }
            } else if let Some(open) = frame.open {
                // Its stdin queues from now on, while the process is started.
                let (tx, input) = mpsc::channel(QUEUE);
                self.inner().running.insert(frame.id, tx);
                let launches = self.clone();
                tokio::spawn(async move { launches.run(frame.id, open, frame.data, input).await });
            } else {
                let tx = self.inner().running.get(&frame.id).cloned();
                if let Some(tx) = tx {
                    let input = if frame.data.is_empty() && frame.eof { None } else { Some(frame.data) };
                    let eof = frame.eof;
                    if tx.try_send(input).is_err() {
                        tracing::warn!(
                            launch = frame.id,
                            "a launched process does not read its stdin; ending its input"
                        );
                        self.inner().running.remove(&frame.id);
                    } else if eof {
                        let _ = tx.try_send(None);
                    }
                }
            }
        }
    }

    /// One launcher's connection: its hello, then its stdin out and what comes back.
    async fn serve(self: Arc<Self>, mut stream: UnixStream) {
        let (attempt, rank, command, own_output) = match self.hello(&mut stream).await {
            Ok(hello) => hello,
            Err(why) => {
                let _ = write_frame(&mut stream, kind::ERROR, why.as_bytes()).await;
                return;
            }
        };
        let (tx, mut from_coordinator) = mpsc::channel(QUEUE);
        let id = {
            let mut inner = self.inner();
            inner.next += 1;
            let id = inner.next;
            inner.opened.insert(id, tx);
            id
        };
        let open = pb::LaunchOpen { task: Some(task_ref(attempt)), rank, command, own_output };
        if !self.send(pb::LaunchFrame { id, open: Some(open), ..Default::default() }).await {
            self.inner().opened.remove(&id);
            let _ = write_frame(&mut stream, kind::ERROR, b"the coordinator cannot be reached").await;
            return;
        }
        let (mut reader, mut writer) = stream.into_split();
        let mut stdin_open = true;
        loop {
            tokio::select! {
                frame = read_frame(&mut reader), if stdin_open => match frame {
                    Ok(Some((kind::STDIN, data))) => {
                        self.send(pb::LaunchFrame { id, data, ..Default::default() }).await;
                    }
                    Ok(Some((kind::STDIN_EOF, _))) => {
                        stdin_open = false;
                        self.send(pb::LaunchFrame { id, eof: true, ..Default::default() }).await;
                    }
                    Ok(Some(_)) => {}
                    // The launcher is gone (killed with its attempt, most likely).
                    Ok(None) | Err(_) => {
                        self.send(pb::LaunchFrame { id, eof: true, ..Default::default() }).await;
                        break;
                    }
                },
                frame = from_coordinator.recv() => {
                    let Some(frame) = frame else {
                        let _ = write_frame(&mut writer, kind::ERROR, b"the launch fell too far behind").await;
                        break;
                    };
                    if !frame.data.is_empty() {
                        let k = if frame.stderr { kind::STDERR } else { kind::STDOUT };
                        if write_frame(&mut writer, k, &frame.data).await.is_err() {
                            break;
                        }
                    }
                    if frame.exited {
                        let _ = match frame.error.is_empty() {
                            true => write_frame(&mut writer, kind::EXIT, &frame.exit_code.to_be_bytes()).await,
                            false => write_frame(&mut writer, kind::ERROR, frame.error.as_bytes()).await,
                        };
                        break;
                    }
                }
            }
        }
        self.inner().opened.remove(&id);
    }

    /// Reads and checks a launcher's hello: its attempt, the rank it names, the
    /// command, and whether its output is that rank's own.
    async fn hello(&self, stream: &mut UnixStream) -> Result<(AttemptRef, u32, String, bool), String> {
        let mut texts = Vec::new();
        let own_output = match read_frame(stream).await {
            Ok(Some((kind::HELLO, flags))) => flags == crate::rsh::OWN_OUTPUT.as_bytes(),
            _ => return Err("expected a hello".into()),
        };
        for _ in 0..3 {
            match read_frame(stream).await {
                Ok(Some((kind::TEXT, data))) => texts.push(String::from_utf8_lossy(&data).into_owned()),
                _ => return Err("a hello is a secret, a host and a command".into()),
            }
        }
        let (token, host, command) = (&texts[0], &texts[1], texts[2].clone());
        let inner = self.inner();
        let (attempt, rank) = inner
            .ranks
            .iter()
            .find(|(_, r)| same(&r.token, token))
            .ok_or("this process belongs to no multi-node attempt running on this node")?;
        let gang = &rank.gang;
        let by_id = gang.nodes.iter().position(|n| n == host);
        let by_address = || {
            let mut at = gang.hosts.iter().enumerate().filter(|(_, h)| *h == host).map(|(i, _)| i);
            match (at.next(), at.next()) {
                (Some(i), None) => Some(i),
                _ => None,
            }
        };
        let to = by_id
            .or_else(by_address)
            .ok_or_else(|| format!("'{host}' is not a node of this attempt (its nodes: {})", gang.nodes.join(", ")))?;
        Ok((*attempt, to as u32, command, own_output))
    }

    /// Runs a launch here (coordinator's `id`), in its attempt's process group.
    async fn run(
        self: Arc<Self>,
        id: u64,
        open: pb::LaunchOpen,
        first_input: Vec<u8>,
        mut input: mpsc::Receiver<Option<Vec<u8>>>,
    ) {
        let attempt = open.task.as_ref().map(attempt_of);
        let rank = match attempt {
            Some(attempt) => self.wait_for(attempt).await,
            None => None,
        };
        let Some(rank) = rank else {
            self.inner().running.remove(&id);
            let error = "that attempt does not run on this node".to_string();
            self.send(pb::LaunchFrame { id, exited: true, exit_code: 255, error, ..Default::default() }).await;
            return;
        };
        // Each launched daemon keeps its session files apart: OpenMPI's daemons on
        // one host (agents side by side) race for one directory under /tmp. (Not
        // set for the rank's own command: mpirun would pass it on to them all.)
        let own = rank.dir.join("launches").join((id & !THEIRS).to_string());
        if let Err(e) = std::fs::create_dir_all(&own) {
            self.inner().running.remove(&id);
            let error = format!("cannot make {}: {e}", own.display());
            self.send(pb::LaunchFrame { id, exited: true, exit_code: 255, error, ..Default::default() }).await;
            return;
        }
        let mut cmd = tokio::process::Command::new("sh");
        for var in crate::AGENT_SECRETS {
            cmd.env_remove(var);
        }
        cmd.arg("-c")
            .arg(&open.command)
            .envs(&rank.env)
            .env("OMPI_MCA_orte_tmpdir_base", &own)
            .current_dir(&rank.dir)
            .stdin(std::process::Stdio::piped())
            .process_group(rank.pgid)
            .kill_on_drop(false);
        // Its output is the rank's own (kept and shipped by the rank's runner, within
        // its `--max-output`), or goes back to the launcher.
        let mut spawn = || {
            match (&rank.output, open.own_output) {
                (Some(output), true) => {
                    let [out, err] = &**output;
                    cmd.stdout(out.try_clone()?).stderr(err.try_clone()?)
                }
                _ => cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()),
            };
            cmd.spawn()
        };
        let mut child = match spawn() {
            Ok(child) => child,
            Err(e) => {
                self.inner().running.remove(&id);
                let error = format!("cannot run the command: {e}");
                self.send(pb::LaunchFrame { id, exited: true, exit_code: 255, error, ..Default::default() }).await;
                return;
            }
        };
        let mut stdin = child.stdin.take();
        if !first_input.is_empty() {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&first_input).await;
            }
        }
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let (mut out_buf, mut err_buf) = (vec![0; CHUNK], vec![0; CHUNK]);
        // Once it exits, what it wrote is read to the end, or for a moment if
        // something it left behind holds its pipes.
        let mut exited: Option<(std::io::Result<std::process::ExitStatus>, tokio::time::Instant)> = None;
        let status = loop {
            if exited.is_some() && out.is_none() && err.is_none() {
                break exited.map(|(s, _)| s);
            }
            let drain_until = exited.as_ref().map(|(_, at)| *at);
            tokio::select! {
                n = read_some(&mut out, &mut out_buf) => {
                    match n {
                        Some(n) => { self.send(pb::LaunchFrame { id, data: out_buf[..n].to_vec(), ..Default::default() }).await; }
                        None => out = None,
                    }
                }
                n = read_some(&mut err, &mut err_buf) => {
                    match n {
                        Some(n) => { self.send(pb::LaunchFrame { id, data: err_buf[..n].to_vec(), stderr: true, ..Default::default() }).await; }
                        None => err = None,
                    }
                }
                data = input.recv(), if stdin.is_some() => match data.flatten() {
                    Some(data) => {
                        if let Some(s) = stdin.as_mut() {
                            if s.write_all(&data).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    None => stdin = None,
                },
                status = child.wait(), if exited.is_none() => {
                    exited = Some((status, tokio::time::Instant::now() + Duration::from_secs(1)));
                }
                _ = sleep_until(drain_until) => break exited.map(|(s, _)| s),
            }
        };
        self.inner().running.remove(&id);
        let exit_code = match status {
            Some(Ok(s)) => s.code().or(s.signal().map(|sig| 128 + sig)).unwrap_or(255),
            _ => 255,
        };
        self.send(pb::LaunchFrame { id, exited: true, exit_code, ..Default::default() }).await;
    }

    /// The rank of `attempt` here, once it has started (waiting a while for it).
    async fn wait_for(&self, attempt: AttemptRef) -> Option<Rank> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_ATTEMPT;
        loop {
            let notified = self.registered.notified();
            if let Some(rank) = self.inner().ranks.get(&attempt).cloned() {
                return Some(rank);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads what a pipe has; `None` at its end (or with no pipe: never resolves).
async fn read_some(pipe: &mut Option<impl AsyncRead + Unpin>, buf: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

async fn write_frame(w: &mut (impl AsyncWrite + Unpin), kind: u8, data: &[u8]) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(5 + data.len());
    crate::rsh::write_frame(&mut framed, kind, data)?;
    w.write_all(&framed).await
}

async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = crate::rsh::frame_head(&head)?;
    let mut data = vec![0; len];
    r.read_exact(&mut data).await?;
    Ok(Some((kind, data)))
}
