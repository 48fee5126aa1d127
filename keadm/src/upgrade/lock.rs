//! upstream's mutual exclusion of the node-task commands: `/etc/kubeedge/idempotency_record`.
//! Upstream creates the file exclusively and removes it at the end, so a keadm that was killed
//! (or a reboot in the middle of an upgrade) leaves it behind and blocks every later command.
//! Ours holds an flock(2) on it instead ([`std::fs::File::try_lock`]): the kernel drops the
//! lock with the process, whatever ends it, so a left-over file is simply taken, and no pid
//! (which a reboot may give to another process) has to be judged. The file still holds
//! keadm's pid, for a human looking at it, and is removed at the end as upstream's is.

use std::fs::{File, TryLockError};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::Error;

/// Where the record lives (upstream's path).
pub const LOCK_PATH: &str = "/etc/kubeedge/idempotency_record";

/// The held lock; released (and the file removed) on drop, and by the kernel if keadm dies.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    /// Holds the flock; closing it releases the lock.
    file: File,
}

impl Lock {
    /// Takes the lock at `path`, or fails with upstream's message when another keadm holds it.
    pub fn acquire(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        }
        // A holder removes the file while it still holds the lock (on drop). Whoever opened
        // the old file meanwhile gets its lock once released, but on a file no longer at
        // `path`, where a third keadm may have made and locked a new one: so the lock counts
        // only if `path` is still the file locked, and otherwise the new file is tried.
        for _ in 0..8 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::io("opening", path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(held(path)),
                Err(TryLockError::Error(e)) => return Err(Error::io("locking", path, e)),
            }
            let locked = file.metadata().map_err(|e| Error::io("reading", path, e))?;
            let Ok(now) = std::fs::metadata(path) else { continue };
            if (now.dev(), now.ino()) != (locked.dev(), locked.ino()) {
                continue;
            }
            // For humans: who holds it. Whatever an earlier holder wrote is replaced.
            let pid = std::process::id().to_string();
            file.set_len(0).and_then(|()| file.write_all(pid.as_bytes())).map_err(|e| Error::io("writing", path, e))?;
            return Ok(Self { path: path.to_owned(), file });
        }
        Err(held(path))
    }
}

fn held(path: &Path) -> Error {
    Error::Failed(format!(
        "the mutually exclusive command is being executed (lock file {} held by a running keadm)",
        path.display()
    ))
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still locked (see `acquire`), then unlocked (closing would do as well).
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_command_is_refused_and_the_record_is_removed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/kubeedge/idempotency_record");
        let held = Lock::acquire(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), std::process::id().to_string());
        // flock(2) locks belong to an open file, so a second open in this process conflicts
        // just as another keadm's would.
        let e = Lock::acquire(&path).unwrap_err();
        assert!(e.to_string().contains("the mutually exclusive command is being executed"), "{e}");
        let other = File::open(&path).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(other);
        drop(held);
        assert!(!path.exists());
        let again = Lock::acquire(&path).unwrap();
        drop(again);
    }

    /// Regression: a record left by a keadm that died (killed, or a reboot mid-upgrade), with
    /// a pid that may now be any process's or none at all, no longer locks keadm out.
    #[test]
    fn a_record_left_by_a_dead_keadm_is_taken_whatever_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idempotency_record");
        for left in ["", "1", "4294967295", "not a pid"] {
            std::fs::write(&path, left).unwrap();
            let l = Lock::acquire(&path).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), std::process::id().to_string());
            drop(l);
        }
    }

    /// A file locked by someone but no longer at the path (its holder removed it) is not the
    /// lock: the one now at the path is.
    #[test]
    fn a_lock_on_a_removed_record_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idempotency_record");
        let first = Lock::acquire(&path).unwrap();
        // A new record made and locked at the path while `first`'s file is unlinked: it holds.
        std::fs::remove_file(&path).unwrap();
        let second = Lock::acquire(&path).unwrap();
        assert!(Lock::acquire(&path).is_err());
        drop(second);
        drop(first);
    }
}
