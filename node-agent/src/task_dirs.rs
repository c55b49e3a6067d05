//! Task directories, recycled. Each attempt runs in a directory of its own with its
//! `stdout.txt` and `stderr.txt`; making and deleting those three inodes per task
//! was one of the largest costs in the agent's profile on ext4 (its inode
//! allocator slows down as recently deleted inodes pile up). A finished attempt's directory that holds
//! nothing but its two output files, as it made them, is emptied and kept as a
//! spare, and the next attempt's directory is a spare renamed: no inode is
//! allocated or freed. Anything else (a file the task left, a link, a changed mode)
//! is removed as before, so no task ever starts with another's files.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The output files of a task directory, the only entries a reusable one holds.
pub const OUTPUT_FILES: [&str; 2] = ["stdout.txt", "stderr.txt"];

/// How many emptied directories are kept for the next attempts.
const MAX_SPARES: usize = 64;

/// The modes task directories and their output files are made with (before the
/// umask): the defaults of `mkdir` and `open`.
const DIR_MODE: u32 = 0o777;
const FILE_MODE: u32 = 0o666;

const SPARE_PREFIX: &str = ".spare-";

/// The agent's task directories under `<work_dir>/tasks`.
#[derive(Debug)]
pub struct TaskDirs {
    root: PathBuf,
    spares: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
}

impl TaskDirs {
    /// Spares an earlier agent left in `root` are removed (only this agent's own
    /// are known to be empty), and so are checkpoint archives it was packing.
    pub fn new(root: PathBuf) -> TaskDirs {
        if let Ok(entries) = fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(SPARE_PREFIX) {
                    let _ = fs::remove_dir_all(entry.path());
                } else if name.ends_with(crate::checkpoint::SCRATCH_SUFFIX) {
                    let _ = fs::remove_file(entry.path());
                } else if name.strip_suffix(".d").is_some_and(|n| n.ends_with(crate::checkpoint::SCRATCH_SUFFIX)) {
                    // Where an archive was being unpacked.
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        TaskDirs { root, spares: Mutex::new(Vec::new()), next: AtomicU64::new(0) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes `dir` an empty task directory (its output files may already be
    /// there, empty): a spare renamed, or a new directory.
    pub fn prepare(&self, dir: &Path) -> std::io::Result<()> {
        while let Some(spare) = self.lock().pop() {
            if fs::rename(&spare, dir).is_ok() {
                return Ok(());
            }
            let _ = fs::remove_dir_all(&spare);
        }
        fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
    }

    /// Done with `dir`: kept as a spare if it holds only its output files, as
    /// they were made, else removed with all it holds.
    pub fn retire(&self, dir: &Path) {
        if self.lock().len() < MAX_SPARES && reusable(dir) {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let spare = self.root.join(format!("{SPARE_PREFIX}{}-{n}", std::process::id()));
            if fs::rename(dir, &spare).is_ok() {
                self.lock().push(spare);
                return;
            }
        }
        remove(dir);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.spares.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `dir` is a real directory with its mode unchanged and nothing in it
/// but its two output files, each a plain file with no other name, which it
/// empties. A task runs as the agent's user and may have replaced any of it.
fn reusable(dir: &Path) -> bool {
    let Ok(meta) = fs::symlink_metadata(dir) else { return false };
    if !meta.is_dir() || meta.permissions().mode() & 0o7777 != DIR_MODE & !umask() {
        return false;
    }
    let Ok(entries) = fs::read_dir(dir) else { return false };
    let mut seen = 0;
    for entry in entries {
        let Ok(entry) = entry else { return false };
        if seen == OUTPUT_FILES.len() || !OUTPUT_FILES.iter().any(|f| entry.file_name() == *f) {
            return false;
        }
        seen += 1;
        // Opened without following a link; a hard link to a file elsewhere has
        // two names, and emptying it would empty that file.
        let opened = fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(entry.path());
        let Ok(file) = opened else { return false };
        let Ok(meta) = file.metadata() else { return false };
        if !meta.is_file() || meta.nlink() != 1 || meta.mode() & 0o7777 != FILE_MODE & !umask() {
            return false;
        }
        if meta.len() > 0 && file.set_len(0).is_err() {
            return false;
        }
    }
    seen == OUTPUT_FILES.len()
}

/// Removes a task directory and all it holds; the common case (two output files)
/// in three calls, not a recursive walk.
pub fn remove(dir: &Path) {
    for file in OUTPUT_FILES {
        let _ = fs::remove_file(dir.join(file));
    }
    if fs::remove_dir(dir).is_ok() {
        return;
    }
    if let Err(e) = fs::remove_dir_all(dir) {
        tracing::debug!(dir = %dir.display(), error = %e, "could not remove a task directory");
    }
}

/// The process's umask, read once from /proc (setting it, the only other way to
/// read it, would race with files other threads make).
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"));
        line.and_then(|m| u32::from_str_radix(m.trim(), 8).ok()).unwrap_or(0o022)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(dirs: &TaskDirs, name: &str, out: &str) -> PathBuf {
        let dir = dirs.root().join(name);
        dirs.prepare(&dir).unwrap();
        for (file, text) in OUTPUT_FILES.iter().zip([out, ""]) {
            fs::write(dir.join(file), text).unwrap();
        }
        dir
    }

    #[test]
    fn a_clean_directory_is_reused_empty_and_anything_else_is_removed() {
        let root = tempfile::tempdir().unwrap();
        let dirs = TaskDirs::new(root.path().to_path_buf());
        let first = finished(&dirs, "1.0.1", "secret output\n");
        let ino = fs::metadata(&first).unwrap().ino();
        dirs.retire(&first);
        assert!(!first.exists());
        let second = root.path().join("1.1.1");
        dirs.prepare(&second).unwrap();
        assert_eq!(fs::metadata(&second).unwrap().ino(), ino, "the spare was renamed, not made anew");
        for file in OUTPUT_FILES {
            assert_eq!(fs::read(second.join(file)).unwrap(), b"", "{file} starts empty");
        }

        // A file the task left, a link in place of an output, a hard link to a
        // file elsewhere, a changed mode: removed, never reused.
        let outside = root.path().join("outside.txt");
        fs::write(&outside, "keep me").unwrap();
        let leftovers: [&dyn Fn(&Path); 4] = [
            &|d| fs::write(d.join("model.bin"), "x").unwrap(),
            &|d| {
                fs::remove_file(d.join("stdout.txt")).unwrap();
                std::os::unix::fs::symlink(&outside, d.join("stdout.txt")).unwrap();
            },
            &|d| {
                fs::remove_file(d.join("stdout.txt")).unwrap();
                fs::hard_link(&outside, d.join("stdout.txt")).unwrap();
            },
            &|d| fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap(),
        ];
        for (i, leave) in leftovers.iter().enumerate() {
            let dir = finished(&dirs, &format!("2.{i}.1"), "out");
            leave(&dir);
            dirs.retire(&dir);
            assert!(!dir.exists(), "case {i}: removed");
            let next = root.path().join(format!("3.{i}.1"));
            dirs.prepare(&next).unwrap();
            assert_eq!(fs::read_dir(&next).unwrap().count(), 0, "case {i}: the next task starts in a new, empty dir");
            fs::remove_dir(&next).unwrap();
        }
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep me", "nothing outside was emptied");
    }

    #[test]
    fn spares_an_earlier_agent_left_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let left = root.path().join(".spare-1-0");
        fs::create_dir(&left).unwrap();
        fs::write(left.join("stdout.txt"), "old").unwrap();
        // An archive a killed agent was packing goes too; a task's directory stays.
        let archive = root.path().join(format!("1.0.1{}", crate::checkpoint::SCRATCH_SUFFIX));
        fs::write(&archive, "half").unwrap();
        let dirs = TaskDirs::new(root.path().to_path_buf());
        assert!(!left.exists() && !archive.exists());
        let dir = root.path().join("1.0.1");
        dirs.prepare(&dir).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }
}
