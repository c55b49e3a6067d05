//! Tasks die with their agent, however the agent dies.
//!
//! Every task runs in its own process group. When the agent starts it forks a
//! *warden*: a tiny process that holds the read end of a pipe and a table of the
//! agent's live task groups, which the agent keeps current through the pipe. The
//! kernel closes the pipe's write end when the agent dies — SIGKILL and the OOM
//! killer included — and on that end of file the warden SIGKILLs every group in its
//! table and exits. Nothing polls: the warden sleeps in `read(2)` until the agent is
//! gone or tells it something.
//!
//! A warden can be killed too (a whole container or session is killed at once), so
//! each live group also has a file in `<work_dir>/groups/`, and an agent that starts
//! on a work dir kills the groups a previous agent left there before it registers
//! (see [`kill_leftovers`]).
//!
//! What this does not catch: a task process that leaves its process group on
//! purpose (`setsid`, `setpgid`), as a daemon does. Only a cgroup would hold those,
//! and the agent does not create cgroups.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many live groups the warden's table holds; more live tasks than this on one
/// agent are still killed on its next start, from their files.
const TABLE: usize = 1 << 16;

/// The agent's side of its warden.
#[derive(Debug)]
pub struct Warden {
    groups_dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The pipe's write end; `None` while no warden runs.
    pipe: Option<OwnedFd>,
    pid: libc::pid_t,
    live: HashSet<libc::pid_t>,
}

impl Warden {
    /// Starts a warden for the tasks of an agent working in `work_dir`.
    pub fn start(work_dir: &Path) -> io::Result<Warden> {
        let groups_dir = work_dir.join("groups");
        std::fs::create_dir_all(&groups_dir)?;
        let (pipe, pid) = fork_warden()?;
        Ok(Warden { groups_dir, inner: Mutex::new(Inner { pipe: Some(pipe), pid, live: HashSet::new() }) })
    }

    /// The warden kills process group `pgid` if this agent dies before
    /// [`Warden::release`].
    pub fn watch(&self, pgid: libc::pid_t) {
        if pgid <= 0 {
            return;
        }
        let record = leader_start_time(pgid).unwrap_or_default();
        if let Err(e) = std::fs::write(self.groups_dir.join(pgid.to_string()), record) {
            tracing::debug!(pgid, error = %e, "could not record a task's process group");
        }
        let mut inner = self.lock();
        inner.live.insert(pgid);
        inner.tell(pgid);
    }

    /// The group is dead (the agent killed it): the warden forgets it, so the id
    /// may be used again by anyone.
    pub fn release(&self, pgid: libc::pid_t) {
        if pgid <= 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.live.remove(&pgid) {
            inner.tell(-pgid);
        }
        drop(inner);
        let _ = std::fs::remove_file(self.groups_dir.join(pgid.to_string()));
    }

    /// Makes `cmd`'s child register its own process group with the warden (and
    /// ask for SIGKILL if the agent's thread dies) between fork and exec, before
    /// it can run a thing: an agent killed the instant after the fork still has
    /// its task killed. [`Warden::watch`] follows once the spawn returns.
    pub fn register_at_start(&self, cmd: &mut tokio::process::Command) {
        let Some(fd) = self.lock().pipe.as_ref().map(|p| p.as_raw_fd()) else { return };
        // SAFETY: the closure runs in the child between fork and exec and makes
        // only async-signal-safe system calls on values copied into it.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                let record = libc::getpid().to_ne_bytes();
                libc::write(fd, record.as_ptr().cast(), record.len());
                Ok(())
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Sends one record; if the warden is gone, starts another and tells it every
    /// live group.
    fn tell(&mut self, record: libc::pid_t) {
        if let Some(pipe) = &self.pipe {
            match write_record(pipe, record) {
                Ok(()) => return,
                // Only a warden that is gone is replaced: dropping the pipe of a
                // live one would make it kill every running task.
                Err(e) if e.raw_os_error() != Some(libc::EPIPE) => {
                    tracing::warn!(error = %e, "could not tell the task warden about a task group");
                    return;
                }
                Err(_) => {}
            }
        }
        if let Some(old) = self.pipe.take() {
            drop(old);
            // SAFETY: reaps our own child if it has exited; no memory effects.
            unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
        tracing::warn!("the task warden is gone; starting another");
        match fork_warden() {
            Ok((pipe, pid)) => {
                self.pid = pid;
                if self.live.iter().all(|g| write_record(&pipe, *g).is_ok()) {
                    self.pipe = Some(pipe);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a task warden: tasks would outlive a crash of this agent")
            }
        }
    }
}

/// Writes one record, waiting out a full pipe (a warden that is slow to read) for
/// up to a second.
fn write_record(pipe: &OwnedFd, record: libc::pid_t) -> io::Result<()> {
    let bytes = record.to_ne_bytes();
    for _ in 0..1000 {
        // SAFETY: writes 4 bytes from a live buffer to a descriptor we own. A pipe
        // write of at most PIPE_BUF bytes is atomic: the warden never sees half a record.
        let n = unsafe { libc::write(pipe.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n == bytes.len() as isize {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
            return Err(e);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Forks the warden; returns the pipe's write end and its pid.
fn fork_warden() -> io::Result<(OwnedFd, libc::pid_t)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array. Close-on-exec keeps the write end
    // out of every task: a task holding it would keep the warden from ever seeing
    // the agent die.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: each descriptor is ours alone from here on.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Allocated before the fork: the child of a multithreaded process must not
    // allocate (another thread may have held the allocator's lock).
    let mut table = vec![0 as libc::pid_t; TABLE];
    let mut buf = [0u8; 4096];
    // SAFETY: the child runs only async-signal-safe system calls on memory that was
    // allocated before the fork, and leaves with _exit.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe { warden_main(read.as_raw_fd(), &mut table, &mut buf) },
        pid => {
            drop(read);
            // A full pipe (a stopped warden) must not stall the agent.
            // SAFETY: fcntl on a descriptor we own.
            unsafe {
                let flags = libc::fcntl(write.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(write.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
            Ok((write, pid))
        }
    }
}

/// The warden's whole life, in the forked child.
///
/// # Safety
/// Only for the child of `fork`: it uses nothing but system calls.
unsafe fn warden_main(read: libc::c_int, table: &mut [libc::pid_t], buf: &mut [u8; 4096]) -> ! {
    // Its own session, so a signal to the agent's process group does not reach it,
    // and no signal the agent handles either: only the pipe ends it.
    libc::setsid();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE, libc::SIGUSR1, libc::SIGUSR2] {
        libc::signal(sig, libc::SIG_IGN);
    }
    libc::prctl(libc::PR_SET_NAME, c"corral-warden".as_ptr() as libc::c_ulong, 0, 0, 0);
    // Hold nothing of the agent's: not its sockets, nor the pipes a test or a
    // supervisor reads its output from (they would never see their end of file).
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    if null >= 0 {
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
    }
    close_all_but(read, null);
    let mut used = 0usize;
    loop {
        let n = libc::read(read, buf.as_mut_ptr().cast(), buf.len());
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        // Every record is written whole and atomically, so reads hold whole ones.
        for record in buf[..n as usize].chunks_exact(4) {
            let record = libc::pid_t::from_ne_bytes([record[0], record[1], record[2], record[3]]);
            if record > 0 {
                // A task registers itself before it runs, and the agent again.
                if table[..used].contains(&record) {
                    continue;
                }
                if let Some(slot) = table[..used].iter_mut().find(|s| **s == 0) {
                    *slot = record;
                } else if used < table.len() {
                    table[used] = record;
                    used += 1;
                }
            } else if let Some(slot) = table[..used].iter_mut().find(|s| **s == -record) {
                *slot = 0;
            }
        }
    }
    // The agent is gone.
    for &pgid in &table[..used] {
        if pgid > 0 {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    libc::_exit(0)
}

unsafe fn close_all_but(keep: libc::c_int, null: libc::c_int) {
    let keep_low = keep.min(null.max(2));
    let keep_high = keep.max(null.max(2));
    let ranges = [(3, keep_low - 1), (keep_low + 1, keep_high - 1), (keep_high + 1, libc::c_int::MAX)];
    for (first, last) in ranges {
        if first > last {
            continue;
        }
        if libc::syscall(libc::SYS_close_range, first as libc::c_uint, last as libc::c_uint, 0) != 0 {
            for fd in first..last.min(65_536) {
                if fd != keep && fd != null {
                    libc::close(fd);
                }
            }
        }
    }
}

/// A process's start time (field 22 of `/proc/PID/stat`), which tells a group's
/// leader apart from a later process given the same id.
fn leader_start_time(pid: libc::pid_t) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// The process group of a process (field 5 of `/proc/PID/stat`).
fn group_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Kills the task groups an earlier agent on `work_dir` left running, and forgets
/// them; returns how many groups still had processes.
///
/// A group is killed only if its leader is the very process that was recorded
/// (same start time), or, once the leader is gone, if a member still carries the
/// `CORRAL_JOB_ID` every task starts with: a group id can be taken again only
/// after the group has emptied, so a live member with it is a leftover.
pub fn kill_leftovers(work_dir: &Path) -> usize {
    let dir = work_dir.join("groups");
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pgid) = entry.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok()).filter(|p| *p > 0)
        else {
            continue;
        };
        let recorded = std::fs::read_to_string(&path).unwrap_or_default();
        let leader_matches = !recorded.is_empty() && leader_start_time(pgid).as_deref() == Some(recorded.trim());
        if leader_matches || members_are_tasks(pgid) {
            // SAFETY: kill(2) has no memory effects.
            if unsafe { libc::kill(-pgid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

fn members_are_tasks(pgid: libc::pid_t) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok()))
        .filter(|pid| group_of(*pid) == Some(pgid))
        .any(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var.starts_with(b"CORRAL_JOB_ID=")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn alive(pid: libc::pid_t) -> bool {
        // A zombie is dead for our purposes.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
    }

    fn spawn_group() -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sh")
            .args(["-c", "sleep 300 & sleep 300 & wait"])
            .env("CORRAL_JOB_ID", "1")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_recorded_group_left_behind_is_killed_by_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("groups")).unwrap();
        let mut child = spawn_group();
        let pgid = child.id() as libc::pid_t;
        std::fs::write(dir.path().join("groups").join(pgid.to_string()), leader_start_time(pgid).unwrap()).unwrap();
        // A record of a group that no longer exists is only forgotten.
        std::fs::write(dir.path().join("groups").join("999999"), "1").unwrap();
        assert_eq!(kill_leftovers(dir.path()), 1);
        child.wait().unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("groups")).unwrap().count(), 0);
    }

    #[test]
    fn a_group_whose_leader_was_replaced_by_a_stranger_is_spared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("groups")).unwrap();
        let mut stranger = std::process::Command::new("sleep").arg("300").spawn().unwrap();
        let pid = stranger.id() as libc::pid_t;
        // Recorded with another start time, and not a group of tasks.
        std::fs::write(dir.path().join("groups").join(pid.to_string()), "1").unwrap();
        assert_eq!(kill_leftovers(dir.path()), 0);
        assert!(alive(pid));
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }

    /// Every live process of group `pgid`.
    fn members(pgid: libc::pid_t) -> Vec<libc::pid_t> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok()))
            .filter(|pid| group_of(*pid) == Some(pgid) && alive(*pid))
            .collect()
    }

    #[test]
    fn the_warden_kills_watched_groups_when_its_agent_dies() {
        use std::io::BufRead;
        // The "agent" is this test binary running the test below: it starts a
        // warden and a task group of three processes, and is then SIGKILLed.
        let dir = tempfile::tempdir().unwrap();
        let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "warden::tests::agent_for_the_warden_test", "--nocapture", "--include-ignored"])
            .env("WARDEN_TEST_DIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(agent.stdout.take().unwrap()).lines().map_while(Result::ok);
        let mut said = |key: &str| -> libc::pid_t {
            lines
                .find_map(|l| l.strip_prefix(key).map(|p| p.trim().parse().unwrap()))
                .expect("the agent never said its task groups")
        };
        let unwatched = said("UNWATCHED=");
        let pgid = said("PGID=");
        let deadline = Instant::now() + Duration::from_secs(5);
        while members(pgid).len() < 3 || members(unwatched).len() < 3 {
            assert!(Instant::now() < deadline, "the task group never had its three processes");
            std::thread::sleep(Duration::from_millis(10));
        }
        agent.kill().unwrap();
        agent.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !members(pgid).is_empty() || !members(unwatched).is_empty() {
            let left = (members(pgid), members(unwatched));
            assert!(Instant::now() < deadline, "task processes outlived their agent by 5 s: {left:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The other half of the test above; does nothing when run by itself. Its
    /// children are never waited for: it is killed, and they with it.
    #[test]
    #[ignore]
    #[allow(clippy::zombie_processes)]
    fn agent_for_the_warden_test() {
        let Some(dir) = std::env::var_os("WARDEN_TEST_DIR") else { return };
        let warden = Warden::start(Path::new(&dir)).unwrap();
        let child = spawn_group();
        let pgid = child.id() as libc::pid_t;
        warden.watch(pgid);
        // A second group registers only itself, from inside the fork: as if the
        // agent died before it could.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let unwatched = rt.block_on(async {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.args(["-c", "sleep 300 & sleep 300 & wait"]).process_group(0);
            warden.register_at_start(&mut cmd);
            cmd.spawn().unwrap().id().unwrap()
        });
        println!("UNWATCHED={unwatched}");
        println!("PGID={pgid}");
        std::thread::sleep(Duration::from_secs(60));
    }
}
