//! One coordinator per data dir: an exclusive lock (`flock`) on
//! `DATA_DIR/coordinator.lock`, taken before anything in the data dir is opened and
//! held until everything the coordinator started has stopped. The operating system
//! releases it when its holder dies however it dies (SIGKILL included), so a lock file
//! left behind never blocks a start; while it is held, a second coordinator (`corral
//! up`, `corral demo`, `corral-coordinator`) on the same data dir refuses to start and
//! names the holder, which the file says (its process, PID and start).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// The lock file's name in the data dir.
pub const LOCK_FILE: &str = "coordinator.lock";

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` (created if missing), or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)?;
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(data_dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::refused(in_use(data_dir, holder.trim())));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::refused(format!("cannot lock data dir {}: {e}", data_dir.display())))
            }
        }
        // Who holds it, for the next one that tries: written only once it is ours.
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", holder(None))?;
        file.sync_all()?;
        Ok(DataDirLock { _file: file })
    }
}

/// This process, as a refusal names it: `corral-coordinator PID 12 (since T)`, with
/// `on HOST` when the lock it holds is not on this machine's disk.
pub fn holder(host: Option<&str>) -> String {
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "corral".into());
    let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let on = host.map(|h| format!(" on {h}")).unwrap_or_default();
    format!("{program} PID {}{on} (since {since})", std::process::id())
}

/// This machine's name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is cut at its NUL.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match ok {
        true => String::from_utf8_lossy(&buf[..end]).into_owned(),
        false => "an unknown host".into(),
    }
}

/// The refusal, naming the holder as its lock file does.
fn in_use(data_dir: &Path, holder: &str) -> String {
    let holder = if holder.is_empty() { "another coordinator" } else { holder };
    format!("data dir {} is in use by {holder}; stop it or use another --data-dir", data_dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_data_dir_is_refused_naming_its_holder_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        let me = format!("PID {} (since ", std::process::id());
        assert!(err.starts_with(&format!("data dir {} is in use by ", dir.path().display())), "{err}");
        assert!(err.contains(&me) && err.ends_with("); stop it or use another --data-dir"), "{err}");
        drop(held);
        // The file is still there; the lock is not.
        assert!(dir.path().join(LOCK_FILE).exists());
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
