//! Checkpoints (`job submit --checkpoint PATH`): a file or directory in the task's
//! directory that outlives the attempt. The agent packs it into one tar object
//! (`jobs/<job>/.checkpoints/<task>.tar`, replaced whole, so a reader never sees
//! half of one) every `--checkpoint-interval` while the task runs and once more when
//! the attempt ends, however it ends; the next attempt, on any node, finds it
//! unpacked in place before it starts, with `CORRAL_CHECKPOINT_RESTORED=1`.
//!
//! A task should write its checkpoint atomically (a new file renamed over the old):
//! the agent may pack it at any moment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::objects::{Client, TransferError};

/// The end of an archive's name while it is packed or unpacked beside its task's
/// directory; one an agent that died mid-save left behind is removed at start
/// (see [`crate::task_dirs::TaskDirs::new`]).
pub const SCRATCH_SUFFIX: &str = ".checkpoint.tar";

/// Where a task's checkpoint lives, in its directory and in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Relative to the task's directory.
    pub path: PathBuf,
    pub object: String,
    pub interval: Option<Duration>,
}

impl Checkpoint {
    /// From an assignment: `None` if it asks for no checkpoint; an error if its path
    /// would leave the task's directory.
    pub fn of(path: &str, object: &str, interval_ms: u64) -> Result<Option<Checkpoint>, String> {
        if path.is_empty() {
            return Ok(None);
        }
        let relative = PathBuf::from(path);
        if !crate::objects::is_inside(&relative) {
            return Err(format!("checkpoint '{path}' is not inside the task's directory"));
        }
        let interval = (interval_ms > 0).then(|| Duration::from_millis(interval_ms));
        Ok(Some(Checkpoint { path: relative, object: object.to_string(), interval }))
    }

    /// The archive's place while it is packed or unpacked: beside the task's
    /// directory, out of its outputs' way.
    fn scratch(dir: &Path) -> PathBuf {
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(SCRATCH_SUFFIX);
        dir.with_file_name(name)
    }

    /// Puts the latest checkpoint in place in `dir`. `Ok(false)` if there is none yet.
    pub async fn restore(&self, objects: &mut Client, dir: &Path) -> Result<bool, TransferError> {
        let archive = Self::scratch(dir);
        let fetched = crate::objects::download(objects, &self.object, &archive).await;
        let result = match fetched {
            Ok(_) => {
                let (at, to) = (archive.clone(), dir.to_path_buf());
                blocking(&archive, move || unpack(&at, &to)).await.map(|()| true)
            }
            Err(TransferError::Missing(_)) => Ok(false),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&archive).await;
        result
    }

    /// Packs the checkpoint and stores it; `Ok(false)` if the task has not written
    /// one (yet).
    pub async fn save(&self, objects: &mut Client, dir: &Path) -> Result<bool, TransferError> {
        if tokio::fs::symlink_metadata(dir.join(&self.path)).await.is_err() {
            return Ok(false);
        }
        // Through a symbolic link on the way, it would pack what lies outside the
        // task's directory, with the agent's rights.
        if !within(dir, &self.path) {
            return Err(TransferError::Refused(format!(
                "checkpoint '{}': a directory on its way is a symbolic link; it stays where it is",
                self.path.display()
            )));
        }
        let archive = Self::scratch(dir);
        let (at, from, path) = (archive.clone(), dir.to_path_buf(), self.path.clone());
        let result = match blocking(&archive, move || pack(&from, &path, &at)).await {
            Ok(()) => crate::objects::upload(objects, &archive, &self.object).await.map(|_| true),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&archive).await;
        result
    }
}

/// Whether every directory between `dir` and `dir/path` is a real directory (the
/// last part may be anything: a link there is packed as a link).
fn within(dir: &Path, path: &Path) -> bool {
    let mut at = dir.to_path_buf();
    let parts: Vec<_> = path.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        let std::path::Component::Normal(name) = part else { return false };
        at.push(name);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// Runs file work off the async threads; its error names `archive`.
async fn blocking(
    archive: &Path,
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), TransferError> {
    let local = |source| TransferError::Local { path: archive.display().to_string(), source };
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done.map_err(local),
        Err(e) => Err(local(std::io::Error::other(e.to_string()))),
    }
}

/// `dir/path` (a file or a directory) into a tar at `archive`; symbolic links are
/// kept as links, never followed out of the task's directory.
fn pack(dir: &Path, path: &Path, archive: &Path) -> std::io::Result<()> {
    let file = std::fs::File::create(archive)?;
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(false);
    let full = dir.join(path);
    if std::fs::symlink_metadata(&full)?.is_dir() {
        tar.append_dir_all(path, &full)?;
    } else {
        tar.append_path_with_name(&full, path)?;
    }
    tar.into_inner()?.sync_all()
}

/// A checkpoint archive into `dir`; tar refuses entries that would land outside it.
fn unpack(archive: &Path, dir: &Path) -> std::io::Result<()> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive)?);
    tar.set_overwrite(true);
    tar.unpack(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_goes_and_comes_back_whole() {
        let from = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(from.path().join("state/inner")).unwrap();
        std::fs::write(from.path().join("state/step"), "41").unwrap();
        std::fs::write(from.path().join("state/inner/x"), "y").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.path().join("state/link")).unwrap();
        let archive = from.path().join("c.tar");
        pack(from.path(), Path::new("state"), &archive).unwrap();
        let to = tempfile::tempdir().unwrap();
        unpack(&archive, to.path()).unwrap();
        assert_eq!(std::fs::read_to_string(to.path().join("state/step")).unwrap(), "41");
        assert_eq!(std::fs::read_to_string(to.path().join("state/inner/x")).unwrap(), "y");
        let link = std::fs::symlink_metadata(to.path().join("state/link")).unwrap();
        assert!(link.file_type().is_symlink(), "a link stays a link, its target is not copied");
    }

    #[test]
    fn a_link_on_the_way_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("a")).unwrap();
        assert!(!within(dir.path(), Path::new("a/state")));
        std::fs::create_dir(dir.path().join("b")).unwrap();
        assert!(within(dir.path(), Path::new("b/state")));
        assert!(within(dir.path(), Path::new("a")), "the checkpoint itself may be a link, packed as one");
    }

    #[test]
    fn a_path_outside_the_task_directory_is_refused() {
        assert!(Checkpoint::of("../up", "o", 0).unwrap_err().contains("not inside"));
        assert!(Checkpoint::of("/abs", "o", 0).is_err());
        assert_eq!(Checkpoint::of("", "o", 0), Ok(None));
        let ck = Checkpoint::of("state", "jobs/1/.checkpoints/0.tar", 5000).unwrap().unwrap();
        assert_eq!(ck.interval, Some(Duration::from_secs(5)));
    }
}
