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
//! each group is also appended to a journal, `<work_dir>/groups.log` (`+PGID` when
//! it starts, `-PGID` when it is gone), and an agent that starts on a work dir
//! kills the groups a previous agent left there before it registers (see
//! [`kill_leftovers`]). A journal, not a file per group: creating and deleting a
//! file per task was one of the largest costs in the agent's profile on ext4.
//!
//! Every task also carries [`RUN_VAR`], and a warden whose agent died kills the
//! group of any process that carries its run's id, so a task the agent spawned but
//! had not yet told it about dies too, and so does one that left its group.
//!
//! What this does not catch: a task process that leaves its process group on
//! purpose (`setsid`, `setpgid`) and clears its environment. Only a cgroup would
//! hold those, and the agent does not create cgroups.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many live groups the warden's table holds; more live tasks than this on one
/// agent are still killed on its next start, from the journal.
const TABLE: usize = 1 << 16;

/// The journal is rewritten with only the live groups once it is this long.
const JOURNAL_COMPACT_AT: u64 = 1 << 20;

/// The variable every task of an agent run carries, with the run's random id.
pub const RUN_VAR: &str = "CORRAL_AGENT_RUN";

/// The agent's side of its warden.
#[derive(Debug)]
pub struct Warden {
    /// This run's id, in [`RUN_VAR`] of every task it starts.
    run: String,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The pipe's write end; `None` while no warden runs.
    pipe: Option<OwnedFd>,
    pid: libc::pid_t,
    /// The live groups.
    live: HashSet<libc::pid_t>,
    journal: Journal,
    /// The run's id, for a warden started again.
    run: String,
}

impl Warden {
    /// Starts a warden for the tasks of an agent working in `work_dir` (after
    /// [`kill_leftovers`] on it: the journal starts empty).
    pub fn start(work_dir: &Path) -> io::Result<Warden> {
        std::fs::create_dir_all(work_dir)?;
        let journal = Journal::create(work_dir.join(JOURNAL))?;
        let run = corral_proto::credentials::random_hex(16);
        let (pipe, pid) = fork_warden(&run)?;
        let inner = Inner { pipe: Some(pipe), pid, live: HashSet::new(), journal, run: run.clone() };
        Ok(Warden { run, inner: Mutex::new(inner) })
    }

    /// The warden kills process group `pgid` if this agent dies before
    /// [`Warden::release`].
    pub fn watch(&self, pgid: libc::pid_t) {
        if pgid <= 0 {
            return;
        }
        // No leader start time is read (a /proc read per task): a recorded group
        // is killed by the next agent only if a member is still a task.
        let mut inner = self.lock();
        inner.journal.append(&format!("+{pgid}\n"));
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
        inner.journal.append(&format!("-{pgid}\n"));
        if inner.journal.len >= JOURNAL_COMPACT_AT {
            let Inner { journal, live, .. } = &mut *inner;
            journal.compact(live);
        }
    }

    /// Marks what `cmd` starts as this agent's: it carries [`RUN_VAR`] with this
    /// run's id from its first instruction, so if the agent dies before
    /// [`Warden::watch`] (the instant after the spawn), the warden still finds it
    /// and kills its group. A mark, not code run between fork and exec, so the
    /// standard library can spawn with `posix_spawn` (vfork) instead of copying
    /// the agent's memory map for every task.
    pub fn mark(&self, cmd: &mut tokio::process::Command) {
        cmd.env(RUN_VAR, &self.run);
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
        match fork_warden(&self.run) {
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
fn fork_warden(run: &str) -> io::Result<(OwnedFd, libc::pid_t)> {
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
    let mut scan = Scan {
        mark: format!("{RUN_VAR}={run}\0").into_bytes(),
        dents: vec![0; 32 << 10],
        environ: vec![0; 256 << 10],
        path: [0; 64],
    };
    // SAFETY: the child runs only async-signal-safe system calls on memory that was
    // allocated before the fork, and leaves with _exit.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe { warden_main(read.as_raw_fd(), &mut table, &mut buf, &mut scan) },
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

/// What the warden needs, allocated before the fork, to find the processes that
/// carry its run's mark.
struct Scan {
    /// `CORRAL_AGENT_RUN=<id>` and its NUL, as it appears in `/proc/PID/environ`.
    mark: Vec<u8>,
    dents: Vec<u8>,
    environ: Vec<u8>,
    path: [u8; 64],
}

/// The warden's whole life, in the forked child.
///
/// # Safety
/// Only for the child of `fork`: it uses nothing but system calls.
unsafe fn warden_main(read: libc::c_int, table: &mut [libc::pid_t], buf: &mut [u8; 4096], scan: &mut Scan) -> ! {
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
    // The agent is gone: its groups go, and so does anything that carries its
    // mark without being in the table (it died between a spawn and telling us).
    // A task spawned the instant before may not have its mark yet: look again.
    for &pgid in &table[..used] {
        if pgid > 0 {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    for pause_ms in [0, 50, 250] {
        let pause = libc::timespec { tv_sec: 0, tv_nsec: pause_ms * 1_000_000 };
        libc::nanosleep(&pause, std::ptr::null_mut());
        kill_marked(scan);
    }
    libc::_exit(0)
}

/// Kills the group of every process whose environment carries the run's mark.
///
/// # Safety
/// Only system calls, on the buffers of `scan`: fit for the warden.
unsafe fn kill_marked(scan: &mut Scan) {
    let proc_dir = libc::open(c"/proc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
    if proc_dir < 0 {
        return;
    }
    let own_group = libc::getpgrp();
    loop {
        let n = libc::syscall(libc::SYS_getdents64, proc_dir, scan.dents.as_mut_ptr(), scan.dents.len());
        if n <= 0 {
            break;
        }
        let mut at = 0usize;
        while at + 19 < n as usize {
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
            let reclen = u16::from_ne_bytes([scan.dents[at + 16], scan.dents[at + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name = &scan.dents[at + 19..(at + reclen).min(n as usize)];
            let digits = name.iter().take_while(|b| **b != 0).count();
            let pid = name[..digits].iter().try_fold(0 as libc::pid_t, |p, b| {
                b.is_ascii_digit().then(|| p.saturating_mul(10).saturating_add((b - b'0') as libc::pid_t))
            });
            if let Some(pid) = pid.filter(|p| *p > 1 && digits > 0) {
                if carries_mark(pid, scan) {
                    let group = libc::getpgid(pid);
                    if group > 1 && group != own_group {
                        libc::kill(-group, libc::SIGKILL);
                    } else {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            at += reclen;
        }
    }
    libc::close(proc_dir);
}

/// Whether `/proc/PID/environ` holds the run's mark as one whole variable.
///
/// # Safety
/// Only system calls, on the buffers of `scan`.
unsafe fn carries_mark(pid: libc::pid_t, scan: &mut Scan) -> bool {
    // "/proc/<pid>/environ\0", written by hand: no allocation, no formatting.
    let mut digits = [0u8; 12];
    let mut len = 0;
    let mut rest = pid;
    while rest > 0 && len < digits.len() {
        digits[len] = b'0' + (rest % 10) as u8;
        rest /= 10;
        len += 1;
    }
    let mut at = 0;
    for part in [&b"/proc/"[..], &[], &b"/environ\0"[..]] {
        if part.is_empty() {
            for i in (0..len).rev() {
                scan.path[at] = digits[i];
                at += 1;
            }
        } else {
            scan.path[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
    }
    let fd = libc::open(scan.path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return false;
    }
    let mut filled = 0;
    while filled < scan.environ.len() {
        let n = libc::read(fd, scan.environ[filled..].as_mut_ptr().cast(), scan.environ.len() - filled);
        if n <= 0 {
            break;
        }
        filled += n as usize;
    }
    libc::close(fd);
    let env = &scan.environ[..filled];
    let mark = &scan.mark[..];
    (0..env.len()).any(|i| (i == 0 || env[i - 1] == 0) && env[i..].starts_with(mark))
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
    let journal = work_dir.join(JOURNAL);
    let text = std::fs::read_to_string(&journal).unwrap_or_default();
    let mut killed = replay(&text).into_iter().filter(|pgid| kill_if_left(*pgid, "")).count();
    let _ = std::fs::remove_file(&journal);
    // A file per group, as agents before the journal kept them.
    let dir = work_dir.join("groups");
    let Ok(entries) = std::fs::read_dir(&dir) else { return killed };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pgid) = entry.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok()).filter(|p| *p > 0)
        else {
            continue;
        };
        let recorded = std::fs::read_to_string(&path).unwrap_or_default();
        if kill_if_left(pgid, recorded.trim()) {
            killed += 1;
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

/// Kills group `pgid` if it is a task group left running (see [`kill_leftovers`]);
/// returns whether it had processes to kill.
fn kill_if_left(pgid: libc::pid_t, started: &str) -> bool {
    let leader_matches = !started.is_empty() && leader_start_time(pgid).as_deref() == Some(started);
    // SAFETY: kill(2) has no memory effects.
    (leader_matches || members_are_tasks(pgid)) && unsafe { libc::kill(-pgid, libc::SIGKILL) } == 0
}

/// The journal's file name in the work dir.
const JOURNAL: &str = "groups.log";

/// The groups a journal says are live. A torn last line is skipped.
fn replay(text: &str) -> HashSet<libc::pid_t> {
    let mut live = HashSet::new();
    for line in text.lines() {
        if let Some(Ok(pgid)) = line.strip_prefix('+').map(str::parse::<libc::pid_t>) {
            if pgid > 0 {
                live.insert(pgid);
            }
        } else if let Some(Ok(pgid)) = line.strip_prefix('-').map(str::parse::<libc::pid_t>) {
            live.remove(&pgid);
        }
    }
    live
}

/// The append-only record of live groups.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
}

impl Journal {
    fn create(path: PathBuf) -> io::Result<Journal> {
        let file = std::fs::File::create(&path)?;
        Ok(Journal { path, file, len: 0 })
    }

    fn append(&mut self, line: &str) {
        use std::io::Write;
        match self.file.write_all(line.as_bytes()) {
            Ok(()) => self.len += line.len() as u64,
            Err(e) => tracing::debug!(error = %e, "could not record a task's process group"),
        }
    }

    /// Rewrites the journal with only the `live` groups (a new file renamed over
    /// the old, so a crash leaves one or the other whole).
    fn compact(&mut self, live: &HashSet<libc::pid_t>) {
        let text: String = live.iter().map(|pgid| format!("+{pgid}\n")).collect();
        let fresh = self.path.with_extension("log.new");
        let rewritten = std::fs::write(&fresh, &text).and_then(|()| std::fs::rename(&fresh, &self.path));
        let reopened = rewritten.and_then(|()| std::fs::OpenOptions::new().append(true).open(&self.path));
        match reopened {
            Ok(file) => {
                self.file = file;
                self.len = text.len() as u64;
            }
            Err(e) => tracing::warn!(error = %e, "could not compact the task group journal"),
        }
    }
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

/// Sends `sig` to process group `pgid` (nothing for 0 or a negative id, which
/// would reach other processes).
pub(crate) fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    if pgid > 0 {
        // SAFETY: kill(2) has no memory effects; a group that is gone yields ESRCH.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

#[cfg(test)]
mod tests;
