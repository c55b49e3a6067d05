//! Checkpoints (`job submit --checkpoint PATH`): a file or directory in the task's
//! directory that outlives the attempt. The agent packs it into one tar object
//! (`jobs/<job>/.checkpoints/<task>.tar`, replaced whole, so a reader never sees
//! half of one) every `--checkpoint-interval` while the task runs and once more when
//! the attempt ends, however it ends; the next attempt, on any node, finds it
//! unpacked in place before it starts, with `CORRAL_CHECKPOINT_RESTORED=1`.
//!
//! A task should write its checkpoint atomically (a new file renamed over the old):
//! the agent may pack it at any moment. What a tar cannot hold (a socket, a FIFO, a
//! device) is left out of the archive, and the attempt's record says so.
//!
//! A restore is all or nothing: the archive is unpacked into a scratch folder
//! beside the task's directory and only the checkpoint's own path is moved into
//! place once every entry was accepted; an archive with an entry refused (one that
//! would land outside, through a link) leaves the task's directory clean and the
//! attempt starts from scratch, `CORRAL_CHECKPOINT_RESTORED=0`, saying why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::objects::{Client, TransferError};

/// The end of an archive's name while it is packed or unpacked beside its task's
/// directory; one an agent that died mid-save left behind is removed at start
/// (see [`crate::task_dirs::TaskDirs::new`]).
pub const SCRATCH_SUFFIX: &str = ".checkpoint.tar";

/// What a restore found.
#[derive(Debug, PartialEq)]
pub enum Restored {
    /// No checkpoint was stored yet.
    Nothing,
    /// The checkpoint is in place.
    InPlace,
    /// The archive itself was refused (an entry that would land outside the task's
    /// directory, or no checkpoint in it): nothing of it is in place, and this
    /// attempt's saves may replace it.
    Rejected(String),
}

/// What one save did: whether there was anything to store, and what it left out.
#[derive(Debug, Default, PartialEq)]
pub struct Saved {
    pub stored: bool,
    /// Files a tar cannot hold, relative to the task's directory, with their kind.
    pub skipped: Vec<String>,
}

impl Saved {
    /// What the attempt's record says of it, if anything.
    pub fn note(&self) -> Option<String> {
        let first = self.skipped.first()?;
        let more = match self.skipped.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        Some(format!("checkpoint: left out {first}{more}, which an archive cannot hold"))
    }
}

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
    /// directory, out of its outputs' way (and the folder it is unpacked into,
    /// with `.d` added).
    fn scratch(dir: &Path) -> PathBuf {
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(SCRATCH_SUFFIX);
        dir.with_file_name(name)
    }

    /// Puts the latest checkpoint in place in `dir`, whole or not at all. An error
    /// is one of fetching or of the local disk (the stored checkpoint may be good:
    /// do not save over it); a refused archive is [`Restored::Rejected`].
    pub async fn restore(&self, objects: &mut Client, dir: &Path) -> Result<Restored, TransferError> {
        let archive = Self::scratch(dir);
        let fetched = crate::objects::download(objects, &self.object, &archive).await;
        let result = match fetched {
            Ok(_) => {
                let (at, to, path) = (archive.clone(), dir.to_path_buf(), self.path.clone());
                match blocking(&archive, move || unpack_whole(&at, &to, &path)).await {
                    Ok(()) => Ok(Restored::InPlace),
                    // tar says what it refuses as `Other` (and a damaged archive as
                    // bad data); an error of the OS keeps its kind (a full disk is the
                    // node's fault, not the archive's).
                    Err(TransferError::Local { source, .. }) if refused_archive(&source) => {
                        Ok(Restored::Rejected(source.to_string()))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(TransferError::Missing(_)) => Ok(Restored::Nothing),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&archive).await;
        result
    }

    /// Packs the checkpoint and stores it; not `stored` if the task has not written
    /// one (yet).
    pub async fn save(&self, objects: &mut Client, dir: &Path) -> Result<Saved, TransferError> {
        let Ok(root) = tokio::fs::symlink_metadata(dir.join(&self.path)).await else {
            return Ok(Saved::default());
        };
        // The checkpoint itself cannot be archived: an empty archive would replace a
        // good one, so nothing is stored, and the attempt says why.
        if !archivable(&root.file_type()) {
            let skipped = vec![format!("{} ({})", self.path.display(), kind_of(&root.file_type()))];
            return Ok(Saved { stored: false, skipped });
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
            Ok(skipped) => {
                crate::objects::upload(objects, &archive, &self.object).await.map(|_| Saved { stored: true, skipped })
            }
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
async fn blocking<T: Send + 'static>(
    archive: &Path,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, TransferError> {
    let local = |source| TransferError::Local { path: archive.display().to_string(), source };
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done.map_err(local),
        Err(e) => Err(local(std::io::Error::other(e.to_string()))),
    }
}

/// `dir/path` (a file or a directory) into a tar at `archive`; symbolic links are
/// kept as links, never followed out of the task's directory. What a tar cannot
/// hold (sockets, FIFOs, devices) is left out, and returned with its kind.
fn pack(dir: &Path, path: &Path, archive: &Path) -> std::io::Result<Vec<String>> {
    let file = std::fs::File::create(archive)?;
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(false);
    let mut skipped = Vec::new();
    let mut todo = vec![path.to_path_buf()];
    // A file the task renames away while it is packed (a checkpoint written
    // atomically) is simply not in this archive; the root must be there.
    let gone = |e: &std::io::Error, at: &Path| e.kind() == std::io::ErrorKind::NotFound && at != path;
    while let Some(at) = todo.pop() {
        let full = dir.join(&at);
        let kind = match std::fs::symlink_metadata(&full) {
            Ok(meta) => meta.file_type(),
            Err(e) if gone(&e, &at) => continue,
            Err(e) => return Err(e),
        };
        if kind.is_dir() {
            tar.append_dir(&at, &full)?;
            let mut children: Vec<PathBuf> = match std::fs::read_dir(&full) {
                Ok(entries) => entries.map(|e| e.map(|e| at.join(e.file_name()))).collect::<Result<_, _>>()?,
                Err(e) if gone(&e, &at) => continue,
                Err(e) => return Err(e),
            };
            children.sort();
            todo.extend(children.into_iter().rev());
        } else if archivable(&kind) {
            match tar.append_path_with_name(&full, &at) {
                Err(e) if gone(&e, &at) => {}
                done => done?,
            }
        } else if at == path {
            // It turned into one since `save` looked: no archive of nothing.
            return Err(std::io::Error::other(format!("{} is {}", at.display(), kind_of(&kind))));
        } else {
            skipped.push(format!("{} ({})", at.display(), kind_of(&kind)));
        }
    }
    tar.into_inner()?.sync_all()?;
    Ok(skipped)
}

/// Whether unpacking failed for the archive's sake rather than the node's.
fn refused_archive(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    e.raw_os_error().is_none() && matches!(e.kind(), Other | InvalidData | InvalidInput | UnexpectedEof)
}

/// Whether a tar holds this kind of file (a directory is walked instead).
fn archivable(kind: &std::fs::FileType) -> bool {
    kind.is_file() || kind.is_symlink() || kind.is_dir()
}

fn kind_of(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_socket() {
        "a socket"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// A checkpoint archive into `dir`, whole or not at all: it is unpacked into a
/// scratch folder first (tar refuses entries that would land outside it), and
/// only then is `path` moved into place (over what was there). Whatever else the
/// archive holds stays out of the task's directory.
fn unpack_whole(archive: &Path, dir: &Path, path: &Path) -> std::io::Result<()> {
    let mut scratch = archive.as_os_str().to_os_string();
    scratch.push(".d");
    let scratch = PathBuf::from(scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir(&scratch)?;
    let unpacked = (|| {
        let mut tar = tar::Archive::new(std::fs::File::open(archive)?);
        tar.set_overwrite(true);
        tar.unpack(&scratch)?;
        let from = scratch.join(path);
        std::fs::symlink_metadata(&from).map_err(|_| {
            std::io::Error::other(format!("the archive holds no '{}', the task's checkpoint", path.display()))
        })?;
        let to = dir.join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::symlink_metadata(&to) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&to)?,
            Ok(_) => std::fs::remove_file(&to)?,
            Err(_) => {}
        }
        std::fs::rename(&from, &to)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    unpacked
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
        assert_eq!(pack(from.path(), Path::new("state"), &archive).unwrap(), Vec::<String>::new());
        let to = tempfile::tempdir().unwrap();
        unpack_whole(&archive, to.path(), Path::new("state")).unwrap();
        assert_eq!(std::fs::read_to_string(to.path().join("state/step")).unwrap(), "41");
        assert_eq!(std::fs::read_to_string(to.path().join("state/inner/x")).unwrap(), "y");
        let link = std::fs::symlink_metadata(to.path().join("state/link")).unwrap();
        assert!(link.file_type().is_symlink(), "a link stays a link, its target is not copied");
    }

    #[test]
    fn a_refused_archive_leaves_nothing_in_the_task_directory() {
        let outside = tempfile::tempdir().unwrap();
        let from = tempfile::tempdir().unwrap();
        let archive = from.path().join("planted.tar");
        let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
        let mut add = |path: &str, kind: tar::EntryType, link: Option<&Path>, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            header.set_cksum();
            tar.append_data(&mut header, path, data).unwrap();
        };
        add("state/first", tar::EntryType::Regular, None, b"accepted");
        add("state/out", tar::EntryType::Symlink, Some(outside.path()), b"");
        add("state/out/evil", tar::EntryType::Regular, None, b"planted");
        tar.into_inner().unwrap().sync_all().unwrap();
        let task = tempfile::tempdir().unwrap();
        std::fs::write(task.path().join("input.txt"), "kept").unwrap();
        assert!(unpack_whole(&archive, task.path(), Path::new("state")).is_err_and(|e| refused_archive(&e)));
        assert!(!task.path().join("state").exists(), "nothing of a refused archive is in place");
        assert!(!outside.path().join("evil").exists());
        assert_eq!(std::fs::read_dir(task.path()).unwrap().count(), 1, "the task's own files stay");
        assert!(!from.path().join("planted.tar.d").exists(), "the scratch folder goes");
    }

    #[test]
    fn what_a_tar_cannot_hold_is_left_out_and_said() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/step"), "7").unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("state/sock")).unwrap();
        let archive = dir.path().join("c.tar");
        let skipped = pack(dir.path(), Path::new("state"), &archive).unwrap();
        assert_eq!(skipped, ["state/sock (a socket)"]);
        let saved = Saved { stored: true, skipped };
        assert_eq!(saved.note().unwrap(), "checkpoint: left out state/sock (a socket), which an archive cannot hold");
        let to = tempfile::tempdir().unwrap();
        unpack_whole(&archive, to.path(), Path::new("state")).unwrap();
        assert_eq!(std::fs::read_to_string(to.path().join("state/step")).unwrap(), "7");
        assert!(!to.path().join("state/sock").exists());
        // A checkpoint that is itself a socket makes no archive at all.
        assert!(!archivable(&std::fs::symlink_metadata(dir.path().join("state/sock")).unwrap().file_type()));
        assert!(pack(dir.path(), Path::new("state/sock"), &archive).is_err());
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
